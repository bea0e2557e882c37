"""A/B re-measurement in one session: the two model files of a suspect row timed
alternately on one device, now (:func:`ab_latency`), which cancels the machine's state;
:func:`confirm_latency` settles a :class:`~pytest_edgeopt.runs.gate.Comparison`'s latency
verdicts with it: 0 false alarms and 100% detection of 10% in the live trials of
``benchmarks/gate_trust.py``."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Callable, Sequence

import numpy as np

from pytest_edgeopt.labels import where
from pytest_edgeopt.runs.gate import Comparison, Regression, RowComparison
from pytest_edgeopt.runs.noise import ALPHA, LatencyChange, latency_exceeds

#: Rounds of an A/B re-measurement (each: one window of each model, order alternating).
AB_ROUNDS = 12


def _sign_test(d: Sequence[float]) -> float:
    """One-sided exact sign test p-value of "the differences are positive" (zeros dropped)."""
    pos = sum(x > 0 for x in d)
    n = sum(x != 0 for x in d)
    if n == 0:
        return 1.0
    return float(sum(math.comb(n, i) for i in range(pos, n + 1)) / 2 ** n)


def _median_interval(d: Sequence[float], alpha: float) -> tuple[float, float]:
    """Distribution-free interval of the median of ``d`` at confidence 1 - 2 alpha (order
    statistics at binomial quantiles; the extremes when there are too few values)."""
    x = sorted(d)
    n = len(x)
    j, cum = 0, 0.0
    while j < n:
        cum += math.comb(n, j) / 2 ** n
        if cum > alpha:
            break
        j += 1
    j = max(j, 1)
    return x[j - 1], x[n - j]


def ab_latency(measure_baseline: Callable[[], Sequence[float]], measure_current: Callable[[], Sequence[float]], *,
               rounds: int = AB_ROUNDS, alpha: float = ALPHA,
               progress: Callable[[str], None] | None = None) -> LatencyChange:
    """Re-measure two model files alternately on one device, now: the test that cancels the
    machine's state. Each callable times one window of its model and returns the samples in
    microseconds (e.g. ``lambda: target.latency(path, short).stats.samples_us``).

    Round r times both, the baseline first in even rounds; ``d_r = log(p50_cur / p50_base)``.
    ``ratio = exp(median d)``; ``p_value``: exact one-sided sign test of ``d > 0`` (robust to
    a slow-down of the machine that hits one window); ``interval``: order-statistic interval
    of the median at confidence 1 - 2 alpha. ``ValueError`` when ``rounds`` cannot reach
    ``alpha`` (at least 7 rounds for 0.01).
    """
    if 0.5 ** rounds >= alpha:
        raise ValueError(f"{rounds} rounds cannot reach p < {alpha:g} with a sign test; use at least "
                         f"{math.ceil(math.log(1 / alpha, 2)) + 1}")
    d: list[float] = []
    p50_b: list[float] = []
    p50_c: list[float] = []
    n_b = n_c = 0
    for r in range(rounds):
        if progress:
            progress(f"A/B round {r + 1}/{rounds}")
        if r % 2 == 0:
            b = np.asarray(measure_baseline(), dtype=float)
            c = np.asarray(measure_current(), dtype=float)
        else:
            c = np.asarray(measure_current(), dtype=float)
            b = np.asarray(measure_baseline(), dtype=float)
        if b.size == 0 or c.size == 0 or (b <= 0).any() or (c <= 0).any():
            raise ValueError("an A/B window returned no samples or a non-positive one")
        mb, mc = float(np.median(b)), float(np.median(c))
        p50_b.append(mb)
        p50_c.append(mc)
        n_b, n_c = n_b + b.size, n_c + c.size
        d.append(math.log(mc / mb))
    lo, hi = _median_interval(d, alpha)
    return LatencyChange(float(np.median(p50_b)) / 1000.0, float(np.median(p50_c)) / 1000.0,
                         math.exp(float(np.median(d))), _sign_test(d), (math.exp(lo), math.exp(hi)), 0.0,
                         f"A/B in this session, {rounds} rounds", n_b, n_c)


#: Supplies the two window callables (baseline model, current model) for a row, or ``None``
#: when that row cannot be re-measured (file gone, device gone).
Remeasure = Callable[[RowComparison], "tuple[Callable[[], Sequence[float]], Callable[[], Sequence[float]]] | None"]


def confirm_latency(comparison: Comparison, remeasure: Remeasure, *, rounds: int = AB_ROUNDS,
                    screen: float | None = None, progress: Callable[[str], None] | None = None) -> Comparison:
    """Settle the latency verdicts by A/B re-measurement (:func:`ab_latency`) where possible.

    Rows that were judged on latency, look slower than ``1 + screen`` in the two-run
    comparison (default: half a relative tolerance, e.g. 2.5% for ``latency:5%``, which
    passes 99% of 10% slow-downs and a quarter of unchanged rows in the benchmark; 0 for
    an absolute tolerance), and for which ``remeasure(row)`` gives both models' windows, get
    the A/B verdict instead: a regression when its sign test has ``p < alpha`` and its ratio exceeds
    the tolerance. This removes false alarms from machine noise and catches slow-downs the
    two-run test could not call significant. Only meaningful when both runs used the same
    packages and settings (``comparison.same_runtime``): otherwise the A/B would time both
    files with today's runtime and miss a runtime regression, so the comparison is
    returned unchanged with a warning. Without a latency tolerance nothing is re-measured.
    """
    tol = next((t for t in comparison.tolerances if t.metric == "latency"), None)
    if tol is None:
        return comparison
    if screen is None:
        screen = tol.amount / 200.0 if tol.unit == "%" else 0.0
    if not comparison.same_runtime:
        return replace(comparison, warnings=comparison.warnings + (
            "latency verdicts rest on two runs only: no A/B re-measurement because the packages or latency "
            "settings differ from the baseline's",))
    candidates = [r for r in comparison.rows
                  if r.status == "compared" and r.latency is not None and r.latency_note is None
                  and r.latency.ratio > 1.0 + screen]
    rows = {r.key: r for r in comparison.rows}
    regressions = list(comparison.regressions)
    skipped: list[str] = []
    for i, row in enumerate(candidates, 1):
        windows = remeasure(row)
        if windows is None:
            skipped.append(f"{row.variant} on {where(row.target, row.device)}")
            continue
        if progress:
            progress(f"A/B re-measuring {row.model} {row.variant} on {where(row.target, row.device)} "
                     f"({i}/{len(candidates)})")
        lat = ab_latency(*windows, rounds=rounds, alpha=comparison.alpha)
        regressions = [g for g in regressions if not (g.metric == "latency" and
                                                      (g.model, g.variant, g.target, g.device) == row.key)]
        regressed = tuple(m for m in row.regressed if m != "latency")
        if lat.p_value < comparison.alpha and latency_exceeds(tol, lat):
            regressed += ("latency",)
            regressions.append(Regression(*row.key, metric="latency", baseline=lat.baseline_p50_ms,
                                          current=lat.current_p50_ms, change=lat.change, tolerance=str(tol),
                                          p_value=lat.p_value, interval=lat.interval, evidence=lat.noise_source))
        rows[row.key] = replace(row, latency=lat, regressed=regressed)
    warnings = comparison.warnings
    if skipped:
        warnings += (f"no A/B re-measurement for {', '.join(skipped[:6])}{' ...' if len(skipped) > 6 else ''} "
                     "(model file or device unavailable): their latency verdicts rest on two runs",)
    return replace(comparison, rows=tuple(rows[r.key] for r in comparison.rows), regressions=tuple(regressions),
                   warnings=warnings)
