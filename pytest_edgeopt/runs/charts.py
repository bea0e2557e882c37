"""The HTML report's figures, drawn by matplotlib on its Agg canvas (no pyplot, no global
backend change) and returned as ``<img>`` tags with base64 PNG ``data:`` URIs:

* size (file and gzip) against the metric, one colour per target, its Pareto front drawn
  (:func:`size_accuracy_png`, :func:`pareto_front`);
* latency per variant and target from the raw samples, as box plots (:func:`latency_png`);
* p50 latency and metric per variant over runs (:func:`trends_png`);
* load, first inference, warm-up and steady-state time per variant (:func:`lifecycle_png`).

Each takes rows of :func:`pytest_edgeopt.runs.rows.merge` (latency in ms, sizes in bytes).
matplotlib and numpy are imported inside the functions that plot, never at import.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pytest_edgeopt.labels import where as where_label

#: One colour per target (matplotlib's tab10, so the plots and the table legend agree).
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")

#: Line styles of the targets' Pareto fronts, so that fronts which coincide stay visible.
_DASHES = ("-", (0, (5, 3)), (0, (1, 2)), "-.")


def _marker_area(t: int) -> float:
    """Scatter marker area (points²) of the ``t``-th target: each smaller than the last."""
    return max(90 * 0.45 ** t, 8)


def row_where(row: Mapping[str, Any]) -> str:
    """A row's ``target/device`` label (:func:`pytest_edgeopt.labels.where`)."""
    return where_label(row.get("target"), row.get("device"))


def samples_ms(m: Mapping[str, Any]) -> list[float]:
    return [float(s) / 1000.0 for s in (m.get("latency") or {}).get("samples_us") or ()]


def _t(x: Any) -> str:
    """Text for matplotlib, literal: a ``$`` would otherwise start mathtext (and may not parse)."""
    return str(x).replace("$", r"\$")


def _colours(keys: Iterable[str]) -> dict[str, str]:
    return {k: _PALETTE[i % len(_PALETTE)] for i, k in enumerate(dict.fromkeys(keys))}


def _figure(width_in: float, height_in: float, **kw: Any) -> Any:
    """A matplotlib Figure on the Agg canvas: no pyplot, no global backend change."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the edgeopt HTML report plots with matplotlib: pip install matplotlib") from exc
    fig = Figure(figsize=(width_in, height_in), dpi=100, **kw)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any, alt: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt, quote=True)}" src="data:image/png;base64,{data}">'


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


def _label_points(ax: Any, fig: Any, points: list[tuple[float, float, str]]) -> None:
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
        assert best is not None  # the first spot always sets it
        blocked.append(best[2])


def _metric_axis(ax: Any, metrics: list[float]) -> bool:
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


def size_accuracy_png(rows: list[dict[str, Any]], model: str) -> tuple[str, str, bool]:
    from matplotlib.lines import Line2D

    wheres = list(dict.fromkeys(row_where(r) for r in rows))
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
            idx = [i for i, r in enumerate(rows) if row_where(r) == where]
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


def _log_axis(ax: Any, which: str) -> None:
    """Make ``ax``'s ``which`` ("x" or "y") axis a log scale labelled 1, 2, 5, 10, 20...
    in plain numbers (no 10^-2 notation)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    getattr(ax, f"set_{which}scale")("log")
    axis = getattr(ax, f"{which}axis")
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def latency_png(rows: list[dict[str, Any]], model: str) -> tuple[str, bool, bool]:
    import numpy as np

    wheres = list(dict.fromkeys(row_where(r) for r in rows))
    variants = list(dict.fromkeys(str(r.get("variant")) for r in rows))
    colour = _colours(wheres)
    nt = len(wheres)
    band = 0.84 / nt
    data = [np.asarray(samples_ms(r["measurement"])) for r in rows]
    highs = [float(np.percentile(d, 99)) for d in data]
    lows = [float(np.percentile(d, 1)) for d in data]
    unit, k = ("µs", 1000.0) if max(highs) < 1.0 else ("ms", 1.0)  # 3.8 µs reads better than 0.0038 ms
    data = [d * k for d in data]
    fig = _figure(12.5, 1.3 + 0.26 * len(variants) * max(1.0, 0.75 * nt))
    ax = fig.subplots()
    positions = [variants.index(str(r.get("variant"))) - 0.42 + band * (wheres.index(row_where(r)) + 0.5) for r in rows]
    colours = [colour[row_where(r)] for r in rows]
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
            ax.axvline(r["measurement"]["derived"]["p50_ms"] * k, color=colour[row_where(r)], ls="--", lw=1, alpha=0.8)
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


def trends_png(labels: list[str], series: dict[tuple[str, str, str], dict[int, tuple[float, float | None]]],
               metric_name: str) -> str:
    """p50 (top) and metric (bottom) of each (model, variant, where) ``series`` (run index ->
    (p50 ms, metric)) over the runs, whose tick ``labels`` are given in order."""
    from matplotlib import colormaps

    models = sorted({k[0] for k in series})
    variants = list(dict.fromkeys(k[1] for k in series))
    wheres = list(dict.fromkeys(k[2] for k in series))
    cmap = colormaps["tab20"]
    styles = ["-", "--", ":", "-."]
    fig = _figure(12.5, 7.2)
    ax_lat, ax_met = fig.subplots(2, 1, sharex=True)
    xs = list(range(len(labels)))
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
    ax_met.set_xticks(xs, [_t(label) for label in labels], fontsize=8)
    ax_met.set_xlim(-0.3, len(labels) - 0.7)
    for ax in (ax_lat, ax_met):
        ax.grid(True, color="#e5e5e5", lw=0.6)
    fig.subplots_adjust(left=0.08, right=0.8, top=0.97, bottom=0.1, hspace=0.08)
    handles, labels = ax_lat.get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(0.81, 0.53), fontsize=8, frameon=False,
               ncol=1 if len(series) <= 26 else 2)
    return _png(fig, "p50 latency and metric per variant over runs")


#: Lifecycle phases drawn by :func:`lifecycle_png`: (label, where in a measurement dict).
LIFECYCLE = (("init (load)", (None, "init_ms")), ("first inference", (None, "first_inference_ms")),
             ("warm-up mean", ("profile", "warmup_mean_ms")), ("steady p50", ("derived", "p50_ms")))


def _phase(m: Mapping[str, Any], where: tuple[str | None, str]) -> float | None:
    section, key = where
    d = m if section is None else (m.get(section) or {})
    v = d.get(key)
    return float(v) if isinstance(v, (int, float)) and v > 0 else None


def lifecycle_png(rows: list[dict[str, Any]], model: str) -> tuple[str, bool]:
    """Grouped horizontal bars, one group per row (variant on a target): load/init time, the
    first inference, the warm-up mean and the steady-state p50, in ms. Returns (the
    ``<img>``, whether the axis is logarithmic). Phases a target did not measure are left out."""
    labels = [f"{r.get('variant')} on {row_where(r)}" for r in rows]
    values = [[_phase(r["measurement"], where) for _, where in LIFECYCLE] for r in rows]
    flat = [v for vs in values for v in vs if v is not None]
    colour = _colours(name for name, _ in LIFECYCLE)
    fig = _figure(12.5, 1.2 + 0.62 * len(rows))
    ax = fig.subplots()
    band = 0.8 / len(LIFECYCLE)
    for j, (name, _) in enumerate(LIFECYCLE):
        kept = [(i - 0.4 + band * (j + 0.5), v) for i, vs in enumerate(values) if (v := vs[j]) is not None]
        if kept:
            ax.barh([y for y, _ in kept], [x for _, x in kept], height=band * 0.9, color=colour[name], label=name)
    log = bool(flat) and max(flat) / min(flat) > 30
    if log:
        _log_axis(ax, "x")
    ax.set_yticks(range(len(rows)), [_t(x) for x in labels], fontsize=9)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlabel("ms" + (" (log scale)" if log else ""))
    ax.grid(True, axis="x", which="major", color="#e2e2e2", lw=0.6)
    ax.set_axisbelow(True)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, 1.0 + 0.5 / fig.get_figheight()), ncol=len(LIFECYCLE),
              frameon=False, fontsize=9)
    fig.tight_layout()
    return _png(fig, f"{model}: load, first inference, warm-up and steady-state time per variant"), log
