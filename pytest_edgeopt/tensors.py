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


def input_key(name: str) -> str:
    """The model-level name of a ``.tflite`` input: ``serving_default_image:0`` -> ``image``
    (the converter names a Keras input ``serving_default_<input name>:0``)."""
    base = name.split(":")[0]
    return base[len("serving_default_"):] if base.startswith("serving_default_") else base


def _fits(a: np.ndarray, spec: TensorSpec) -> bool:
    want = spec.shape[1:]
    return len(a.shape) - 1 == len(want) and all(w in (-1, g) for w, g in zip(want, a.shape[1:]))


def arrange_inputs(x: Any, specs: Sequence[TensorSpec], names: Sequence[str] | None = None) -> list[np.ndarray]:
    """Model inputs ``x`` (one array, a list in the source model's input order, or a dict keyed
    by input name) as one array per ``specs`` entry, in the ``.tflite``'s input order.

    The converter orders a Keras model's inputs by name, not as the Keras model does, so a
    list is matched by ``names`` (the Keras input names, in list order) when given; else by
    the per-sample shape when that tells the inputs apart; else by position. Raises
    ValueError naming the inputs when ``x`` does not fit.
    """
    wanted = ", ".join(f"{input_key(s.name)} {tuple('?' if d < 0 else d for d in s.shape[1:])}" for s in specs)
    if isinstance(x, dict):
        by_key = {str(k): np.asarray(v) for k, v in x.items()}
        missing = [input_key(s.name) for s in specs if input_key(s.name) not in by_key and s.name not in by_key]
        if missing:
            raise ValueError(f"x is a dict with keys {', '.join(sorted(by_key))} but the model's inputs are "
                             f"{wanted}: missing {', '.join(missing)}")
        return [by_key.get(input_key(s.name), by_key.get(s.name)) for s in specs]  # type: ignore[misc]
    arrays = [np.asarray(a) for a in x] if isinstance(x, (list, tuple)) else [np.asarray(x)]
    if len(arrays) != len(specs):
        raise ValueError(f"x gives {len(arrays)} input array(s) but the model has {len(specs)} input(s): {wanted}; "
                         "give a list of arrays (one per input, same N) or a dict keyed by input name")
    if len(specs) == 1:
        return arrays
    keys = [input_key(s.name) for s in specs]
    if names is not None and sorted(names) == sorted(keys):
        order = {n: i for i, n in enumerate(names)}
        return [arrays[order[k]] for k in keys]
    fits = [[i for i, a in enumerate(arrays) if _fits(a, s)] for s in specs]
    if all(len(f) == 1 for f in fits) and len({f[0] for f in fits}) == len(specs):
        return [arrays[f[0]] for f in fits]
    return arrays
