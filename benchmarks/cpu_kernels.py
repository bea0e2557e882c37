"""Which CPU kernels run a variant, and how fast: LiteRT's resolver options side by side.

    python benchmarks/cpu_kernels.py [--res 128] [--rounds 7] [--invokes 10] [--out benchmarks/results/cpu_kernels.md]

Randomly initialised ``tf_keras.applications`` MobileNet and MobileNetV2 (``weights=None``,
RES x RES x 3) are built as fp32, int8 and dynamic_range through pytest-edgeopt's
``Builder`` (cached under ``.edgeopt/benchmarks/cpu_kernels-cache``: a second run converts
nothing), then each ``.tflite`` runs on one thread under every way LiteRT 2.3's Python API
offers to run it on the CPU:

- ``xnnpack``: ``Interpreter(experimental_op_resolver_type=AUTO)``, builtin kernels with
  the default XNNPACK delegate (what ``targets/cpu.py`` used before this benchmark);
- ``xnnpack+latest``: the same with ``experimental_default_delegate_latest_features=True``
  (XNNPACK's newest operators, among them the dynamically quantized QD8 convolutions
  and fully connected layers that run dynamic-range models);
- ``builtin``: ``BUILTIN_WITHOUT_DEFAULT_DELEGATES``, TFLite's optimized builtin kernels
  (ruy / gemmlowp / Eigen), no XNNPACK;
- ``reference``: ``BUILTIN_REF``, the reference kernels (with ``--reference``; fp32 only:
  on int8 MobileNet they abort the process at the first invoke, SIGABRT, seen 2026-12-07);
- ``compiled``: the CompiledModel API (``CompiledModel.from_buffer``, CPU accelerator,
  default XNNPACK flags), and ``compiled+latest`` with ``xnnpack_flags`` = QS8 | QU8 |
  DYNAMIC_FULLY_CONNECTED | ENABLE_LATEST_OPERATORS.

For each interpreter the script counts the ops XNNPACK took (nodes inside its
``DELEGATE`` partitions) and those left to builtin kernels. Timing: every runner is
created first, then ``--rounds`` rounds run ``--invokes`` timed invokes of each runner in
turn (the order rotating each round); a runner's figure is the median over rounds of the
per-round median. Speed is fp32 under ``xnnpack`` divided by the figure (> 1: faster).
"""

from __future__ import annotations

import argparse
import collections
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidebyside import RESULTS, WORK, cpu_model, header, say

MODELS = ("MobileNet", "MobileNetV2")
VARIANTS = ("fp32", "int8", "dynamic_range")
#: XNNPACK delegate flags (tflite/delegates/xnnpack/xnnpack_delegate.h).
QS8, QU8, DYNAMIC_FC, LATEST = 0x1, 0x2, 0x8, 0x40


@dataclass(frozen=True, slots=True)
class Runner:
    """One way to run a model: ``invoke()`` runs it once; ``delegated``/``builtin``: op
    counts inside XNNPACK partitions and left outside them (empty when unknown)."""

    name: str
    invoke: Callable[[], Any]
    delegated: dict[str, int]
    builtin: dict[str, int]
    keep: Any  # the interpreter or compiled model (and its buffers), kept alive


def op_placement(interp: Any) -> tuple[dict[str, int], dict[str, int]]:
    """Ops inside the XNNPACK ``DELEGATE`` nodes and ops outside them, by op name.

    A delegate node lists its boundary tensors; the original nodes it replaced are those on
    the paths from its inputs back from its outputs (walked through the producers)."""
    ops = interp._get_ops_details()
    producer = {int(t): op for op in ops if op["op_name"] != "DELEGATE" for t in op["outputs"]}
    inside: set[int] = set()
    for d in (op for op in ops if op["op_name"] == "DELEGATE"):
        bounds = {int(t) for t in d["inputs"]}
        todo = [int(t) for t in d["outputs"]]
        while todo:
            t = todo.pop()
            op = producer.get(t)
            if t in bounds or op is None or op["index"] in inside:
                continue
            inside.add(op["index"])
            todo.extend(int(x) for x in op["inputs"] if int(x) >= 0)
    real = [op for op in ops if op["op_name"] != "DELEGATE"]
    delegated = collections.Counter(op["op_name"] for op in real if op["index"] in inside)
    builtin = collections.Counter(op["op_name"] for op in real if op["index"] not in inside)
    return dict(delegated), dict(builtin)


def interpreter_runner(name: str, data: bytes, x: Any, **kwargs: Any) -> Runner:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=data, num_threads=1, **kwargs)
    interp.allocate_tensors()
    detail = interp.get_input_details()[0]
    interp.set_tensor(detail["index"], _as_input(x, detail))
    delegated, builtin = op_placement(interp)
    return Runner(name, interp.invoke, delegated, builtin, interp)


def compiled_runner(name: str, data: bytes, x: Any, flags: int | None) -> Runner:
    from ai_edge_litert.compiled_model import CompiledModel
    from ai_edge_litert.cpu_options import CpuOptions
    from ai_edge_litert.hardware_accelerator import HardwareAccelerator
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_litert.options import Options

    model = CompiledModel.from_buffer(data, options=Options(
        hardware_accelerators=HardwareAccelerator.CPU, cpu_options=CpuOptions(num_threads=1, xnnpack_flags=flags)))
    inputs, outputs = model.create_input_buffers(0), model.create_output_buffers(0)
    detail = Interpreter(model_content=data).get_input_details()[0]
    inputs[0].write(_as_input(x, detail))
    return Runner(name, lambda: model.run_by_index(0, inputs, outputs), {}, {}, (model, inputs, outputs))


def _as_input(x: Any, detail: dict[str, Any]) -> Any:
    import numpy as np

    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return x.astype(dtype)
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)


def time_runners(runners: list[Runner], rounds: int, invokes: int, slow: set[str]) -> dict[str, float]:
    """Median over rounds of the per-round median invoke time (ms), runners interleaved."""
    for r in runners:
        for _ in range(2 if r.name in slow else 3):
            r.invoke()  # warm-up (XNNPACK packs weights on the first run)
    per: dict[str, list[float]] = {r.name: [] for r in runners}
    for k in range(rounds):
        order = runners[k % len(runners):] + runners[:k % len(runners)]
        for r in order:
            samples = []
            for _ in range(max(1, invokes // 5) if r.name in slow else invokes):
                t0 = time.perf_counter_ns()
                r.invoke()
                samples.append((time.perf_counter_ns() - t0) / 1e6)
            per[r.name].append(statistics.median(samples))
    return {name: statistics.median(v) for name, v in per.items()}


def build_models(res: int) -> dict[tuple[str, str], bytes]:
    """The fp32 / int8 / dynamic_range ``.tflite`` of each model, through the Builder (cached)."""
    import numpy as np

    from pytest_edgeopt.model import ModelUnderTest
    from pytest_edgeopt.variants.builder import Builder
    from pytest_edgeopt.variants.cache import VariantCache
    from pytest_edgeopt.variants.tfenv import import_keras, native_output_captured, quiet_warnings

    work = WORK / "cpu_kernels"
    work.mkdir(parents=True, exist_ok=True)
    builder = Builder(VariantCache(work / "cache"), progress=say)
    rng = np.random.default_rng(0)
    samples = [rng.random((1, res, res, 3), dtype=np.float32) for _ in range(32)]
    out: dict[tuple[str, str], bytes] = {}
    for name in MODELS:
        path = work / f"{name}_{res}.h5"
        if not path.exists():
            keras = import_keras()
            keras.utils.set_random_seed(0)
            with native_output_captured(), quiet_warnings():
                getattr(keras.applications, name)(input_shape=(res, res, 3), weights=None).save(path)
        mut = ModelUnderTest(name=f"{name}_{res}", model=path, representative_data=samples,
                             options={"calibration_samples": len(samples)})
        for v in VARIANTS:
            out[name, v] = builder.build(mut, v).read_bytes()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--res", type=int, default=128, help="input size (default 128)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--invokes", type=int, default=10, help="timed invokes per runner per round")
    ap.add_argument("--reference", action="store_true", help="also time the reference kernels (slow)")
    ap.add_argument("--out", type=Path, default=RESULTS / "cpu_kernels.md")
    args = ap.parse_args()
    header(f"CPU kernels: MobileNet / MobileNetV2 {args.res}x{args.res}, 1 thread, LiteRT resolver options side by side")
    import numpy as np
    from ai_edge_litert.interpreter import OpResolverType

    from pytest_edgeopt.variants.tfenv import native_output_captured

    models = build_models(args.res)
    x = np.random.default_rng(1).random((1, args.res, args.res, 3), dtype=np.float32)
    rows = []
    placements = []
    for name in MODELS:
        times: dict[str, dict[str, float]] = {}
        for v in VARIANTS:
            data = models[name, v]
            with native_output_captured():  # LiteRT's INFO/ERROR lines about its delegate
                runners = [
                    interpreter_runner("xnnpack", data, x, experimental_op_resolver_type=OpResolverType.AUTO),
                    interpreter_runner("xnnpack+latest", data, x, experimental_op_resolver_type=OpResolverType.AUTO,
                                       experimental_default_delegate_latest_features=True),
                    interpreter_runner("builtin", data, x,
                                       experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES),
                    compiled_runner("compiled", data, x, None),
                    compiled_runner("compiled+latest", data, x, QS8 | QU8 | DYNAMIC_FC | LATEST),
                ]
                if args.reference and v == "fp32":
                    runners.append(interpreter_runner("reference", data, x,
                                                      experimental_op_resolver_type=OpResolverType.BUILTIN_REF))
            say(f"{name} {v}: timing {len(runners)} runners")
            times[v] = time_runners(runners, args.rounds, args.invokes, {"reference"})
            for r in runners:
                if r.delegated or r.builtin:
                    placements.append((name, v, r.name, r.delegated, r.builtin))
            del runners
            gc.collect()
        base = times["fp32"]["xnnpack"]
        for v in VARIANTS:
            for runner, ms in times[v].items():
                rows.append((name, v, runner, ms, base / ms))
    lines = ["| model | variant | runner | p50 ms | speed vs fp32 xnnpack |", "|---|---|---|---|---|"]
    lines += [f"| {m} | {v} | {r} | {ms:.2f} | {s:.2f}x |" for m, v, r, ms, s in rows]
    lines += ["", "Ops placed by each interpreter (XNNPACK partitions / builtin kernels):", "",
              "| model | variant | runner | in XNNPACK | builtin kernels |", "|---|---|---|---|---|"]
    for m, v, r, d, b in placements:
        fmt = lambda c: ", ".join(f"{k} {n}" for k, n in sorted(c.items())) or "-"  # noqa: E731
        lines.append(f"| {m} | {v} | {r} | {sum(d.values())} | {sum(b.values())}: {fmt(b)} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        command = "python " + " ".join(["benchmarks/cpu_kernels.py", *sys.argv[1:]])
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        flags = ""
        try:
            flags = " ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "fma")
                             if f" {f}" in Path("/proc/cpuinfo").read_text())
        except OSError:
            pass
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(f"# CPU kernels: which run, and how fast (1 thread)\n\nMeasured {stamp} with `{command}` "
                            f"on {cpu_model()} ({flags}), {os.cpu_count()} cores (shared, load average "
                            f"{os.getloadavg()[0]:.1f} at the end), "
                            f"{args.rounds} rounds of {args.invokes} invokes.\n\n{text}\n")


if __name__ == "__main__":
    main()
