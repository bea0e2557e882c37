"""The tensors behind the quantization debugger: per-channel statistics of a tensor over
samples, the graphs it compares (TensorFlow's debug model with its ``NumericVerify`` ops, or a
quantized model next to its fp32 twin), and running several models in lock-step on the same
inputs with every intermediate tensor kept.

Errors are in the model's own units (dequantized values); ``channel_nsr`` is a ratio in [0, 1].
"""

from __future__ import annotations

import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pytest_edgeopt.tensors import ModelIO, TensorSpec, outputs_to_float, to_model_input

#: A channel whose noise-to-signal reaches this counts as lost.
LOST_CHANNEL = 0.5
CHUNK = 64  # samples per invoke at most (all intermediate tensors of a chunk are kept)
CHUNK_BYTES = 256 << 20  # ... and at most this much tensor memory per model
PASS_THROUGH = ("NumericVerify", "DEQUANTIZE")  # debug-only consumers in the debug model


class QuantDebugError(Exception):
    """The per-layer analysis could not run; the message says why."""


# -- statistics --------------------------------------------------------------------------


class TensorStats:
    """Per-channel (last axis) running sums of a tensor over samples, in float64."""

    def __init__(self) -> None:
        self.n = 0  # values per channel
        self.sum: np.ndarray | None = None
        self.sq: np.ndarray | None = None
        self.max_abs = 0.0

    @classmethod
    def of(cls, a: np.ndarray) -> TensorStats:
        s = cls()
        s.add(a)
        return s

    def add(self, a: np.ndarray) -> None:
        a = np.asarray(a, dtype=np.float64)
        flat = a.reshape(-1, a.shape[-1] if a.ndim else 1)
        if self.sum is None:
            self.sum = np.zeros(flat.shape[1])
            self.sq = np.zeros(flat.shape[1])
        self.n += flat.shape[0]
        self.sum += flat.sum(axis=0)
        self.sq += (flat * flat).sum(axis=0)
        if flat.size:
            self.max_abs = max(self.max_abs, float(np.abs(flat).max()))

    @property
    def channels(self) -> int:
        return 0 if self.sum is None else len(self.sum)

    def mean(self) -> np.ndarray:
        assert self.sum is not None
        return self.sum / max(self.n, 1)

    def rms(self) -> np.ndarray:
        assert self.sq is not None
        return np.sqrt(self.sq / max(self.n, 1))

    def std(self) -> np.ndarray:
        return np.asarray(np.sqrt(np.maximum(self.rms() ** 2 - self.mean() ** 2, 0.0)))


def channel_nsr(err: TensorStats, sig: TensorStats) -> tuple[float, int, int]:
    """(mean capped noise-to-signal over varying channels, lost channels, channels)."""
    if err.sum is None or sig.sum is None or err.channels != sig.channels:
        return 0.0, 0, err.channels
    std = sig.std()
    live = std > max(float(std.max()) * 1e-6, 1e-12)
    if not live.any():
        return 0.0, 0, err.channels
    nsr = np.minimum(err.rms()[live] / std[live], 1.0)
    return float(nsr.mean()), int((nsr >= LOST_CHANNEL).sum()), err.channels


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return (q.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)


# -- graphs ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    op: str
    q_index: int  # the quantized output
    f_index: int  # the float value it is compared with
    scale: float
    zero_point: int
    bits: int
    inputs: tuple[str, ...] = ()  # nodes whose outputs this op reads (direct method)


def debug_interpreter(model: bytes, preserve: bool = True) -> Any:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    with warnings.catch_warnings():  # "preserve_all_tensors is intended for debugging": it is
        warnings.simplefilter("ignore")
        return Interpreter(model_content=bytes(model), num_threads=1, experimental_preserve_all_tensors=preserve,
                           experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)


def ops_details(it: Any) -> list[dict[str, Any]]:
    # The op list is not public API; TensorFlow's QuantizationDebugger reads it the same way.
    return list(it._get_ops_details())


def quant_params(detail: Mapping[str, Any]) -> tuple[float, int, int]:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    bits = np.dtype(detail["dtype"]).itemsize * 8
    return float(scale), int(zero_point), bits


class DebugGraph:
    """The NumericVerify'd nodes of a debug model and who consumes their outputs."""

    def __init__(self, model: bytes) -> None:
        from pytest_edgeopt.variants.ptq import numeric_verify_node

        it = debug_interpreter(model, preserve=False)
        self.tensors = {d["index"]: d for d in it.get_tensor_details()}
        ops = ops_details(it)
        producer = {t: op for op in ops for t in op["outputs"]}
        self.consumers: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for op in ops:
            if op["op_name"] not in PASS_THROUGH:
                for t in op["inputs"]:
                    self.consumers[int(t)].append(op)
        self.nodes: list[Node] = []
        for op in ops:
            if op["op_name"] != "NumericVerify" or len(op["inputs"]) < 2:
                continue
            q, f = (int(i) for i in op["inputs"][:2])
            scale, zero_point, bits = quant_params(self.tensors[q])
            name = numeric_verify_node(self.tensors[int(op["outputs"][0])]["name"])
            kind = producer[q]["op_name"] if q in producer else "?"
            self.nodes.append(Node(name, kind, q, f, scale, zero_point, bits))
        self.by_q = {n.q_index: n for n in self.nodes}

    def keep_float(self, node: Node) -> tuple[str, ...]:
        """The node and the nodes that consume its output, through ops that keep its scale
        (pooling, reshapes): all must be float for the tensor never to be quantized."""
        keep = [node.name]
        stack, seen = [node.q_index], {node.q_index}
        while stack:
            t = stack.pop()
            for op in self.consumers.get(t, ()):
                for out in (int(o) for o in op["outputs"]):
                    consumer = self.by_q.get(out)
                    if consumer is not None and consumer.name not in keep:
                        keep.append(consumer.name)
                    if out not in seen and quant_params(self.tensors[out])[:2] == quant_params(self.tensors[t])[:2]:
                        seen.add(out)
                        stack.append(out)
        return tuple(keep)


class DirectGraph:
    """The ops of a quantized model whose outputs match fp32 tensors by name and shape."""

    _SUFFIXES = ("_int16", "_int8")

    def __init__(self, quantized: bytes, fp32: bytes) -> None:
        q_it, f_it = debug_interpreter(quantized, preserve=False), debug_interpreter(fp32, preserve=False)
        q_tensors = {d["index"]: d for d in q_it.get_tensor_details()}
        f_by_name = {d["name"]: d for d in f_it.get_tensor_details()}
        self.nodes: list[Node] = []
        node_of: dict[int, str] = {}
        for op in ops_details(q_it):
            if op["op_name"] == "DEQUANTIZE" or len(op["outputs"]) != 1:
                continue
            out = int(op["outputs"][0])
            detail = q_tensors[out]
            scale, zero_point, bits = quant_params(detail)
            if not scale or not np.issubdtype(np.dtype(detail["dtype"]), np.integer):
                continue
            name = detail["name"]
            for suffix in self._SUFFIXES:
                if name.endswith(suffix) and name[: -len(suffix)] in f_by_name:
                    name = name[: -len(suffix)]
            match = f_by_name.get(name)
            if match is None or tuple(match["shape"]) != tuple(detail["shape"]):
                continue
            inputs = tuple(node_of[int(i)] for i in op["inputs"] if int(i) in node_of)
            self.nodes.append(Node(name, op["op_name"], out, int(match["index"]), scale, zero_point, bits, inputs))
            node_of[out] = name


# -- running -----------------------------------------------------------------------------


def lockstep(models: Sequence[bytes], x: np.ndarray, visit: Callable[[list[Any], int], None] | None,
              deadline: float | None = None) -> tuple[list[list[np.ndarray]], int]:
    """Run every model on the same chunks of ``x`` (all tensors kept when ``visit`` is
    given) and call ``visit(interpreters, samples)`` after each chunk. Returns each model's
    outputs as float arrays and how many samples ran: no chunk starts after ``deadline``
    (a ``time.perf_counter()`` value), the first always runs."""
    preserve = visit is not None
    interpreters = [debug_interpreter(m, preserve) for m in models]
    ios = [ModelIO.of_interpreter(it) for it in interpreters]
    for io in ios:
        if len(io.inputs) != 1:
            raise QuantDebugError(f"the model has {len(io.inputs)} inputs; the analysis supports one")
    chunk = 1
    if all(io.inputs[0].shape and io.inputs[0].shape[0] == -1 for io in ios):
        per_sample = max(tensor_bytes(it) for it in interpreters) if preserve else 0
        chunk = max(1, min(CHUNK, CHUNK_BYTES // max(per_sample, 1)))
    collected: list[list[list[np.ndarray]]] = [[] for _ in models]
    allocated: int | None = None
    start = 0
    while start < len(x) and (start == 0 or deadline is None or time.perf_counter() < deadline):
        part = x[start:start + chunk]
        if len(part) != allocated:
            try:
                for it, io in zip(interpreters, ios):
                    it.resize_tensor_input(io.inputs[0].index, [len(part), *io.inputs[0].shape[1:]], strict=True)
                    it.allocate_tensors()
            except (RuntimeError, ValueError):
                if chunk == 1:
                    raise
                interpreters = [debug_interpreter(m, preserve) for m in models]  # a fixed batch somewhere
                chunk, allocated = 1, None
                continue
            allocated = len(part)
        for it, io in zip(interpreters, ios):
            spec: TensorSpec = io.inputs[0]
            it.set_tensor(spec.index, to_model_input(part, spec))
            it.invoke()
        if visit is not None:
            visit(interpreters, len(part))
        for out, it, io in zip(collected, interpreters, ios):
            out.append(outputs_to_float([it.get_tensor(o.index) for o in io.outputs], io.outputs))
        start += len(part)
    outputs = [[np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))] for chunks in collected]
    return outputs, start


def tensor_bytes(it: Any) -> int:
    """Bytes of all tensors of an interpreter at its current (one-sample) shapes."""
    return sum(int(np.prod(d["shape"])) * np.dtype(d["dtype"]).itemsize for d in it.get_tensor_details())
