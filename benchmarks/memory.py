"""Memory: peak RSS of a full example run vs the fp32 model's own conversion, and whether
any variant stays in memory after its test.

    python benchmarks/memory.py

Five child processes, each measured on its own (``os.wait4``'s rusage, ``ru_maxrss``):

- the bare conversion: import tensorflow, load the example's ``.h5``, convert it to fp32
  with ``TFLiteConverter`` (what any TFLite user pays);
- the example suite from an empty cache (all 18 variants built, fine-tuned and measured),
  with ``benchmarks/memory_probe.py`` loaded: after each test it collects garbage and records
  the RSS and the LiteRT interpreters, TFLite converters and Keras models still alive;
- the example suite again, warm (every variant from the cache).

Reported: peak RSS ratios (no target: "report it"), and "no variant held in memory after
use": PASS when no interpreter or converter outlives its test and the Keras models alive
stay bounded (the session keeps the user's model and the shared pruned/clustered
intermediates, see ``BuildContext.memo``), with the RSS growth per test after the first
tests (TensorFlow's own import and first-use allocations). What RSS still grows is
TensorFlow's: a fourth child builds ``qat_int8`` five times through the Builder and a fifth
five times with bare tfmot + TFLiteConverter; both keep the same few MiB per build.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from sidebyside import ROOT, header, python_env, run_child, say

BARE = '''import sys
sys.path.insert(0, %r)
from fixtures.digits import digits_model_path
from pytest_edgeopt.variants.tfenv import import_keras, import_tf
tf = import_tf()
keras = import_keras()
model = keras.models.load_model(str(digits_model_path()))
data = tf.lite.TFLiteConverter.from_keras_model(model).convert()
print("bytes", len(data))
''' % (str(ROOT),)


REPEAT = '''import ctypes, gc, os, sys, tempfile
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path[:0] = [%r, %r]
from memory_probe import rss_mib
from fixtures.digits import digits_data, digits_model_path, representative_batches
side, builds = sys.argv[1], int(sys.argv[2])
data = digits_data()
libc = ctypes.CDLL("libc.so.6")
if side == "bare":
    from pytest_edgeopt.variants.tfenv import import_keras, import_tf, import_tfmot
    tf, keras, tfmot = import_tf(), import_keras(), import_tfmot()
else:
    from pytest_edgeopt.variants.builder import Builder
    from pytest_edgeopt.variants.cache import VariantCache
    from pytest_edgeopt.model import ModelUnderTest
for i in range(builds):
    if side == "bare":  # tfmot's QAT guide, as a user writes it
        model = tfmot.quantization.keras.quantize_model(keras.models.load_model(str(digits_model_path())))
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
        model.fit(data.x_train, data.y_train, epochs=2, batch_size=32, verbose=0)
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.convert()
        del model, converter
    else:  # a fresh builder and cache each time: the whole build again
        mut = ModelUnderTest(name="digits-cnn", model=digits_model_path(), train_data=(data.x_train, data.y_train))
        Builder(VariantCache(tempfile.mkdtemp())).build(mut, "qat_int8")
        del mut
    gc.collect()
    libc.malloc_trim(0)
    print("RSS", rss_mib(), flush=True)
''' % (str(ROOT), str(ROOT / "benchmarks"))


def repeated_builds(side: str, builds: int) -> list[float]:
    child = run_child([sys.executable, "-c", REPEAT, side, str(builds)], env=python_env())
    return [float(ln.split()[1]) for ln in child.stdout.splitlines() if ln.startswith("RSS ")]


def suite(cache: Path, probe_out: Path | None) -> tuple[float, float]:
    env = python_env()
    args = [sys.executable, "-m", "pytest", "examples/digits", "-q", "-p", "no:cacheprovider", f"--edgeopt-cache-dir={cache}"]
    if probe_out is not None:
        env["PYTHONPATH"] = str(ROOT / "benchmarks") + os.pathsep + env["PYTHONPATH"]
        env["EDGEOPT_MEMPROBE_OUT"] = str(probe_out)
        args += ["-p", "memory_probe"]
    child = run_child(args, env=env, check=False)
    if child.returncode not in (0, 1):
        raise SystemExit(f"the example suite did not finish (exit {child.returncode}):\n{child.stdout[-3000:]}")
    return child.maxrss_mib, child.wall_s


def main() -> None:
    header("memory: peak RSS of the example suite vs the fp32 conversion alone; variants released after use")
    say("bare fp32 conversion")
    bare = run_child([sys.executable, "-c", BARE], env=python_env())
    with tempfile.TemporaryDirectory(prefix="edgeopt-memory-") as tmp:
        cache = Path(tmp) / "cache"
        probe = Path(tmp) / "probe.json"
        say("example suite, empty cache, with the memory probe")
        cold_rss, cold_wall = suite(cache, probe)
        say("example suite, warm cache")
        warm_rss, _ = suite(cache, None)
        doc = json.loads(probe.read_text())
    say("qat_int8 built 5 times in one process: through the Builder, then bare tfmot + TFLiteConverter")
    repeat = {side: repeated_builds(side, 5) for side in ("harness", "bare")}
    recs = doc["records"]
    print(f"{'peak RSS, bare fp32 conversion':<40} {bare.maxrss_mib:7.0f} MiB")
    print(f"{'peak RSS, example suite (cold cache)':<40} {cold_rss:7.0f} MiB  ratio {cold_rss / bare.maxrss_mib:.2f}  (report)")
    print(f"{'peak RSS, example suite (warm cache)':<40} {warm_rss:7.0f} MiB  ratio {warm_rss / bare.maxrss_mib:.2f}  (report)")
    print("after each test, gc.collect(): RSS MiB (after malloc_trim), interpreters / converters / Keras models / "
          "tf.Variables (MiB) alive")
    for r in recs:
        name = r["test"].split("::")[-1]
        print(f"  {name:<66} {r['rss_mib']:6.0f} ({r['rss_after_trim_mib']:4.0f})  {r['interpreters']} / {r['converters']} / "
              f"{r['keras_models']} / {r['tf_variables']} ({r['variable_mib']:.1f})"
              + (f"  held by {', '.join(r['interpreter_referrers'])}" if r["interpreter_referrers"] else ""))
    interp = max(r["interpreters"] for r in recs)
    conv = max(r["converters"] for r in recs)
    keras_counts = [r["keras_models"] for r in recs]
    rss = [r["rss_after_trim_mib"] for r in recs]
    steps = [b - a for a, b in zip(rss, rss[1:])]
    late = steps[len(steps) // 2:]
    print(f"{'interpreters alive after a test, max':<40} {interp}  target 0  {'PASS' if interp == 0 else 'MISS'}")
    print(f"{'converters alive after a test, max':<40} {conv}  target 0  {'PASS' if conv == 0 else 'MISS'}")
    bounded = max(keras_counts) <= 3
    print(f"{'Keras models alive after a test':<40} max {max(keras_counts)}, last {keras_counts[-1]}  "
          f"target <= 3 (the user's model + shared pruned and clustered)  {'PASS' if bounded else 'MISS'}")
    growth = {side: statistics.median(b - a for a, b in zip(r[1:], r[2:])) for side, r in repeat.items()}
    print(f"{'RSS kept per repeated qat_int8 build':<40} harness {growth['harness']:+.1f} MiB, bare tfmot {growth['bare']:+.1f} MiB "
          f"(after malloc_trim; RSS after each of the 5 builds: {' '.join(f'{x:.0f}' for x in repeat['harness'])} vs "
          f"{' '.join(f'{x:.0f}' for x in repeat['bare'])})  target: no more than bare  "
          f"{'PASS' if growth['harness'] <= growth['bare'] + 2 else 'MISS'}")
    print(f"{'RSS growth per test (after malloc_trim), 2nd half':<40} median {statistics.median(late):+.1f} MiB, "
          f"max {max(late):+.1f} MiB; whole run {rss[0]:.0f} -> {rss[-1]:.0f} MiB")


if __name__ == "__main__":
    main()
