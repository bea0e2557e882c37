"""A ``.tflite`` flatbuffer read with the schema module ``ai_edge_litert`` ships (no
tensorflow): operators by name and tensors with dtype, shape, shape signature, quantization
and constant values, for the Edge TPU compatibility rules."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


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
class Tensor:
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


class Graph:
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
        self.tensors: list[Tensor] = []
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
            self.tensors.append(Tensor(i, name, dtype, shape, sig, raw is not None, quantized, raw))

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


def read_model(model: Path | str | bytes | bytearray | memoryview) -> bytes:
    if isinstance(model, (str, os.PathLike)):
        data = Path(model).read_bytes()
    else:
        data = bytes(model)
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ValueError("not a TensorFlow Lite flatbuffer (no 'TFL3' identifier)")
    return data


