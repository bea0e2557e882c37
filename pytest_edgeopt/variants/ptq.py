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
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

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

    A model whose RNN layers the converter cannot take with a dynamic batch (tensor-list
    ops) is converted from a batch-1 concrete function instead, and ``ctx.notes`` records
    ``conversion: concrete_function_batch1``.

    Raises :class:`VariantBuildError` with the converter's root-cause line, and
    :class:`VariantUnavailable` when the recipe does not support an op of the model
    (naming the op and the nodes that hold it).
    """
    from pytest_edgeopt.variants.tfenv import is_tensor_list_failure

    batch1 = _wants_batch1(ctx, model)
    from pytest_edgeopt.variants.tfenv import BATCH1_SAVED_MODEL_REMEDY

    try:
        return _convert_once(ctx, mode, model, batch1)
    except VariantBuildError as exc:
        if batch1 or not is_tensor_list_failure(exc.details or str(exc)):
            raise
        src = ctx.mut.source
        if model is None and src.kind == "saved_model" and not src.trainable:
            raise VariantBuildError(f"{exc}\n{BATCH1_SAVED_MODEL_REMEDY}", exc.details) from None
    ctx.memo[_batch1_key(ctx, model)] = True
    ctx.progress(f"{ctx.spec.name}: the converter cannot take the recurrent layers with a dynamic batch; "
                 "converting a batch-1 concrete function")
    return _convert_once(ctx, mode, model, True)


def _convert_once(ctx: BuildContext, mode: str, model: Any, batch1: bool) -> bytes:
    from pytest_edgeopt.variants.tfenv import BATCH1, ConverterRefused, run_converter

    if batch1 and mode in _CALIBRATED:
        _refuse_calibrating_loops(ctx, model)
    converter = configure_converter(ctx, mode, model, batch1=batch1)
    # Only variants with the knob in their recipe (so in their cache key) honour it: the
    # tfmot builders' int8 step must not pick up a model-wide float_nodes.
    float_nodes = ctx.options.get("float_nodes") if "float_nodes" in ctx.spec.knobs else None
    try:
        if mode in SELECTIVE and float_nodes == "auto":
            from pytest_edgeopt.variants.float_nodes import convert_auto

            data = convert_auto(converter, ctx, mode)
        elif mode in SELECTIVE and float_nodes:
            data = convert_selective(converter, ctx, mode, float_nodes)
        else:
            data = run_converter(converter, ctx.spec.name)
    except ConverterRefused as exc:
        where = _nodes_of_op(ctx, exc.op)
        raise VariantUnavailable(f"{exc}{where}", exc.details) from None
    except VariantBuildError as exc:
        if mode == "qat" and "stateful op" in (exc.details or str(exc)):
            raise VariantBuildError(
                f"{exc}\nRemedy: the converter cannot quantize around the state of the recurrent layers "
                "(UNIDIRECTIONAL_SEQUENCE_LSTM) of a quantization-aware-trained model; use the post-training "
                "int8 or dynamic_range variants for this model", exc.details) from None
        raise
    if batch1:
        ctx.notes["conversion"] = BATCH1
    return data


def _batch1_key(ctx: BuildContext, model: Any) -> tuple[str, str]:
    return ("convert batch1", ctx.mut.fingerprint if model is None else f"{ctx.mut.fingerprint}:{id(model)}")


def _keras_source_model(ctx: BuildContext, model: Any) -> Any:
    """The tf_keras/Keras model being converted, or ``None`` (a plain SavedModel)."""
    if model is not None:
        return model
    src = ctx.mut.source
    if src.obj is not None:
        return src.obj
    if src.kind == "keras" or (src.kind == "saved_model" and src.trainable):
        from pytest_edgeopt.variants.tfenv import keras_original

        try:
            return keras_original(src, ctx.memo, ctx.mut.fingerprint)
        except Exception:
            return None
    return None


def _wants_batch1(ctx: BuildContext, model: Any) -> bool:
    """Convert from a batch-1 concrete function: known for this model in this process, or a
    Keras model with RNN layers and a dynamic batch (``from_keras_model`` fails on those,
    after a long MLIR pass: asking first saves it)."""
    if ctx.memo.get(_batch1_key(ctx, model)):
        return True
    if ctx.mut.source.kind not in ("keras", "keras3") and model is None:
        return False  # a SavedModel: its signature decides; retried on a tensor-list failure
    from pytest_edgeopt.variants.tfenv import needs_batch1

    keras_model = _keras_source_model(ctx, model)
    return keras_model is not None and needs_batch1(keras_model)


def _refuse_calibrating_loops(ctx: BuildContext, model: Any) -> None:
    """TensorFlow 2.21's calibrator crashes the process (SIGSEGV in ``_feed_tensors``) on the
    ``WHILE`` loop GRU and SimpleRNN layers become: fail the variant before that happens."""
    from pytest_edgeopt.variants.tfenv import recurrent_layers

    keras_model = _keras_source_model(ctx, model)
    if keras_model is None:
        return
    loops = [layer for layer in recurrent_layers(keras_model)
             if type(_cell_of(layer)).__name__ != "LSTMCell" and not getattr(_rnn_of(layer), "unroll", False)]
    if loops:
        names = ", ".join(f"{layer.name!r} ({type(layer).__name__})" for layer in loops)
        raise VariantBuildError(
            f"{ctx.spec.name}: not converted: TFLiteConverter's calibration crashes the process "
            f"(SIGSEGV in calibrator._feed_tensors) on the WHILE loop that layer(s) {names} become in "
            f"a batch-1 conversion. Remedy: build those layers with unroll=True (plain ops, no WHILE "
            f"loop), or use float16 / dynamic_range / aeq_dynamic_wi8, which do not calibrate")


def _rnn_of(layer: Any) -> Any:
    return getattr(layer, "forward_layer", None) or layer  # Bidirectional: its forward RNN


def _cell_of(layer: Any) -> Any:
    return getattr(_rnn_of(layer), "cell", None)


#: Keras layer classes an op that bears no layer name comes from (the fused LSTM kernels'
#: tensors are named ``tfl.unidirectional_sequence_lstm``), to name them in a message.
_OP_LAYERS = {
    "UNIDIRECTIONAL_SEQUENCE_LSTM": ("LSTM",),
    "BIDIRECTIONAL_SEQUENCE_LSTM": ("LSTM",),
    "WHILE": ("GRU", "SimpleRNN", "RNN"),
    "CAST": ("Embedding",),
}


def _nodes_of_op(ctx: BuildContext, op: str) -> str:
    """``" (in the fp32 model: ...)"``: the nodes that hold ``op`` in the fp32 model (index and
    output tensor, whose name carries the layer path) and, for an op whose tensors bear no
    layer name, the Keras layers it comes from; best effort: ``""`` when unknown."""
    if not op or ctx.spec.name == "fp32":  # the fp32 build cannot ask for itself
        return ""
    try:
        from ai_edge_litert.interpreter import Interpreter

        it = Interpreter(model_content=bytes(ctx.fp32()))
        names = {d["index"]: d["name"] for d in it.get_tensor_details()}
        nodes = [(int(d["index"]), names.get(int(d["outputs"][0]), "?") if len(d["outputs"]) else "?")
                 for d in it._get_ops_details() if d["op_name"] == op]
    except Exception:
        return ""
    if not nodes:
        return ""
    shown = ", ".join(f"{i} ({name!r})" if "/" in name else str(i) for i, name in nodes[:4])
    shown += f" and {len(nodes) - 4} more" if len(nodes) > 4 else ""
    text = f" (in the fp32 model: {op} node{'s' if len(nodes) > 1 else ''} {shown}"
    keras_model = _keras_source_model(ctx, None)
    if op in _OP_LAYERS and keras_model is not None:
        from pytest_edgeopt.variants.tfenv import recurrent_layers

        candidates = [*recurrent_layers(keras_model), *getattr(keras_model, "layers", [])]
        layers = list({id(x): x for x in candidates
                       if any(c.__name__ in _OP_LAYERS[op] for c in type(x).__mro__)}.values())
        if layers:
            text += "; from layer" + ("s " if len(layers) > 1 else " ") + ", ".join(
                f"{x.name!r} ({type(x).__name__})" for x in layers)
    return text + ")"


def configure_converter(ctx: BuildContext, mode: str, model: Any = None, batch1: bool | None = None) -> Any:
    """A ``TFLiteConverter`` for the model under test (or the tf_keras ``model`` given) set
    up with the recipe ``mode`` (one of :data:`MODES`), calibration data included; not run.

    ``batch1``: trace a batch-1 concrete function (recurrent models); ``None``: when the
    model needs it (see :func:`convert`)."""
    from pytest_edgeopt.variants.tfenv import batch1_converter, import_tf, make_converter

    if mode not in MODES:
        raise ValueError(f"unknown conversion mode {mode!r}; known: {', '.join(MODES)}")
    tf = import_tf()
    if batch1 is None:
        batch1 = _wants_batch1(ctx, model)
    if model is not None:
        converter = batch1_converter(model) if batch1 else tf.lite.TFLiteConverter.from_keras_model(model)
        input_rank, input_dtype = _keras_input_rank(model), _keras_input_dtype(model)
    else:
        converter = make_converter(ctx.mut.source, ctx.memo, ctx.mut.fingerprint, batch1=batch1)
        if not batch1:  # one SavedModel export per model for every variant (same bytes)
            from pytest_edgeopt.variants.keras_export import share_export

            share_export(converter, ctx.memo, (ctx.mut.fingerprint, id(ctx.mut.source.obj)))
        input_rank, input_dtype = None, None
    if mode != "fp32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if mode in _CALIBRATED:
        if input_rank is None and ctx.mut.source.kind in ("keras", "keras3") and ctx.mut.source.obj is not None:
            input_rank = _keras_input_rank(ctx.mut.source.obj)
            input_dtype = _keras_input_dtype(ctx.mut.source.obj)
        if input_rank is None:
            input_rank, input_dtype = _tflite_input_info(ctx)
        samples = calibration_samples(ctx, input_rank)
        if samples and not isinstance(samples[0], np.ndarray):
            samples = _by_input_name(samples, _keras_source_model(ctx, model))
        if input_dtype is not None and input_dtype.kind in "iu":  # token ids: the model takes integers
            samples = [s.astype(input_dtype) for s in samples]
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
    from pytest_edgeopt.variants.tfenv import import_tf, native_output_captured, quiet_warnings, root_cause

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
    raise VariantBuildError(f"{variant}: the TFLite quantization debugger failed: {root_cause(error)}"
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
    from pytest_edgeopt.variants.tfenv import import_tf, native_output_captured, quiet_warnings, root_cause

    tf = import_tf()
    nodes = normalize_float_nodes(float_nodes)
    debugger = quantization_debugger(converter, ctx.spec.name, mode)
    known = debug_node_names(debug_model(debugger))
    # A converted model's tensor may carry one more digit than the debugger's name of it
    # ("StatefulPartitionedCall:01" for "...:0"): such names (the float_nodes remedies give) match too.
    nodes = tuple(sorted({n[:-1] if n not in known and n[-1:].isdigit() and n[:-1] in known else n for n in nodes}))
    unknown = [n for n in nodes if n not in known]
    if known and not unknown and set(known) <= set(nodes):
        raise VariantBuildError(f"{ctx.spec.name}: float_nodes keeps every quantized node of {ctx.mut.name!r} in "
                                "float: nothing is left to quantize (the debugger refuses it); use fp32 or "
                                "dynamic_range, or leave some nodes quantized")
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
                                f"{root_cause(error)}" + (f"\n{tail}" if tail else "")) from None
    return bytes(model)


def normalize_float_nodes(value: Any) -> tuple[str, ...]:
    """``float_nodes`` as a sorted tuple of distinct names (order does not change the model);
    ``"auto"`` (chosen while building) as none."""
    if not value or value == "auto":
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
    samples: list[Any] = []  # arrays; for several inputs, lists or dicts of arrays
    for batch in batches:
        if isinstance(batch, (list, dict)):  # several inputs: one sample of each per step
            items = list(batch.values()) if isinstance(batch, dict) else batch
            for i in range(len(items[0])):
                samples.append({k: v[i:i + 1] for k, v in batch.items()} if isinstance(batch, dict)
                               else [v[i:i + 1] for v in batch])
                if len(samples) >= limit:
                    return samples
            continue
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


def _by_input_name(samples: list[Any], model: Any) -> list[Any]:
    """Samples of a model with several inputs as dicts keyed by the Keras input names (the
    converter's calibrator feeds a list in the ``.tflite``'s input order, which sorts the
    inputs by name: a dict is matched by name whatever the order)."""
    names = [str(t.name).split(":")[0] for t in getattr(model, "inputs", None) or []]
    if not names:
        return samples
    out = []
    for s in samples:
        if isinstance(s, list):
            if len(s) != len(names):
                raise VariantBuildError(f"representative_data batches give {len(s)} inputs but the model has "
                                        f"{len(names)} ({', '.join(names)})")
            s = dict(zip(names, s))
        out.append(s)
    return out


def _dataset(samples: list[Any]) -> Callable[[], Iterator[Any]]:
    def representative_dataset() -> Iterator[Any]:
        for s in samples:
            yield s if isinstance(s, (list, dict)) else [s]

    return representative_dataset


def _keras_input_rank(model: Any) -> int | None:
    try:
        inputs = model.inputs
        return len(inputs[0].shape) if inputs and len(inputs) == 1 else None
    except Exception:
        return None


def _keras_input_dtype(model: Any) -> np.dtype[Any] | None:
    try:
        inputs = model.inputs
        return np.dtype(inputs[0].dtype.as_numpy_dtype) if inputs and len(inputs) == 1 else None
    except Exception:
        return None


def _tflite_input_info(ctx: BuildContext) -> tuple[int | None, np.dtype[Any] | None]:
    """The first input's rank and dtype in the fp32 baseline (best effort: None when unknown)."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        details = Interpreter(model_content=bytes(ctx.fp32())).get_input_details()
        if len(details) != 1:
            return None, None
        return len(details[0]["shape"]), np.dtype(details[0]["dtype"])
    except Exception:
        return None, None


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
