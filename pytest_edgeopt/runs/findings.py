"""What the baseline gate found on one measurement: a :class:`Regression` (a metric beyond
its tolerance: the gate fails) or a :class:`Refusal` (a metric that was not compared, and
why). Plain values; :mod:`pytest_edgeopt.runs.gate` makes them (and re-exports both)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pytest_edgeopt.labels import where
from pytest_edgeopt.runs.noise import p_text


def ms_text(x: float) -> str:
    """``3.66 us`` below 0.1 ms, else ``1.234 ms`` (``x`` in ms)."""
    return f"{x * 1000:.4g} us" if abs(x) < 0.1 else f"{x:.4g} ms"


@dataclass(frozen=True, slots=True)
class Regression:
    """One metric of one measurement that got worse beyond its tolerance.

    ``baseline``/``current`` in the metric's unit (``ms`` p50 for ``latency`` and
    ``faster``, ``B``, the accuracy metric, or ops off the accelerator for ``placement``),
    ``change`` relative (latency, faster, sizes), in points (accuracy) or in ops that fell
    back (placement); ``p_value`` and ``interval`` (ratio, low/high) for latency, ``None``
    otherwise. ``detail``: what explains it, when the runs recorded profiles (the ops whose
    time grew most, the ops that fell off the accelerator; :mod:`pytest_edgeopt.runs.explain`)."""

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
    detail: str | None = None

    @property
    def message(self) -> str:
        head = f"{self.model} {self.variant} on {where(self.target, self.device)}: {self.metric}"
        tail = f"; {self.detail}" if self.detail else ""
        if self.metric in ("latency", "faster"):
            lo, hi = self.interval or (math.nan, math.nan)
            stats = (f"{p_text(self.p_value or 0.0)}, " if self.metric == "latency" else "") + (
                f"interval {100 * (lo - 1):+.1f}%..{100 * (hi - 1):+.1f}%")
            verdict = (f"exceeds {self.tolerance}" if self.metric == "latency" else
                       f"faster than {self.tolerance} allows on an accelerator (a changed delegate or skipped work?)")
            return (f"{head} p50 {ms_text(self.baseline)} -> {ms_text(self.current)} ({100 * self.change:+.1f}%, "
                    f"{stats}{'; ' + self.evidence if self.evidence else ''}) {verdict}{tail}")
        if self.metric == "placement":
            return f"{head} {self.change:g} more op(s) off the accelerator exceeds {self.tolerance}{tail}"
        if self.metric == "accuracy":
            return (f"{head} {self.baseline:.4f} -> {self.current:.4f} ({self.change:+.2f} pt) exceeds "
                    f"{self.tolerance}{tail}")
        return (f"{head} {self.baseline:,.0f} B -> {self.current:,.0f} B ({100 * self.change:+.2f}%) "
                f"exceeds {self.tolerance}{tail}")

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "variant": self.variant, "target": self.target, "device": self.device,
                "metric": self.metric, "baseline": self.baseline, "current": self.current, "change": self.change,
                "tolerance": self.tolerance, "p_value": self.p_value,
                "interval": list(self.interval) if self.interval else None, "evidence": self.evidence,
                "detail": self.detail, "message": self.message}


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
        return f"{self.model} {self.variant} on {where(self.target, self.device)}: {what}: {self.reason}"
