"""Models with several inputs (issue 11): eval, train and representative data given as a
list of arrays (one per input, the Keras model's order) or a dict keyed by input name, fed
to the ``.tflite`` by name (the converter orders a Keras model's inputs by name, not as the
Keras model does: ``features`` before ``image`` for the zoo's ``multi_input``).

The data handling is checked without TensorFlow; the plugin run builds fp32 and int8 of the
zoo's two-input model on the host CPU (accuracy measured, the fp32 conversion checked
against the Keras model, which is fed both inputs).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from pytest_edgeopt.model import ModelError, ModelUnderTest, as_inputs, fingerprint_arrays, n_samples, take
from pytest_edgeopt.tensors import TensorSpec, arrange_inputs, input_key

IMAGE = np.zeros((5, 16, 16, 3), np.float32)
FEATURES = np.ones((5, 8), np.float32)
Y = np.arange(5) % 4


def spec(name: str, index: int, *shape: int) -> TensorSpec:
    return TensorSpec(name, index, (-1, *shape), np.dtype(np.float32), 0.0, 0)


#: The zoo's multi_input model converted: the .tflite lists the inputs by name.
TFLITE_INPUTS = (spec("serving_default_features:0", 0, 8), spec("serving_default_image:0", 1, 16, 16, 3))


# -- model.py: the data ----------------------------------------------------------------------


def test_eval_data_with_a_list_of_inputs_is_kept_per_input() -> None:
    mut = ModelUnderTest("m", "m.h5", eval_data=([IMAGE, FEATURES], Y))
    x, y = mut.eval_arrays  # type: ignore[misc]
    assert isinstance(x, list) and [a.shape for a in x] == [IMAGE.shape, FEATURES.shape]
    assert n_samples(x) == 5 and len(y) == 5
    assert [a.shape for a in take(x, [0, 2])] == [(2, 16, 16, 3), (2, 8)]


def test_eval_data_as_a_dict_and_same_shaped_inputs_as_a_list() -> None:
    x, _ = ModelUnderTest("m", "m.h5", eval_data=({"image": IMAGE, "features": FEATURES}, Y)).eval_arrays  # type: ignore[misc]
    assert isinstance(x, dict) and sorted(x) == ["features", "image"]
    # Two inputs of the same shape: arrays of N samples each, N != 2, is two inputs ...
    a, b = np.zeros((5, 3)), np.ones((5, 3))
    x2, _ = ModelUnderTest("m", "m.h5", eval_data=([a, b], Y)).eval_arrays  # type: ignore[misc]
    assert isinstance(x2, list) and len(x2) == 2
    # ... while a list of samples of one input stays one array.
    x1, _ = ModelUnderTest("m", "m.h5", eval_data=([np.zeros(3)] * 5, Y)).eval_arrays  # type: ignore[misc]
    assert isinstance(x1, np.ndarray) and x1.shape == (5, 3)


def test_inputs_with_different_sample_counts_are_a_model_error_naming_them() -> None:
    with pytest.raises(ModelError, match=r"different numbers of samples \(input 0: 5, input 1: 4\)"):
        as_inputs([IMAGE, FEATURES[:4]], "eval_data")
    with pytest.raises(ModelError, match="x has 5 samples but y has 3"):
        ModelUnderTest("m", "m.h5", eval_data=([IMAGE, FEATURES], Y[:3])).eval_arrays  # noqa: B018


def test_representative_batches_of_several_inputs_are_lists_and_fingerprinted() -> None:
    rep = [[IMAGE[i:i + 1], FEATURES[i:i + 1]] for i in range(3)]
    batches = ModelUnderTest("m", "m.h5", representative_data=rep).representative_batches()
    assert batches is not None and len(batches) == 3
    assert [a.shape for a in batches[0]] == [(1, 16, 16, 3), (1, 8)]  # type: ignore[attr-defined]
    changed = [[IMAGE[i:i + 1], FEATURES[i:i + 1] + 1] for i in range(3)]
    assert fingerprint_arrays(rep) != fingerprint_arrays(changed)
    assert fingerprint_arrays({"a": IMAGE}) != fingerprint_arrays({"b": IMAGE})


# -- tensors.py: the inputs in the .tflite's order ---------------------------------------------


def test_a_list_in_keras_order_is_fed_by_name_to_the_tflite_order() -> None:
    assert input_key("serving_default_image:0") == "image"
    by_name = arrange_inputs([IMAGE, FEATURES], TFLITE_INPUTS, ["image", "features"])
    assert by_name[0] is FEATURES and by_name[1] is IMAGE
    by_shape = arrange_inputs([IMAGE, FEATURES], TFLITE_INPUTS)  # names unknown: the shapes tell them apart
    assert by_shape[0] is FEATURES and by_shape[1] is IMAGE
    by_key = arrange_inputs({"image": IMAGE, "features": FEATURES}, TFLITE_INPUTS)
    assert by_key[0] is FEATURES and by_key[1] is IMAGE


def test_the_wrong_number_of_inputs_names_the_models_inputs() -> None:
    with pytest.raises(ValueError, match=r"1 input array\(s\) but the model has 2 input\(s\): features \(8,\), "
                                         r"image \(16, 16, 3\)"):
        arrange_inputs(IMAGE, TFLITE_INPUTS)
    with pytest.raises(ValueError, match="missing features"):
        arrange_inputs({"image": IMAGE}, TFLITE_INPUTS)


# -- through the plugin ----------------------------------------------------------------------


@pytest.fixture
def shared(pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory, tensorflow_loaded: None) -> pytest.Pytester:
    cache = tmp_path_factory.getbasetemp() / "edgeopt-variant-cache"
    pytester.makeini(f"[pytest]\nedgeopt_cache_dir = {cache}\nedgeopt_min_samples = 20\nedgeopt_min_time = 0.02\n")
    return pytester


def test_two_input_model_builds_fp32_and_int8_and_is_measured_on_cpu(shared: pytest.Pytester) -> None:
    shared.makeconftest("""
        import pytest
        from fixtures.zoo import zoo_model_under_test
        @pytest.fixture(scope="session")
        def edgeopt_model():
            return zoo_model_under_test("multi_input", n_train=32, n_eval=16)
    """)
    shared.makepyfile("""
        def test_variant(measurement):
            assert measurement.size_bytes > 0
    """)
    out = shared.path / "r.json"
    result = shared.runpytest("-p", "no:cacheprovider", "-rfEs", f"--edgeopt-json={out}",
                              "--edgeopt-variants=fp32,int8", "--edgeopt-targets=cpu")
    result.assert_outcomes(passed=2)
    data = json.loads(out.read_text())
    recs = {r["variant"]: r["measurement"] for r in data["measurements"]}
    for variant in ("fp32", "int8"):
        acc = recs[variant]["accuracy"]
        assert acc["samples"] == 16 and 0.0 <= acc["value"] <= 1.0
    # The fp32 .tflite checked against the Keras model fed both inputs by name (fed in the
    # .tflite's order, image and features would be swapped and the Keras call would fail).
    fidelity = recs["fp32"]["fidelity"]
    assert fidelity["samples"] == 16 and fidelity["source_kind"] == "keras"
    assert fidelity["max_abs_diff"] < 1e-4 * max(fidelity["output_range"], 1.0)


# -- a tiny two-input model: the .tflite fed by name, and the parts that take one input ----------


@pytest.fixture(scope="module")
def two_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelUnderTest, Any]:
    """A tf_keras model with inputs ``b_vec`` (4,) then ``a_img`` (3, 3, 1), its fp32
    ``.tflite`` as a BuiltVariant, and data."""
    from fixtures.cache import legacy_tf_keras
    from pytest_edgeopt.variants.builder import BuiltVariant

    tf, keras = legacy_tf_keras()
    keras.utils.set_random_seed(0)
    vec, img = keras.Input((4,), name="b_vec"), keras.Input((3, 3, 1), name="a_img")
    h = keras.layers.concatenate([keras.layers.Dense(3)(vec), keras.layers.Flatten()(img)])
    model = keras.Model([vec, img], keras.layers.Dense(2, activation="softmax")(h))
    path = tmp_path_factory.mktemp("two") / "fp32.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(6, 4)).astype(np.float32), rng.normal(size=(6, 3, 3, 1)).astype(np.float32)]
    mut = ModelUnderTest("two", model, representative_data=[[a[:1] for a in x]], eval_data=(x, np.arange(6) % 2))
    built = BuiltVariant("two", "fp32", path, path.stat().st_size, 0, {}, 0.0, False, "k")
    return mut, built


def test_the_tflite_gets_each_input_by_name_and_matches_keras(two_inputs: tuple[ModelUnderTest, Any]) -> None:
    from pytest_edgeopt.measure import check_eval_shape
    from pytest_edgeopt.targets.cpu import run_predict
    from pytest_edgeopt.tensors import ModelIO

    mut, built = two_inputs
    specs = ModelIO.of_file(built.path).inputs
    assert sorted(input_key(s.name) for s in specs) == ["a_img", "b_vec"]
    x, _ = mut.eval_arrays  # type: ignore[misc]
    fed = check_eval_shape(mut, built, x)
    assert [a.shape[1:] for a in fed] == [tuple(s.shape[1:]) for s in specs]  # each input where the .tflite wants it
    out = run_predict(built.path, fed)[0]
    np.testing.assert_allclose(out, mut.source.obj.predict(x, verbose=0), atol=1e-5)
    by_name = check_eval_shape(mut, built, {"a_img": x[1], "b_vec": x[0]})  # a dict, in another order
    np.testing.assert_allclose(run_predict(built.path, by_name)[0], out, atol=1e-6)


def test_a_target_that_feeds_one_input_skips_naming_the_inputs(two_inputs: tuple[ModelUnderTest, Any]) -> None:
    from pytest_edgeopt.measure import observe
    from pytest_edgeopt.targets.base import HOST, LatencySettings, ModelIncompatible

    class OneInputTarget:  # as the Android and Edge TPU targets: one raw input per run
        name, device = "phone", HOST

    mut, built = two_inputs
    with pytest.raises(ModelIncompatible, match=r"the model has 2 inputs \(serving_default_\w+:0, "
                                                r"serving_default_\w+:0\); phone takes one input per run"):
        observe(OneInputTarget(), built, mut, LatencySettings())  # type: ignore[arg-type]


def test_the_quantization_debugger_says_it_takes_one_input(two_inputs: tuple[ModelUnderTest, Any]) -> None:
    from pytest_edgeopt.variants.quant_debug import QuantDebugUnsupported, layer_errors

    mut, _ = two_inputs
    with pytest.raises(QuantDebugUnsupported, match="the model has 2 inputs .*the quantization debugger takes one input"):
        layer_errors(mut, "int8")
