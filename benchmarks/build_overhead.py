"""Build overhead: each post-training variant built through pytest-edgeopt's Builder (cold
cache) vs the same conversion written directly against ``tf.lite.TFLiteConverter``.

    python benchmarks/build_overhead.py [--reps 12]

Both sides run in this one process, on the example's digits CNN (``.h5``) with the same
100 calibration samples, so they do equal work in the same process state:

- tensorflow is imported, and one full round of both sides is run untimed first, so the
  first-conversion costs (TF's import, MLIR/tracing set-up, the first ``load_model``) are
  excluded from both sides;
- each repetition, the plugin side gets a fresh ``Builder`` over an empty cache directory
  and a fresh ``ModelUnderTest`` (so it loads the ``.h5`` again, fingerprints it, keys,
  converts, stores, gzips: everything a cold run does); the bare side loads the ``.h5``
  again with ``tf_keras.models.load_model``. Each side's load is in its fp32 time;
- garbage: each conversion leaves ~12k cyclic objects whose collection takes 0.1-0.7 s, and
  Python's automatic full collections would charge it to whichever side happens to run
  next. So after the warm-up the surviving objects are frozen (``gc.freeze()``), each timed
  build starts after an untimed ``gc.collect()`` and ends with a timed one: each side pays
  for its own garbage;
- within a repetition, the variants are built in the same order on both sides, the two
  sides alternating which goes first (variant by variant and repetition by repetition).

Target: plugin / bare <= 1.10 for every variant (median over repetitions).
"""

from __future__ import annotations

import argparse
import gc
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from sidebyside import Ratio, header, say

VARIANTS = ("fp32", "float16", "dynamic_range", "int8", "int8_full", "int16x8")
TARGET = 1.10


def bare_convert(tf, model, variant: str, samples) -> bytes:
    """What a user writes without the plugin (TensorFlow's post-training quantization guide)."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if variant != "fp32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if variant in ("int8", "int8_full", "int16x8"):
        def representative_dataset():
            for s in samples:
                yield [s]

        converter.representative_dataset = representative_dataset
    if variant == "int8_full":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    elif variant == "int16x8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    return timed_convert(converter)


#: Seconds spent inside ``converter.convert()`` by the last conversion (either side).
CONVERT_S = [0.0]


def timed_convert(converter) -> bytes:
    t0 = time.perf_counter()
    try:
        return converter.convert()
    finally:
        CONVERT_S[0] = time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=12, help="repetitions of every variant per side (default 12)")
    args = ap.parse_args()
    header("build overhead: post-training variants through the Builder (cold cache) vs TFLiteConverter directly")

    from fixtures.digits import digits_model_path, representative_batches
    from pytest_edgeopt.model import ModelUnderTest
    from pytest_edgeopt.variants import tfenv
    from pytest_edgeopt.variants.builder import Builder
    from pytest_edgeopt.variants.cache import VariantCache
    from pytest_edgeopt.variants.tfenv import import_keras, import_tf, native_output_captured, quiet_warnings

    tf = import_tf()
    run_converter = tfenv.run_converter

    def run_converter_timed(converter, variant):  # the same clock inside the plugin's call
        converter.convert = (lambda inner: lambda: timed_convert_inner(inner))(converter.convert)
        return run_converter(converter, variant)

    def timed_convert_inner(inner):
        t0 = time.perf_counter()
        try:
            return inner()
        finally:
            CONVERT_S[0] = time.perf_counter() - t0

    tfenv.run_converter = run_converter_timed
    keras = import_keras()
    path = digits_model_path()
    samples = representative_batches(100)
    tmp = Path(tempfile.mkdtemp(prefix="edgeopt-build-overhead-"))
    plugin_s: dict[str, list[float]] = {v: [] for v in VARIANTS}
    bare_s: dict[str, list[float]] = {v: [] for v in VARIANTS}
    plugin_cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
    bare_cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
    plugin_own: dict[str, list[float]] = {v: [] for v in VARIANTS}  # build time minus convert()
    bare_own: dict[str, list[float]] = {v: [] for v in VARIANTS}
    plugin_size: dict[str, int] = {}
    bare_size: dict[str, int] = {}

    def one_rep(rep: int, record: bool) -> None:
        state: dict[str, object] = {}

        def plugin(v: str) -> float:
            gc.collect()
            c0 = time.process_time()
            t0 = time.perf_counter()
            if v == VARIANTS[0]:
                state["builder"] = Builder(VariantCache(tmp / f"cache-{rep}-{record}"))
                state["mut"] = ModelUnderTest(name="digits-cnn", model=path, representative_data=samples)
            CONVERT_S[0] = 0.0
            built = state["builder"].build(state["mut"], v)  # type: ignore[union-attr]
            gc.collect()
            dt = time.perf_counter() - t0
            state["plugin_cpu"] = time.process_time() - c0
            plugin_size[v] = built.size_bytes
            state["plugin_own"] = dt - CONVERT_S[0]
            return dt

        def bare(v: str) -> float:
            gc.collect()
            c0 = time.process_time()
            t0 = time.perf_counter()
            if v == VARIANTS[0]:
                state["model"] = keras.models.load_model(str(path))
            data = bare_convert(tf, state["model"], v, samples)
            gc.collect()
            dt = time.perf_counter() - t0
            state["bare_cpu"] = time.process_time() - c0
            bare_size[v] = len(data)
            state["bare_own"] = dt - CONVERT_S[0]
            return dt

        for i, v in enumerate(VARIANTS):
            # TF's C++ logging goes to fd 2 on the bare side; keep the terminal readable.
            with native_output_captured(), quiet_warnings():
                if (rep + i) % 2 == 0:
                    a, b = plugin(v), bare(v)
                else:
                    b, a = bare(v), plugin(v)
            if record:
                plugin_s[v].append(a)
                bare_s[v].append(b)
                plugin_cpu[v].append(state["plugin_cpu"])  # type: ignore[arg-type]
                bare_cpu[v].append(state["bare_cpu"])  # type: ignore[arg-type]
                plugin_own[v].append(state["plugin_own"])  # type: ignore[arg-type]
                bare_own[v].append(state["bare_own"])  # type: ignore[arg-type]
        if record:
            say(f"  rep {rep + 1}/{args.reps}: " + "  ".join(
                f"{v} {plugin_s[v][-1] / bare_s[v][-1]:.2f}" for v in VARIANTS))

    try:
        say("warm-up round (TF import, first conversions), untimed")
        t0 = time.perf_counter()
        one_rep(0, record=False)
        say(f"  warm-up took {time.perf_counter() - t0:.1f} s")
        gc.collect()
        gc.freeze()
        for rep in range(args.reps):
            one_rep(rep, record=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    ok_all = True
    for v in VARIANTS:
        r = Ratio(f"{v} build time", tuple(plugin_s[v]), tuple(bare_s[v]))
        ok = r.median <= TARGET
        ok_all &= ok
        print(r.line(f"<= {TARGET}", ok))
    total = Ratio("all six, summed per repetition", tuple(sum(plugin_s[v][i] for v in VARIANTS) for i in range(args.reps)),
                  tuple(sum(bare_s[v][i] for v in VARIANTS) for i in range(args.reps)))
    print(total.line(f"<= {TARGET}", total.median <= TARGET))
    for v in VARIANTS:
        print(Ratio(f"{v} CPU time (process)", tuple(plugin_cpu[v]), tuple(bare_cpu[v])).line("(information)", None))
    print("time outside converter.convert(), median ms, plugin / bare (noise-free view of the overhead): "
          + ", ".join(f"{v} {statistics.median(plugin_own[v]) * 1000:.0f}/{statistics.median(bare_own[v]) * 1000:.0f}"
                      for v in VARIANTS))
    print("sizes, plugin / bare bytes (same recipe, same bytes): "
          + ", ".join(f"{v} {plugin_size[v]:,}/{bare_size[v]:,}" for v in VARIANTS))
    print(f"overall: {'PASS' if ok_all else 'MISS'}")


if __name__ == "__main__":
    main()
