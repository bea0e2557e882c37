"""Session records -> the lines printed at the end of a session: the variant x target table
(:func:`table_lines`) and the per-device section (:func:`device_lines`). Session records
and their rows are described in :mod:`pytest_edgeopt.runs.rows`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from pytest_edgeopt.labels import where as where_label
from pytest_edgeopt.runs.rows import merge, row_key, totals

if TYPE_CHECKING:  # pragma: no cover
    from pytest_edgeopt.runs.gate import Comparison


def kib(n: float | None) -> str:
    """Bytes as KiB with one decimal and thousands separators (empty for ``None``)."""
    return "" if n is None else f"{n / 1024:,.1f}"


def pct(x: float | None) -> str:
    """A fraction as a percentage with one decimal (empty for ``None``)."""
    return "" if x is None else f"{100 * x:.1f}%"


def table_lines(records: Iterable[Mapping[str, Any]], comparison: Comparison | None = None) -> list[str]:
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
    # "vs source": the drop against the model the user trained (the conversion check's source
    # model), shown when the run has one (not for a .tflite given alone).
    source = any(((row.get("measurement") or {}).get("derived") or {}).get("source_accuracy_drop") is not None
                 for row in rows)
    for row in rows:
        where = where_label(row.get("target"), row.get("device"))
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
            notes.append(f"  {row['variant']} on {where}: {_own_words(first_line(row['why']), row, where)}")
    if source:
        header.insert(10, "vs source")
        for cells, row in zip(body, rows):
            d = ((row.get("measurement") or {}).get("derived") or {})
            cells.insert(10, "" if d.get("source_accuracy_drop") is None else f"{d['source_accuracy_drop']:+.4f}")
    if comparison is not None:
        # "detects >=": the smallest slow-down the latency verdict could call significant.
        header += ["vs baseline run", "detects >="]
        for cells, row in zip(body, rows):
            ident = (row.get("model") or "", row["variant"], row.get("target") or "", row.get("device"))
            cells += [comparison.cell(*ident), comparison.detectable_cell(*ident)]
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]
    right = {3, 4, 5, 6, 7, 9} | ({10} if source else set()) | ({len(header) - 1} if comparison is not None else set())

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
    if source:
        lines.append("vs source = the source model's metric - variant metric (the model you trained, before conversion)")
    if comparison is not None:
        lines.append("detects >= = minimum detectable effect: the smallest latency slow-down this comparison "
                     f"calls significant (p < {comparison.alpha:g}) with its noise and sample counts")
    return lines


def _own_words(reason: str, row: Mapping[str, Any], where: str) -> str:
    """``reason`` without the item's name in front (skip and failure messages start with
    ``int8 on cpu:`` or ``digits-cnn int8:`` so they stand alone; the block names the item)."""
    variant, model = row["variant"], row.get("model") or ""
    for prefix in (f"{model} {variant} on {row.get('target')}: ", f"{variant} on {where}: ",
                   f"{variant} on {row.get('target')}: ", f"{model} {variant}: ", f"{variant}: "):
        if prefix.strip(": ") and reason.startswith(prefix):
            return reason[len(prefix):]
    return reason


def first_line(text: Any) -> str:
    """The first non-blank line of ``text`` (stripped; empty for nothing)."""
    stripped = str(text or "").strip()
    return stripped.splitlines()[0] if stripped else ""


def device_summary(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per device of the session (by label; ``(no T device)`` for a target that had none):
    its targets, how many items ``measured`` on it, ``failed`` and ``skipped``, the first
    line of each distinct failure and skip reason with its count, and the ``conditions``
    of its last measurement (:mod:`pytest_edgeopt.farm.health`)."""
    devices: dict[str, dict[str, Any]] = {}
    for r in sorted(records, key=lambda r: (row_key(r), r.get("test") or "")):
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
