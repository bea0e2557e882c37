"""The host CPU target: the LiteRT interpreter from ``ai-edge-litert``.

Latency: warm-up invokes, then timed invokes until both a minimum count and a minimum
time are reached; each sample is one ``invoke()`` timed with ``perf_counter_ns`` and
nothing else inside the timed region. Accuracy: the eval set in batches (the input's
batch axis resized), quantized I/O converted with the tensors' scale and zero point.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pytest_edgeopt.tensors import ModelIO, outputs_to_float, to_model_input
from pytest_edgeopt.timing import time_invokes
from pytest_edgeopt.targets.base import HOST, Device, LatencyResult, LatencySettings, TargetError

#: Eval samples per invoke when the model accepts a resized batch axis.
EVAL_BATCH = 256


def make_interpreter(model: Path | bytes, threads: int = 1) -> tuple[Any, str]:
    """A LiteRT interpreter with tensors allocated, and the op resolver it uses.

    Tries the default resolver (XNNPACK) first; a model XNNPACK refuses to prepare (e.g.
    sparse int8, see FACTS) falls back to the builtin kernels without default delegates.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    content = model if isinstance(model, bytes) else Path(model).read_bytes()
    last: Exception | None = None
    for resolver in (OpResolverType.AUTO, OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES):
        try:
            interp = Interpreter(model_content=content, num_threads=max(1, threads),
                                 experimental_op_resolver_type=resolver)
            interp.allocate_tensors()
            return interp, resolver.name
        except (RuntimeError, ValueError) as exc:
            last = exc
    raise TargetError(f"the LiteRT interpreter cannot load the model: {last}")


def sample_input(io: ModelIO, rng: np.random.Generator) -> list[np.ndarray]:
    """A deterministic input for timing, one per model input, batch of 1."""
    out = []
    for spec in io.inputs:
        shape = tuple(1 if d < 0 else d for d in spec.shape)
        x = rng.random(shape, dtype=np.float32)
        out.append(to_model_input(x, spec))
    return out


class CpuTarget:
    """Runs models on the host CPU with ``threads`` interpreter threads."""

    def __init__(self, name: str = "cpu", device: Device = HOST, threads: int = 1) -> None:
        self.name = name
        self.device = device
        self.threads = threads

    def latency(self, model: Path, settings: LatencySettings) -> LatencyResult:
        t0 = time.perf_counter_ns()
        interp, resolver = make_interpreter(model, settings.threads)
        init_ns = time.perf_counter_ns() - t0
        io = ModelIO.of_interpreter(interp)
        for spec, x in zip(io.inputs, sample_input(io, np.random.default_rng(0))):
            interp.set_tensor(spec.index, x)
        timed = time_invokes(interp.invoke, settings)
        return LatencyResult(
            stats=timed.stats,
            init_ms=init_ns / 1e6,
            first_inference_ms=timed.first_ms,
            extras={"op_resolver": resolver, "threads": settings.threads},
        )

    def predict(self, model: Path, inputs: np.ndarray) -> Sequence[np.ndarray]:
        interp, _ = make_interpreter(model, self.threads)
        io = ModelIO.of_interpreter(interp)
        if len(io.inputs) != 1:
            raise TargetError(f"the model has {len(io.inputs)} inputs; accuracy runs support one input")
        spec = io.inputs[0]
        n = len(inputs)
        batch = EVAL_BATCH if spec.shape and spec.shape[0] == -1 else 1
        if batch > 1:
            try:
                interp.resize_tensor_input(spec.index, [batch, *spec.shape[1:]], strict=True)
                interp.allocate_tensors()
            except (RuntimeError, ValueError):
                batch = 1
                interp, _ = make_interpreter(model, self.threads)
        chunks: list[list[np.ndarray]] = []
        for start in range(0, n, batch):
            x = inputs[start:start + batch]
            real = len(x)
            if real < batch:  # pad the last chunk to the allocated batch size
                x = np.concatenate([x, np.zeros((batch - real, *x.shape[1:]), dtype=x.dtype)])
            interp.set_tensor(spec.index, to_model_input(x, spec))
            interp.invoke()
            outs = [interp.get_tensor(o.index)[:real] for o in io.outputs]
            chunks.append(outputs_to_float(outs, io.outputs))
        return [np.concatenate([c[i] for c in chunks]) for i in range(len(io.outputs))]

    def close(self) -> None:
        pass
