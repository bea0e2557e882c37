"""Will a ``.tflite`` model run on the Coral Edge TPU? Answered without compiler or device.

:func:`analyze` reads the flatbuffer with the schema module shipped in ``ai_edge_litert``
(no tensorflow) and checks every operator of the main subgraph against Coral's published
model requirements, https://coral.ai/docs/edgetpu/models-intro/ ("Model requirements"
and "Supported operations", the table of the last compiler, 16.0, and runtime 14):

- every tensor is 8-bit quantized: int8/uint8 with quantization parameters. int32 is
  accepted for constant parameters only (biases, shapes, axes), which the page names
  ("model parameters (such as bias tensors) are constant at compile-time");
- tensor sizes are constant at compile time. A ``-1`` batch dimension in
  ``shape_signature`` is *not* a problem: converters write it for every Keras model
  with a ``None`` batch, while the stored ``shape`` (what the compiler and the
  interpreter allocate) is batch 1; Coral's own TF2 tutorials compile such models. A
  ``-1`` in any other dimension, or a shape computed at run time (``SHAPE`` ->
  ``STRIDED_SLICE`` -> ``PACK``, what Keras ``Reshape`` emits with a ``None`` batch and
  what the compiler rejects as "dynamic-sized tensors"), is reported;
- tensors have at most 3 dimensions, or only the 3 innermost dimensions are larger than
  1 (so a batch larger than 1 does not map). Checked on activations; weight tensors of
  convolutions are 4-D by nature and map;
- the operator is in the supported table, within its documented limitations where the
  file lets us check them (fused activations, dilation, batch-axis reductions, Softmax
  size, StridedSlice strides, ...). Limitations that depend on the compiler's internal
  judgement ("depending on input/output size, this operation may not be mapped";
  "certain reshapes might not be mapped for large tensor sizes") are not predicted.

Partitioning. The page says: "the Edge TPU compiler cannot partition the model more
than once, so as soon as an unsupported operation occurs, that operation and everything
after it executes on the CPU, even if supported operations occur later". Compiler logs
show the same (ops after the first unsupported one are listed as "More than one subgraph
is not supported"), and they also show that unsupported ops *before* the first supported
one (typically the float->int8 ``QUANTIZE`` of a float-input model) stay on the CPU
without preventing the rest from mapping. So, in execution order, the Edge TPU gets the
first run of individually mappable ops; everything before it and everything from the
next unmappable op on runs on the CPU. The report gives both fractions:
``supported_op_fraction`` (ops that could map on their own) and ``edgetpu_op_fraction``
(ops that would actually run on the Edge TPU given that single partition).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_edgeopt.targets.base import ModelIncompatible
from pytest_edgeopt.targets.edgetpu.flatbuffer import Graph, read_model
from pytest_edgeopt.targets.edgetpu.op_rules import EDGETPU_CUSTOM_OP, SUPPORTED_OPS, OpContext, check_op

#: The page the rules come from.
DOC_URL = "https://coral.ai/docs/edgetpu/models-intro/"

# Statuses, worded as the compiler's operation log words them.
STATUS_MAPPED = "Mapped to Edge TPU"
STATUS_NOT_SUPPORTED = "Operation not supported"
STATUS_DATA_TYPE = "Operation is working on an unsupported data type"
STATUS_RANK = "Tensor has unsupported rank (up to 3 innermost dimensions mapped)"
STATUS_LIMITATION = "Operation is otherwise supported, but not mapped due to some unspecified limitation"
STATUS_SUBGRAPH = "More than one subgraph is not supported"

_KIND_STATUS = {
    "op": STATUS_NOT_SUPPORTED,
    "dtype": STATUS_DATA_TYPE,
    "rank": STATUS_RANK,
    "shape": STATUS_LIMITATION,
    "limit": STATUS_LIMITATION,
}

# --- the report -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpReport:
    """One operator of the main subgraph, in execution order.

    ``mappable``: the op meets every checked requirement on its own. ``on_edgetpu``: it
    would run on the Edge TPU given the compiler's single partition. ``status`` uses the
    compiler log's words. ``reasons`` say why it is not mappable, naming tensors.
    """

    index: int
    op: str
    mappable: bool
    on_edgetpu: bool
    status: str
    reasons: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "op": self.op,
            "mappable": self.mappable,
            "on_edgetpu": self.on_edgetpu,
            "status": self.status,
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True, slots=True)
class EdgeTpuReport:
    """Edge TPU compatibility of one model (see the module docstring for the rules)."""

    ops: tuple[OpReport, ...]
    notes: tuple[str, ...] = ()
    precompiled: bool = False
    subgraphs: int = 1

    @property
    def total_ops(self) -> int:
        return len(self.ops)

    @property
    def supported_ops(self) -> int:
        """Ops that could map on their own."""
        return sum(o.mappable for o in self.ops)

    @property
    def edgetpu_ops(self) -> int:
        """Ops that would run on the Edge TPU (the single partition)."""
        return sum(o.on_edgetpu for o in self.ops)

    @property
    def cpu_ops(self) -> int:
        return self.total_ops - self.edgetpu_ops

    @property
    def supported_op_fraction(self) -> float:
        return self.supported_ops / self.total_ops if self.ops else 0.0

    @property
    def edgetpu_op_fraction(self) -> float:
        """Fraction of ops that would run on the Edge TPU, 0..1 (0 for an empty graph)."""
        return self.edgetpu_ops / self.total_ops if self.ops else 0.0

    @property
    def fully_mapped(self) -> bool:
        return bool(self.ops) and self.edgetpu_ops == self.total_ops

    @property
    def compilable(self) -> bool:
        """At least one op would run on the Edge TPU: worth sending to the compiler."""
        return self.edgetpu_ops > 0

    @property
    def cut(self) -> OpReport | None:
        """The first unmappable op after the Edge TPU segment: it and all later ops run on the CPU."""
        started = False
        for o in self.ops:
            if o.on_edgetpu:
                started = True
            elif started:
                return o
        return None

    @property
    def reasons(self) -> tuple[str, ...]:
        """Every distinct reason of the ops that are not mappable, in op order."""
        seen: dict[str, None] = {}
        for o in self.ops:
            for r in o.reasons:
                seen.setdefault(r, None)
        return tuple(seen)

    @property
    def summary(self) -> str:
        n = self.total_ops
        if n == 0:
            return "the model has no operators"
        if self.fully_mapped:
            if self.precompiled:
                return f"compiled for the Edge TPU: all {n} ops run on it"
            return f"all {n} ops map to the Edge TPU"
        if not self.compilable:
            reasons = self.reasons
            shown = "; ".join(reasons[:3])
            more = f" (+{len(reasons) - 3} more)" if len(reasons) > 3 else ""
            return f"no op can run on the Edge TPU (0 of {n}): {shown}{more}"
        parts = [f"{self.edgetpu_ops} of {n} ops ({self.edgetpu_op_fraction:.0%}) would run on the Edge TPU"]
        lead = [o for o in self.ops if not o.on_edgetpu and o.index < self._segment_start()]
        if lead:
            why = lead[0].reasons[0] if lead[0].reasons else lead[0].status
            parts.append(f"{_op_range(lead)} ahead of them cannot map and run on the CPU ({why})")
        cut = self.cut
        if cut is not None:
            after = n - cut.index - 1
            why = cut.reasons[0] if cut.reasons else cut.status
            tail = f"it and the {after} op(s) after it run" if after else "it runs"
            parts.append(f"op #{cut.index} {cut.op} cannot map, so {tail} on the CPU ({why})")
        return "; ".join(parts)

    def _segment_start(self) -> int:
        return next((o.index for o in self.ops if o.on_edgetpu), self.total_ops)

    def to_dict(self) -> dict[str, Any]:
        return {
            "summary": self.summary,
            "total_ops": self.total_ops,
            "supported_ops": self.supported_ops,
            "edgetpu_ops": self.edgetpu_ops,
            "cpu_ops": self.cpu_ops,
            "supported_op_fraction": self.supported_op_fraction,
            "edgetpu_op_fraction": self.edgetpu_op_fraction,
            "fully_mapped": self.fully_mapped,
            "compilable": self.compilable,
            "precompiled": self.precompiled,
            "subgraphs": self.subgraphs,
            "notes": list(self.notes),
            "reasons": list(self.reasons),
            "ops": [o.to_dict() for o in self.ops],
            "source": DOC_URL,
        }


class EdgeTpuIncompatible(ModelIncompatible):
    """The model cannot run on the Edge TPU (no op would map); ``report`` says why.

    A :class:`ModelIncompatible`, so the plugin skips the measurement with the message
    (even when the Edge TPU is required: the variant, not the device, is at fault).
    """

    def __init__(self, report: EdgeTpuReport, model: str | None = None):
        self.report = report
        self.model = model
        where = f"{model}: " if model and model != "model.tflite" else ""
        super().__init__(f"{where}not compatible with the Edge TPU: {report.summary}")

    @property
    def reasons(self) -> tuple[str, ...]:
        return self.report.reasons


def _op_range(ops: Sequence[OpReport]) -> str:
    if len(ops) == 1:
        return f"op #{ops[0].index} {ops[0].op}"
    return f"ops #{ops[0].index}-#{ops[-1].index}"


# --- entry points -------------------------------------------------------------------------


def analyze(model: Path | str | bytes | bytearray | memoryview) -> EdgeTpuReport:
    """Edge TPU compatibility of a ``.tflite`` file or its bytes.

    Raises ``ValueError`` when the input is not a TFLite flatbuffer, ``OSError`` when
    the file cannot be read.
    """
    data = read_model(model)
    g = Graph(data)
    sub = g.subgraph
    names: list[str] = []
    reasons: list[list[tuple[str, str]]] = []
    batch_dynamic = 0
    for op in sub.operators or []:
        name = g.op_name(op)
        ins = [g.tensors[i] for i in (op.inputs if op.inputs is not None else []) if i >= 0]
        outs = [g.tensors[i] for i in (op.outputs if op.outputs is not None else []) if i >= 0]
        names.append(name)
        reasons.append(check_op(OpContext(g, op, name, ins, outs)))
    for t in g.tensors:
        if not t.constant and t.signature and t.signature[0] < 0:
            batch_dynamic += 1

    mappable = [not r for r in reasons]
    start = next((i for i, ok in enumerate(mappable) if ok), len(mappable))
    end = next((i for i in range(start, len(mappable)) if not mappable[i]), len(mappable))
    ops = []
    for i, (name, rs) in enumerate(zip(names, reasons)):
        on_tpu = start <= i < end
        if on_tpu:
            status = STATUS_MAPPED
        elif rs:
            status = _KIND_STATUS[rs[0][0]]
        else:
            status = STATUS_SUBGRAPH
        ops.append(OpReport(i, name, not rs, on_tpu, status, tuple(r for _, r in rs)))

    notes = []
    precompiled = EDGETPU_CUSTOM_OP in names
    if precompiled:
        n_custom = names.count(EDGETPU_CUSTOM_OP)
        notes.append(f"the model is already compiled for the Edge TPU ({n_custom} {EDGETPU_CUSTOM_OP})")
    if batch_dynamic:
        notes.append(
            f"{batch_dynamic} tensor(s) have a -1 batch in shape_signature; ignored: the stored shape "
            "(batch 1) is what the compiler and the interpreter use"
        )
    if len(g.model.subgraphs) > 1:
        notes.append(
            f"the model has {len(g.model.subgraphs)} subgraphs; only the main one is analysed "
            "(control-flow ops are not supported)"
        )
    for op_name in ("RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "RESHAPE"):
        if op_name in names:
            notes.append(f"{op_name}: {SUPPORTED_OPS[op_name]}")
    return EdgeTpuReport(tuple(ops), tuple(notes), precompiled, len(g.model.subgraphs))


def edgetpu_op_fraction(model: Path | str | bytes | bytearray | memoryview) -> float:
    """Fraction (0..1) of the model's ops that would run on the Edge TPU, from
    :func:`analyze`: the number the ``min_edgetpu_op_fraction`` budget compares. Needs
    neither compiler nor device, so it works for any target."""
    return analyze(model).edgetpu_op_fraction
