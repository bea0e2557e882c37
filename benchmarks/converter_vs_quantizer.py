"""The same named post-training variant two ways: TFLiteConverter on the Keras model vs AI Edge
Quantizer on the model's fp32 ``.tflite`` (what a team that has only the ``.tflite`` gets).

    python benchmarks/converter_vs_quantizer.py [--zoo xception_block] [--reps 15] [--invokes 200]

For each model (the example's digits CNN ``.h5``, and one zoo model with random weights:
``fixtures.zoo``, no download), every variant ``float16``, ``dynamic_range``, ``int8``,
``int8_full``, ``int16x8`` is built through pytest-edgeopt's Builder (cold cache) from the
Keras model (converter path) and from the fp32 ``.tflite`` the converter made (quantizer path,
``pytest_edgeopt/variants/tflite_quant.py``), with the same 100 (zoo: 8) calibration samples.
Then, per variant:

- size: bytes of each ``.tflite``, and the ratio quantizer / converter;
- latency: one-sample ``invoke()`` on the LiteRT interpreter (1 thread, default delegates),
  ``--invokes`` timed after 20 warm-up invokes; the two sides alternate, ``--reps`` rounds,
  each side first equally often; the median of the per-round p50 ratios quantizer / converter;
- accuracy: digits: top-1 on the 450 eval digits; zoo (random weights: accuracy means
  nothing): agreement of the variant's top-1 with the fp32 model's on 32 inputs, and
  max |variant - fp32| over the outputs.

Progress goes to stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

VARIANTS = ("float16", "dynamic_range", "int8", "int8_full", "int16x8")


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def interpreter(data: bytes) -> Any:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=bytes(data), num_threads=1)
    it.allocate_tensors()
    return it


def outputs(data: bytes, x: np.ndarray) -> np.ndarray:
    """The first output, float, for each sample of ``x`` (one invoke per sample)."""
    from pytest_edgeopt.tensors import ModelIO, outputs_to_float, to_model_input

    it = interpreter(data)
    io = ModelIO.of_interpreter(it)
    out = []
    for i in range(len(x)):
        it.set_tensor(io.inputs[0].index, to_model_input(x[i:i + 1], io.inputs[0]))
        it.invoke()
        out.append(outputs_to_float([it.get_tensor(io.outputs[0].index)], io.outputs[:1])[0])
    return np.concatenate(out)


def p50_ms(data: bytes, x: np.ndarray, invokes: int) -> float:
    from pytest_edgeopt.tensors import ModelIO, to_model_input

    it = interpreter(data)
    io = ModelIO.of_interpreter(it)
    it.set_tensor(io.inputs[0].index, to_model_input(x[:1], io.inputs[0]))
    for _ in range(20):
        it.invoke()
    samples = []
    for _ in range(invokes):
        start = time.perf_counter()
        it.invoke()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e3


def build_both(name: str, keras_source: Any, rep: list[np.ndarray], workdir: Path) -> dict[str, dict[str, bytes]]:
    from pytest_edgeopt.model import ModelUnderTest
    from pytest_edgeopt.variants.builder import Builder
    from pytest_edgeopt.variants.cache import VariantCache

    options = {"calibration_samples": len(rep)}
    keras_mut = ModelUnderTest(name, keras_source, representative_data=rep, options=options)
    converter = Builder(VariantCache(workdir / "converter"))
    fp32 = converter.build(keras_mut, "fp32").read_bytes()
    tflite = workdir / f"{name}.tflite"
    tflite.write_bytes(fp32)
    tflite_mut = ModelUnderTest(name, str(tflite), representative_data=rep, options=options)
    quantizer = Builder(VariantCache(workdir / "quantizer"))
    out: dict[str, dict[str, bytes]] = {"fp32": {"converter": fp32, "quantizer": fp32}}
    for variant in VARIANTS:
        out[variant] = {}
        for side, builder, mut in (("converter", converter, keras_mut), ("quantizer", quantizer, tflite_mut)):
            start = time.perf_counter()
            try:
                built = builder.build(mut, variant)
            except Exception as exc:  # a refusal is a row too
                say(f"  {name} {variant} {side}: {type(exc).__name__}: {exc}")
                continue
            out[variant][side] = built.read_bytes()
            say(f"  {name} {variant} {side}: {built.size_bytes:,} B in {time.perf_counter() - start:.1f} s "
                f"({built.recipe.get('tool', 'tflite_converter')})")
    return out


def rows(name: str, built: dict[str, dict[str, bytes]], x: np.ndarray, y: np.ndarray | None,
         reps: int, invokes: int) -> list[str]:
    fp32_out = outputs(built["fp32"]["converter"], x)
    lines = []
    for variant in VARIANTS:
        sides = built[variant]
        if len(sides) < 2:
            lines.append(f"| {name} | {variant} | " + " | ".join(
                f"{len(sides[s]):,}" if s in sides else "refused" for s in ("converter", "quantizer")) + " | | | | |")
            continue
        quality = {}
        try:
            for side, data in sides.items():
                failing = side
                out = outputs(data, x)
                if y is not None:
                    quality[side] = f"{np.mean(out.argmax(-1) == y):.4f}"
                else:
                    agree = np.mean(out.argmax(-1) == fp32_out.argmax(-1))
                    quality[side] = f"{agree:.3f} / {np.max(np.abs(out - fp32_out)):.3g}"
        except RuntimeError as exc:  # built, but LiteRT cannot run it: a row that says so
            reason = str(exc).strip().splitlines()[0][:160]
            lines.append(f"| {name} | {variant} | {len(sides['converter']):,} | {len(sides['quantizer']):,} | | | "
                         f"{quality.get('converter', 'broken: ' + reason if failing == 'converter' else '')} | "
                         f"{'broken: ' + reason if failing == 'quantizer' else ''} |")
            say(lines[-1])
            continue
        ratios = []
        for r in range(reps):
            order = ("converter", "quantizer") if r % 2 == 0 else ("quantizer", "converter")
            t = {side: p50_ms(sides[side], x, invokes) for side in order}
            ratios.append(t["quantizer"] / t["converter"])
        c, q = len(sides["converter"]), len(sides["quantizer"])
        lines.append(f"| {name} | {variant} | {c:,} | {q:,} | {q / c:.3f} | {statistics.median(ratios):.3f} "
                     f"({min(ratios):.2f}-{max(ratios):.2f}) | {quality['converter']} | {quality['quantizer']} |")
        say(lines[-1])
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--zoo", default="xception_block", help="zoo model (fixtures.zoo.ZOO) for the second row set")
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--invokes", type=int, default=200)
    args = parser.parse_args()

    from fixtures.digits import digits_data, digits_model_path, representative_batches
    from fixtures.zoo import ZOO, zoo_data
    from pytest_edgeopt.variants.tfenv import import_tf

    import_tf()
    work = Path(tempfile.mkdtemp(prefix="edgeopt-cvq-"))
    d = digits_data()
    say("digits CNN (.h5)")
    lines = rows("digits CNN", build_both("digits", str(digits_model_path()), representative_batches(100), work),
                 d.x_eval, d.y_eval, args.reps, args.invokes)
    say(f"zoo {args.zoo}")
    z = zoo_data(args.zoo)
    model = ZOO[args.zoo].make()
    lines += rows(f"zoo {args.zoo}", build_both(args.zoo, model, [np.asarray(r) for r in z.representative], work),
                  np.asarray(z.x_eval), None, args.reps, args.invokes)
    print(f"converter vs quantizer, {time.strftime('%Y-%m-%d', time.gmtime())}, "
          f"`python benchmarks/converter_vs_quantizer.py --zoo {args.zoo} --reps {args.reps} --invokes {args.invokes}`")
    print("| model | variant | converter B | quantizer B | size q/c | p50 q/c (range) | converter quality | quantizer quality |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(lines))
    print("quality: digits: top-1 on 450 eval digits; zoo (random weights): top-1 agreement with fp32 / max |d| vs fp32")
    return 0


if __name__ == "__main__":
    sys.exit(main())
