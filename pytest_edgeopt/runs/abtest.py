"""A/B re-measurement in one session: the two model files of a suspect row timed
alternately on one device, now (:func:`ab_latency`), which cancels the machine's state;
:func:`confirm_latency` settles a :class:`~pytest_edgeopt.runs.gate.Comparison`'s latency
verdicts with it: 0 false alarms and 100% detection of 10% in the live trials of
``benchmarks/gate_trust.py``."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from pytest_edgeopt.labels import where
from pytest_edgeopt.runs.findings import Regression
from pytest_edgeopt.runs.gate import Comparison, RowComparison, judge_sensitivity
from pytest_edgeopt.runs.noise import ALPHA, LatencyChange, latency_exceeds, normal_quantile
from pytest_edgeopt.runs.tolerance import Tolerance

#: Rounds of an A/B re-measurement (each: one window of each model, order alternating).
AB_ROUNDS = 12
#: Rounds an unsettled A/B goes on to (see :func:`ab_latency`).
AB_MAX_ROUNDS = 72


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
               rounds: int = AB_ROUNDS, alpha: float = ALPHA, extend_to: int | None = None,
               tolerance: Tolerance | None = None, progress: Callable[[str], None] | None = None) -> LatencyChange:
    """Re-measure two model files alternately on one device, now: the test that cancels the
    machine's state. Each callable times one window of its model and returns the samples in
    microseconds (e.g. ``lambda: target.latency(path, short).stats.samples_us``).

    Round r times both, the baseline first in even rounds; ``d_r = log(p50_cur / p50_base)``.
    ``ratio = exp(median d)``; ``p_value``: exact one-sided sign test of ``d > 0`` (robust to
    a slow-down of the machine that hits one window); ``interval``: order-statistic interval
    of the median at confidence 1 - 2 alpha. ``ValueError`` when ``rounds`` cannot reach
    ``alpha`` (at least 7 rounds for 0.01).

    Sequential with ``extend_to`` (more than ``rounds``) and a ``tolerance``: after ``rounds``
    rounds the verdict stands when it is settled (a significant slow-down beyond the
    tolerance, or an interval that stays below it); otherwise rounds go on up to
    ``extend_to`` and the test is made on all of them. On a loaded machine a round's
    difference is noisy and 12 rounds, which need 11 slower ones, miss a 10% slow-down
    often; 72 need 48. Both looks test at ``alpha / 2`` (the interval too), and the reported
    ``p_value`` is doubled (Bonferroni), so ``p_value < alpha`` keeps false alarms at most ``alpha``.
    """
    looks = 2 if extend_to is not None and extend_to > rounds and tolerance is not None else 1
    level = alpha / looks
    if 0.5 ** rounds >= level:
        raise ValueError(f"{rounds} rounds cannot reach p < {level:g} with a sign test; use at least "
                         f"{math.ceil(math.log(1 / level, 2)) + 1}")
    d: list[float] = []
    p50_b: list[float] = []
    p50_c: list[float] = []
    counts = [0, 0]
    total = extend_to if looks == 2 and extend_to is not None else rounds

    def window(r: int) -> None:
        if progress:
            progress(f"A/B round {r + 1}/{total}")
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
        counts[0] += b.size
        counts[1] += c.size
        d.append(math.log(mc / mb))

    def verdict() -> LatencyChange:
        lo, hi = _median_interval(d, level)
        return LatencyChange(float(np.median(p50_b)) / 1000.0, float(np.median(p50_c)) / 1000.0,
                             math.exp(float(np.median(d))), min(1.0, looks * _sign_test(d)),
                             (math.exp(lo), math.exp(hi)), 0.0, f"A/B in this session, {len(d)} rounds",
                             counts[0], counts[1], ab_detectable(d, level))

    for r in range(rounds):
        window(r)
    lat = verdict()
    if looks == 1 or tolerance is None:
        return lat
    if (lat.p_value < alpha and latency_exceeds(tolerance, lat)) or not lat.reaches(tolerance):
        return lat  # settled at the first look
    for r in range(rounds, total):
        window(r)
    return verdict()


def ab_detectable(d: Sequence[float], alpha: float = ALPHA) -> float:
    """Minimum detectable effect of an A/B with round differences ``d`` (log ratios): the
    shift ``delta`` at which the expected share of slower rounds, ``Phi(delta / sd)``, reaches
    the sign test's critical count ``k / n`` (``k``: fewest positive rounds with
    ``p < alpha``), as a relative slow-down. ``sd`` is the rounds' spread (1.4826 MAD, robust
    to a round the machine disturbed)."""
    n = len(d)
    k = next((k for k in range(n + 1) if _sign_test([1.0] * k + [-1.0] * (n - k)) < alpha), None)
    if k is None or k >= n:
        return math.inf
    x = np.asarray(d, dtype=float)
    sd = 1.4826 * float(np.median(np.abs(x - np.median(x))))
    return math.expm1(sd * normal_quantile(k / n))


#: One window of one model: its latency samples in microseconds.
Window = Callable[[], Sequence[float]]
#: Supplies the two window callables (baseline model, current model) for a row, or a reason
#: (``str``) why that row cannot be re-measured (``None``: "model file or device unavailable").
Remeasure = Callable[[RowComparison], "tuple[Window, Window] | str | None"]

#: The per-row evidence of a row that could not be re-measured.
TWO_RUNS_ONLY = "latency judged on two runs only"
#: Why a row whose model file did not change is not re-measured.
SAME_FILE = "the same model file in both runs: the change is the device's or runtime's"


def ab_candidates(comparison: Comparison) -> list[RowComparison]:
    """The rows an A/B re-measurement should settle, likeliest regressions first: every row
    judged on latency whose two-run interval reaches the latency tolerance (its evidence
    cannot rule out a regression of the tolerance's size), ordered by
    :meth:`~pytest_edgeopt.runs.noise.LatencyChange.regression_likelihood`. Empty without a
    latency tolerance."""
    tol = comparison.latency_tolerance
    if tol is None:
        return []
    rows = [r for r in comparison.rows if r.judged and r.latency is not None and r.latency.reaches(tol)]
    return sorted(rows, key=lambda r: -r.latency.regression_likelihood(tol, comparison.alpha)  # type: ignore[union-attr]
                  )


def _names(rows: Sequence[RowComparison], limit: int = 6) -> str:
    text = ", ".join(f"{r.variant} on {where(r.target, r.device)}" for r in rows[:limit])
    return text + (f" and {len(rows) - limit} more" if len(rows) > limit else "")


def confirm_latency(comparison: Comparison, remeasure: Remeasure, *, rounds: int = AB_ROUNDS,
                    max_rounds: int | None = AB_MAX_ROUNDS, budget_s: float | None = None, clock: Callable[[], float] = time.monotonic,
                    progress: Callable[[str], None] | None = None) -> Comparison:
    """Settle the latency verdicts by A/B re-measurement (:func:`ab_latency`) where possible.

    The candidates are :func:`ab_candidates`: every judged row whose two-run interval reaches
    the tolerance, the likeliest regressions first. A screen that adapts to the noise: on a
    quiet machine few unchanged rows reach the tolerance, on a noisy one nearly every row
    does and is re-measured, so a 10% slow-down is not waved through by a fixed ratio
    threshold. Each candidate for which ``remeasure(row)`` gives both models' windows gets the A/B
    verdict instead (``rounds`` rounds, going on to ``max_rounds`` while unsettled): a regression when its sign test has ``p < alpha`` and its ratio
    exceeds the tolerance. A row that cannot be re-measured keeps its two-run verdict and
    says so (:data:`TWO_RUNS_ONLY` and the reason, in its ``evidence`` and a warning).

    ``budget_s``: seconds the re-measurements may take (``None``: no limit). A candidate is
    started only when the time spent plus the mean time of the A/Bs so far fits; the rest
    keep their two-run verdicts, marked ``not confirmed`` and named in a warning. A row whose
    model file is the same in both runs (judged because its device's software or op placement
    changed) keeps its two-run verdict too (:data:`SAME_FILE`): an A/B of a file against itself
    cannot see a change of the device.
    ``clock``: seconds, for the budget (monotonic).

    Only meaningful when both runs used the same packages and settings
    (``comparison.same_runtime``): otherwise the A/B would time both files with today's
    runtime and miss a runtime regression, so the comparison is returned unchanged with a
    warning. Without a latency tolerance nothing is re-measured. The detectable-effect
    verdict (:func:`~pytest_edgeopt.runs.gate.judge_sensitivity`) is recomputed on the
    settled rows.
    """
    tol = comparison.latency_tolerance
    if tol is None:
        return comparison
    if not comparison.same_runtime:
        return replace(comparison, warnings=comparison.warnings + (
            "latency verdicts rest on two runs only: no A/B re-measurement because the packages or latency "
            "settings differ from the baseline's",))
    candidates = ab_candidates(comparison)
    rows = {r.key: r for r in comparison.rows}
    regressions = list(comparison.regressions)
    skipped: dict[str, list[RowComparison]] = {}
    unconfirmed: list[RowComparison] = []
    start = clock()
    done = 0
    for i, row in enumerate(candidates, 1):
        spent = clock() - start
        if budget_s is not None and (spent >= budget_s or (done and spent + spent / done > budget_s)):
            unconfirmed = candidates[i - 1:]
            break
        # The same file in both runs (judged because the device's software or the op placement
        # changed): timing it against itself now cannot see that change.
        windows = SAME_FILE if row.same_model else remeasure(row)
        if windows is None or isinstance(windows, str):
            why = windows or "model file or device unavailable"
            skipped.setdefault(why, []).append(row)
            rows[row.key] = replace(row, evidence=f"{TWO_RUNS_ONLY} ({why})")
            continue
        if progress:
            progress(f"A/B re-measuring {row.model} {row.variant} on {where(row.target, row.device)} "
                     f"({i}/{len(candidates)})")
        lat = ab_latency(*windows, rounds=rounds, alpha=comparison.alpha, extend_to=max_rounds, tolerance=tol)
        done += 1
        regressions = [g for g in regressions if not (g.metric == "latency" and
                                                      (g.model, g.variant, g.target, g.device) == row.key)]
        regressed = tuple(m for m in row.regressed if m != "latency")
        if lat.p_value < comparison.alpha and latency_exceeds(tol, lat):
            regressed += ("latency",)
            regressions.append(Regression(*row.key, metric="latency", baseline=lat.baseline_p50_ms,
                                          current=lat.current_p50_ms, change=lat.change, tolerance=str(tol),
                                          p_value=lat.p_value, interval=lat.interval, evidence=lat.noise_source,
                                          detail=row.latency_detail))
        rows[row.key] = replace(row, latency=lat, regressed=regressed, evidence=lat.noise_source)
    warnings = comparison.warnings
    for why, missed in skipped.items():
        warnings += (f"{TWO_RUNS_ONLY} for {_names(missed)}: no A/B re-measurement ({why})",)
    if unconfirmed:
        note = f"not confirmed: the A/B budget of {budget_s:g} s ran out; judged on two runs"
        for row in unconfirmed:
            rows[row.key] = replace(row, evidence=note)
        warnings += (f"A/B budget of {budget_s:g} s ran out after {done} re-measurement"
                     f"{'s' if done != 1 else ''}: {len(unconfirmed)} row{'s' if len(unconfirmed) != 1 else ''} "
                     f"left unconfirmed, judged on two runs only: {_names(unconfirmed, 10)} "
                     "(raise --edgeopt-ab-budget)",)
    return judge_sensitivity(replace(comparison, rows=tuple(rows[r.key] for r in comparison.rows),
                                     regressions=tuple(regressions), warnings=warnings))
