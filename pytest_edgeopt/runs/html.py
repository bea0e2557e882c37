"""One run document -> one self-contained HTML report (``--edgeopt-html``).

The document is what :func:`pytest_edgeopt.runs.terminal.write_json` writes, possibly with a
``run`` key (``name``, ``time``, ``commit``, ``dirty``, ``machine``) added by saved runs.
The report holds:

* a header: the run's time, commit, machine, Python and package versions, and totals;
* the summary table: the figures of the terminal table (one row per model, variant, target
  and device, from :func:`pytest_edgeopt.runs.terminal.merge`), the result coloured;
* the reasons of every test that did not pass;
* size (file and gzip) against the metric, one colour per target, its Pareto front drawn;
* latency per variant and target from the raw samples (box plots);
* trends (p50 latency and metric per variant over runs), when ``history`` holds earlier runs.

Every figure comes from the document. Plots are PNG made by matplotlib's Agg canvas and
embedded as base64 ``data:`` URIs; the CSS is inline: the file needs no network and no other
file. matplotlib and numpy are imported inside the functions that plot, never at import.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from pytest_edgeopt.atomic import atomic_write_bytes
from pytest_edgeopt.runs.terminal import kib, merge, pct  # the terminal table's formatting: the same figures

#: Columns of the summary table: (header, tooltip). The terminal table's, plus p90.
COLUMNS = (
    ("model", ""), ("variant", ""), ("target", "target, and device when it has one"),
    ("size KiB", "file size"), ("gzip KiB", "gzip -9 size: what a download costs"),
    ("size −", "size reduction vs fp32 on the same target"),
    ("p50 ms", "median steady-state latency"), ("p90 ms", "90th percentile latency"),
    ("speedup", "fp32 p50 / variant p50"), ("metric", "the model's metric on the eval set (higher is better)"),
    ("drop", "fp32 metric − variant metric (positive = worse)"), ("build", "build time, or 'cache' when reused"),
    ("result", "PASS: every test of this variant passed; FAIL: one failed; SKIP: none measured it; "
               "base: the fp32 baseline the variants were compared with"),
)
_NUMERIC = {"size KiB", "gzip KiB", "size −", "p50 ms", "p90 ms", "speedup", "drop", "build"}

#: One colour per target (matplotlib's tab10, so the plots and the table legend agree).
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")

#: Line styles of the targets' Pareto fronts, so that fronts which coincide stay visible.
_DASHES = ("-", (0, (5, 3)), (0, (1, 2)), "-.")


def _marker_area(t: int) -> float:
    """Scatter marker area (points²) of the ``t``-th target: each smaller than the last."""
    return max(90 * 0.45 ** t, 8)


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
def write_html(path: Path, doc: Mapping[str, Any], history: Sequence[Mapping[str, Any]] | None = None) -> None:
    """Write :func:`render_html` of ``doc`` to ``path`` atomically.

    Raises ImportError naming the package when matplotlib is not installed.
    """
    atomic_write_bytes(Path(path), render_html(doc, history).encode("utf-8"))


def render_html(doc: Mapping[str, Any], history: Sequence[Mapping[str, Any]] | None = None) -> str:
    """The report of one run document as one HTML page (UTF-8 text, no external reference).

    ``history`` are earlier run documents, oldest first; trends are drawn when they and
    ``doc`` make two runs or more (a copy of ``doc`` in ``history`` is counted once).
    """
    rows = merge(doc.get("measurements") or [])
    models = sorted({str(r.get("model") or "-") for r in rows})
    runs = _runs(doc, history or [])
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e('edgeopt report: ' + ', '.join(models) if models else 'edgeopt report')}</title>",
        f"<style>{_CSS}</style></head><body>",
        _header(doc, models),
        _summary(rows),
        _reasons(doc.get("measurements") or [], rows),
        _recommendations(doc.get("measurements") or []),
    ]
    plotted = [r for r in rows if r.get("measurement")]
    if plotted:
        parts.append(_size_accuracy_section(plotted, models))
        parts.append(_latency_section(plotted, models))
    if len(runs) >= 2:
        parts.append(_trends_section(runs))
    parts.append(f'<footer>pytest-edgeopt {_e(_version(doc))}, JSON schema {_e(doc.get("schema", "?"))}. '
                 "Every figure on this page comes from the run document.</footer>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# -- small helpers --------------------------------------------------------------------------------------
def _recommendations(records: Sequence[Mapping[str, Any]]) -> str:
    """Which variant to ship, per model and target (from :mod:`pytest_edgeopt.runs.recommend`)."""
    from pytest_edgeopt.runs.recommend import recommend

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


def _version(doc: Mapping[str, Any]) -> str:
    return str(((doc.get("environment") or {}).get("packages") or {}).get("pytest-edgeopt") or "?")


def _where(row: Mapping[str, Any]) -> str:
    """``cpu``, or ``android_gpu/SERIAL``: as in the terminal table."""
    where = row.get("target") or "-"
    if row.get("device") and row["device"] != "host":
        where = f"{where}/{row['device']}"
    return where


def _ms(x: float | None) -> str:
    """Milliseconds to 4 significant digits (0.003807, 61.40, 1234)."""
    if x is None or not math.isfinite(x):
        return ""
    if x == 0:
        return "0"
    return f"{x:.{max(0, 3 - math.floor(math.log10(abs(x))))}f}"


def _p90_ms(m: Mapping[str, Any]) -> float | None:
    # A baseline-only row's "derived" (report._baseline_derived) has no p90: its latency has.
    d = m.get("derived") or {}
    return d.get("p90_ms", (m.get("latency") or {}).get("p90_ms"))


def _samples_ms(m: Mapping[str, Any]) -> list[float]:
    return [float(s) / 1000.0 for s in (m.get("latency") or {}).get("samples_us") or ()]


def _t(x: Any) -> str:
    """Text for matplotlib, literal: a ``$`` would otherwise start mathtext (and may not parse)."""
    return str(x).replace("$", r"\$")


def _colours(keys: Iterable[str]) -> dict[str, str]:
    return {k: _PALETTE[i % len(_PALETTE)] for i, k in enumerate(dict.fromkeys(keys))}


# -- header -----------------------------------------------------------------------------------------
def _run_time(doc: Mapping[str, Any]) -> str | None:
    """When the run happened: ``run.time``, else when it was saved (``run.saved``), else
    when its JSON was written (``created``)."""
    run = doc.get("run") or {}
    return run.get("time") or run.get("saved") or doc.get("created")


def _commit(doc: Mapping[str, Any]) -> tuple[str | None, bool | None, str | None]:
    """(commit, dirty, branch) from ``run``, else from a saved run's ``metadata.git``."""
    run = doc.get("run") or {}
    git = (doc.get("metadata") or {}).get("git") or {}
    dirty = run.get("dirty") if run.get("dirty") is not None else git.get("dirty")
    return run.get("commit") or git.get("commit"), dirty, git.get("branch")


#: Facts of a saved run's ``metadata.machine`` (store.machine()) shown, in this order.
_MACHINE = (("hostname", "{}"), ("cpu_model", "{}"), ("cores", "{} cores"), ("usable_cores", "{} usable"),
            ("platform", "{}"), ("memory_bytes", "memory"), ("loadavg", "load {}"), ("governor", "governor {}"))


def _machine(doc: Mapping[str, Any]) -> str:
    machine = (doc.get("run") or {}).get("machine") or (doc.get("metadata") or {}).get("machine")
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
    env = doc.get("environment") or {}
    return str(machine or " ".join(x for x in (env.get("machine"), env.get("platform")) if x) or "unknown")


def _header(doc: Mapping[str, Any], models: list[str]) -> str:
    env = doc.get("environment") or {}
    saved = doc.get("metadata") or {}
    run = doc.get("run") or {}
    meta: list[tuple[str, str]] = []
    if run.get("name") or run.get("number") is not None:
        number = f"#{run['number']}" if run.get("number") is not None else ""
        meta.append(("run", _e(" ".join(str(x) for x in (number, run.get("name")) if x))))
    meta.append(("time", _e(_run_time(doc) or "unknown")))
    commit, dirty, branch = _commit(doc)
    if commit:
        text = f"<code>{_e(commit)}</code>" + (f" on {_e(branch)}" if branch else "")
        if dirty:
            text += ' <span class="note">(uncommitted changes)</span>'
        meta.append(("commit", text))
    meta.append(("machine", _e(_machine(doc))))
    python = env.get("python") or saved.get("python")
    if python:
        meta.append(("python", _e(python)))
    packages = env.get("packages") or saved.get("packages") or {}
    if packages:
        meta.append(("packages", ", ".join(f"{_e(k)}&nbsp;<code>{_e(v if v is not None else 'not installed')}</code>"
                                           for k, v in sorted(packages.items()))))
    latency = (doc.get("settings") or {}).get("latency")
    if isinstance(latency, Mapping) and latency:
        meta.append(("latency settings", _e(", ".join(f"{k} {v}" for k, v in latency.items()))))
    out = ["<header>", "<h1>edgeopt report</h1>",
           f'<p class="sub">{_e(", ".join(models) or "no model measured")}</p>',
           '<dl class="meta">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in meta) + "</dl>"]
    t = doc.get("totals") or {}
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
    head = [str(row.get("model") or "-"), str(row.get("variant") or "-"), _where(row)]
    m = row.get("measurement")
    if m:
        d = m["derived"]
        metric = "" if d.get("metric") is None else f"{d['metric_name']} {d['metric']:.4f}"
        drop = "" if d.get("accuracy_drop") is None else f"{d['accuracy_drop']:+.4f}"
        build = "cache" if d.get("from_cache") else f"{d.get('build_seconds') or 0.0:.1f}s"
        return head + [kib(d["size_bytes"]), kib(d["compressed_size_bytes"]), pct(d["size_reduction"]),
                       _ms(d["p50_ms"]), _ms(_p90_ms(m)), f"{d['speedup']:.2f}x", metric, drop, build, row["result"]]
    if row.get("built"):  # built but not measured (an optimized_model-only test)
        b = row["built"]
        build = "cache" if b.get("from_cache") else f"{b.get('build_seconds') or 0.0:.1f}s"
        sizes = [kib(b.get("size_bytes")), kib(b.get("compressed_size_bytes"))]
        return head + sizes + [""] * 6 + [build, row["result"]]
    return head + [""] * 9 + [row["result"]]


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
        prefix = f'{r.get("variant")} on {_where(r)}: '
        first = first[len(prefix):] if first.startswith(prefix) else first  # the budget message repeats it
        item = (f'<li><span class="tag {kind}">{"FAIL" if kind == "fail" else "SKIP"}</span>'
                f'<b>{_e(r.get("variant") or "-")}</b> on {_e(_where(r))}: {_e(first or "(no reason recorded)")}'
                f'<span class="test mono">{_e(r.get("test") or "")}</span>')
        if rest.strip():
            item += f"<details><summary>full text</summary><pre>{_e(text)}</pre></details>"
        out.append(item + "</li>")
    out += ["</ul>", "</section>"]
    return "\n".join(out)


# -- plots --------------------------------------------------------------------------------------------------------
def _figure(width_in: float, height_in: float, **kw: Any):
    """A matplotlib Figure on the Agg canvas: no pyplot, no global backend change."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the edgeopt HTML report plots with matplotlib: pip install matplotlib") from exc
    fig = Figure(figsize=(width_in, height_in), dpi=100, **kw)
    FigureCanvasAgg(fig)
    return fig


def _png(fig, alt: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _figure_html(img: str, caption: str) -> str:
    return f"<figure>{img}<figcaption>{caption}</figcaption></figure>"


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated ``(size, metric)`` points, smallest size first.

    A point is dominated when another is no larger and no less accurate, and strictly
    better in one of the two. Of identical points the first is kept.
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1], i))
    front: list[int] = []
    best = -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def _label_points(ax, fig, points: list[tuple[float, float, str]]) -> None:
    """Label points with their names, labels apart: points a few pixels apart share one
    label, and each label takes the nearest spot around its point that covers no other
    label or point (the least covered one when none is free)."""
    renderer = fig.canvas.get_renderer()
    groups: list[list[Any]] = []  # [x_px, y_px, x, y, [names]]
    for x, y, name in sorted(points, key=lambda p: (p[0], -p[1])):
        px, py = ax.transData.transform((x, y))
        for g in groups:
            if abs(g[0] - px) < 7 and abs(g[1] - py) < 7:
                if name not in g[4]:
                    g[4].append(name)
                break
        else:
            groups.append([px, py, x, y, [name]])
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox

    axbox = ax.get_window_extent(renderer)
    scale = fig.dpi / 72.0  # offset points -> pixels
    blocked = [Bbox.from_bounds(g[0] - 5, g[1] - 5, 10, 10) for g in groups]
    spots = [(r * cx, r * cy) for r in (7, 16, 28, 42, 58)
             for cx, cy in ((1, 0.6), (1, -0.6), (-1, 0.6), (-1, -0.6), (0, 1), (0, -1), (1.4, 0), (-1.4, 0))]
    for px, py, x, y, names in groups:
        text = "\n".join(names) if len(names) <= 6 else "\n".join(names[:5] + [f"+{len(names) - 5} more"])
        best = None
        for dx, dy in spots:
            ann = ax.annotate(
                text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=7.5, color="#222",
                ha="left" if dx > 0.5 else ("right" if dx < -0.5 else "center"), va="bottom" if dy >= 0 else "top",
                arrowprops=None if abs(dx) + abs(dy) < 16 else
                {"arrowstyle": "-", "color": "#9a9a9a", "lw": 0.6, "shrinkA": 1, "shrinkB": 4})
            # The text's box alone (an Annotation's own box includes its leader line).
            ann.update_positions(renderer)
            box = Text.get_window_extent(ann, renderer).expanded(1.04, 1.08)
            own = Bbox.from_bounds(px - 5, py - 5, 10, 10)
            clash = sum(box.overlaps(b) for b in blocked if b.bounds != own.bounds)
            outside = not (box.x0 >= axbox.x0 and box.x1 <= axbox.x1 and box.y0 >= axbox.y0 and box.y1 <= axbox.y1)
            cost = clash + 100 * outside + math.hypot(dx, dy) * scale / 1000
            if best is None or cost < best[0]:
                if best is not None:
                    best[1].remove()
                best = (cost, ann, box)
            else:
                ann.remove()
            if clash == 0 and not outside:
                break
        blocked.append(best[2])


def _metric_axis(ax, metrics: list[float]) -> bool:
    """Set the metric axis's limits; a logit scale when the metrics are fractions close to 1
    spread by a bad variant (so the good ones do not collapse into a line). True if logit."""
    lo, hi = min(metrics), max(metrics)
    if 0 < lo and hi < 1 and hi > 0.8 and hi - lo > 0.03:
        from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

        lg = [math.log(m / (1 - m)) for m in (lo, hi)]
        pad = 0.08 * (lg[1] - lg[0])
        lim = [1 / (1 + math.exp(-v)) for v in (lg[0] - pad, lg[1] + 3 * pad)]
        ax.set_yscale("logit")
        ax.set_ylim(*lim)
        nice = [0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.92, 0.94, 0.95, 0.96, 0.97,
                0.98, 0.99, 0.995, 0.999]
        ticks: list[float] = []
        for t in (t for t in nice if lim[0] <= t <= lim[1]):  # at least 1/9 of the axis apart
            if not ticks or math.log(t / (1 - t)) - math.log(ticks[-1] / (1 - ticks[-1])) > (lg[1] - lg[0]) / 9:
                ticks.append(t)
        ax.yaxis.set_major_locator(FixedLocator(ticks))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_locator(NullLocator())
        return True
    pad = max(0.06 * (hi - lo), 0.004 * max(abs(hi), 1e-9))
    ax.set_ylim(lo - pad, hi + 3 * pad)
    return False


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
        img, metric_name, logit = _size_accuracy_png(mrows, model)
        name = _e(metric_name)
        several = len({_where(r) for r in mrows}) > 1
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


def _size_accuracy_png(rows: list[dict[str, Any]], model: str) -> tuple[str, str, bool]:
    from matplotlib.lines import Line2D

    wheres = list(dict.fromkeys(_where(r) for r in rows))
    colour = _colours(wheres)
    metric_name = rows[0]["measurement"]["derived"].get("metric_name") or "metric"
    fig = _figure(12.5, 6.2)
    axes = fig.subplots(1, 2, sharey=True)
    fig.subplots_adjust(left=0.07, right=0.985, top=0.87, bottom=0.1, wspace=0.05)
    metrics = [r["measurement"]["derived"]["metric"] for r in rows]
    logit = _metric_axis(axes[0], metrics)
    for ax, key, title in ((axes[0], "size_bytes", "file size"), (axes[1], "compressed_size_bytes", "gzip -9 size")):
        sizes = [r["measurement"]["derived"][key] / 1024 for r in rows]
        ax.set_xlim(0, max(sizes) * 1.2)
        ax.set_title(title, fontsize=11)
        ax.set_xlabel(f"{title}, KiB")
        ax.grid(True, color="#e5e5e5", lw=0.6)
        ax.set_axisbelow(True)
        for t, where in enumerate(wheres):
            idx = [i for i, r in enumerate(rows) if _where(r) == where]
            front = [idx[j] for j in pareto_front([(sizes[i], metrics[i]) for i in idx])]
            fx = [sizes[i] for i in front]
            fy = [metrics[i] for i in front]
            # The best metric reachable at each size: a staircase rising at each front point.
            ax.step(fx + [ax.get_xlim()[1]], fy + [fy[-1]], where="post", color=colour[where], lw=1.3, alpha=0.75,
                    ls=_DASHES[t % len(_DASHES)], zorder=2)
            # A variant's size is the same on every target and its metric often too: each target
            # gets a smaller marker than the one before, so coinciding points show as rings.
            failed = [rows[i]["result"] == "FAIL" for i in idx]
            ax.scatter([sizes[i] for i in idx], [metrics[i] for i in idx], s=_marker_area(t), color=colour[where],
                       zorder=3 + t, edgecolors=["#d62728" if f else colour[where] for f in failed],
                       linewidths=[1.8 if f else 0 for f in failed], label=_t(where) if ax is axes[0] else None)
        _label_points(ax, fig, [(sizes[i], metrics[i], _t(r.get("variant"))) for i, r in enumerate(rows)])
    axes[0].set_ylabel(f"{_t(metric_name)} (higher is better)" + (", logit scale" if logit else ""))
    handles, labels = axes[0].get_legend_handles_labels()
    handles += [Line2D([], [], color="#555", lw=1.3, drawstyle="steps-post"),
                Line2D([], [], ls="", marker="o", color="#bbb", markeredgecolor="#d62728", markeredgewidth=1.8)]
    labels += ["Pareto front" + (" (per target)" if len(wheres) > 1 else ""), "FAIL"]
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 6), frameon=False, fontsize=9,
               bbox_to_anchor=(0.5, 0.995))
    return _png(fig, f"{model}: size vs {metric_name} per target with Pareto fronts"), metric_name, logit


def _log_axis(ax, which: str) -> None:
    """Make ``ax``'s ``which`` ("x" or "y") axis a log scale labelled 1, 2, 5, 10, 20...
    in plain numbers (no 10^-2 notation)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    getattr(ax, f"set_{which}scale")("log")
    axis = getattr(ax, f"{which}axis")
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _latency_section(rows: list[dict[str, Any]], models: list[str]) -> str:
    out = ['<section id="latency">', "<h2>Latency</h2>"]
    for model in models:
        mrows = [r for r in rows if str(r.get("model") or "-") == model and _samples_ms(r["measurement"])]
        if len(models) > 1:
            out.append(f"<h3>{_e(model)}</h3>")
        if not mrows:
            out.append(f'<p class="note">No latency samples recorded for {_e(model)}.</p>')
            continue
        img, log, dots = _latency_png(mrows, model)
        per_target = []
        for where in dict.fromkeys(_where(r) for r in mrows):
            counts = sorted({len(_samples_ms(r["measurement"])) for r in mrows if _where(r) == where})
            n = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]} to {counts[-1]}"
            kinds = {str((r["measurement"].get("extras") or {}).get("sample") or "")
                     for r in mrows if _where(r) == where}
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


def _latency_png(rows: list[dict[str, Any]], model: str) -> tuple[str, bool, bool]:
    import numpy as np

    wheres = list(dict.fromkeys(_where(r) for r in rows))
    variants = list(dict.fromkeys(str(r.get("variant")) for r in rows))
    colour = _colours(wheres)
    nt = len(wheres)
    band = 0.84 / nt
    data = [np.asarray(_samples_ms(r["measurement"])) for r in rows]
    highs = [float(np.percentile(d, 99)) for d in data]
    lows = [float(np.percentile(d, 1)) for d in data]
    unit, k = ("µs", 1000.0) if max(highs) < 1.0 else ("ms", 1.0)  # 3.8 µs reads better than 0.0038 ms
    data = [d * k for d in data]
    fig = _figure(12.5, 1.3 + 0.26 * len(variants) * max(1.0, 0.75 * nt))
    ax = fig.subplots()
    positions = [variants.index(str(r.get("variant"))) - 0.42 + band * (wheres.index(_where(r)) + 0.5) for r in rows]
    colours = [colour[_where(r)] for r in rows]
    import matplotlib

    # matplotlib 3.10 replaced vert=False with orientation="horizontal" (vert warns from 3.11).
    horizontal = ({"orientation": "horizontal"} if tuple(map(int, matplotlib.__version__.split(".")[:2])) >= (3, 10)
                  else {"vert": False})
    bp = ax.boxplot(data, positions=positions, widths=band * 0.78, **horizontal, whis=(1, 99), showfliers=False,
                    patch_artist=True, manage_ticks=False, medianprops={"color": "#111", "lw": 1.4},
                    whiskerprops={"color": "#555"}, capprops={"color": "#555"})
    for patch, c in zip(bp["boxes"], colours):
        patch.set_facecolor(c)
        patch.set_alpha(0.5)
        patch.set_edgecolor(c)
    dots = False
    rng = np.random.default_rng(0)  # fixed jitter: the same document gives the same picture
    for d, y, c in zip(data, positions, colours):
        if len(d) <= 60:
            dots = True
            ax.scatter(d, y + rng.uniform(-band * 0.25, band * 0.25, len(d)), s=7, color=c, edgecolors="#222",
                       linewidths=0.3, zorder=3)
    log = min(lows) > 0 and max(highs) / min(lows) > 8
    if log:
        _log_axis(ax, "x")
    for r in rows:
        if r.get("variant") == "fp32":
            ax.axvline(r["measurement"]["derived"]["p50_ms"] * k, color=colour[_where(r)], ls="--", lw=1, alpha=0.8)
    ax.set_yticks(range(len(variants)), [_t(v) for v in variants], fontsize=9)
    ax.set_ylim(len(variants) - 0.5, -0.5)  # registry order, top to bottom, as in the table
    for i in range(1, len(variants)):
        ax.axhline(i - 0.5, color="#eeeeee", lw=0.6)
    ax.set_xlabel(f"latency per inference, {unit}" + (" (log scale)" if log else ""))
    ax.grid(True, axis="x", which="major", color="#e2e2e2", lw=0.6)
    ax.set_axisbelow(True)
    if nt > 1:
        from matplotlib.patches import Patch

        ax.legend([Patch(facecolor=colour[w], edgecolor=colour[w], alpha=0.6) for w in wheres], [_t(w) for w in wheres],
                  loc="upper center", bbox_to_anchor=(0.5, 1.0 + 0.5 / fig.get_figheight()), ncol=nt, frameon=False,
                  fontsize=9)
    else:
        ax.set_title(f"on {_t(wheres[0])}", fontsize=10)
    fig.tight_layout()
    return _png(fig, f"{model}: latency distribution per variant and target"), log, dots


# -- trends ----------------------------------------------------------------------------------------------------------
def _run_id(doc: Mapping[str, Any]) -> tuple:
    run = doc.get("run") or {}
    return (run.get("number"), run.get("name"), _run_time(doc), _commit(doc)[0])


def _runs(doc: Mapping[str, Any], history: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """History then ``doc``, each run once (a history that already ends with ``doc`` is fine)."""
    out: list[Mapping[str, Any]] = []
    seen: set[tuple] = set()
    for d in [*history, doc]:
        key = _run_id(d)
        if key in seen and d is not doc:
            continue
        if key in seen:  # doc itself was in history: keep the last position for it
            out = [o for o in out if _run_id(o) != key]
        seen.add(key)
        out.append(d)
    return out


def _run_label(doc: Mapping[str, Any]) -> str:
    """Two lines: the run's time to the minute, then its short commit ('+': uncommitted
    changes) or, without one, its number and name."""
    run = doc.get("run") or {}
    when = str(_run_time(doc) or "?").replace("T", " ")[:16]
    commit, dirty, _ = _commit(doc)
    second = str(commit or "")[:8] + ("+" if commit and dirty else "")
    if not second:
        second = " ".join(str(x) for x in (f"#{run['number']}" if run.get("number") is not None else "",
                                           run.get("name")) if x)
    return "\n".join(x for x in (when, second) if x)


def _trends_section(runs: list[Mapping[str, Any]]) -> str:
    series: dict[tuple[str, str, str], dict[int, tuple[float, float | None]]] = {}
    metric_names: set[str] = set()
    for i, d in enumerate(runs):
        for r in merge(d.get("measurements") or []):
            m = r.get("measurement")
            if not m:
                continue
            dv = m["derived"]
            series.setdefault((str(r.get("model") or "-"), str(r.get("variant")), _where(r)), {})[i] = (
                dv["p50_ms"], dv.get("metric"))
            if dv.get("metric_name"):
                metric_names.add(dv["metric_name"])
    out = ['<section id="trends">', f"<h2>Trends over {len(runs)} runs</h2>"]
    if not series:
        out += ['<p class="note">No run measured a variant.</p>', "</section>"]
        return "\n".join(out)
    img = _trends_png(runs, series, " / ".join(sorted(metric_names)) or "metric")
    out.append(_figure_html(img, (
        f"The median latency (top) and the metric (bottom) of each variant on each target, over the last "
        f"{len(runs)} runs, oldest on the left; each tick is a run (its time, and its commit when known, '+' when "
        "it had uncommitted changes). Line colour: variant; line style: target. A gap is a run that did not "
        "measure that variant.")))
    out.append("</section>")
    return "\n".join(out)


def _trends_png(runs: list[Mapping[str, Any]], series: dict, metric_name: str) -> str:
    from matplotlib import colormaps

    models = sorted({k[0] for k in series})
    variants = list(dict.fromkeys(k[1] for k in series))
    wheres = list(dict.fromkeys(k[2] for k in series))
    cmap = colormaps["tab20"]
    styles = ["-", "--", ":", "-."]
    fig = _figure(12.5, 7.2)
    ax_lat, ax_met = fig.subplots(2, 1, sharex=True)
    xs = list(range(len(runs)))
    p50s = [v[0] for s in series.values() for v in s.values() if v[0] > 0]
    unit, k = ("µs", 1000.0) if p50s and max(p50s) < 1.0 else ("ms", 1.0)
    for (model, variant, where), pts in series.items():
        label = variant + (f" on {where}" if len(wheres) > 1 else "") + (f" ({model})" if len(models) > 1 else "")
        kw = {"color": cmap(variants.index(variant) % 20), "ls": styles[wheres.index(where) % len(styles)],
              "marker": "o", "ms": 3.5, "lw": 1.3}
        xi = sorted(pts)
        ax_lat.plot(xi, [pts[i][0] * k for i in xi], label=_t(label), **kw)
        mx = [i for i in xi if pts[i][1] is not None]
        if mx:
            ax_met.plot(mx, [pts[i][1] for i in mx], **kw)
    log = bool(p50s) and max(p50s) / min(p50s) > 8
    if log:
        _log_axis(ax_lat, "y")
    ax_lat.set_ylabel(f"p50 latency, {unit}" + (" (log scale)" if log else ""))
    metrics = [v[1] for s in series.values() for v in s.values() if v[1] is not None]
    logit = bool(metrics) and _metric_axis(ax_met, metrics)
    ax_met.set_ylabel(f"{_t(metric_name)} (higher is better)" + (", logit scale" if logit else ""))
    ax_met.set_xticks(xs, [_t(_run_label(d)) for d in runs], fontsize=8)
    ax_met.set_xlim(-0.3, len(runs) - 0.7)
    for ax in (ax_lat, ax_met):
        ax.grid(True, color="#e5e5e5", lw=0.6)
    fig.subplots_adjust(left=0.08, right=0.8, top=0.97, bottom=0.1, hspace=0.08)
    handles, labels = ax_lat.get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(0.81, 0.53), fontsize=8, frameon=False,
               ncol=1 if len(series) <= 26 else 2)
    return _png(fig, "p50 latency and metric per variant over runs")
