"""Regression tolerances of the baseline gate: ``METRIC:AMOUNT UNIT`` expressions
(``latency:5%``, ``latency:0.2ms``, ``size:1%``, ``compressed_size:512B``, ``accuracy:0.5pt``)
parsed into :class:`Tolerance`. A metric without a tolerance is compared and shown but never
fails the gate (:mod:`pytest_edgeopt.runs.gate`).

A latency tolerance may end in ``,strict`` (``latency:5%,strict``): when the run's noise
lets it detect only slow-downs larger than the tolerance, the session fails instead of
warning that the tolerance cannot be judged.

Two metrics judge an accelerator's behaviour rather than "worse" (:mod:`pytest_edgeopt.runs.explain`):
``faster:20%`` fails the gate when a variant got significantly faster than that on an accelerator
target (a changed delegate or skipped work; a warning above 10% without it), and
``placement:2ops`` lets up to that many more ops fall off the accelerator (default ``placement:0ops``
whenever the gate has a tolerance)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

METRICS = ("latency", "size", "compressed_size", "accuracy", "faster", "placement")
UNITS = {"latency": ("%", "ms", "us"), "size": ("%", "B"), "compressed_size": ("%", "B"), "accuracy": ("pt",),
         "faster": ("%",), "placement": ("ops",)}
_GRAMMAR = ("METRIC:AMOUNT[UNIT][,strict] with METRIC:UNITS latency:% ms us, size:% B, compressed_size:% B, accuracy:pt "
            "(percentage points of the metric), faster:% (an accelerator row got that much faster), placement:ops "
            "(more ops off the accelerator); e.g. latency:5%, latency:0.2ms, size:1%, compressed_size:1%, "
            "accuracy:0.5pt, latency:5%,strict, faster:20%, placement:0ops")
_EXPR_RE = re.compile(r"^\s*([a-z_]+)\s*:\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-zA-Z%]*)\s*"
                      r"(?:,\s*([a-z]+)\s*)?$")
#: Flags a tolerance may end with (``latency:5%,strict``), by metric.
FLAGS = {"latency": ("strict",)}


@dataclass(frozen=True, slots=True)
class Tolerance:
    """How much worse ``metric`` may get: ``amount`` in ``unit`` (``%`` of the baseline,
    ``ms``/``us`` of p50 latency, ``B`` of size, ``pt`` = hundredths of the accuracy metric,
    ``ops`` more ops off the accelerator); for ``faster``, how much faster (``%`` of the
    baseline p50) an accelerator row may get.
    ``strict`` (latency only): a run too noisy to judge the tolerance fails the gate."""

    metric: str
    amount: float
    unit: str
    strict: bool = False

    def __str__(self) -> str:
        return f"{self.metric}:{self.amount:g}{self.unit}" + (",strict" if self.strict else "")

    def exceeded(self, baseline: float, current: float) -> bool:
        """Whether ``current`` is worse than ``baseline`` by more than the tolerance (larger is
        worse for latency, sizes and ops off the accelerator, smaller for accuracy; for
        ``faster``, a p50 below the baseline's by more than the tolerance)."""
        if self.metric == "accuracy":
            return (baseline - current) * 100.0 > self.amount + 1e-9
        if self.metric == "faster":
            return current < baseline * (1.0 - self.amount / 100.0) * (1 - 1e-12)
        if self.unit == "%":
            return current > baseline * (1.0 + self.amount / 100.0) * (1 + 1e-12)
        scale = {"ms": 1.0, "us": 1e-3, "B": 1.0, "ops": 1.0}[self.unit]
        return current - baseline > self.amount * scale * (1 + 1e-12)


def parse_tolerance(expr: str) -> Tolerance:
    """``latency:5%`` -> ``Tolerance("latency", 5.0, "%")``; ``ValueError`` explaining the
    grammar for anything malformed (unknown metric, unit, or a negative amount)."""
    m = _EXPR_RE.match(str(expr))
    if not m:
        raise ValueError(f"malformed tolerance {expr!r}: expected {_GRAMMAR}")
    metric, amount, unit, flag = m[1], float(m[2]), m[3], m[4]
    if metric not in UNITS:
        raise ValueError(f"unknown metric {metric!r} in tolerance {expr!r}: expected {_GRAMMAR}")
    if unit not in UNITS[metric]:
        raise ValueError(f"tolerance {expr!r}: {metric} takes the unit {' or '.join(UNITS[metric])}, "
                         f"got {unit or 'none'!r}; expected {_GRAMMAR}")
    if not math.isfinite(amount):
        raise ValueError(f"tolerance {expr!r}: the amount must be a finite number")
    if metric == "faster" and amount >= 100:
        raise ValueError(f"tolerance {expr!r}: a variant cannot get 100% faster or more; give less than 100%")
    if flag and flag not in FLAGS.get(metric, ()):
        raise ValueError(f"tolerance {expr!r}: unknown flag {flag!r}"
                         + (f"; {metric} takes {', '.join(FLAGS[metric])}" if metric in FLAGS else
                            "; only latency takes one") + f"; expected {_GRAMMAR}")
    return Tolerance(metric, amount, unit, strict=flag == "strict")


def parse_tolerances(exprs: Iterable[str | Tolerance]) -> dict[str, Tolerance]:
    """Tolerances by metric; ``ValueError`` for a malformed one or a metric given twice."""
    out: dict[str, Tolerance] = {}
    for e in exprs:
        t = e if isinstance(e, Tolerance) else parse_tolerance(e)
        if t.metric in out:
            raise ValueError(f"two tolerances for {t.metric}: {out[t.metric]} and {t}; give one")
        out[t.metric] = t
    return out
