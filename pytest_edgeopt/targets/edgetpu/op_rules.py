"""The Edge TPU's operator table and its documented limitations, as checks on one operator
of a ``.tflite`` graph (:func:`check_op`): each returns ``(kind, reason)`` pairs, where kind
is ``op``, ``dtype``, ``rank``, ``shape`` or ``limit``. Source: Coral's "Supported operations"
(https://coral.ai/docs/edgetpu/models-intro/)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from pytest_edgeopt.targets.edgetpu.flatbuffer import Graph, Tensor

#: The custom op the compiler emits for the part of a model that runs on the Edge TPU.
EDGETPU_CUSTOM_OP = "edgetpu-custom-op"

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


# --- the rules ----------------------------------------------------------------------------


@dataclass(slots=True)
class OpContext:
    g: Graph
    op: Any
    name: str
    inputs: list[Tensor]  # in op order, optional (-1) inputs left out
    outputs: list[Tensor]

    @property
    def options(self) -> Any:
        return self.op.builtinOptions

    def input(self, i: int) -> Tensor | None:
        idx = self.op.inputs[i] if self.op.inputs is not None and i < len(self.op.inputs) else -1
        return self.g.tensors[idx] if idx >= 0 else None


def _role(t: Tensor, ctx: OpContext) -> str:
    if t in ctx.outputs:
        return "output"
    return "constant" if t.constant else "input"


def _tensor_reasons(ctx: OpContext) -> list[tuple[str, str]]:
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


def _axes(t: Tensor | None, rank: int) -> list[int] | None:
    vals = t.values() if t is not None else None
    if vals is None:
        return None
    return sorted({int(a) % rank for a in np.ravel(vals)}) if rank else []


def _fused_none(ctx: OpContext) -> list[str]:
    act = getattr(ctx.options, "fusedActivationFunction", 0) or 0
    if act:
        return [f"{ctx.name} has a fused {ctx.g.act_names.get(act, act)} activation (no fused activation allowed)"]
    return []


def _same_dilation(ctx: OpContext) -> list[str]:
    o = ctx.options
    if o is not None and o.dilationWFactor != o.dilationHFactor:
        return [f"dilation differs in x ({o.dilationWFactor}) and y ({o.dilationHFactor})"]
    return []


def _fully_connected(ctx: OpContext) -> list[str]:
    reasons = []
    o = ctx.options
    if o is not None and o.weightsFormat != 0:
        reasons.append("fully-connected weights are not in the default format")
    for t in ctx.outputs:
        if sum(d > 1 for d in t.shape) > 1:
            reasons.append(f"output tensor '{t.name}' has shape {list(t.shape)}: the output must be one-dimensional")
    return reasons


def _concatenation(ctx: OpContext) -> list[str]:
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


def _no_batch_axis(what: str, data_input: int, axis_input: int) -> Callable[[OpContext], list[str]]:
    def check(ctx: OpContext) -> list[str]:
        x = ctx.input(data_input)
        if x is None:
            return []
        axes = _axes(ctx.input(axis_input), len(x.shape))
        if axes is not None and len(x.shape) == 4 and 0 in axes:
            return [f"{ctx.name} {what} the batch dimension"]
        return []

    return check


def _mean(ctx: OpContext) -> list[str]:
    reasons = _no_batch_axis("reduces over", 0, 1)(ctx)
    x = ctx.input(0)
    if x is not None and x.shape:
        axes = _axes(ctx.input(1), len(x.shape))
        z = x.shape[-1]
        if axes is not None and len(x.shape) - 1 in axes and z % 4:
            reasons.append(f"MEAN reduces the z dimension of size {z}, which is not a multiple of 4")
    return reasons


def _pad(ctx: OpContext) -> list[str]:
    x, p = ctx.input(0), ctx.input(1)
    vals = p.values() if p is not None else None
    if x is not None and vals is not None and len(x.shape) == 4 and np.size(vals) >= 2:
        if np.any(np.reshape(vals, (-1, 2))[0] != 0):
            return ["PAD pads the batch dimension"]
    return []


def _pack(ctx: OpContext) -> list[str]:
    o = ctx.options
    if o is not None and ctx.outputs and len(ctx.outputs[0].shape) == 4 and o.axis % 4 == 0:
        return ["PACK packs along the batch dimension"]
    return []


def _prelu(ctx: OpContext) -> list[str]:
    alpha = ctx.input(1)
    if alpha is not None and any(d > 1 for d in alpha.shape[:-1]):
        return [f"alpha tensor '{alpha.name}' has shape {list(alpha.shape)}: only its innermost dimension may be >1"]
    return []


def _softmax(ctx: OpContext) -> list[str]:
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


def _squeeze(ctx: OpContext) -> list[str]:
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


def _strided_slice(ctx: OpContext) -> list[str]:
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


_CHECKS: Mapping[str, Callable[[OpContext], list[str]]] = {
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


def check_op(ctx: OpContext) -> list[tuple[str, str]]:
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


