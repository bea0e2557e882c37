"""A variant that crashes at invoke is a FAIL of its test (never an ERROR), whose message
names the node and gives the float_nodes rebuild the session measured: the DIV-by-a-norm
model of ``fixtures.fragile`` (issue 11, pattern 3), through the worker process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

CONFTEST = """
import pytest
from fixtures.fragile import gained_eval, gained_representative
from pytest_edgeopt import ModelUnderTest

@pytest.fixture(scope="session")
def edgeopt_model():
    return ModelUnderTest(name="normalizer", model={model!r}, representative_data=gained_representative(),
                          eval_data=gained_eval())
"""


@pytest.mark.slow  # ~85 s: two workers' TensorFlow imports and four conversions; the in-process twin is
# tests/test_broken_variants.py::test_div_crash_fails_naming_the_node_with_the_measured_repair
def test_crash_at_invoke_fails_with_the_measured_float_nodes_remedy(pytester: pytest.Pytester, tensorflow_loaded: None,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from fixtures.fragile import normalizer_model_path

    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[2]))
    pytester.makeconftest(CONFTEST.format(model=str(normalizer_model_path())))
    pytester.makeini(f"[pytest]\nedgeopt_cache_dir = {pytester.path / 'cache'}\nedgeopt_min_samples = 20\n"
                     "edgeopt_min_time = 0.02\n")
    pytester.makepyfile(test_normalizer="""
        import pytest

        @pytest.mark.edgeopt_variants("int8")
        @pytest.mark.cpu
        def test_int8(measurement):
            pass
    """)
    out = pytester.path / "results.json"
    result = pytester.runpytest("-p", "no:cacheprovider", f"--edgeopt-json={out}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*int8 crashed at invoke: node * (DIV) failed to invoke: tflite/kernels/div.cc*",
        "*kept node * (DIV) in float: it runs, top1 *",
        "*remedy: add @pytest.mark.edgeopt_options(float_nodes=(*",
    ])
    assert "RuntimeError" not in result.stdout.str()
    record = json.loads(out.read_text())["measurements"][0]
    assert record["outcome"] == "failed"
