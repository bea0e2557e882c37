"""End to end: real variants of the digits CNN built, cached and measured on the host CPU,
through pytest itself (pytester), with the JSON and the summary checked."""

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
    return ModelUnderTest(
        name="digits-cnn", model={model!r},
        representative_data=representative_batches(50),
        train_data=(d.x_train, d.y_train), eval_data=(d.x_eval, d.y_eval),
        options={{"finetune_epochs": 1, "calibration_samples": 50}},
    )
"""


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One variant cache for every run in this module: each variant is built once."""
    return tmp_path_factory.mktemp("edgeopt-cache")


@pytest.fixture
def project(pytester: pytest.Pytester, digits_model_path: Path, shared_cache: Path, tensorflow_loaded: None,
            monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[2]))  # subprocess runs import fixtures
    pytester.makeconftest(CONFTEST.format(model=str(digits_model_path)))
    pytester.makeini(f"[pytest]\nedgeopt_cache_dir = {shared_cache}\nedgeopt_min_samples = 50\nedgeopt_min_time = 0.05\n")
    return pytester


def run_json(p: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, dict]:
    out = p.path / "results.json"
    result = p.runpytest("-p", "no:cacheprovider", f"--edgeopt-json={out}", *args)
    return result, json.loads(out.read_text())


def test_budgets_pass_and_every_figure_is_reported(project: pytest.Pytester) -> None:
    project.makepyfile(test_e2e_budgets="""
        import pytest
        @pytest.mark.edgeopt_variants("float16", "int8", "dynamic_range")
        @pytest.mark.cpu
        def test_budgets(measurement):
            measurement.check(min_size_reduction=0.45, max_accuracy_drop=0.02, max_latency_ms=50)
    """)
    result, doc = run_json(project, "-v")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines([
        "*test_budgets[[]float16-cpu[]] PASSED*",
        "*test_budgets[[]int8-cpu[]] PASSED*",
        "*edgeopt summary*",
        "model*variant*target*size KiB*gzip KiB*p50 ms*speedup*metric*drop*result",
        "digits-cnn*float16*cpu*PASS",
    ])
    assert doc["schema"] == 1
    assert doc["environment"]["packages"]["tensorflow"].startswith("2.")
    by_variant = {r["variant"]: r for r in doc["measurements"]}
    assert set(by_variant) == {"float16", "int8", "dynamic_range"}
    for name, rec in by_variant.items():
        m = rec["measurement"]
        assert rec["outcome"] == "passed"
        assert m["baseline"]["variant"] == "fp32"
        assert len(m["latency"]["samples_us"]) >= 50
        assert m["accuracy"]["samples"] == 450
        assert m["budget_checks"][0]["passed"] is True
        assert m["recipe"]["variant"] == name
        d = m["derived"]
        assert d["size_bytes"] == m["size_bytes"] and 0 < d["compressed_size_bytes"] <= d["size_bytes"]
        assert d["speedup"] == pytest.approx(m["baseline"]["latency"]["p50_ms"] / m["latency"]["p50_ms"])
    # Plausible against the known figures (FACTS.md): float16 about half, integer about a quarter.
    assert 0.45 < by_variant["float16"]["measurement"]["derived"]["size_reduction"] < 0.55
    assert by_variant["int8"]["measurement"]["derived"]["size_reduction"] > 0.6
    assert by_variant["int8"]["measurement"]["derived"]["accuracy_drop"] < 0.02


def test_budget_failure_message_names_value_budget_baseline_variant_and_target(project: pytest.Pytester) -> None:
    project.makepyfile(test_e2e_fail="""
        import pytest
        @pytest.mark.edgeopt_variants("int8")
        def test_strict(measurement):
            measurement.check(min_size_reduction=0.99, max_accuracy_drop=0.0)

        @pytest.mark.edgeopt_variants("float16")
        @pytest.mark.edgeopt_budget(min_speedup=1000)
        def test_marker(measurement):
            pass
    """)
    result, doc = run_json(project)
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "*BudgetExceeded: int8 on cpu: size reduction 0.* < 0.990 (fp32 * B -> int8 * B)*",
        "*float16 on cpu: speedup *x < 1000.00x (fp32 p50 * ms -> float16 p50 * ms)*",
    ])
    failed = {r["variant"]: r for r in doc["measurements"]}
    assert failed["int8"]["outcome"] == "failed"
    assert failed["int8"]["measurement"]["budget_checks"][0]["violations"][0]["keyword"] == "min_size_reduction"
    assert failed["float16"]["measurement"]["budget_checks"][0]["budgets"] == {"min_speedup": 1000}


def test_optimized_model_gives_path_sizes_recipe_and_cache_state(project: pytest.Pytester) -> None:
    project.makepyfile(test_built="""
        import gzip, pytest
        @pytest.mark.edgeopt_variants("int8")
        @pytest.mark.edgeopt_options(calibration_samples=20)
        def test_built(optimized_model):
            data = optimized_model.path.read_bytes()
            assert optimized_model.name == "int8"
            assert optimized_model.size_bytes == len(data)
            assert optimized_model.compressed_size_bytes == len(gzip.compress(data, 9, mtime=0))
            assert optimized_model.recipe["calibration_samples"] == 20
            assert optimized_model.build_seconds > 0
            print("FROM_CACHE", optimized_model.from_cache)
    """)
    result = project.runpytest("-s", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    first = "FROM_CACHE True" in result.stdout.str()
    result = project.runpytest("-s", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*FROM_CACHE True*"])
    result = project.runpytest("-s", "-p", "no:cacheprovider", "--edgeopt-rebuild")
    result.stdout.fnmatch_lines(["*building digits-cnn int8*"])
    result.stdout.fnmatch_lines(["*FROM_CACHE False*"])
    assert first in (True, False)


def test_training_build_prints_progress(project: pytest.Pytester) -> None:
    project.makepyfile(test_qat="""
        import pytest
        @pytest.mark.edgeopt_variants("qat_int8")
        def test_qat(measurement):
            measurement.check(max_accuracy_drop=0.05)
    """)
    result = project.runpytest("-p", "no:cacheprovider", "--edgeopt-rebuild")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*[[]edgeopt[]] building digits-cnn qat_int8*", "*[[]edgeopt[]] qat_int8: epoch 1/1*"])


def test_fp32_baseline_is_measured_once_per_session(project: pytest.Pytester) -> None:
    project.makepyfile(test_two="""
        import pytest
        @pytest.mark.edgeopt_variants("int8", "float16")
        def test_a(measurement):
            pass
        @pytest.mark.edgeopt_variants("int8")
        def test_b(measurement):
            pass
    """)
    result = project.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    out = result.stdout.str()
    assert out.count("measuring digits-cnn fp32 on cpu") == 1
    assert out.count("measuring digits-cnn int8 on cpu") == 1


NEW_TARGET = """
from pytest_edgeopt.names import TargetSpec
from pytest_edgeopt.targets.base import Device, Discovery

BIG = Device(kind="host", id="host-big", label="big")


def pytest_edgeopt_targets(config):
    return [TargetSpec("cpu_big", "run on the host CPU with 2 threads (test target)", device_kind="host")]


def pytest_edgeopt_discover(config, target):
    if target == "cpu_big":
        return Discovery((BIG,))


def pytest_edgeopt_make_target(config, name, device):
    if name == "cpu_big":
        from pytest_edgeopt.targets.cpu import CpuTarget

        class BigCores(CpuTarget):
            made = 0

        BigCores.made += 1
        return BigCores(name, device, threads=2)
"""


def test_a_conftest_adds_a_target_that_runs_and_is_measured(project: pytest.Pytester) -> None:
    """A brand-new target, declared, discovered and made from a conftest (the package
    untouched): its marker is registered (``--strict-markers``), ``--edgeopt-targets``
    accepts it, and its items are measured on it."""
    conftest = project.path / "conftest.py"
    conftest.write_text(conftest.read_text() + NEW_TARGET)
    project.makepyfile(test_new_target="""
        import pytest
        @pytest.mark.edgeopt_variants("int8")
        @pytest.mark.cpu_big
        def test_big(measurement):
            assert measurement.where == "cpu_big/big"
            measurement.check(min_size_reduction=0.5)
    """)
    result, doc = run_json(project, "-v", "--edgeopt-targets=cpu_big,cpu")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*measuring digits-cnn int8 on cpu_big/big*", "*test_big[[]int8-cpu_big-big[]] PASSED*"])
    (m,) = doc["measurements"]
    assert (m["variant"], m["target"], m["device"]) == ("int8", "cpu_big", "big")
    assert m["outcome"] == "passed" and len(m["measurement"]["latency"]["samples_us"]) >= 50
    assert m["measurement"]["baseline"]["target"] == "cpu_big"
    result = project.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.cpu_big: run on the host CPU with 2 threads (test target)"])


def test_second_run_builds_nothing_and_imports_no_tensorflow(project: pytest.Pytester, tmp_path: Path) -> None:
    """A warm run takes every variant from the cache and never imports tensorflow
    (subprocess runs: a fresh interpreter each)."""
    project.makepyfile(test_warm="""
        import sys, pytest
        @pytest.mark.edgeopt_variants("fp32", "dynamic_range", "int8")
        def test_v(measurement):
            pass

        def test_zz_tensorflow_imported():
            with open("tf_imported.txt", "w") as f:
                f.write(str("tensorflow" in sys.modules))
    """)
    cache = tmp_path / "private-cache"
    docs = []
    for run in range(2):
        out = project.path / f"run{run}.json"
        result = project.runpytest_subprocess("-p", "no:cacheprovider", f"--edgeopt-cache-dir={cache}",
                                              f"--edgeopt-json={out}")
        result.assert_outcomes(passed=4)
        docs.append(json.loads(out.read_text()))
        if run == 1:
            assert (project.path / "tf_imported.txt").read_text() == "False"
    cold, warm = docs[0]["totals"], docs[1]["totals"]
    assert cold["variants_built"] == 3 and cold["variants_from_cache"] == 0
    assert warm["variants_built"] == 0 and warm["variants_from_cache"] == 3
    assert warm["build_phase_s"] < 0.1 * cold["build_phase_s"]
    assert all(r["measurement"]["from_cache"] for r in docs[1]["measurements"] if r["measurement"])


def test_xdist_workers_send_every_measurement_to_one_json(project: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    project.makepyfile(test_par="""
        import pytest
        @pytest.mark.edgeopt_variants("fp32", "float16", "dynamic_range", "int8")
        def test_v(measurement):
            measurement.check(max_accuracy_drop=0.05)
    """)
    out = project.path / "par.json"
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", f"--edgeopt-json={out}")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*edgeopt summary*", "digits-cnn*int8*cpu*PASS"])
    doc = json.loads(out.read_text())
    assert sorted(r["variant"] for r in doc["measurements"]) == ["dynamic_range", "float16", "fp32", "int8"]


def test_results_survive_a_killed_run(project: pytest.Pytester) -> None:
    """The JSON is rewritten (atomically) as results arrive: a run killed by SIGKILL in the
    middle keeps what it had measured, and the file is never half-written."""
    project.makepyfile(test_killed="""
        import os, signal, pytest
        @pytest.mark.edgeopt_variants("fp32", "dynamic_range")
        def test_v(measurement):
            pass

        def test_zz_die():
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    out = project.path / "killed.json"
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", f"--edgeopt-json={out}")
    assert result.ret == -9
    doc = json.loads(out.read_text())
    assert sorted(r["variant"] for r in doc["measurements"]) == ["dynamic_range", "fp32"]
    assert not list(project.path.glob(".killed.json.*"))


def test_html_report_from_the_session(project: pytest.Pytester) -> None:
    project.makepyfile(test_html="""
        import pytest
        @pytest.mark.edgeopt_variants("fp32", "float16")
        def test_v(measurement):
            pass
    """)
    out = project.path / "report.html"
    result = project.runpytest("-p", "no:cacheprovider", f"--edgeopt-html={out}", f"--edgeopt-json={project.path / 'r.json'}")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([f"edgeopt: HTML report written to {out}"])
    page = out.read_text()
    assert page.count("data:image/png;base64,") >= 2
    size_kib = json.loads((project.path / "r.json").read_text())["measurements"][0]["measurement"]["size_bytes"] / 1024
    assert f"{size_kib:,.1f}" in page


def test_measurements_reach_junit_xml_as_properties(project: pytest.Pytester) -> None:
    project.makepyfile(test_junit="""
        import pytest
        @pytest.mark.edgeopt_variants("float16")
        def test_v(measurement):
            pass
    """)
    xml = project.path / "junit.xml"
    project.runpytest("-p", "no:cacheprovider", f"--junitxml={xml}").assert_outcomes(passed=1)
    import xml.etree.ElementTree as ET

    props = {p.get("name"): p.get("value") for p in ET.parse(xml).iter("property")}
    assert props["edgeopt_variant"] == "float16" and props["edgeopt_target"] == "cpu"
    assert int(props["edgeopt_size_bytes"]) > 0 and float(props["edgeopt_p50_ms"]) > 0
    assert 0.45 < float(props["edgeopt_size_reduction"]) < 0.55


def test_public_api_is_lazy() -> None:
    import subprocess
    import sys

    code = ("import sys, pytest_edgeopt as e; assert 'pandas' not in sys.modules; "
            "assert callable(e.load_runs) and 'pandas' in sys.modules; print(sorted(e.__all__))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "load_runs" in proc.stdout and "Measurement" in proc.stdout


def test_progress_lines_do_not_repeat_the_test_files_name(project: pytest.Pytester) -> None:
    """Issue 11, pattern 5: without -v, pytest printed the test file's name again after every
    [edgeopt] progress line (18 times for the example)."""
    project.makepyfile(test_progress="""
        import pytest
        @pytest.mark.edgeopt_variants("fp32", "float16", "dynamic_range")
        @pytest.mark.cpu
        def test_budgets(measurement):
            pass
    """)
    result = project.runpytest("-p", "no:cacheprovider", "-p", "no:randomly")
    result.assert_outcomes(passed=3)
    lines = result.stdout.lines
    assert sum("[edgeopt] measuring" in line for line in lines) >= 3  # progress was printed...
    assert sum(line.startswith("test_progress.py") for line in lines) == 1, "\n".join(lines)  # ...the name once


def test_the_not_passed_block_says_each_items_reason_once(project: pytest.Pytester) -> None:
    """Issue 11, pattern 5: the summary's "not passed" block repeated the prefix
    ("float16 on cpu: float16 on cpu: ...")."""
    project.makepyfile(test_not_passed="""
        import pytest
        @pytest.mark.edgeopt_variants("float16")
        @pytest.mark.cpu
        def test_budgets(measurement):
            measurement.check(min_size_reduction=0.99)
    """)
    result = project.runpytest("-p", "no:cacheprovider", "-p", "no:randomly")
    result.assert_outcomes(failed=1)
    block = result.stdout.str().split("not passed:", 1)[1].splitlines()[1]
    assert block.strip().startswith("float16 on cpu: ") and block.count("float16 on cpu") == 1, block
