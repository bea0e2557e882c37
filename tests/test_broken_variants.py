"""Variants that build but are broken (issue 11): a crash at invoke, NaN/inf outputs, top-1
collapsed to chance; and ``float_nodes="auto"``.

Real conversions and the real LiteRT interpreter, through an in-process session (no worker:
tests/test_workers.py is about the processes). The model that crashes is
``fixtures.fragile.normalizer_model_path()``: the digits CNN behind a DIV by the input's
computed norm; int8 rounds a near-silent sample's norm to its zero point and LiteRT's DIV
refuses it (``div.cc:262 data[i] != zero_point``). About 40 s on 2 cores, TensorFlow's
import included.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fixtures.digits import digits_data, representative_batches
from fixtures.fragile import EVAL_GAINS, gained_eval, gained_representative, normalizer_model_path
from pytest_edgeopt import ModelUnderTest
from pytest_edgeopt.measure import AccuracyCollapsed
from pytest_edgeopt.session import EdgeoptSession
from pytest_edgeopt.settings import Settings
from pytest_edgeopt.targets.base import HOST, LatencySettings, VariantBroken
from pytest_edgeopt.targets.cpu import CpuTarget
from pytest_edgeopt.variants.float_nodes import NonFiniteOutputs, graph_nodes, max_rebuilds, parse_invoke_failure
from pytest_edgeopt.variants.registry import VARIANTS, check_options, recipe, resolve_options

FAST = LatencySettings(warmup=1, min_samples=3, min_time_s=0.0, max_time_s=1.0)
QUIET = sum(1 for i in range(450) if EVAL_GAINS[i % len(EVAL_GAINS)] < 0.01)  # near-silent eval samples


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> EdgeoptSession:
    settings = Settings(targets=None, variants=None, require=frozenset(), cache_dir=tmp_path_factory.mktemp("cache"),
                        rebuild=False, json_path=None, latency=FAST)
    edge = EdgeoptSession(settings, lambda name, device: CpuTarget(name, device), in_process=True)
    yield edge
    edge.close()


@pytest.fixture(scope="module")
def normalizer() -> ModelUnderTest:
    return ModelUnderTest("normalizer", str(normalizer_model_path()), representative_data=gained_representative(),
                          eval_data=gained_eval())


def cpu(session: EdgeoptSession) -> CpuTarget:
    return session.target("cpu", HOST)  # type: ignore[return-value]


def test_div_crash_fails_naming_the_node_with_the_measured_repair(session: EdgeoptSession,
                                                                  normalizer: ModelUnderTest) -> None:
    built = session.build(normalizer, "int8")
    with pytest.raises(VariantBroken) as info:
        session.measure(normalizer, built, cpu(session))
    message = str(info.value)
    node = next(n for n in graph_nodes(built.path) if n.op == "DIV")
    assert f"int8 crashed at invoke: node {node.index} (DIV) failed to invoke: tflite/kernels/div.cc" in message
    assert "zero point" in message
    trials = [line.strip() for line in message.splitlines() if line.strip().startswith("kept ")]
    assert trials[0].startswith(f"kept node {node.index} (DIV) in float: it runs, top1 ")
    assert "computing its operands" in trials[-1]
    fp32 = session.measure(normalizer, session.build(normalizer, "fp32"), cpu(session)).accuracy
    assert fp32 is not None and f"vs fp32 {fp32.value:.4f}" in trials[-1]
    remedy = message.splitlines()[-1]
    assert remedy.startswith("remedy: add @pytest.mark.edgeopt_options(float_nodes=(")
    nodes = eval(remedy.split("float_nodes=", 1)[1].rsplit(")", 1)[0])  # the tuple the message gives
    assert node.output in nodes and len(nodes) > 1
    # The remedy as the user applies it: it runs, within a point of fp32.
    fixed = session.measure(normalizer, session.build(normalizer, "int8", {"float_nodes": nodes}), cpu(session))
    assert fixed.accuracy is not None and fixed.accuracy.value >= fp32.value - 0.01
    assert f"top1 {fixed.accuracy.value:.4f} vs fp32" in trials[-1]


def test_nan_outputs_fail_naming_output_samples_and_first_node(session: EdgeoptSession,
                                                               normalizer: ModelUnderTest) -> None:
    # The DIV and everything after it in float, its divisor (a norm) still int8: a near-silent
    # sample's norm dequantizes to 0, and x / 0 runs on in float to the output.
    nodes = graph_nodes(session.build(normalizer, "int8").path)
    div = next(n for n in nodes if n.op == "DIV")
    downstream = tuple(n.output for n in nodes if n.index >= div.index and n.quantized and n.op != "QUANTIZE")
    built = session.build(normalizer, "int8", {"float_nodes": downstream})
    with pytest.raises(NonFiniteOutputs) as info:
        session.measure(normalizer, built, cpu(session))
    message = str(info.value)
    assert f"in {QUIET}/450 samples" in message and "output 0 (" in message
    found = info.value.node
    assert found is not None and found.node.op == "DIV" and found.inputs_finite
    assert f"first node producing them: node {found.node.index} (DIV), tensor {div.output!r}" in message
    operands = [n for n in nodes if n.op in ("SUM", "SQRT", "ADD")]
    assert all(n.output in message for n in operands)
    # The remedy the message gives: the nodes it keeps and those.
    remedy = eval(message.rsplit("float_nodes=", 1)[1].rsplit(")", 1)[0])
    assert set(remedy) == set(downstream) | {n.output for n in operands}


def test_accuracy_collapse_to_chance_fails_without_any_budget(session: EdgeoptSession) -> None:
    # Calibrated on inputs 1000 times too small: every int8 range is tiny, real inputs saturate.
    d = digits_data()
    from fixtures.digits import digits_model_path

    mut = ModelUnderTest("digits-miscalibrated", str(digits_model_path()),
                         representative_data=[b * 1e-3 for b in representative_batches(100)],
                         eval_data=(d.x_eval, d.y_eval))
    with pytest.raises(AccuracyCollapsed) as info:
        session.measure(mut, session.build(mut, "int8"), cpu(session))
    message = str(info.value)
    assert "int8 collapsed to chance: top1 0." in message and "chance 0.1000 (10 classes), fp32 0.9" in message
    assert 'float_nodes="auto"' in message


def test_float_nodes_auto_keeps_the_fewest_nodes_that_meet_the_goal(session: EdgeoptSession) -> None:
    from fixtures.fragile import OUTLIER_LAYER, fragile_model_path

    d = digits_data()
    mut = ModelUnderTest("fragile", str(fragile_model_path()), representative_data=representative_batches(100),
                         eval_data=(d.x_eval, d.y_eval))
    plain = session.measure(mut, session.build(mut, "int8"), cpu(session))
    auto = session.build(mut, "int8", {"float_nodes": "auto"})
    assert auto.recipe["float_nodes"] == "auto" and auto.recipe["float_nodes_max_drop"] == 0.01
    chosen = auto.recipe["float_nodes_chosen"]
    search = auto.recipe["float_nodes_search"]
    assert [n.split("/")[1] for n in chosen] == [OUTLIER_LAYER, "probs"]
    assert search["met"] and 1 <= search["rebuilds"] <= search["max_rebuilds"]
    m = session.measure(mut, auto, cpu(session))
    assert plain.accuracy_drop is not None and plain.accuracy_drop > 0.05
    assert m.accuracy_drop is not None and m.accuracy_drop <= 0.01


def test_auto_knobs_are_checked_and_recorded_only_with_auto() -> None:
    check_options({"float_nodes": "auto", "float_nodes_max_drop": 0.02}, "t")
    with pytest.raises(ValueError, match="float_nodes_max_drop"):
        check_options({"float_nodes_max_drop": 1.5}, "t")
    with pytest.raises(ValueError, match='or "auto"'):
        check_options({"float_nodes": "all"}, "t")
    mut = ModelUnderTest("m", str(Path(__file__)), representative_data=[np.zeros((1, 2), np.float32)])
    assert "float_nodes_max_drop" not in recipe(VARIANTS["int8"], resolve_options(mut, {}))
    assert recipe(VARIANTS["int8"], resolve_options(mut, {"float_nodes": "auto"}))["float_nodes_max_drop"] == 0.01


def test_invoke_failure_parsing_and_search_bound() -> None:
    text = ("tflite/kernels/div.cc:262 data[i] != zero_point was not true.Node number 198 (DIV) failed to invoke.")
    failure = parse_invoke_failure(text)
    assert failure is not None and (failure.node, failure.op, failure.phase) == (198, "DIV", "invoke")
    assert failure.check == "tflite/kernels/div.cc:262 data[i] != zero_point was not true."
    assert parse_invoke_failure("RuntimeError: something else") is None
    assert [max_rebuilds(g) for g in (1, 2, 8, 9)] == [2, 4, 8, 10]
