"""Post-training variants of MobileNetV2 sharing one SavedModel export vs six bare conversions.

    python benchmarks/ptq_shared_trace.py [--reps 2] [--res 96] [--out benchmarks/results/ptq_shared_trace.md]

A: the six post-training variants (fp32, float16, dynamic_range, int8, int8_full, int16x8)
built through pytest-edgeopt's ``Builder`` over an empty cache, in this process (a fresh
``Builder`` and ``ModelUnderTest`` every repetition, so the ``.h5`` is loaded and the model
exported again): the model is exported as a SavedModel once and every conversion reuses it
(``pytest_edgeopt/variants/keras_export.py``).
B: six bare ``TFLiteConverter.from_keras_model(model).convert()`` scripts with the same
settings and the same 100 calibration samples, after one ``tf_keras.models.load_model``.

The model is ``tf_keras.applications.MobileNetV2(input_shape=(RES, RES, 3), weights=None)``
(3.5M parameters; the file sizes do not depend on the weights), seeded, saved as ``.h5``.
TensorFlow's import and the converter's first-use costs are paid first, untimed, on a tiny
model. The sides alternate which goes first; garbage is collected before (untimed) and
after (timed) each side. Every conversion is split into the converter's phases by timing
its internal calls (both sides alike): the SavedModel save (tracing every layer), loading
it back (GraphDef and restored object), the MLIR conversion, calibration + quantization,
and the flatbuffer post-processing. The bytes of every variant are compared between the
sides. Target: A / B <= 0.7 (all six, median over repetitions), bytes identical.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from sidebyside import RESULTS, Ratio, bare_converter, cpu_model, header, say

VARIANTS = ("fp32", "float16", "dynamic_range", "int8", "int8_full", "int16x8")
TARGET = 0.7
PHASES = ("save SavedModel", "load GraphDef", "load object", "MLIR convert", "calibrate + quantize", "flatbuffer post")


def bare_convert(tf: Any, model: Any, variant: str, samples: list[Any]) -> bytes:
    """What a user writes without the plugin (TensorFlow's post-training quantization guide)."""
    return bytes(bare_converter(tf, model, variant, samples).convert())


#: Seconds per phase since the last reset (the converter's internal calls, wrapped below).
PHASE_S: dict[str, float] = defaultdict(float)


def instrument() -> None:
    """Time the converter's phases by wrapping the internal calls that make them (TF 2.21)."""
    from tensorflow.lite.python import lite

    def wrap(owner: Any, name: str, phase: str) -> None:
        inner = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                PHASE_S[phase] += time.perf_counter() - t0

        setattr(owner, name, timed)

    wrap(lite._save, "save", "save SavedModel")
    wrap(lite.TFLiteConverterBaseV2, "_load_saved_model", "load GraphDef")
    wrap(lite, "_load", "load object")
    wrap(lite, "_convert_graphdef", "MLIR convert")
    wrap(lite.TFLiteConverterBase, "_quantize", "calibrate + quantize")
    wrap(lite.flatbuffer_utils, "convert_bytearray_to_object", "flatbuffer post")
    wrap(lite.flatbuffer_utils, "convert_object_to_bytearray", "flatbuffer post")


def make_model(keras: Any, res: int, path: Path) -> int:
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(input_shape=(res, res, 3), weights=None)
    model.save(path)
    return int(model.count_params())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=2, help="repetitions of the six variants per side (default 2)")
    ap.add_argument("--res", type=int, default=96, help="MobileNetV2 input size (default 96)")
    ap.add_argument("--samples", type=int, default=100, help="calibration samples (default 100, the plugin's default)")
    ap.add_argument("--out", type=Path, default=RESULTS / "ptq_shared_trace.md", help="markdown results file")
    args = ap.parse_args()
    header(f"post-training variants of MobileNetV2 {args.res}x{args.res}: shared export (Builder) vs six bare conversions")

    import numpy as np

    from pytest_edgeopt.model import ModelUnderTest
    from pytest_edgeopt.variants.builder import Builder
    from pytest_edgeopt.variants.cache import VariantCache
    from pytest_edgeopt.variants.tfenv import import_keras, import_tf, native_output_captured, quiet_warnings

    tf, keras = import_tf(), import_keras()
    instrument()
    tmp = Path(tempfile.mkdtemp(prefix="edgeopt-ptq-shared-"))
    rng = np.random.default_rng(0)
    samples = [rng.random((1, args.res, args.res, 3), dtype=np.float32) for _ in range(args.samples)]
    a_s: list[float] = []
    b_s: list[float] = []
    a_var: dict[str, list[float]] = defaultdict(list)
    b_var: dict[str, list[float]] = defaultdict(list)
    a_phase: dict[str, list[float]] = defaultdict(list)
    b_phase: dict[str, list[float]] = defaultdict(list)
    sizes: dict[str, tuple[int, int, bool]] = {}

    def plugin(path: Path, rep: int, record: bool) -> tuple[float, dict[str, bytes]]:
        gc.collect()
        PHASE_S.clear()
        t0 = time.perf_counter()
        builder = Builder(VariantCache(tmp / f"cache-{rep}-{record}"))
        mut = ModelUnderTest(name=path.stem, model=path, representative_data=samples,
                             options={"calibration_samples": len(samples)})
        out = {}
        for v in VARIANTS:
            t1 = time.perf_counter()
            out[v] = builder.build(mut, v).read_bytes()
            if record:
                a_var[v].append(time.perf_counter() - t1)
        del builder, mut
        gc.collect()
        dt = time.perf_counter() - t0
        if record:
            for p in PHASES:
                a_phase[p].append(PHASE_S[p])
        return dt, out

    def bare(path: Path, record: bool) -> tuple[float, dict[str, bytes]]:
        gc.collect()
        PHASE_S.clear()
        t0 = time.perf_counter()
        model = keras.models.load_model(str(path))
        out = {}
        for v in VARIANTS:
            t1 = time.perf_counter()
            out[v] = bare_convert(tf, model, v, samples)
            if record:
                b_var[v].append(time.perf_counter() - t1)
        del model
        gc.collect()
        dt = time.perf_counter() - t0
        if record:
            for p in PHASES:
                b_phase[p].append(PHASE_S[p])
        return dt, out

    try:
        with native_output_captured(), quiet_warnings():
            tiny = tmp / "tiny.h5"
            keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3), keras.layers.Flatten(),
                              keras.layers.Dense(2)]).save(tiny)
            big = tmp / f"mobilenetv2_{args.res}.h5"
            params = make_model(keras, args.res, big)
        say(f"warm-up on a tiny model (TF import, first conversions), untimed; MobileNetV2 {params:,} parameters")
        keep = samples
        samples = [np.zeros((1, 8, 8, 3), np.float32)] * 4
        with native_output_captured(), quiet_warnings():
            plugin(tiny, -1, record=False)
            bare(tiny, record=False)
        samples = keep
        gc.collect()
        gc.freeze()
        for rep in range(args.reps):
            with native_output_captured(), quiet_warnings():
                if rep % 2 == 0:
                    (a, a_out), (b, b_out) = plugin(big, rep, True), bare(big, True)
                else:
                    (b, b_out), (a, a_out) = bare(big, True), plugin(big, rep, True)
            a_s.append(a)
            b_s.append(b)
            for v in VARIANTS:
                sizes[v] = (len(a_out[v]), len(b_out[v]), a_out[v] == b_out[v])
            say(f"  rep {rep + 1}/{args.reps}: shared {a:.1f} s, bare {b:.1f} s, ratio {a / b:.3f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    total = Ratio("all six post-training variants", tuple(a_s), tuple(b_s))
    identical = all(same for _, _, same in sizes.values())
    ok = total.median <= TARGET and identical
    lines = [total.line(f"<= {TARGET}", total.median <= TARGET)]
    lines.append("")
    lines.append("| variant | shared (A) s | bare (B) s | A bytes | B bytes | identical |")
    lines.append("|---|---|---|---|---|---|")
    for v in VARIANTS:
        sa, sb, same = sizes[v]
        lines.append(f"| {v} | {statistics.median(a_var[v]):.1f} | {statistics.median(b_var[v]):.1f} | "
                     f"{sa:,} | {sb:,} | {'yes' if same else 'NO'} |")
    lines.append("")
    lines.append("Where the time goes, seconds summed over the six conversions (median over repetitions):")
    lines.append("")
    lines.append("| phase | shared (A) | bare (B) |")
    lines.append("|---|---|---|")
    for p in PHASES:
        lines.append(f"| {p} | {statistics.median(a_phase[p]):.1f} | {statistics.median(b_phase[p]):.1f} |")
    lines.append(f"| total (wall, load and bookkeeping included) | {statistics.median(a_s):.1f} | {statistics.median(b_s):.1f} |")
    lines.append("")
    lines.append(f"overall: {'PASS' if ok else 'MISS'} (ratio {total.median:.3f}, target <= {TARGET}; "
                 f"bytes {'identical' if identical else 'DIFFER'})")
    text = "\n".join(lines)
    print(text)
    if args.out:
        command = "python " + " ".join(["benchmarks/ptq_shared_trace.py", *sys.argv[1:]])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        args.out.write_text(f"# Post-training variants of MobileNetV2: one shared export vs six bare conversions\n\n"
                            f"Measured {stamp} with `{command}` (MobileNetV2 {args.res}x{args.res}, "
                            f"{params:,} parameters, {len(samples)} calibration samples, {args.reps} repetitions) on "
                            f"{cpu_model()}, {os.cpu_count()} cores (shared).\n\n"
                            f"{text}\n")


if __name__ == "__main__":
    main()
