"""Every variant from whatever model a team has (issue 12): the named post-training variants of
a float .tflite through AI Edge Quantizer, a Keras 3 model's tf_keras twin (proved equivalent
first), a Keras 2 SavedModel checked against its signature, and the README's table of it all."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from pytest_edgeopt.model import ModelUnderTest
from pytest_edgeopt.variants import keras_bridge, tflite_quant
from pytest_edgeopt.variants.builder import Builder
from pytest_edgeopt.variants.cache import VariantCache
from pytest_edgeopt.variants.registry import (
    VARIANTS,
    BuildContext,
    VariantUnavailable,
    input_support_table,
    recipe,
    resolve_options,
)

README = Path(__file__).resolve().parent.parent / "README.md"
PTQ = ("float16", "dynamic_range", "int8", "int8_full", "int16x8")


# -- the README table ------------------------------------------------------------------------


def test_readme_model_inputs_table_is_the_generated_one() -> None:
    text = README.read_text()
    section = text.split("## Model inputs", 1)[1].split("\n## ", 1)[0]
    table = "\n".join(line for line in section.splitlines() if line.startswith("|")) + "\n"
    assert table == input_support_table(), "README's table is stale: paste input_support_table() into it"


def test_every_cell_is_supported_or_says_why() -> None:
    rows = [line.split(" | ")[1:] for line in input_support_table().splitlines()[2:]]
    assert len(rows) == 5
    for row in rows:
        for cell in row:
            assert re.match(r"(yes: \S|no: .{20,})", cell.strip(" |")), cell
    tflite = rows[-1]
    assert tflite[1].startswith("yes: AI Edge Quantizer") and tflite[2].startswith("no: fine-tunes Keras layers")


def test_tflite_recipe_names_tool_and_quantizer_recipe_and_keras_recipes_are_unchanged() -> None:
    options = resolve_options(ModelUnderTest("m", "x.tflite"))
    rec = recipe(VARIANTS["int8"], options, "tflite")
    assert rec["tool"] == "litert_quantizer" and rec["aeq_recipe"] == "static_wi8_ai8 (float I/O)"
    assert rec["builder"] == ".tflite_quant:build_int8"
    # The cache keys of the converter path (every variant built before) do not move.
    for kind in (None, "keras", "keras3", "saved_model"):
        assert recipe(VARIANTS["int8"], options, kind) == {
            "variant": "int8", "family": "ptq", "builder": ".ptq:build_int8", "calibration_samples": 100}


# -- a float .tflite --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tflite_variants(digits: Any) -> dict[str, bytes]:
    from fixtures.digits import representative_batches
    from fixtures.models import float_tflite

    mut = ModelUnderTest("digits-tflite", str(float_tflite()), representative_data=representative_batches(100),
                         eval_data=(digits.x_eval, digits.y_eval))
    builder = Builder(VariantCache(Path(tempfile.mkdtemp(prefix="edgeopt-t12-"))))
    built = {name: builder.build(mut, name) for name in ("fp32", *PTQ)}
    for name in PTQ:
        assert built[name].recipe["tool"] == "litert_quantizer", name
    return {name: b.read_bytes() for name, b in built.items()}


def _io(data: bytes) -> tuple[str, str, set[str]]:
    it = Interpreter(model_content=data)
    return (np.dtype(it.get_input_details()[0]["dtype"]).name, np.dtype(it.get_output_details()[0]["dtype"]).name,
            {np.dtype(t["dtype"]).name for t in it.get_tensor_details()})


def _top1(data: bytes, x: np.ndarray, y: np.ndarray) -> float:
    from pytest_edgeopt.tensors import ModelIO, outputs_to_float, to_model_input

    it = Interpreter(model_content=data)
    io = ModelIO.of_interpreter(it)
    it.resize_tensor_input(io.inputs[0].index, [len(x), *x.shape[1:]])
    it.allocate_tensors()
    io = ModelIO.of_interpreter(it)
    it.set_tensor(io.inputs[0].index, to_model_input(x, io.inputs[0]))
    it.invoke()
    out = outputs_to_float([it.get_tensor(io.outputs[0].index)], io.outputs[:1])[0]
    return float(np.mean(out.argmax(-1) == y))


@pytest.mark.parametrize(("name", "io", "inside"), [
    ("float16", ("float32", "float32"), "float16"),
    ("dynamic_range", ("float32", "float32"), "int8"),
    ("int8", ("float32", "float32"), "int8"),
    ("int8_full", ("int8", "int8"), "int8"),
    ("int16x8", ("float32", "float32"), "int16"),
])
def test_tflite_gets_the_named_post_training_variants(tflite_variants: dict[str, bytes], digits: Any, name: str,
                                                      io: tuple[str, str], inside: str) -> None:
    data, fp32 = tflite_variants[name], tflite_variants["fp32"]
    in_dtype, out_dtype, dtypes = _io(data)
    assert (in_dtype, out_dtype) == io
    assert inside in dtypes
    assert len(data) < 0.55 * len(fp32)
    drop = _top1(fp32, digits.x_eval, digits.y_eval) - _top1(data, digits.x_eval, digits.y_eval)
    assert drop <= 0.01, f"{name} lost {drop:.2%} top-1"


def test_int8_full_is_refused_when_the_quantizer_leaves_float_behind(tflite_variants: dict[str, bytes],
                                                                     tmp_path: Path) -> None:
    ctx = BuildContext(ModelUnderTest("m", "x.tflite"), VARIANTS["int8_full"], {}, tmp_path, print, lambda: b"")
    tflite_quant._check_integer_only(ctx, tflite_variants["int8_full"])  # integer-only: accepted
    with pytest.raises(VariantUnavailable, match=r"left input '[^']+' as float32, not int8"):
        tflite_quant._check_integer_only(ctx, tflite_variants["int8"])


def test_float_nodes_on_a_tflite_is_refused_with_the_reason(tmp_path: Path) -> None:
    from fixtures.models import float_tflite

    mut = ModelUnderTest("m", str(float_tflite()), representative_data=[np.zeros((1, 8, 8, 1), np.float32)],
                         options={"float_nodes": ("dense",)})
    with pytest.raises(VariantUnavailable, match="float_nodes .* needs the TensorFlow model"):
        Builder(VariantCache(tmp_path)).build(mut, "int8")


# -- Keras 3 -> tf_keras ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def keras3(tensorflow_loaded: None) -> Any:
    from pytest_edgeopt.variants.tfenv import import_keras3

    return import_keras3()


def _twin_ctx(mut: ModelUnderTest, tmp_path: Path, name: str = "qat_int8") -> BuildContext:
    return BuildContext(mut, VARIANTS[name], resolve_options(mut), tmp_path, lambda line: None, lambda: b"")


def test_functional_keras3_model_gets_an_equivalent_tf_keras_twin(keras3: Any, digits: Any, tmp_path: Path) -> None:
    keras3.utils.set_random_seed(4)
    inputs = keras3.Input((8, 8, 1), name="image")
    a = keras3.layers.Conv2D(6, 3, padding="same", activation="relu", kernel_regularizer="l2", name="c1")(inputs)
    b = keras3.layers.BatchNormalization(name="bn")(keras3.layers.DepthwiseConv2D(3, padding="same", name="dw")(a))
    h = keras3.layers.Concatenate(name="cat")([a, b])
    h = keras3.layers.Dropout(0.2)(keras3.layers.GlobalAveragePooling2D()(h))
    model = keras3.Model(inputs, keras3.layers.Dense(10, activation="softmax", name="probs")(h))
    # Non-trivial BatchNormalization statistics, so copying them is checked too.
    bn = model.get_layer("bn")
    bn.set_weights([w + np.random.default_rng(0).normal(size=w.shape).astype(np.float32) ** 2
                    for w in bn.get_weights()])
    model.compile(loss=keras3.losses.SparseCategoricalCrossentropy())
    mut = ModelUnderTest("k3-functional", model, eval_data=(digits.x_eval, digits.y_eval))
    ctx = _twin_ctx(mut, tmp_path)
    twin, figures = keras_bridge.keras3_twin(ctx)
    assert type(twin).__module__.startswith("tf_keras")
    assert [layer.name for layer in twin.layers] == [layer.name for layer in model.layers]
    assert figures.inputs == "eval_data" and figures.samples == keras_bridge.CHECK_SAMPLES
    assert figures.equivalent and figures.max_abs_diff <= 1e-5
    expected = np.asarray(model.predict(digits.x_eval[:32], verbose=0))
    np.testing.assert_allclose(twin.predict(digits.x_eval[:32], verbose=0), expected, atol=1e-5)
    assert type(twin.loss).__name__ == "SparseCategoricalCrossentropy"
    assert float(twin.get_layer("c1").kernel_regularizer.l2) == pytest.approx(0.01)
    assert keras_bridge.keras3_twin(ctx)[0] is twin  # once per process


def test_keras3_layer_with_no_tf_keras_twin_skips_naming_it(keras3: Any, digits: Any, tmp_path: Path) -> None:
    if not hasattr(keras3.layers, "RMSNormalization"):
        pytest.skip("this Keras 3 has no RMSNormalization")
    from pytest_edgeopt.variants.tfenv import import_keras

    assert not hasattr(import_keras().layers, "RMSNormalization")
    model = keras3.Sequential([keras3.Input((8, 8, 1)), keras3.layers.Flatten(),
                               keras3.layers.RMSNormalization(name="rms"), keras3.layers.Dense(10)])
    mut = ModelUnderTest("k3-rms", model, train_data=(digits.x_train, digits.y_train))
    with pytest.raises(VariantUnavailable, match=r"qat_int8: layer 'rms' \(keras.layers.RMSNormalization\) .* has no "
                                                 r"tf_keras twin"):
        VARIANTS["qat_int8"].build_function()(_twin_ctx(mut, tmp_path))


def test_subclassed_keras3_model_skips_with_the_reason(keras3: Any, digits: Any, tmp_path: Path) -> None:
    class Tiny(keras3.Model):
        def __init__(self) -> None:
            super().__init__(name="tiny")
            self.dense = keras3.layers.Dense(10)

        def call(self, x: Any) -> Any:
            return self.dense(keras3.ops.reshape(x, (-1, 64)))

    model = Tiny()
    model(digits.x_eval[:2])
    mut = ModelUnderTest("k3-sub", model, train_data=(digits.x_train, digits.y_train))
    with pytest.raises(VariantUnavailable, match=r"pruned: Keras 3 model 'tiny' is a subclassed Tiny: .* Sequential or "
                                                 r"functional API"):
        VARIANTS["pruned"].build_function()(_twin_ctx(mut, tmp_path, "pruned"))


def test_twin_that_differs_is_refused_with_the_difference() -> None:
    x = np.linspace(-1, 1, 40, dtype=np.float32).reshape(10, 4)
    same = keras_bridge.compare(lambda b: [b * 2], lambda b: [b * 2], x, "eval_data", "a", "b")
    assert same.equivalent and same.max_abs_diff == 0.0
    off = keras_bridge.compare(lambda b: [b * 2], lambda b: [b * 2 + 1e-3], x, "eval_data", "a", "b")
    assert not off.equivalent and off.max_abs_diff == pytest.approx(1e-3, rel=1e-3)
    assert off.tolerance == pytest.approx(keras_bridge.RELATIVE_TOLERANCE * 2)
    shapes = keras_bridge.compare(lambda b: [b], lambda b: [b[:, :2]], x, "eval_data", "a", "b")
    assert not shapes.equivalent
    assert off.to_note() == {"from": "a", "to": "b", "max_abs_diff": off.max_abs_diff,
                             "tolerance": off.tolerance, "samples": 10, "inputs": "eval_data"}


def test_keras3_port_of_the_digits_cnn_fine_tunes_with_the_figures_in_its_recipe(digits: Any,
                                                                                  tmp_path: Path) -> None:
    from fixtures.models import digits_keras3_port

    mut = ModelUnderTest("digits-k3", str(digits_keras3_port()), train_data=(digits.x_train, digits.y_train),
                         eval_data=(digits.x_eval, digits.y_eval), options={"finetune_epochs": 1})
    assert mut.source.kind == "keras3" and mut.source.trainable
    built = Builder(VariantCache(tmp_path)).build(mut, "pruned")
    note = built.recipe["keras_bridge"]
    assert note["from"].startswith("keras 3.") and note["to"].startswith("tf_keras 2.")
    assert note["inputs"] == "eval_data" and note["samples"] == 256 and note["max_abs_diff"] <= note["tolerance"]
    data = built.read_bytes()
    it = Interpreter(model_content=data)
    kernels = [it.get_tensor(t["index"]) for t in it.get_tensor_details()
               if len(t["shape"]) == 2 and t["shape"][0] == 64 and t["shape"][1] == 512]  # dense (64 x 512)
    assert kernels and np.mean(kernels[0] == 0) >= 0.75  # pruned, on the twin, to 80% sparsity
    assert _top1(data, digits.x_eval, digits.y_eval) > 0.8  # one epoch of fine-tuning


# -- a Keras 2 SavedModel -----------------------------------------------------------------------


def test_keras_saved_model_is_checked_against_its_signature(digits: Any, tmp_path: Path,
                                                             tensorflow_loaded: None) -> None:
    from fixtures.models import keras_saved_model

    mut = ModelUnderTest("digits-sm", str(keras_saved_model()), eval_data=(digits.x_eval, digits.y_eval))
    assert mut.source.kind == "saved_model" and mut.source.trainable
    figures = keras_bridge.saved_model_equivalence(_twin_ctx(mut, tmp_path))
    assert figures.source == "SavedModel serving signature" and figures.target.startswith("tf_keras")
    assert figures.equivalent and figures.samples == 256


def test_plain_saved_model_and_tflite_keep_their_fine_tuning_skip() -> None:
    from fixtures.models import float_tflite, multi_output_saved_model
    from pytest_edgeopt.variants.registry import unavailable_reason

    plain = ModelUnderTest("plain", str(multi_output_saved_model()), train_data=(np.zeros((2, 8, 8, 1)), np.zeros(2)))
    assert "has none (a plain SavedModel)" in (unavailable_reason(VARIANTS["pruned"], plain) or "")
    tflite = ModelUnderTest("t", str(float_tflite()), train_data=(np.zeros((2, 8, 8, 1)), np.zeros(2)))
    assert "a .tflite has none" in (unavailable_reason(VARIANTS["qat_int8"], tflite) or "")
    assert unavailable_reason(VARIANTS["float16"], tflite) is None
