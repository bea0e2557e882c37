"""Fine-tuning for the training-based variants: the loss, the data, the seed, the fit.

The loss is the ``loss`` option, else the model's compiled loss, else one inferred from
the labels. A compiled crossentropy that does not fit the labels (a ``.h5`` saved with
``categorical_crossentropy`` fine-tuned with integer class ids) is replaced by its
sparse/one-hot twin, and the build's notes say so. A fit that fails anyway is a
:class:`VariantBuildError` with the root cause (the last line of TensorFlow's ``in user
code:`` traceback) and the ``loss=`` knob to set.
"""

from __future__ import annotations

import contextlib
import random
import re
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from pytest_edgeopt.variants.registry import BuildContext, VariantBuildError, VariantUnavailable


def infer_loss(labels: np.ndarray, model: Any) -> tuple[Any, bool] | None:
    """A Keras loss for fine-tuning a classifier, inferred from its labels and last layer,
    and whether it is a classification loss; ``None`` when it cannot be inferred.

    Integer class labels: sparse categorical crossentropy; one-hot labels: categorical
    crossentropy; 0/1 labels with one output unit: binary crossentropy. ``from_logits``
    is ``False`` when the last layer ends in softmax (or sigmoid for binary).
    """
    from pytest_edgeopt.variants.tfenv import import_keras

    keras = import_keras()
    try:
        if len(model.outputs) != 1:
            return None
        units = model.outputs[0].shape[-1]
    except Exception:
        return None
    y = np.asarray(labels)
    if y.size == 0 or not np.all(np.isfinite(y.astype(np.float64))):
        return None
    activation = _last_activation(model)
    integral = np.issubdtype(y.dtype, np.integer) or bool(np.all(np.mod(y, 1) == 0))
    flat = y.reshape(len(y), -1) if y.ndim > 1 else y.reshape(-1, 1)
    if units is not None and units > 1:
        if flat.shape[1] == 1 and integral and y.min() >= 0 and y.max() < units:
            return keras.losses.SparseCategoricalCrossentropy(from_logits=activation != "softmax"), True
        if (flat.shape[1] == units and integral and np.all((flat == 0) | (flat == 1))
                and np.all(flat.sum(axis=1) == 1)):
            return keras.losses.CategoricalCrossentropy(from_logits=activation != "softmax"), True
    if units == 1 and flat.shape[1] == 1 and integral and set(np.unique(y).tolist()) <= {0, 1}:
        return keras.losses.BinaryCrossentropy(from_logits=activation != "sigmoid"), True
    return None


def _last_activation(model: Any) -> str | None:
    """Name of the activation that produces the model's output ("softmax", "sigmoid", ...)."""
    layer = model.layers[-1]
    act = getattr(layer, "activation", None)
    if act is None:
        name = type(layer).__name__.lower()
        return name if name in ("softmax", "sigmoid") else None
    return getattr(act, "__name__", str(act)).lower()


def loss_name(loss: Any) -> str:
    """``"categorical_crossentropy"`` for the string, function or Loss object."""
    if isinstance(loss, str):
        return loss
    name = getattr(loss, "name", None) or getattr(loss, "__name__", None)
    if name:
        return str(name)
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(loss).__name__).lower()


def _from_logits(loss: Any) -> bool:
    try:
        return bool(loss.get_config().get("from_logits", False))
    except Exception:
        return False


def loss_twin(loss: Any, labels: np.ndarray, model: Any) -> tuple[Any, str] | None:
    """The sparse/one-hot twin of a compiled crossentropy that does not fit the labels, and
    why (``None``: the loss fits them, or no twin applies).

    ``categorical_crossentropy`` with integer class ids -> ``sparse_categorical_crossentropy``;
    ``sparse_categorical_crossentropy`` with one-hot rows -> ``categorical_crossentropy``
    (``from_logits`` kept).
    """
    from pytest_edgeopt.variants.tfenv import import_keras

    name = re.sub(r"[^a-z]", "", loss_name(loss).lower())
    if name not in ("categoricalcrossentropy", "sparsecategoricalcrossentropy"):
        return None
    inferred = infer_loss(labels, model)
    if inferred is None:
        return None
    keras = import_keras()
    fit = re.sub(r"[^a-z]", "", loss_name(inferred[0]).lower())
    if fit == name or fit not in ("categoricalcrossentropy", "sparsecategoricalcrossentropy"):
        return None
    y = np.asarray(labels)
    if fit == "sparsecategoricalcrossentropy":
        twin = keras.losses.SparseCategoricalCrossentropy(from_logits=_from_logits(loss))
        why = f"integer class labels ({y.dtype} of shape {y.shape})"
    else:
        twin = keras.losses.CategoricalCrossentropy(from_logits=_from_logits(loss))
        why = f"one-hot labels ({y.dtype} of shape {y.shape})"
    return twin, why


def loss_for(ctx: BuildContext) -> tuple[Any, list[str]]:
    """(loss, metrics) for fine-tuning: the ``loss`` option, the model's compiled loss (or
    its sparse/one-hot twin when the labels call for it, noted in ``ctx.notes["loss"]``),
    or one inferred from the labels."""
    from pytest_edgeopt.variants.tfenv import compiled_loss, keras_original

    chosen = ctx.options.get("loss")
    if chosen is None:
        chosen = compiled_loss(ctx.mut.source, ctx.memo, ctx.mut.fingerprint)
        if chosen is not None:
            _, y = train_arrays(ctx)
            twin = loss_twin(chosen, y, keras_original(ctx.mut.source, ctx.memo, ctx.mut.fingerprint))
            if twin is not None:
                loss, why = twin
                note = (f"{loss_name(loss)} (the twin of the compiled {loss_name(chosen)}, for the {why}; "
                        "set the loss option to choose another)")
                if ctx.notes.get("loss") != note:
                    ctx.progress(f"{ctx.spec.name}: fine-tuning with {note}")
                ctx.notes["loss"] = note
                chosen = loss
    if chosen is not None:
        classification = bool(re.search(r"crossentropy|hinge", loss_name(chosen), re.IGNORECASE))
        return chosen, (["accuracy"] if classification else [])
    _, y = train_arrays(ctx)
    inferred = infer_loss(y, keras_original(ctx.mut.source, ctx.memo, ctx.mut.fingerprint))
    if inferred is None:
        y = np.asarray(y)
        raise VariantUnavailable(
            f"{ctx.spec.name}: cannot infer a fine-tuning loss for {ctx.mut.name!r} (labels {y.dtype} "
            f"of shape {y.shape}, and the model is not compiled); set options loss=..., e.g. "
            "ModelUnderTest(options={'loss': 'mse'}) or @pytest.mark.edgeopt_options(loss='mse')")
    loss, classification = inferred
    return loss, (["accuracy"] if classification else [])


def train_arrays(ctx: BuildContext) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of ``train_data``; :class:`VariantUnavailable` without it."""
    xy = ctx.mut.train_arrays
    if xy is None:
        raise VariantUnavailable(
            f"{ctx.spec.name} needs ModelUnderTest(train_data=...) to fine-tune, which {ctx.mut.name!r} does not set")
    return xy


def steps(ctx: BuildContext) -> int:
    """Optimizer steps of the whole fine-tuning (epochs x batches per epoch)."""
    from pytest_edgeopt.model import n_samples

    x, _ = train_arrays(ctx)
    batches = -(-n_samples(x) // int(ctx.options["batch_size"]))
    return int(ctx.options["finetune_epochs"]) * batches


@contextlib.contextmanager
def seeded(ctx: BuildContext) -> Iterator[None]:
    """Seed Python, NumPy and TensorFlow with the ``seed`` knob for the duration, then put
    back the user's random state (so a warm cache and a cold one leave the test's random
    numbers the same)."""
    from pytest_edgeopt.variants.tfenv import import_keras, import_tf

    tf = import_tf()
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        from tensorflow.python.eager import context as eager_context

        tf_seed = eager_context.global_seed()
    except Exception:  # private API moved: leave TensorFlow seeded
        tf_seed = ...
    import_keras().utils.set_random_seed(int(ctx.options["seed"]))
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        if tf_seed is not ...:
            tf.random.set_seed(tf_seed)


def finetune(ctx: BuildContext, model: Any, callbacks: list[Any] | tuple[Any, ...] = ()) -> None:
    """Compile and fit ``model`` on the train data; one progress line per epoch.

    Raises :class:`VariantBuildError` with the root cause of a failed fit and, when the
    loss does not fit the labels' shape, the ``loss=`` knob to set.
    """
    from pytest_edgeopt.variants.tfenv import error_details, import_keras, quiet_warnings, root_cause

    keras = import_keras()
    x, y = train_arrays(ctx)
    loss, metrics = loss_for(ctx)
    epochs = int(ctx.options["finetune_epochs"])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=float(ctx.options["learning_rate"])),
                  loss=loss, metrics=metrics)
    progress = _progress_callback(keras, ctx.progress, ctx.spec.name, epochs)
    try:
        with quiet_warnings(), seeded(ctx):
            model.fit(x, y, epochs=epochs, batch_size=int(ctx.options["batch_size"]), shuffle=True,
                      verbose=0, callbacks=[*callbacks, progress])
    except Exception as exc:
        cause = root_cause(exc)
        raise VariantBuildError(f"{ctx.spec.name}: fine-tuning failed: {cause}{_remedy(ctx, cause, loss, y)}",
                                error_details(exc)) from None


def _remedy(ctx: BuildContext, cause: str, loss: Any, labels: np.ndarray) -> str:
    """What to set when the loss does not fit the labels' shape (``""`` otherwise)."""
    if not re.search(r"Shapes? .* (?:are|is) incompatible|incompatible shapes|logits and labels must",
                     cause, re.IGNORECASE):
        return ""
    from pytest_edgeopt.variants.tfenv import keras_original

    y = np.asarray(labels)
    suggestion = "a loss that takes these labels"
    try:
        inferred = infer_loss(y, keras_original(ctx.mut.source, ctx.memo, ctx.mut.fingerprint))
    except Exception:
        inferred = None
    if inferred is not None:
        suggestion = repr(loss_name(inferred[0]))
    return (f". The loss {loss_name(loss)!r} does not fit the labels ({y.dtype} of shape {y.shape}): set "
            f"loss={suggestion}, e.g. @pytest.mark.edgeopt_options(loss={suggestion}) or "
            f"ModelUnderTest(options={{'loss': {suggestion}}})")


def _progress_callback(keras: Any, report: Callable[[str], None], variant: str, epochs: int) -> Any:
    class Progress(keras.callbacks.Callback):  # type: ignore[misc]
        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            values = " ".join(f"{k}={float(v):.4f}" for k, v in (logs or {}).items())
            report(f"{variant}: epoch {epoch + 1}/{epochs} {values}".rstrip())

    return Progress()
