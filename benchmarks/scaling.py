"""Scaling: build time, size and CPU latency of every variant against the model's parameter count.

    python benchmarks/scaling.py [--widths 0.316,1,3.16,10] [--epochs 20] [--variants V1,V2] [--out DIR]

The example's digits CNN (Conv2D(16) -> MaxPool -> Conv2D(32) -> Dense(64) -> Dense(10)) at
width multipliers 0.316, 1, 3.16 and 10 (filters and units times the multiplier): about 4k,
38k, 375k and 3.75M parameters, ten times more each step. Width 1 is the example's own
model (``fixtures.digits``); the others are trained with the same recipe once and kept in
``.edgeopt/benchmarks/scaling``.

In one process, after an untimed warm-up (one variant of each kind on the smallest model:
TensorFlow, tfmot and AI Edge Quantizer imported, first conversions and fits done), each width gets a fresh
``Builder`` over an empty cache and every variant is built with the default knobs and
measured with ``pytest_edgeopt.measure.observe`` on the CPU target (1 thread; latency:
5 warm-up invokes, then at least 50 samples and 0.25 s, at most 3 s). Build time is the
variant's own ``build_seconds`` (what ``optimized_model.build_seconds`` reports: the fp32
a builder starts from, and the pruned/clustered model ``pruned_int8``/``clustered_int8``
share with ``pruned``/``clustered``, are counted where they were first built).

Writes ``benchmarks/results/scaling.json`` and the plot ``benchmarks/results/scaling.png``
(build time, size and p50 latency against parameters, log-log, one line per variant), and
prints the table and the log-log slope of each quantity (cost ~ parameters ** slope).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from sidebyside import RESULTS, WORK, header, say

#: Built untimed first: one of each kind of build, so the imports (tensorflow, tfmot, AI Edge
#: Quantizer) and first-use costs (MLIR, tracing, the first fit) land in no variant's time.
WARMUP = ("fp32", "int8", "int16x8", "qat_int8", "pruned", "clustered", "aeq_dynamic_wi8", "aeq_static_a8w8")
FAMILY_COLORS = {"baseline": "black", "ptq": "tab:blue", "tfmot": "tab:orange", "aeq": "tab:green"}


def build_model(keras, width: float):
    layers = keras.layers
    c1, c2, d = (max(1, round(n * width)) for n in (16, 32, 64))
    model = keras.Sequential([
        keras.Input(shape=(8, 8, 1), name="image"),
        layers.Conv2D(c1, 3, padding="same", activation="relu", name="conv1"),
        layers.MaxPooling2D(2, name="pool"),
        layers.Conv2D(c2, 3, padding="same", activation="relu", name="conv2"),
        layers.Flatten(name="flatten"),
        layers.Dense(d, activation="relu", name="dense"),
        layers.Dense(10, activation="softmax", name="probs"),
    ], name=f"digits_cnn_w{width:g}")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def model_path(width: float, epochs: int) -> Path:
    """The trained model at ``width`` (the example's own file at width 1 and 20 epochs)."""
    from fixtures.cache import legacy_tf_keras, package_versions, recipe_key
    from fixtures.digits import digits_data, digits_model_path, save_h5

    if width == 1 and epochs == 20:
        return digits_model_path()
    key = recipe_key(build_model, package_versions("tf-keras", "scikit-learn"), f"width={width:g};epochs={epochs}")
    path = WORK / "scaling" / f"digits_cnn_w{width:g}-{key}.h5"
    if path.exists():
        return path
    _, keras = legacy_tf_keras()
    data = digits_data()
    keras.utils.set_random_seed(0)
    model = build_model(keras, width)
    say(f"training the width-{width:g} model ({model.count_params():,} parameters, {epochs} epochs)")
    model.fit(data.x_train, data.y_train, epochs=epochs, batch_size=32, shuffle=True, verbose=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.h5")
    save_h5(model, tmp)
    tmp.replace(path)
    return path


def run_width(path: Path, cache: Path, variants, settings) -> list[dict]:
    from fixtures.digits import digits_data, representative_batches
    from pytest_edgeopt.measure import observe
    from pytest_edgeopt.model import ModelUnderTest
    from pytest_edgeopt.targets.cpu import CpuTarget
    from pytest_edgeopt.variants.builder import Builder
    from pytest_edgeopt.variants.cache import VariantCache

    data = digits_data()
    mut = ModelUnderTest(name=path.stem, model=path, representative_data=representative_batches(100),
                         train_data=(data.x_train, data.y_train), eval_data=(data.x_eval, data.y_eval))
    builder = Builder(VariantCache(cache))
    target = CpuTarget()
    rows = []
    for v in variants:
        t0 = time.perf_counter()
        built = builder.build(mut, v)
        wall = time.perf_counter() - t0
        obs = observe(target, built, mut, settings)
        rows.append({"variant": v, "build_s": built.build_seconds, "build_wall_s": wall, "size_bytes": built.size_bytes,
                     "gzip_bytes": built.compressed_size_bytes, "p50_ms": obs.latency.p50_ms,
                     "samples": obs.latency.count, "top1": obs.accuracy.value if obs.accuracy else None})
        say(f"  {v:<20} build {built.build_seconds:6.2f} s  size {built.size_bytes / 1024:9.1f} KiB  "
            f"p50 {obs.latency.p50_ms:8.4f} ms  top-1 {rows[-1]['top1']:.4f}")
    return rows


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log(y) on log(x)."""
    lx = [math.log(x) for x in xs]
    ly = [math.log(max(y, 1e-9)) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    den = sum((a - mx) ** 2 for a in lx)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / den if den else float("nan")


def plot(results: list[dict], families: dict[str, str], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = [r["variant"] for r in results[0]["rows"]]
    params = [r["params"] for r in results]
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.8))
    panels = (("build_s", "build time (s)"), ("size_bytes", "size (bytes)"), ("p50_ms", "CPU latency p50 (ms, 1 thread)"))
    styles = ["-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1))]
    markers = ["o", "s", "^", "D", "v", "P", "X", "*", "h", "<"]
    seen: dict[str, int] = {}
    for v in variants:
        fam = families[v]
        k = seen.get(fam, 0)
        seen[fam] = k + 1
        for ax, (key, _) in zip(axes, panels):
            ys = [next(r for r in res["rows"] if r["variant"] == v)[key] for res in results]
            ax.plot(params, ys, linestyle=styles[k % len(styles)], marker=markers[k % len(markers)], ms=4,
                    color=FAMILY_COLORS.get(fam, "gray"),
                    alpha=0.85, label=v if ax is axes[0] else None)
    for ax, (_, label) in zip(axes, panels):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("parameters")
        ax.set_title(label)
        ax.grid(True, which="both", alpha=0.3)
    fig.legend(loc="center right", fontsize=8, title="variant (colour: family)")
    fig.suptitle("pytest-edgeopt: digits CNN at 4 widths, every variant (benchmarks/scaling.py)")
    fig.tight_layout(rect=(0, 0, 0.86, 0.95))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", default="0.316,1,3.16,10", help="width multipliers (default 0.316,1,3.16,10)")
    ap.add_argument("--epochs", type=int, default=20, help="training epochs of the scaled models (default 20)")
    ap.add_argument("--variants", default=None, help="comma-separated subset (default: every variant)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="where scaling.json and scaling.png go (default benchmarks/results)")
    args = ap.parse_args()
    header("scaling: every variant of the digits CNN at growing widths")
    from pytest_edgeopt.targets.base import LatencySettings
    from pytest_edgeopt.variants.registry import VARIANTS
    from pytest_edgeopt.variants.tfenv import import_keras

    keras = import_keras()
    widths = [float(w) for w in args.widths.split(",")]
    variants = args.variants.split(",") if args.variants else list(VARIANTS)
    families = {v: VARIANTS[v].family for v in variants}
    settings = LatencySettings(warmup=5, min_samples=50, min_time_s=0.25, max_time_s=3.0, max_samples=5000, threads=1)
    paths = {w: model_path(w, args.epochs) for w in widths}
    tmp = Path(tempfile.mkdtemp(prefix="edgeopt-scaling-"))
    results = []
    try:
        warm = [v for v in WARMUP if v in variants]
        say(f"warm-up (untimed): {', '.join(warm)} of the width-{widths[0]:g} model")
        t0 = time.perf_counter()
        run_width(paths[widths[0]], tmp / "warmup", warm, settings)
        say(f"  warm-up took {time.perf_counter() - t0:.1f} s")
        for w in widths:
            params = keras.models.load_model(str(paths[w])).count_params()
            say(f"width {w:g}: {params:,} parameters")
            t0 = time.perf_counter()
            rows = run_width(paths[w], tmp / f"w{w:g}", variants, settings)
            results.append({"width": w, "params": params, "model": paths[w].name, "rows": rows,
                            "wall_s": time.perf_counter() - t0})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    params = [r["params"] for r in results]
    print(f"{'variant':<20}" + "".join(f"{p:>11,} params" for p in params) + "   slope (log-log)")
    for key, label, fmt in (("build_s", "build time s", "{:>18.2f}"), ("size_bytes", "size KiB", "{:>18.1f}"),
                            ("p50_ms", "p50 ms", "{:>18.4f}")):
        print(f"-- {label}")
        for v in variants:
            ys = [next(r for r in res["rows"] if r["variant"] == v)[key] for res in results]
            shown = [y / 1024 for y in ys] if key == "size_bytes" else ys
            print(f"{v:<20}" + "".join(fmt.format(y) for y in shown) + f"   {slope(params, ys):.2f}")
    print("-- top-1 on the 450 eval samples")
    for v in variants:
        print(f"{v:<20}" + "".join(f"{next(r for r in res['rows'] if r['variant'] == v)['top1']:>18.4f}" for res in results))
    totals = [sum(r["build_s"] for r in res["rows"]) for res in results]
    print(f"{'all variants, build s':<20}" + "".join(f"{t:>18.1f}" for t in totals) + f"   {slope(params, totals):.2f}")
    print(f"{'width wall time s':<20}" + "".join(f"{res['wall_s']:>18.1f}" for res in results))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scaling.json").write_text(json.dumps({"results": results, "latency": {
        "warmup": settings.warmup, "min_samples": settings.min_samples, "min_time_s": settings.min_time_s,
        "max_time_s": settings.max_time_s, "threads": settings.threads}}, indent=1))
    plot(results, families, args.out / "scaling.png")
    print(f"written: {args.out / 'scaling.json'}, {args.out / 'scaling.png'}")


if __name__ == "__main__":
    main()
