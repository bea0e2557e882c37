"""Build overhead: each post-training variant built through pytest-edgeopt's Builder (cold
cache) vs the same conversion written directly against ``tf.lite.TFLiteConverter``; and
(``--family finetune``) the fine-tuning families, QAT, pruning and clustering, through the
Builder vs a bare tfmot script with the same data, epochs, batch size, learning rate and seed.

    python benchmarks/build_overhead.py [--family ptq|finetune|all] [--reps 12]

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

Fine-tuning families (``qat_int8``, ``pruned``, ``clustered``): the same protocol, on the
same ``.h5`` with the example's 1,347 training digits, 2 epochs of batch 32, Adam 1e-3,
seed 0 and the model's compiled loss. The bare side is what tfmot's guides write:
``quantize_model`` / ``prune_low_magnitude`` (the plugin's polynomial schedule, written
out) with ``UpdatePruningStep`` / ``cluster_weights`` (16 clusters, k-means++), compile,
fit, ``strip_*``, then ``TFLiteConverter`` (``Optimize.DEFAULT`` for QAT, float32 for the
other two). The plugin side also keys the build, fingerprints the training data, plans
which layers tfmot can take, stores the fine-tuned weights as a shared cache entry and
writes the variant. The script prints both sides' sizes (not bytes: the plugin names
tfmot's auto-named layers from zero in every build, the bare script does not).

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

from sidebyside import Ratio, bare_converter, header, say

VARIANTS = ("fp32", "float16", "dynamic_range", "int8", "int8_full", "int16x8")
TARGET = 1.10


def bare_convert(tf, model, variant: str, samples) -> bytes:
    """What a user writes without the plugin (TensorFlow's post-training quantization guide)."""
    return timed_convert(bare_converter(tf, model, variant, samples))


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
    ap.add_argument("--family", choices=("ptq", "finetune", "all"), default="ptq",
                    help="post-training variants (default), the fine-tuning families, or both")
    args = ap.parse_args()
    if args.family in ("ptq", "all"):
        ptq_main(args)
    if args.family in ("finetune", "all"):
        finetune_main(args)


def ptq_main(args: argparse.Namespace) -> None:
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

    run_rounds(one_rep, args.reps, tmp, "TF import, first conversions")
    ok_all = judge(VARIANTS, plugin_s, bare_s, args.reps, "all six")
    for v in VARIANTS:
        print(Ratio(f"{v} CPU time (process)", tuple(plugin_cpu[v]), tuple(bare_cpu[v])).line("(information)", None))
    print("time outside converter.convert(), median ms, plugin / bare (noise-free view of the overhead): "
          + ", ".join(f"{v} {statistics.median(plugin_own[v]) * 1000:.0f}/{statistics.median(bare_own[v]) * 1000:.0f}"
                      for v in VARIANTS))
    print("sizes, plugin / bare bytes (same recipe, same bytes): "
          + ", ".join(f"{v} {plugin_size[v]:,}/{bare_size[v]:,}" for v in VARIANTS))
    print(f"overall: {'PASS' if ok_all else 'MISS'}")


def run_rounds(one_rep, reps: int, tmp, warm_up: str) -> None:
    """One untimed warm-up round (``warm_up`` says what it absorbs), then ``reps`` recorded
    ones with the garbage collector's survivors frozen; ``tmp`` is removed at the end."""
    try:
        say(f"warm-up round ({warm_up}), untimed")
        t0 = time.perf_counter()
        one_rep(0, record=False)
        say(f"  warm-up took {time.perf_counter() - t0:.1f} s")
        gc.collect()
        gc.freeze()
        for rep in range(reps):
            one_rep(rep, record=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def judge(names, plugin_s, bare_s, reps: int, all_label: str) -> bool:
    """Print each variant's build-time ratio and their per-repetition sum against TARGET;
    True when every variant's median meets it."""
    ok_all = True
    for v in names:
        r = Ratio(f"{v} build time", tuple(plugin_s[v]), tuple(bare_s[v]))
        ok = r.median <= TARGET
        ok_all &= ok
        print(r.line(f"<= {TARGET}", ok))
    total = Ratio(f"{all_label}, summed per repetition", tuple(sum(plugin_s[v][i] for v in names) for i in range(reps)),
                  tuple(sum(bare_s[v][i] for v in names) for i in range(reps)))
    print(total.line(f"<= {TARGET}", total.median <= TARGET))
    return ok_all


FINETUNE = ("qat_int8", "pruned", "clustered")
#: The plugin's defaults (variants/registry.py), written out for the bare side.
EPOCHS, BATCH, LEARNING_RATE, SEED, SPARSITY, CLUSTERS = 2, 32, 1e-3, 0, 0.8, 16


def bare_finetune(tf, keras, tfmot, path: Path, variant: str, x, y) -> bytes:
    """What a user writes from tfmot's guides: wrap, compile, fit, strip, convert."""
    model = keras.models.load_model(str(path))
    callbacks = []
    keras.utils.set_random_seed(SEED)
    if variant == "qat_int8":
        model = tfmot.quantization.keras.quantize_model(model)
    elif variant == "pruned":
        steps = EPOCHS * -(-len(x) // BATCH)
        end = int((steps - 1) * 0.7)
        frequency = max(1, end // 10)
        schedule = tfmot.sparsity.keras.PolynomialDecay(initial_sparsity=0.0, final_sparsity=SPARSITY, begin_step=0,
                                                        end_step=(end // frequency) * frequency, frequency=frequency)
        model = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
        callbacks.append(tfmot.sparsity.keras.UpdatePruningStep())
    else:
        model = tfmot.clustering.keras.cluster_weights(
            model, number_of_clusters=CLUSTERS,
            cluster_centroids_init=tfmot.clustering.keras.CentroidInitialization.KMEANS_PLUS_PLUS)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=LEARNING_RATE),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    keras.utils.set_random_seed(SEED)
    model.fit(x, y, epochs=EPOCHS, batch_size=BATCH, shuffle=True, verbose=0, callbacks=callbacks)
    if variant == "pruned":
        model = tfmot.sparsity.keras.strip_pruning(model)
    elif variant == "clustered":
        model = tfmot.clustering.keras.strip_clustering(model)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if variant == "qat_int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


def finetune_main(args: argparse.Namespace) -> None:
    header("build overhead: QAT, pruning and clustering through the Builder (cold cache) vs a bare tfmot script")
    from fixtures.digits import digits_model_path, representative_batches, train_data
    from pytest_edgeopt.model import ModelUnderTest
    from pytest_edgeopt.variants.builder import Builder
    from pytest_edgeopt.variants.cache import VariantCache
    from pytest_edgeopt.variants.tfenv import (
        import_keras,
        import_tf,
        import_tfmot,
        native_output_captured,
        quiet_warnings,
    )

    tf, keras, tfmot = import_tf(), import_keras(), import_tfmot()
    path = digits_model_path()
    samples = representative_batches(100)
    x, y = train_data()
    tmp = Path(tempfile.mkdtemp(prefix="edgeopt-build-overhead-ft-"))
    plugin_s: dict[str, list[float]] = {v: [] for v in FINETUNE}
    bare_s: dict[str, list[float]] = {v: [] for v in FINETUNE}
    sizes: dict[str, tuple[int, int]] = {}

    def plugin(v: str, tag: str) -> float:
        gc.collect()
        t0 = time.perf_counter()
        builder = Builder(VariantCache(tmp / f"cache-{tag}"))
        mut = ModelUnderTest(name="digits-cnn", model=path, representative_data=samples, train_data=(x, y))
        built = builder.build(mut, v)
        del builder, mut
        gc.collect()
        dt = time.perf_counter() - t0
        sizes[v] = (built.size_bytes, sizes.get(v, (0, 0))[1])
        return dt

    def bare(v: str) -> float:
        gc.collect()
        t0 = time.perf_counter()
        data = bare_finetune(tf, keras, tfmot, path, v, x, y)
        gc.collect()
        dt = time.perf_counter() - t0
        sizes[v] = (sizes.get(v, (0, 0))[0], len(data))
        return dt

    def one_rep(rep: int, record: bool) -> None:
        for i, v in enumerate(FINETUNE):
            with native_output_captured(), quiet_warnings():
                if (rep + i) % 2 == 0:
                    a, b = plugin(v, f"{rep}-{record}-{v}"), bare(v)
                else:
                    b, a = bare(v), plugin(v, f"{rep}-{record}-{v}")
            if record:
                plugin_s[v].append(a)
                bare_s[v].append(b)
        if record:
            say(f"  rep {rep + 1}/{args.reps}: " + "  ".join(
                f"{v} {plugin_s[v][-1] / bare_s[v][-1]:.2f}" for v in FINETUNE))

    run_rounds(one_rep, args.reps, tmp, "TF and tfmot import, first fine-tunings and conversions")
    ok_all = judge(FINETUNE, plugin_s, bare_s, args.reps, "all three")
    print("sizes, plugin / bare bytes: " + ", ".join(f"{v} {sizes[v][0]:,}/{sizes[v][1]:,}" for v in FINETUNE))
    print(f"overall: {'PASS' if ok_all else 'MISS'}")


if __name__ == "__main__":
    main()
