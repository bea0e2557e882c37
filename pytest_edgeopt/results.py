"""Typed results: latency statistics and the observation of one variant on one target.
Plain Python (numpy only). How they are saved (the run document and its schema version)
is :mod:`pytest_edgeopt.runs.record`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pytest_edgeopt.profile import Profile


@dataclass(frozen=True, slots=True)
class LatencyStats:
    """Steady-state latency samples of one model on one target, in microseconds.

    The statistics are derived from the raw samples (never typed in), so a saved
    measurement can be re-analysed later.
    """

    samples_us: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.samples_us:
            raise ValueError("LatencyStats needs at least one sample")

    @property
    def count(self) -> int:
        return len(self.samples_us)

    def percentile_ms(self, q: float) -> float:
        """The ``q``-th percentile (0-100) in milliseconds (linear interpolation)."""
        return float(np.percentile(np.asarray(self.samples_us), q)) / 1000.0

    @property
    def p50_ms(self) -> float:
        return self.percentile_ms(50)

    @property
    def p90_ms(self) -> float:
        return self.percentile_ms(90)

    @property
    def mean_ms(self) -> float:
        return float(np.mean(self.samples_us)) / 1000.0

    @property
    def min_ms(self) -> float:
        return float(min(self.samples_us)) / 1000.0

    @property
    def stdev_ms(self) -> float:
        """Sample standard deviation in ms (0 for a single sample)."""
        if self.count < 2:
            return 0.0
        return float(np.std(self.samples_us, ddof=1)) / 1000.0

    @property
    def cv(self) -> float:
        """Coefficient of variation (stdev / mean), unitless."""
        mean = self.mean_ms
        return self.stdev_ms / mean if mean > 0 else math.nan

    def summary(self) -> dict[str, float]:
        return {
            "count": self.count,
            "p50_ms": self.p50_ms,
            "p90_ms": self.p90_ms,
            "mean_ms": self.mean_ms,
            "stdev_ms": self.stdev_ms,
            "cv": self.cv,
            "min_ms": self.min_ms,
        }

    def to_dict(self) -> dict[str, Any]:
        return {"samples_us": list(self.samples_us), **self.summary()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LatencyStats:
        return cls(tuple(float(x) for x in d["samples_us"]))


@dataclass(frozen=True, slots=True)
class Accuracy:
    """The model's metric on the eval set (higher is better), and on how many samples."""

    metric: str
    value: float
    samples: int

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "value": self.value, "samples": self.samples}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Accuracy:
        return cls(metric=d["metric"], value=float(d["value"]), samples=int(d["samples"]))


@dataclass(frozen=True, slots=True)
class Observation:
    """What was measured of one variant on one target, before comparison with fp32.

    Sizes in bytes (``compressed_size_bytes`` is gzip level 9), ``accuracy`` is ``None``
    when the model has no eval data. ``extras`` carries target-specific facts
    (delegation outcome, memory footprint, Edge TPU analysis), JSON-serialisable.
    """

    model: str
    variant: str
    target: str
    device: Mapping[str, Any]
    size_bytes: int
    compressed_size_bytes: int
    latency: LatencyStats
    accuracy: Accuracy | None
    init_ms: float | None = None
    first_inference_ms: float | None = None
    build_seconds: float = 0.0
    from_cache: bool = False
    recipe: Mapping[str, Any] = field(default_factory=dict)
    extras: Mapping[str, Any] = field(default_factory=dict)
    profile: Profile | None = None

    @property
    def device_label(self) -> str:
        return self.device.get("label") or self.device.get("id") or "host"

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "variant": self.variant,
            "target": self.target,
            "device": dict(self.device),
            "size_bytes": self.size_bytes,
            "compressed_size_bytes": self.compressed_size_bytes,
            "latency": self.latency.to_dict(),
            "accuracy": self.accuracy.to_dict() if self.accuracy else None,
            "init_ms": self.init_ms,
            "first_inference_ms": self.first_inference_ms,
            "build_seconds": self.build_seconds,
            "from_cache": self.from_cache,
            "recipe": dict(self.recipe),
            "extras": dict(self.extras),
            "profile": self.profile.to_dict() if self.profile else None,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Observation:
        return cls(
            model=d["model"],
            variant=d["variant"],
            target=d["target"],
            device=dict(d["device"]),
            size_bytes=int(d["size_bytes"]),
            compressed_size_bytes=int(d["compressed_size_bytes"]),
            latency=LatencyStats.from_dict(d["latency"]),
            accuracy=Accuracy.from_dict(d["accuracy"]) if d.get("accuracy") else None,
            init_ms=d.get("init_ms"),
            first_inference_ms=d.get("first_inference_ms"),
            build_seconds=float(d.get("build_seconds", 0.0)),
            from_cache=bool(d.get("from_cache", False)),
            recipe=dict(d.get("recipe") or {}),
            extras=dict(d.get("extras") or {}),
            profile=Profile.from_dict(d["profile"]) if d.get("profile") else None,
        )
