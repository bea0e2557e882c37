"""Saved runs and the regression gate through pytest: an unchanged model passes; a slower,
less accurate model under the same name fails the session with readable regressions."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

CONFTEST = """
import os, pytest
from fixtures.digits import digits_data, representative_batches
from pytest_edgeopt import ModelUnderTest

@pytest.fixture(scope="session")
def edgeopt_model():
    d = digits_data()
    return ModelUnderTest(name="digits-cnn", model=os.environ["EDGEOPT_TEST_MODEL"],
                          eval_data=(d.x_eval, d.y_eval))
"""

TEST = """
import pytest
@pytest.mark.edgeopt_variants("fp32", "float16")
def test_v(measurement):
    pass
"""


@pytest.fixture
def slow_model(digits_model_path: Path, tensorflow_loaded: None, tmp_path: Path) -> Path:
    """The digits CNN with a wide random head appended: slower, and far less accurate."""
    import tf_keras as keras

    base = keras.models.load_model(digits_model_path)
    x = keras.layers.Dense(1024, activation="relu", name="slow_1")(base.output)
    x = keras.layers.Dense(1024, activation="relu", name="slow_2")(x)
    out = keras.layers.Dense(10, activation="softmax", name="slow_out")(x)
    path = tmp_path / "slow.keras"
    keras.Model(base.input, out).save(path)
    return path


@pytest.fixture
def project(pytester: pytest.Pytester, tensorflow_loaded: None, tmp_path_factory: pytest.TempPathFactory) -> pytest.Pytester:
    cache = tmp_path_factory.getbasetemp() / "edgeopt-variant-cache"  # one content-addressed cache for every digits run of the session
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_gate=TEST)
    pytester.makeini(f"[pytest]\nedgeopt_cache_dir = {cache}\nedgeopt_storage = runs\n")
    return pytester


def run(p: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, model: Path, *args: str) -> pytest.RunResult:
    monkeypatch.setenv("EDGEOPT_TEST_MODEL", str(model))
    return p.runpytest("-p", "no:cacheprovider", *args)


def test_unchanged_model_passes_and_a_regressed_one_fails_the_gate(
        project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, digits_model_path: Path, slow_model: Path) -> None:
    gate = ("--edgeopt-compare-fail=latency:5%", "--edgeopt-compare-fail=accuracy:0.5pt", "--edgeopt-compare-fail=size:1%")
    first = run(project, monkeypatch, digits_model_path, "--edgeopt-save=main")
    first.assert_outcomes(passed=2)
    first.stdout.fnmatch_lines(["edgeopt: run saved to *0001_main_*.json.gz"])

    same = run(project, monkeypatch, digits_model_path, "--edgeopt-autosave", "--edgeopt-compare", *gate)
    assert same.ret == pytest.ExitCode.OK
    same.stdout.fnmatch_lines(["*edgeopt comparison*", "compared with #1 main*", "2 measurements compared; no regression*"])

    out = project.path / "slow.json"
    slow = run(project, monkeypatch, slow_model, "--edgeopt-compare=main", *gate, f"--edgeopt-json={out}")
    slow.assert_outcomes(passed=2)  # every test passed; the gate fails the session
    assert slow.ret == pytest.ExitCode.TESTS_FAILED
    slow.stdout.fnmatch_lines(["*edgeopt comparison*", "compared with #1 main*",
                               "REGRESSION digits-cnn float16 on cpu: size 8*B -> 2,2*B (+*%) exceeds size:1%"])
    text = slow.stdout.str()
    assert "REGRESSION" in text and "fp32 on cpu" in text
    assert any("accuracy" in line and "REGRESSION" in line for line in text.splitlines())
    assert any("size" in line and "REGRESSION" in line for line in text.splitlines())
    doc = json.loads(out.read_text())
    assert doc["comparison"]["failed"] is True
    assert {r["metric"] for r in doc["comparison"]["regressions"]} >= {"accuracy", "size"}


def test_missing_baseline_or_bad_tolerance_is_a_usage_error(project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                                          digits_model_path: Path) -> None:
    result = run(project, monkeypatch, digits_model_path, "--edgeopt-compare=nightly")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--edgeopt-compare=nightly:*"])
    result = run(project, monkeypatch, digits_model_path, "--edgeopt-compare", "--edgeopt-compare-fail=latency:fast")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*malformed tolerance 'latency:fast'*"])


def test_an_ephemeral_runner_judges_latency_on_two_runs_and_strict_fails_a_blind_gate(
        project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, digits_model_path: Path) -> None:
    """The baseline was saved on another, noisy runner: its model files are in no cache here.
    The session says the rows were judged on two runs only, shows the detectable effect, and
    with ``latency:5%,strict`` fails because two runs cannot tell a 5% slow-down from noise."""
    run(project, monkeypatch, digits_model_path, "--edgeopt-save=main").assert_outcomes(passed=2)
    path = next((project.path / "runs").glob("0001_main_*"))
    saved = json.loads(gzip.decompress(path.read_bytes()))
    assert all(len(r["model_key"]) == 64 for r in saved["measurements"])  # each timed file's cache key
    for r in saved["measurements"]:  # as saved by a runner whose cache is gone...
        r["model_key"] = "f" * 64
        r["measurement"]["model_path"] = f"/elsewhere/cache/variants/ff/{'f' * 64}/model.tflite"
        # ... and whose speed swung between double and half within the run (a noisy neighbour)
        samples = r["measurement"]["latency"]["samples_us"]
        r["measurement"]["latency"]["samples_us"] = [x * (2.0 if i * 32 // len(samples) % 2 else 0.5)
                                                     for i, x in enumerate(samples)]
    path.write_bytes(gzip.compress(json.dumps(saved).encode()))
    out, junit = project.path / "current.json", project.path / "junit.xml"
    result = run(project, monkeypatch, digits_model_path, "--edgeopt-compare=main",
                 "--edgeopt-compare-fail=latency:5%,strict", f"--edgeopt-json={out}", f"--junitxml={junit}")
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        "*vs baseline run*detects >=*",
        "*FAILED (strict): latency:5%,strict cannot be judged here: this run detects >= *% (noise 2.5%) on 2 of 2*",
        "warning: latency judged on two runs only for f*on cpu, f*on cpu: no A/B re-measurement (the baseline's "
        "model file is not in the variant cache)",
    ])
    rows = json.loads(out.read_text())["comparison"]["rows"]
    assert {r["evidence"] for r in rows} == {
        "latency judged on two runs only (the baseline's model file is not in the variant cache)"}
    assert all(r["detectable"] > 0.05 for r in rows)
    xml = junit.read_text()
    assert 'name="edgeopt_latency_detectable[digits-cnn/fp32/cpu/host]"' in xml
    assert '<property name="edgeopt_gate" value="failed"' in xml


def test_the_ab_budget_bounds_the_re_measurements(project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                                  digits_model_path: Path, slow_model: Path) -> None:
    run(project, monkeypatch, digits_model_path, "--edgeopt-save=main").assert_outcomes(passed=2)
    result = run(project, monkeypatch, slow_model, "--edgeopt-compare=main", "--edgeopt-compare-fail=latency:5%",
                 "--edgeopt-ab-budget=0")
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # the two-run verdicts stand
    result.stdout.fnmatch_lines(["warning: A/B budget of 0 s ran out after 0 re-measurements: 2 rows left "
                                 "unconfirmed, judged on two runs only: f* on cpu, f* on cpu (raise --edgeopt-ab-budget)"])
