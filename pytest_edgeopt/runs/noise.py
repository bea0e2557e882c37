"""The latency test of the baseline gate, on two runs' raw samples (:func:`latency_change`).

Two facts of real data shape the test (measured on the example suite; see
``benchmarks/gate_trust.py``):

- samples of one run are autocorrelated (rank autocorrelation 0.1-0.45 at lag 1 and still
  about 0.2 at lag 100 for the digits CNN), so a test that treats the samples as
  independent (Mann-Whitney U on the raw samples) calls unchanged runs different: p < 0.01
  in 46% of ordered pairs of unchanged runs (in one direction or the other for almost
  every pair). Each run is therefore reduced to 32 contiguous block medians, and the
  standard error of its median is bootstrapped from them;
- the p50 of the same model file moves between runs with the machine's state (other
  processes, frequency, caches): 2-3% (sd) on a shared 2-core VM, and now and then 15-20%
  for a whole measurement. No within-run statistic sees that, so the test adds a
  between-run noise term ``noise`` (the sd of log p50 between unchanged runs), estimated
  from earlier saved runs of the same machine (:func:`estimate_noise`) or
  :data:`DEFAULT_NOISE`.

The two-run test is one-sided on the log ratio of medians: ``z = log(p50_cur / p50_base) /
sqrt(se_base^2 + se_cur^2 + 2 noise^2)``, ``p = 1 - Phi(z)``. A latency regression is
both significant (``p < alpha``, 0.01 by default) and larger than the tolerance (the ratio
of p50s above ``1 + tol``, or the p50 difference above ``tol`` ms). With the noise of a
shared VM it keeps false alarms near 1% but cannot call a 10% slow-down significant
reliably: two runs of one window each hold too little information about the machine
(:mod:`pytest_edgeopt.runs.abtest` settles such verdicts by re-measuring).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from pytest_edgeopt.runs.tolerance import Tolerance

#: One-sided significance level of the latency test.
ALPHA = 0.01
#: Contiguous blocks each run's latency samples are reduced to.
BLOCKS = 32
#: Between-run noise of a p50 (standard deviation of its natural log) used when no earlier
#: runs of the machine are available: what ``benchmarks/gate_trust.py`` estimated (2.0-2.6%)
#: for the example suite with the default latency settings on a shared 2-core x86 VM.
DEFAULT_NOISE = 0.025
#: Saved runs of the same machine needed before the noise is estimated from them.
MIN_NOISE_RUNS = 3
_BOOTSTRAP = 1000
_NORMAL = NormalDist()


def block_medians(samples_us: Sequence[float] | np.ndarray, blocks: int = BLOCKS) -> np.ndarray:
    """Medians of ``blocks`` contiguous, near-equal blocks of the samples (one block per
    sample when there are fewer samples than blocks), in the samples' unit."""
    x = np.asarray(samples_us, dtype=float)
    if x.size == 0:
        raise ValueError("no latency samples")
    if x.size <= blocks:  # one sample per block: its own median
        return x.copy()
    return np.array([np.median(b) for b in np.array_split(x, blocks)])


def _log_median_se(blocks: np.ndarray, seed: int) -> float:
    """Bootstrap standard error of log(median) over the block medians (0 for one block)."""
    if blocks.size < 2:
        return 0.0
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, blocks.size, size=(_BOOTSTRAP, blocks.size))
    return float(np.std(np.log(np.median(blocks[idx], axis=1)), ddof=1))


def _phi(z: float) -> float:
    return _NORMAL.cdf(z)


def normal_quantile(q: float) -> float:
    """The standard normal quantile of ``q``."""
    return _NORMAL.inv_cdf(q)


@dataclass(frozen=True, slots=True)
class LatencyChange:
    """Latency of one measurement in two runs: p50s in ms, ``ratio`` = current / baseline
    p50, the one-sided ``p_value`` of "current is slower", the ``interval`` (low, high) of
    the ratio at confidence 1 - 2 alpha, the between-run ``noise`` used and where it came
    from (``noise_source``), the sample counts, and ``detectable``: the minimum detectable
    effect, the smallest relative slow-down (0.14 = 14%) this comparison calls significant
    at its significance level given its noise and sample counts (``None``: not computed,
    e.g. a comparison read from an older document)."""

    baseline_p50_ms: float
    current_p50_ms: float
    ratio: float
    p_value: float
    interval: tuple[float, float]
    noise: float
    noise_source: str
    baseline_samples: int
    current_samples: int
    detectable: float | None = None

    @property
    def change(self) -> float:
        """Relative change of p50 (0.031 = 3.1% slower)."""
        return self.ratio - 1.0

    @property
    def delta_ms(self) -> float:
        return self.current_p50_ms - self.baseline_p50_ms

    def cell(self) -> str:
        """``+3.1% (p=0.002)``: what a table's comparison column shows."""
        return f"{100 * self.change:+.1f}% ({p_text(self.p_value)})"

    def to_dict(self) -> dict[str, Any]:
        return {"baseline_p50_ms": self.baseline_p50_ms, "current_p50_ms": self.current_p50_ms, "ratio": self.ratio,
                "change": self.change, "p_value": self.p_value, "interval": list(self.interval), "noise": self.noise,
                "noise_source": self.noise_source, "baseline_samples": self.baseline_samples,
                "current_samples": self.current_samples, "detectable": self.detectable}

    def log_se(self, alpha: float = ALPHA) -> float:
        """Standard error of log(ratio) behind the interval (computed at ``alpha``): its upper
        half-width over the normal quantile of 1 - alpha."""
        return max(math.log(self.interval[1] / self.ratio), 0.0) / normal_quantile(1 - alpha)

    def reaches(self, tol: Tolerance) -> bool:
        """Whether the interval's upper end reaches ``tol``: the evidence cannot rule out a
        regression of the tolerance's size (the adaptive A/B screen,
        :func:`pytest_edgeopt.runs.abtest.confirm_latency`)."""
        hi = self.interval[1]
        if tol.unit == "%":
            return hi > 1.0 + tol.amount / 100.0
        return tol.exceeded(self.baseline_p50_ms, self.baseline_p50_ms * hi)

    def regression_likelihood(self, tol: Tolerance, alpha: float = ALPHA) -> float:
        """How likely the change is a regression beyond ``tol``, 0..1: the normal probability
        that log(ratio) exceeds the tolerance's log ratio, given :meth:`log_se` (orders A/B
        candidates: the likeliest regressions are re-measured first)."""
        if tol.unit == "%":
            limit = math.log1p(tol.amount / 100.0)
        else:
            scale = {"ms": 1.0, "us": 1e-3}[tol.unit]
            limit = math.log1p(tol.amount * scale / self.baseline_p50_ms) if self.baseline_p50_ms > 0 else 0.0
        se = self.log_se(alpha)
        gap = math.log(self.ratio) - limit if self.ratio > 0 else -math.inf
        if se <= 0:
            return 1.0 if gap > 0 else 0.0
        return _phi(gap / se)


def detectable_change(se: float, alpha: float = ALPHA) -> float:
    """Minimum detectable effect of a one-sided z test on log ratios with standard error
    ``se``: the relative slow-down ``exp(z(1 - alpha) se) - 1`` whose observed size is just
    significant (a true slow-down of that size is called significant about half the time;
    twice its log size almost always)."""
    return math.expm1(normal_quantile(1 - alpha) * se)


def latency_change(baseline_us: Sequence[float], current_us: Sequence[float], *, noise: float = DEFAULT_NOISE,
                   alpha: float = ALPHA, noise_source: str = "default", blocks: int = BLOCKS) -> LatencyChange:
    """The latency test of the module docstring on two runs' raw samples (microseconds).

    ``noise`` is the between-run standard deviation of log p50 (0 trusts the within-run
    variation alone, which unchanged runs on a busy machine exceed). Deterministic: the
    bootstrap is seeded.
    """
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be between 0 and 0.5, got {alpha}")
    if noise < 0:
        raise ValueError(f"noise must be 0 or more, got {noise}")
    base, cur = np.asarray(baseline_us, dtype=float), np.asarray(current_us, dtype=float)
    if base.size == 0 or cur.size == 0:
        raise ValueError("latency_change needs samples of both runs")
    if (base <= 0).any() or (cur <= 0).any():
        raise ValueError("latency samples must be positive")
    b_blocks, c_blocks = block_medians(base, blocks), block_medians(cur, blocks)
    se = math.sqrt(_log_median_se(b_blocks, 1) ** 2 + _log_median_se(c_blocks, 2) ** 2 + 2 * noise ** 2)
    p50_b, p50_c = float(np.median(base)), float(np.median(cur))
    log_ratio = math.log(p50_c / p50_b)
    if se > 0:
        p = 1.0 - _phi(log_ratio / se)
    else:  # no variation at all: a difference is certain, equality is not significant
        p = 0.0 if log_ratio > 0 else 1.0
    half = normal_quantile(1 - alpha) * se
    return LatencyChange(p50_b / 1000.0, p50_c / 1000.0, p50_c / p50_b, p,
                         (math.exp(log_ratio - half), math.exp(log_ratio + half)), noise, noise_source,
                         int(base.size), int(cur.size), detectable_change(se, alpha))


def estimate_noise(series: Sequence[Mapping[str, float]], min_runs: int = MIN_NOISE_RUNS) -> float | None:
    """Between-run noise (sd of log p50) from earlier runs' p50s: ``series`` holds one
    mapping measurement key -> p50 per run, oldest first (see :func:`p50s_of`).

    Uses differences between consecutive runs (a real change is one step, not a spread)
    and their 90th percentile, so the rare whole-measurement slow-downs of a busy
    machine count: sigma = q90(|d|) / (1.645 sqrt 2). ``None`` with fewer than
    ``min_runs`` runs or 10 differences.
    """
    if len(series) < min_runs:
        return None
    diffs: list[float] = []
    for prev, cur in zip(series, series[1:]):
        for key, value in cur.items():
            old = prev.get(key)
            if old and value and old > 0 and value > 0:
                diffs.append(abs(math.log(value / old)))
    if len(diffs) < 10:
        return None
    return float(np.quantile(diffs, 0.9)) / (1.6448536 * math.sqrt(2.0))


def latency_exceeds(tol: Tolerance, change: LatencyChange) -> bool:
    """Whether a latency change is larger than ``tol``: its ratio above ``1 + tol`` for a
    relative tolerance, its p50 difference above ``tol`` for ``ms``/``us``."""
    if tol.unit == "%":
        return change.ratio > 1.0 + tol.amount / 100.0
    return tol.exceeded(change.baseline_p50_ms, change.current_p50_ms)


def p_text(p: float) -> str:
    """``p=0.012`` or ``p<0.001``."""
    return f"p={p:.2g}" if p >= 0.001 else "p<0.001"
