"""Session records -> the terminal table and the ``--edgeopt-json`` file.

A *record* is a plain dict made per test item (it crosses from pytest-xdist workers to the
controller inside the test report): ``test`` (node id), ``outcome`` (passed, failed,
skipped), ``model``, ``variant``, ``target``, ``device``, ``reason`` (skip or failure
text), and ``measurement`` (``Measurement.to_dict()``, or ``None`` when nothing was measured).
"""

from __future__ import annotations

import datetime as _dt
import copy
import functools
import json
import platform
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping

from pytest_edgeopt.atomic import atomic_write_json
from pytest_edgeopt.versions import tool_versions
from pytest_edgeopt.results import SCHEMA_VERSION
from pytest_edgeopt.variants.registry import VARIANTS

_ORDER = {name: i for i, name in enumerate(VARIANTS)}


def _row_key(r: Mapping[str, Any]) -> tuple:
    return (r.get("model") or "", r.get("target") or "", r.get("device") or "",
            _ORDER.get(r.get("variant") or "", 999), r.get("variant") or "")


def merge(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (model, variant, target, device): the measurement, and ``result``
    ``PASS`` when every test of it passed, ``FAIL`` when one failed, ``SKIP`` with the
    reason when none measured it."""
    rows: dict[tuple, dict[str, Any]] = {}
    records = list(records)
    for r in records:
        # The fp32 baseline every measurement was compared with gets a row of its own.
        m = r.get("measurement")
        if m and m["variant"] != "fp32":
            b = m["baseline"]
            dev = b.get("device") or {}
            base = {"model": r.get("model"), "variant": "fp32", "target": b["target"],
                    "device": dev.get("label") or dev.get("id")}
            key = _row_key(base)
            if key not in rows:
                rows[key] = {**base, "tests": 0, "failed": 0, "skipped": 0, "baseline_only": True,
                             "measurement": {**m["baseline"], "derived": _baseline_derived(m["baseline"])}}
    for r in records:
        key = _row_key(r)
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


def _baseline_derived(b: Mapping[str, Any]) -> dict[str, Any]:
    """The derived figures of an fp32 baseline against itself."""
    acc = b.get("accuracy")
    lat = b["latency"]
    return {"size_bytes": b["size_bytes"], "compressed_size_bytes": b["compressed_size_bytes"], "size_reduction": 0.0,
            "p50_ms": lat["p50_ms"], "speedup": 1.0, "metric_name": acc and acc["metric"],
            "metric": acc and acc["value"], "accuracy_drop": 0.0 if acc else None,
            "from_cache": b.get("from_cache"), "build_seconds": b.get("build_seconds", 0.0)}


def totals(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts over the session: items per outcome, variants built vs taken from the cache
    (baselines included), and the build phase's wall time in seconds (summed over workers)."""
    records = list(records)
    seen: dict[tuple, bool] = {}
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
    return json.dumps(obj, sort_keys=True, default=str)


def kib(n: float | None) -> str:
    return "" if n is None else f"{n / 1024:,.1f}"


def pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.1f}%"


def table_lines(records: Iterable[Mapping[str, Any]], comparison: Any = None) -> list[str]:
    """The variant x target table printed at the end of the session; with a ``comparison``
    (:class:`pytest_edgeopt.runs.gate.Comparison`) a column of changes against the baseline run."""
    records = list(records)
    rows = merge(records)
    if not rows:
        return []
    header = ["model", "variant", "target", "size KiB", "gzip KiB", "size -", "p50 ms", "speedup",
              "metric", "drop", "build", "result"]
    body: list[list[str]] = []
    notes: list[str] = []
    for row in rows:
        where = row.get("target") or "-"
        if row.get("device") and row["device"] != "host":
            where = f"{where}/{row['device']}"
        m = row.get("measurement")
        if m:
            d = m["derived"]
            metric = "" if d["metric"] is None else f"{d['metric_name']} {d['metric']:.4f}"
            drop = "" if d["accuracy_drop"] is None else f"{d['accuracy_drop']:+.4f}"
            build = "cache" if d["from_cache"] else f"{d['build_seconds']:.1f}s"
            body.append([row["model"], row["variant"], where, kib(d["size_bytes"]), kib(d["compressed_size_bytes"]),
                         pct(d["size_reduction"]), f"{d['p50_ms']:.4f}", f"{d['speedup']:.2f}x", metric, drop,
                         build, row["result"]])
        elif row.get("built"):  # built but not measured (an optimized_model-only test)
            b = row["built"]
            build = "cache" if b["from_cache"] else f"{b['build_seconds']:.1f}s"
            body.append([row["model"], row["variant"], where, kib(b["size_bytes"]), kib(b["compressed_size_bytes"])]
                        + [""] * 5 + [build, row["result"]])
        else:
            body.append([row.get("model") or "-", row["variant"], where] + [""] * 8 + [row["result"]])
        if row["result"] not in ("PASS", "base") and row.get("why"):
            notes.append(f"  {row['variant']} on {where}: {first_line(row['why'])}")
    if comparison is not None:
        header.append("vs baseline run")
        for cells, row in zip(body, rows):
            cells.append(comparison.cell(row.get("model") or "", row["variant"], row.get("target") or "",
                                         row.get("device")))
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]
    right = {3, 4, 5, 6, 7, 9}

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    lines = [fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in body]
    if notes:
        lines += ["", "not passed:"] + notes
    t = totals(records)
    lines += ["", f"variants: {t['variants_built']} built, {t['variants_from_cache']} from the cache; "
              f"build phase {t['build_phase_s']:.2f} s"]
    if any(r["result"] == "base" for r in rows):
        lines.append("result 'base': the fp32 baseline the variants were compared with (no test of its own)")
    lines += ["size - = size reduction vs fp32; speedup = fp32 p50 / variant p50; drop = fp32 metric - variant metric"]
    return lines


def first_line(text: Any) -> str:
    stripped = str(text or "").strip()
    return stripped.splitlines()[0] if stripped else ""


def device_summary(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per device of the session (by label; ``(no T device)`` for a target that had none):
    its targets, how many items ``measured`` on it, ``failed`` and ``skipped``, the first
    line of each distinct failure and skip reason with its count, and the ``conditions``
    of its last measurement (:mod:`pytest_edgeopt.farm.health`)."""
    devices: dict[str, dict[str, Any]] = {}
    for r in sorted(records, key=lambda r: (_row_key(r), r.get("test") or "")):
        target = r.get("target")
        if not target:
            continue
        name = r.get("device") or f"(no {target} device)"
        d = devices.setdefault(name, {"device": name, "targets": [], "measured": 0, "failed": 0, "skipped": 0,
                                      "failures": {}, "skips": {}, "conditions": None})
        if target not in d["targets"]:
            d["targets"].append(target)
        m = r.get("measurement")
        if m:
            d["measured"] += 1
            d["conditions"] = (m.get("extras") or {}).get("conditions") or d["conditions"]
        if r["outcome"] in ("failed", "skipped"):
            d["failed" if r["outcome"] == "failed" else "skipped"] += 1
            reasons = d["failures" if r["outcome"] == "failed" else "skips"]
            what, why = f"{r.get('variant')} on {target}", first_line(r.get("reason")) or r["outcome"]
            line = why if what in why else f"{what}: {why}"  # failure reasons name both already
            reasons[line] = reasons.get(line, 0) + 1
    return [devices[k] for k in sorted(devices, key=lambda k: (k == "host", k))]


def device_lines(records: Iterable[Mapping[str, Any]], required: Iterable[str] = (),
                 max_reasons: int = 10) -> list[str]:
    """The ``edgeopt devices`` section: per device what was measured, what failed and why,
    what was skipped and why; then each required target no device measured. Empty when
    the session ran on the host CPU only."""
    from pytest_edgeopt.farm.health import describe

    records = list(records)
    summary = device_summary(records)
    if all(d["device"] == "host" for d in summary):
        return []
    width = max(len(d["device"]) for d in summary)
    lines = []
    for d in summary:
        line = (f"{d['device']:<{width}}  {','.join(d['targets'])}: measured {d['measured']}, "
                f"failed {d['failed']}, skipped {d['skipped']}")
        if d["conditions"]:
            line += f"; last conditions: {describe(d['conditions'])}"
        lines.append(line)
        for kind, reasons in (("failed", d["failures"]), ("skipped", d["skips"])):
            items = list(reasons.items())
            for text, n in items[:max_reasons]:
                lines.append(f"    {kind}: {text}" + (f" (x{n})" if n > 1 else ""))
            if len(items) > max_reasons:
                lines.append(f"    ... and {len(items) - max_reasons} more {kind} reasons (see the JSON)")
    for target in sorted(required):
        mine = [r for r in records if r.get("target") == target]
        if mine and not any(r.get("measurement") for r in mine):
            lines.append(f"required target {target}: no healthy device measured it (reasons above)")
    return lines


@functools.cache
def environment() -> dict[str, Any]:
    """Python, platform and package versions (recorded with every saved result)."""
    from importlib import metadata

    packages = dict(tool_versions())
    for dist in ("pytest", "pytest-edgeopt", "numpy"):
        try:
            packages[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            packages[dist] = None
    return {"python": sys.version.split()[0], "platform": platform.platform(), "machine": platform.machine(),
            "packages": packages}


def _recommend(records: list[Mapping[str, Any]]) -> list:
    from pytest_edgeopt.runs.recommend import recommend  # recommend builds on merge() above

    return recommend(records)


def document(records: list[Mapping[str, Any]], settings: Mapping[str, Any]) -> dict[str, Any]:
    """The session as one JSON-ready document (what ``--edgeopt-json``, saved runs and the
    HTML report hold)."""
    return {
        "schema": SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "settings": dict(settings),
        "environment": copy.deepcopy(environment()),
        "totals": totals(records),
        "recommendations": [r.to_dict() for r in _recommend(records)],
        "measurements": sorted(records, key=lambda r: (_row_key(r), r["test"])),
    }


def write_json(path: Path, doc: Mapping[str, Any]) -> None:
    """The document, atomically (readers never see a half-written file)."""
    atomic_write_json(Path(path), doc, compact=True)
