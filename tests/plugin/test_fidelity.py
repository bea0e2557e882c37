"""Conversion fidelity through pytest itself: when the fp32 ``.tflite`` differs from the
source model beyond the tolerance, every test of that model FAILs naming the metrics, the
max |d| and the first divergent op; the ``fidelity`` option loosens or turns the check off;
a model within tolerance reports the source model's metric in the JSON and the JUnit
properties.

The divergent model is deterministic and tiny: a custom layer that doubles its input when
run eagerly (how the check runs the Keras model) and passes it through when traced (how the
converter sees it), so the ``.tflite`` lacks the doubling. Runs are subprocesses (the model
is built in the conftest, which imports TensorFlow).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

CONFTEST = """
import numpy as np
import pytest
from fixtures.cache import legacy_tf_keras
from pytest_edgeopt import ModelUnderTest

tf, keras = legacy_tf_keras()


class Doubler(keras.layers.Layer):
    def call(self, x):
        return x * 2.0 if tf.executing_eagerly() else x


@pytest.fixture(scope="session")
def edgeopt_model():
    keras.utils.set_random_seed(0)
    inp = keras.Input((4,), name="x")
    h = keras.layers.Dense(8, name="pre")(inp)
    h = Doubler(name="doubler")(h)
    out = keras.layers.Dense(3, activation="softmax", name="probs")(h)
    model = keras.Model(inp, out)
    x = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32) * 3
    y = np.argmax(model(x).numpy(), -1)
    return ModelUnderTest(name="doubling", model=model, eval_data=(x, y), options={OPTIONS})
"""

TESTS = """
import pytest

@pytest.mark.edgeopt_variants("fp32", "float16")
@pytest.mark.cpu
def test_budgets(measurement):
    measurement.check(max_accuracy_drop=1.0)
"""


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[2]))  # fixtures
    pytester.makeini("[pytest]\nedgeopt_min_samples = 5\nedgeopt_min_time = 0.0\n")
    pytester.makepyfile(test_model=TESTS)
    return pytester


def run(p: pytest.Pytester, options: str) -> tuple[pytest.RunResult, dict]:
    p.makeconftest(CONFTEST.replace("{OPTIONS}", options))
    out = p.path / "results.json"
    result = p.runpytest_subprocess("-p", "no:cacheprovider", "-rfE", f"--edgeopt-json={out}",
                                    f"--junitxml={p.path / 'junit.xml'}", timeout=900)
    return result, (json.loads(out.read_text()) if out.exists() else {})


def test_a_conversion_that_differs_from_the_source_fails_every_test_of_the_model(project: pytest.Pytester) -> None:
    result, doc = run(project, "{}")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()[-3000:]
    result.assert_outcomes(failed=2)  # the model's fault: FAIL, not ERROR
    result.stdout.fnmatch_lines([
        "*doubling fp32 on cpu: fp32 conversion differs from the source model: top1 * vs *, max |d| * "
        "(output range *), first divergent op FULLY_CONNECTED (layer 'doubler'); tolerance: *",
        "*doubling float16 on cpu: fp32 conversion differs from the source model: *",
    ])
    result.stdout.no_fnmatch_line("*Traceback*")
    assert {r["variant"]: r["outcome"] for r in doc["measurements"]} == {"fp32": "failed", "float16": "failed"}


@pytest.mark.slow  # bigger model or matrix; its fast twin runs by default
def test_the_fidelity_option_loosens_the_check_and_the_source_metric_is_reported(project: pytest.Pytester) -> None:
    result, doc = run(project, '{"fidelity": {"max_diff_rel": 10.0, "metric_abs": 1.0}}')
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()[-3000:]
    result.assert_outcomes(passed=2)
    for row in doc["measurements"]:
        m = row["measurement"]
        assert m["derived"]["source_metric"] == 1.0  # the labels are the source model's own argmax
        assert m["fidelity"]["max_abs_diff"] > 0.01  # within the loosened tolerance: no op searched for
        assert m["fidelity"]["first_divergent_layer"] is None
    junit = (project.path / "junit.xml").read_text()
    assert 'name="edgeopt_source_metric" value="1.0"' in junit
