"""Baseline gates: tolerance grammar, the latency test on samples with a known truth, and
comparisons of real run documents."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
from run_docs import changed, real_doc, slowed, with_metadata, with_samples

from pytest_edgeopt.runs.abtest import ab_latency, confirm_latency
from pytest_edgeopt.runs.gate import compare_runs, p50s_of
from pytest_edgeopt.runs.noise import block_medians, estimate_noise, latency_change
from pytest_edgeopt.runs.tolerance import Tolerance, parse_tolerance, parse_tolerances


# -- tolerances ----------------------------------------------------------------------------------
@pytest.mark.parametrize("expr, expected", [
    ("latency:5%", Tolerance("latency", 5.0, "%")),
    ("latency:0.2ms", Tolerance("latency", 0.2, "ms")),
    ("latency:30us", Tolerance("latency", 30.0, "us")),
    ("size:1%", Tolerance("size", 1.0, "%")),
    ("size:512B", Tolerance("size", 512.0, "B")),
    ("compressed_size:1%", Tolerance("compressed_size", 1.0, "%")),
    ("accuracy:0.5pt", Tolerance("accuracy", 0.5, "pt")),
    (" accuracy : .5 pt ", Tolerance("accuracy", 0.5, "pt")),
    ("latency:5%,strict", Tolerance("latency", 5.0, "%", strict=True)),
])
def test_tolerances_parse(expr: str, expected: Tolerance) -> None:
    assert parse_tolerance(expr) == expected
    assert parse_tolerance(str(expected)) == expected


@pytest.mark.parametrize("expr, why", [
    ("latency", "malformed"), ("latency:5", "takes the unit"), ("lat:5%", "unknown metric 'lat'"),
    ("size:1pt", "takes the unit % or B"), ("accuracy:0.5%", "takes the unit pt"), ("latency:-5%", "malformed"),
    ("latency:5%%", "takes the unit"), ("", "malformed"), ("latency:five%", "malformed"),
    ("size:1%,strict", "only latency takes one"), ("latency:5%,loose", "unknown flag 'loose'"),
])
def test_malformed_tolerances_explain_the_grammar(expr: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as info:
        parse_tolerance(expr)
    assert "latency:5%" in str(info.value) and "accuracy:0.5pt" in str(info.value)


def test_a_metric_given_twice_is_an_error() -> None:
    with pytest.raises(ValueError, match="two tolerances for latency"):
        parse_tolerances(["latency:5%", "latency:1ms"])


def test_tolerance_arithmetic() -> None:
    assert parse_tolerance("size:1%").exceeded(1000, 1011) and not parse_tolerance("size:1%").exceeded(1000, 1010)
    assert parse_tolerance("size:10B").exceeded(1000, 1011) and not parse_tolerance("size:10B").exceeded(1000, 1010)
    assert parse_tolerance("accuracy:0.5pt").exceeded(0.98, 0.974) and not parse_tolerance("accuracy:0.5pt").exceeded(0.98, 0.976)
    assert parse_tolerance("latency:30us").exceeded(1.0, 1.031) and not parse_tolerance("latency:30us").exceeded(1.0, 1.029)


# -- the latency test -----------------------------------------------------------------------------
def _lognormal(seed: int, n: int = 5000, median_us: float = 100.0) -> np.ndarray:
    return median_us * np.exp(np.random.default_rng(seed).normal(0, 0.05, n))


def _run(seed: int, n: int = 5000, machine_sd: float = 0.03) -> np.ndarray:
    """One run of an unchanged model: the machine's state that run shifts every sample
    (sd ``machine_sd`` in log), and the level wanders within the run (autocorrelation)."""
    rng = np.random.default_rng(seed)
    wander = np.cumsum(rng.normal(0, 0.0002, n))
    return 100.0 * np.exp(rng.normal(0, machine_sd) + wander - wander.mean() + rng.normal(0, 0.03, n))


def test_block_medians() -> None:
    x = np.arange(64.0)
    assert block_medians(x, 32).tolist() == [i * 2 + 0.5 for i in range(32)]
    assert block_medians([3.0, 1.0], 32).tolist() == [3.0, 1.0]  # one block per sample


def test_same_distribution_is_not_significant() -> None:
    ps = [latency_change(_lognormal(s), _lognormal(s + 100)).p_value for s in range(10)]
    assert min(ps) > 0.01


def test_a_slowdown_is_found_with_its_size() -> None:
    lat = latency_change(_lognormal(1), 1.2 * _lognormal(2))
    assert lat.p_value < 0.001
    assert lat.ratio == pytest.approx(1.2, abs=0.01)
    assert lat.interval[0] < 1.2 < lat.interval[1]
    assert lat.cell().startswith("+20.") and "p<0.001" in lat.cell()
    assert lat.baseline_p50_ms == pytest.approx(0.1, rel=0.01)


def test_unchanged_runs_need_the_between_run_term() -> None:
    """Unchanged runs on a machine whose speed differs run to run: judged on within-run
    variation alone, many pairs look significantly slower; with the between-run noise none."""
    runs = [_run(s) for s in range(5)]
    pairs = [(a, b) for i, a in enumerate(runs) for j, b in enumerate(runs) if i != j]
    within_only = [latency_change(a, b, noise=0.0).p_value for a, b in pairs]
    with_noise = [latency_change(a, b, noise=0.03).p_value for a, b in pairs]
    assert sum(p < 0.01 for p in within_only) >= 3
    assert min(with_noise) > 0.01


def test_noise_makes_small_changes_insignificant() -> None:
    base, cur = _lognormal(3), 1.04 * _lognormal(4)
    assert latency_change(base, cur, noise=0.0).p_value < 0.01
    assert latency_change(base, cur, noise=0.03).p_value > 0.01


def test_latency_change_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="positive"):
        latency_change([1.0, 0.0], [1.0])
    with pytest.raises(ValueError, match="both runs"):
        latency_change([], [1.0])


def test_noise_is_estimated_from_earlier_runs() -> None:
    rng = np.random.default_rng(0)
    sigma = 0.03
    runs = [{f"k{k}": float(np.exp(rng.normal(0, sigma))) for k in range(20)} for _ in range(30)]
    assert estimate_noise(runs) == pytest.approx(sigma, rel=0.2)
    # A real change is one step: it hardly moves the estimate.
    stepped = runs[:15] + [{k: v * 1.3 for k, v in r.items()} for r in runs[15:]]
    assert estimate_noise(stepped) == pytest.approx(sigma, rel=0.25)
    assert estimate_noise(runs[:2]) is None


# -- comparing run documents ----------------------------------------------------------------------
def test_a_run_against_itself_has_no_regression() -> None:
    doc = real_doc()
    c = compare_runs(doc, doc, ["latency:5%", "size:1%", "compressed_size:1%", "accuracy:0.5pt"])
    assert not c.failed and not c.refusals
    assert {r.status for r in c.rows} == {"compared"}
    assert len(c.rows) == 6
    assert c.cell("digits-cnn", "int8", "cpu") == "+0.0% (p=0.5)"
    assert c.lines()[-1] == "6 measurements compared; no regression"


def test_a_latency_regression_names_everything() -> None:
    c = compare_runs(real_doc(), slowed(real_doc(), "int8", 1.5), ["latency:5%"])
    assert c.failed and len(c.regressions) == 1
    r = c.regressions[0]
    assert (r.model, r.variant, r.target, r.device, r.metric) == ("digits-cnn", "int8", "cpu", "host", "latency")
    assert r.current / r.baseline == pytest.approx(1.5, rel=0.01) and r.change == pytest.approx(0.5, rel=0.02)
    assert r.p_value < 0.01 and r.interval[0] > 1.3
    assert "int8 on cpu: latency p50" in r.message and "+50.0%" in r.message and "exceeds latency:5%" in r.message
    assert any(line.startswith("REGRESSION digits-cnn int8 on cpu") for line in c.lines())
    assert c.cell("digits-cnn", "int8", "cpu").endswith("REGRESSED")


def test_a_slowdown_within_tolerance_passes() -> None:
    c = compare_runs(real_doc(), slowed(real_doc(), "int8", 1.5), ["latency:60%"])
    assert not c.failed
    assert "+50.0%" in c.cell("digits-cnn", "int8", "cpu")


def test_an_absolute_latency_tolerance() -> None:
    doc = real_doc()
    c = compare_runs(doc, slowed(doc, "int8", 1.5), ["latency:1us"])  # int8 p50 is ~5 us: +2.5 us
    assert [r.metric for r in c.regressions] == ["latency"]
    assert not compare_runs(doc, slowed(doc, "int8", 1.5), ["latency:0.01ms"]).failed


def test_without_tolerances_nothing_fails() -> None:
    c = compare_runs(real_doc(), slowed(real_doc(), "int8", 2.0))
    assert not c.failed and "+100.0%" in c.cell("digits-cnn", "int8", "cpu")


def test_sizes_are_compared_exactly() -> None:
    doc = real_doc()
    cur = changed(doc, "float16", size_bytes=lambda s: s + 1, compressed_size_bytes=lambda s: int(s * 1.02))
    c = compare_runs(doc, cur, ["size:0B", "compressed_size:1%"])
    assert sorted(r.metric for r in c.regressions) == ["compressed_size", "size"]
    msg = next(r.message for r in c.regressions if r.metric == "compressed_size")
    assert "float16 on cpu: compressed_size" in msg and "+2.00%" in msg
    assert not compare_runs(doc, cur, ["size:1B", "compressed_size:3%"]).failed


def test_accuracy_drop_in_points() -> None:
    doc = real_doc()
    cur = changed(doc, "qat_int8", accuracy=lambda a: {**a, "value": a["value"] - 0.01})
    c = compare_runs(doc, cur, ["accuracy:0.5pt"])
    (r,) = c.regressions
    assert r.metric == "accuracy" and r.change == pytest.approx(-1.0) and "-1.00 pt" in r.message
    assert not compare_runs(doc, cur, ["accuracy:1.5pt"]).failed


@pytest.mark.parametrize("change, reason", [
    (lambda a: {**a, "samples": 300}, "different eval data (450 vs 300 samples)"),
    (lambda a: {**a, "metric": "top5"}, "the metric changed (top1 -> top5)"),
])
def test_accuracy_on_different_eval_data_is_refused(change, reason: str) -> None:
    doc = real_doc()
    cur = changed(doc, "int8", accuracy=lambda a: change({**a, "value": 0.1}))
    c = compare_runs(doc, cur, ["accuracy:0.5pt"])
    assert not c.failed
    (refusal,) = c.refusals
    assert refusal.variant == "int8" and refusal.metric == "accuracy" and refusal.reason == reason
    assert any(reason in line for line in c.lines())


def test_a_changed_recipe_is_not_compared() -> None:
    doc = real_doc()
    cur = slowed(changed(doc, "pruned", recipe=lambda r: {**r, "sparsity": 0.9}), "pruned", 3.0)
    c = compare_runs(doc, cur, ["latency:5%"])
    assert not c.failed
    assert c.row("digits-cnn", "pruned", "cpu").status == "recipe changed"
    assert "sparsity" in c.refusals[0].reason


def test_new_and_missing_measurements() -> None:
    doc = real_doc()
    fewer = copy.deepcopy(doc)
    fewer["measurements"] = [r for r in fewer["measurements"] if r["variant"] != "float16"]
    c = compare_runs(doc, fewer)
    assert c.row("digits-cnn", "float16", "cpu").status == "missing"
    assert any("not in this run: float16 on cpu" in w for w in c.warnings)
    assert compare_runs(fewer, doc).row("digits-cnn", "float16", "cpu").status == "new"


def test_environment_warnings() -> None:
    base = with_metadata(real_doc())
    cur = with_metadata(real_doc(), cpu_model="Other CPU", cores=8)
    cur["metadata"]["packages"]["tensorflow"] = "2.22.0"
    cur["metadata"]["git"]["dirty"] = True
    w = compare_runs(base, cur).warnings
    assert any("different machine" in x and "'Test CPU' vs 'Other CPU'" in x for x in w)
    assert any("different package versions: tensorflow 2.21.0 -> 2.22.0" in x for x in w)
    assert any("this run was made from a checkout with uncommitted changes" in x for x in w)
    assert any("no machine and package metadata" in x for x in compare_runs(real_doc(), cur).warnings)


def test_an_identical_model_on_the_same_runtime_is_not_judged() -> None:
    base = with_metadata(real_doc())
    cur = slowed(with_metadata(real_doc()), "int8", 1.5)  # same model files: the machine was slower
    c = compare_runs(base, cur, ["latency:5%"])
    assert not c.failed
    row = c.row("digits-cnn", "int8", "cpu")
    assert row.same_model and row.latency_note and "same model" in row.cell
    assert compare_runs(base, cur, ["latency:5%"], judge_identical=True).failed


def test_noise_comes_from_history_or_the_default() -> None:
    doc = real_doc()
    assert compare_runs(doc, doc).noise_source.startswith("default")
    history = [{k: v * (1.02 if i % 2 else 1.0) for k, v in p50s_of(doc).items()} for i in range(5)]
    c = compare_runs(doc, doc, ["latency:5%"], history=history)
    assert c.noise == pytest.approx(0.0198 / (1.6449 * math.sqrt(2)), rel=0.01)
    assert c.noise_source == "estimated from 5 earlier runs"
    noisy = compare_runs(doc, doc, ["latency:5%"], noise=0.05)
    assert noisy.cannot_judge is not None
    assert noisy.cannot_judge.startswith("latency:5% cannot be judged here: this run detects >= ")
    assert "(noise 5%)" in noisy.cannot_judge and not noisy.failed


def test_p50s_of_include_the_embedded_baseline() -> None:
    doc = real_doc()
    doc["measurements"] = [r for r in doc["measurements"] if r["variant"] != "fp32"]
    assert "digits-cnn/fp32/cpu/host" in p50s_of(doc)


# -- A/B re-measurement ---------------------------------------------------------------------------
def _windows(factor: float, seed: int):
    rng = np.random.default_rng(seed)
    drift = iter(np.exp(rng.normal(0, 0.05, 200)))  # the machine's speed changes between rounds

    def window(f: float):
        return lambda: f * next(drift) * 100 * np.exp(rng.normal(0, 0.05, 500))

    return window(1.0), window(factor)


def test_ab_unchanged_is_not_significant() -> None:
    lat = ab_latency(*_windows(1.0, 0))
    assert lat.p_value > 0.01 and lat.noise_source == "A/B in this session, 12 rounds"


def test_ab_finds_a_slowdown_despite_machine_drift() -> None:
    lat = ab_latency(*_windows(1.1, 1))
    assert lat.p_value < 0.001 and lat.ratio == pytest.approx(1.1, rel=0.03)
    assert lat.interval[0] < lat.ratio < lat.interval[1]


def test_ab_needs_enough_rounds() -> None:
    with pytest.raises(ValueError, match="at least 8"):
        ab_latency(lambda: [1.0], lambda: [1.0], rounds=6)


def _runtime_pair():
    base = with_metadata(with_samples(real_doc(), lambda v: _lognormal(1, 200)))
    for r in base["measurements"]:
        r["measurement"]["model_path"] = None  # no identity: judged
    return base


def test_confirm_refutes_a_false_alarm_and_keeps_a_real_one() -> None:
    base = _runtime_pair()
    cur = slowed(slowed(base, "int8", 1.3), "float16", 1.3)
    c = compare_runs(base, cur, ["latency:5%"], noise=0.0)
    assert {r.variant for r in c.regressions} == {"int8", "float16"}

    def remeasure(row):  # int8 really is slower; float16 was the machine
        return _windows(1.3 if row.variant == "int8" else 1.0, 7)

    confirmed = confirm_latency(c, remeasure)
    assert [(r.variant, r.evidence) for r in confirmed.regressions] == [("int8", "A/B in this session, 12 rounds")]
    assert confirmed.row("digits-cnn", "float16", "cpu").latency.noise_source.startswith("A/B")
    assert "A/B in this session" in confirmed.regressions[0].message


def test_confirm_skips_rows_it_cannot_remeasure() -> None:
    base = _runtime_pair()
    c = compare_runs(base, slowed(base, "int8", 1.3), ["latency:5%"], noise=0.0)
    kept = confirm_latency(c, lambda row: None)
    assert [r.variant for r in kept.regressions] == ["int8"]
    assert any("latency judged on two runs only for int8 on cpu" in w for w in kept.warnings)
    assert kept.row("digits-cnn", "int8", "cpu").evidence.startswith("latency judged on two runs only")


def test_confirm_needs_the_same_runtime() -> None:
    base = _runtime_pair()
    cur = slowed(base, "int8", 1.3)
    cur["metadata"]["packages"]["tensorflow"] = "2.22.0"
    c = compare_runs(base, cur, ["latency:5%"], noise=0.0)
    kept = confirm_latency(c, lambda row: pytest.fail("must not re-measure"))
    assert kept.regressions == c.regressions
    assert any("packages or latency settings differ" in w for w in kept.warnings)
