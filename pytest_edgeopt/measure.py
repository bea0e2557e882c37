"""Measure a built variant on a target: size, latency, and the metric on the eval set."""

from __future__ import annotations

from typing import Any

import numpy as np

from pytest_edgeopt.model import ModelError, ModelUnderTest, score
from pytest_edgeopt.results import Accuracy, Observation
from pytest_edgeopt.targets.base import LatencySettings, Target, TargetError
from pytest_edgeopt.tensors import ModelIO
from pytest_edgeopt.variants.builder import BuiltVariant


def check_eval_shape(mut: ModelUnderTest, built: BuiltVariant, x: np.ndarray) -> np.ndarray:
    """The eval inputs as float32, or a ModelError saying how they differ from the model's input."""
    io = ModelIO.of_file(built.path)
    if len(io.inputs) != 1:
        names = ", ".join(s.name for s in io.inputs)
        raise ModelError(f"{mut.name}: the model has {len(io.inputs)} inputs ({names}); eval_data supports one")
    spec = io.inputs[0]
    want = tuple(spec.shape[1:])
    got = tuple(x.shape[1:])
    if len(want) != len(got) or any(w not in (-1, g) for w, g in zip(want, got)):
        raise ModelError(
            f"{mut.name}: eval_data x has samples of shape {got} but the model's input {spec.name!r} "
            f"takes {tuple('?' if w < 0 else w for w in want)} per sample; reshape x "
            f"(e.g. x.reshape(-1, {', '.join(str(max(w, 1)) for w in want)}))"
        )
    return np.asarray(x, dtype=np.float32)


#: ``extras["evaluation"]`` of a model evaluated as one sequence (state carried between samples).
SEQUENCE = "sequence"


def observe(target: Target, built: BuiltVariant, mut: ModelUnderTest, settings: LatencySettings,
            sequence: bool = False) -> Observation:
    """Time ``built`` on ``target`` and score it on ``mut``'s eval data (when given).

    Eval samples are independent (targets reset RNN state before each), unless
    ``sequence``: the model carries state across calls and is fed its samples in order
    (``extras["evaluation"] == "sequence"``); a target that cannot (``supports_sequence``
    unset) raises TargetError.
    """
    accuracy = None
    xy = mut.eval_arrays
    if xy is not None:
        x = check_eval_shape(mut, built, xy[0])
        if sequence:
            if not getattr(target, "supports_sequence", False):
                raise TargetError(f"{target.name} cannot evaluate a stateful model as one sequence (its runs do "
                                  "not carry state from one batch to the next); measure it on cpu")
            outputs = target.predict(built.path, x, sequence=True)  # type: ignore[call-arg]
        else:
            outputs = target.predict(built.path, x)
        accuracy = Accuracy(mut.metric_name, score(mut.metric, outputs, xy[1]), len(x))
    lat = target.latency(built.path, settings)
    extras: dict[str, Any] = dict(lat.extras)
    if sequence:
        extras["evaluation"] = SEQUENCE
    return Observation(
        model=mut.name, variant=built.name, target=target.name, device=target.device.to_dict(),
        size_bytes=built.size_bytes, compressed_size_bytes=built.compressed_size_bytes,
        latency=lat.stats, accuracy=accuracy, init_ms=lat.init_ms, first_inference_ms=lat.first_inference_ms,
        build_seconds=built.build_seconds, from_cache=built.from_cache, recipe=dict(built.recipe), extras=extras,
    )
