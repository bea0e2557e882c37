"""Accuracy overhead: scoring a few thousand samples through the harness vs a bare batched loop.

    python benchmarks/accuracy_overhead.py [--reps 20] [--samples 4096]

The eval set is the whole of scikit-learn's digits (1,797 images) repeated to ``--samples``
samples. For post-training variants of the example's digits CNN (built once into
``.edgeopt/benchmarks/cache``), alternately:

- A, the harness: what a measurement does for accuracy (``pytest_edgeopt.measure.observe``
  without the latency part): ``check_eval_shape``, ``CpuTarget().predict(path, x)`` (batches
  of 256, quantized I/O converted) and ``score("top1", ...)``;
- B, bare: a LiteRT ``Interpreter`` from the model's bytes, input resized to 256, the same
  batches (last one padded), inputs quantized / outputs dequantized where the model's I/O
  is int8, then top-1 with ``argmax``.

Wall time per evaluation, interpreter creation included on both sides. Target: A/B <= 1.2.
"""

from __future__ import annotations

import argparse
import time

from sidebyside import WORK, Ratio, header, say

VARIANTS = ("fp32", "dynamic_range", "int8", "int8_full", "int16x8")
TARGET = 1.2
BATCH = 256


def eval_set(n: int):
    import numpy as np
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[..., np.newaxis]
    y = bunch.target.astype(np.int64)
    idx = np.resize(np.arange(len(x)), n)
    return np.ascontiguousarray(x[idx]), y[idx]


def bare_top1(content: bytes, x, y) -> float:
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=content, num_threads=1)
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    interp.resize_tensor_input(inp["index"], [BATCH, *x.shape[1:]], strict=True)
    interp.allocate_tensors()
    in_scale, in_zero = inp["quantization"]
    out_scale, out_zero = out["quantization"]
    quant_in = np.issubdtype(inp["dtype"], np.integer) and in_scale
    quant_out = np.issubdtype(out["dtype"], np.integer) and out_scale
    preds = []
    for start in range(0, len(x), BATCH):
        chunk = x[start:start + BATCH]
        real = len(chunk)
        if real < BATCH:
            chunk = np.concatenate([chunk, np.zeros((BATCH - real, *chunk.shape[1:]), chunk.dtype)])
        if quant_in:
            info = np.iinfo(inp["dtype"])
            chunk = np.clip(np.round(chunk / in_scale) + in_zero, info.min, info.max).astype(inp["dtype"])
        interp.set_tensor(inp["index"], chunk)
        interp.invoke()
        scores = interp.get_tensor(out["index"])[:real]
        if quant_out:
            scores = (scores.astype(np.float32) - out_zero) * out_scale
        preds.append(np.argmax(scores, axis=-1))
    return float(np.mean(np.concatenate(preds) == y))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=20, help="evaluations per variant and side (default 20)")
    ap.add_argument("--samples", type=int, default=4096, help="eval samples (default 4096)")
    args = ap.parse_args()
    header(f"accuracy overhead: top-1 on {args.samples} samples through the harness vs a bare batched loop")
    from fixtures.digits import digits_model_path, representative_batches
    from pytest_edgeopt.measure import check_eval_shape
    from pytest_edgeopt.model import ModelUnderTest, score
    from pytest_edgeopt.targets.cpu import CpuTarget
    from pytest_edgeopt.variants.builder import Builder
    from pytest_edgeopt.variants.cache import VariantCache

    x, y = eval_set(args.samples)
    mut = ModelUnderTest(name="digits-cnn", model=digits_model_path(), representative_data=representative_batches(100),
                         eval_data=(x, y))
    builder = Builder(VariantCache(WORK / "cache"), progress=say)
    target = CpuTarget()
    ok_all = True
    for v in VARIANTS:
        built = builder.build(mut, v)
        content = built.path.read_bytes()
        accs: dict[str, float] = {}

        def harness() -> float:
            t0 = time.perf_counter()
            xs, ys = mut.eval_arrays  # type: ignore[misc]
            xs = check_eval_shape(mut, built, xs)
            outputs = target.predict(built.path, xs)
            accs["harness"] = score(mut.metric, outputs, ys)
            return time.perf_counter() - t0

        def bare() -> float:
            t0 = time.perf_counter()
            accs["bare"] = bare_top1(content, x, y)
            return time.perf_counter() - t0

        harness(), bare()  # warm: page in the file, the kernels
        a: list[float] = []
        b: list[float] = []
        for i in range(args.reps):
            if i % 2 == 0:
                a.append(harness())
                b.append(bare())
            else:
                b.append(bare())
                a.append(harness())
        r = Ratio(f"{v} eval wall time", tuple(a), tuple(b))
        ok = r.median <= TARGET
        ok_all &= ok
        print(r.line(f"<= {TARGET}", ok) + f"  top-1 {accs['harness']:.4f}/{accs['bare']:.4f}")
    print(f"overall: {'PASS' if ok_all else 'MISS'}")


if __name__ == "__main__":
    main()
