"""Training-based variants, built with the TensorFlow Model Optimization Toolkit (tfmot).

Each one fine-tunes a fresh copy of the user's tf_keras model on ``train_data``
(``finetune_epochs`` epochs, Adam at ``learning_rate``, ``batch_size``, seeded by
``seed``), then converts it:

- ``qat_int8``: ``quantize_model``, fine-tune, convert (int8 weights and activations,
  float I/O);
- ``pruned`` / ``pruned_int8``: ``prune_low_magnitude`` to ``sparsity``, fine-tune,
  ``strip_pruning``; converted as float32 / post-training int8;
- ``clustered`` / ``clustered_int8``: ``cluster_weights`` into ``clusters`` centroids
  (k-means++), fine-tune, ``strip_clustering``; float32 / post-training int8;
- ``pqat_int8``, ``cqat_int8``, ``pcqat_int8``: quantization-aware training of the pruned,
  clustered, or sparsity-preserving clustered model with the collaborative schemes that
  keep the sparsity and/or the clusters.

The stripped pruned and clustered models are shared by the variants that start from them
(copied before being wrapped again): kept in ``ctx.memo`` for this process and stored as
entries of ``ctx.cache`` (their weights, keyed by everything that determines them) for the
other pytest-xdist workers and later runs.
"""

from __future__ import annotations

import collections
import contextlib
import io
import random
import re
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from pytest_edgeopt.versions import tool_versions
from pytest_edgeopt.variants.cache import key_of
from pytest_edgeopt.variants.registry import BuildContext, VariantBuildError, VariantUnavailable

_TRAIN_KNOBS = ("finetune_epochs", "learning_rate", "batch_size", "loss", "seed")

#: The payload of a shared intermediate's cache entry: the fine-tuned model's weights.
_WEIGHTS = "weights.npz"

# How to make a layer acceptable to each tfmot tool, for error messages.
_FIXES = {
    "quantize": "give it a QuantizeConfig (tfmot.quantization.keras.quantize_annotate_layer) or "
                "replace it with built-in Keras layers",
    "prune": "implement tfmot.sparsity.keras.PrunableLayer (get_prunable_weights) or replace it with "
             "built-in Keras layers",
    "cluster": "implement tfmot.clustering.keras.ClusterableLayer or replace it with built-in Keras layers",
}


# -- builders ------------------------------------------------------------------------------


def build_qat_int8(ctx: BuildContext) -> bytes:
    tfmot = _tfmot()
    model = _fresh_model(ctx)
    ctx.progress(f"{ctx.spec.name}: quantization-aware training phase")
    qat = _wrap(ctx, "quantize", model, lambda: tfmot.quantization.keras.quantize_model(model))
    _finetune(ctx, qat)
    return _convert(ctx, "qat", qat)


def build_pruned(ctx: BuildContext) -> bytes:
    return _convert(ctx, "fp32", pruned_model(ctx))


def build_pruned_int8(ctx: BuildContext) -> bytes:
    return _convert(ctx, "int8", pruned_model(ctx))


def build_clustered(ctx: BuildContext) -> bytes:
    return _convert(ctx, "fp32", clustered_model(ctx))


def build_clustered_int8(ctx: BuildContext) -> bytes:
    return _convert(ctx, "int8", clustered_model(ctx))


def build_pqat_int8(ctx: BuildContext) -> bytes:
    tfmot = _tfmot()
    base = _copy(pruned_model(ctx))
    ctx.progress(f"{ctx.spec.name}: pruning-preserving quantization-aware training phase")
    qat = _wrap(ctx, "quantize", base, lambda: tfmot.quantization.keras.quantize_apply(
        tfmot.quantization.keras.quantize_annotate_model(base),
        tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()))
    _finetune(ctx, qat)
    return _convert(ctx, "qat", qat)


def build_cqat_int8(ctx: BuildContext) -> bytes:
    base = _copy(clustered_model(ctx))
    return _convert(ctx, "qat", _cluster_preserving_qat(ctx, base, preserve_sparsity=False))


def build_pcqat_int8(ctx: BuildContext) -> bytes:
    tfmot = _tfmot()
    base = _copy(pruned_model(ctx))
    ctx.progress(f"{ctx.spec.name}: sparsity-preserving clustering phase ({ctx.options['clusters']} clusters)")
    clustered = cluster(ctx, base, preserve_sparsity=True)
    _finetune(ctx, clustered)
    stripped = tfmot.clustering.keras.strip_clustering(clustered)
    return _convert(ctx, "qat", _cluster_preserving_qat(ctx, stripped, preserve_sparsity=True))


# -- shared intermediates ------------------------------------------------------------------


def pruned_model(ctx: BuildContext) -> Any:
    """The model pruned to ``sparsity``, fine-tuned and stripped (a tf_keras model shared
    through ``ctx.memo`` and ``ctx.cache``: copy it before wrapping it again)."""

    def make() -> Any:
        tfmot = _tfmot()
        sparsity = float(ctx.options["sparsity"])
        model = _fresh_model(ctx)
        steps = _steps(ctx)
        ctx.progress(f"{ctx.spec.name}: pruning phase (to {sparsity:.0%} sparsity)")
        schedule = pruning_schedule(tfmot, sparsity, steps)
        pruned = _wrap(ctx, "prune", model, lambda: tfmot.sparsity.keras.prune_low_magnitude(
            model, pruning_schedule=schedule))
        _finetune(ctx, pruned, callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
        return tfmot.sparsity.keras.strip_pruning(pruned)

    return _shared(ctx, "pruned", ("sparsity",), "pruning phase", make)


def clustered_model(ctx: BuildContext) -> Any:
    """The model clustered into ``clusters`` centroids per weight, fine-tuned and stripped
    (shared through ``ctx.memo`` and ``ctx.cache``: copy it before wrapping it again)."""

    def make() -> Any:
        tfmot = _tfmot()
        model = _fresh_model(ctx)
        ctx.progress(f"{ctx.spec.name}: clustering phase ({ctx.options['clusters']} clusters)")
        clustered = cluster(ctx, model, preserve_sparsity=False)
        _finetune(ctx, clustered)
        return tfmot.clustering.keras.strip_clustering(clustered)

    return _shared(ctx, "clustered", ("clusters",), "clustering phase", make)


def _shared(ctx: BuildContext, what: str, knobs: tuple[str, ...], phase: str, make: Callable[[], Any]) -> Any:
    """The stripped model ``what`` ("pruned", "clustered") that ``make`` fine-tunes, made once
    for all processes: from ``ctx.memo`` when this process has it, else from ``ctx.cache``
    when any process stored it (the cache's lock makes a worker that needs it while another
    fine-tunes it wait, then reuse it), else made and stored.

    The key holds what determines the model: the model's fingerprint, ``knobs`` and the
    fine-tuning knobs, the train data's fingerprint and the tool versions, as a variant's
    key does (the sparsity-preserving clustered model of ``pcqat_int8`` is not shared:
    only that variant uses it, and the variant itself is cached).
    """
    material = {
        "intermediate": f"tfmot:{what}", "model": ctx.mut.fingerprint, "kind": ctx.mut.source.kind,
        "knobs": {k: ctx.options[k] for k in knobs + _TRAIN_KNOBS},
        "data": {"train_data": ctx.mut.data_fingerprint("train_data")}, "versions": tool_versions(),
    }
    key = key_of(material)
    if key in ctx.memo:
        ctx.progress(f"{ctx.spec.name}: {phase} (reusing the model already {what} in this session)")
        return ctx.memo[key]
    model = None
    if ctx.cache is not None:
        made: list[Any] = []

        def build() -> tuple[bytes, dict[str, Any]]:
            made.append(make())
            return _weights_bytes(made[0]), {"material": material, "intermediate": what, "model": ctx.mut.name}

        entry = ctx.cache.get_or_build(key, build, payload=_WEIGHTS)
        if made:
            model = made[0]
        else:
            model = _with_weights(ctx, entry.path)
            if model is not None:
                ctx.progress(f"{ctx.spec.name}: {phase} (reusing the model already {what}, from the cache)")
    if model is None:
        model = make()
    ctx.memo[key] = model
    return model


def _weights_bytes(model: Any) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, *model.get_weights())
    return buf.getvalue()


def _with_weights(ctx: BuildContext, path: Path) -> Any:
    """A fresh copy of the user's model with the weights stored at ``path`` (``None`` when
    they do not fit it).

    Only the weights are stored because ``strip_pruning``/``strip_clustering`` put the
    user's own layers back: the stripped model has the user's architecture and layer names,
    which the model fingerprint in the key fixes. So custom layers need no registration,
    and the copy converts to the same ``.tflite`` bytes as the model it was stored from
    (tests/test_variants.py checks it). What it lacks is compile state (optimizer, loss):
    the stripped model has none either (strip_* clone the model), and its users convert it
    or copy and recompile it.
    """
    from pytest_edgeopt.variants.tfenv import load_keras_model

    with np.load(path, allow_pickle=False) as stored:
        weights = [stored[f"arr_{i}"] for i in range(len(stored.files))]
    model = load_keras_model(ctx.mut.source, ctx.memo, ctx.mut.fingerprint)
    try:
        model.set_weights(weights)
    except ValueError:  # not while strip_* restore the user's layers; fine-tune here then
        return None
    return model


def cluster(ctx: BuildContext, model: Any, preserve_sparsity: bool) -> Any:
    """``model`` (a private copy: its layers are wrapped, not copied) with every layer that
    has weights to cluster wrapped by ``cluster_weights`` (k-means++ initialisation).

    Layers whose weights already hold no more than ``clusters`` distinct values, or too
    few (non-zero, with ``preserve_sparsity``) weights for k-means++ to place the
    centroids, are left as they are (tfmot would fail on them); a progress line names them.
    """
    tfmot = _tfmot()
    from pytest_edgeopt.variants.tfenv import import_keras

    keras = import_keras()
    clusters = int(ctx.options["clusters"])
    culprits = unsupported_layers(model, "cluster")
    if culprits:
        raise VariantBuildError(_unwrappable_message(ctx, "cluster", culprits, None))
    skipped: list[str] = []

    def wrap(layer: Any) -> Any:
        if isinstance(layer, keras.Model):
            return keras.models.clone_model(layer, clone_function=wrap)
        arrays = _clusterable_arrays(layer)
        if arrays is not None and not arrays:
            return layer  # nothing to cluster (Flatten, pooling, activations...)
        if arrays is not None and not _worth_clustering(arrays, clusters, preserve_sparsity):
            skipped.append(layer.name)
            return layer
        return tfmot.clustering.keras.cluster_weights(
            layer, number_of_clusters=clusters,
            cluster_centroids_init=tfmot.clustering.keras.CentroidInitialization.KMEANS_PLUS_PLUS,
            preserve_sparsity=preserve_sparsity)

    with _seeded(ctx):
        clustered = _wrap(ctx, "cluster", model, lambda: keras.models.clone_model(model, clone_function=wrap))
    if skipped:
        ctx.progress(f"{ctx.spec.name}: left {', '.join(skipped)} unclustered (too few distinct "
                     f"{'non-zero ' if preserve_sparsity else ''}weights for {clusters} clusters)")
    return clustered


def _clusterable_arrays(layer: Any) -> list[np.ndarray] | None:
    """The values of the weights tfmot would cluster in ``layer`` (``None``: unknown, let
    tfmot decide)."""
    try:
        from tensorflow_model_optimization.python.core.clustering.keras import clusterable_layer, clustering_registry

        if isinstance(layer, clusterable_layer.ClusterableLayer):
            return [np.asarray(w) for _, w in layer.get_clusterable_weights()]
        if not layer.trainable_weights:
            return []
        names = clustering_registry.ClusteringRegistry._LAYERS_WEIGHTS_MAP.get(type(layer))
    except Exception:
        return None
    if names is None:
        return None
    return [np.asarray(getattr(layer, n)) for n in names if hasattr(layer, n)]


def _worth_clustering(arrays: list[np.ndarray], clusters: int, preserve_sparsity: bool) -> bool:
    """Whether k-means++ can place ``clusters`` centroids on each array and that changes it.

    With ``preserve_sparsity`` tfmot keeps one centroid at zero and splits the others
    between negative and positive weights in proportion to their counts; k-means++ needs
    at least as many weights as centroids on each side.
    """
    for w in arrays:
        w = w.reshape(-1)
        if len(np.unique(w)) <= clusters:
            return False
        if not preserve_sparsity:
            continue
        negative, positive = int((w < 0).sum()), int((w > 0).sum())
        rest = clusters - 1
        negative_clusters = int(np.round(rest * negative / (negative + positive)))
        if negative < negative_clusters or positive < rest - negative_clusters:
            return False
    return True


def pruning_schedule(tfmot: Any, sparsity: float, steps: int) -> Any:
    """Polynomial decay from 0 to ``sparsity`` over the first ~70% of the ``steps``
    fine-tuning steps (the rest recovers accuracy at the final sparsity); constant
    sparsity from the first step when there are too few steps for a ramp.

    The last mask update falls on ``end_step``, so the final sparsity is always reached.
    """
    end = int((steps - 1) * 0.7)
    if end < 10:
        return tfmot.sparsity.keras.ConstantSparsity(sparsity, begin_step=0, frequency=1)
    frequency = max(1, end // 10)
    end = (end // frequency) * frequency
    return tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=sparsity, begin_step=0, end_step=end, frequency=frequency)


def _cluster_preserving_qat(ctx: BuildContext, clustered: Any, preserve_sparsity: bool) -> Any:
    tfmot = _tfmot()
    what = "sparsity- and cluster-preserving" if preserve_sparsity else "cluster-preserving"
    ctx.progress(f"{ctx.spec.name}: {what} quantization-aware training phase")
    qat = _wrap(ctx, "quantize", clustered, lambda: tfmot.quantization.keras.quantize_apply(
        tfmot.quantization.keras.quantize_annotate_model(clustered),
        tfmot.experimental.combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=preserve_sparsity)))
    _finetune(ctx, qat)
    return qat


# -- fine-tuning ---------------------------------------------------------------------------


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


def _loss(ctx: BuildContext) -> tuple[Any, list[str]]:
    """(loss, metrics) for fine-tuning: the ``loss`` option, the model's compiled loss, or
    one inferred from the labels."""
    from pytest_edgeopt.variants.tfenv import compiled_loss, keras_original

    chosen = ctx.options.get("loss")
    if chosen is None:
        chosen = compiled_loss(ctx.mut.source, ctx.memo, ctx.mut.fingerprint)
    if chosen is not None:
        name = chosen if isinstance(chosen, str) else getattr(chosen, "name", None) or getattr(
            chosen, "__name__", type(chosen).__name__)
        classification = bool(re.search(r"crossentropy|hinge", str(name), re.IGNORECASE))
        return chosen, (["accuracy"] if classification else [])
    _, y = _train_arrays(ctx)
    inferred = infer_loss(y, keras_original(ctx.mut.source, ctx.memo, ctx.mut.fingerprint))
    if inferred is None:
        y = np.asarray(y)
        raise VariantUnavailable(
            f"{ctx.spec.name}: cannot infer a fine-tuning loss for {ctx.mut.name!r} (labels {y.dtype} "
            f"of shape {y.shape}, and the model is not compiled); set options loss=..., e.g. "
            "ModelUnderTest(options={'loss': 'mse'}) or @pytest.mark.edgeopt_options(loss='mse')")
    loss, classification = inferred
    return loss, (["accuracy"] if classification else [])


def _train_arrays(ctx: BuildContext) -> tuple[np.ndarray, np.ndarray]:
    xy = ctx.mut.train_arrays
    if xy is None:
        raise VariantUnavailable(
            f"{ctx.spec.name} needs ModelUnderTest(train_data=...) to fine-tune, which {ctx.mut.name!r} does not set")
    return xy


def _steps(ctx: BuildContext) -> int:
    """Optimizer steps of the whole fine-tuning (epochs x batches per epoch)."""
    x, _ = _train_arrays(ctx)
    batches = -(-len(x) // int(ctx.options["batch_size"]))
    return int(ctx.options["finetune_epochs"]) * batches


@contextlib.contextmanager
def _seeded(ctx: BuildContext) -> Iterator[None]:
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


def _finetune(ctx: BuildContext, model: Any, callbacks: list[Any] | tuple[Any, ...] = ()) -> None:
    """Compile and fit ``model`` on the train data; one progress line per epoch."""
    from pytest_edgeopt.variants.tfenv import first_line, import_keras, quiet_warnings

    keras = import_keras()
    x, y = _train_arrays(ctx)
    loss, metrics = _loss(ctx)
    epochs = int(ctx.options["finetune_epochs"])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=float(ctx.options["learning_rate"])),
                  loss=loss, metrics=metrics)
    progress = _progress_callback(keras, ctx.progress, ctx.spec.name, epochs)
    try:
        with quiet_warnings(), _seeded(ctx):
            model.fit(x, y, epochs=epochs, batch_size=int(ctx.options["batch_size"]), shuffle=True,
                      verbose=0, callbacks=[*callbacks, progress])
    except Exception as exc:
        raise VariantBuildError(f"{ctx.spec.name}: fine-tuning failed: {first_line(exc)}") from None


def _progress_callback(keras: Any, report: Callable[[str], None], variant: str, epochs: int) -> Any:
    class Progress(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            values = " ".join(f"{k}={float(v):.4f}" for k, v in (logs or {}).items())
            report(f"{variant}: epoch {epoch + 1}/{epochs} {values}".rstrip())

    return Progress()


# -- models and wrapping -------------------------------------------------------------------


def _tfmot() -> Any:
    from pytest_edgeopt.variants.tfenv import import_tfmot

    return import_tfmot()


def _fresh_model(ctx: BuildContext) -> Any:
    from pytest_edgeopt.variants.tfenv import load_keras_model

    _tfmot()  # VariantUnavailable first, if tfmot cannot work with tf_keras here
    _loss(ctx)  # ... or if there is no train data or no loss to fine-tune with
    return load_keras_model(ctx.mut.source, ctx.memo, ctx.mut.fingerprint)


def _copy(model: Any) -> Any:
    from pytest_edgeopt.variants.tfenv import clone_keras_model

    return clone_keras_model(model)


def _convert(ctx: BuildContext, mode: str, model: Any) -> bytes:
    from pytest_edgeopt.variants.ptq import convert

    return convert(ctx, mode, model=model)


def _wrap(ctx: BuildContext, tool: str, model: Any, wrap: Callable[[], Any]) -> Any:
    """Run a tfmot wrapping call; a layer tfmot cannot handle becomes a
    :class:`VariantBuildError` naming the layer, its class and the variant."""
    from pytest_edgeopt.variants.tfenv import first_line, quiet_warnings

    try:
        with quiet_warnings(), _layer_names_from_zero():
            return wrap()
    except Exception as exc:
        message = str(exc)
        culprits = unsupported_layers(model, tool) or _layers_named_in(model, message)
        raise VariantBuildError(_unwrappable_message(ctx, tool, culprits, first_line(exc))) from None


@contextlib.contextmanager
def _layer_names_from_zero() -> Iterator[None]:
    """Auto-named layers created inside (tfmot's ``quantize_layer``...) get the same names
    in every build, whatever was built before in the process, so a rebuild gives the same
    bytes; the user's own name counters are put back afterwards."""
    try:
        from tf_keras.src import backend

        uids = backend.PER_GRAPH_OBJECT_NAME_UIDS
        saved = {graph: dict(counts) for graph, counts in uids.items()}
    except Exception:  # tf_keras internals moved: names may then differ between builds
        yield
        return
    uids.clear()
    try:
        yield
    finally:
        uids.clear()
        for graph, counts in saved.items():
            uids[graph] = collections.defaultdict(int, counts)


def _unwrappable_message(ctx: BuildContext, tool: str, culprits: list[Any], cause: str | None) -> str:
    cause_text = f" (tfmot: {cause})" if cause else ""
    if not culprits:
        return f"{ctx.spec.name}: tfmot cannot {tool} {ctx.mut.name!r}{cause_text}"
    names = ", ".join(f"{layer.name!r} ({type(layer).__name__})" for layer in culprits)
    noun = "layer" if len(culprits) == 1 else "layers"
    return (f"{ctx.spec.name}: tfmot cannot {tool} {noun} {names} of {ctx.mut.name!r}: "
            f"{_FIXES[tool]}, or leave {ctx.spec.name} out of this model's variants.{cause_text}")


def unsupported_layers(model: Any, tool: str) -> list[Any]:
    """The layers of ``model`` that tfmot's ``tool`` ("quantize", "prune", "cluster")
    cannot wrap as they are (judged by tfmot's own registries; best effort)."""
    try:
        supports = _support_check(tool)
    except Exception:  # tfmot internals moved: fall back to the error message
        return []
    from pytest_edgeopt.variants.tfenv import import_keras

    keras = import_keras()
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.Model):  # a nested model: look inside it
            found.extend(unsupported_layers(layer, tool))
            continue
        if not supports(layer):
            found.append(layer)
    return found


def _support_check(tool: str) -> Callable[[Any], bool]:
    if tool == "quantize":
        from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
            default_8bit_quantize_registry as reg)

        registry = reg.Default8BitQuantizeRegistry()
        return registry.supports
    if tool == "prune":
        from tensorflow_model_optimization.python.core.sparsity.keras import prunable_layer, prune_registry

        return lambda layer: (isinstance(layer, prunable_layer.PrunableLayer)
                              or hasattr(layer, "get_prunable_weights")
                              or prune_registry.PruneRegistry.supports(layer))
    if tool == "cluster":
        from tensorflow_model_optimization.python.core.clustering.keras import clusterable_layer, clustering_registry

        return lambda layer: (isinstance(layer, clusterable_layer.ClusterableLayer)
                              or clustering_registry.ClusteringRegistry.supports(layer))
    raise ValueError(tool)


def _layers_named_in(model: Any, message: str) -> list[Any]:
    """Layers whose name or class name the tfmot error message mentions."""
    return [layer for layer in model.layers
            if re.search(rf"\b{re.escape(layer.name)}\b", message)
            or re.search(rf"\.{re.escape(type(layer).__name__)}'", message)]
