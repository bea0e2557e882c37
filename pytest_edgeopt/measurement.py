"""Measurement: one variant on one target, compared with fp32 on the same target.

What the ``measurement`` fixture returns. Ratios are derived from the two observations,
never stored separately, so they cannot disagree with the raw figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_edgeopt.budgets import rules as _budgets
from pytest_edgeopt.fidelity import Fidelity
from pytest_edgeopt.results import Accuracy, LatencyStats, Observation


@dataclass(frozen=True, slots=True)
class BudgetOutcome:
    """One ``check`` call: the budgets asked and those missed."""

    budgets: dict[str, Any]
    violations: tuple[_budgets.Violation, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"budgets": dict(self.budgets), "violations": [v.to_dict() for v in self.violations],
                "passed": not self.violations}


@dataclass(slots=True)
class Measurement:
    """A variant's :class:`Observation` and the fp32 baseline's on the same target.

    Sizes in bytes, latency in ms, ``size_reduction`` as a fraction of fp32's size
    (0.75 = a quarter of the size), ``speedup`` as fp32 p50 / variant p50, and
    ``accuracy_drop`` as fp32 metric minus variant metric (positive = worse), and
    ``source_accuracy_drop`` the same against the source model the fp32 was converted from
    (``fidelity``: the conversion check, when made).
    """

    observation: Observation
    baseline: Observation
    outcomes: list[BudgetOutcome] = field(default_factory=list)
    #: The variant's ``.tflite`` (for analyses made on demand, e.g. Edge TPU compatibility).
    model_path: Path | None = None
    #: The fp32 ``.tflite`` compared with the source model (None: not checked, e.g. a
    #: ``.tflite`` source or no eval data): the source model's metric and max |d|.
    fidelity: Fidelity | None = None

    def __repr__(self) -> str:
        metric = "" if self.metric is None else f", {self.metric_name} {self.metric:.3f}"
        return (f"Measurement({self.variant} on {self.where}: {self.size_bytes:,} B, "
                f"p50 {self.latency.p50_ms:.4g} ms{metric})")

    # -- identity -----------------------------------------------------------------
    @property
    def variant(self) -> str:
        return self.observation.variant

    @property
    def target(self) -> str:
        return self.observation.target

    @property
    def model(self) -> str:
        return self.observation.model

    @property
    def where(self) -> str:
        """``cpu``, or ``android_gpu/SERIAL`` for a target with devices."""
        from pytest_edgeopt.labels import where

        return where(self.target, self.observation.device.get("label"))

    # -- figures --------------------------------------------------------------------
    @property
    def size_bytes(self) -> int:
        return self.observation.size_bytes

    @property
    def compressed_size_bytes(self) -> int:
        return self.observation.compressed_size_bytes

    @property
    def size_reduction(self) -> float:
        return 1.0 - self.size_bytes / self.baseline.size_bytes

    @property
    def compressed_size_reduction(self) -> float:
        return 1.0 - self.compressed_size_bytes / self.baseline.compressed_size_bytes

    @property
    def latency(self) -> LatencyStats:
        return self.observation.latency

    @property
    def speedup(self) -> float:
        return self.baseline.latency.p50_ms / self.latency.p50_ms

    @property
    def accuracy(self) -> Accuracy | None:
        return self.observation.accuracy

    @property
    def metric(self) -> float | None:
        return self.observation.accuracy.value if self.observation.accuracy else None

    @property
    def metric_name(self) -> str | None:
        return self.observation.accuracy.metric if self.observation.accuracy else None

    @property
    def accuracy_drop(self) -> float | None:
        if self.observation.accuracy is None or self.baseline.accuracy is None:
            return None
        return self.baseline.accuracy.value - self.observation.accuracy.value

    @property
    def source_metric(self) -> float | None:
        """The metric of the source model (Keras, SavedModel) on the eval set, from the
        conversion-fidelity check; None when not checked."""
        return None if self.fidelity is None else self.fidelity.source_metric

    @property
    def source_accuracy_drop(self) -> float | None:
        """Source model metric minus variant metric (positive = worse than the model trained)."""
        if self.source_metric is None or self.metric is None:
            return None
        return self.source_metric - self.metric

    @property
    def extras(self) -> dict[str, Any]:
        return dict(self.observation.extras)

    @property
    def edgetpu_op_fraction(self) -> float | None:
        """Fraction (0..1) of the model's ops that would run on an Edge TPU: from the Edge
        TPU target's analysis, or analysed from the file on any other target."""
        analysis = self.observation.extras.get("edgetpu_analysis")
        if analysis and analysis.get("edgetpu_op_fraction") is not None:
            return float(analysis["edgetpu_op_fraction"])
        if self.model_path is None:
            return None
        from pytest_edgeopt.targets.edgetpu.compat import edgetpu_op_fraction

        return edgetpu_op_fraction(self.model_path)

    @property
    def delegation(self) -> str | None:
        """GPU delegation outcome on Android (``full``, ``partial``, ``none``), else None."""
        return self.observation.extras.get("delegation")

    # -- budgets ----------------------------------------------------------------------
    def violations(self, **budgets: Any) -> list[_budgets.Violation]:
        """The budgets missed, without raising (records the outcome)."""
        found = _budgets.violations(self, budgets)
        self.outcomes.append(BudgetOutcome(dict(budgets), tuple(found)))
        return found

    def check(self, **budgets: Any) -> Measurement:
        """Assert the budgets (keywords: :data:`pytest_edgeopt.budgets.rules.RULES`).

        Raises :class:`~pytest_edgeopt.budgets.rules.BudgetExceeded` listing every budget
        missed, or :class:`~pytest_edgeopt.budgets.rules.BudgetError` for a malformed one.
        """
        __tracebackhide__ = True
        found = self.violations(**budgets)
        if found:
            raise _budgets.BudgetExceeded(found)
        return self

    @property
    def passed(self) -> bool:
        return all(not o.violations for o in self.outcomes)

    # -- serialisation -------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """The derived figures, flat (what tables and JSON show)."""
        lat = self.latency
        return {
            "model": self.model,
            "variant": self.variant,
            "target": self.target,
            "device": self.observation.device_label,
            "size_bytes": self.size_bytes,
            "compressed_size_bytes": self.compressed_size_bytes,
            "size_reduction": self.size_reduction,
            "compressed_size_reduction": self.compressed_size_reduction,
            "p50_ms": lat.p50_ms,
            "p90_ms": lat.p90_ms,
            "mean_ms": lat.mean_ms,
            "stdev_ms": lat.stdev_ms,
            "cv": lat.cv,
            "samples": lat.count,
            "speedup": self.speedup,
            "metric_name": self.metric_name,
            "metric": self.metric,
            "accuracy_drop": self.accuracy_drop,
            "source_metric": self.source_metric,
            "source_accuracy_drop": self.source_accuracy_drop,
            "fidelity_max_abs_diff": None if self.fidelity is None else self.fidelity.max_abs_diff,
            "from_cache": self.observation.from_cache,
            "build_seconds": self.observation.build_seconds,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.observation.to_dict(),
            "baseline": self.baseline.to_dict(),
            "derived": self.summary(),
            "budget_checks": [o.to_dict() for o in self.outcomes],
            "model_path": str(self.model_path) if self.model_path else None,
            "fidelity": None if self.fidelity is None else self.fidelity.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Measurement:
        outcomes = [
            BudgetOutcome(o["budgets"], tuple(_budgets.Violation(**v) for v in o["violations"]))
            for o in d.get("budget_checks", [])
        ]
        return cls(Observation.from_dict(d), Observation.from_dict(d["baseline"]), outcomes,
                   Path(d["model_path"]) if d.get("model_path") else None,
                   Fidelity.from_dict(d["fidelity"]) if d.get("fidelity") else None)
