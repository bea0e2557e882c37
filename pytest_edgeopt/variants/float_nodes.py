"""Broken variants, per node: which node crashed or produced NaN/inf, and which nodes to keep
in float (``float_nodes``) so the variant runs and keeps its accuracy.

- :func:`parse_invoke_failure` reads LiteRT's ``Node number N (OP) failed to invoke`` and the
  kernel check before it (``tflite/kernels/div.cc:262 data[i] != zero_point was not true.``).
- :func:`graph_nodes` / :func:`operand_producers`: a ``.tflite``'s ops in execution order and
  the quantized nodes that compute a node's operands, named as ``float_nodes`` takes them (an
  op's output tensor name is the quantization debugger's node name).
- :func:`nonfinite_outputs` counts the samples whose outputs hold NaN or inf, and
  :func:`first_nonfinite_node` runs a few of them with every intermediate tensor kept to name
  the first op that produced one (:class:`ProbeRequest` does it in a worker process).
- :func:`crash_candidates` and :class:`Trial`: the float_nodes a crash is retried with (the
  node, then the node and what computes its operands); the session builds and measures each.
- :func:`convert_auto`: ``float_nodes="auto"``: as few nodes as needed (a crashing node and
  its operands first, then nodes by quantization error) for the quantized model to agree with
  fp32 within ``float_nodes_max_drop`` on the calibration samples; doubling, then bisecting.

Plain Python: tensorflow and the LiteRT interpreter are imported inside the functions only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pytest_edgeopt.targets.base import VariantBroken

if TYPE_CHECKING:  # pragma: no cover
    from pytest_edgeopt.variants.registry import BuildContext
    from pytest_edgeopt.workers.serve import WorkerState

#: Quantization dtypes' outputs: a node whose output is one of these is a quantized node.
_INTEGER = "iu"
#: Ops that only move values between float and integer: never ``float_nodes`` themselves.
_CASTS = ("QUANTIZE", "DEQUANTIZE")
#: Nodes computing a node's operands that a repair keeps in float at most.
OPERAND_LIMIT = 8
#: Samples a non-finite probe runs (with every intermediate tensor kept).
PROBE_SAMPLES = 8
#: Default ``float_nodes_max_drop``: fraction of calibration samples whose top-1 may differ from fp32's.
DEFAULT_MAX_DROP = 0.01

_FAILURE = re.compile(r"Node number (\d+) \(([A-Za-z0-9_]+)\) failed to (invoke|prepare)")
_CHECK = re.compile(r"(\S+\.cc:\d+ [^\n]*?)(?:\s*Node number|\Z)", re.S)
#: What a kernel check means, by its text.
_CAUSES = (
    ("!= zero_point", "its int8 divisor equals the zero point: after quantization it divides by 0"),
)


# -- a node that failed to invoke --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InvokeFailure:
    """``Node number <node> (<op>) failed to <phase>``; ``check``: the kernel's line before it."""

    node: int
    op: str
    phase: str
    check: str

    @property
    def cause(self) -> str:
        for needle, why in _CAUSES:
            if needle in self.check:
                return why
        return ""

    def describe(self) -> str:
        text = f"node {self.node} ({self.op}) failed to {self.phase}"
        if self.check:
            text += f": {self.check.rstrip('. ')}"
        return text + (f" ({self.cause})" if self.cause else "")


def parse_invoke_failure(text: str) -> InvokeFailure | None:
    """The failing node in LiteRT's error text, or ``None`` when the text names none."""
    match = _FAILURE.search(text or "")
    if match is None:
        return None
    check = _CHECK.search(text[:match.start()] + " Node number")
    return InvokeFailure(int(match.group(1)), match.group(2), match.group(3),
                         " ".join(check.group(1).split()) if check else "")


# -- the graph ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GraphNode:
    """One op of a ``.tflite``: its index (execution order), type, output tensor name (the
    name ``float_nodes`` takes), whether that output is quantized, and the indices of the
    nodes producing its inputs."""

    index: int
    op: str
    output: str
    quantized: bool
    producers: tuple[int, ...]

    def label(self) -> str:
        return f"node {self.index} ({self.op})"


def _interpreter(model: bytes | Path, preserve: bool = False) -> Any:
    from pytest_edgeopt.variants.debug_graph import debug_interpreter

    return debug_interpreter(model if isinstance(model, bytes) else Path(model).read_bytes(), preserve)


def graph_nodes(model: bytes | Path) -> list[GraphNode]:
    """The ops of ``model`` in execution order."""
    from pytest_edgeopt.variants.debug_graph import ops_details

    it = _interpreter(model)
    tensors = {d["index"]: d for d in it.get_tensor_details()}
    ops = ops_details(it)
    producer = {int(t): int(op["index"]) for op in ops for t in op["outputs"]}
    nodes = []
    for op in ops:
        outputs = [int(t) for t in op["outputs"]]
        detail = tensors.get(outputs[0]) if outputs else None
        nodes.append(GraphNode(
            index=int(op["index"]), op=op["op_name"], output=detail["name"] if detail else "",
            quantized=detail is not None and np.dtype(detail["dtype"]).kind in _INTEGER,
            producers=tuple(producer[int(t)] for t in op["inputs"] if int(t) in producer)))
    return nodes


def operand_producers(nodes: Sequence[GraphNode], index: int, limit: int = OPERAND_LIMIT) -> tuple[GraphNode, ...]:
    """The quantized nodes that compute node ``index``'s operands, nearest first (through
    QUANTIZE/DEQUANTIZE), at most ``limit``: keeping them in float keeps a value that int8
    rounds to 0 (a divisor, a norm) from reaching the node."""
    by_index = {n.index: n for n in nodes}
    found: list[GraphNode] = []
    frontier, seen = list(by_index[index].producers), {index}
    while frontier and len(found) < limit:
        following: list[int] = []
        for i in frontier:
            if i in seen or i not in by_index:
                continue
            seen.add(i)
            node = by_index[i]
            if node.op not in _CASTS and node.quantized:
                found.append(node)
            following.extend(node.producers)
        frontier = following
    return tuple(found[:limit])


def crash_candidates(model: bytes | Path, failure: InvokeFailure,
                     kept: Sequence[str] = ()) -> list[tuple[str, tuple[str, ...]]]:
    """The ``float_nodes`` to retry a variant that failed at node ``failure.node`` with, in
    order, each with a label: the node alone, then the node and the nodes computing its
    operands. ``kept``: nodes already in float (kept in every candidate)."""
    nodes = graph_nodes(model)
    if not 0 <= failure.node < len(nodes):
        return []
    node = nodes[failure.node]
    base = tuple(dict.fromkeys([*kept, node.output]))
    found = [(node.label(), base)]
    operands = operand_producers(nodes, node.index)
    if operands:
        names = ", ".join(f"{n.op} {n.index}" for n in operands)
        found.append((f"{node.label()} and the {len(operands)} node(s) computing its operands ({names})",
                      tuple(dict.fromkeys([*base, *(n.output for n in operands)]))))
    return found


def marker(nodes: Sequence[str]) -> str:
    return f"@pytest.mark.edgeopt_options(float_nodes={tuple(sorted(set(nodes)))!r})"


@dataclass(frozen=True, slots=True)
class Trial:
    """A variant rebuilt with ``float_nodes`` and measured: ``error`` (it still fails: why),
    else the metric, fp32's, the samples with non-finite outputs and the size in bytes."""

    label: str
    float_nodes: tuple[str, ...]
    error: str = ""
    metric_name: str | None = None
    metric: float | None = None
    fp32_metric: float | None = None
    nonfinite_samples: int = 0
    size_bytes: int = 0

    @property
    def runs(self) -> bool:
        return not self.error and not self.nonfinite_samples

    def good(self, max_drop: float) -> bool:
        if not self.runs:
            return False
        if self.metric is None or self.fp32_metric is None:
            return True
        return self.fp32_metric - self.metric <= max_drop

    def describe(self) -> str:
        if self.error:
            return f"kept {self.label} in float: still fails: {self.error}"
        text = f"kept {self.label} in float: it runs"
        if self.nonfinite_samples:
            text += f", but {self.nonfinite_samples} samples give NaN/inf"
        if self.metric is not None:
            text += f", {self.metric_name} {self.metric:.4f}"
            if self.fp32_metric is not None:
                text += f" vs fp32 {self.fp32_metric:.4f}"
        return text + f", size {self.size_bytes:,} B"


def repair_lines(failure_text: str, trials: Sequence[Trial], where: str, max_drop: float = DEFAULT_MAX_DROP) -> str:
    """The failure and what each rebuild measured, and the marker that applies the best."""
    lines = [failure_text]
    if trials:
        lines.append(f"rebuilt with nodes kept in float (float_nodes) and measured on {where}:")
        lines.extend(f"  {t.describe()}" for t in trials)
        best = next((t for t in trials if t.good(max_drop)), None) or next((t for t in trials if t.runs), None)
        if best is not None:
            lines.append(f"remedy: add {marker(best.float_nodes)} to the test")
        else:
            lines.append("remedy: none of these runs; use int16x8, dynamic_range or float16 for this model")
    return "\n".join(lines)


# -- NaN / inf ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NonFiniteOutput:
    """Output ``index`` (``name``): ``samples`` of ``total`` hold NaN or inf (``nan``/``inf``: how
    many values of each); ``first``: indices of the first such samples."""

    index: int
    name: str
    samples: int
    total: int
    nan: int
    inf: int
    first: tuple[int, ...]

    def describe(self) -> str:
        kinds = ", ".join(k for k, n in (("NaN", self.nan), ("inf", self.inf)) if n)
        return f"output {self.index} ({self.name!r}) is {kinds} in {self.samples}/{self.total} samples"


def nonfinite_outputs(outputs: Sequence[np.ndarray], names: Sequence[str] = ()) -> list[NonFiniteOutput]:
    """The float outputs that hold NaN or inf, per output (sample = first axis)."""
    found = []
    for i, out in enumerate(outputs):
        a = np.asarray(out)
        if a.dtype.kind != "f" or a.size == 0:
            continue
        bad = ~np.isfinite(a)
        if not bad.any():
            continue
        rows = bad.reshape(len(a), -1).any(axis=1) if a.ndim else bad.reshape(1)
        which = np.flatnonzero(rows)
        found.append(NonFiniteOutput(i, names[i] if i < len(names) else str(i), int(rows.sum()), len(rows),
                                     int(np.isnan(a).sum()), int(np.isinf(a).sum()),
                                     tuple(int(j) for j in which[:PROBE_SAMPLES])))
    return found


@dataclass(frozen=True, slots=True)
class NonFiniteNode:
    """The first op (execution order) whose float output holds NaN/inf: ``node``; its
    ``inputs_finite``: the op made them from finite values (a division by a value that int8
    rounded to 0, a float16 overflow), rather than passing them on."""

    node: GraphNode
    inputs_finite: bool


def first_nonfinite_node(model: bytes | Path, x: np.ndarray) -> NonFiniteNode | None:
    """Run ``x`` (a few samples) one at a time through ``model`` with every tensor kept; the
    first op whose float output holds NaN/inf, or ``None``."""
    from pytest_edgeopt.tensors import ModelIO, to_model_input
    from pytest_edgeopt.variants.debug_graph import ops_details

    nodes = graph_nodes(model)
    for sample in x[:PROBE_SAMPLES]:
        it = _interpreter(model, preserve=True)
        io = ModelIO.of_interpreter(it)
        spec = io.inputs[0]
        it.allocate_tensors()
        it.set_tensor(spec.index, to_model_input(np.asarray(sample)[None], spec))
        it.invoke()
        for op, node in zip(ops_details(it), nodes):
            outs = [it.get_tensor(int(t)) for t in op["outputs"]]
            if any(o.dtype.kind == "f" and not np.isfinite(o).all() for o in outs):
                ins = [it.get_tensor(int(t)) for t in op["inputs"] if int(t) >= 0]
                return NonFiniteNode(node, all(i.dtype.kind != "f" or np.isfinite(i).all() for i in ins))
    return None


@dataclass(frozen=True, slots=True)
class ProbeRequest:
    """:func:`first_nonfinite_node` of the ``.tflite`` at ``path`` on ``x``, in a worker process."""

    path: Path
    x: np.ndarray

    def run(self, worker: WorkerState | None = None) -> NonFiniteNode | None:
        return first_nonfinite_node(self.path, self.x)


class NonFiniteOutputs(VariantBroken):
    """The variant runs but gives NaN/inf (a FAIL): which outputs, in how many samples;
    ``node``: the first node producing them when probed; ``samples``: inputs that show it."""

    def __init__(self, variant: str, found: Sequence[NonFiniteOutput], samples: np.ndarray,
                 node: NonFiniteNode | None = None, float_knob: bool = False,
                 model: bytes | Path | None = None, kept: Sequence[str] = ()) -> None:
        self.variant, self.found, self.samples, self.node = variant, tuple(found), samples, node
        super().__init__(self._message(float_knob, model, tuple(kept)))

    def _message(self, float_knob: bool, model: bytes | Path | None, kept: tuple[str, ...]) -> str:
        text = f"{self.variant} gives non-finite outputs: " + "; ".join(f.describe() for f in self.found)
        if self.node is None:
            return text + " (the node that first produced them was not found)"
        n = self.node.node
        text += f"\nfirst node producing them: {n.label()}, tensor {n.output!r}"
        if not self.node.inputs_finite:
            return text + " (its inputs are already non-finite: the model's inputs or weights hold NaN/inf)"
        text += " (made from finite inputs)"
        if float_knob and model is not None:
            operands = operand_producers(graph_nodes(model), n.index)
            if operands:
                names = ", ".join(f"{o.op} {o.index}" for o in operands)
                nodes = [*kept, *(o.output for o in operands)]
                return (text + f": it runs in float on operands int8 rounded (e.g. to 0). Remedy: keep the "
                        f"nodes computing them ({names}) in float too: {marker(nodes)}")
        if self.variant == "float16":
            return text + ". Remedy: a weight or constant beyond float16's range (65504); use dynamic_range or int8"
        return text + ". Remedy: keep that node in float (float_nodes, int8/int8_full) or use dynamic_range"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_nonfinite, (self.variant, self.found, self.samples, self.node, str(self)))


def _rebuild_nonfinite(variant: str, found: Sequence[NonFiniteOutput], samples: np.ndarray,
                       node: NonFiniteNode | None, message: str) -> NonFiniteOutputs:
    exc = NonFiniteOutputs(variant, found, samples, node)
    exc.args = (message,)
    return exc


# -- float_nodes="auto" ------------------------------------------------------------------


def max_rebuilds(groups: int) -> int:
    """Selective models :func:`convert_auto` makes at most for ``groups`` candidate groups:
    none kept, doubling up to all, then bisecting the last doubling step."""
    steps = math.ceil(math.log2(groups)) + 1 if groups > 0 else 0
    return 1 + steps + max(steps - 1, 0)


def convert_auto(converter: Any, ctx: BuildContext, mode: str) -> bytes:
    """``float_nodes="auto"``: the int8 model with as few nodes in float as needed for its
    top-1 (or, for other outputs, its first output within channel noise/signal) to agree with
    fp32's on the calibration samples within ``float_nodes_max_drop``.

    Candidate groups, in order: the node a plain conversion crashes at with the nodes
    computing its operands, then the quantized nodes by their quantization error (worst
    first; each with the consumers it needs, see ``DebugGraph.keep_float``). Group counts
    tried: 0, then 1, 2, 4, ... until the goal is met, then bisection between the last two:
    at most :func:`max_rebuilds` selective models from one calibration. Records the chosen
    nodes and the search in ``ctx.notes`` (``float_nodes_chosen``, ``float_nodes_search``);
    when no group count meets the goal every group is kept and the notes say so.
    """
    from pytest_edgeopt.variants import ptq
    from pytest_edgeopt.variants.debug_graph import DebugGraph, TensorStats, channel_nsr, dequantize, lockstep
    from pytest_edgeopt.variants.registry import VariantUnavailable

    goal = float(ctx.options.get("float_nodes_max_drop", DEFAULT_MAX_DROP))
    samples = ptq.calibration_samples(ctx)
    if samples and not isinstance(samples[0], np.ndarray):
        names = ", ".join(samples[0]) if isinstance(samples[0], dict) else f"{len(samples[0])} arrays"
        raise VariantUnavailable(
            f"{ctx.spec.name}: the model has several inputs ({names}); float_nodes=\"auto\" runs TensorFlow's "
            "quantization debugger, which takes one input: name the nodes to keep in float instead "
            "(float_nodes=[...]) or leave the knob out")
    debugger = ptq.quantization_debugger(converter, ctx.spec.name, mode)
    debug = ptq.debug_model(debugger)
    graph = DebugGraph(debug)
    x = np.concatenate(samples)
    fp32 = ctx.fp32()
    errors = {n.name: TensorStats() for n in graph.nodes}
    signal = {n.name: TensorStats() for n in graph.nodes}

    def visit(interpreters: list[Any], count: int) -> None:
        for node in graph.nodes:
            q = dequantize(interpreters[0].get_tensor(node.q_index)[:count], node.scale, node.zero_point)
            f = interpreters[0].get_tensor(node.f_index)[:count].astype(np.float32)
            errors[node.name].add(q - f)
            signal[node.name].add(f)

    groups: list[tuple[str, ...]] = []
    try:
        fp_out = lockstep([debug, fp32], x, visit)[0][1]
    except RuntimeError as exc:  # the debug model crashes as the variant would: that node first
        failure = parse_invoke_failure(str(exc))
        if failure is None:
            raise
        fp_out = lockstep([fp32], x, None)[0][0]
        groups.extend(nodes for _, nodes in crash_candidates(debug, failure)[-1:])
        groups = [tuple(n for n in g if n in {m.name for m in graph.nodes}) for g in groups]
    ranked = sorted(graph.nodes, key=lambda n: -channel_nsr(errors[n.name], signal[n.name])[0])
    groups.extend(graph.keep_float(n) for n in ranked)

    def nodes_of(k: int) -> tuple[str, ...]:
        return tuple(dict.fromkeys(n for g in groups[:k] for n in g))

    tried: dict[int, tuple[float, bytes]] = {}

    def score(k: int) -> float:
        if k not in tried:
            model = _selective(debugger, ctx, mode, nodes_of(k))
            try:
                out = lockstep([model], x, None)[0][0]
                drop = _disagreement(fp_out[0], out[0], TensorStats, channel_nsr)
            except RuntimeError:  # still crashes at invoke: not good enough
                drop = 1.0
            tried[k] = (drop, model)
        return tried[k][0]

    k, low = 0, -1
    while score(k) > goal and k < len(groups):
        low, k = k, min(len(groups), max(1, 2 * k))
    if score(k) <= goal:
        while k - low > 1:  # the fewest groups that meet the goal, between low (fails) and k
            mid = (low + k) // 2
            if mid > 0 and score(mid) <= goal:
                k = mid
            else:
                low = mid
    chosen = nodes_of(k)
    ctx.notes["float_nodes_chosen"] = sorted(chosen)
    ctx.notes["float_nodes_search"] = {
        "goal_max_drop": goal, "samples": len(x), "rebuilds": len(tried), "max_rebuilds": max_rebuilds(len(groups)),
        "groups": k, "drop": round(tried[k][0], 4), "met": tried[k][0] <= goal}
    ctx.progress(f"{ctx.spec.name}: float_nodes=auto keeps {len(chosen)} node(s) in float "
                 f"({len(tried)} selective models tried)")
    return tried[k][1]


def _selective(debugger: Any, ctx: BuildContext, mode: str, nodes: tuple[str, ...]) -> bytes:
    from pytest_edgeopt.variants.registry import VariantBuildError
    from pytest_edgeopt.variants.tfenv import import_tf, native_output_captured, quiet_warnings, root_cause

    tf = import_tf()
    with native_output_captured(), quiet_warnings():
        try:
            debugger.options = tf.lite.experimental.QuantizationDebugOptions(
                denylisted_nodes=list(nodes) or None, fully_quantize=(mode == "int8_full"))
            return bytes(debugger.get_nondebug_quantized_model())
        except Exception as exc:
            error = exc
    raise VariantBuildError(f"{ctx.spec.name}: float_nodes=auto: quantizing with {len(nodes)} node(s) in float "
                            f"failed: {root_cause(error)}") from None


def _disagreement(reference: np.ndarray, out: np.ndarray, stats: Any, nsr: Callable[..., Any]) -> float:
    """Fraction of samples whose top-1 differs from the reference's (a classifier's output),
    else the output's channel noise/signal against the reference."""
    if not np.isfinite(out).all():
        return 1.0
    if reference.ndim == 2 and reference.shape[1] > 1:
        return float(np.mean(reference.argmax(axis=1) != out.argmax(axis=1)))
    return float(nsr(stats.of(out - reference), stats.of(reference))[0])
