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

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from pytest_edgeopt.targets.base import ModelIncompatible

#: The page the rules come from.
DOC_URL = "https://coral.ai/docs/edgetpu/models-intro/"

#: The custom op the compiler emits for the part of a model that runs on the Edge TPU.
EDGETPU_CUSTOM_OP = "edgetpu-custom-op"

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

#: Supported builtin operators (TFLite names) and Coral's "known limitations" for each.
SUPPORTED_OPS: Mapping[str, str] = {
    "ADD": "",
    "AVERAGE_POOL_2D": "No fused activation function.",
    "CONCATENATION": (
        "No fused activation function. If any input is a compile-time constant tensor, there must be "
        "only 2 inputs, and this constant tensor must be all zeroes (effectively, a zero-padding op)."
    ),
    "CONV_2D": "Must use the same dilation in x and y dimensions.",
    "DEPTHWISE_CONV_2D": "Must use the same dilation in x and y dimensions.",
    "EXPAND_DIMS": "",
    "FULLY_CONNECTED": (
        "Only the default format is supported for fully-connected weights. Output tensor is one-dimensional."
    ),
    "L2_NORMALIZATION": "",
    "LOGISTIC": "",
    "LSTM": "Unidirectional LSTM only.",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "Unidirectional LSTM only.",
    "MAXIMUM": "",
    "MAX_POOL_2D": "No fused activation function.",
    "MEAN": "No reduction in batch dimension. If a z-reduction, the z-dimension must be multiple of 4.",
    "MINIMUM": "",
    "MUL": "",
    "PACK": "No packing in batch dimension.",
    "PAD": "No padding in batch dimension.",
    "PRELU": "Alpha must be 1-dimensional (only the innermost dimension can be >1 size).",
    "QUANTIZE": "",
    "REDUCE_MAX": "Cannot operate on the batch dimension.",
    "REDUCE_MIN": "Cannot operate on the batch dimension.",
    "RELU": "",
    "RELU6": "",
    "RELU_N1_TO_1": "",
    "RESHAPE": "Certain reshapes might not be mapped for large tensor sizes.",
    "RESIZE_BILINEAR": (
        "Input/output is a 3-dimensional tensor. Depending on input/output size, this operation may not "
        "be mapped to the Edge TPU to avoid loss in precision."
    ),
    "RESIZE_NEAREST_NEIGHBOR": (
        "Input/output is a 3-dimensional tensor. Depending on input/output size, this operation may not "
        "be mapped to the Edge TPU to avoid loss in precision."
    ),
    "RSQRT": "",
    "SLICE": "",
    "SOFTMAX": "Supports only 1-D input tensor with a max of 16,000 elements.",
    "SPACE_TO_DEPTH": "",
    "SPLIT": "No splitting in batch dimension.",
    "SQUARED_DIFFERENCE": "",
    "SQUEEZE": (
        "Supported only when input tensor dimensions that have leading 1s (that is, no relayout needed)."
    ),
    "STRIDED_SLICE": (
        "Supported only when all strides are equal to 1 (that is, effectively a Stride op), and with "
        "ellipsis-axis-mask == 0, and new-axis-max == 0."
    ),
    "SUB": "",
    "SUM": "Cannot operate on the batch dimension.",
    "TANH": "",
    "TRANSPOSE": "",
    "TRANSPOSE_CONV": "",
}

SOFTMAX_MAX_ELEMENTS = 16_000


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


# --- reading the flatbuffer ---------------------------------------------------------------


def _schema() -> Any:
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def _enum_names(cls: type) -> dict[int, str]:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


_NP_DTYPES = {
    "float32": np.float32,
    "float16": np.float16,
    "int32": np.int32,
    "uint8": np.uint8,
    "int64": np.int64,
    "int16": np.int16,
    "int8": np.int8,
    "float64": np.float64,
    "uint32": np.uint32,
    "uint16": np.uint16,
}


@dataclass(slots=True, eq=False)  # compared by identity
class _Tensor:
    index: int
    name: str
    dtype: str
    shape: tuple[int, ...]
    signature: tuple[int, ...] | None
    constant: bool
    quantized: bool
    raw: Any = field(default=None, repr=False)  # uint8 array or bytes of a constant

    def values(self) -> np.ndarray | None:
        """The constant's values (``None`` for activations or unknown types)."""
        if self.raw is None or self.dtype not in _NP_DTYPES:
            return None
        arr = np.frombuffer(bytes(self.raw), dtype=_NP_DTYPES[self.dtype])
        try:
            return arr.reshape(self.shape) if self.shape else arr.reshape(())
        except ValueError:
            return arr


class _Graph:
    """The main subgraph of a model, with tensors resolved."""

    def __init__(self, data: bytes):
        schema = _schema()
        self.schema = schema
        m = schema.ModelT.InitFromPackedBuf(data, 0)
        if not m.subgraphs:
            raise ValueError("the .tflite model has no subgraph")
        self.model = m
        self.subgraph = m.subgraphs[0]
        type_names = _enum_names(schema.TensorType)
        self.op_names = _enum_names(schema.BuiltinOperator)
        self.act_names = _enum_names(schema.ActivationFunctionType)
        self.tensors: list[_Tensor] = []
        for i, t in enumerate(self.subgraph.tensors or []):
            buf = m.buffers[t.buffer] if m.buffers and 0 < t.buffer < len(m.buffers) else None
            raw: Any = None
            if buf is not None:
                if buf.data is not None and len(buf.data) > 0:
                    raw = buf.data  # a view; converted only when an axis or padding is read
                elif buf.offset > 1 and buf.size > 0:  # large models keep buffers after the flatbuffer
                    raw = data[buf.offset : buf.offset + buf.size]
            q = t.quantization
            quantized = q is not None and q.scale is not None and len(q.scale) > 0
            shape = tuple(int(x) for x in (t.shape if t.shape is not None else ()))
            sig = tuple(int(x) for x in t.shapeSignature) if t.shapeSignature is not None else None
            name = t.name.decode("utf-8", "replace") if isinstance(t.name, bytes) else str(t.name or f"#{i}")
            dtype = type_names.get(t.type, f"type{t.type}").lower()
            self.tensors.append(_Tensor(i, name, dtype, shape, sig, raw is not None, quantized, raw))

    def op_name(self, op: Any) -> str:
        code = self.model.operatorCodes[op.opcodeIndex]
        builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        name = self.op_names.get(builtin, f"BUILTIN_{builtin}")
        if name == "CUSTOM":
            custom = code.customCode
            if isinstance(custom, bytes):
                custom = custom.decode("utf-8", "replace")
            return str(custom or "CUSTOM")
        return name


def _read(model: Path | str | bytes | bytearray | memoryview) -> bytes:
    if isinstance(model, (str, os.PathLike)):
        data = Path(model).read_bytes()
    else:
        data = bytes(model)
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ValueError("not a TensorFlow Lite flatbuffer (no 'TFL3' identifier)")
    return data


# --- the rules ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Ctx:
    g: _Graph
    op: Any
    name: str
    inputs: list[_Tensor]  # in op order, optional (-1) inputs left out
    outputs: list[_Tensor]

    @property
    def options(self) -> Any:
        return self.op.builtinOptions

    def input(self, i: int) -> _Tensor | None:
        idx = self.op.inputs[i] if self.op.inputs is not None and i < len(self.op.inputs) else -1
        return self.g.tensors[idx] if idx >= 0 else None


def _role(t: _Tensor, ctx: _Ctx) -> str:
    if t in ctx.outputs:
        return "output"
    return "constant" if t.constant else "input"


def _tensor_reasons(ctx: _Ctx) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    seen: set[int] = set()
    for t in [*ctx.inputs, *ctx.outputs]:
        if t.index in seen:
            continue
        seen.add(t.index)
        role = _role(t, ctx)
        label = f"{role} tensor '{t.name}'"
        n = len(out)
        if t.dtype in ("int8", "uint8"):
            if not t.quantized:
                out.append(("dtype", f"{label} is {t.dtype} without quantization parameters"))
        elif t.dtype == "int32":
            if not t.constant:
                out.append(("dtype", f"{label} is int32 (only constant int32 parameters such as biases map)"))
        else:
            out.append(("dtype", f"{label} is {t.dtype}"))
        if t.constant or len(out) > n:
            continue  # weights are 4-D by nature and fixed; a wrong type is reason enough
        if t.signature is not None and any(d < 0 for d in t.signature[1:]):
            out.append(("shape", f"{label} has a dynamic shape {list(t.signature)} (sizes must be constant)"))
        if any(d > 1 for d in t.shape[:-3]):
            out.append(
                ("rank", f"{label} has shape {list(t.shape)}: only the 3 innermost dimensions may be larger than 1")
            )
    return out


def _axes(t: _Tensor | None, rank: int) -> list[int] | None:
    vals = t.values() if t is not None else None
    if vals is None:
        return None
    return sorted({int(a) % rank for a in np.ravel(vals)}) if rank else []


def _fused_none(ctx: _Ctx) -> list[str]:
    act = getattr(ctx.options, "fusedActivationFunction", 0) or 0
    if act:
        return [f"{ctx.name} has a fused {ctx.g.act_names.get(act, act)} activation (no fused activation allowed)"]
    return []


def _same_dilation(ctx: _Ctx) -> list[str]:
    o = ctx.options
    if o is not None and o.dilationWFactor != o.dilationHFactor:
        return [f"dilation differs in x ({o.dilationWFactor}) and y ({o.dilationHFactor})"]
    return []


def _fully_connected(ctx: _Ctx) -> list[str]:
    reasons = []
    o = ctx.options
    if o is not None and o.weightsFormat != 0:
        reasons.append("fully-connected weights are not in the default format")
    for t in ctx.outputs:
        if sum(d > 1 for d in t.shape) > 1:
            reasons.append(f"output tensor '{t.name}' has shape {list(t.shape)}: the output must be one-dimensional")
    return reasons


def _concatenation(ctx: _Ctx) -> list[str]:
    reasons = _fused_none(ctx)
    consts = [t for t in ctx.inputs if t.constant]
    if consts:
        if len(ctx.inputs) != 2:
            reasons.append(f"a constant input among {len(ctx.inputs)} inputs (only 2 inputs allowed with a constant)")
        for t in consts:
            v = t.values()
            if v is not None and np.any(v != 0):
                reasons.append(f"constant input tensor '{t.name}' is not all zeros")
    return reasons


def _no_batch_axis(what: str, data_input: int, axis_input: int) -> Callable[[_Ctx], list[str]]:
    def check(ctx: _Ctx) -> list[str]:
        x = ctx.input(data_input)
        if x is None:
            return []
        axes = _axes(ctx.input(axis_input), len(x.shape))
        if axes is not None and len(x.shape) == 4 and 0 in axes:
            return [f"{ctx.name} {what} the batch dimension"]
        return []

    return check


def _mean(ctx: _Ctx) -> list[str]:
    reasons = _no_batch_axis("reduces over", 0, 1)(ctx)
    x = ctx.input(0)
    if x is not None and x.shape:
        axes = _axes(ctx.input(1), len(x.shape))
        z = x.shape[-1]
        if axes is not None and len(x.shape) - 1 in axes and z % 4:
            reasons.append(f"MEAN reduces the z dimension of size {z}, which is not a multiple of 4")
    return reasons


def _pad(ctx: _Ctx) -> list[str]:
    x, p = ctx.input(0), ctx.input(1)
    vals = p.values() if p is not None else None
    if x is not None and vals is not None and len(x.shape) == 4 and np.size(vals) >= 2:
        if np.any(np.reshape(vals, (-1, 2))[0] != 0):
            return ["PAD pads the batch dimension"]
    return []


def _pack(ctx: _Ctx) -> list[str]:
    o = ctx.options
    if o is not None and ctx.outputs and len(ctx.outputs[0].shape) == 4 and o.axis % 4 == 0:
        return ["PACK packs along the batch dimension"]
    return []


def _prelu(ctx: _Ctx) -> list[str]:
    alpha = ctx.input(1)
    if alpha is not None and any(d > 1 for d in alpha.shape[:-1]):
        return [f"alpha tensor '{alpha.name}' has shape {list(alpha.shape)}: only its innermost dimension may be >1"]
    return []


def _softmax(ctx: _Ctx) -> list[str]:
    x = ctx.input(0)
    if x is None:
        return []
    reasons = []
    if sum(d > 1 for d in x.shape) > 1:
        reasons.append(f"SOFTMAX input '{x.name}' has shape {list(x.shape)}: only 1-D input is supported")
    n = int(np.prod(x.shape)) if x.shape else 1
    if n > SOFTMAX_MAX_ELEMENTS:
        reasons.append(f"SOFTMAX input '{x.name}' has {n} elements (max {SOFTMAX_MAX_ELEMENTS})")
    return reasons


def _squeeze(ctx: _Ctx) -> list[str]:
    x = ctx.input(0)
    if x is None or not x.shape:
        return []
    rank = len(x.shape)
    dims = list(getattr(ctx.options, "squeezeDims", None) or [])
    axes = sorted({int(d) % rank for d in dims}) if dims else [i for i, d in enumerate(x.shape) if d == 1]
    lead = 0
    while lead < rank and x.shape[lead] == 1:
        lead += 1
    bad = [a for a in axes if a >= lead]
    if bad:
        return [f"SQUEEZE removes axis {bad[0]} of shape {list(x.shape)}: only leading 1s can be squeezed"]
    return []


def _strided_slice(ctx: _Ctx) -> list[str]:
    reasons = []
    strides = ctx.input(3)
    vals = strides.values() if strides is not None else None
    if vals is not None and np.any(vals != 1):
        reasons.append(f"STRIDED_SLICE strides are {np.ravel(vals).tolist()} (all must be 1)")
    o = ctx.options
    if o is not None and o.ellipsisMask:
        reasons.append("STRIDED_SLICE has an ellipsis mask")
    if o is not None and o.newAxisMask:
        reasons.append("STRIDED_SLICE has a new-axis mask")
    return reasons


_CHECKS: Mapping[str, Callable[[_Ctx], list[str]]] = {
    "AVERAGE_POOL_2D": _fused_none,
    "MAX_POOL_2D": _fused_none,
    "CONCATENATION": _concatenation,
    "CONV_2D": _same_dilation,
    "DEPTHWISE_CONV_2D": _same_dilation,
    "FULLY_CONNECTED": _fully_connected,
    "MEAN": _mean,
    "REDUCE_MAX": _no_batch_axis("reduces over", 0, 1),
    "REDUCE_MIN": _no_batch_axis("reduces over", 0, 1),
    "SUM": _no_batch_axis("reduces over", 0, 1),
    "SPLIT": _no_batch_axis("splits along", 1, 0),
    "PAD": _pad,
    "PACK": _pack,
    "PRELU": _prelu,
    "SOFTMAX": _softmax,
    "SQUEEZE": _squeeze,
    "STRIDED_SLICE": _strided_slice,
}


_UNSUPPORTED_HINTS = {
    "SHAPE": "; the model computes a shape at run time: convert it with a fixed batch size",
    "DEQUANTIZE": "; float computation follows it: quantize the whole model to int8",
    "WHILE": "; control flow does not map",
    "IF": "; control flow does not map",
}


def _check_op(ctx: _Ctx) -> list[tuple[str, str]]:
    if ctx.name == EDGETPU_CUSTOM_OP:
        return []
    if ctx.name not in SUPPORTED_OPS:
        hint = _UNSUPPORTED_HINTS.get(ctx.name, "")
        return [("op", f"{ctx.name} is not supported by the Edge TPU{hint}")]
    reasons = _tensor_reasons(ctx)
    check = _CHECKS.get(ctx.name)
    if check is not None:
        reasons += [("limit", r) for r in check(ctx)]
    return reasons


# --- entry points -------------------------------------------------------------------------


def analyze(model: Path | str | bytes | bytearray | memoryview) -> EdgeTpuReport:
    """Edge TPU compatibility of a ``.tflite`` file or its bytes.

    Raises ``ValueError`` when the input is not a TFLite flatbuffer, ``OSError`` when
    the file cannot be read.
    """
    data = _read(model)
    g = _Graph(data)
    sub = g.subgraph
    names: list[str] = []
    reasons: list[list[tuple[str, str]]] = []
    batch_dynamic = 0
    for op in sub.operators or []:
        name = g.op_name(op)
        ins = [g.tensors[i] for i in (op.inputs if op.inputs is not None else []) if i >= 0]
        outs = [g.tensors[i] for i in (op.outputs if op.outputs is not None else []) if i >= 0]
        names.append(name)
        reasons.append(_check_op(_Ctx(g, op, name, ins, outs)))
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
