"""Native crashes in worker processes, through pytest itself: a worker that dies by a
signal while building or measuring one variant fails that item with a message naming the
stage, the signal and its last stderr line; every other item runs, the summary and the
JSON are complete, and pytest exits 1 (tests failed), not 134 (aborted).

The item fails in its ``optimized_model``/``measurement`` fixture, as every build or
measurement failure does: pytest counts it as an error at setup, the edgeopt summary and
the JSON as FAIL/"failed" with the message as the reason.

The crash is the workers' self-test switch (PYTEST_EDGEOPT_SELFTEST_CRASH, see
pytest_edgeopt/workers/serve.py): the worker kills itself with SIGABRT when it enters the
named stage for the named item, as LiteRT does on a corrupted heap. Runs are subprocesses
(runpytest_subprocess): a real exit code, and a parent whose imports are its own.
(Named test_worker_crashes.py: tests/test_workers.py holds the pool's unit tests, and test
modules need distinct basenames here.)
"""

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
        representative_data=representative_batches(20),
        eval_data=(d.x_eval, d.y_eval),
        options={{"calibration_samples": 20}},
    )
"""

BUDGETS = """
import pytest
@pytest.mark.edgeopt_variants("float16", "int8", "dynamic_range")
@pytest.mark.cpu
def test_budgets(measurement):
    measurement.check(min_size_reduction=0.45)
"""

#: Runs after the budgets (file order): what the pytest process and its worker imported.
MODULES = """
import json, sys
from tests.worker_helpers import Modules

NAMES = ("tensorflow", "tf_keras", "tensorflow_model_optimization", "ai_edge_litert")

def test_modules(edgeopt_session):
    pool = edgeopt_session.workers
    worker = pool.call(Modules(NAMES), timeout_s=120) if pool.worker is not None else []
    with open("modules.json", "w") as f:
        json.dump({{"parent": [n for n in NAMES if n in sys.modules], "worker": worker,
                   "started": pool.started, "built": edgeopt_session.builder.built}}, f)
"""


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One variant cache for the runs of this module: fp32 and float16 are built once."""
    return tmp_path_factory.mktemp("edgeopt-worker-cache")


@pytest.fixture
def project(pytester: pytest.Pytester, digits_model_path: Path, shared_cache: Path,
            monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[2]))  # fixtures, tests.worker_helpers
    monkeypatch.delenv("EDGEOPT_IN_PROCESS", raising=False)
    pytester.makeconftest(CONFTEST.format(model=str(digits_model_path)))
    pytester.makeini(f"[pytest]\nedgeopt_cache_dir = {shared_cache}\nedgeopt_min_samples = 20\n"
                     "edgeopt_min_time = 0.01\n")
    pytester.makepyfile(test_a_budgets=BUDGETS, test_z_modules=MODULES.format())
    return pytester


def run(p: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, dict, dict]:
    out = p.path / "results.json"
    result = p.runpytest_subprocess("-p", "no:cacheprovider", "-rfE", f"--edgeopt-json={out}", *args, timeout=900)
    modules = json.loads((p.path / "modules.json").read_text()) if (p.path / "modules.json").exists() else {}
    return result, (json.loads(out.read_text()) if out.exists() else {}), modules


def outcomes(doc: dict) -> dict[str, tuple[str, str | None]]:
    return {r["variant"]: (r["outcome"], r.get("reason")) for r in doc.get("measurements", [])}


def test_a_worker_that_dies_building_one_variant_fails_only_that_item(project: pytest.Pytester,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_EDGEOPT_SELFTEST_CRASH", "convert:SIGABRT:digits-cnn int8")
    result, doc, modules = run(project, "-v")
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # not 134: the pytest process survived
    result.assert_outcomes(passed=3, failed=1)  # a FAIL of the item, not an ERROR  # test_modules is the third pass
    message = ("digits-cnn int8: the worker process died by SIGABRT during convert (LiteRT/TensorFlow native "
               "crash); last stderr: pytest-edgeopt self-test: SIGABRT in convert of digits-cnn int8; the "
               "worker was replaced; remedy: a native crash in TensorFlow's converter or tfmot: *")
    result.stdout.fnmatch_lines([
        "*test_budgets[[]float16-cpu[]] PASSED*",
        "*test_budgets[[]int8-cpu[]] FAILED*",
        "*test_budgets[[]dynamic_range-cpu[]] PASSED*",
        "*edgeopt summary*",
        "digits-cnn*int8*cpu*FAIL",
        "*not passed:*",
        "  int8 on cpu: " + message.removeprefix("digits-cnn int8: "),  # the block names the item once
        "FAILED *int8-cpu* - Failed: digits-cnn int8: *",
    ])
    result.stdout.no_fnmatch_line("*Traceback*")
    got = outcomes(doc)
    assert {v: o for v, (o, _) in got.items()} == {"float16": "passed", "dynamic_range": "passed", "int8": "failed"}
    assert "died by SIGABRT during convert" in (got["int8"][1] or "")
    assert doc["totals"]["items"] == 3
    # the crashed worker was replaced: the variants after it were built and measured by a new one
    assert modules["started"] == 2


def test_a_worker_that_dies_measuring_on_cpu_fails_only_that_item(project: pytest.Pytester,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_EDGEOPT_SELFTEST_CRASH", "invoke:SIGABRT:digits-cnn int8 on cpu")
    result, doc, _ = run(project, "-v")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=3, failed=1)  # a FAIL of the item, not an ERROR
    result.stdout.fnmatch_lines([
        "*test_budgets[[]int8-cpu[]] FAILED*",
        "*edgeopt summary*",
        "digits-cnn*int8*cpu*FAIL",
        "*not passed:*",
        "  int8 on cpu: the worker process died by SIGABRT during invoke "
        "(LiteRT/TensorFlow native crash); last stderr: pytest-edgeopt self-test: SIGABRT in invoke of "
        "digits-cnn int8 on cpu; the worker was replaced; remedy: *float_nodes*",
    ])
    result.stdout.no_fnmatch_line("*Traceback*")
    got = outcomes(doc)
    assert {v: o for v, (o, _) in got.items()} == {"float16": "passed", "dynamic_range": "passed", "int8": "failed"}


def test_a_warm_run_imports_no_tensorflow_anywhere(project: pytest.Pytester) -> None:
    cold, _, _ = run(project)  # whatever earlier tests left, now everything is cached
    assert cold.ret == 0, cold.stdout.str()[-3000:]
    warm, doc, modules = run(project)
    assert warm.ret == 0
    assert modules["built"] == 0
    assert modules["parent"] == ["ai_edge_litert"]
    assert modules["worker"] == ["ai_edge_litert"]  # the measuring worker: LiteRT only
    assert modules["started"] == 1
    assert doc["totals"]["variants_built"] == 0
    # The fp32 conversion check (source model vs fp32 .tflite) came from the cache too, and
    # every measurement carries the source model's metric next to its own.
    assert len(doc["measurements"]) == 3
    for row in doc["measurements"]:
        m = row["measurement"]
        assert m["fidelity"]["from_cache"] is True and m["fidelity"]["source_kind"] == "keras"
        assert m["fidelity"]["max_abs_diff"] < 1e-4
        assert m["derived"]["source_metric"] == pytest.approx(m["baseline"]["accuracy"]["value"], abs=0.01)
