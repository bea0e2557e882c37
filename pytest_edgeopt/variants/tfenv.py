"""TensorFlow, tf_keras and tfmot, imported quietly and only when a variant is built.

Everything here imports tensorflow inside functions: importing this module is cheap.

- :func:`import_tf` selects legacy Keras (``TF_USE_LEGACY_KERAS=1``, unless the user set
  it) and quietens TensorFlow's logging *before* tensorflow is imported.
- :func:`import_tfmot` raises :class:`VariantUnavailable` when tfmot would not use
  tf_keras (the only Keras it supports).
- :func:`load_keras_model` gives a *fresh* tf_keras copy of the user's model: tfmot's
  wrappers share (and so mutate) the layers of the model they wrap.
- :func:`make_converter` gives a ``TFLiteConverter`` for any convertible source;
  :func:`batch1_converter` one of a batch-1 concrete function (recurrent layers).
- :func:`root_cause` is the line of an error that says what went wrong (the first MLIR
  ``error:`` without its locations, the last line of an ``in user code:`` traceback);
  :func:`error_details` the full text kept in a build error's ``details``.
- :func:`native_output_captured` keeps what TensorFlow's C++ code prints (absl ``I0000``
  lines, MLIR diagnostics) out of the user's pytest output; errors quote its tail.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

from pytest_edgeopt.model import ModelSource
from pytest_edgeopt.variants.registry import VariantBuildError, VariantUnavailable

#: What to tell a user whose tensorflow already resolved ``tf.keras`` to Keras 3 in a way
#: tfmot cannot work with.
LEGACY_KERAS_HINT = (
    "set TF_USE_LEGACY_KERAS=1 in the environment before tensorflow is first imported "
    "(in the shell, in pytest's `env`, or at the top of conftest.py before any `import tensorflow`)"
)

# Warnings third-party packages emit at import or conversion time that a user cannot act
# on; a `-W error` run must not die on them.
_IGNORED_WARNING_MESSAGES = (
    r"distutils Version classes are deprecated",  # tfmot imports distutils.version
    r"Statistics for quantized inputs were expected",  # TFLiteConverter, int8 with float I/O
    r".*experimental_preserve_all_tensors",  # litert_quantizer's calibrator
    r".*tf\.lite\.Interpreter is deprecated",
    r"Compiled the loaded model, but the compiled metrics",  # tf_keras load_model
    r"No training configuration found",  # tf_keras load_model of an uncompiled .h5
    r"You are saving your model as an HDF5 file",
)


@contextlib.contextmanager
def quiet_warnings() -> Iterator[None]:
    """Ignore the known noisy warnings of tensorflow, tfmot and litert_quantizer
    (and any DeprecationWarning they raise) for the duration."""
    with warnings.catch_warnings():
        for message in _IGNORED_WARNING_MESSAGES:
            warnings.filterwarnings("ignore", message=message)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=PendingDeprecationWarning)
        yield


@dataclass
class CapturedOutput:
    """Text written to stdout/stderr inside :func:`native_output_captured` (filled at exit)."""

    text: str = ""

    def tail(self, lines: int = 12) -> str:
        keep = [ln for ln in self.text.splitlines() if ln.strip()]
        return "\n".join(keep[-lines:])


@contextlib.contextmanager
def native_output_captured() -> Iterator[CapturedOutput]:
    """Redirect file descriptors 1 and 2 (C++ logging) and ``sys.stdout``/``sys.stderr``
    (Python prints, tqdm bars) to a temporary file for the duration.

    Use it around imports and conversions only, never around fine-tuning, whose progress
    the user should see. The captured text is in the yielded object's ``text``.
    """
    captured = CapturedOutput()
    py_buffer = io.StringIO()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    try:
        saved = [os.dup(1), os.dup(2)]
    except OSError:  # no usable file descriptors (embedded interpreters): Python-level only
        saved = None
    tmp = tempfile.TemporaryFile(mode="w+b")
    try:
        if saved is not None:
            os.dup2(tmp.fileno(), 1)
            os.dup2(tmp.fileno(), 2)
        with contextlib.redirect_stdout(py_buffer), contextlib.redirect_stderr(py_buffer):
            try:
                yield captured
            finally:
                if saved is not None:
                    with contextlib.suppress(OSError):
                        os.dup2(saved[0], 1)
                        os.dup2(saved[1], 2)
    finally:
        if saved is not None:
            for fd in saved:
                os.close(fd)
        tmp.seek(0)
        captured.text = tmp.read().decode("utf-8", "replace") + py_buffer.getvalue()
        tmp.close()


_quietened = False


def _quieten(tf: Any) -> None:
    global _quietened
    if _quietened:
        return
    _quietened = True
    tf.get_logger().setLevel(logging.ERROR)
    with contextlib.suppress(Exception):
        tf.autograph.set_verbosity(0)
    with contextlib.suppress(ImportError):
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)


def import_tf() -> Any:
    """Import and return tensorflow, with legacy Keras selected and logging quietened.

    ``TF_USE_LEGACY_KERAS=1`` and ``TF_CPP_MIN_LOG_LEVEL=2`` are set only when the user
    has not set them. If tensorflow was imported before, this only quietens its logging.
    """
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules and _quietened:
        return sys.modules["tensorflow"]
    with native_output_captured() as out, quiet_warnings():
        try:
            import tensorflow as tf

            # Device discovery logs "failed call to cuInit" on every CPU-only machine: let it
            # happen here, captured, rather than in the middle of a fine-tuning.
            tf.config.list_physical_devices()
        except Exception as exc:
            error: Exception | None = exc
        else:
            error = None
    if error is not None:
        sys.stderr.write(out.text)  # what tensorflow printed explains the failed import
        raise error
    _quieten(tf)
    return tf


def import_keras() -> Any:
    """Import and return ``tf_keras`` (Keras 2), the Keras tfmot works with."""
    import_tf()
    with quiet_warnings():
        import tf_keras
    return tf_keras


def import_keras3() -> Any:
    """Import and return the Keras 3 package ``keras`` (to load Keras 3 ``.keras`` files)."""
    import_tf()
    with native_output_captured(), quiet_warnings():
        import keras
    return keras


def tfmot_keras_problem() -> str | None:
    """Why tfmot cannot fine-tune tf_keras models in this process, or ``None``.

    tfmot uses ``tf.keras`` when that is Keras 2 and falls back to ``tf_keras`` when it is
    Keras 3, so it only fails when ``tf.keras`` resolved to something else that is not
    tf_keras (a Keras 2 ``keras`` package, for instance).
    """
    tf_keras = import_keras()
    with quiet_warnings():
        from tensorflow_model_optimization.python.core.keras import compat
    if getattr(compat.keras, "Model", None) is tf_keras.Model:
        return None
    version = getattr(compat.keras, "__version__", None) or "unknown version"
    return (
        f"tensorflow was imported with tf.keras bound to a Keras ({version}) other than tf_keras, "
        f"so tfmot cannot fine-tune tf_keras models in this process; {LEGACY_KERAS_HINT}"
    )


def import_tfmot() -> Any:
    """Import and return ``tensorflow_model_optimization``.

    Raises :class:`VariantUnavailable` when tfmot would not use tf_keras.
    """
    import_tf()
    with native_output_captured(), quiet_warnings():
        import tensorflow_model_optimization as tfmot
    problem = tfmot_keras_problem()
    if problem:
        raise VariantUnavailable(problem)
    return tfmot


_MLIR_ERROR = re.compile(r"(?:^|\s|:)error: (?P<message>.+)$")
_EXCEPTION_LINE = re.compile(r"^(?:[\w.]+\.)?(?P<type>[A-Z]\w*(?:Error|Exception|Exit|Interrupt))(?::\s*(?P<rest>.*))?$")
#: Lines of a traceback or an MLIR dump that are never the cause.
_NOISE = re.compile(r"^(?:File \"|Traceback \(most recent|in user code:|\^|<unknown>:\d+: note:|note:|"
                    r"During handling of|The above exception|[\w./<>-]+:\d+:\d+: note:)")


def strip_location(message: str) -> str:
    """An MLIR diagnostic without a leading ``loc(...)`` call-site location (``<unknown>:0:
    error: loc(callsite(...)): 'tf.X' op ...`` -> ``'tf.X' op ...``)."""
    if not message.startswith("loc("):
        return message
    depth, quoted = 0, False
    for i, ch in enumerate(message):
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
            if depth == 0:
                return message[i + 1:].lstrip(": ").strip() or message
    return message


def root_cause(exc: BaseException | str, limit: int = 400) -> str:
    """The line of an error that says what went wrong, shortened, with the exception type.

    - MLIR diagnostics (converter errors): the first ``error:`` line without its call-site
      location (``loc(callsite(...))`` or ``file:line:col``), e.g. ``'tf.TensorListReserve'
      op requires element_shape to be static during TF Lite transformation pass``;
    - a TensorFlow error that carries a traceback (``model.fit`` raises one that starts
      with ``in user code:``): its last ``SomeError: ...`` line, else its last line;
    - anything else: the first non-empty line.

    The type is prefixed (``ValueError: ...``) unless the line already starts with one.
    """
    text = str(exc)
    type_name = type(exc).__name__ if isinstance(exc, BaseException) else ""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    line = ""
    for ln in lines:
        m = _MLIR_ERROR.search(ln)
        if m and not ln.startswith(("Traceback", "File ")):
            line = strip_location(m.group("message").strip())
            break
    if not line and len(lines) > 1 and any(_NOISE.match(ln) for ln in lines):
        meaningful = [ln for ln in lines if not _NOISE.match(ln)]
        typed = [ln for ln in meaningful if _EXCEPTION_LINE.match(ln)]
        line = (typed or meaningful or lines)[-1]
    if not line:
        line = lines[0] if lines else ""
    if not line:
        return type_name or "unknown error"
    if type_name and not _EXCEPTION_LINE.match(line) and type_name not in ("Exception",):
        line = f"{type_name}: {line}"
    return line if len(line) <= limit else line[: limit - 3] + "..."


def error_details(exc: BaseException | str, captured: CapturedOutput | None = None) -> str:
    """The full text of an error (and what TensorFlow printed meanwhile), for the
    ``details`` of a :class:`VariantBuildError`/:class:`VariantUnavailable`."""
    text = f"{type(exc).__name__}: {exc}" if isinstance(exc, BaseException) else str(exc)
    if captured is not None and captured.text.strip():
        text += "\n--- tensorflow output ---\n" + captured.text.strip()
    return text


# -- Keras models ----------------------------------------------------------------------


def keras_original(source: ModelSource, memo: MutableMapping[Any, Any] | None = None,
                   fingerprint: str | None = None) -> Any:
    """The user's tf_keras model: the in-memory object, or the file loaded once per process
    (kept in ``memo`` under ``fingerprint``). Never modify or wrap it: use
    :func:`load_keras_model` for a copy to fine-tune.

    Raises :class:`VariantUnavailable` for a source that is not a tf_keras model and
    :class:`VariantBuildError` when the file cannot be loaded.
    """
    keras = import_keras()
    if source.obj is not None:
        if not isinstance(source.obj, keras.Model):
            raise VariantUnavailable(
                f"{source.description} is not a tf_keras model; tfmot needs one (`import tf_keras as keras`)")
        return source.obj
    if source.kind not in ("keras", "saved_model") or source.path is None or not source.trainable:
        raise VariantUnavailable(f"{source.description} cannot be loaded as a tf_keras model")
    key = ("tf_keras original", fingerprint or str(source.path))
    if memo is not None and key in memo:
        return memo[key]
    with native_output_captured() as out, quiet_warnings():
        try:
            try:
                model = keras.models.load_model(str(source.path))
            except Exception:  # a compile-time custom loss or metric: the layers still load
                model = keras.models.load_model(str(source.path), compile=False)
        except Exception as exc:
            error: Exception | None = exc
        else:
            error = None
    if error is not None:
        raise VariantBuildError(
            f"tf_keras cannot load {source.description}: {root_cause(error)}. A model with custom "
            "layers needs them registered (tf_keras.saving.register_keras_serializable) before the "
            f"build.{_tail(out)}") from None
    if memo is not None:
        memo[key] = model
    return model


def clone_keras_model(model: Any) -> Any:
    """A copy of a tf_keras Sequential/Functional model: own layers, same weights (``copy_weights``), uncompiled."""
    from pytest_edgeopt.variants.wrapping import copy_weights

    keras = import_keras()
    if not isinstance(model, keras.Sequential) and not getattr(model, "_is_graph_network", False):
        raise VariantUnavailable(
            f"tfmot needs a Sequential or Functional tf_keras model; {type(model).__name__} is a "
            "subclassed Model (build it with the functional API to get the training-based variants)")
    with quiet_warnings():
        try:
            clone = keras.models.clone_model(model)
        except Exception as exc:
            raise VariantBuildError(
                f"cannot copy the model to fine-tune it (tf_keras.models.clone_model failed: "
                f"{root_cause(exc)}); custom layers need a get_config() returning their constructor "
                "arguments") from None
        try:  # by layer and name: a stripped MultiHeadAttention lists its weights in another order
            copy_weights(model, clone)
        except ValueError as exc:
            raise VariantBuildError(f"cannot copy the model's weights into its clone: {root_cause(exc)}",
                                    error_details(exc)) from None
    return clone


def load_keras_model(source: ModelSource, memo: MutableMapping[Any, Any] | None = None,
                     fingerprint: str | None = None) -> Any:
    """A fresh tf_keras copy of the model (from a ``.h5``, a tf_keras ``.keras``, a Keras
    SavedModel directory or an in-memory tf_keras model), safe to wrap and fine-tune."""
    return clone_keras_model(keras_original(source, memo, fingerprint))


def compiled_loss(source: ModelSource, memo: MutableMapping[Any, Any] | None = None,
                  fingerprint: str | None = None) -> Any:
    """The loss the user's model was compiled with, or ``None``."""
    model = keras_original(source, memo, fingerprint)
    return getattr(model, "loss", None) or None


# -- conversion ------------------------------------------------------------------------


def make_converter(source: ModelSource, memo: MutableMapping[Any, Any] | None = None,
                   fingerprint: str | None = None, batch1: bool = False) -> Any:
    """A ``tf.lite.TFLiteConverter`` for a keras, keras3 or saved_model source.

    In-memory Keras 2/3 models and model files go through ``from_keras_model``; a
    SavedModel directory through ``from_saved_model``. ``batch1``: convert a concrete
    function with a batch of 1 instead (:func:`batch1_converter`), what recurrent layers
    need (a Keras SavedModel is loaded as Keras for it; a plain one cannot be traced again:
    :class:`VariantBuildError` with the remedy).
    """
    tf = import_tf()
    kind = source.kind
    if kind == "tflite":
        raise VariantUnavailable(f"{source.description} is already a .tflite; it cannot be converted again")
    if kind == "saved_model":
        if batch1:
            if source.trainable:
                return batch1_converter(keras_original(source, memo, fingerprint))
            # A plain SavedModel's graph was traced with its signature's batch: a batch-1
            # function around it keeps the dynamic shapes inside.
            raise VariantBuildError(f"{source.description} needs a batch of 1 to convert its recurrent layers, "
                                    f"and it is not a Keras SavedModel to trace again. {BATCH1_SAVED_MODEL_REMEDY}")
        with native_output_captured() as out, quiet_warnings():
            try:
                return tf.lite.TFLiteConverter.from_saved_model(str(source.path))
            except Exception as exc:
                error = exc
        raise VariantBuildError(f"cannot read {source.description}: {root_cause(error)}{_tail(out)}",
                                error_details(error, out)) from None
    if source.obj is not None:
        model = source.obj
    elif kind == "keras":
        model = keras_original(source, memo, fingerprint)
    elif kind == "keras3":
        model = _keras3_original(source, memo, fingerprint)
    else:
        raise VariantUnavailable(f"cannot convert a {kind} model")
    if batch1:
        return batch1_converter(model)
    return tf.lite.TFLiteConverter.from_keras_model(model)


#: The recipe note of a variant converted from a batch-1 concrete function.
BATCH1 = "concrete_function_batch1"


def batch1_converter(model: Any) -> Any:
    """A converter of ``tf.function(lambda x: model(x))`` traced with a batch of 1 (inputs
    named as the model's), TensorFlow's documented recipe for Keras RNNs: with a static
    batch the converter fuses LSTM into ``UNIDIRECTIONAL_SEQUENCE_LSTM`` and lowers GRU and
    SimpleRNN to ``WHILE``. The ``.tflite`` then takes batch 1 only."""
    tf = import_tf()
    specs = []
    for i, t in enumerate(model.inputs):
        name = getattr(t, "name", None) or f"input_{i}"
        specs.append(tf.TensorSpec([1, *t.shape[1:]], t.dtype, name=name.split(":")[0]))
    with native_output_captured() as out, quiet_warnings():
        try:
            if len(specs) == 1:
                function = tf.function(lambda x: model(x))
            else:
                function = tf.function(lambda *xs: model(list(xs)))
            concrete = function.get_concrete_function(*specs)
            return tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)
        except Exception as exc:
            error = exc
    raise VariantBuildError(f"cannot trace the model with a batch of 1: {root_cause(error)}",
                            error_details(error, out)) from None


#: What to do about a plain SavedModel whose RNN layers cannot convert with a dynamic batch.
BATCH1_SAVED_MODEL_REMEDY = (
    "Remedy: export the SavedModel with a batch-1 serving signature (tf.saved_model.save(model, path, "
    "signatures=tf.function(lambda x: model(x)).get_concrete_function(tf.TensorSpec([1, ...], dtype))), as in "
    "TensorFlow's Keras LSTM fusion guide), or pass the Keras model or a Keras SavedModel (model.save)")


def recurrent_layers(model: Any) -> list[Any]:
    """The recurrent layers of a Keras model (``RNN`` subclasses: LSTM, GRU, SimpleRNN, and
    ``Bidirectional``), nested models included."""
    found: list[Any] = []
    for layer in getattr(model, "layers", []):
        if hasattr(layer, "layers") and not hasattr(layer, "cell"):  # a nested model
            found.extend(recurrent_layers(layer))
        elif hasattr(layer, "cell") or hasattr(layer, "forward_layer"):
            found.append(layer)
    return found


def needs_batch1(model: Any) -> bool:
    """Whether ``from_keras_model`` would fail on the model's tensor-list ops: a recurrent
    layer that is not unrolled, and inputs with a dynamic batch."""
    try:
        dynamic = any(t.shape[0] is None for t in model.inputs)
    except Exception:
        return False
    return dynamic and any(not getattr(_inner_rnn(layer), "unroll", False) for layer in recurrent_layers(model))


def _inner_rnn(layer: Any) -> Any:
    return getattr(layer, "forward_layer", None) or layer


def is_tensor_list_failure(details: str) -> bool:
    """Whether a converter error is the one a dynamic batch through RNN layers gives."""
    return "TensorList" in details and ("element_shape to be static" in details
                                        or "Lowering tensor list ops" in details)


def _keras3_original(source: ModelSource, memo: MutableMapping[Any, Any] | None,
                     fingerprint: str | None) -> Any:
    key = ("keras3 original", fingerprint or str(source.path))
    if memo is not None and key in memo:
        return memo[key]
    keras3 = import_keras3()
    with native_output_captured() as out, quiet_warnings():
        try:
            model = keras3.models.load_model(str(source.path))
        except Exception as exc:
            error: Exception | None = exc
        else:
            error = None
    if error is not None:
        raise VariantBuildError(
            f"Keras 3 cannot load {source.description}: {root_cause(error)}. Custom layers need "
            f"keras.saving.register_keras_serializable before the build.{_tail(out)}") from None
    if memo is not None:
        memo[key] = model
    return model


class ConverterRefused(VariantUnavailable):
    """The converter does not support an op in this recipe (``op``: its name, e.g. ``CAST``)."""

    def __init__(self, message: str, details: str = "", op: str = "") -> None:
        super().__init__(message, details)
        self.op = op


#: Converter refusals: an op the recipe's quantizer does not support, an op with no TFLite
#: builtin kernel (it would need Select TF ops, which the variants do not enable).
_NOT_SUPPORTED = re.compile(r"not (?:yet )?supported for op: '(?P<op>[\w.]+)'"
                            r"|'(?P<tf_op>tf\.\w+)' op is neither a custom op nor a flex op")


def run_converter(converter: Any, variant: str) -> bytes:
    """``converter.convert()`` with TensorFlow's output captured.

    An op the recipe does not support (``Quantization to 16x8-bit not yet supported for
    op: 'CAST'``) becomes :class:`ConverterRefused` (a skip); any other failure a
    :class:`VariantBuildError` with the root-cause line (no MLIR call-site dump); both keep
    the converter's full text in ``details``.
    """
    with native_output_captured() as out, quiet_warnings():
        try:
            result = converter.convert()
        except Exception as exc:
            error: Exception | None = exc
        else:
            error = None
    if error is not None:
        details = error_details(error, out)
        refused = _NOT_SUPPORTED.search(str(error))
        if refused:
            op = refused.group("op") or refused.group("tf_op")
            raise ConverterRefused(f"{variant}: TFLiteConverter refuses op {op}: {root_cause(error)}",
                                   details, op=op) from None
        raise VariantBuildError(f"{variant}: TFLiteConverter failed: {root_cause(error)}{_tail(out)}",
                                details) from None
    return bytes(result)


def _tail(out: CapturedOutput, lines: int = 8) -> str:
    """The error lines TensorFlow printed (not its start-up chatter, not MLIR call-site
    locations), for an error message."""
    noise = ("cuinit", "cuda", "onednn", "absl::initializelog", "xnnpack delegate")
    keep: list[str] = []
    for ln in out.text.splitlines():
        if "error" not in ln.lower() or any(n in ln.lower() for n in noise):
            continue
        m = _MLIR_ERROR.search(ln)
        line = strip_location(m.group("message").strip()) if m else ln.strip()
        line = line if len(line) <= 300 else line[:297] + "..."
        if line not in keep:
            keep.append(line)
    return ("\n--- tensorflow output ---\n" + "\n".join(keep[-lines:])) if keep else ""
