"""Selective quantization as a variant setting: the fragile digits CNN's int8 misses an
accuracy budget, and the same test with ``float_nodes`` (the quantization report's
suggestion) in ``edgeopt_options`` meets it, with the knob in the recipe of the JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

CONFTEST = """
import pytest
from fixtures.digits import digits_data, representative_batches
from pytest_edgeopt import ModelUnderTest

@pytest.fixture(scope="session")
def edgeopt_model():
    d = digits_data()
    return ModelUnderTest(name="fragile", model={model!r}, representative_data=representative_batches(100),
                          eval_data=(d.x_eval, d.y_eval))
"""

FLOAT_NODES = ("fragile/outlier_dense/MatMul;fragile/outlier_dense/Relu;fragile/outlier_dense/BiasAdd",
               "fragile/probs/MatMul;fragile/probs/BiasAdd")


def test_float_nodes_marker_recovers_the_accuracy_budget(pytester: pytest.Pytester, tensorflow_loaded: None,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from fixtures.fragile import fragile_model_path

    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[2]))
    pytester.makeconftest(CONFTEST.format(model=str(fragile_model_path())))
    pytester.makeini(f"[pytest]\nedgeopt_cache_dir = {pytester.path / 'cache'}\nedgeopt_min_samples = 20\n"
                     "edgeopt_min_time = 0.02\n")
    pytester.makepyfile(test_fragile=f"""
        import pytest

        @pytest.mark.edgeopt_variants("int8")
        @pytest.mark.cpu
        def test_plain(measurement):
            measurement.check(max_accuracy_drop=0.02)

        @pytest.mark.edgeopt_variants("int8")
        @pytest.mark.edgeopt_options(float_nodes={FLOAT_NODES!r})
        @pytest.mark.cpu
        def test_selective(measurement):
            measurement.check(max_accuracy_drop=0.01)

        @pytest.mark.edgeopt_variants("int8")
        @pytest.mark.edgeopt_options(float_nodes="auto")
        @pytest.mark.edgeopt_budget(max_accuracy_drop=0.02)
        @pytest.mark.cpu
        def test_auto(measurement):
            pass
    """)
    out = pytester.path / "results.json"
    result = pytester.runpytest("-p", "no:cacheprovider", f"--edgeopt-json={out}")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*test_plain*int8*", "*accuracy*"])
    records = {r["test"].split("::")[-1].split("[")[0]: r for r in json.loads(out.read_text())["measurements"]}
    assert records["test_plain"]["outcome"] == "failed" and records["test_selective"]["outcome"] == "passed"
    assert "float_nodes" not in records["test_plain"]["built"]["recipe"]
    assert records["test_selective"]["built"]["recipe"]["float_nodes"] == sorted(FLOAT_NODES)
    # float_nodes="auto" aims at the test's own max_accuracy_drop, and records what it chose
    auto = records["test_auto"]["built"]["recipe"]
    assert records["test_auto"]["outcome"] == "passed"
    assert auto["float_nodes"] == "auto" and auto["float_nodes_max_drop"] == 0.02, auto
    assert auto["float_nodes_chosen"], auto
