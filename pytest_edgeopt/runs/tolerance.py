"""Regression tolerances of the baseline gate: ``METRIC:AMOUNT UNIT`` expressions
(``latency:5%``, ``latency:0.2ms``, ``size:1%``, ``compressed_size:512B``, ``accuracy:0.5pt``)
parsed into :class:`Tolerance`. A metric without a tolerance is compared and shown but never
fails the gate (:mod:`pytest_edgeopt.runs.gate`)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterable

METRICS = ("latency", "size", "compressed_size", "accuracy")
UNITS = {"latency": ("%", "ms", "us"), "size": ("%", "B"), "compressed_size": ("%", "B"), "accuracy": ("pt",)}
_GRAMMAR = ("METRIC:AMOUNT[UNIT] with METRIC:UNITS latency:% ms us, size:% B, compressed_size:% B, accuracy:pt "
            "(percentage points of the metric); e.g. latency:5%, latency:0.2ms, size:1%, compressed_size:1%, "
            "accuracy:0.5pt")
_EXPR_RE = re.compile(r"^\s*([a-z_]+)\s*:\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-zA-Z%]*)\s*$")


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
