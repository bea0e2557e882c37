"""Baseline gates: compare this run's measurements with a saved run's.

Measurements are matched by (model, variant, target, device) and recipe. Tolerances are
written ``METRIC:AMOUNT UNIT`` (see :func:`parse_tolerance`); a metric without a tolerance
is compared and shown but never fails the gate.

Sizes and accuracy are compared exactly. Accuracy only when both runs scored the same
metric on the same number of eval samples; otherwise the comparison is refused and the
reason is given (:class:`Refusal`).

Latency is judged from the raw samples of both runs (:func:`latency_change`). Two facts
of real data shape the test (measured on the example suite; see ``benchmarks/gate_trust.py``):

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
reliably: two runs of one window each hold too little information about the machine.

Where the two model files still exist and both runs used the same packages and settings,
:func:`confirm_latency` settles the verdicts by an A/B re-measurement in the current
session (:func:`ab_latency`: the two files timed alternately, 12 rounds, exact sign test on
the per-round log ratios), which cancels the machine's state: 0 false alarms and 100%
detection of 10% in the live trials of the benchmark.

A variant whose model file is byte-identical to the baseline's, timed by the same package
versions with the same settings, is not judged: nothing under test changed, so its
difference is the machine's (``judge_identical=True`` judges it anyway).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import NormalDist
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

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

METRICS = ("latency", "size", "compressed_size", "accuracy")
UNITS = {"latency": ("%", "ms", "us"), "size": ("%", "B"), "compressed_size": ("%", "B"), "accuracy": ("pt",)}
_GRAMMAR = ("METRIC:AMOUNT[UNIT] with METRIC:UNITS latency:% ms us, size:% B, compressed_size:% B, accuracy:pt "
            "(percentage points of the metric); e.g. latency:5%, latency:0.2ms, size:1%, compressed_size:1%, "
            "accuracy:0.5pt")
_EXPR_RE = re.compile(r"^\s*([a-z_]+)\s*:\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-zA-Z%]*)\s*$")


# -- tolerances ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Tolerance:
    """How much worse ``metric`` may get: ``amount`` in ``unit`` (``%`` of the baseline,
    ``ms``/``us`` of p50 latency, ``B`` of size, ``pt`` = hundredths of the accuracy metric)."""

    metric: str
    amount: float
    unit: str

    def __str__(self) -> str:
        return f"{self.metric}:{self.amount:g}{self.unit}"

    def exceeded(self, baseline: float, current: float) -> bool:
        """Whether ``current`` is worse than ``baseline`` by more than the tolerance (larger is
        worse for latency and sizes, smaller for accuracy)."""
        if self.metric == "accuracy":
            return (baseline - current) * 100.0 > self.amount + 1e-9
        if self.unit == "%":
            return current > baseline * (1.0 + self.amount / 100.0) * (1 + 1e-12)
        scale = {"ms": 1.0, "us": 1e-3, "B": 1.0}[self.unit]
        return current - baseline > self.amount * scale * (1 + 1e-12)


def parse_tolerance(expr: str) -> Tolerance:
    """``latency:5%`` -> ``Tolerance("latency", 5.0, "%")``; ``ValueError`` explaining the
    grammar for anything malformed (unknown metric, unit, or a negative amount)."""
    m = _EXPR_RE.match(str(expr))
    if not m:
        raise ValueError(f"malformed tolerance {expr!r}: expected {_GRAMMAR}")
    metric, amount, unit = m[1], float(m[2]), m[3]
    if metric not in UNITS:
        raise ValueError(f"unknown metric {metric!r} in tolerance {expr!r}: expected {_GRAMMAR}")
    if unit not in UNITS[metric]:
        raise ValueError(f"tolerance {expr!r}: {metric} takes the unit {' or '.join(UNITS[metric])}, "
                         f"got {unit or 'none'!r}; expected {_GRAMMAR}")
    if not math.isfinite(amount):
        raise ValueError(f"tolerance {expr!r}: the amount must be a finite number")
    return Tolerance(metric, amount, unit)


def parse_tolerances(exprs: Iterable[str | Tolerance]) -> dict[str, Tolerance]:
    """Tolerances by metric; ``ValueError`` for a malformed one or a metric given twice."""
    out: dict[str, Tolerance] = {}
    for e in exprs:
        t = e if isinstance(e, Tolerance) else parse_tolerance(e)
        if t.metric in out:
            raise ValueError(f"two tolerances for {t.metric}: {out[t.metric]} and {t}; give one")
        out[t.metric] = t
    return out


# -- latency ------------------------------------------------------------------------------------
def block_medians(samples_us: Sequence[float], blocks: int = BLOCKS) -> np.ndarray:
    """Medians of ``blocks`` contiguous, near-equal blocks of the samples (one block per
    sample when there are fewer samples than blocks), in the samples' unit."""
    x = np.asarray(samples_us, dtype=float)
    if x.size == 0:
        raise ValueError("no latency samples")
    k = min(blocks, x.size)
    return np.array([np.median(b) for b in np.array_split(x, k)])


def _log_median_se(blocks: np.ndarray, seed: int) -> float:
    """Bootstrap standard error of log(median) over the block medians (0 for one block)."""
    if blocks.size < 2:
        return 0.0
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, blocks.size, size=(_BOOTSTRAP, blocks.size))
    return float(np.std(np.log(np.median(blocks[idx], axis=1)), ddof=1))


def _phi(z: float) -> float:
    return _NORMAL.cdf(z)


def _z(q: float) -> float:
    """The standard normal quantile of ``q``."""
    return _NORMAL.inv_cdf(q)


@dataclass(frozen=True, slots=True)
class LatencyChange:
    """Latency of one measurement in two runs: p50s in ms, ``ratio`` = current / baseline
    p50, the one-sided ``p_value`` of "current is slower", the ``interval`` (low, high) of
    the ratio at confidence 1 - 2 alpha, the between-run ``noise`` used and where it came
    from (``noise_source``), and the sample counts."""

    baseline_p50_ms: float
    current_p50_ms: float
    ratio: float
    p_value: float
    interval: tuple[float, float]
    noise: float
    noise_source: str
    baseline_samples: int
    current_samples: int

    @property
    def change(self) -> float:
        """Relative change of p50 (0.031 = 3.1% slower)."""
        return self.ratio - 1.0

    @property
    def delta_ms(self) -> float:
        return self.current_p50_ms - self.baseline_p50_ms

    def cell(self) -> str:
        """``+3.1% (p=0.002)``: what a table's comparison column shows."""
        return f"{100 * self.change:+.1f}% ({_p(self.p_value)})"

    def to_dict(self) -> dict[str, Any]:
        return {"baseline_p50_ms": self.baseline_p50_ms, "current_p50_ms": self.current_p50_ms, "ratio": self.ratio,
                "change": self.change, "p_value": self.p_value, "interval": list(self.interval), "noise": self.noise,
                "noise_source": self.noise_source, "baseline_samples": self.baseline_samples,
                "current_samples": self.current_samples}


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
    half = _z(1 - alpha) * se
    return LatencyChange(p50_b / 1000.0, p50_c / 1000.0, p50_c / p50_b, p,
                         (math.exp(log_ratio - half), math.exp(log_ratio + half)), noise, noise_source,
                         int(base.size), int(cur.size))


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


# -- matching -----------------------------------------------------------------------------------
Key = tuple[str, str, str, str]


def _device_label(obs: Mapping[str, Any]) -> str:
    dev = obs.get("device") or {}
    if isinstance(dev, str):
        return dev
    return dev.get("label") or dev.get("id") or "host"


def observations(doc: Mapping[str, Any]) -> dict[Key, dict[str, Any]]:
    """Each measured (model, variant, target, device) of a run document, once: the
    measurement dict (with ``outcome`` and ``test`` of its first test), plus the fp32
    baselines the measurements embed when no test measured fp32 itself."""
    out: dict[Key, dict[str, Any]] = {}
    embedded: dict[Key, dict[str, Any]] = {}
    for rec in doc.get("measurements") or []:
        m = rec.get("measurement")
        if not m:
            continue
        key = (str(m["model"]), str(m["variant"]), str(m["target"]), _device_label(m))
        if key not in out:
            out[key] = {**m, "outcome": rec.get("outcome"), "test": rec.get("test")}
        b = m.get("baseline")
        if b:
            bkey = (str(b["model"]), str(b["variant"]), str(b["target"]), _device_label(b))
            embedded.setdefault(bkey, {**b, "outcome": None, "test": None})
    for key, b in embedded.items():
        out.setdefault(key, b)
    return out


def key_text(key: Key) -> str:
    """``model/variant/target/device``: a key as one string (JSON-friendly)."""
    return "/".join(key)


def p50s_of(doc: Mapping[str, Any]) -> dict[str, float]:
    """Measurement key (see :func:`key_text`) -> p50 latency in ms, for noise estimates."""
    return {key_text(k): float(np.median(o["latency"]["samples_us"])) / 1000.0
            for k, o in observations(doc).items() if (o.get("latency") or {}).get("samples_us")}


def _model_identity(obs: Mapping[str, Any]) -> str | None:
    """The variant file's identity: its sha256 when recorded, else its content-addressed
    cache key (the directory of ``model_path``)."""
    for k in ("model_sha256", "sha256"):
        if obs.get(k):
            return str(obs[k])
        if (obs.get("extras") or {}).get(k):
            return str(obs["extras"][k])
    path = obs.get("model_path")
    if path:
        key = Path(path).parent.name
        if re.fullmatch(r"[0-9a-f]{64}", key):
            return key
    return None


# -- results ------------------------------------------------------------------------------------
def _p(p: float) -> str:
    """``p=0.012`` or ``p<0.001``."""
    return f"p={p:.2g}" if p >= 0.001 else "p<0.001"


def _ms(x: float) -> str:
    return f"{x * 1000:.4g} us" if abs(x) < 0.1 else f"{x:.4g} ms"


def _where(target: str, device: str) -> str:
    return target if device in ("host", "", None) else f"{target}/{device}"


@dataclass(frozen=True, slots=True)
class Regression:
    """One metric of one measurement that got worse beyond its tolerance.

    ``baseline``/``current`` in the metric's unit (``ms`` p50, ``B``, or the accuracy
    metric), ``change`` relative (latency, sizes) or in points (accuracy), ``p_value`` and
    ``interval`` (ratio, low/high) for latency, ``None`` otherwise."""

    model: str
    variant: str
    target: str
    device: str
    metric: str
    baseline: float
    current: float
    change: float
    tolerance: str
    p_value: float | None = None
    interval: tuple[float, float] | None = None
    #: What the latency verdict rests on: ``two runs`` or ``A/B in this session, N rounds``.
    evidence: str | None = None

    @property
    def message(self) -> str:
        where = _where(self.target, self.device)
        head = f"{self.model} {self.variant} on {where}: {self.metric}"
        if self.metric == "latency":
            lo, hi = self.interval or (math.nan, math.nan)
            return (f"{head} p50 {_ms(self.baseline)} -> {_ms(self.current)} ({100 * self.change:+.1f}%, "
                    f"{_p(self.p_value or 0.0)}, interval {100 * (lo - 1):+.1f}%..{100 * (hi - 1):+.1f}%"
                    f"{'; ' + self.evidence if self.evidence else ''}) exceeds {self.tolerance}")
        if self.metric == "accuracy":
            return (f"{head} {self.baseline:.4f} -> {self.current:.4f} ({self.change:+.2f} pt) exceeds {self.tolerance}")
        return (f"{head} {self.baseline:,.0f} B -> {self.current:,.0f} B ({100 * self.change:+.2f}%) "
                f"exceeds {self.tolerance}")

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "variant": self.variant, "target": self.target, "device": self.device,
                "metric": self.metric, "baseline": self.baseline, "current": self.current, "change": self.change,
                "tolerance": self.tolerance, "p_value": self.p_value,
                "interval": list(self.interval) if self.interval else None, "evidence": self.evidence,
                "message": self.message}


@dataclass(frozen=True, slots=True)
class Refusal:
    """A metric of a measurement that was not compared, and why."""

    model: str
    variant: str
    target: str
    device: str
    metric: str
    reason: str

    @property
    def message(self) -> str:
        what = "not compared" if self.metric == "all" else f"{self.metric} not compared"
        return f"{self.model} {self.variant} on {_where(self.target, self.device)}: {what}: {self.reason}"


@dataclass(frozen=True, slots=True)
class RowComparison:
    """One measurement in both runs. ``status``: ``compared``; ``new`` (not in the
    baseline); ``missing`` (not in this run); ``recipe changed`` (not compared).
    Changes: ``latency`` (a :class:`LatencyChange`, or ``None``), sizes relative
    (0.01 = 1% larger), ``accuracy_change`` in points (current - baseline, x100).
    ``same_model``: the variant file is byte-identical to the baseline's (``None``: unknown)."""

    model: str
    variant: str
    target: str
    device: str
    status: str
    latency: LatencyChange | None = None
    latency_note: str | None = None
    size_change: float | None = None
    compressed_size_change: float | None = None
    accuracy_change: float | None = None
    same_model: bool | None = None
    regressed: tuple[str, ...] = ()
    #: The variant files of both runs (for an A/B re-measurement), when recorded.
    baseline_model_path: str | None = None
    current_model_path: str | None = None

    @property
    def key(self) -> Key:
        return (self.model, self.variant, self.target, self.device)

    @property
    def cell(self) -> str:
        """The comparison column of the terminal table: ``+3.1% (p=0.002)``, ``new``..."""
        if self.status != "compared":
            return self.status
        if self.latency is None:
            return self.latency_note or ""
        text = self.latency.cell()
        if self.latency_note:  # not judged
            text = text[:-1] + "; same model)"
        return text + (" REGRESSED" if self.regressed else "")

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "variant": self.variant, "target": self.target, "device": self.device,
                "status": self.status, "latency": self.latency.to_dict() if self.latency else None,
                "latency_note": self.latency_note, "size_change": self.size_change,
                "compressed_size_change": self.compressed_size_change, "accuracy_change": self.accuracy_change,
                "same_model": self.same_model, "regressed": list(self.regressed), "cell": self.cell,
                "baseline_model_path": self.baseline_model_path, "current_model_path": self.current_model_path}


@dataclass(frozen=True, slots=True)
class Comparison:
    """This run against a baseline run: per-measurement ``rows``, the ``regressions``
    (the gate fails when there is one), ``refusals`` (metrics not compared, with the
    reason) and ``warnings`` (different machine, package versions, dirty checkout...)."""

    baseline_label: str
    current_label: str
    tolerances: tuple[Tolerance, ...]
    rows: tuple[RowComparison, ...]
    regressions: tuple[Regression, ...]
    refusals: tuple[Refusal, ...] = ()
    warnings: tuple[str, ...] = ()
    alpha: float = ALPHA
    noise: float = DEFAULT_NOISE
    noise_source: str = "default"
    #: Both runs used the same package versions and latency settings (an A/B re-measurement
    #: of the two model files then isolates the model's part of a change).
    same_runtime: bool = False

    @property
    def failed(self) -> bool:
        return bool(self.regressions)

    def row(self, model: str, variant: str, target: str, device: str | None = None) -> RowComparison | None:
        for r in self.rows:
            if r.key == (model, variant, target, device or "host"):
                return r
        return None

    def cell(self, model: str, variant: str, target: str, device: str | None = None) -> str:
        """The comparison column for a row of the terminal table ("" when not compared)."""
        r = self.row(model, variant, target, device)
        return r.cell if r else ""

    def lines(self) -> list[str]:
        """A readable report: header, regressions, refusals, warnings, and a count."""
        tol = ", ".join(map(str, self.tolerances)) or "none (compare only)"
        out = [f"compared with {self.baseline_label}: tolerances {tol}; latency test one-sided p < {self.alpha:g}, "
               f"between-run noise {100 * self.noise:.1f}% ({self.noise_source})"]
        out += [f"REGRESSION {r.message}" for r in self.regressions]
        out += [f"refused: {r.message}" for r in self.refusals]
        out += [f"warning: {w}" for w in self.warnings]
        compared = sum(r.status == "compared" for r in self.rows)
        other = {s: sum(r.status == s for r in self.rows) for s in ("new", "missing", "recipe changed")}
        extra = "".join(f", {n} {s}" for s, n in other.items() if n)
        out.append(f"{compared} measurements compared{extra}; "
                   + (f"{len(self.regressions)} regression{'s' if len(self.regressions) != 1 else ''}"
                      if self.regressions else "no regression"))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline_label, "current": self.current_label,
                "tolerances": [str(t) for t in self.tolerances], "alpha": self.alpha, "noise": self.noise,
                "noise_source": self.noise_source, "failed": self.failed,
                "regressions": [r.to_dict() for r in self.regressions],
                "refusals": [{"message": r.message, "metric": r.metric, "reason": r.reason} for r in self.refusals],
                "warnings": list(self.warnings), "rows": [r.to_dict() for r in self.rows]}


# -- the comparison -----------------------------------------------------------------------------
def run_label(doc: Mapping[str, Any], default: str = "this run") -> str:
    """``#7 main (2026-11-23 18:45 UTC, e998fe0, dirty)`` for a saved run, else ``default``
    with the document's creation time."""
    run = doc.get("run") or {}
    git = (doc.get("metadata") or {}).get("git") or {}
    commit = run.get("commit") or git.get("commit")
    dirty = run.get("dirty", git.get("dirty"))
    when = str(run.get("saved") or doc.get("created") or "")[:16].replace("T", " ")
    facts = [f for f in (when and f"{when} UTC", commit and commit[:7], dirty and "dirty") if f]
    if run.get("number") is not None:
        name = f"#{run['number']}" + (f" {run['name']}" if run.get("name") else "")
    else:
        name = default
    return f"{name} ({', '.join(facts)})" if facts else name


def _environment_warnings(base: Mapping[str, Any], cur: Mapping[str, Any]) -> list[str]:
    out = []
    bm, cm = base.get("metadata"), cur.get("metadata")
    for doc, m, which in ((base, bm, "the baseline"), (cur, cm, "this run")):
        if not m:
            out.append(f"{which} has no machine and package metadata (not a saved run): "
                       "cannot check that both ran on the same machine with the same packages")
    if bm and cm:
        fields = ("cpu_model", "cores", "arch", "os")
        b, c = bm.get("machine") or {}, cm.get("machine") or {}
        diff = [f"{f} {b.get(f)!r} vs {c.get(f)!r}" for f in fields if b.get(f) != c.get(f)]
        if diff:
            out.append(f"different machine ({'; '.join(diff)}): latency differences may be the machine's")
        bp = {"python": bm.get("python"), **(bm.get("packages") or {})}
        cp = {"python": cm.get("python"), **(cm.get("packages") or {})}
        pdiff = [f"{k} {bp.get(k)} -> {cp.get(k)}" for k in sorted(set(bp) | set(cp)) if bp.get(k) != cp.get(k)]
        if pdiff:
            out.append(f"different package versions: {', '.join(pdiff)}")
        for m, which in ((bm, "the baseline"), (cm, "this run")):
            if (m.get("git") or {}).get("dirty"):
                out.append(f"{which} was made from a checkout with uncommitted changes")
    else:
        # Plain --edgeopt-json documents still carry the environment.
        be, ce = base.get("environment") or {}, cur.get("environment") or {}
        if be and ce and (be.get("packages") != ce.get("packages") or be.get("python") != ce.get("python")):
            out.append("different package versions (see the documents' environment)")
    bl = ((base.get("settings") or {}).get("latency") or {})
    cl = ((cur.get("settings") or {}).get("latency") or {})
    ldiff = [f"{k} {bl.get(k)} vs {cl.get(k)}" for k in sorted(set(bl) | set(cl)) if bl.get(k) != cl.get(k)]
    if bl and cl and ldiff:
        out.append(f"different latency settings ({', '.join(ldiff)}): latencies are not like for like")
    return out


def _same_runtime(base: Mapping[str, Any], cur: Mapping[str, Any]) -> bool:
    bm, cm = base.get("metadata") or {}, cur.get("metadata") or {}
    if not bm or not cm:
        return False
    return (bm.get("packages") == cm.get("packages") and bm.get("python") == cm.get("python")
            and ((base.get("settings") or {}).get("latency") == (cur.get("settings") or {}).get("latency")))


def compare_runs(baseline: Mapping[str, Any], current: Mapping[str, Any],
                 tolerances: Iterable[str | Tolerance] = (), *, alpha: float = ALPHA,
                 noise: float | None = None, history: Sequence[Mapping[str, float]] | None = None,
                 judge_identical: bool = False, baseline_label: str | None = None,
                 current_label: str | None = None) -> Comparison:
    """Compare ``current`` with ``baseline`` (run documents: saved runs or ``--edgeopt-json``).

    ``tolerances``: strings or :class:`Tolerance` (``ValueError`` for malformed ones).
    ``noise``: the between-run noise of log p50; when ``None`` it is estimated from
    ``history`` (p50s of earlier runs of this machine, oldest first, see :func:`p50s_of`)
    or :data:`DEFAULT_NOISE`.
    """
    tols = parse_tolerances(tolerances)
    source = "given"
    if noise is None:
        estimated = estimate_noise(history or [])
        if estimated is not None:
            noise, source = estimated, f"estimated from {len(history or [])} earlier runs"
        else:
            noise, source = DEFAULT_NOISE, "default; save 3+ runs on this machine to estimate it"
    warnings = _environment_warnings(baseline, current)
    same_runtime = _same_runtime(baseline, current)
    base_obs, cur_obs = observations(baseline), observations(current)
    rows: list[RowComparison] = []
    regressions: list[Regression] = []
    refusals: list[Refusal] = []
    few: list[str] = []
    for key in sorted(set(base_obs) | set(cur_obs)):
        model, variant, target, device = key
        b, c = base_obs.get(key), cur_obs.get(key)
        if b is None or c is None:
            rows.append(RowComparison(*key, status="new" if b is None else "missing"))
            continue
        if (b.get("recipe") or {}) != (c.get("recipe") or {}):
            rows.append(RowComparison(*key, status="recipe changed"))
            refusals.append(Refusal(*key, "all", "the variant's recipe changed "
                                    f"({_recipe_diff(b.get('recipe') or {}, c.get('recipe') or {})})"))
            continue
        regressed: list[str] = []

        def check(metric: str, b_val: float, c_val: float, change: float, **test: Any) -> None:
            t = tols.get(metric)
            significant = test.pop("significant", True)
            exceeded = latency_exceeds(t, lat) if metric == "latency" and t else (t and t.exceeded(b_val, c_val))
            if t is not None and exceeded and significant:
                regressed.append(metric)
                regressions.append(Regression(*key, metric=metric, baseline=b_val, current=c_val, change=change,
                                              tolerance=str(t), **test))

        # sizes: exact
        size_change = c["size_bytes"] / b["size_bytes"] - 1.0
        check("size", float(b["size_bytes"]), float(c["size_bytes"]), size_change)
        csize_change = c["compressed_size_bytes"] / b["compressed_size_bytes"] - 1.0
        check("compressed_size", float(b["compressed_size_bytes"]), float(c["compressed_size_bytes"]), csize_change)
        # accuracy: exact, on the same eval data only
        acc_change = None
        ba, ca = b.get("accuracy"), c.get("accuracy")
        if ba and ca:
            if ba["metric"] != ca["metric"]:
                refusals.append(Refusal(*key, "accuracy", f"the metric changed ({ba['metric']} -> {ca['metric']})"))
            elif ba["samples"] != ca["samples"]:
                refusals.append(Refusal(*key, "accuracy", f"different eval data ({ba['samples']} vs "
                                        f"{ca['samples']} samples)"))
            else:
                acc_change = 100.0 * (ca["value"] - ba["value"])
                check("accuracy", float(ba["value"]), float(ca["value"]), acc_change)
        elif (ba or ca) and "accuracy" in tols:
            refusals.append(Refusal(*key, "accuracy", "only one run has an accuracy (eval data given in one run only)"))
        # latency: statistics on the raw samples
        ident_b, ident_c = _model_identity(b), _model_identity(c)
        same_model = (ident_b == ident_c) if ident_b and ident_c else None
        lat = None
        note = None
        bs, cs = (b.get("latency") or {}).get("samples_us"), (c.get("latency") or {}).get("samples_us")
        if bs and cs:
            lat = latency_change(bs, cs, noise=noise, alpha=alpha, noise_source=source)
            judged = True
            if same_model and same_runtime and not judge_identical:
                judged, note = False, "same model file and runtime as the baseline: not judged"
            elif min(len(bs), len(cs)) < 5:
                few.append(f"{model} {variant} on {_where(target, device)} ({len(bs)} and {len(cs)} samples)")
            t = tols.get("latency")
            if judged and t is not None:
                b_val, c_val = lat.baseline_p50_ms, lat.current_p50_ms
                check("latency", b_val, c_val, lat.change, significant=lat.p_value < alpha,
                      p_value=lat.p_value, interval=lat.interval, evidence="two runs")
        rows.append(RowComparison(*key, status="compared", latency=lat, latency_note=note, size_change=size_change,
                                  compressed_size_change=csize_change, accuracy_change=acc_change,
                                  same_model=same_model, regressed=tuple(regressed),
                                  baseline_model_path=b.get("model_path"), current_model_path=c.get("model_path")))
    missing = [r for r in rows if r.status == "missing"]
    if missing:
        names = ", ".join(f"{r.variant} on {_where(r.target, r.device)}" for r in missing[:8])
        warnings.append(f"{len(missing)} measurement(s) of the baseline are not in this run: {names}"
                        + (" ..." if len(missing) > 8 else ""))
    if few:
        warnings.append("latency judged on very few samples (each sample counts as one block): " + "; ".join(few[:5]))
    t = tols.get("latency")
    if t is not None and t.unit == "%":
        # The smallest slow-down the test can call significant with this noise.
        detectable = math.exp(_z(1 - alpha) * math.sqrt(2) * noise) - 1
        if detectable > t.amount / 100:
            warnings.append(f"between-run latency noise {100 * noise:.1f}% ({source}) lets the test call only "
                            f"slow-downs above about {100 * detectable:.0f}% significant; {t} cannot catch smaller ones")
    return Comparison(
        baseline_label=baseline_label or run_label(baseline, "the baseline"),
        current_label=current_label or run_label(current, "this run"),
        tolerances=tuple(tols.values()), rows=tuple(rows), regressions=tuple(regressions),
        refusals=tuple(refusals), warnings=tuple(warnings), alpha=alpha, noise=noise, noise_source=source,
        same_runtime=same_runtime,
    )


def _recipe_diff(b: Mapping[str, Any], c: Mapping[str, Any]) -> str:
    keys = sorted(set(b) | set(c))
    parts = [f"{k}: {b.get(k)!r} -> {c.get(k)!r}" for k in keys if b.get(k) != c.get(k)]
    return "; ".join(parts[:4]) + (" ..." if len(parts) > 4 else "")


# -- A/B re-measurement in one session -----------------------------------------------------------
#: Rounds of an A/B re-measurement (each: one window of each model, order alternating).
AB_ROUNDS = 12


def _sign_test(d: Sequence[float]) -> float:
    """One-sided exact sign test p-value of "the differences are positive" (zeros dropped)."""
    pos = sum(x > 0 for x in d)
    n = sum(x != 0 for x in d)
    if n == 0:
        return 1.0
    return sum(math.comb(n, i) for i in range(pos, n + 1)) / 2 ** n


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
            skipped.append(f"{row.variant} on {_where(row.target, row.device)}")
            continue
        if progress:
            progress(f"A/B re-measuring {row.model} {row.variant} on {_where(row.target, row.device)} "
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
