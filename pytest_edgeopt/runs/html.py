"""One run -> one self-contained HTML report (``--edgeopt-html``).

The run is a :class:`~pytest_edgeopt.runs.record.RunRecord` or its document (what
:func:`pytest_edgeopt.runs.writer.write_json` writes, possibly with the ``run`` and
``metadata`` of a saved run). The report holds:

* a header: the run's time, commit, machine, Python and package versions, and totals;
* the summary table: the figures of the terminal table (one row per model, variant, target
  and device, from :func:`pytest_edgeopt.runs.rows.merge`), the result coloured;
* the reasons of every test that did not pass;
* size (file and gzip) against the metric, one colour per target, its Pareto front drawn;
* latency per variant and target from the raw samples (box plots);
* trends (p50 latency and metric per variant over runs), when ``history`` holds earlier runs;
* load, memory, placement and the slowest ops per variant (:mod:`pytest_edgeopt.runs.html_profile`),
  the per-op times beside the baseline run's when comparing.

Every figure comes from the document. Plots are PNG made by matplotlib's Agg canvas
(:mod:`pytest_edgeopt.runs.charts`) and embedded as base64 ``data:`` URIs; the CSS is
inline: the file needs no network and no other file. matplotlib and numpy are imported
inside the functions that plot, never at import.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_edgeopt.atomic import atomic_write_bytes
from pytest_edgeopt.labels import where as where_label
from pytest_edgeopt.runs.charts import latency_png, row_where, samples_ms, size_accuracy_png, trends_png
from pytest_edgeopt.runs.html_profile import profile_section, row_id
from pytest_edgeopt.runs.recommend import recommend
from pytest_edgeopt.runs.record import RunRecord
from pytest_edgeopt.runs.rows import merge
from pytest_edgeopt.runs.terminal import kib, pct  # the terminal table's formatting: the same figures

#: A run as the report takes it: a record or its document.
Run = RunRecord | Mapping[str, Any]

#: Columns of the summary table: (header, tooltip). The terminal table's, plus p90.
COLUMNS = (
    ("model", ""), ("variant", ""), ("target", "target, and device when it has one"),
    ("size KiB", "file size"), ("gzip KiB", "gzip -9 size: what a download costs"),
    ("size −", "size reduction vs fp32 on the same target"),
    ("p50 ms", "median steady-state latency"), ("p90 ms", "90th percentile latency"),
    ("speedup", "fp32 p50 / variant p50"), ("metric", "the model's metric on the eval set (higher is better)"),
    ("drop", "fp32 metric − variant metric (positive = worse)"),
    ("vs source", "source model's metric − variant metric: against the model you trained, before conversion"),
    ("build", "build time, or 'cache' when reused"),
    ("result", "PASS: every test of this variant passed; FAIL: one failed; SKIP: none measured it; "
               "base: the fp32 baseline the variants were compared with"),
)
_NUMERIC = {"size KiB", "gzip KiB", "size −", "p50 ms", "p90 ms", "speedup", "drop", "vs source", "build"}

_CSS = """
:root { --pass:#dff3e3; --pass-ink:#17642c; --fail:#fbe0e0; --fail-ink:#a4161a; --skip:#fff4cc;
        --skip-ink:#7a5b00; --base:#e6eefb; --base-ink:#24478f; --line:#d8dce3; --muted:#5f6b7a; }
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       margin: 0 auto; max-width: 1280px; padding: 24px 32px 48px; color: #1d2430; line-height: 1.45; }
h1 { font-size: 1.6rem; margin: 0 0 4px; }
h2 { font-size: 1.25rem; margin: 36px 0 8px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 1.05rem; margin: 20px 0 6px; }
.sub { color: var(--muted); margin: 0 0 12px; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 8px 0; font-size: .92rem; }
dl.meta dt { color: var(--muted); }
dl.meta dd { margin: 0; }
code, .mono { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", monospace;
              font-size: .88em; }
.totals { font-size: .95rem; }
.counts span { display: inline-block; padding: 1px 8px; border-radius: 10px; margin-right: 4px; font-weight: 600; }
table { border-collapse: collapse; font-size: .88rem; }
.table-wrap { overflow-x: auto; }
table.summary { width: 100%; }
table.profile th, table.profile td { padding: 3px 7px; border-bottom: 1px solid var(--line); white-space: nowrap; }
table.profile th { text-align: left; background: #f3f5f8; }
table.profile td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.summary th, table.summary td { padding: 4px 7px; border-bottom: 1px solid var(--line); white-space: nowrap; }
table.summary th { text-align: left; background: #f3f5f8; position: sticky; top: 0; cursor: help; }
table.summary td.num, table.summary th.num { text-align: right; font-variant-numeric: tabular-nums; }
table.summary tbody tr:hover { background: #f7f9fc; }
td.result { font-weight: 700; text-align: center; border-radius: 3px; }
.pass td.result, .counts .pass { background: var(--pass); color: var(--pass-ink); }
.fail td.result, .counts .fail { background: var(--fail); color: var(--fail-ink); }
.skip td.result, .counts .skip { background: var(--skip); color: var(--skip-ink); }
.base td.result { background: var(--base); color: var(--base-ink); }
tr.fail td:not(.result) { background: #fff7f7; }
tr.base td:not(.result) { color: var(--muted); }
.legend, figcaption, .note { color: var(--muted); font-size: .88rem; }
ul.reasons { padding-left: 20px; }
ul.reasons li { margin: 6px 0; }
ul.reasons .tag { font-weight: 700; font-size: .8rem; padding: 0 6px; border-radius: 3px; margin-right: 6px; }
ul.reasons .tag.fail { background: var(--fail); color: var(--fail-ink); }
ul.reasons .tag.skip { background: var(--skip); color: var(--skip-ink); }
ul.reasons .test { color: var(--muted); display: block; }
details pre { white-space: pre-wrap; background: #f6f8fa; padding: 8px; border-radius: 4px; font-size: .8rem; }
figure { margin: 12px 0 24px; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { margin-top: 6px; max-width: 1000px; }
table.packages td { padding: 1px 12px 1px 0; }
footer { margin-top: 40px; color: var(--muted); font-size: .8rem; }
"""

# -- entry points ---------------------------------------------------------------------------------
def write_html(path: Path, doc: Run, history: Sequence[Run] | None = None, baseline: Run | None = None) -> None:
    """Write :func:`render_html` of ``doc`` to ``path`` atomically.

    Raises ImportError naming the package when matplotlib is not installed.
    """
    atomic_write_bytes(Path(path), render_html(doc, history, baseline).encode("utf-8"))


def render_html(doc: Run, history: Sequence[Run] | None = None, baseline: Run | None = None) -> str:
    """The report of one run as one HTML page (UTF-8 text, no external reference).

    ``history`` are earlier runs, oldest first; trends are drawn when they and ``doc`` make
    two runs or more (a copy of ``doc`` in ``history`` is counted once). ``baseline``: the
    run compared with (default: the run of ``history`` the comparison names), whose per-op
    times the per-op tables show beside this run's.
    """
    record = RunRecord.of(doc)
    records = _records(record)
    rows = merge(records)
    models = sorted({str(r.get("model") or "-") for r in rows})
    runs = _runs(record, [RunRecord.of(h) for h in history or []])
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e('edgeopt report: ' + ', '.join(models) if models else 'edgeopt report')}</title>",
        f"<style>{_CSS}</style></head><body>",
        _header(record, models),
        _summary(rows),
        _comparison_section(record.comparison),
        _reasons(records, rows),
        _recommendations(records),
    ]
    plotted = [r for r in rows if r.get("measurement")]
    if plotted:
        parts.append(_size_accuracy_section(plotted, models))
        parts.append(_latency_section(plotted, models))
        base = _baseline_run(record, runs, baseline)
        base_rows = {row_id(r): r["measurement"] for r in merge(_records(base)) if r.get("measurement")} if base else None
        parts.append(profile_section(plotted, models, base_rows, base.name if base else None))
    if len(runs) >= 2:
        parts.append(_trends_section(runs))
    parts.append(f'<footer>pytest-edgeopt {_e(_version(record))}, JSON schema {_e(record.schema)}. '
                 "Every figure on this page comes from the run document.</footer>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"

# -- small helpers --------------------------------------------------------------------------------------
def _comparison_section(comparison: Mapping[str, Any] | None) -> str:
    """The gate's verdict against the baseline run (``doc["comparison"]``, see
    :meth:`pytest_edgeopt.runs.gate.Comparison.to_dict`): regressions, the warnings, and per
    compared row the change, the minimum detectable effect and what the verdict rests on."""
    if not comparison:
        return ""
    c = comparison
    tols = ", ".join(c.get("tolerances") or []) or "none (compare only)"
    out = ['<section id="comparison">', f"<h2>Compared with {_e(c.get('baseline'))}</h2>",
           f"<p class=caption>Tolerances {_e(tols)}; latency test one-sided p &lt; {_e(c.get('alpha'))}, "
           f"between-run noise {100 * float(c.get('noise') or 0):.1f}% ({_e(c.get('noise_source'))}). "
           "<i>detects &ge;</i>: the smallest latency slow-down the comparison calls significant.</p>",
           '<ul class="reasons">']
    items = [("fail", "REGRESSION", r.get("message")) for r in c.get("regressions") or []]
    if c.get("cannot_judge"):
        strict = c.get("failed") and not c.get("regressions")
        items.append(("fail" if strict else "skip", "FAILED" if strict else "WARNING", c["cannot_judge"]))
    items += [("skip", "WARNING", w) for w in c.get("warnings") or []]
    out += [f'<li><span class="tag {k}">{t}</span>{_e(m)}</li>' for k, t, m in items]
    out.append("</ul>")
    rows = [r for r in c.get("rows") or [] if r.get("status") == "compared"]
    if rows:
        out.append("<table class=summary><thead><tr><th>model</th><th>variant</th><th>where</th><th>vs baseline run</th>"
                   "<th class=num>detects &ge;</th><th>latency evidence</th></tr></thead><tbody>")
        for r in rows:
            d = r.get("detectable")
            cls = ' class="fail"' if r.get("regressed") else ""
            out.append(f"<tr{cls}><td>{_e(r.get('model'))}</td><td>{_e(r.get('variant'))}</td>"
                       f"<td>{_e(where_label(r.get('target'), r.get('device')))}</td><td>{_e(r.get('cell'))}</td>"
                       f"<td class=num>{'' if d is None else f'{100 * d:.1f}%'}</td>"
                       f"<td>{_e(r.get('evidence') or r.get('latency_note') or '')}</td></tr>")
        out.append("</tbody></table>")
    out.append("</section>")
    return "\n".join(out)


def _recommendations(records: Sequence[Mapping[str, Any]]) -> str:
    """Which variant to ship, per model and target (from :mod:`pytest_edgeopt.runs.recommend`)."""
    recs = recommend(records)
    if not recs:
        return ""
    items = []
    for rec in recs:
        lines = rec.lines()
        detail = "".join(f"<li>{_e(line.strip())}</li>" for line in lines[1:])
        items.append(f"<li><b>{_e(lines[0])}</b>{f'<ul>{detail}</ul>' if detail else ''}</li>")
    return ('<section id="recommendation"><h2>Which variant to ship</h2>'
            "<p class=caption>Per model and target: the variants that met every budget, and among them the "
            "smallest file, the smallest download (gzip -9) and the fastest (p50).</p>"
            f"<ul>{''.join(items)}</ul></section>")

def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _records(record: RunRecord) -> list[dict[str, Any]]:
    """The run's test items as session records (what :func:`~pytest_edgeopt.runs.rows.merge` takes)."""
    return [t.to_dict() for t in record.measurements]


def _version(record: RunRecord) -> str:
    return str((record.environment.get("packages") or {}).get("pytest-edgeopt") or "?")

def _ms(x: float | None) -> str:
    """Milliseconds to 4 significant digits (0.003807, 61.40, 1234)."""
    if x is None or not math.isfinite(x):
        return ""
    if x == 0:
        return "0"
    return f"{x:.{max(0, 3 - math.floor(math.log10(abs(x))))}f}"


def _p90_ms(m: Mapping[str, Any]) -> float | None:
    # A baseline-only row's "derived" (rows._baseline_derived) has no p90: its latency has.
    d = m.get("derived") or {}
    return d.get("p90_ms", (m.get("latency") or {}).get("p90_ms"))

# -- header -----------------------------------------------------------------------------------------
def _run_time(record: RunRecord) -> str | None:
    """When the run happened: ``run.time``, else when it was saved (``run.saved``), else
    when its JSON was written (``created``)."""
    return (record.run.unknown.get("time") if record.run else None) or record.time


#: Facts of a saved run's ``metadata.machine`` (store.machine()) shown, in this order.
_MACHINE = (("hostname", "{}"), ("cpu_model", "{}"), ("cores", "{} cores"), ("usable_cores", "{} usable"),
            ("platform", "{}"), ("memory_bytes", "memory"), ("loadavg", "load {}"), ("governor", "governor {}"))


def _machine(record: RunRecord) -> str:
    machine = ((record.run.unknown.get("machine") if record.run else None)
               or (record.metadata.machine if record.metadata else None))
    if isinstance(machine, Mapping):
        parts = []
        known = {k for k, _ in _MACHINE}
        for key, fmt in _MACHINE:
            v = machine.get(key)
            if v in (None, "", []):
                continue
            if key == "memory_bytes":
                parts.append(f"{float(v) / 2**30:.1f} GiB memory")
            else:
                parts.append(fmt.format(" ".join(map(str, v)) if isinstance(v, (list, tuple)) else v))
        covered = known | {"arch", "os", "os_release"}  # in "platform"
        parts += [f"{k} {v}" for k, v in machine.items() if k not in covered and v not in (None, "")]
        return " · ".join(parts)
    env = record.environment
    return str(machine or " ".join(x for x in (env.get("machine"), env.get("platform")) if x) or "unknown")


def _header(record: RunRecord, models: list[str]) -> str:
    env = record.environment
    saved = record.metadata
    meta: list[tuple[str, str]] = []
    if record.name or record.number is not None:
        number = f"#{record.number}" if record.number is not None else ""
        meta.append(("run", _e(" ".join(str(x) for x in (number, record.name) if x))))
    meta.append(("time", _e(_run_time(record) or "unknown")))
    commit, dirty, branch = record.commit, record.dirty, record.git.branch
    if commit:
        text = f"<code>{_e(commit)}</code>" + (f" on {_e(branch)}" if branch else "")
        if dirty:
            text += ' <span class="note">(uncommitted changes)</span>'
        meta.append(("commit", text))
    meta.append(("machine", _e(_machine(record))))
    python = env.get("python") or (saved.python if saved else None)
    if python:
        meta.append(("python", _e(python)))
    packages = env.get("packages") or (saved.packages if saved else None) or {}
    if packages:
        meta.append(("packages", ", ".join(f"{_e(k)}&nbsp;<code>{_e(v if v is not None else 'not installed')}</code>"
                                           for k, v in sorted(packages.items()))))
    latency = record.latency_settings
    if latency:
        meta.append(("latency settings", _e(", ".join(f"{k} {v}" for k, v in latency.items()))))
    out = ["<header>", "<h1>edgeopt report</h1>",
           f'<p class="sub">{_e(", ".join(models) or "no model measured")}</p>',
           '<dl class="meta">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in meta) + "</dl>"]
    t = record.totals
    if t:
        out.append(
            f'<p class="totals counts">{_e(t.get("items", 0))} tests: '
            f'<span class="pass">{_e(t.get("passed", 0))} passed</span>'
            f'<span class="fail">{_e(t.get("failed", 0))} failed</span>'
            f'<span class="skip">{_e(t.get("skipped", 0))} skipped</span> · variants: '
            f'{_e(t.get("variants_built", 0))} built, {_e(t.get("variants_from_cache", 0))} from the cache; '
            f'build phase {_e(format(float(t.get("build_phase_s") or 0.0), ".2f"))} s</p>')
    out.append("</header>")
    return "\n".join(out)


# -- summary table -----------------------------------------------------------------------------------------
def _cells(row: Mapping[str, Any]) -> list[str]:
    """The row's cells, as text, in :data:`COLUMNS` order."""
    head = [str(row.get("model") or "-"), str(row.get("variant") or "-"), row_where(row)]
    m = row.get("measurement")
    if m:
        d = m["derived"]
        metric = "" if d.get("metric") is None else f"{d['metric_name']} {d['metric']:.4f}"
        drop = "" if d.get("accuracy_drop") is None else f"{d['accuracy_drop']:+.4f}"
        source = "" if d.get("source_accuracy_drop") is None else f"{d['source_accuracy_drop']:+.4f}"
        build = "cache" if d.get("from_cache") else f"{d.get('build_seconds') or 0.0:.1f}s"
        return head + [kib(d["size_bytes"]), kib(d["compressed_size_bytes"]), pct(d["size_reduction"]),
                       _ms(d["p50_ms"]), _ms(_p90_ms(m)), f"{d['speedup']:.2f}x", metric, drop, source, build,
                       row["result"]]
    if row.get("built"):  # built but not measured (an optimized_model-only test)
        b = row["built"]
        build = "cache" if b.get("from_cache") else f"{b.get('build_seconds') or 0.0:.1f}s"
        sizes = [kib(b.get("size_bytes")), kib(b.get("compressed_size_bytes"))]
        return head + sizes + [""] * 7 + [build, row["result"]]
    return head + [""] * 10 + [row["result"]]


def _summary(rows: list[dict[str, Any]]) -> str:
    out = ['<section id="summary">', "<h2>Summary</h2>"]
    if not rows:
        out += ['<p class="note">No test of this run used an edgeopt variant.</p>', "</section>"]
        return "\n".join(out)
    out.append('<div class="table-wrap"><table class="summary"><thead><tr>' + "".join(
        f'<th{" class=num" if h in _NUMERIC else ""} title="{_e(tip)}">{_e(h)}</th>' for h, tip in COLUMNS)
        + "</tr></thead><tbody>")
    for row in rows:
        cls = str(row["result"]).lower()
        attrs = " ".join(f'data-{k}="{_e(row.get(k) or "")}"' for k in ("model", "variant", "target", "device"))
        tds = []
        for (h, _), text in zip(COLUMNS, _cells(row)):
            c = "num" if h in _NUMERIC else ("result" if h == "result" else "")
            tds.append(f'<td{f" class={c}" if c else ""}>{_e(text)}</td>')
        out.append(f'<tr class="{_e(cls)}" {attrs}>' + "".join(tds) + "</tr>")
    out.append("</tbody></table></div>")
    out.append('<p class="legend">size − = size reduction vs fp32 on the same target; speedup = fp32 p50 / '
               "variant p50; drop = fp32 metric − variant metric (positive = worse); result <b>base</b>: the fp32 "
               "baseline the variants were compared with (no test of its own). Hover a header for its meaning.</p>")
    out.append("</section>")
    return "\n".join(out)


def _reasons(records: Sequence[Mapping[str, Any]], rows: list[dict[str, Any]]) -> str:
    """Every test that did not pass, in table order, with its reason (first line, then the rest)."""
    order = {(r.get("model"), r.get("variant"), r.get("target"), r.get("device")): i for i, r in enumerate(rows)}
    bad = [r for r in records if r.get("outcome") != "passed"]
    if not bad:
        return ""
    bad.sort(key=lambda r: (order.get((r.get("model"), r.get("variant"), r.get("target"), r.get("device")), 1 << 30),
                            str(r.get("test"))))
    out = ['<section id="not-passed">', f"<h2>Not passed ({len(bad)})</h2>", '<ul class="reasons">']
    for r in bad:
        kind = "fail" if r.get("outcome") == "failed" else "skip"
        text = str(r.get("reason") or "").strip()
        first, _, rest = text.partition("\n")
        prefix = f'{r.get("variant")} on {row_where(r)}: '
        first = first[len(prefix):] if first.startswith(prefix) else first  # the budget message repeats it
        item = (f'<li><span class="tag {kind}">{"FAIL" if kind == "fail" else "SKIP"}</span>'
                f'<b>{_e(r.get("variant") or "-")}</b> on {_e(row_where(r))}: {_e(first or "(no reason recorded)")}'
                f'<span class="test mono">{_e(r.get("test") or "")}</span>')
        if rest.strip():
            item += f"<details><summary>full text</summary><pre>{_e(text)}</pre></details>"
        out.append(item + "</li>")
    out += ["</ul>", "</section>"]
    return "\n".join(out)


# -- plots --------------------------------------------------------------------------------------------------------

def _figure_html(img: str, caption: str) -> str:
    return f"<figure>{img}<figcaption>{caption}</figcaption></figure>"

def _size_accuracy_section(rows: list[dict[str, Any]], models: list[str]) -> str:
    out = ['<section id="size-accuracy">', "<h2>Size vs accuracy</h2>"]
    for model in models:
        mrows = [r for r in rows
                 if str(r.get("model") or "-") == model and r["measurement"]["derived"].get("metric") is not None]
        if len(models) > 1:
            out.append(f"<h3>{_e(model)}</h3>")
        if not mrows:
            out.append(f'<p class="note">No metric was measured for {_e(model)} (no eval data): nothing to plot.</p>')
            continue
        img, metric_name, logit = size_accuracy_png(mrows, model)
        name = _e(metric_name)
        several = len({row_where(r) for r in mrows}) > 1
        out.append(_figure_html(img, (
            f"Each point is a variant on a target: its size (left: the .tflite file; right: gzip -9 of it, where "
            f"pruning and clustering show) against its {name} on the eval set. One colour per target; a red ring: "
            "the variant failed a test there. "
            + ("Each target's markers are smaller than the previous target's, so a variant measured alike on "
               "several targets shows as concentric discs. " if several else "")
            + f"The staircase is {'each target' if several else 'the target'}'s Pareto front: the variants no other "
            f"beats on both size and {name}. For any variant off it, one on it is no bigger and at least as accurate."
            + (f" The {name} axis is stretched near 1 (logit scale) so that close values stay apart."
               if logit else ""))))
    out.append("</section>")
    return "\n".join(out)

def _latency_section(rows: list[dict[str, Any]], models: list[str]) -> str:
    out = ['<section id="latency">', "<h2>Latency</h2>"]
    for model in models:
        mrows = [r for r in rows if str(r.get("model") or "-") == model and samples_ms(r["measurement"])]
        if len(models) > 1:
            out.append(f"<h3>{_e(model)}</h3>")
        if not mrows:
            out.append(f'<p class="note">No latency samples recorded for {_e(model)}.</p>')
            continue
        img, log, dots = latency_png(mrows, model)
        per_target = []
        for where in dict.fromkeys(row_where(r) for r in mrows):
            counts = sorted({len(samples_ms(r["measurement"])) for r in mrows if row_where(r) == where})
            n = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]} to {counts[-1]}"
            kinds = {str((r["measurement"].get("extras") or {}).get("sample") or "")
                     for r in mrows if row_where(r) == where}
            kind = next(iter(kinds)) if len(kinds) == 1 else ""
            per_target.append(f"{_e(where)}: {_e(n)} samples" + (f", each the {_e(kind)}" if kind else ""))
        out.append(_figure_html(img, (
            "Steady-state latency of each variant on each target, from the raw samples ("
            + "; ".join(per_target) + "). Box: 25th to 75th percentile; black bar: median (p50); whiskers: 1st and "
            "99th percentiles; outliers beyond them are not drawn"
            + ("; dots: every sample of a variant with few of them" if dots else "")
            + ". The dashed line is fp32's median on the same target."
            + (" The axis is logarithmic: the latencies span more than a factor of 8." if log else ""))))
    out.append("</section>")
    return "\n".join(out)

# -- trends ----------------------------------------------------------------------------------------------------------
def _baseline_run(record: RunRecord, runs: Sequence[RunRecord], given: Run | None) -> RunRecord | None:
    """The run ``record`` was compared with: ``given``, else the run of ``runs`` its
    comparison names; ``None`` without a comparison."""
    if given is not None:
        return RunRecord.of(given)
    name = (record.comparison or {}).get("baseline")
    if not name:
        return None
    found = [r for r in runs if r.name == name and _run_id(r) != _run_id(record)]
    return found[-1] if found else None


def _run_id(record: RunRecord) -> tuple[Any, ...]:
    return (record.number, record.name, _run_time(record), record.commit)


def _runs(doc: RunRecord, history: Sequence[RunRecord]) -> list[RunRecord]:
    """History then ``doc``, each run once (a history that already ends with ``doc`` is fine)."""
    out: list[RunRecord] = []
    seen: set[tuple[Any, ...]] = set()
    for d in [*history, doc]:
        key = _run_id(d)
        if key in seen and d is not doc:
            continue
        if key in seen:  # doc itself was in history: keep the last position for it
            out = [o for o in out if _run_id(o) != key]
        seen.add(key)
        out.append(d)
    return out


def _run_label(record: RunRecord) -> str:
    """Two lines: the run's time to the minute, then its short commit ('+': uncommitted
    changes) or, without one, its number and name."""
    when = str(_run_time(record) or "?").replace("T", " ")[:16]
    commit, dirty = record.commit, record.dirty
    second = str(commit or "")[:8] + ("+" if commit and dirty else "")
    if not second:
        second = " ".join(str(x) for x in (f"#{record.number}" if record.number is not None else "",
                                           record.name) if x)
    return "\n".join(x for x in (when, second) if x)


def _trends_section(runs: list[RunRecord]) -> str:
    series: dict[tuple[str, str, str], dict[int, tuple[float, float | None]]] = {}
    metric_names: set[str] = set()
    for i, d in enumerate(runs):
        for r in merge(_records(d)):
            m = r.get("measurement")
            if not m:
                continue
            dv = m["derived"]
            series.setdefault((str(r.get("model") or "-"), str(r.get("variant")), row_where(r)), {})[i] = (
                dv["p50_ms"], dv.get("metric"))
            if dv.get("metric_name"):
                metric_names.add(dv["metric_name"])
    out = ['<section id="trends">', f"<h2>Trends over {len(runs)} runs</h2>"]
    if not series:
        out += ['<p class="note">No run measured a variant.</p>', "</section>"]
        return "\n".join(out)
    img = trends_png([_run_label(d) for d in runs], series, " / ".join(sorted(metric_names)) or "metric")
    out.append(_figure_html(img, (
        f"The median latency (top) and the metric (bottom) of each variant on each target, over the last "
        f"{len(runs)} runs, oldest on the left; each tick is a run (its time, and its commit when known, '+' when "
        "it had uncommitted changes). Line colour: variant; line style: target. A gap is a run that did not "
        "measure that variant.")))
    out.append("</section>")
    return "\n".join(out)
