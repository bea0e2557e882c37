"""The android_gpu and android_cpu markers through pytest, end to end: a real adb server
(the adbutils wheel's adb) talking to the emulated device in devices/, whose
benchmark_model stand-in really runs the model with LiteRT."""

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
                          eval_data=(d.x_eval[:200], d.y_eval[:200]))
"""


@pytest.fixture
def project(pytester: pytest.Pytester, digits_model_path: Path, tensorflow_loaded: None,
            tmp_path_factory: pytest.TempPathFactory) -> pytest.Pytester:
    cache = tmp_path_factory.getbasetemp() / "edgeopt-variant-cache"  # one content-addressed cache for every digits run of the session
    pytester.makeconftest(CONFTEST.format(model=str(digits_model_path)))
    pytester.makeini(f"[pytest]\nedgeopt_cache_dir = {cache}\nedgeopt_min_time = 0.05\nedgeopt_min_samples = 20\n")
    return pytester


def test_android_gpu_and_cpu_end_to_end(project: pytest.Pytester, adb_server, phone, standin: Path) -> None:
    project.makepyfile(test_phone="""
        import pytest
        @pytest.mark.edgeopt_variants("int8", "int16x8")
        @pytest.mark.android_gpu
        @pytest.mark.android_cpu
        def test_phone(measurement):
            measurement.check(max_accuracy_drop=0.02, require_full_delegation=measurement.target == "android_gpu")
    """)
    out = project.path / "r.json"
    result = project.runpytest("-p", "no:cacheprovider", "-v", f"--edgeopt-adb={adb_server.address}",
                               f"--edgeopt-benchmark-model={standin}", f"--edgeopt-json={out}")
    result.assert_outcomes(passed=3, failed=1)
    label = json.loads(out.read_text())["measurements"][0]["device"]
    result.stdout.fnmatch_lines([
        f"*test_phone[[]int8-android_gpu-{label}[]] PASSED*",
        f"*test_phone[[]int8-android_cpu-{label}[]] PASSED*",
        f"*test_phone[[]int16x8-android_gpu-{label}[]] FAILED*",
        f"*test_phone[[]int16x8-android_cpu-{label}[]] PASSED*",
    ])
    result.stdout.fnmatch_lines(["*int16x8 on android_gpu/*: full GPU delegation required, but the GPU delegate executes none of the graph*"])
    recs = {(r["variant"], r["target"]): r["measurement"] for r in json.loads(out.read_text())["measurements"]}
    gpu = recs[("int8", "android_gpu")]
    assert gpu["extras"]["delegation"] == "full"
    assert gpu["baseline"]["target"] == "android_gpu"  # fp32 measured on the same device and delegate
    assert gpu["accuracy"]["samples"] == 200 and gpu["derived"]["accuracy_drop"] < 0.02
    assert gpu["device"]["details"]["model"] == "Pixel Emu"
    assert recs[("int16x8", "android_gpu")]["extras"]["delegation"] == "none"
    # nothing left on the device: the run directory is removed at the end of the session
    assert not list((phone.root / "data" / "local" / "tmp").glob("edgeopt-*"))


def test_without_benchmark_model_items_skip_naming_the_option(project: pytest.Pytester, adb_server, phone) -> None:
    project.makepyfile(test_phone="""
        import pytest
        @pytest.mark.edgeopt_variants("int8")
        @pytest.mark.android_cpu
        def test_phone(measurement):
            pass
    """)
    result = project.runpytest("-p", "no:cacheprovider", "-rs", f"--edgeopt-adb={adb_server.address}")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*int8 on android_cpu: no benchmark_model binary*--edgeopt-benchmark-model=PATH*"])


def test_no_adb_server_skips_and_fails_when_required(project: pytest.Pytester) -> None:
    from tests.adb_helpers import free_port

    project.makepyfile(test_phone="""
        import pytest
        @pytest.mark.edgeopt_variants("int8")
        @pytest.mark.android_gpu
        def test_phone(measurement):
            pass
    """)
    port = free_port()
    result = project.runpytest("-p", "no:cacheprovider", "-rs", f"--edgeopt-adb=127.0.0.1:{port}")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines([f"*android_gpu: no adb server at 127.0.0.1:{port}*"])
    result = project.runpytest("-p", "no:cacheprovider", f"--edgeopt-adb=127.0.0.1:{port}",
                               "--edgeopt-require=android_gpu")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*(required by --edgeopt-require)*"])
