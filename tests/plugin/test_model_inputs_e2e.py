"""The example suite's budgets (examples/digits/test_budgets.py, unchanged) against the same
network as a float .tflite and as a Keras 3 model: every variant measured or skipped with a
reason, and the Keras 3 model's equivalence figures in the JSON recipe (issue 12)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_edgeopt.variants.registry import VARIANTS

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits" / "test_budgets.py"
TFMOT = [n for n, s in VARIANTS.items() if s.family == "tfmot"]

CONFTEST = """
import pytest
from fixtures.digits import digits_data, representative_batches
from fixtures.models import {fixture}
from pytest_edgeopt import ModelUnderTest

@pytest.fixture(scope="session")
def edgeopt_model():
    data = digits_data()
    return ModelUnderTest(name="digits-cnn", model={fixture}(), representative_data=representative_batches(100),
                          train_data=(data.x_train, data.y_train), eval_data=(data.x_eval, data.y_eval),
                          metric="top1")
"""


@pytest.fixture
def example(pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory,
            tensorflow_loaded: None) -> pytest.Pytester:
    cache = tmp_path_factory.getbasetemp() / "edgeopt-e2e-inputs-cache"
    pytester.makeini(f"[pytest]\nedgeopt_cache_dir = {cache}\n")
    pytester.makepyfile(test_budgets=EXAMPLE.read_text())  # the example's budgets, unchanged
    return pytester


def run(p: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, dict[str, dict]]:
    out = p.path / "r.json"
    result = p.runpytest("-p", "no:cacheprovider", "-rs", f"--edgeopt-json={out}", *args)
    return result, {r["variant"]: r for r in json.loads(out.read_text())["measurements"]}


def test_example_budgets_hold_on_the_float_tflite(example: pytest.Pytester) -> None:
    example.makeconftest(CONFTEST.format(fixture="float_tflite"))
    result, recs = run(example)
    measured = len(VARIANTS) - len(TFMOT)
    result.assert_outcomes(passed=measured, skipped=len(TFMOT))
    result.stdout.fnmatch_lines(["*qat_int8 fine-tunes Keras layers, and a .tflite has none*"])
    for name in ("float16", "dynamic_range", "int8", "int8_full", "int16x8"):
        rec = recs[name]
        assert rec["outcome"] == "passed", name
        assert rec["built"]["recipe"]["tool"] == "litert_quantizer" and rec["built"]["recipe"]["aeq_recipe"], name
    for name in TFMOT:
        assert recs[name]["outcome"] == "skipped" and "a .tflite has none" in recs[name]["reason"]


def test_example_budgets_hold_on_a_keras3_build_fast_twin(example: pytest.Pytester) -> None:
    """Two variants in the default run; the whole suite is the slow test below."""
    example.makeconftest(CONFTEST.format(fixture="digits_keras3_port"))
    result, recs = run(example, "--edgeopt-variants=float16,pruned")
    result.assert_outcomes(passed=2, skipped=4)  # the example's other tests: no variant left
    bridge = recs["pruned"]["built"]["recipe"]["keras_bridge"]
    assert bridge["from"].startswith("keras 3.") and bridge["to"].startswith("tf_keras 2.")
    assert bridge["inputs"] == "eval_data" and bridge["samples"] == 256
    assert 0.0 <= bridge["max_abs_diff"] <= bridge["tolerance"]
    assert "keras_bridge" not in recs["float16"]["built"]["recipe"]  # the converter takes Keras 3 as it is


@pytest.mark.slow
def test_example_budgets_hold_on_a_keras3_build(example: pytest.Pytester) -> None:
    example.makeconftest(CONFTEST.format(fixture="digits_keras3_port"))
    result, recs = run(example)
    result.assert_outcomes(passed=len(VARIANTS))
    for name in TFMOT:
        assert recs[name]["built"]["recipe"]["keras_bridge"]["max_abs_diff"] <= recs[name]["built"]["recipe"]["keras_bridge"]["tolerance"]
