"""Saved runs and the regression gate through pytest: an unchanged model passes; a slower,
less accurate model under the same name fails the session with readable regressions."""

from __future__ import annotations

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
    cache = tmp_path_factory.getbasetemp() / "edgeopt-gate-cache"
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
