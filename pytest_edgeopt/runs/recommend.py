"""Which variant to ship: per model and target (device), the variants that met every
budget, and among them the smallest and the fastest, with the accuracy each keeps.

This turns the decision tree of TensorFlow's optimization guide (post-training
quantization first; quantization-aware training when accuracy or latency fall short;
pruning or clustering to shrink the download) into a measured answer. Plain Python over
session records (see :mod:`pytest_edgeopt.runs.rows`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pytest_edgeopt.labels import where
from pytest_edgeopt.runs.rows import merge


@dataclass(frozen=True, slots=True)
class Choice:
    """One variant's figures: sizes in bytes, p50 latency in ms, metric and drop vs fp32."""

    variant: str
    size_bytes: int
    compressed_size_bytes: int
    p50_ms: float
    metric_name: str | None
    metric: float | None
    accuracy_drop: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"variant": self.variant, "size_bytes": self.size_bytes,
                "compressed_size_bytes": self.compressed_size_bytes, "p50_ms": self.p50_ms,
                "metric_name": self.metric_name, "metric": self.metric, "accuracy_drop": self.accuracy_drop}

    def describe(self) -> str:
        acc = "" if self.metric is None else f", {self.metric_name} {self.metric:.4f} (drop {self.accuracy_drop:+.4f})"
        return f"{self.variant} ({self.size_bytes:,} B, gzip {self.compressed_size_bytes:,} B, p50 {self.p50_ms:.4g} ms{acc})"


@dataclass(frozen=True, slots=True)
class Recommendation:
    """For one model on one target/device: the variants that passed (``passing``, smallest
    first), the smallest by file size, by download (gzip) size, and the fastest by p50.
    ``None`` fields mean no variant passed."""

    model: str
    target: str
    device: str | None
    passing: tuple[Choice, ...]
    failing: tuple[str, ...]
    smallest: Choice | None
    smallest_download: Choice | None
    fastest: Choice | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "target": self.target, "device": self.device,
            "passing": [c.to_dict() for c in self.passing], "failing": list(self.failing),
            "smallest": self.smallest.to_dict() if self.smallest else None,
            "smallest_download": self.smallest_download.to_dict() if self.smallest_download else None,
            "fastest": self.fastest.to_dict() if self.fastest else None,
        }

    def lines(self) -> list[str]:
        head = f"{self.model} on {where(self.target, self.device)}: "
        if not self.passing:
            return [head + f"no variant met its budgets ({len(self.failing)} failed)"]
        out = [head + f"{len(self.passing)} variant(s) met every budget: {', '.join(c.variant for c in self.passing)}"]
        out.append(f"  smallest file:     {self.smallest.describe()}")  # type: ignore[union-attr]
        if self.smallest_download and self.smallest_download.variant != self.smallest.variant:  # type: ignore[union-attr]
            out.append(f"  smallest download: {self.smallest_download.describe()}")
        out.append(f"  fastest:           {self.fastest.describe()}")  # type: ignore[union-attr]
        return out


def _choice(row: Mapping[str, Any]) -> Choice:
    d = row["measurement"]["derived"]
    return Choice(row["variant"], int(d["size_bytes"]), int(d["compressed_size_bytes"]), float(d["p50_ms"]),
                  d.get("metric_name"), d.get("metric"), d.get("accuracy_drop"))


def recommend(records: Iterable[Mapping[str, Any]]) -> list[Recommendation]:
    """Recommendations from session records (one per model and target/device measured).

    A variant passes when every test that measured it on that target passed; the fp32
    baseline is a candidate like the others (when nothing beats it, ship it).
    """
    groups: dict[tuple[str, str, str | None], dict[str, list[Any]]] = {}
    for row in merge(records):
        if not row.get("measurement") or row["result"] == "base":
            continue
        key = (row["model"], row["target"], row.get("device"))
        g = groups.setdefault(key, {"passing": [], "failing": []})
        if row["result"] == "PASS":
            g["passing"].append(_choice(row))
        elif row["result"] == "FAIL":
            g["failing"].append(row["variant"])
    out = []
    for (model, target, device), g in sorted(groups.items(), key=lambda kv: tuple(str(k) for k in kv[0])):
        passing = sorted(g["passing"], key=lambda c: (c.size_bytes, c.p50_ms))
        out.append(Recommendation(
            model=model, target=target, device=device, passing=tuple(passing), failing=tuple(g["failing"]),
            smallest=passing[0] if passing else None,
            smallest_download=min(passing, key=lambda c: (c.compressed_size_bytes, c.p50_ms)) if passing else None,
            fastest=min(passing, key=lambda c: (c.p50_ms, c.size_bytes)) if passing else None,
        ))
    return out


def recommendation_lines(records: Iterable[Mapping[str, Any]]) -> list[str]:
    """The ``edgeopt recommendation`` section: :meth:`Recommendation.lines` of each."""
    lines: list[str] = []
    for rec in recommend(records):
        lines += rec.lines()
    return lines
