"""The post-training variants of a float ``.tflite``, through AI Edge Quantizer recipes.

TFLiteConverter needs a TensorFlow model; a model that exists only as a float ``.tflite``
gets the same named variants from Google's AI Edge Quantizer instead, so a suite written for
a Keras model runs unchanged on its ``.tflite``:

- ``float16``: float16 weights (``FLOAT_CASTING`` weight-only, 16 bits), float compute;
- ``dynamic_range``: ``recipe.dynamic_wi8_afp32`` (int8 weights, activations quantized on
  the fly);
- ``int8``: ``recipe.static_wi8_ai8`` with the graph's inputs and outputs left float (the
  quantizer then puts QUANTIZE/DEQUANTIZE at the edges), calibrated on the representative data;
- ``int8_full``: ``recipe.static_wi8_ai8`` as it is: int8 inputs and outputs; refused (a skip)
  when the quantizer leaves an op in float (then the model is not integer-only);
- ``int16x8``: ``recipe.static_wi8_ai16`` with float inputs and outputs.

The variant's recipe records ``tool: litert_quantizer`` and ``aeq_recipe``
(:func:`pytest_edgeopt.variants.registry.recipe`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pytest_edgeopt.variants.aeq import quantize
from pytest_edgeopt.variants.registry import BuildContext, VariantUnavailable


def build_float16(ctx: BuildContext) -> bytes:
    return quantize(ctx, "weight_only_wf16_afp32", _recipe("weight_only", 16))


def build_dynamic_range(ctx: BuildContext) -> bytes:
    return quantize(ctx, "dynamic_wi8_afp32")


def build_int8(ctx: BuildContext) -> bytes:
    _refuse_float_nodes(ctx)
    return quantize(ctx, "static_wi8_ai8 (float I/O)", _recipe("static", 8, float_io=True))


def build_int8_full(ctx: BuildContext) -> bytes:
    _refuse_float_nodes(ctx)
    data = quantize(ctx, "static_wi8_ai8", _recipe("static", 8, float_io=False))
    _check_integer_only(ctx, data)
    return data


def build_int16x8(ctx: BuildContext) -> bytes:
    return quantize(ctx, "static_wi8_ai16 (float I/O)", _recipe("static", 16, float_io=True))


def _recipe(mode: str, bits: int, float_io: bool = False) -> Any:
    """An AI Edge Quantizer recipe over every supported op: ``weight_only`` float casting to
    ``bits`` (16: float16 weights), or ``static`` int8 weights with ``bits``-bit activations;
    ``float_io`` keeps the graph's inputs and outputs in float (``NO_QUANTIZE`` on the
    quantizer's virtual INPUT/OUTPUT ops)."""
    from pytest_edgeopt.variants.tfenv import native_output_captured, quiet_warnings

    with native_output_captured(), quiet_warnings():
        from litert_quantizer import qtyping, recipe_manager
        from litert_quantizer.algorithm_manager import AlgorithmName

    ops = qtyping.TFLOperationName
    manager = recipe_manager.RecipeManager()
    if mode == "weight_only":
        manager.add_weight_only_config(regex=".*", operation_name=ops.ALL_SUPPORTED, num_bits=bits,
                                       algorithm_key=AlgorithmName.FLOAT_CASTING)
    else:
        manager.add_static_config(regex=".*", operation_name=ops.ALL_SUPPORTED, activation_num_bits=bits,
                                  weight_num_bits=8)
        if float_io:
            for op in (ops.INPUT, ops.OUTPUT):
                manager.add_quantization_config(".*", op, algorithm_key=AlgorithmName.NO_QUANTIZE)
    return manager.get_quantization_recipe()


def _refuse_float_nodes(ctx: BuildContext) -> None:
    if ctx.options.get("float_nodes"):
        raise VariantUnavailable(
            f"{ctx.spec.name}: float_nodes (selective quantization) names nodes as TensorFlow's quantization "
            "debugger does, which needs the TensorFlow model; this model is a .tflite quantized by AI Edge "
            "Quantizer. Drop float_nodes for it, or pass the Keras model or SavedModel")


def _check_integer_only(ctx: BuildContext, data: bytes) -> None:
    """``int8_full`` promises int8 inputs and outputs and integer ops: refuse the variant,
    naming the first op and its node, when the quantizer left float behind."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=bytes(data))
    for role, details in (("input", it.get_input_details()), ("output", it.get_output_details())):
        for d in details:
            if np.dtype(d["dtype"]) != np.int8:
                raise VariantUnavailable(
                    f"{ctx.spec.name}: AI Edge Quantizer left {role} {d['name']!r} as {np.dtype(d['dtype']).name}, "
                    "not int8: this .tflite gets no integer-only variant (int8 keeps float I/O)")
    dtypes = {int(t["index"]): np.dtype(t["dtype"]) for t in it.get_tensor_details()}
    for op in it._get_ops_details():
        if op["op_name"] in ("QUANTIZE", "DEQUANTIZE"):
            continue
        floats = [i for i in (*op["inputs"], *op["outputs"]) if i >= 0 and dtypes.get(int(i), np.dtype(np.int8)).kind == "f"]
        if floats:
            raise VariantUnavailable(
                f"{ctx.spec.name}: AI Edge Quantizer left op {op['op_name']} (node {op['index']}) in float, so this "
                ".tflite has no integer-only int8 variant; int8 (float I/O, float fallback) still builds")
