"""Real-model patterns (issues 11 and 18), on the variant-building side: recurrent models
convert, tools that refuse a model give a skip naming the op or layer, builds that fail
give the root cause and the remedy, and tfmot variants go partial where tfmot cannot wrap
every layer.

Models are tiny (a few thousand weights) and built here or in ``fixtures.sequence``; each
build calls the variant's builder directly with a :class:`BuildContext` so that the
notes it records can be checked.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_edgeopt.model import ModelUnderTest
from pytest_edgeopt.variants import tfenv
from pytest_edgeopt.variants.registry import (
    VARIANTS,
    BuildContext,
    VariantBuildError,
    VariantUnavailable,
    resolve_options,
)

FAST = {"finetune_epochs": 1, "calibration_samples": 8, "batch_size": 16}


def context(mut: ModelUnderTest, name: str, workdir: Path, *, options: dict[str, Any] | None = None,
            memo: dict[Any, Any] | None = None, progress: list[str] | None = None) -> BuildContext:
    fp32: list[bytes] = []

    def build_fp32() -> bytes:
        if not fp32:
            fp32.append(build(mut, "fp32", workdir, options=options, memo=memo)[0])
        return fp32[0]

    return BuildContext(mut=mut, spec=VARIANTS[name], options=resolve_options(mut, {**FAST, **(options or {})}),
                        workdir=workdir, progress=(progress.append if progress is not None else lambda line: None),
                        fp32=build_fp32, memo={} if memo is None else memo)


def build(mut: ModelUnderTest, name: str, workdir: Path, **kw: Any) -> tuple[bytes, dict[str, Any]]:
    """The variant's bytes and the notes its builder recorded."""
    ctx = context(mut, name, workdir, **kw)
    data = ctx.spec.build_function()(ctx)
    assert isinstance(data, bytes)
    return data, ctx.notes


def ops(data: bytes) -> set[str]:
    from ai_edge_litert.interpreter import Interpreter

    return {d["op_name"] for d in Interpreter(model_content=data)._get_ops_details()}


def run(data: bytes, x: np.ndarray, reset: bool = True) -> np.ndarray:
    """First output for each sample of x, one invoke per sample; ``reset``: reset the
    variable tensors (LSTM state) before each one."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_content=data, num_threads=1,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    outs = []
    for i in range(len(x)):
        if reset:
            it.reset_all_variables()
        it.set_tensor(inp["index"], x[i:i + 1].astype(inp["dtype"]))
        it.invoke()
        outs.append(it.get_tensor(out["index"]).copy())
    return np.concatenate(outs)


@pytest.fixture(scope="module")
def keras() -> Any:
    return tfenv.import_keras()


# -- root causes (no TensorFlow) -----------------------------------------------------------------

MLIR = (
    '/tmp/x.py:16:1: error: \'tf.TensorListReserve\' op requires element_shape to be static during TF Lite '
    'transformation pass\n        conv.convert()\n^\n/tmp/x.py:16:1: note: called from\n'
    'loc(callsite(fused["TensorListReserve:", callsite("TensorArrayV2_1@__inference_standard_lstm_1"'
    '("/tmp/x.py":16:1) at "/lib/lstm.py":982:1)))): error: failed to legalize operation '
    "'tf.TensorListReserve' that was explicitly marked illegal\n"
    "<unknown>:0: error: Lowering tensor list ops is failed. Please consider using Select TF ops")
USER_CODE = (
    "in user code:\n\n    File \"/venv/tf_keras/src/engine/training.py\", line 1338, in train_function  *\n"
    "        return step_function(self, iterator)\n    File \"/venv/tf_keras/src/losses.py\", line 2122, "
    "in categorical_crossentropy\n        target.shape.assert_is_compatible_with(output.shape)\n\n"
    "    ValueError: Shapes (32, 1) and (32, 7) are incompatible\n")


def test_root_cause_of_an_mlir_error_is_its_first_error_line_without_locations() -> None:
    class ConverterError(Exception):
        pass

    cause = tfenv.root_cause(ConverterError(MLIR))
    assert cause == ("ConverterError: 'tf.TensorListReserve' op requires element_shape to be static "
                     "during TF Lite transformation pass")
    assert tfenv.is_tensor_list_failure(MLIR)


def test_root_cause_strips_a_location_that_follows_error() -> None:
    text = ('<unknown>:0: error: loc(callsite(fused["TensorListReserve:", "TensorArrayV2_1@__inference_gru_5"] at '
            'fused["StatefulPartitionedCall:", "StatefulPartitionedCall"])): \'tf.TensorListReserve\' op requires '
            'element_shape to be static during TF Lite transformation pass\n<unknown>:0: note: loc(x): called from')
    assert tfenv.root_cause(text) == ("'tf.TensorListReserve' op requires element_shape to be static during TF Lite "
                                      "transformation pass")


def test_root_cause_of_a_fit_error_is_its_last_line() -> None:
    assert tfenv.root_cause(ValueError(USER_CODE)) == "ValueError: Shapes (32, 1) and (32, 7) are incompatible"


def test_root_cause_of_a_plain_error_names_its_type() -> None:
    assert tfenv.root_cause(RuntimeError("Quantization to 16x8-bit not yet supported for op: 'CAST'.\n")) == (
        "RuntimeError: Quantization to 16x8-bit not yet supported for op: 'CAST'.")
    assert tfenv.root_cause(ValueError("")) == "ValueError"


def test_build_errors_keep_their_details_across_processes() -> None:
    import pickle

    for cls in (VariantBuildError, VariantUnavailable):
        copy = pickle.loads(pickle.dumps(cls("int8: short", "the full text")))
        assert (str(copy), copy.details) == ("int8: short", "the full text")


# -- recurrent models convert (issue 18) ---------------------------------------------------------


@pytest.fixture(scope="module")
def char_lstm() -> Any:
    from fixtures.sequence import stacked_lstm_model

    return stacked_lstm_model()


@pytest.fixture(scope="module")
def char_mut(char_lstm: Any) -> ModelUnderTest:
    from fixtures.sequence import sequence_data

    d = sequence_data()
    return ModelUnderTest("char-lstm", char_lstm, representative_data=[d.x_train[:16]],
                          train_data=(d.x_train, d.y_train), eval_data=(d.x_eval, d.y_eval))


@pytest.mark.slow  # a stacked LSTM/GRU conversion or fine-tuning: minutes on 2 cores
@pytest.mark.parametrize("name", ["fp32", "dynamic_range"])
def test_stacked_lstm_with_a_custom_layer_converts_from_a_batch1_function(
        char_mut: ModelUnderTest, char_lstm: Any, tmp_path: Path, name: str) -> None:
    from fixtures.sequence import sequence_data

    data, notes = build(char_mut, name, tmp_path)
    assert notes["conversion"] == tfenv.BATCH1
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in ops(data)
    x = sequence_data().x_eval[:6]
    expected = char_lstm.predict(x, verbose=0)
    np.testing.assert_allclose(run(data, x), expected, atol=1e-4)


def test_lstm_state_persists_across_invokes_without_a_reset(char_mut: ModelUnderTest, char_lstm: Any,
                                                           tmp_path: Path) -> None:
    """What the measuring side must do: reset_all_variables() before each independent sample."""
    from fixtures.sequence import sequence_data

    data, _ = build(char_mut, "fp32", tmp_path)
    x = sequence_data().x_eval[:6]
    expected = char_lstm.predict(x, verbose=0)
    # Random weights and a softmax over 24 classes keep the outputs near uniform: small but
    # clear (3e-4 measured, against < 1e-6 with resets).
    assert np.abs(run(data, x, reset=True) - expected).max() < 1e-5
    assert np.abs(run(data, x, reset=False) - expected).max() > 5e-5


def test_batch1_saved_model_converts_as_it_is(tmp_path: Path, char_lstm: Any) -> None:
    from fixtures.sequence import sequence_data, stacked_lstm_saved_model

    mut = ModelUnderTest("char-lstm-sm", stacked_lstm_saved_model(), representative_data=[sequence_data().x_train[:8]])
    data, notes = build(mut, "fp32", tmp_path)
    assert "conversion" not in notes  # its signature already has a batch of 1
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in ops(data)
    x = sequence_data().x_eval[:4]
    np.testing.assert_allclose(run(data, x), char_lstm.predict(x, verbose=0), atol=1e-4)


def _rnn_model(keras: Any, kind: str) -> Any:
    keras.utils.set_random_seed(0)
    layer = {"gru": lambda: keras.layers.GRU(6, name="gru"),
             "simple_rnn": lambda: keras.layers.SimpleRNN(6, name="rnn"),
             "bidirectional": lambda: keras.layers.Bidirectional(keras.layers.LSTM(6), name="bi")}[kind]()
    inputs = keras.Input((7, 3), name="seq")
    return keras.Model(inputs, keras.layers.Dense(4, activation="softmax", name="probs")(layer(inputs)))


@pytest.mark.parametrize("kind, op", [("gru", "WHILE"), ("simple_rnn", "WHILE"),
                                      ("bidirectional", "UNIDIRECTIONAL_SEQUENCE_LSTM")])
@pytest.mark.slow  # a stacked LSTM/GRU conversion or fine-tuning: minutes on 2 cores
def test_gru_simple_rnn_and_bidirectional_lstm_convert(keras: Any, tmp_path: Path, kind: str, op: str) -> None:
    model = _rnn_model(keras, kind)
    x = np.random.default_rng(0).random((5, 7, 3), dtype=np.float32)
    mut = ModelUnderTest(kind, model, representative_data=[x])
    data, notes = build(mut, "fp32", tmp_path)
    assert notes["conversion"] == tfenv.BATCH1 and op in ops(data)
    np.testing.assert_allclose(run(data, x), model.predict(x, verbose=0), atol=1e-4)


def test_calibrating_a_while_loop_fails_with_the_unroll_remedy_instead_of_crashing(keras: Any,
                                                                                 tmp_path: Path) -> None:
    model = _rnn_model(keras, "gru")
    x = np.random.default_rng(0).random((5, 7, 3), dtype=np.float32)
    mut = ModelUnderTest("gru", model, representative_data=[x])
    with pytest.raises(VariantBuildError, match=r"'gru' \(GRU\).*unroll=True"):
        build(mut, "int8", tmp_path)
@pytest.mark.slow  # a stacked LSTM/GRU conversion or fine-tuning: minutes on 2 cores
def test_tensor_list_failure_of_a_dynamic_batch_saved_model_falls_back_to_batch1(
        keras: Any, tmp_path: Path) -> None:
    """A Keras SavedModel (dynamic batch) goes through from_saved_model first, fails on the
    tensor-list ops, and is converted again from a batch-1 function."""
    model = _rnn_model(keras, "bidirectional")
    path = tmp_path / "bi_savedmodel"
    model.save(str(path), save_format="tf")
    x = np.random.default_rng(0).random((3, 7, 3), dtype=np.float32)
    lines: list[str] = []
    data, notes = build(ModelUnderTest("bi-sm", path), "fp32", tmp_path, progress=lines)
    assert notes["conversion"] == tfenv.BATCH1
    assert any("batch-1 concrete function" in line for line in lines)
    np.testing.assert_allclose(run(data, x), model.predict(x, verbose=0), atol=1e-4)


# -- converter refusals are skips naming the op (issues 11, 18) -----------------------------------


def test_int16x8_refusing_an_op_is_a_skip_naming_the_converter_the_op_and_the_node(keras: Any,
                                                                                  tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    ids = keras.Input((6,), name="ids")  # float ids: the Embedding casts them to int (CAST)
    h = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(20, 4, name="embedding")(ids))
    model = keras.Model(ids, keras.layers.Dense(3, activation="softmax")(h))
    x = np.random.default_rng(0).integers(0, 20, (8, 6)).astype(np.float32)
    with pytest.raises(VariantUnavailable) as info:
        build(ModelUnderTest("emb", model, representative_data=[x]), "int16x8", tmp_path)
    message = str(info.value)
    assert message.startswith("int16x8: TFLiteConverter refuses op CAST: ")
    assert "embedding" in message.split("in the fp32 model:")[1]  # the node, named by its layer
    assert "not yet supported for op: 'CAST'" in info.value.details


# -- fine-tuning: the loss twin and root causes (issue 11 pattern 1) ------------------------------


@pytest.fixture(scope="module")
def wine_categorical() -> ModelUnderTest:
    from fixtures.models import wine_categorical_h5, wine_data

    d = wine_data()
    return ModelUnderTest("wine-cat", wine_categorical_h5(), representative_data=[d.x_train[:16]],
                          train_data=(d.x_train, d.y_train))


def test_compiled_categorical_loss_with_integer_labels_uses_its_sparse_twin(
        wine_categorical: ModelUnderTest, tmp_path: Path) -> None:
    lines: list[str] = []
    data, notes = build(wine_categorical, "pruned", tmp_path, progress=lines)
    assert notes["loss"].startswith("sparse_categorical_crossentropy (the twin of the compiled "
                                    "categorical_crossentropy")
    assert any("fine-tuning with sparse_categorical_crossentropy" in line for line in lines)
    assert len(data) > 1000


def test_a_loss_that_does_not_fit_the_labels_fails_with_the_cause_and_the_knob(
        wine_categorical: ModelUnderTest, tmp_path: Path) -> None:
    with pytest.raises(VariantBuildError) as info:
        build(wine_categorical, "pruned", tmp_path, options={"loss": "categorical_crossentropy"})
    message = str(info.value)
    assert "in user code" not in message
    assert re.search(r"fine-tuning failed: ValueError: Shapes \(\w+, 1\) and \(\w+, 3\) are incompatible", message)
    assert "set loss='sparse_categorical_crossentropy'" in message
    assert "in user code:" in info.value.details  # the full text is kept


# -- partial pruning, clustering and QAT (issues 11 and 18) ---------------------------------------


@pytest.fixture(scope="module")
def custom_mut() -> ModelUnderTest:
    from fixtures.digits import digits_data
    from fixtures.models import custom_layer_model

    d = digits_data()
    return ModelUnderTest("digits-custom", custom_layer_model(), representative_data=[d.x_train[:16]],
                          train_data=(d.x_train[:256], d.y_train[:256]))


def _kernels(data: bytes) -> list[np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=data)
    return [it.get_tensor(d["index"]) for d in it.get_tensor_details()
            if len(d["shape"]) >= 2 and d["shape"][0] > 1 and "kernel" in d["name"].lower()
            or (len(d["shape"]) == 2 and d["shape"][0] > 8)]


def test_partial_pruning_keeps_the_custom_layer_dense(custom_mut: ModelUnderTest, tmp_path: Path) -> None:
    lines: list[str] = []
    data, notes = build(custom_mut, "pruned", tmp_path, progress=lines)
    assert notes["dense_layers"] == ["scale"]
    assert any("partial pruning: left 'scale' (ScaleLayer) dense" in line for line in lines)
    big = [w for w in _kernels(data) if w.size >= 256]
    assert big and all(np.mean(w == 0) >= 0.5 for w in big)


def test_partial_clustering_keeps_the_custom_layer_unclustered(custom_mut: ModelUnderTest,
                                                              tmp_path: Path) -> None:
    data, notes = build(custom_mut, "clustered", tmp_path)
    assert notes["unclustered_layers"] == ["scale"]
    big = [w for w in _kernels(data) if w.size >= 256]
    assert big and all(len(np.unique(w)) <= 16 for w in big)


def test_partial_qat_keeps_the_custom_layer_float(custom_mut: ModelUnderTest, tmp_path: Path) -> None:
    lines: list[str] = []
    data, notes = build(custom_mut, "qat_int8", tmp_path, progress=lines)
    assert notes["float_layers"] == ["scale"]
    assert any("partial quantization-aware training: left 'scale' (ScaleLayer) float" in line for line in lines)
    from ai_edge_litert.interpreter import Interpreter

    assert any(np.dtype(d["dtype"]) == np.int8 for d in Interpreter(model_content=data).get_tensor_details())


@pytest.mark.parametrize("name, tool", [("pruned", "prune"), ("clustered", "cluster"), ("qat_int8", "quantize")])
def test_nothing_tfmot_can_wrap_is_a_skip_naming_the_layers(keras: Any, tmp_path: Path, name: str,
                                                            tool: str) -> None:
    from fixtures.layers import ScaleLayer

    inputs = keras.Input((5,))
    model = keras.Model(inputs, keras.layers.Softmax()(ScaleLayer(name="only_scale")(inputs)))
    x = np.random.default_rng(0).random((32, 5), dtype=np.float32)
    mut = ModelUnderTest("scale-only", model, train_data=(x, np.arange(32) % 5))
    with pytest.raises(VariantUnavailable, match=rf"tfmot cannot {tool} any layer with weights of "
                                                 r"'scale-only': 'only_scale' \(ScaleLayer\)"):
        build(mut, name, tmp_path, options={"loss": "sparse_categorical_crossentropy"})


def _mini_xception(keras: Any) -> Any:
    L = keras.layers
    keras.utils.set_random_seed(0)
    inputs = keras.Input((61, 61, 3))
    # named layers: auto-generated names depend on what the process built before
    x = L.Activation("relu")(L.BatchNormalization(name="bn_stem")(L.Conv2D(8, 3, strides=2, padding="same")(inputs)))
    y = L.BatchNormalization(name="bn_1")(L.SeparableConv2D(16, 3, padding="same", name="sep_1")(x))
    y = L.BatchNormalization(name="bn_2")(L.SeparableConv2D(16, 3, padding="same", name="sep_2")(L.Activation("relu")(y)))
    y = L.MaxPooling2D(3, strides=2, padding="same")(y)
    r = L.BatchNormalization(name="bn_res")(L.Conv2D(16, 1, strides=2, padding="same")(x))
    x = L.GlobalAveragePooling2D()(L.add([y, r]))
    return keras.Model(inputs, L.Dense(4, activation="softmax")(x))


TRANSFORM_ERROR = "Inputs have incompatible shapes. Received shapes (31, 31, 8) and (30, 30, 16)"


def test_qat_whose_whole_model_transform_fails_goes_partial(keras: Any, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """tfmot 0.8.1 here transforms this mini-Xception fine; the failure seen on a real one
    (FACTS.md) is injected into quantize_model, the whole-model call."""
    tfmot = tfenv.import_tfmot()

    def failing_transform(model: Any) -> Any:
        raise ValueError(TRANSFORM_ERROR)

    monkeypatch.setattr(tfmot.quantization.keras, "quantize_model", failing_transform)
    x = np.random.default_rng(0).random((16, 61, 61, 3), dtype=np.float32)
    mut = ModelUnderTest("mini-xception", _mini_xception(keras), train_data=(x, np.arange(16) % 4))
    lines: list[str] = []
    data, notes = build(mut, "qat_int8", tmp_path, progress=lines, options={"loss": "sparse_categorical_crossentropy"})
    assert notes["float_layers"] == ["bn_1", "bn_2", "sep_1", "sep_2"]
    line = next(ln for ln in lines if "partial quantization-aware training" in ln)
    assert TRANSFORM_ERROR in line and "cannot quantize" not in line
    assert "'bn_stem' (" not in line  # the stem's BN folds into its Conv2D, quantized


def test_qat_that_fails_partially_too_fails_with_tfmots_error(keras: Any, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    tfmot = tfenv.import_tfmot()

    def failing(*args: Any, **kw: Any) -> Any:
        raise ValueError(TRANSFORM_ERROR)

    monkeypatch.setattr(tfmot.quantization.keras, "quantize_model", failing)
    monkeypatch.setattr(tfmot.quantization.keras, "quantize_apply", failing)
    x = np.random.default_rng(0).random((16, 61, 61, 3), dtype=np.float32)
    mut = ModelUnderTest("mini-xception", _mini_xception(keras), train_data=(x, np.arange(16) % 4))
    with pytest.raises(VariantBuildError) as info:
        build(mut, "qat_int8", tmp_path, options={"loss": "sparse_categorical_crossentropy"})
    message = str(info.value)
    assert message.startswith("qat_int8: tfmot's quantization-aware training failed")
    assert f"ValueError: {TRANSFORM_ERROR}" in message
    assert "cannot quantize" not in message  # BatchNormalization/SeparableConv2D are not blamed


def test_aeq_static_recipe_on_a_tflite_without_signature_is_a_skip(tmp_path: Path) -> None:
    """Published .tflite files from older converters often carry no SignatureDef; AI Edge
    Quantizer's calibrated recipes need exactly one."""
    tfenv.import_tf()
    from tensorflow.lite.tools import flatbuffer_utils

    from fixtures.digits import digits_data
    from fixtures.models import float_tflite

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(float_tflite().read_bytes()))
    model.signatureDefs = []
    path = tmp_path / "no_signature.tflite"
    path.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))
    mut = ModelUnderTest("old-tflite", path, representative_data=[digits_data().x_train[:8]])
    with pytest.raises(VariantUnavailable, match=r"aeq_static_a8w8: AI Edge Quantizer's static \(calibrated\) "
                                                 r"recipes need a model with exactly one signature .* has 0 \(none\)"):
        build(mut, "aeq_static_a8w8", tmp_path)
    assert len(build(mut, "aeq_dynamic_wi8", tmp_path)[0]) > 1000  # the uncalibrated recipes still build
@pytest.mark.slow  # a stacked LSTM/GRU conversion or fine-tuning: minutes on 2 cores
def test_stacked_lstm_prunes_partially_and_converts_from_a_batch1_function(char_mut: ModelUnderTest,
                                                                         tmp_path: Path) -> None:
    data, notes = build(char_mut, "pruned", tmp_path)
    assert notes["conversion"] == tfenv.BATCH1
    assert notes["dense_layers"] == ["attention"]  # the custom layer; Embedding and LSTMs are pruned
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in ops(data)
@pytest.mark.slow  # a stacked LSTM/GRU conversion or fine-tuning: minutes on 2 cores
def test_stacked_lstm_qat_fails_with_the_converters_cause_and_a_remedy(char_mut: ModelUnderTest,
                                                                       tmp_path: Path) -> None:
    """Partial QAT leaves the Embedding, LSTMs and custom layer float and fine-tunes; the
    converter then cannot quantize around the LSTM state (TF 2.21): a FAIL that says so."""
    lines: list[str] = []
    with pytest.raises(VariantBuildError) as info:
        build(char_mut, "qat_int8", tmp_path, progress=lines)
    assert any("left 'embedding' (Embedding), 'lstm_1' (LSTM), 'lstm_2' (LSTM), 'attention' (TimeAttention) float"
               in line for line in lines)
    message = str(info.value)
    assert message.startswith("qat_int8: TFLiteConverter failed: ConverterError: We cannot duplicate the value")
    assert "loc(" not in message and "Remedy: " in message
@pytest.mark.slow  # a stacked LSTM/GRU conversion or fine-tuning: minutes on 2 cores
def test_stacked_lstm_int16x8_is_a_skip_naming_the_lstm(char_mut: ModelUnderTest, tmp_path: Path) -> None:
    with pytest.raises(VariantUnavailable, match=r"int16x8: TFLiteConverter refuses op UNIDIRECTIONAL_SEQUENCE_LSTM: "
                                                 r".*in the fp32 model: UNIDIRECTIONAL_SEQUENCE_LSTM nodes 1, 2; "
                                                 r"from layers 'lstm_1' \(LSTM\), 'lstm_2' \(LSTM\)\)"):
        build(char_mut, "int16x8", tmp_path)


def test_a_plain_dynamic_batch_saved_model_with_an_rnn_fails_with_the_cause_and_the_remedy(
        keras: Any, tmp_path: Path) -> None:
    """No Keras metadata to trace it again: re-exporting with a batch-1 signature is the fix."""
    tf = tfenv.import_tf()
    path = tmp_path / "plain_savedmodel"
    tf.saved_model.save(_rnn_model(keras, "gru"), str(path))  # dynamic batch, no keras_metadata.pb
    mut = ModelUnderTest("gru-plain", path)
    assert not mut.source.trainable
    with pytest.raises(VariantBuildError) as info:
        build(mut, "fp32", tmp_path)
    message = str(info.value)
    assert message.startswith("fp32: TFLiteConverter failed: ConverterError: 'tf.TensorListReserve' op requires "
                              "element_shape to be static")
    assert "batch-1 serving signature" in message and "loc(" not in message
    assert "loc(" in info.value.details  # the full MLIR text is kept


def test_collaborative_qat_leaves_float_the_sole_consumer_of_a_float_tf_op(keras: Any, tmp_path: Path) -> None:
    """tfmot's collaborative schemes (PQAT, CQAT, PCQAT) "support" every layer without
    weights, so an annotated layer fed only by a float ``tf.math`` op makes quantize_apply
    ask the default registry for that op's config, which raises (conformance zoo,
    preprocessing_math). That consumer stays float too; the rest is quantization-aware."""
    from pytest_edgeopt.variants.tfmot import quantize_aware

    tfmot = tfenv.import_tfmot()
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,))
    h = -keras.layers.Dense(8, activation="relu", name="first")(inputs)  # a TFOpLambda (tf.math.negative)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="after_neg")(h))
    x = np.random.default_rng(0).random((16, 8), dtype=np.float32)
    ctx = context(ModelUnderTest("neg", model, train_data=(x, np.arange(16) % 3)), "cqat_int8", tmp_path)
    scheme = tfmot.experimental.combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=False)
    qat = quantize_aware(ctx, model, scheme)
    assert "after_neg" in ctx.notes["float_layers"] and "first" not in ctx.notes["float_layers"]
    assert any(type(layer).__name__ == "QuantizeWrapperV2" and layer.layer.name == "first" for layer in qat.layers)


def test_weights_that_do_not_fit_the_copy_fail_with_the_cause(keras: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Seen on the zoo's transformer_block (cqat_int8): the clustered model's weights came back
    in another order than its clone's (``weight shape (2, 16) is not compatible with provided
    weight shape (32, 2, 16)``) and the ValueError escaped the builder (an ERROR). It is a
    FAIL with the cause now. Weights are now copied by layer and name, so that model copies
    (tests/test_transformer_variants.py); a weight with no counterpart is injected here."""
    from pytest_edgeopt.variants import wrapping

    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))

    def mismatched(source: Any, target: Any) -> None:
        raise ValueError("layer 'm': no weight of shape (2, 16) for 'm/bias:0' among ['m/kernel:0']")

    monkeypatch.setattr(wrapping, "copy_weights", mismatched)
    with pytest.raises(VariantBuildError, match=r"cannot copy the model's weights into its clone: ValueError: layer "
                                                 r"'m': no weight of shape \(2, 16\)"):
        tfenv.clone_keras_model(model)
