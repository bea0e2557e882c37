"""The latency gate on noisy runners: the adaptive A/B screen, the A/B time budget, rows
whose baseline model file is gone (judged on two runs only), and the minimum detectable
effect with its warning and strict failure. Plain unit tests on documents with a known truth."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from run_docs import real_doc, slowed, with_metadata, with_samples

from pytest_edgeopt.runs.abtest import TWO_RUNS_ONLY, ab_candidates, ab_detectable, ab_latency, confirm_latency
from pytest_edgeopt.runs.gate import Comparison, RowComparison, compare_runs, observations
from pytest_edgeopt.runs.noise import ALPHA, detectable_change, latency_change, normal_quantile
from pytest_edgeopt.runs.outputs import cache_locator, junit_properties, model_file
from pytest_edgeopt.runs.record import RunRecord
from pytest_edgeopt.runs.terminal import table_lines
from pytest_edgeopt.runs.tolerance import parse_tolerance
from pytest_edgeopt.variants.cache import VariantCache

Windows = tuple[Callable[[], Sequence[float]], Callable[[], Sequence[float]]]


def _samples(seed: int, n: int = 200) -> np.ndarray:
    return 100.0 * np.exp(np.random.default_rng(seed).normal(0, 0.05, n))


def _pair() -> dict[str, Any]:
    """A saved-looking run whose rows are judged (no model identity), same runtime as itself."""
    base = with_metadata(with_samples(real_doc(), lambda v: _samples(hash(v) % 1000)))
    for r in base["measurements"]:
        r["measurement"]["model_path"] = None
    return base


def _windows(factor: float, seed: int = 3) -> Windows:
    rng = np.random.default_rng(seed)

    def window(f: float) -> Callable[[], Sequence[float]]:
        return lambda: list(f * 100 * np.exp(rng.normal(0, 0.02, 300)))

    return window(1.0), window(factor)


# -- the adaptive screen ------------------------------------------------------------------------
def test_the_screen_nominates_every_row_whose_interval_reaches_the_tolerance() -> None:
    base = _pair()
    quiet = compare_runs(base, slowed(base, "int8", 1.10), ["latency:5%"], noise=0.005)
    noisy = compare_runs(base, slowed(base, "int8", 1.10), ["latency:5%"], noise=0.18)
    tol = parse_tolerance("latency:5%")
    for c in (quiet, noisy):
        nominated = {r.variant for r in ab_candidates(c)}
        assert nominated == {r.variant for r in c.rows if r.judged and r.latency.interval[1] > 1.05}
    # Quiet: the unchanged rows' intervals stay below +5%, the slowed one is nominated.
    assert {r.variant for r in ab_candidates(quiet)} == {"int8"}
    # Noisy: nothing can be ruled out, so every judged row is re-measured (a fixed
    # ratio > 1.025 screen would have judged the unchanged ones on two runs).
    assert len(ab_candidates(noisy)) == sum(r.judged for r in noisy.rows) == 6
    # The likeliest regression first.
    assert ab_candidates(noisy)[0].variant == "int8"
    likelihoods = [r.latency.regression_likelihood(tol) for r in ab_candidates(noisy)]
    assert likelihoods == sorted(likelihoods, reverse=True)


def test_regression_likelihood_is_a_probability_of_exceeding_the_tolerance() -> None:
    lat = latency_change(_samples(1), _samples(2) * 1.05, noise=0.05)
    tol = parse_tolerance("latency:5%")
    assert lat.regression_likelihood(tol) == pytest.approx(0.5, abs=0.08)  # right at the tolerance
    assert lat.regression_likelihood(parse_tolerance("latency:50%")) < 1e-6
    assert lat.log_se() == pytest.approx(math.log(lat.interval[1] / lat.ratio) / normal_quantile(1 - ALPHA))


# -- rows that cannot be re-measured ------------------------------------------------------------
def test_a_row_without_its_baseline_model_file_is_judged_on_two_runs_only() -> None:
    base = _pair()
    c = compare_runs(base, slowed(base, "int8", 1.3), ["latency:5%"], noise=0.0)

    def remeasure(row: RowComparison) -> Windows | str:
        if row.variant == "int8":
            return "the baseline's model file is not in the variant cache"
        return _windows(1.0)

    settled = confirm_latency(c, remeasure)
    row = settled.row("digits-cnn", "int8", "cpu")
    assert row is not None
    assert row.evidence == f"{TWO_RUNS_ONLY} (the baseline's model file is not in the variant cache)"
    assert row.cell.endswith("; two runs only) REGRESSED")
    assert [r.variant for r in settled.regressions] == ["int8"]  # the two-run verdict stands
    assert any(w.startswith(f"{TWO_RUNS_ONLY} for int8 on cpu: no A/B") for w in settled.warnings)
    others = [r for r in settled.rows if r.judged and r.variant != "int8"]
    assert others and all(r.evidence and r.evidence.startswith("A/B in this session") for r in others
                          if r.latency is not None and r.latency.noise_source.startswith("A/B"))
    assert settled.to_dict()["rows"][[r.variant for r in settled.rows].index("int8")]["evidence"] == row.evidence


def test_the_baseline_model_file_is_found_by_its_cache_key(tmp_path: Path) -> None:
    cache = VariantCache(tmp_path / "cache")
    key = "ab" * 32
    entry = cache.store(key, b"tflite bytes", {"recipe": {}})
    locate = [cache_locator(cache)]
    gone = str(tmp_path / "elsewhere" / key / "model.tflite")  # the baseline runner's path
    assert model_file(gone, key, locate) == entry.path
    assert model_file(gone, "cd" * 32, locate) is None
    assert model_file(gone, None, locate) is None  # an older run recorded no key
    assert model_file(str(entry.path), key, []) == entry.path


def test_a_run_records_the_cache_key_of_each_timed_model() -> None:
    doc = real_doc()
    for r in doc["measurements"]:
        r["model_key"] = Path(r["measurement"]["model_path"]).parent.name
    record = RunRecord.from_dict(json.loads(json.dumps(doc)))
    assert record.to_dict() == doc
    keys = {k[1]: o.model_key for k, o in observations(record).items() if o.model_key}
    assert keys["int8"] == Path(next(r for r in doc["measurements"]
                                     if r["variant"] == "int8")["measurement"]["model_path"]).parent.name
    c = compare_runs(doc, doc)
    row = c.row("digits-cnn", "int8", "cpu")
    assert row is not None and row.baseline_model_key == keys["int8"] == row.current_model_key


# -- the A/B time budget ------------------------------------------------------------------------
def test_the_ab_budget_running_out_names_the_unconfirmed_rows() -> None:
    base = _pair()
    c = compare_runs(base, slowed(base, "int8", 1.10), ["latency:5%"], noise=0.18)
    ticks = itertools.count()
    measured: list[str] = []

    def remeasure(row: RowComparison) -> Windows:
        measured.append(row.variant)
        return _windows(1.1 if row.variant == "int8" else 1.0)

    # Every clock reading is 10 s later: one A/B fits in 25 s, a second would not.
    settled = confirm_latency(c, remeasure, budget_s=25.0, clock=lambda: 10.0 * next(ticks))
    assert measured == ["int8"]  # the likeliest regression got the budget
    assert [r.variant for r in settled.regressions] == ["int8"]
    left = [r for r in settled.rows if r.evidence and r.evidence.startswith("not confirmed")]
    assert len(left) == 5 and all("A/B budget of 25 s ran out" in r.evidence for r in left)
    warning = next(w for w in settled.warnings if "budget" in w)
    assert warning.startswith("A/B budget of 25 s ran out after 1 re-measurement: 5 rows left unconfirmed")
    for r in left:
        assert f"{r.variant} on cpu" in warning
        assert r.cell.endswith("; unconfirmed)")


def test_without_a_budget_every_candidate_is_re_measured() -> None:
    base = _pair()
    c = compare_runs(base, base, ["latency:5%"], noise=0.18)
    seen: list[str] = []
    confirm_latency(c, lambda row: seen.append(row.variant) or _windows(1.0))
    assert len(seen) == 6


# -- minimum detectable effect ------------------------------------------------------------------
def test_two_run_detectable_effect_follows_noise_and_samples() -> None:
    lat = latency_change(_samples(1), _samples(2), noise=0.025)
    se = lat.log_se()
    assert se > math.sqrt(2) * 0.025  # noise plus the within-run error
    assert lat.detectable == pytest.approx(detectable_change(se), rel=1e-6)
    assert lat.detectable == pytest.approx(math.expm1(normal_quantile(0.99) * se), rel=1e-6)
    # More noise, or fewer samples, detect less.
    assert latency_change(_samples(1), _samples(2), noise=0.18).detectable > 0.5
    assert latency_change(_samples(1, 8), _samples(2, 8), noise=0.025).detectable > lat.detectable
    # An effect of exactly the detectable size is just significant.
    at = latency_change(_samples(1), _samples(1) * (1 + lat.detectable), noise=0.025)
    assert at.p_value == pytest.approx(ALPHA, rel=0.2)


def test_ab_detectable_effect() -> None:
    d = list(np.random.default_rng(0).normal(0, 0.03, 12))
    sd = 1.4826 * float(np.median(np.abs(np.asarray(d) - np.median(d))))
    # 12 rounds at alpha 0.01: 11 slower rounds are needed (P(X >= 11) = 13/4096).
    assert ab_detectable(d) == pytest.approx(math.expm1(sd * normal_quantile(11 / 12)))
    assert ab_detectable([0.0] * 12) == 0.0
    assert ab_latency(*_windows(1.0)).detectable is not None


def _blind() -> tuple[dict[str, Any], Comparison]:
    base = _pair()
    return base, compare_runs(base, base, ["latency:5%"], noise=0.18)


def test_a_tolerance_the_run_cannot_judge_warns_with_the_detectable_effect() -> None:
    _, c = _blind()
    worst = max(r.detectable for r in c.rows if r.detectable is not None)
    assert c.cannot_judge is not None
    assert c.cannot_judge.startswith(f"latency:5% cannot be judged here: this run detects >= {100 * worst:.0f}% "
                                     "(noise 18%) on 6 of 6 latency rows")
    assert not c.failed and any(line == f"warning: {c.cannot_judge}" for line in c.lines())
    assert c.to_dict()["cannot_judge"] == c.cannot_judge
    quiet = compare_runs(_pair(), _pair(), ["latency:5%"], noise=0.005)
    assert quiet.cannot_judge is None


def test_a_row_that_regressed_or_was_ruled_out_was_judged() -> None:
    base = _pair()
    faster = compare_runs(base, slowed(slowed(base, "int8", 0.3), "fp32", 3.0), ["latency:5%"], noise=0.18)
    ruled_out, regressed = faster.row("digits-cnn", "int8", "cpu"), faster.row("digits-cnn", "fp32", "cpu")
    assert ruled_out is not None and regressed is not None
    assert ruled_out.detectable > 0.05 and not ruled_out.latency.reaches(parse_tolerance("latency:5%"))
    assert regressed.detectable > 0.05 and "latency" in regressed.regressed
    assert faster.cannot_judge is not None and " on 4 of 6 latency rows " in faster.cannot_judge
    assert "(int8 on cpu" not in faster.cannot_judge and " int8 on cpu" not in faster.cannot_judge
    assert "fp32 on cpu" not in faster.cannot_judge


def test_the_strict_form_fails_the_gate_instead() -> None:
    base, _ = _blind()
    c = compare_runs(base, base, ["latency:5%,strict"], noise=0.18)
    assert c.regressions == () and c.failed and c.to_dict()["failed"] is True
    assert f"FAILED (strict): {c.cannot_judge}" in c.lines()
    assert c.lines()[-1].endswith("no regression; failed: the latency tolerance cannot be judged")
    assert not compare_runs(base, base, ["latency:5%,strict"], noise=0.005).failed


def test_a_confirmed_row_is_judged_by_its_ab_detectable_effect() -> None:
    _, c = _blind()
    settled = confirm_latency(c, lambda row: _windows(1.0))  # a quiet A/B: detects ~2% slow-downs
    assert all(r.detectable is not None and r.detectable < 0.05 for r in settled.rows if r.judged)
    assert settled.cannot_judge is None


def test_the_detectable_effect_is_in_the_table_json_and_junit() -> None:
    _, c = _blind()
    lines = table_lines(real_doc()["measurements"], c)  # the same rows, with their statistics
    assert "detects >=" in lines[0]
    row = c.row("digits-cnn", "int8", "cpu")
    assert row is not None and row.detectable_cell in next(line for line in lines if " int8 " in line)
    assert any(line.startswith("detects >= = minimum detectable effect") for line in lines)
    d = next(r for r in c.to_dict()["rows"] if r["variant"] == "int8")
    assert d["detectable"] == row.detectable and d["latency"]["detectable"] == row.detectable
    props = dict(junit_properties(c))
    assert props["edgeopt_gate"] == "passed"
    assert props["edgeopt_latency_detectable[digits-cnn/int8/cpu/host]"] == f"{row.detectable:.4f}"
    assert props["edgeopt_latency_evidence[digits-cnn/int8/cpu/host]"] == "two runs"
    assert props["edgeopt_gate_cannot_judge"] == c.cannot_judge


def test_html_shows_the_comparison_with_the_detectable_effect() -> None:
    pytest.importorskip("matplotlib")
    from pytest_edgeopt.runs.html import render_html

    _, c = _blind()
    doc = {**real_doc(), "comparison": c.to_dict()}
    page = render_html(doc)
    assert 'id="comparison"' in page and "detects &ge;" in page
    row = c.row("digits-cnn", "int8", "cpu")
    assert row is not None and f"{100 * row.detectable:.1f}%" in page
    assert "cannot be judged here" in page


# -- the sequential A/B ---------------------------------------------------------------------------
def _noisy_windows(factor: float, seed: int, sd: float) -> Windows:
    """Each window's level moves with the machine (sd ``sd`` in log): a loaded runner."""
    rng = np.random.default_rng(seed)

    def window(f: float) -> Callable[[], Sequence[float]]:
        return lambda: list(f * 100 * np.exp(rng.normal(0, sd) + rng.normal(0, 0.01, 200)))

    return window(1.0), window(factor)


def test_a_clear_ab_verdict_stops_after_the_first_rounds() -> None:
    tol = parse_tolerance("latency:5%")
    lat = ab_latency(*_noisy_windows(1.3, 0, 0.02), extend_to=36, tolerance=tol)
    assert lat.noise_source == "A/B in this session, 12 rounds"
    assert lat.p_value == pytest.approx(2 * 0.5 ** 12)  # all 12 slower, Bonferroni for two looks


def test_an_unsettled_ab_goes_on_and_finds_a_slowdown_on_a_loaded_machine() -> None:
    tol = parse_tolerance("latency:5%")
    fixed = [ab_latency(*_noisy_windows(1.10, s, 0.06)) for s in range(20)]
    sequential = [ab_latency(*_noisy_windows(1.10, s, 0.06), extend_to=36, tolerance=tol) for s in range(20)]

    def found(lat: Any) -> bool:
        return lat.p_value < ALPHA and lat.ratio > 1.05

    assert sum(map(found, sequential)) >= 19 and sum(map(found, fixed)) <= 12  # 12 rounds need 11 slower ones
    assert any(lat.noise_source.endswith("36 rounds") for lat in sequential)
    unchanged = [ab_latency(*_noisy_windows(1.0, s, 0.06), extend_to=36, tolerance=tol) for s in range(40)]
    assert sum(map(found, unchanged)) <= 1  # p < 0.01 by chance (11 of 12 slower: 0.3%), at most 1 in 40
