"""AI Edge Quantizer variants: Google's quantizer applied to the fp32 ``.tflite``.

Each builder starts from the fp32 baseline (``ctx.fp32()``), so these variants exist for a
``.tflite`` source too. The static recipe (``aeq_static_a8w8``) calibrates on the
representative data through the model's signature and, unlike ``int8``, also quantizes
the model's inputs and outputs.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from pytest_edgeopt.variants.registry import BuildContext, VariantBuildError, VariantUnavailable


def build_dynamic_wi8(ctx: BuildContext) -> bytes:
    """int8 weights, float activations quantized on the fly (``recipe.dynamic_wi8_afp32``)."""
    return quantize(ctx, "dynamic_wi8_afp32")


def build_weight_only_wi8(ctx: BuildContext) -> bytes:
    """int8 weights dequantized to float at run time (``recipe.weight_only_wi8_afp32``)."""
    return quantize(ctx, "weight_only_wi8_afp32")


def build_static_a8w8(ctx: BuildContext) -> bytes:
    """int8 weights and activations, calibrated (``recipe.static_wi8_ai8``)."""
    return quantize(ctx, "static_wi8_ai8")


def build_dynamic_wi4(ctx: BuildContext) -> bytes:
    """int4 weights, float activations quantized on the fly (``recipe.dynamic_wi4_afp32``)."""
    return quantize(ctx, "dynamic_wi4_afp32")


def quantize(ctx: BuildContext, recipe_name: str, quantization_recipe: Any = None) -> bytes:
    """Apply the AI Edge Quantizer recipe ``recipe_name`` (a function of
    ``litert_quantizer.recipe``, or the ``quantization_recipe`` given, which ``recipe_name``
    then names in messages) to the fp32 baseline and return the ``.tflite`` bytes."""
    from pytest_edgeopt.variants.tfenv import error_details, native_output_captured, quiet_warnings, root_cause

    with native_output_captured(), quiet_warnings():
        from litert_quantizer import quantizer, recipe

    fp32 = bytes(ctx.fp32())
    calibration_data = None
    try:
        with native_output_captured(), quiet_warnings():
            q = quantizer.Quantizer(fp32)
            q.load_quantization_recipe(quantization_recipe if quantization_recipe is not None
                                       else getattr(recipe, recipe_name)())
            needs_calibration = q.need_calibration
    except Exception as exc:
        raise VariantBuildError(f"{ctx.spec.name}: AI Edge Quantizer cannot read the fp32 model: "
                                f"{root_cause(exc)}", error_details(exc)) from None
    if needs_calibration:
        calibration_data = _calibration_data(ctx, fp32)
    try:
        with native_output_captured(), quiet_warnings():
            calibration = (q.calibrate(calibration_data, num_threads=max(1, os.cpu_count() or 1))
                           if calibration_data is not None else None)
            result = q.quantize(calibration, enable_progress_bar=False, enable_progress_report=False)
    except Exception as exc:
        raise VariantBuildError(f"{ctx.spec.name}: AI Edge Quantizer ({recipe_name}) failed: "
                                f"{root_cause(exc)}", error_details(exc)) from None
    return bytes(result.quantized_model)


def _named_samples(ctx: BuildContext, details: dict[str, Any]) -> list[dict[str, Any]]:
    """Calibration samples of a model with several inputs as ``{input name: sample}``: a
    dict sample by its keys, a list (the Keras input order) by the Keras input names when
    known, else by the per-sample shapes (:func:`pytest_edgeopt.tensors.arrange_inputs`)."""
    from pytest_edgeopt.tensors import TensorSpec, arrange_inputs
    from pytest_edgeopt.variants.ptq import calibration_samples

    specs = [TensorSpec(n, i, (-1, *(int(x) for x in d["shape"][1:])), np.dtype(d["dtype"]), 0.0, 0)
             for i, (n, d) in enumerate(details.items())]
    out = []
    for sample in calibration_samples(ctx):
        try:
            arrays = arrange_inputs(sample, specs, ctx.mut.input_names())
        except ValueError as exc:
            raise VariantBuildError(f"{ctx.spec.name}: representative_data: {exc}") from None
        out.append({s.name: np.asarray(a).astype(s.dtype, copy=False) for s, a in zip(specs, arrays)})
    return out


def _calibration_data(ctx: BuildContext, fp32: bytes) -> dict[str, list[dict[str, Any]]]:
    """``{signature key: [{input name: sample}, ...]}`` from the representative data.

    Raises :class:`VariantUnavailable` when the quantizer's calibration cannot take the
    model: it needs exactly one signature (SignatureDef; published ``.tflite`` files made
    by older converters often have none) with one input."""
    from ai_edge_litert.interpreter import Interpreter

    from pytest_edgeopt.variants.ptq import calibration_samples

    interpreter = Interpreter(model_content=fp32)
    signatures = interpreter.get_signature_list()
    if len(signatures) != 1:
        found = ", ".join(signatures) or "none"
        raise VariantUnavailable(
            f"{ctx.spec.name}: AI Edge Quantizer's static (calibrated) recipes need a model with exactly one "
            f"signature (SignatureDef); the fp32 model has {len(signatures)} ({found}). Re-export the float "
            "model with one serving signature (TFLiteConverter does) to get this variant")
    key = next(iter(signatures))
    details = interpreter.get_signature_runner(key).get_input_details()
    if len(details) > 1:
        return {key: _named_samples(ctx, details)}
    name, detail = next(iter(details.items()))
    shape = tuple(int(x) for x in detail["shape"])
    samples = calibration_samples(ctx, len(shape))
    dtype = np.dtype(detail["dtype"])
    return {key: [{name: s.astype(dtype, copy=False)} for s in samples]}
