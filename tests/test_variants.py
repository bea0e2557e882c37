"""Real builds of every variant of a small digits CNN, checked with the LiteRT interpreter.

One session fixture imports tensorflow once and builds all 18 variants of a ~38k-parameter
CNN trained on sklearn's bundled ``load_digits`` (8x8x1 images, 10 classes); the tests then
check what each recipe promises: sizes, dtypes, sparsity, clusters, and accuracy on 450
held-out digits. Run ``pytest tests/test_variants.py -rP`` to see the measured table.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from pytest_edgeopt.model import ModelUnderTest
from pytest_edgeopt.tensors import ModelIO, outputs_to_float, to_model_input
from pytest_edgeopt.variants import tfenv
from pytest_edgeopt.variants.builder import Builder
from pytest_edgeopt.variants.cache import VariantCache
from pytest_edgeopt.variants.registry import (
    VARIANTS,
    BuildContext,
    VariantBuildError,
    VariantUnavailable,
    resolve_options,
)

# Short fine-tuning at a higher learning rate than the default: 2 epochs of 43 steps.
OPTIONS = {"finetune_epochs": 2, "learning_rate": 1e-3, "calibration_samples": 50}
CLUSTERS = 16
SPARSITY = 0.8
#: Accuracy points a variant may lose against fp32 on the 450 held-out digits.
TOLERANCE = {"pruned": 4.0, "pruned_int8": 4.0}
DEFAULT_TOLERANCE = 3.0
EIGHT_BIT = ("dynamic_range", "int8", "int8_full", "qat_int8", "pruned_int8", "clustered_int8",
             "pqat_int8", "cqat_int8", "pcqat_int8", "aeq_dynamic_wi8", "aeq_weight_only_wi8",
             "aeq_static_a8w8")


# -- helpers -------------------------------------------------------------------------------


def context(mut: ModelUnderTest, name: str, workdir: Path, *, memo: dict | None = None,
            fp32: Callable[[], bytes] | None = None, options: dict | None = None,
            progress: list[str] | None = None) -> BuildContext:
    def no_fp32() -> bytes:
        raise AssertionError("this build should not need the fp32 baseline")

    return BuildContext(
        mut=mut, spec=VARIANTS[name], options=resolve_options(mut, OPTIONS if options is None else options),
        workdir=workdir, progress=(progress.append if progress is not None else lambda line: None),
        fp32=fp32 or no_fp32, memo={} if memo is None else memo)


def build(mut: ModelUnderTest, name: str, workdir: Path, **kw: Any) -> bytes:
    ctx = context(mut, name, workdir, **kw)
    data = ctx.spec.build_function()(ctx)
    assert isinstance(data, bytes)
    return data


def interpreter(data: bytes) -> Interpreter:
    it = Interpreter(model_content=data, num_threads=1,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    return it


def run(data: bytes, x: np.ndarray) -> list[np.ndarray]:
    """Float outputs of the model for each sample of x (one invoke per sample)."""
    it = interpreter(data)
    io = ModelIO.of_interpreter(it)
    outs: list[list[np.ndarray]] = [[] for _ in io.outputs]
    for i in range(len(x)):
        it.set_tensor(io.inputs[0].index, to_model_input(x[i:i + 1], io.inputs[0]))
        it.invoke()
        for k, y in enumerate(outputs_to_float([it.get_tensor(s.index) for s in io.outputs], io.outputs)):
            outs[k].append(y)
    return [np.concatenate(o) for o in outs]


def accuracy(data: bytes, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(run(data, x)[0].argmax(axis=-1) == y) * 100)


def gzip_size(data: bytes) -> int:
    return len(gzip.compress(data, 9))


def weights(data: bytes) -> dict[str, np.ndarray]:
    """The constant weight tensors (rank >= 2, not a batch of activations) by name."""
    it = interpreter(data)
    io_indices = {d["index"] for d in it.get_input_details() + it.get_output_details()}
    found = {}
    for d in it.get_tensor_details():
        if d["index"] in io_indices or len(d["shape"]) < 2 or d["shape"][0] == 1 or not d["name"]:
            continue
        found[d["name"]] = it.get_tensor(d["index"])
    return found


def dtypes(data: bytes) -> set[str]:
    return {np.dtype(d["dtype"]).name for d in Interpreter(model_content=data).get_tensor_details()}


# -- the model and its variants --------------------------------------------------------------


@dataclass
class Digits:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@dataclass
class Built:
    data: bytes | None
    seconds: float
    progress: list[str] = field(default_factory=list)
    error: BaseException | None = None


@pytest.fixture(scope="session")
def digits() -> Digits:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]
    y = d.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    return Digits(x[:1347], y[:1347], x[1347:], y[1347:])


@pytest.fixture(scope="session")
def keras() -> Any:
    return tfenv.import_keras()


def small_cnn(keras: Any, outputs: int = 10) -> Any:
    return keras.Sequential([
        keras.layers.Input((8, 8, 1)),
        keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(outputs),
    ])


@pytest.fixture(scope="session")
def trained(keras: Any, digits: Digits) -> Any:
    keras.utils.set_random_seed(0)
    model = small_cnn(keras)
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(digits.x_train, digits.y_train, epochs=3, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="session")
def weights_before(trained: Any) -> list[np.ndarray]:
    return [w.copy() for w in trained.get_weights()]


@pytest.fixture(scope="session")
def mut(trained: Any, digits: Digits, weights_before: list[np.ndarray]) -> ModelUnderTest:
    return ModelUnderTest("digits", trained, representative_data=[digits.x_train[:64]],
                          train_data=(digits.x_train, digits.y_train),
                          eval_data=(digits.x_test, digits.y_test))


@pytest.fixture(scope="session")
def built(mut: ModelUnderTest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Built]:
    """Every variant, built in registry order in one process with a shared memo."""
    memo: dict = {}
    results: dict[str, Built] = {}

    def fp32() -> bytes:
        data = results["fp32"].data
        assert data is not None, results["fp32"].error
        return data

    for name in VARIANTS:
        lines: list[str] = []
        ctx = context(mut, name, tmp_path_factory.mktemp(name), memo=memo, fp32=fp32, progress=lines)
        start = time.perf_counter()
        try:
            data, error = ctx.spec.build_function()(ctx), None
        except Exception as exc:  # reported by the test of that variant
            data, error = None, exc
        results[name] = Built(data, time.perf_counter() - start, lines, error)
    return results


def variant(built: dict[str, Built], name: str) -> bytes:
    b = built[name]
    if b.error is not None:
        raise b.error
    assert b.data is not None
    return b.data


# -- every variant ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant_runs_and_keeps_accuracy(built: dict[str, Built], digits: Digits, name: str) -> None:
    data = variant(built, name)
    base = accuracy(variant(built, "fp32"), digits.x_test, digits.y_test)
    got = accuracy(data, digits.x_test, digits.y_test)
    assert got >= base - TOLERANCE.get(name, DEFAULT_TOLERANCE), f"{name}: {got:.2f}% vs fp32 {base:.2f}%"


def test_fp32_matches_keras(built: dict[str, Built], trained: Any, digits: Digits) -> None:
    expected = trained.predict(digits.x_test, verbose=0)
    np.testing.assert_allclose(run(variant(built, "fp32"), digits.x_test)[0], expected, atol=1e-4)


def test_float16_is_half_of_fp32(built: dict[str, Built]) -> None:
    ratio = len(variant(built, "float16")) / len(variant(built, "fp32"))
    assert 0.45 < ratio < 0.56
    assert "float16" in dtypes(variant(built, "float16"))


@pytest.mark.parametrize("name", EIGHT_BIT)
def test_8bit_variants_are_a_quarter_to_a_third_of_fp32(built: dict[str, Built], name: str) -> None:
    ratio = len(variant(built, name)) / len(variant(built, "fp32"))
    assert 0.22 < ratio < 0.34, f"{name}: {ratio:.3f} of fp32"


def test_int4_weights_are_smaller_still(built: dict[str, Built]) -> None:
    # LiteRT's Python API reports int4 tensors as int8: the packed size is the evidence.
    assert len(variant(built, "aeq_dynamic_wi4")) < 0.6 * len(variant(built, "aeq_dynamic_wi8"))


def test_int8_full_has_int8_input_and_output(built: dict[str, Built]) -> None:
    io = ModelIO.of_interpreter(Interpreter(model_content=variant(built, "int8_full")))
    assert [s.dtype for s in io.inputs + io.outputs] == [np.dtype(np.int8)] * 2
    assert all(s.quantized for s in io.inputs + io.outputs)


def test_int8_keeps_float_io(built: dict[str, Built]) -> None:
    io = ModelIO.of_interpreter(Interpreter(model_content=variant(built, "int8")))
    assert [s.dtype for s in io.inputs + io.outputs] == [np.dtype(np.float32)] * 2
    assert "int8" in dtypes(variant(built, "int8"))


def test_int16x8_has_int16_activations_and_int8_weights(built: dict[str, Built]) -> None:
    data = variant(built, "int16x8")
    assert "int16" in dtypes(data)
    assert {w.dtype.name for w in weights(data).values()} == {"int8"}


def test_aeq_static_quantizes_activations_and_io(built: dict[str, Built]) -> None:
    io = ModelIO.of_interpreter(Interpreter(model_content=variant(built, "aeq_static_a8w8")))
    assert io.inputs[0].dtype == np.int8 and io.inputs[0].quantized


def test_pruned_keeps_file_size_but_compresses(built: dict[str, Built]) -> None:
    fp32, pruned = variant(built, "fp32"), variant(built, "pruned")
    assert abs(len(pruned) - len(fp32)) < 0.01 * len(fp32)
    assert gzip_size(pruned) < 0.5 * gzip_size(fp32)
    for name, w in weights(pruned).items():
        if w.size > 1000:
            assert np.mean(w == 0) >= SPARSITY - 0.01, name


@pytest.mark.parametrize("name", ["pruned_int8", "pqat_int8", "pcqat_int8"])
def test_int8_after_pruning_keeps_the_sparsity(built: dict[str, Built], name: str) -> None:
    data = variant(built, name)
    assert gzip_size(data) < 0.5 * gzip_size(variant(built, "int8"))
    big = [w for w in weights(data).values() if w.size > 1000]
    assert big and all(np.mean(w == 0) >= SPARSITY - 0.02 for w in big)


def test_clustered_kernels_have_at_most_clusters_values(built: dict[str, Built]) -> None:
    data = variant(built, "clustered")
    kernels = {n: w for n, w in weights(data).items() if w.size > CLUSTERS}
    assert len(kernels) == 3  # conv, dense, dense_1
    for name, w in kernels.items():
        assert len(np.unique(w)) <= CLUSTERS, name
    assert gzip_size(data) < 0.3 * gzip_size(variant(built, "fp32"))


@pytest.mark.parametrize("name", ["cqat_int8", "pcqat_int8"])
def test_cluster_preserving_qat_keeps_dense_clusters(built: dict[str, Built], name: str) -> None:
    # Dense kernels are quantized per tensor and keep their clusters; conv kernels are
    # quantized per channel, which splits them (FACTS.md).
    dense = {n: w for n, w in weights(variant(built, name)).items() if n.endswith("MatMul") or "MatMul;" in n}
    assert dense
    for n, w in dense.items():
        assert len(np.unique(w)) <= CLUSTERS, n


def test_progress_reports_every_epoch_and_phase(built: dict[str, Built]) -> None:
    qat = built["qat_int8"].progress
    assert [ln for ln in qat if "epoch" in ln][0].startswith("qat_int8: epoch 1/2 loss=")
    assert "accuracy=" in qat[-1] and qat[-1].startswith("qat_int8: epoch 2/2")
    pcqat = "\n".join(built["pcqat_int8"].progress)
    assert "pcqat_int8: pruning phase" in pcqat
    assert "pcqat_int8: sparsity-preserving clustering phase" in pcqat
    assert "quantization-aware training phase" in pcqat


def test_pruned_and_clustered_models_are_shared_within_the_process(built: dict[str, Built]) -> None:
    for name in ("pruned_int8", "pqat_int8", "pcqat_int8"):
        assert "reusing the model already pruned" in built[name].progress[0]
    for name in ("clustered_int8", "cqat_int8"):
        assert "reusing the model already clustered" in built[name].progress[0]
    assert not any("epoch" in ln for ln in built["pruned_int8"].progress)
    assert not any("epoch" in ln for ln in built["clustered_int8"].progress)


def builder_run(cache_dir: Path, mut: ModelUnderTest, name: str, options: dict | None = None,
                rebuild: bool = False) -> tuple[bytes, list[str]]:
    """The bytes of ``name`` built by a new Builder (its own memo, as in another pytest-xdist
    worker) over the cache in ``cache_dir``, and its progress lines."""
    lines: list[str] = []
    builder = Builder(VariantCache(cache_dir, rebuild=rebuild), lines.append)
    return builder.build(mut, name, {**OPTIONS, **(options or {})}).read_bytes(), lines


@pytest.fixture(scope="module")
def pruned_cache(mut: ModelUnderTest, built: dict[str, Built], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache in which a Builder built ``pruned``, so it holds the fine-tuned pruned model."""
    root = tmp_path_factory.mktemp("cache")
    data, lines = builder_run(root, mut, "pruned")
    assert "pruned: pruning phase (to 80% sparsity)" in lines
    assert data == variant(built, "pruned")
    return root


def test_a_new_builder_reuses_the_pruned_model_from_the_cache(pruned_cache: Path, mut: ModelUnderTest,
                                                              built: dict[str, Built]) -> None:
    data, lines = builder_run(pruned_cache, mut, "pruned_int8")
    assert "pruned_int8: pruning phase (reusing the model already pruned, from the cache)" in lines
    assert not [ln for ln in lines if "epoch" in ln]
    assert data == variant(built, "pruned_int8")  # as from the pruned model kept in memory


def test_another_sparsity_does_not_reuse_the_pruned_model(pruned_cache: Path, mut: ModelUnderTest) -> None:
    data, lines = builder_run(pruned_cache, mut, "pruned_int8", {"sparsity": 0.5})
    assert "pruned_int8: pruning phase (to 50% sparsity)" in lines
    assert [ln for ln in lines if "epoch" in ln]
    big = [w for w in weights(data).values() if w.size > 1000]
    assert big and all(np.mean(w == 0) < SPARSITY - 0.2 for w in big)


def test_rebuild_fine_tunes_the_pruned_model_again(pruned_cache: Path, mut: ModelUnderTest,
                                                   built: dict[str, Built]) -> None:
    data, lines = builder_run(pruned_cache, mut, "pruned_int8", rebuild=True)
    assert "pruned_int8: pruning phase (to 80% sparsity)" in lines
    assert [ln for ln in lines if "epoch" in ln]
    assert data == variant(built, "pruned_int8")


def test_fine_tuning_is_reproducible_and_leaves_the_random_state_alone(built: dict[str, Built],
                                                                      mut: ModelUnderTest, tmp_path: Path) -> None:
    keras = tfenv.import_keras()
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    before = keras.layers.Dense(1).name
    again = build(mut, "qat_int8", tmp_path)  # a fresh memo: fine-tuned again from the start
    assert again == variant(built, "qat_int8")
    assert np.random.rand() == expected
    number = int(before.rpartition("_")[2] or 0) if "_" in before else 0
    assert keras.layers.Dense(1).name == f"dense_{number + 1}"  # the user's layer names go on


def test_builds_leave_the_users_model_alone(built: dict[str, Built], trained: Any,
                                            weights_before: list[np.ndarray]) -> None:
    assert [type(layer).__name__ for layer in trained.layers] == ["Conv2D", "Flatten", "Dense", "Dense"]
    for before, after in zip(weights_before, trained.get_weights()):
        np.testing.assert_array_equal(before, after)


# -- other sources -----------------------------------------------------------------------------


def test_tflite_source_gives_fp32_and_aeq_variants(built: dict[str, Built], digits: Digits, tmp_path: Path) -> None:
    path = tmp_path / "digits.tflite"
    path.write_bytes(variant(built, "fp32"))
    mut = ModelUnderTest("digits_tflite", str(path), representative_data=[digits.x_train[:64]])
    fp32 = build(mut, "fp32", tmp_path)
    assert fp32 == path.read_bytes()
    base = accuracy(fp32, digits.x_test, digits.y_test)
    for name in ("aeq_dynamic_wi8", "aeq_weight_only_wi8", "aeq_static_a8w8", "aeq_dynamic_wi4"):
        data = build(mut, name, tmp_path, fp32=lambda: fp32)
        assert accuracy(data, digits.x_test, digits.y_test) >= base - DEFAULT_TOLERANCE, name


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[: len(b) // 2], "is corrupt or truncated"),
    (lambda b: b"not a flatbuffer" * 64, "is corrupt or truncated"),
    (lambda b: b"", "is empty"),
])
def test_broken_tflite_is_a_clear_build_error(built: dict[str, Built], tmp_path: Path,
                                              damage: Callable[[bytes], bytes], message: str) -> None:
    path = tmp_path / "broken.tflite"
    path.write_bytes(damage(variant(built, "fp32")))
    with pytest.raises(VariantBuildError, match=message) as info:
        build(ModelUnderTest("broken", str(path)), "fp32", tmp_path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("name, message", [
    ("int8_full", r"is not a float \.tflite \(input '[^']+' is int8\)"),
    ("int8", r"is not a float \.tflite \(tensor '[^']+' is quantized int8\): it is already optimized"),
    ("float16", r"is not a float \.tflite \(tensor '[^']+' is float16\)"),
])
def test_quantized_tflite_is_refused_as_baseline(built: dict[str, Built], tmp_path: Path, name: str,
                                                 message: str) -> None:
    path = tmp_path / f"{name}.tflite"
    path.write_bytes(variant(built, name))
    with pytest.raises(VariantBuildError, match=message):
        build(ModelUnderTest("quantized", str(path)), "fp32", tmp_path)


@pytest.fixture(scope="session")
def with_custom_layer(keras: Any) -> Any:
    class Scale(keras.layers.Layer):
        """A learned scalar gain: a layer tfmot has never heard of."""

        def build(self, input_shape: Any) -> None:
            self.gain = self.add_weight(name="gain", shape=(), initializer="ones")

        def call(self, inputs: Any) -> Any:
            return inputs * self.gain

    keras.utils.set_random_seed(1)
    inputs = keras.layers.Input((8, 8, 1))
    h = keras.layers.Flatten()(keras.layers.Conv2D(8, 3, activation="relu")(inputs))
    h = Scale(name="gain_stage")(keras.layers.Dense(32, activation="relu")(h))
    return keras.Model(inputs, keras.layers.Dense(10)(h))


@pytest.mark.parametrize("name, verb, state", [("qat_int8", "quantization-aware training", "float"),
                                               ("pruned", "pruning", "dense"), ("clustered", "clustering", "unclustered")])
def test_layer_tfmot_cannot_wrap_is_named(with_custom_layer: Any, digits: Digits, tmp_path: Path,
                                          name: str, verb: str, state: str) -> None:
    """The variant goes partial (issues 11, 18): the layer stays as it is, named."""
    mut = ModelUnderTest("custom", with_custom_layer, representative_data=[digits.x_train[:64]],
                         train_data=(digits.x_train, digits.y_train))
    lines: list[str] = []
    ctx = context(mut, name, tmp_path, progress=lines)
    assert isinstance(ctx.spec.build_function()(ctx), bytes)
    assert ctx.notes[f"{state}_layers"] == ["gain_stage"]
    assert any(line.startswith(f"{name}: partial {verb}: left 'gain_stage' (Scale) {state}") for line in lines)


def test_model_with_custom_layer_still_gets_post_training_variants(with_custom_layer: Any, digits: Digits,
                                                                   tmp_path: Path) -> None:
    mut = ModelUnderTest("custom", with_custom_layer, representative_data=[digits.x_train[:64]])
    expected = with_custom_layer.predict(digits.x_test[:20], verbose=0)
    np.testing.assert_allclose(run(build(mut, "fp32", tmp_path), digits.x_test[:20])[0], expected, atol=1e-4)
    assert "int8" in dtypes(build(mut, "int8", tmp_path))


@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")  # Keras 3 save()
def test_keras3_model_gets_post_training_variants(digits: Digits, tmp_path: Path) -> None:
    tfenv.import_tf()
    import keras as keras3

    assert keras3.__version__.startswith("3.")
    keras3.utils.set_random_seed(2)
    model = keras3.Sequential([keras3.layers.Input((8, 8, 1)), keras3.layers.Conv2D(4, 3, activation="relu"),
                               keras3.layers.Flatten(), keras3.layers.Dense(10)])
    expected = np.asarray(model(digits.x_test[:20]))
    path = tmp_path / "keras3.keras"
    model.save(path)
    for source in (model, str(path)):
        mut = ModelUnderTest("keras3", source, representative_data=[digits.x_train[:64]])
        assert mut.source.kind == "keras3"
        fp32 = build(mut, "fp32", tmp_path)
        np.testing.assert_allclose(run(fp32, digits.x_test[:20])[0], expected, atol=1e-4)
    for name in ("float16", "dynamic_range", "int8", "int8_full", "int16x8"):
        out = run(build(mut, name, tmp_path, fp32=lambda: fp32), digits.x_test[:20])[0]
        assert out.shape == expected.shape
        assert np.mean(out.argmax(-1) == expected.argmax(-1)) >= 0.8, name


def test_saved_model_with_two_outputs(digits: Digits, tmp_path: Path) -> None:
    tf = tfenv.import_tf()
    rng = np.random.default_rng(3)

    class TwoHeads(tf.Module):
        def __init__(self) -> None:
            self.w = tf.Variable(rng.normal(size=(64, 10)).astype(np.float32))
            self.v = tf.Variable(rng.normal(size=(64, 3)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 1], tf.float32)])
        def __call__(self, x: Any) -> dict[str, Any]:
            flat = tf.reshape(x, [-1, 64])
            return {"logits": tf.matmul(flat, self.w), "aux": tf.nn.relu(tf.matmul(flat, self.v))}

    module = TwoHeads()
    path = tmp_path / "two_heads"
    tf.saved_model.save(module, str(path), signatures=module.__call__.get_concrete_function())
    mut = ModelUnderTest("two_heads", str(path), representative_data=[digits.x_train[:64]])
    assert mut.source.kind == "saved_model" and not mut.source.trainable
    expected = {k: v.numpy() for k, v in module(digits.x_test[:20]).items()}
    fp32 = build(mut, "fp32", tmp_path)
    outs = {o.shape[-1]: o for o in run(fp32, digits.x_test[:20])}
    np.testing.assert_allclose(outs[10], expected["logits"], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(outs[3], expected["aux"], rtol=1e-4, atol=1e-3)
    for name in ("float16", "dynamic_range", "int8", "int8_full", "int16x8", "aeq_static_a8w8"):
        outs = run(build(mut, name, tmp_path, fp32=lambda: fp32), digits.x_test[:20])
        assert sorted(o.shape[-1] for o in outs) == [3, 10], name
        logits = next(o for o in outs if o.shape[-1] == 10)
        assert np.mean(logits.argmax(-1) == expected["logits"].argmax(-1)) >= 0.8, name


@pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file")
@pytest.mark.parametrize("fmt", ["h5", "keras", "saved_model"])
def test_load_keras_model_gives_a_fresh_copy(trained: Any, digits: Digits, tmp_path: Path, fmt: str) -> None:
    path = tmp_path / ("model" if fmt == "saved_model" else f"model.{fmt}")
    trained.save(str(path), **({"save_format": "tf"} if fmt == "saved_model" else {}))
    mut = ModelUnderTest("file", str(path))
    assert mut.source.trainable
    memo: dict = {}
    first = tfenv.load_keras_model(mut.source, memo, mut.fingerprint)
    second = tfenv.load_keras_model(mut.source, memo, mut.fingerprint)
    assert not {id(layer) for layer in first.layers} & {id(layer) for layer in second.layers}
    expected = trained.predict(digits.x_test[:20], verbose=0)
    np.testing.assert_allclose(first.predict(digits.x_test[:20], verbose=0), expected, atol=1e-5)
    assert tfenv.compiled_loss(mut.source, memo, mut.fingerprint) is not None


def test_in_memory_model_is_cloned(trained: Any) -> None:
    mut = ModelUnderTest("mem", trained)
    copy = tfenv.load_keras_model(mut.source)
    assert copy is not trained
    assert not {id(layer) for layer in copy.layers} & {id(layer) for layer in trained.layers}


@pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file")
def test_h5_without_compiled_loss_infers_it_and_fine_tunes(keras: Any, trained: Any, digits: Digits,
                                                           tmp_path: Path) -> None:
    plain = keras.models.clone_model(trained)
    plain.set_weights(trained.get_weights())
    path = tmp_path / "plain.h5"
    plain.save(str(path))  # never compiled: no training configuration in the file
    mut = ModelUnderTest("plain", str(path), train_data=(digits.x_train, digits.y_train))
    lines: list[str] = []
    data = build(mut, "qat_int8", tmp_path, progress=lines, options={**OPTIONS, "finetune_epochs": 1})
    assert lines[-1].startswith("qat_int8: epoch 1/1 loss=") and "accuracy=" in lines[-1]
    assert accuracy(data, digits.x_test, digits.y_test) >= 94


def test_infer_loss(keras: Any) -> None:
    from pytest_edgeopt.variants.finetune import infer_loss

    logits = small_cnn(keras)
    softmax = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    sigmoid = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    loss, classification = infer_loss(np.array([0, 3, 9]), logits)
    assert isinstance(loss, keras.losses.SparseCategoricalCrossentropy) and loss.get_config()["from_logits"]
    loss, _ = infer_loss(np.eye(3)[[0, 2, 1]], softmax)
    assert isinstance(loss, keras.losses.CategoricalCrossentropy) and not loss.get_config()["from_logits"]
    loss, _ = infer_loss(np.array([0.0, 1.0, 1.0]), sigmoid)
    assert isinstance(loss, keras.losses.BinaryCrossentropy) and not loss.get_config()["from_logits"]
    assert infer_loss(np.array([0.5, 2.25]), sigmoid) is None
    assert infer_loss(np.array([0, 12]), logits) is None  # label 12 of 10 classes


def test_loss_that_cannot_be_inferred_makes_the_variant_unavailable(keras: Any, digits: Digits,
                                                                    tmp_path: Path) -> None:
    regressor = small_cnn(keras, outputs=1)
    mut = ModelUnderTest("regressor", regressor, train_data=(digits.x_train, digits.y_train / 9.0))
    with pytest.raises(VariantUnavailable, match=r"set options loss=\.\.\."):
        build(mut, "qat_int8", tmp_path)


def test_tfmot_bound_to_another_keras_makes_training_variants_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    tfenv.import_tfmot()
    from tensorflow_model_optimization.python.core.keras import compat

    class OtherKeras:
        __version__ = "2.15.0"
        Model = object

    monkeypatch.setattr(compat, "keras", OtherKeras)
    with pytest.raises(VariantUnavailable, match="TF_USE_LEGACY_KERAS=1"):
        tfenv.import_tfmot()


# -- processes of their own --------------------------------------------------------------------


def _python(script: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **(env or {})}
    env.pop("TF_USE_LEGACY_KERAS", None)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=env, capture_output=True,
                          text=True, timeout=300, cwd=Path(__file__).resolve().parents[1])


def test_importing_the_builders_imports_no_tensorflow() -> None:
    result = _python("""
        import sys
        from pytest_edgeopt.variants import registry, tfenv, ptq, tfmot, aeq
        for spec in registry.VARIANTS.values():
            spec.build_function()
        heavy = ("tensorflow", "tf_keras", "keras", "tensorflow_model_optimization", "litert_quantizer")
        print(sorted(m for m in heavy if m in sys.modules))
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_tfmot_builds_after_tensorflow_was_imported_with_keras3() -> None:
    """tfmot falls back to tf_keras when tf.keras is Keras 3, so a user who imported
    tensorflow first (without TF_USE_LEGACY_KERAS) still gets the training variants."""
    result = _python("""
        import numpy as np, tensorflow as tf
        assert tf.keras.version().startswith("3."), tf.keras.version()
        from pathlib import Path
        from pytest_edgeopt.model import ModelUnderTest
        from pytest_edgeopt.variants import tfenv
        from pytest_edgeopt.variants.registry import VARIANTS, BuildContext, resolve_options
        assert tfenv.tfmot_keras_problem() is None
        keras = tfenv.import_keras()
        model = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(8, activation="relu"),
                                  keras.layers.Dense(3)])
        x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
        mut = ModelUnderTest("tiny", model, train_data=(x, x.argmax(-1)[:, None] % 3))
        lines = []
        ctx = BuildContext(mut, VARIANTS["qat_int8"], resolve_options(mut, {"finetune_epochs": 1}),
                           Path("."), lines.append, lambda: b"")
        data = ctx.spec.build_function()(ctx)
        print(len(data), lines[-1])
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "qat_int8: epoch 1/1 loss=" in result.stdout


# -- the measured table (pytest tests/test_variants.py -rP shows it) --------------------------


def test_report_table(built: dict[str, Built], digits: Digits) -> None:
    fp32 = variant(built, "fp32")
    print(f"\n{'variant':20} {'bytes':>8} {'gzip':>8} {'x fp32':>7} {'top-1 %':>8} {'build s':>8}")
    for name, b in built.items():
        if b.data is None:
            print(f"{name:20} FAILED: {b.error}")
            continue
        print(f"{name:20} {len(b.data):8d} {gzip_size(b.data):8d} {len(b.data) / len(fp32):7.3f} "
              f"{accuracy(b.data, digits.x_test, digits.y_test):8.2f} {b.seconds:8.2f}")


def test_an_in_memory_models_fingerprint_holds_its_compiled_loss(keras: Any) -> None:
    """Fine-tuning trains with the compiled loss when the loss knob is not set: a model
    compiled with another loss must not reuse the variants built with the first."""
    from pytest_edgeopt.model import fingerprint_keras

    def compiled(loss: Any) -> Any:
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.layers.Input((4,), name="x"), keras.layers.Dense(3, name="d")], name="m")
        if loss is not None:
            model.compile(loss=loss)
        return model

    sparse = fingerprint_keras(compiled(keras.losses.SparseCategoricalCrossentropy(from_logits=True)))
    assert sparse == fingerprint_keras(compiled(keras.losses.SparseCategoricalCrossentropy(from_logits=True)))
    assert sparse != fingerprint_keras(compiled(keras.losses.SparseCategoricalCrossentropy()))
    assert sparse != fingerprint_keras(compiled("mse"))
    assert fingerprint_keras(compiled(None)) not in (sparse, fingerprint_keras(compiled("mse")))
