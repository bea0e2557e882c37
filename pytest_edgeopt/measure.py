"""Measure a built variant on a target: size, latency, and the metric on the eval set.

Two checks make a variant that runs but is broken a FAIL (:class:`VariantBroken`) whatever
the test's budgets: outputs that hold NaN or inf (:class:`~pytest_edgeopt.variants.float_nodes.NonFiniteOutputs`,
checked right after the predictions; the session then names the first node producing them),
and a classifier whose top-1 collapsed to chance while fp32's is well above
(:func:`check_collapse`, :class:`AccuracyCollapsed`, once fp32 is measured on the same target).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pytest_edgeopt.model import ModelError, ModelUnderTest, n_samples, score, take
from pytest_edgeopt.results import Accuracy, Observation
from pytest_edgeopt.targets.base import LatencySettings, ModelIncompatible, Target, TargetError, VariantBroken
from pytest_edgeopt.tensors import ModelIO, arrange_inputs
from pytest_edgeopt.variants.builder import BuiltVariant
from pytest_edgeopt.variants.float_nodes import NonFiniteOutputs, nonfinite_outputs

#: Top-1 at or below chance (1 / classes) plus this counts as collapsed ...
CHANCE_MARGIN = 0.05
#: ... when fp32's top-1 on the same target is at least this far above chance.
CHANCE_BASELINE_GAP = 0.25


def check_eval_shape(mut: ModelUnderTest, built: BuiltVariant, x: Any) -> Any:
    """The eval inputs as float32 (one array; for a model with several inputs a list, one
    array per input in the ``.tflite``'s input order, matched by name where the model's input
    names are known), or a ModelError saying how they differ from the model's inputs."""
    io = ModelIO.of_file(built.path)
    try:
        arrays = arrange_inputs(x, io.inputs, mut.input_names())
    except ValueError as exc:
        raise ModelError(f"{mut.name}: eval_data: {exc}") from None
    for spec, a in zip(io.inputs, arrays):
        want = tuple(spec.shape[1:])
        got = tuple(a.shape[1:])
        if len(want) != len(got) or any(w not in (-1, g) for w, g in zip(want, got)):
            raise ModelError(
                f"{mut.name}: eval_data x has samples of shape {got} but the model's input {spec.name!r} "
                f"takes {tuple('?' if w < 0 else w for w in want)} per sample; reshape x "
                f"(e.g. x.reshape(-1, {', '.join(str(max(w, 1)) for w in want)}))"
            )
    floats = [np.asarray(a, dtype=np.float32) for a in arrays]
    return floats[0] if len(floats) == 1 else floats


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
        if isinstance(x, list) and not getattr(target, "supports_multi_input", False):
            names = ", ".join(s.name for s in ModelIO.of_file(built.path).inputs)
            raise ModelIncompatible(f"the model has {len(x)} inputs ({names}); {target.name} takes one input per "
                                    "run (its runner feeds a single input tensor); measure this model on cpu")
        if sequence:
            if not getattr(target, "supports_sequence", False):
                raise TargetError(f"{target.name} cannot evaluate a stateful model as one sequence (its runs do "
                                  "not carry state from one batch to the next); measure it on cpu")
            outputs = target.predict(built.path, x, sequence=True)  # type: ignore[call-arg]
        else:
            outputs = target.predict(built.path, x)
        found = nonfinite_outputs(outputs, [o.name for o in ModelIO.of_file(built.path).outputs])
        if found:
            rows = sorted({i for f in found for i in f.first})
            raise NonFiniteOutputs(built.name, found, take(x, rows))
        accuracy = Accuracy(mut.metric_name, score(mut.metric, outputs, xy[1]), n_samples(x))
    lat = target.latency(built.path, settings)
    extras: dict[str, Any] = dict(lat.extras)
    if sequence:
        extras["evaluation"] = SEQUENCE
    return Observation(
        model=mut.name, variant=built.name, target=target.name, device=target.device.to_dict(),
        size_bytes=built.size_bytes, compressed_size_bytes=built.compressed_size_bytes,
        latency=lat.stats, accuracy=accuracy, init_ms=lat.init_ms, first_inference_ms=lat.first_inference_ms,
        build_seconds=built.build_seconds, from_cache=built.from_cache, recipe=dict(built.recipe), extras=extras,
        profile=lat.profile,
    )


class AccuracyCollapsed(VariantBroken):
    """The variant's top-1 fell to chance while fp32's is well above: broken, not a budget miss."""


def check_collapse(obs: Observation, baseline: Observation, classes: int) -> None:
    """Raise :class:`AccuracyCollapsed` when ``obs``'s top-1 is at or below chance
    (``1/classes``) + :data:`CHANCE_MARGIN` while ``baseline``'s (fp32 on the same target)
    is at least :data:`CHANCE_BASELINE_GAP` above chance; top-1 classifiers only."""
    acc, base = obs.accuracy, baseline.accuracy
    if acc is None or base is None or acc.metric != "top1" or classes < 2 or obs.variant == baseline.variant:
        return
    chance = 1.0 / classes
    if acc.value <= chance + CHANCE_MARGIN and base.value >= chance + CHANCE_BASELINE_GAP:
        quantized = "int8" in obs.variant or "a8" in obs.variant
        calibrated = ("most often the representative_data does not look like the eval inputs (another scale or "
                      "pre-processing): check it; else " if quantized else "")
        remedy = calibrated + ("keep the nodes that lose the signal in float: @pytest.mark.edgeopt_options(float_nodes=\"auto\") "
                  "(or the per-node report, pytest_edgeopt.variants.quant_debug.layer_errors), or try int16x8"
                  if obs.variant in ("int8", "int8_full") else
                  "check the variant's knobs (calibration_samples, sparsity, clusters, finetune_epochs)"
                  + ("; for quantization, try int16x8 or float_nodes on int8" if quantized else ""))
        raise AccuracyCollapsed(
            f"{obs.variant} collapsed to chance: top1 {acc.value:.4f} on {acc.samples} samples, chance "
            f"{chance:.4f} ({classes} classes), fp32 {base.value:.4f} on {baseline.target}; the variant is broken, "
            f"whatever the budget. Remedy: {remedy}")


def output_classes(built: BuiltVariant) -> int:
    """Classes of the first output (its last axis), 0 when it is not a vector per sample."""
    outputs = ModelIO.of_file(built.path).outputs
    shape = outputs[0].shape if outputs else ()
    return int(shape[-1]) if len(shape) == 2 and shape[-1] > 1 else 0
