"""The edgetpu marker through pytest: a stub runtime built with gcc (it claims no nodes, so
the model runs on the CPU behind the real load_delegate call) and the stand-in compiler;
and the Edge TPU compatibility budget on the cpu target."""

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
    return ModelUnderTest(name="digits-cnn", model={model!r}, representative_data=representative_batches(50),
                          eval_data=(d.x_eval[:100], d.y_eval[:100]))
"""


@pytest.fixture
def project(pytester: pytest.Pytester, digits_model_path: Path, tensorflow_loaded: None,
            tmp_path_factory: pytest.TempPathFactory) -> pytest.Pytester:
    cache = tmp_path_factory.getbasetemp() / "edgeopt-variant-cache"  # one content-addressed cache for every digits run of the session
    pytester.makeconftest(CONFTEST.format(model=str(digits_model_path)))
    pytester.makeini(f"[pytest]\nedgeopt_cache_dir = {cache}\nedgeopt_min_samples = 20\nedgeopt_min_time = 0.02\n")
    pytester.makepyfile(test_tpu="""
        import pytest
        @pytest.mark.edgeopt_variants("int8_full", "fp32")
        @pytest.mark.edgetpu
        def test_tpu(measurement):
            measurement.check(min_edgetpu_op_fraction=1.0, max_accuracy_drop=0.05)
    """)
    return pytester


def test_int8_full_runs_through_the_delegate_and_float_variants_skip_with_reasons(
        project: pytest.Pytester, stub_runtime: Path, fake_compiler: Path, tmp_path: Path) -> None:
    out = project.path / "r.json"
    result = project.runpytest("-p", "no:cacheprovider", "-rs", "-v", "--edgeopt-edgetpu=usb:0",
                               f"--edgeopt-edgetpu-library={stub_runtime}",
                               f"--edgeopt-edgetpu-compiler={fake_compiler}", f"--edgeopt-json={out}")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*test_tpu[[]int8_full-edgetpu-usb:0[]] PASSED*"])
    result.stdout.fnmatch_lines(["*fp32 on edgetpu:*not compatible with the Edge TPU*float32*"])
    rec = {r["variant"]: r for r in json.loads(out.read_text())["measurements"]}["int8_full"]
    extras = rec["measurement"]["extras"]
    assert extras["edgetpu_analysis"]["edgetpu_op_fraction"] == 1.0
    assert extras["edgetpu_compile"]["succeeded"] is True
    assert rec["measurement"]["first_inference_ms"] > 0
    assert rec["measurement"]["accuracy"]["samples"] == 100
    calls = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert any("-o" in c or "--out_dir" in " ".join(c) for c in calls)


def test_without_runtime_edgetpu_items_skip_and_fail_when_required(project: pytest.Pytester) -> None:
    args = ("-p", "no:cacheprovider", "-rs", "--edgeopt-edgetpu-library=libedgetpu-not-here.so.1")
    result = project.runpytest(*args)
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*edgetpu: *libedgetpu-not-here.so.1*"])
    result.stdout.no_fnmatch_line("*Exception ignored*")
    result = project.runpytest(*args, "--edgeopt-require=edgetpu")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*(required by --edgeopt-require)*"])


def test_edgetpu_compatibility_budget_gates_on_the_cpu(project: pytest.Pytester) -> None:
    project.makepyfile(test_tpu="""
        import pytest
        @pytest.mark.edgeopt_variants("int8_full", "float16")
        @pytest.mark.cpu
        def test_stays_compatible(measurement):
            measurement.check(min_edgetpu_op_fraction=1.0)
    """)
    result = project.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*float16 on cpu: Edge TPU op fraction 0.000 < 1.000 (*float*"])
