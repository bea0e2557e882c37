"""Each fixture in fixtures/ is what it claims to be, and the build cache behaves as documented.

The model fixtures are built on first use (about 30 s on 2 cores, once) and cached under
fixtures/build or $EDGEOPT_FIXTURES_DIR; a warm run of this file takes about 11 s, most of it
importing TensorFlow and one Keras 3 subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

import fixtures
from fixtures import cache, digits, models

REPO_ROOT = Path(__file__).resolve().parent.parent
MIN_DIGITS_TOP1 = 0.97


@pytest.fixture(scope="module")
def tf_keras():
    """(tensorflow, tf_keras), imported in legacy Keras 2 mode."""
    return cache.legacy_tf_keras()


def interpreter(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=path.read_bytes(), num_threads=1)
    it.allocate_tensors()
    return it


def keras_top1(model, x: np.ndarray, y: np.ndarray) -> float:
    return float((model.predict(x, verbose=0).argmax(axis=1) == y).mean())


# --- data (no TensorFlow) ---------------------------------------------------------------------


def test_digits_data_is_a_fixed_stratified_split_of_scaled_images() -> None:
    data = digits.digits_data()
    assert [a.shape for a in data] == [(1347, 8, 8, 1), (1347,), (450, 8, 8, 1), (450,)]
    assert [a.dtype for a in data] == [np.float32, np.int64, np.float32, np.int64]
    assert 0.0 <= data.x_train.min() and data.x_train.max() == 1.0
    assert set(np.unique(data.y_eval)) == set(range(10))
    all_labels = np.concatenate([data.y_train, data.y_eval])
    expected = np.bincount(all_labels) * 450 / len(all_labels)
    assert np.abs(np.bincount(data.y_eval) - expected).max() < 1  # stratified
    assert all(not a.flags.writeable for a in data)
    assert digits.digits_data() is data


def test_representative_batches_are_deterministic_single_samples_from_x_train() -> None:
    batches = digits.representative_batches(100)
    assert len(batches) == 100
    assert all(b.shape == (1, 8, 8, 1) and b.dtype == np.float32 for b in batches)
    train = digits.digits_data().x_train.reshape(len(digits.digits_data().x_train), -1)
    assert all((train == b.reshape(1, -1)).all(axis=1).any() for b in batches)
    again = digits.representative_batches(10)
    assert all(np.array_equal(a, b) for a, b in zip(again, batches[:10]))
    with pytest.raises(ValueError, match="n must be in 1..1347"):
        digits.representative_batches(0)


def test_wine_data_is_standardized_13_features_3_classes() -> None:
    data = models.wine_data()
    assert [a.shape for a in data] == [(124, 13), (124,), (54, 13), (54,)]
    assert [a.dtype for a in data] == [np.float32, np.int64, np.float32, np.int64]
    np.testing.assert_allclose(data.x_train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(data.x_train.std(axis=0), 1.0, atol=1e-5)
    assert set(np.unique(data.y_eval)) == {0, 1, 2}


# --- Keras 2 models ----------------------------------------------------------------------------


def test_digits_model_is_a_trained_40k_parameter_h5_that_knows_its_loss(tf_keras) -> None:
    _, keras = tf_keras
    path = digits.digits_model_path()
    assert path.suffix == ".h5" and path.parent == cache.fixtures_dir()
    assert digits.digits_model_key() in path.name
    model = keras.models.load_model(path)
    assert 30_000 <= model.count_params() <= 50_000
    assert model.input_shape == (None, 8, 8, 1) and model.output_shape == (None, 10)
    assert model.loss.__name__ == "sparse_categorical_crossentropy"
    data = digits.digits_data()
    assert keras_top1(model, data.x_eval, data.y_eval) >= MIN_DIGITS_TOP1


def test_build_digits_model_is_compiled_and_untrained(tf_keras) -> None:
    model = digits.build_digits_model()
    assert model.count_params() == 38_282
    assert model.optimizer is not None and model.loss == "sparse_categorical_crossentropy"
    data = digits.digits_data()
    assert keras_top1(model, data.x_eval, data.y_eval) < 0.5


def test_wine_h5_is_an_mlp_on_13_features(tf_keras) -> None:
    _, keras = tf_keras
    model = keras.models.load_model(models.wine_h5())
    assert model.input_shape == (None, 13) and model.output_shape == (None, 3)
    data = models.wine_data()
    assert keras_top1(model, data.x_eval, data.y_eval) >= 0.95


def test_wine_categorical_h5_is_the_wine_mlp_compiled_for_one_hot_labels(tf_keras) -> None:
    _, keras = tf_keras
    model = keras.models.load_model(models.wine_categorical_h5())
    assert model.input_shape == (None, 13) and model.output_shape == (None, 3)
    assert "categorical_crossentropy" in str(getattr(model.loss, "__name__", model.loss))
    assert "sparse" not in str(getattr(model.loss, "__name__", model.loss))
    assert models.wine_data().y_train.ndim == 1  # integer labels: the mismatch it is for


@pytest.mark.slow  # bigger model or matrix; its fast twin runs by default
def test_stacked_lstm_fixtures_are_the_char_model_at_test_size(tf_keras) -> None:
    from fixtures import sequence

    tf, _ = tf_keras
    model = sequence.stacked_lstm_model()
    names = [layer.name for layer in model.layers]
    assert names == ["ids", "embedding", "lstm_1", "lstm_2", "concat", sequence.ATTENTION_LAYER, "probs"]
    assert model.input_shape == (None, sequence.STEPS) and model.output_shape == (None, sequence.VOCAB)
    data = sequence.sequence_data()
    assert data.x_train.dtype == np.int32 and data.x_train.max() < sequence.VOCAB
    signature = tf.saved_model.load(str(sequence.stacked_lstm_saved_model())).signatures["serving_default"]
    spec = signature.structured_input_signature[1]["ids"]
    assert spec.shape.as_list() == [1, sequence.STEPS]
    out = next(iter(signature(ids=tf.constant(data.x_eval[:1])).values())).numpy()
    np.testing.assert_allclose(out, model.predict(data.x_eval[:1], verbose=0), atol=1e-5)


def test_keras_saved_model_has_keras_metadata_and_loads(tf_keras) -> None:
    _, keras = tf_keras
    path = models.keras_saved_model()
    assert (path / "saved_model.pb").is_file() and (path / "keras_metadata.pb").is_file()
    data = digits.digits_data()
    assert keras_top1(keras.models.load_model(path), data.x_eval, data.y_eval) >= MIN_DIGITS_TOP1


def test_custom_layer_model_is_refused_by_quantize_model(tf_keras) -> None:
    with warnings.catch_warnings():  # so that a `-W error` run gets past tfmot's import
        warnings.filterwarnings("ignore", "distutils Version classes are deprecated")
        import tensorflow_model_optimization as tfmot

    from fixtures.layers import ScaleLayer

    model = models.custom_layer_model()
    assert any(isinstance(layer, ScaleLayer) for layer in model.layers)
    data = digits.digits_data()
    assert keras_top1(model, data.x_eval, data.y_eval) >= 0.95
    with pytest.raises(RuntimeError, match=r"Layer scale:<class 'fixtures\.layers\.ScaleLayer'> "
                                           r"is not supported\. You can quantize this layer"):
        tfmot.quantization.keras.quantize_model(model)


# --- SavedModel with two outputs ---------------------------------------------------------------


def test_multi_output_saved_model_is_plain_and_converts_with_class_scores_first(
    tf_keras, tmp_path: Path
) -> None:
    tf, _ = tf_keras
    path = models.multi_output_saved_model()
    assert (path / "saved_model.pb").is_file() and not (path / "keras_metadata.pb").exists()

    tflite = tmp_path / "two_heads.tflite"
    tflite.write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(path)).convert())
    it = interpreter(tflite)
    (inp,) = it.get_input_details()
    outputs = it.get_output_details()
    assert list(inp["shape_signature"]) == [-1, 8, 8, 1] and inp["dtype"] == np.float32
    assert [tuple(o["shape"]) for o in outputs] == [(1, 10), (1, 64)]
    assert it.get_signature_list()["serving_default"]["outputs"] == list(models.MULTI_OUTPUT_NAMES)

    data = digits.digits_data()
    it.set_tensor(inp["index"], data.x_eval[:1])
    it.invoke()
    by_name = it.get_signature_runner("serving_default")(image=data.x_eval[:1])
    np.testing.assert_array_equal(it.get_tensor(outputs[0]["index"]), by_name["a_probs"])
    assert models.tflite_top1(tflite, data.x_eval, data.y_eval) >= MIN_DIGITS_TOP1


# --- .tflite files -----------------------------------------------------------------------------


def test_float_tflite_is_one_float_input_one_10_class_output() -> None:
    path = models.float_tflite()
    it = interpreter(path)
    (inp,), (out,) = it.get_input_details(), it.get_output_details()
    assert list(inp["shape_signature"]) == [-1, 8, 8, 1] and inp["dtype"] == np.float32
    assert tuple(out["shape"]) == (1, 10) and out["dtype"] == np.float32
    data = digits.digits_data()
    assert models.tflite_top1(path, data.x_eval, data.y_eval) >= MIN_DIGITS_TOP1


def test_int8_tflite_has_int8_input_and_output() -> None:
    path = models.int8_tflite()
    it = interpreter(path)
    (inp,), (out,) = it.get_input_details(), it.get_output_details()
    assert inp["dtype"] == np.int8 and out["dtype"] == np.int8
    assert inp["quantization"][0] > 0 and out["quantization"][0] > 0
    data = digits.digits_data()
    assert models.tflite_top1(path, data.x_eval, data.y_eval) >= MIN_DIGITS_TOP1


def test_corrupt_tflite_is_half_of_the_float_one_and_does_not_load() -> None:
    path, whole = models.corrupt_tflite(), models.float_tflite().read_bytes()
    assert path.read_bytes() == whole[: len(whole) // 2]
    with pytest.raises(ValueError, match="The model is not a valid Flatbuffer buffer"):
        interpreter(path)


# --- Keras 3 ------------------------------------------------------------------------------------


def test_keras3_model_file_is_keras_3_and_accurate() -> None:
    path = models.keras3_model_file()
    with zipfile.ZipFile(path) as archive:
        assert {"metadata.json", "config.json", "model.weights.h5"} <= set(archive.namelist())
        assert json.loads(archive.read("metadata.json"))["keras_version"].startswith("3.")
    result = models.keras3_subprocess("evaluate", str(path))
    assert result["keras_version"].startswith("3.") and result["top1"] >= 0.95


# --- caching --------------------------------------------------------------------------------------


def test_cached_paths_return_without_importing_tensorflow() -> None:
    names = ["digits_model_path", "wine_h5", "multi_output_saved_model", "keras_saved_model",
             "float_tflite", "int8_tflite", "corrupt_tflite", "keras3_model_file"]
    built = {name: str(getattr(fixtures, name)()) for name in names}  # warm the cache here
    from fixtures import sequence

    extra = {"wine_categorical_h5": str(models.wine_categorical_h5()),
             "stacked_lstm_saved_model": str(sequence.stacked_lstm_saved_model())}
    script = textwrap.dedent(f"""
        import json, sys
        import fixtures
        paths = {{name: str(getattr(fixtures, name)()) for name in {names!r}}}
        import fixtures.models, fixtures.sequence
        paths["wine_categorical_h5"] = str(fixtures.models.wine_categorical_h5())
        paths["stacked_lstm_saved_model"] = str(fixtures.sequence.stacked_lstm_saved_model())
        heavy = sorted(m for m in sys.modules
                       if m.split(".")[0] in ("tensorflow", "tf_keras", "keras", "sklearn"))
        print(json.dumps({{"paths": paths, "heavy": heavy}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True,
                          text=True, check=True)
    result = json.loads(proc.stdout)
    assert result["heavy"] == []
    assert result["paths"] == {**built, **extra}


def test_recipe_key_follows_source_and_refuses_unstable_parts() -> None:
    def recipe_a():
        return 1

    def recipe_b():
        return 2

    assert cache.recipe_key(recipe_a) == cache.recipe_key(recipe_a)
    assert cache.recipe_key(recipe_a) != cache.recipe_key(recipe_b)
    assert cache.recipe_key(recipe_a, "v=1") != cache.recipe_key(recipe_a, "v=2")
    assert len(cache.recipe_key(digits.digits_data)) == 10  # functools.cache is unwrapped
    with pytest.raises(TypeError, match="recipe part must be"):
        cache.recipe_key(object())


def test_cached_path_builds_once_under_the_env_dir(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(cache.ENV_DIR, str(tmp_path / "store"))
    calls = []

    def build(out: Path) -> None:
        calls.append(out)
        out.mkdir()
        (out / "payload").write_text("x")

    first = cache.cached_path("thing", "", "k1", build)
    assert first == tmp_path / "store" / "thing-k1" and (first / "payload").read_text() == "x"
    assert cache.cached_path("thing", "", "k1", build) == first
    assert len(calls) == 1
    assert not any(p.name.startswith(".thing-k1-") for p in first.parent.iterdir())  # tmp dir gone


def test_failed_build_leaves_nothing_behind(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(cache.ENV_DIR, str(tmp_path))

    def build(out: Path) -> None:
        out.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        cache.cached_path("thing", ".bin", "k1", build)
    assert [p.name for p in tmp_path.iterdir()] == [".thing-k1.lock"]


def test_concurrent_processes_build_once(tmp_path: Path) -> None:
    script = textwrap.dedent("""
        import sys, time
        from pathlib import Path
        from fixtures.cache import cached_path
        def build(out):
            with open(sys.argv[1], "a") as log:
                log.write("built\\n")
            time.sleep(0.5)
            out.write_text("done")
        print(cached_path("race", ".txt", "k1", build).read_text())
    """)
    log = tmp_path / "log"
    env = {**os.environ, cache.ENV_DIR: str(tmp_path / "store")}
    procs = [subprocess.Popen([sys.executable, "-c", script, str(log)], cwd=REPO_ROOT, env=env,
                              stdout=subprocess.PIPE, text=True) for _ in range(3)]
    assert [p.communicate(timeout=60)[0].strip() for p in procs] == ["done"] * 3
    assert log.read_text() == "built\n"
