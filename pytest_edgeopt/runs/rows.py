"""Session records -> one row per (model, variant, target, device), and the session's totals.

A *session record* is a plain dict made per test item (it crosses from pytest-xdist workers
to the controller inside the test report); its keys are those of
:class:`pytest_edgeopt.runs.record.TestRecord`: ``test`` (node id), ``outcome`` (passed,
failed, skipped), ``model``, ``variant``, ``target``, ``device``, ``reason`` (skip or
failure text), ``built`` and ``measurement`` (``Measurement.to_dict()``, or ``None`` when
nothing was measured). The terminal table, the HTML report and the recommendation all
show :func:`merge`'s rows, so they show the same figures.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from pytest_edgeopt.variants.registry import VARIANTS

_ORDER = {name: i for i, name in enumerate(VARIANTS)}

#: A row's sort key: model, target, device, the variant's place in the registry, variant.
RowKey = tuple[str, str, str, int, str]


def row_key(r: Mapping[str, Any]) -> RowKey:
    """Where a record's row sorts: by model, target, device, then registry order of variants."""
    return (r.get("model") or "", r.get("target") or "", r.get("device") or "",
            _ORDER.get(r.get("variant") or "", 999), r.get("variant") or "")


def merge(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (model, variant, target, device): the measurement, and ``result``
    ``PASS`` when every test of it passed, ``FAIL`` when one failed, ``SKIP`` with the
    reason when none measured it."""
    rows: dict[RowKey, dict[str, Any]] = {}
    records = list(records)
    for r in records:
        # The fp32 baseline every measurement was compared with gets a row of its own.
        m = r.get("measurement")
        if m and m["variant"] != "fp32":
            b = m["baseline"]
            dev = b.get("device") or {}
            base = {"model": r.get("model"), "variant": "fp32", "target": b["target"],
                    "device": dev.get("label") or dev.get("id")}
            key = row_key(base)
            if key not in rows:
                rows[key] = {**base, "tests": 0, "failed": 0, "skipped": 0, "baseline_only": True,
                             "measurement": {**m["baseline"], "derived": _baseline_derived(m["baseline"], m.get("derived"))}}
    for r in records:
        key = row_key(r)
        row = rows.setdefault(key, {**r, "tests": 0, "failed": 0, "skipped": 0})
        row.pop("baseline_only", None)
        row["tests"] += 1
        row["failed"] += r["outcome"] == "failed"
        row["skipped"] += r["outcome"] == "skipped"
        if r.get("measurement") and not row.get("measurement"):
            row["measurement"] = r["measurement"]
        if r["outcome"] != "passed" and r.get("reason") and not row.get("why"):
            row["why"] = r["reason"]
    out = []
    for key in sorted(rows):
        row = rows[key]
        if row.get("baseline_only"):
            row["result"] = "base"
        else:
            row["result"] = "FAIL" if row["failed"] else ("SKIP" if row["skipped"] == row["tests"] else "PASS")
        out.append(row)
    return out


def _baseline_derived(b: Mapping[str, Any], variant: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The derived figures of an fp32 baseline against itself; with a ``variant``'s derived
    figures, also its drop against the source model (the conversion check's metric)."""
    acc = b.get("accuracy")
    lat = b["latency"]
    source = (variant or {}).get("source_metric")
    return {"size_bytes": b["size_bytes"], "compressed_size_bytes": b["compressed_size_bytes"], "size_reduction": 0.0,
            "p50_ms": lat["p50_ms"], "speedup": 1.0, "metric_name": acc and acc["metric"],
            "metric": acc and acc["value"], "accuracy_drop": 0.0 if acc else None,
            "source_metric": source,
            "source_accuracy_drop": None if source is None or not acc else source - acc["value"],
            "from_cache": b.get("from_cache"), "build_seconds": b.get("build_seconds", 0.0)}


def totals(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts over the session: items per outcome, variants built vs taken from the cache
    (baselines included), and the build phase's wall time in seconds (summed over workers)."""
    records = list(records)
    seen: dict[tuple[Any, ...], bool] = {}
    for r in records:
        m = r.get("measurement")
        if m:
            for o in (m, m["baseline"]):
                seen[(o["model"], o["variant"], json_key(o.get("recipe")))] = bool(o["from_cache"])
        elif r.get("built"):
            seen[(r.get("model"), r["variant"], json_key(r["built"].get("recipe")))] = bool(r["built"]["from_cache"])
    return {
        "items": len(records),
        "passed": sum(r["outcome"] == "passed" for r in records),
        "failed": sum(r["outcome"] == "failed" for r in records),
        "skipped": sum(r["outcome"] == "skipped" for r in records),
        "variants_built": sum(not hit for hit in seen.values()),
        "variants_from_cache": sum(seen.values()),
        "build_phase_s": sum(float(r.get("build_wall_s") or 0.0) for r in records),
    }


def json_key(obj: Any) -> str:
    """A canonical JSON text of ``obj`` (sorted keys): a hashable identity of a recipe."""
    return json.dumps(obj, sort_keys=True, default=str)


def sorted_records(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Records in table order (then by test id): the order of a document's ``measurements``."""
    return sorted(records, key=lambda r: (row_key(r), r.get("test") or ""))
