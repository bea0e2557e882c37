"""Input/output tensors of a ``.tflite`` model and their quantization.

Every target feeds float eval data and scores float outputs, so quantized model I/O
(``int8_full``, AI Edge Quantizer's static recipes) is converted here with the
tensor's own scale and zero point. Reads models with the LiteRT interpreter only
(no tensorflow).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One model input or output: name, shape with the batch axis (``-1`` where the
    model accepts any size), numpy dtype, and quantization (``scale == 0`` means none)."""

    name: str
    index: int
    shape: tuple[int, ...]
    dtype: np.dtype
    scale: float
    zero_point: int

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0 and np.issubdtype(self.dtype, np.integer)

    @classmethod
    def from_detail(cls, d: dict[str, Any]) -> TensorSpec:
        sig = d.get("shape_signature")
        shape = tuple(int(x) for x in (sig if sig is not None and len(sig) else d["shape"]))
        scale, zero = d.get("quantization", (0.0, 0))
        return cls(d["name"], int(d["index"]), shape, np.dtype(d["dtype"]), float(scale), int(zero))


@dataclass(frozen=True, slots=True)
class ModelIO:
    """The inputs and outputs of a model, in interpreter order."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @classmethod
    def of_interpreter(cls, interpreter: Any) -> ModelIO:
        return cls(
            tuple(TensorSpec.from_detail(d) for d in interpreter.get_input_details()),
            tuple(TensorSpec.from_detail(d) for d in interpreter.get_output_details()),
        )

    @classmethod
    def of_file(cls, path: Path | str) -> ModelIO:
        from ai_edge_litert.interpreter import Interpreter

        return cls.of_interpreter(Interpreter(model_path=str(path)))


def to_model_input(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Float data -> what the input tensor takes (quantized with its scale/zero point)."""
    if spec.quantized:
        info = np.iinfo(spec.dtype)
        q = np.round(np.asarray(x, dtype=np.float32) / spec.scale) + spec.zero_point
        return np.asarray(np.clip(q, info.min, info.max), dtype=spec.dtype)
    return np.asarray(x, dtype=spec.dtype)


def from_model_output(y: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """What an output tensor holds -> float32 (dequantized with its scale/zero point)."""
    if spec.quantized:
        return (y.astype(np.float32) - spec.zero_point) * np.float32(spec.scale)
    return np.asarray(y, dtype=np.float32)


def outputs_to_float(outputs: Sequence[np.ndarray], specs: Sequence[TensorSpec]) -> list[np.ndarray]:
    return [from_model_output(y, s) for y, s in zip(outputs, specs)]
