"""The HTML report's profile section: what each variant cost besides steady-state latency.

* lifecycle bars per variant and target: load/init, first inference, warm-up mean and p50
  (:func:`pytest_edgeopt.runs.charts.lifecycle_png`);
* a table per variant and target: those times, the peak memory of loading and running (and
  how it was measured), where the ops ran (on the delegate / Edge TPU, partitions, what fell
  back to the CPU) and the Edge TPU compiler's on-chip / off-chip parameter memory;
* the slowest ops of every variant with a per-op profile (Android ``--enable_op_profiling``),
  with the baseline run's time of the same op and the change when a baseline run is given.

Every figure comes from the run document (``measurement["profile"]``, see
:class:`pytest_edgeopt.profile.Profile`).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

from pytest_edgeopt.runs.charts import lifecycle_png, row_where

#: Ops shown per variant in the per-op table.
TOP_OPS = 10

#: (model, variant, target, device) of a row: how a row finds its baseline run's row.
RowId = tuple[str, str, str, str]


def row_id(r: Mapping[str, Any]) -> RowId:
    return (str(r.get("model") or "-"), str(r.get("variant")), str(r.get("target")), str(r.get("device") or ""))


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _num(x: Any, digits: int = 4) -> str:
    if x is None or not isinstance(x, (int, float)) or not math.isfinite(x):
        return ""
    if x == 0:
        return "0"
    return f"{x:.{max(0, digits - 1 - math.floor(math.log10(abs(x))))}f}"


def _bytes(x: Any) -> str:
    return "" if x is None else f"{int(x):,}"


def _placement(p: Mapping[str, Any] | None) -> str:
    pl = (p or {}).get("placement")
    if not pl:
        return ""
    text = f"{pl['delegated_nodes']} of {pl['total_nodes']} on {pl.get('delegate') or 'delegate'}, {pl['partitions']} part."
    fallback = pl.get("fallback") or []
    if fallback:
        names = ", ".join(f"{op} #{i}" if i >= 0 else str(op) for i, op in fallback[:4])
        text += f"; CPU: {names}" + (f" +{len(fallback) - 4}" if len(fallback) > 4 else "")
    return text


def _has_profile(m: Mapping[str, Any]) -> bool:
    return bool(m.get("profile")) or m.get("init_ms") is not None or m.get("first_inference_ms") is not None


def profile_section(rows: Sequence[Mapping[str, Any]], models: Sequence[str],
                    baseline: Mapping[RowId, Mapping[str, Any]] | None = None, baseline_name: str | None = None) -> str:
    """The section's HTML; ``""`` when no row has lifecycle or profile figures. ``baseline``
    maps a row id to the baseline run's measurement (for the per-op diff)."""
    rows = [r for r in rows if r.get("measurement") and _has_profile(r["measurement"])]
    if not rows:
        return ""
    out = ['<section id="profile">', "<h2>Load, memory, placement and per-op time</h2>"]
    for model in models:
        mrows = [r for r in rows if str(r.get("model") or "-") == model]
        if not mrows:
            continue
        if len(models) > 1:
            out.append(f"<h3>{_e(model)}</h3>")
        img, log = lifecycle_png([dict(r) for r in mrows], model)
        out.append(f"<figure>{img}<figcaption>Per variant and target: the model's load (interpreter creation, "
                   "delegate set-up), its first inference (on an accelerator it loads the parameters), the mean of "
                   "the warm-up inferences and the steady-state median."
                   + (" The axis is logarithmic." if log else "") + "</figcaption></figure>")
        out.append(_table(mrows))
        out.append(_ops(mrows, baseline or {}, baseline_name))
    out.append("</section>")
    return "\n".join(out)


def _table(rows: Sequence[Mapping[str, Any]]) -> str:
    head = ("variant", "target", "init ms", "first ms", "warm-up ms", "p50 ms", "peak MiB", "placement",
            "Edge TPU on-chip B", "off-chip B")
    out = ['<div class="table-wrap"><table class="profile"><thead><tr>',
           "".join(f"<th>{h}</th>" for h in head), "</tr></thead><tbody>"]
    sources = set()
    for r in rows:
        m = r["measurement"]
        p = m.get("profile") or {}
        if p.get("memory_source"):
            sources.add(str(p["memory_source"]))
        cells = [_e(r.get("variant")), _e(row_where(r)), _num(m.get("init_ms")), _num(m.get("first_inference_ms")),
                 _num(p.get("warmup_mean_ms")), _num((m.get("derived") or {}).get("p50_ms")),
                 _num(p.get("peak_memory_mb"), 3), _e(_placement(p)), _bytes(p.get("edgetpu_onchip_bytes")),
                 _bytes(p.get("edgetpu_offchip_bytes"))]
        out.append("<tr>" + "".join(f'<td class="num">{c}</td>' if i not in (0, 1, 7) else f"<td>{c}</td>"
                                    for i, c in enumerate(cells)) + "</tr>")
    out.append("</tbody></table></div>")
    if sources:
        out.append('<p class="note">Peak memory: ' + "; ".join(_e(s) for s in sorted(sources)) + ".</p>")
    return "".join(out)


def _ops(rows: Sequence[Mapping[str, Any]], baseline: Mapping[RowId, Mapping[str, Any]],
         baseline_name: str | None) -> str:
    out = []
    for r in rows:
        p = r["measurement"].get("profile") or {}
        ops = p.get("ops") or []
        if not ops:
            continue
        before = {(o["index"], o["op"]): float(o["avg_ms"])
                  for o in ((baseline.get(row_id(r)) or {}).get("profile") or {}).get("ops") or []}
        total = sum(float(o["avg_ms"]) for o in ops) or 1.0
        diff = bool(before)
        label = _e(baseline_name or "baseline run")
        head = ["#", "op", "on", "avg ms", "share"] + ([f"{label} ms", "change"] if diff else [])
        out.append(f"<h3>Slowest ops: {_e(r.get('variant'))} on {_e(row_where(r))}</h3>"
                   f'<p class="note">{len(ops)} ops timed by {_e(p.get("ops_source") or "the target")}'
                   + (f"; compared with the same op in {label}" if diff else "") + ".</p>")
        out.append('<div class="table-wrap"><table class="profile ops"><thead><tr>'
                   + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>")
        for o in sorted(ops, key=lambda o: float(o["avg_ms"]), reverse=True)[:TOP_OPS]:
            ms = float(o["avg_ms"])
            cells = [str(o["index"]), _e(o["op"]), _e(o.get("on")), _num(ms), f"{100 * ms / total:.1f}%"]
            if diff:
                was = before.get((o["index"], o["op"]))
                cells += [_num(was), "new" if was is None else f"{ms - was:+.3f} ms"]
            out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        out.append("</tbody></table></div>")
    return "".join(out)
