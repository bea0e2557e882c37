"""Latency fidelity: the CPU p50 the harness reports vs a bare ``invoke()`` loop.

    python benchmarks/latency_fidelity.py [--reps 20]

For each post-training variant of the example's digits CNN (built once into
``.edgeopt/benchmarks/cache``), alternately:

- A, the harness: ``CpuTarget().latency(path, settings)`` with the plugin's default settings
  (10 warm-up invokes, then timed invokes until 200 samples and 0.25 s, at most 5,000), as a
  test's ``measurement.latency.p50_ms``;
- B, bare: a LiteRT ``Interpreter`` made the same way (one thread, default op resolver),
  the same input, 10 warm-up invokes, then the same number of
  ``t0 = perf_counter_ns(); interp.invoke(); t1 = perf_counter_ns()`` samples; its median.

Each repetition uses new interpreters on both sides. Target: A/B within 0.97-1.03 (median
over repetitions). Also printed: the same comparison with both loops timing one and the
same interpreter object (``time_invokes`` vs the bare loop), which isolates the timing loop.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from sidebyside import WORK, Ratio, header, say

VARIANTS = ("fp32", "float16", "dynamic_range", "int8", "int8_full", "int16x8")
LOW, HIGH = 0.97, 1.03


def build_variants() -> dict[str, Path]:
    from fixtures.digits import digits_model_path, representative_batches
    from pytest_edgeopt.model import ModelUnderTest
    from pytest_edgeopt.variants.builder import Builder
    from pytest_edgeopt.variants.cache import VariantCache

    mut = ModelUnderTest(name="digits-cnn", model=digits_model_path(), representative_data=representative_batches(100))
    builder = Builder(VariantCache(WORK / "cache"), progress=say)
    return {v: builder.build(mut, v).path for v in VARIANTS}


def bare_input(interp):
    """The input the harness times with: uniform [0, 1) floats from seed 0, quantized if needed."""
    import numpy as np

    d = interp.get_input_details()[0]
    x = np.random.default_rng(0).random(tuple(d["shape"]), dtype=np.float32)
    scale, zero = d["quantization"]
    if np.issubdtype(d["dtype"], np.integer) and scale:
        info = np.iinfo(d["dtype"])
        x = np.clip(np.round(x / scale) + zero, info.min, info.max)
    return d["index"], x.astype(d["dtype"])


def bare_loop(interp, n: int, warmup: int = 10) -> float:
    """The median of ``n`` timed invokes, in microseconds."""
    invoke = interp.invoke
    clock = time.perf_counter_ns
    invoke()
    for _ in range(warmup):
        invoke()
    samples = [0] * n
    for i in range(n):
        t0 = clock()
        invoke()
        t1 = clock()
        samples[i] = t1 - t0
    return statistics.median(samples) / 1000.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=20, help="repetitions per variant and side (default 20)")
    args = ap.parse_args()
    header("latency fidelity: harness CPU p50 vs a bare invoke() loop")
    from ai_edge_litert.interpreter import Interpreter

    from pytest_edgeopt.targets.base import LatencySettings
    from pytest_edgeopt.targets.cpu import CpuTarget
    from pytest_edgeopt.timing import time_invokes

    paths = build_variants()
    settings = LatencySettings(warmup=10, min_samples=200, min_time_s=0.25, max_samples=5000, threads=1)
    target = CpuTarget()
    ok_all = True
    lines_same = []
    for v, path in paths.items():
        content = path.read_bytes()
        count = [0]

        def harness() -> float:
            stats = target.latency(path, settings).stats
            count[0] = stats.count
            return stats.p50_ms * 1000

        def bare() -> float:
            interp = Interpreter(model_content=content, num_threads=1)
            interp.allocate_tensors()
            interp.set_tensor(*bare_input(interp))
            return bare_loop(interp, count[0] or 5000)

        harness()  # page in the model and the kernels; sets the sample count
        a: list[float] = []
        b: list[float] = []
        same_a: list[float] = []
        same_b: list[float] = []
        for i in range(args.reps):
            pair = (harness, bare) if i % 2 == 0 else (bare, harness)
            got = {f: f() for f in pair}
            a.append(got[harness])
            b.append(got[bare])
            # One interpreter, both loops (alternating which goes first).
            interp = Interpreter(model_content=content, num_threads=1)
            interp.allocate_tensors()
            interp.set_tensor(*bare_input(interp))
            loops = [lambda: time_invokes(interp.invoke, settings).stats.p50_ms * 1000,
                     lambda: bare_loop(interp, count[0])]
            order = loops if i % 2 == 0 else loops[::-1]
            res = [f() for f in order]
            sa, sb = (res[0], res[1]) if i % 2 == 0 else (res[1], res[0])
            same_a.append(sa)
            same_b.append(sb)
        r = Ratio(f"{v} p50 ({count[0]} samples)", tuple(a), tuple(b), unit="us")
        ok = LOW <= r.median <= HIGH
        ok_all &= ok
        print(r.line(f"{LOW}-{HIGH}", ok))
        lines_same.append(Ratio(f"{v} same interpreter", tuple(same_a), tuple(same_b), unit="us").line("(information)", None))
        say(f"  {v}: done")
    print("timing loop only (time_invokes vs the bare loop, one interpreter object):")
    for line in lines_same:
        print("  " + line)
    print(f"overall: {'PASS' if ok_all else 'MISS'}")


if __name__ == "__main__":
    main()
