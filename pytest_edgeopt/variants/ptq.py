"""Post-training variants, built with ``tf.lite.TFLiteConverter``.

``fp32`` is the baseline (for a ``.tflite`` source: the file itself, once checked to be
a readable float model). ``float16``, ``dynamic_range``, ``int8`` (float I/O),
``int8_full`` (int8 I/O, integer-only ops) and ``int16x8`` follow TensorFlow's
post-training quantization guide. The int8/int16 recipes calibrate on
``ModelUnderTest.representative_data``, one sample at a time, at most
``calibration_samples`` samples. ``int8`` and ``int8_full`` keep the nodes named by the
``float_nodes`` option in float (selective quantization with TensorFlow's quantization
debugger; :mod:`pytest_edgeopt.variants.quant_debug` says which nodes).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from pytest_edgeopt.variants.registry import BuildContext, VariantBuildError, VariantUnavailable

#: Conversion recipes by name; "qat" converts a quantization-aware-trained Keras model.
MODES = ("fp32", "float16", "dynamic_range", "int8", "int8_full", "int16x8", "qat")
_CALIBRATED = ("int8", "int8_full", "int16x8")
#: Modes that honour ``float_nodes``: those quantized by TensorFlow's MLIR quantizer. TF 2.21
#: quantizes int16x8 with its older calibrator, which has no way to keep a node in float.
SELECTIVE = ("int8", "int8_full")


def build_fp32(ctx: BuildContext) -> bytes:
    """The float32 baseline: a plain conversion, or a float ``.tflite`` file's bytes."""
    src = ctx.mut.source
    if src.kind == "tflite":
        assert src.path is not None
        return read_float_tflite(src.path)
    return convert(ctx, "fp32")


def build_float16(ctx: BuildContext) -> bytes:
    return convert(ctx, "float16")


def build_dynamic_range(ctx: BuildContext) -> bytes:
    return convert(ctx, "dynamic_range")


def build_int8(ctx: BuildContext) -> bytes:
    return convert(ctx, "int8")


def build_int8_full(ctx: BuildContext) -> bytes:
    return convert(ctx, "int8_full")


def build_int16x8(ctx: BuildContext) -> bytes:
    return convert(ctx, "int16x8")


def convert(ctx: BuildContext, mode: str, model: Any = None) -> bytes:
    """Convert the model under test (or the tf_keras ``model`` given, e.g. a pruned one)
    with the recipe ``mode`` (one of :data:`MODES`) and return the ``.tflite`` bytes.

    For the ``int8`` and ``int8_full`` variants, a non-empty ``float_nodes`` option keeps
    those nodes in float (selective quantization, :func:`convert_selective`).

    Raises :class:`VariantBuildError` quoting the converter's error.
    """
    from pytest_edgeopt.variants.tfenv import run_converter

    converter = configure_converter(ctx, mode, model)
    # Only variants with the knob in their recipe (so in their cache key) honour it: the
    # tfmot builders' int8 step must not pick up a model-wide float_nodes.
    float_nodes = ctx.options.get("float_nodes") if "float_nodes" in ctx.spec.knobs else None
    if mode in SELECTIVE and float_nodes:
        return convert_selective(converter, ctx, mode, float_nodes)
    return run_converter(converter, ctx.spec.name)


def configure_converter(ctx: BuildContext, mode: str, model: Any = None) -> Any:
    """A ``TFLiteConverter`` for the model under test (or the tf_keras ``model`` given) set
    up with the recipe ``mode`` (one of :data:`MODES`), calibration data included; not run."""
    from pytest_edgeopt.variants.tfenv import import_tf, make_converter

    if mode not in MODES:
        raise ValueError(f"unknown conversion mode {mode!r}; known: {', '.join(MODES)}")
    tf = import_tf()
    if model is not None:
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        input_rank = _keras_input_rank(model)
    else:
        converter = make_converter(ctx.mut.source, ctx.memo, ctx.mut.fingerprint)
        input_rank = None
    if mode != "fp32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if mode in _CALIBRATED:
        if input_rank is None and ctx.mut.source.kind in ("keras", "keras3") and ctx.mut.source.obj is not None:
            input_rank = _keras_input_rank(ctx.mut.source.obj)
        if input_rank is None:
            input_rank = _tflite_input_rank(ctx)
        samples = calibration_samples(ctx, input_rank)
        converter.representative_dataset = _dataset(samples)
    if mode == "int8_full":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    elif mode == "int16x8":
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    return converter


# -- selective quantization (float_nodes) ----------------------------------------------


def quantization_debugger(converter: Any, variant: str, mode: str,
                          float_nodes: Sequence[str] = (), debug_dataset: Any = None) -> Any:
    """``tf.lite.experimental.QuantizationDebugger`` over a configured int8 converter
    (calibrated once; its models come from the same MLIR quantizer ``convert()`` uses).

    ``float_nodes`` are passed as ``denylisted_nodes``; ``int8_full`` sets
    ``fully_quantize`` (int8 input and output). Raises :class:`VariantBuildError`.
    """
    from pytest_edgeopt.variants.tfenv import first_line, import_tf, native_output_captured, quiet_warnings

    tf = import_tf()
    options = tf.lite.experimental.QuantizationDebugOptions(
        denylisted_nodes=list(float_nodes) or None, fully_quantize=(mode == "int8_full"))
    with native_output_captured() as out, quiet_warnings():
        try:
            return tf.lite.experimental.QuantizationDebugger(
                converter=converter, debug_dataset=debug_dataset, debug_options=options)
        except Exception as exc:
            error = exc
    tail = out.tail(6)
    raise VariantBuildError(f"{variant}: the TFLite quantization debugger failed: {first_line(error)}"
                            + (f"\n{tail}" if tail else "")) from None


def debug_model(debugger: Any) -> bytes:
    """The debugger's instrumented model (``NumericVerify`` after every quantized node):
    the one it built on creation, else a fresh ``get_debug_quantized_model()``."""
    model = getattr(debugger, "quant_model", None)
    return bytes(model if model is not None else debugger.get_debug_quantized_model())


def debug_node_names(model: bytes) -> list[str]:
    """The quantized nodes of a debug-mode model (one per ``NumericVerify`` op), named as
    ``denylisted_nodes`` takes them (the debugger's ``tensor_name``), in graph order."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=bytes(model))
    return [numeric_verify_node(d["name"]) for d in it.get_tensor_details()
            if d["name"].startswith(_NUMERIC_VERIFY_PREFIX)]


_NUMERIC_VERIFY_PREFIX = "NumericVerify/"


def numeric_verify_node(name: str) -> str:
    """``NumericVerify/<quantized tensor>:<index>`` -> the node name ``denylisted_nodes``
    takes: the quantized tensor's name without the one-digit suffix the quantizer added
    (the rule of the debugger's own ``layer_statistics_dump``)."""
    tensor = name[len(_NUMERIC_VERIFY_PREFIX):].rsplit(":", 1)[0]
    return tensor[:-1] if tensor and tensor[-1].isdigit() else tensor


def convert_selective(converter: Any, ctx: BuildContext, mode: str, float_nodes: Sequence[str]) -> bytes:
    """Quantize as ``mode`` (``int8`` or ``int8_full``) but keep ``float_nodes`` in float,
    through the quantization debugger's ``denylisted_nodes`` (TensorFlow's documented
    selective quantization: the MLIR quantizer leaves those ops and their outputs in float,
    with QUANTIZE/DEQUANTIZE around them).

    ``int8_full`` keeps int8 input and output, but the nodes kept in float run as float ops:
    the model is no longer integer-only. Raises :class:`VariantBuildError` naming any node
    that is not a quantized node of the model (the quantizer would ignore it silently).
    """
    from pytest_edgeopt.variants.tfenv import first_line, import_tf, native_output_captured, quiet_warnings

    tf = import_tf()
    nodes = normalize_float_nodes(float_nodes)
    debugger = quantization_debugger(converter, ctx.spec.name, mode)
    known = debug_node_names(debug_model(debugger))
    unknown = [n for n in nodes if n not in known]
    if unknown:
        listing = "\n  ".join(known) if known else "(none)"
        raise VariantBuildError(
            f"{ctx.spec.name}: float_nodes names {', '.join(map(repr, unknown))}, which "
            f"{'is' if len(unknown) == 1 else 'are'} not quantized node(s) of {ctx.mut.name!r}; its "
            f"quantized nodes (as the quantization debugger names them):\n  {listing}")
    with native_output_captured() as out, quiet_warnings():
        try:
            debugger.options = tf.lite.experimental.QuantizationDebugOptions(
                denylisted_nodes=list(nodes), fully_quantize=(mode == "int8_full"))
            model = debugger.get_nondebug_quantized_model()
        except Exception as exc:
            error: Exception | None = exc
        else:
            error = None
    if error is not None:
        tail = out.tail(6)
        raise VariantBuildError(f"{ctx.spec.name}: selective quantization (float_nodes) failed: "
                                f"{first_line(error)}" + (f"\n{tail}" if tail else "")) from None
    return bytes(model)


def normalize_float_nodes(value: Any) -> tuple[str, ...]:
    """``float_nodes`` as a sorted tuple of distinct names (order does not change the model)."""
    if not value:
        return ()
    return tuple(sorted(set(value)))


def calibration_samples(ctx: BuildContext, input_rank: int | None = None) -> list[np.ndarray]:
    """Single-sample float32 batches (shape ``(1, ...)``) from the representative data,
    at most ``ctx.options["calibration_samples"]`` of them.

    ``input_rank`` (the model input's rank with the batch axis), when known, lets a
    representative "batch" that is a single sample without its batch axis count as one.
    """
    batches = ctx.mut.representative_batches()
    if batches is None:
        raise VariantUnavailable(
            f"{ctx.spec.name} needs ModelUnderTest(representative_data=...) to calibrate, which "
            f"{ctx.mut.name!r} does not set")
    limit = int(ctx.options["calibration_samples"])
    samples: list[np.ndarray] = []
    for batch in batches:
        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim == 0 or (input_rank is not None and batch.ndim == input_rank - 1):
            batch = batch[None]
        for i in range(len(batch)):
            samples.append(batch[i:i + 1])
            if len(samples) >= limit:
                return samples
    if not samples:
        raise VariantBuildError(f"{ctx.spec.name}: representative_data of {ctx.mut.name!r} holds no samples")
    return samples


def _dataset(samples: list[np.ndarray]) -> Callable[[], Iterator[list[np.ndarray]]]:
    def representative_dataset() -> Iterator[list[np.ndarray]]:
        for s in samples:
            yield [s]

    return representative_dataset


def _keras_input_rank(model: Any) -> int | None:
    try:
        inputs = model.inputs
        return len(inputs[0].shape) if inputs and len(inputs) == 1 else None
    except Exception:
        return None


def _tflite_input_rank(ctx: BuildContext) -> int | None:
    """The first input's rank in the fp32 baseline (best effort: None when unknown)."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        details = Interpreter(model_content=bytes(ctx.fp32())).get_input_details()
        return len(details[0]["shape"]) if len(details) == 1 else None
    except Exception:
        return None


# -- a .tflite given by the user -------------------------------------------------------


def read_float_tflite(path: Path) -> bytes:
    """The bytes of a float ``.tflite``, checked with the LiteRT interpreter.

    Raises :class:`VariantBuildError` when the file is empty, corrupt or truncated, or
    already quantized (integer inputs/outputs, quantized or float16 tensors): the
    fp32 baseline and the AI Edge Quantizer variants must start from the float model.
    """
    from ai_edge_litert.interpreter import Interpreter

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise VariantBuildError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not data:
        raise VariantBuildError(f"{path} is empty: it is not a .tflite model (was the export interrupted?)")
    try:
        interpreter = Interpreter(model_content=data)
    except (ValueError, RuntimeError) as exc:
        reason = str(exc).strip() or type(exc).__name__
        if re.search(r"not a valid flatbuffer|identifier|out of range|truncat|verif", reason, re.IGNORECASE):
            raise VariantBuildError(
                f"{path} is corrupt or truncated: LiteRT cannot read it ({reason}). Export the float "
                ".tflite again") from None
        raise VariantBuildError(f"LiteRT cannot load {path}: {reason}") from None
    for role, details in (("input", interpreter.get_input_details()), ("output", interpreter.get_output_details())):
        for d in details:
            dtype = np.dtype(d["dtype"])
            if dtype.kind != "f":
                raise VariantBuildError(
                    f"{path} is not a float .tflite ({role} {d['name']!r} is {dtype.name}): the fp32 baseline "
                    "and the AI Edge Quantizer variants start from the float model; pass the float .tflite "
                    "(or the Keras model/SavedModel) rather than an already quantized one")
    optimized = []
    for d in interpreter.get_tensor_details():
        dtype = np.dtype(d["dtype"])
        scales = d.get("quantization_parameters", {}).get("scales")
        if (scales is not None and len(scales) and dtype.kind in "iu") or dtype == np.float16:
            optimized.append((dtype.itemsize, d["name"], dtype))
    if optimized:
        _, name, dtype = min(optimized, key=lambda t: t[0])  # name a weight, not an int32 bias
        raise VariantBuildError(
            f"{path} is not a float .tflite (tensor {name!r} is {'quantized ' if dtype.kind in 'iu' else ''}"
            f"{dtype.name}): it is already optimized; pass the float .tflite (or the Keras "
            "model/SavedModel) so the variants start from float32")
    return data
