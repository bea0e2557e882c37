"""Models the plugin has never seen: a Keras .h5 of another shape, a SavedModel with several
outputs, a float .tflite from elsewhere, a Keras 3 model; and bad input of every kind."""

from __future__ import annotations

import json

import pytest

from pytest_edgeopt.variants.registry import VARIANTS

AEQ = [n for n in VARIANTS if n.startswith("aeq_")]
PTQ = ["fp32", "float16", "dynamic_range", "int8", "int8_full", "int16x8"]


@pytest.fixture
def shared(pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory, tensorflow_loaded: None) -> pytest.Pytester:
    cache = tmp_path_factory.getbasetemp() / "edgeopt-variant-cache"  # one content-addressed cache for every digits run of the session
    pytester.makeini(f"[pytest]\nedgeopt_cache_dir = {cache}\nedgeopt_min_samples = 20\nedgeopt_min_time = 0.02\n")
    return pytester


def outcomes(p: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, dict[str, dict]]:
    out = p.path / "r.json"
    result = p.runpytest("-p", "no:cacheprovider", "-rs", f"--edgeopt-json={out}", *args)
    return result, {r["variant"]: r for r in json.loads(out.read_text())["measurements"]}


ALL_VARIANTS_TEST = """
def test_every_variant(measurement):
    assert measurement.size_bytes > 0
"""


def test_h5_classifier_of_another_shape(shared: pytest.Pytester) -> None:
    shared.makeconftest("""
        import pytest
        from fixtures.models import wine_data, wine_h5
        from pytest_edgeopt import ModelUnderTest
        @pytest.fixture(scope="session")
        def edgeopt_model():
            d = wine_data()
            return ModelUnderTest(name="wine-mlp", model=wine_h5(), representative_data=[x[None] for x in d.x_train[:40]],
                                  train_data=(d.x_train, d.y_train), eval_data=(d.x_eval, d.y_eval),
                                  options={"finetune_epochs": 1, "calibration_samples": 40, "clusters": 8})
    """)
    shared.makepyfile(ALL_VARIANTS_TEST)
    result, recs = outcomes(shared, "--edgeopt-variants=" + ",".join(["fp32", "int8", "int8_full", "qat_int8", "pruned", "clustered", "aeq_dynamic_wi8"]))
    result.assert_outcomes(passed=7)
    assert recs["int8"]["measurement"]["accuracy"]["samples"] == 54
    # A 6 KB MLP: the flatbuffer's fixed overhead caps the reduction (27% measured for QAT int8).
    assert recs["qat_int8"]["measurement"]["derived"]["size_reduction"] > 0.15
    assert recs["pruned"]["measurement"]["derived"]["compressed_size_reduction"] > 0.3


def test_saved_model_with_several_outputs(shared: pytest.Pytester) -> None:
    shared.makeconftest("""
        import pytest
        from fixtures.digits import digits_data, representative_batches
        from fixtures.models import multi_output_saved_model
        from pytest_edgeopt import ModelUnderTest
        @pytest.fixture(scope="session")
        def edgeopt_model():
            d = digits_data()
            return ModelUnderTest(name="digits-2out", model=multi_output_saved_model(),
                                  representative_data=representative_batches(30),
                                  train_data=(d.x_train, d.y_train), eval_data=(d.x_eval, d.y_eval))
    """)
    shared.makepyfile(ALL_VARIANTS_TEST)
    result, recs = outcomes(shared, "--edgeopt-variants=" + ",".join(PTQ + ["qat_int8", "aeq_dynamic_wi8"]))
    result.assert_outcomes(passed=len(PTQ) + 1, skipped=1)
    result.stdout.fnmatch_lines(["*qat_int8 fine-tunes Keras layers, but saved_model model (*) has none (a plain SavedModel)*"])
    assert recs["fp32"]["measurement"]["accuracy"]["value"] > 0.9  # top-1 of the first output
    assert recs["int8"]["measurement"]["derived"]["accuracy_drop"] < 0.03


def test_float_tflite_from_elsewhere_gets_fp32_and_the_litert_quantizer(shared: pytest.Pytester) -> None:
    shared.makeconftest("""
        import pytest
        from fixtures.digits import digits_data, representative_batches
        from fixtures.models import float_tflite
        from pytest_edgeopt import ModelUnderTest
        @pytest.fixture(scope="session")
        def edgeopt_model():
            d = digits_data()
            return ModelUnderTest(name="digits-tflite", model=float_tflite(),
                                  representative_data=representative_batches(30), eval_data=(d.x_eval, d.y_eval))
    """)
    shared.makepyfile(ALL_VARIANTS_TEST)
    # The named post-training variants (issue 12) are tests/plugin/test_model_inputs_e2e.py's.
    result, recs = outcomes(shared, "--edgeopt-variants=" + ",".join(["fp32", *AEQ, "qat_int8"]))
    result.assert_outcomes(passed=1 + len(AEQ), skipped=1)
    result.stdout.fnmatch_lines(["*qat_int8 fine-tunes Keras layers, and a .tflite has none*"])
    for name in AEQ:
        assert recs[name]["outcome"] == "passed"
        assert recs[name]["measurement"]["derived"]["accuracy_drop"] < 0.03
    assert recs["aeq_dynamic_wi4"]["measurement"]["derived"]["size_reduction"] > 0.7


def test_keras3_model_gets_post_training_variants(shared: pytest.Pytester) -> None:
    shared.makeconftest("""
        import pytest
        from fixtures.digits import digits_data, representative_batches
        from fixtures.models import keras3_model_file
        from pytest_edgeopt import ModelUnderTest
        @pytest.fixture(scope="session")
        def edgeopt_model():
            d = digits_data()
            return ModelUnderTest(name="digits-k3", model=keras3_model_file(),
                                  representative_data=representative_batches(30),
                                  train_data=(d.x_train, d.y_train), eval_data=(d.x_eval, d.y_eval))
    """)
    shared.makepyfile(ALL_VARIANTS_TEST)
    # Its fine-tuning variants (a tf_keras twin, issue 12) are tests/plugin/test_model_inputs_e2e.py's.
    result, recs = outcomes(shared, "--edgeopt-variants=fp32,float16,int8")
    result.assert_outcomes(passed=3)
    assert "keras_bridge" not in recs["int8"]["built"]["recipe"]


BAD_CONFTEST = """
import pytest
from fixtures.digits import digits_data, digits_model_path, representative_batches
from pytest_edgeopt import ModelUnderTest
@pytest.fixture(scope="session")
def edgeopt_model():
    d = digits_data()
    return {expr}
"""


def test_missing_data_fields_skip_naming_the_field(shared: pytest.Pytester) -> None:
    shared.makeconftest(BAD_CONFTEST.format(expr="ModelUnderTest(name='bare', model=digits_model_path(), eval_data=(d.x_eval, d.y_eval))"))
    shared.makepyfile(ALL_VARIANTS_TEST)
    result, _ = outcomes(shared, "--edgeopt-variants=fp32,int8,int16x8,qat_int8")
    result.assert_outcomes(passed=1, skipped=3)
    result.stdout.fnmatch_lines([
        "*int8 needs ModelUnderTest(representative_data=...), which 'bare' does not set*",
        "*qat_int8 needs ModelUnderTest(train_data=...), which 'bare' does not set*",
    ])


@pytest.mark.slow  # bigger model or matrix; its fast twin runs by default
def test_layer_tfmot_cannot_wrap_stays_float_and_is_named(shared: pytest.Pytester) -> None:
    shared.makeconftest(BAD_CONFTEST.format(expr="ModelUnderTest(name='custom', model=__import__('fixtures.models').models.custom_layer_model, "
                                                 "representative_data=representative_batches(20), train_data=(d.x_train, d.y_train), "
                                                 "eval_data=(d.x_eval, d.y_eval), options={'finetune_epochs': 1})"))
    shared.makepyfile(ALL_VARIANTS_TEST)
    result, _ = outcomes(shared, "--edgeopt-variants=fp32,int8,qat_int8")
    result.assert_outcomes(passed=3)  # partial QAT (issue 11): the custom layer stays float
    result.stdout.fnmatch_lines(["*qat_int8: partial quantization-aware training: left 'scale' (ScaleLayer) float*"])
    result.stdout.no_fnmatch_line("*site-packages/tensorflow*")


def test_eval_data_of_the_wrong_shape_is_explained(shared: pytest.Pytester) -> None:
    shared.makeconftest(BAD_CONFTEST.format(expr="ModelUnderTest(name='flat', model=digits_model_path(), eval_data=(d.x_eval.reshape(-1, 64), d.y_eval))"))
    shared.makepyfile(ALL_VARIANTS_TEST)
    result, _ = outcomes(shared, "--edgeopt-variants=fp32")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*flat: eval_data x has samples of shape (64,) but the model's input * takes (8, 8, 1) per sample*"])
    result.stdout.no_fnmatch_line("*Traceback*")


@pytest.mark.parametrize(("fixture", "message"), [
    ("corrupt_tflite", "*corrupt*"),
    ("int8_tflite", "*not a float .tflite*"),
])
def test_unusable_tflite_is_explained(shared: pytest.Pytester, fixture: str, message: str) -> None:
    shared.makeconftest(BAD_CONFTEST.format(expr=f"ModelUnderTest(name='bad', model=__import__('fixtures.models').models.{fixture}(), eval_data=(d.x_eval, d.y_eval))"))
    shared.makepyfile(ALL_VARIANTS_TEST)
    result, _ = outcomes(shared, "--edgeopt-variants=fp32,aeq_dynamic_wi8")
    result.assert_outcomes(failed=2)  # the model file is broken: a FAIL of its variants, not a harness ERROR
    result.stdout.fnmatch_lines([message])
    result.stdout.no_fnmatch_line("*Traceback*")
