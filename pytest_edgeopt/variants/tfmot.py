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

Layers tfmot cannot wrap (a custom layer) are left as they are: partial pruning,
clustering and QAT, recorded in ``ctx.notes`` (:mod:`pytest_edgeopt.variants.wrapping`);
fine-tuning itself (loss, seed, fit) is :mod:`pytest_edgeopt.variants.finetune`.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pytest_edgeopt.variants.cache import key_of
from pytest_edgeopt.variants.finetune import finetune, loss_for, seeded, steps
from pytest_edgeopt.variants.registry import BuildContext, VariantBuildError
from pytest_edgeopt.variants.wrapping import (
    all_layers,
    clone_wrapping,
    describe,
    folded_into,
    has_weights,
    layer_names_from_zero,
    layers_named_in,
    note_partial,
    partial_plan,
    sole_consumers,
    wrap,
)
from pytest_edgeopt.versions import tool_versions

_TRAIN_KNOBS = ("finetune_epochs", "learning_rate", "batch_size", "loss", "seed")

#: The payload of a shared intermediate's cache entry: the fine-tuned model's weights.
_WEIGHTS = "weights.npz"

# -- builders ------------------------------------------------------------------------------


def build_qat_int8(ctx: BuildContext) -> bytes:
    model = _fresh_model(ctx)
    ctx.progress(f"{ctx.spec.name}: quantization-aware training phase")
    qat = quantize_aware(ctx, model)
    finetune(ctx, qat)
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
    qat = quantize_aware(ctx, base, tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme())
    finetune(ctx, qat)
    return _convert(ctx, "qat", qat)


def build_cqat_int8(ctx: BuildContext) -> bytes:
    base = _copy(clustered_model(ctx))
    return _convert(ctx, "qat", _cluster_preserving_qat(ctx, base, preserve_sparsity=False))


def build_pcqat_int8(ctx: BuildContext) -> bytes:
    tfmot = _tfmot()
    base = _copy(pruned_model(ctx))
    ctx.progress(f"{ctx.spec.name}: sparsity-preserving clustering phase ({ctx.options['clusters']} clusters)")
    clustered = cluster(ctx, base, preserve_sparsity=True)
    finetune(ctx, clustered)
    stripped = _copy(tfmot.clustering.keras.strip_clustering(clustered))  # weights in their usual order
    return _convert(ctx, "qat", _cluster_preserving_qat(ctx, stripped, preserve_sparsity=True))


# -- shared intermediates ------------------------------------------------------------------


def pruned_model(ctx: BuildContext) -> Any:
    """The model pruned to ``sparsity``, fine-tuned and stripped (a tf_keras model shared
    through ``ctx.memo`` and ``ctx.cache``: copy it before wrapping it again).

    Layers tfmot cannot prune stay dense (noted in ``ctx.notes["dense_layers"]``);
    :class:`VariantUnavailable` names them when no layer with weights can be pruned."""
    tfmot = _tfmot()
    left_names = _plan(ctx, "prune")

    def make() -> Any:
        sparsity = float(ctx.options["sparsity"])
        model = _fresh_model(ctx)
        ctx.progress(f"{ctx.spec.name}: pruning phase (to {sparsity:.0%} sparsity)")
        schedule = pruning_schedule(tfmot, sparsity, steps(ctx))
        left = [layer for layer in all_layers(model) if layer.name in left_names]
        if left:  # tfmot's documented pattern: wrap layer by layer, keep the rest dense
            pruned = wrap(ctx, "prune", model, lambda: clone_wrapping(
                model, lambda layer: tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule),
                left))
        else:
            pruned = wrap(ctx, "prune", model, lambda: tfmot.sparsity.keras.prune_low_magnitude(
                model, pruning_schedule=schedule))
        finetune(ctx, pruned, callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
        return tfmot.sparsity.keras.strip_pruning(pruned)

    return _shared(ctx, "pruned", ("sparsity",), "pruning phase", make)


def clustered_model(ctx: BuildContext) -> Any:
    """The model clustered into ``clusters`` centroids per weight, fine-tuned and stripped
    (shared through ``ctx.memo`` and ``ctx.cache``: copy it before wrapping it again).

    Layers tfmot cannot cluster stay as they are (``ctx.notes["unclustered_layers"]``)."""
    tfmot = _tfmot()
    left_names = _plan(ctx, "cluster")

    def make() -> Any:
        model = _fresh_model(ctx)
        ctx.progress(f"{ctx.spec.name}: clustering phase ({ctx.options['clusters']} clusters)")
        left = [layer for layer in all_layers(model) if layer.name in left_names]
        clustered = cluster(ctx, model, preserve_sparsity=False, left=left)
        finetune(ctx, clustered)
        # a copy: strip_clustering's MultiHeadAttention lists its weights in another order than
        # a new one, which the flat weights stored in the cache and tfmot's quantize_apply need
        return _copy(tfmot.clustering.keras.strip_clustering(clustered))

    return _shared(ctx, "clustered", ("clusters",), "clustering phase", make)


def _plan(ctx: BuildContext, tool: str) -> set[str]:
    """Names of the user's layers tfmot's ``tool`` cannot wrap (noted, see
    :func:`~pytest_edgeopt.variants.wrapping.partial_plan`), decided before a shared model
    is made or reused so that every variant built from it says so; also settles the loss
    (and its twin note) and that there is train data."""
    from pytest_edgeopt.variants.tfenv import clone_keras_model, keras_original

    loss_for(ctx)
    original = keras_original(ctx.mut.source, ctx.memo, ctx.mut.fingerprint)
    checked = ("copyable", ctx.mut.fingerprint)
    if checked not in ctx.memo:  # once per model and process: a clone costs as much as a fit epoch
        clone_keras_model(original)  # a subclassed model: VariantUnavailable; no get_config: VariantBuildError
        ctx.memo[checked] = True
    return {layer.name for layer in partial_plan(ctx, tool, original)}


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


def cluster(ctx: BuildContext, model: Any, preserve_sparsity: bool, left: list[Any] | None = None) -> Any:
    """``model`` (a private copy: its layers are wrapped, not copied) with every layer that
    has weights to cluster wrapped by ``cluster_weights`` (k-means++ initialisation).

    Layers whose weights already hold no more than ``clusters`` distinct values, or too
    few (non-zero, with ``preserve_sparsity``) weights for k-means++ to place the
    centroids, are left as they are (tfmot would fail on them); a progress line names them.
    So are ``left``, the layers tfmot cannot cluster (``None``: found and noted here).
    """
    tfmot = _tfmot()
    from pytest_edgeopt.variants.tfenv import import_keras

    keras = import_keras()
    clusters = int(ctx.options["clusters"])
    left_ids = {id(layer) for layer in (partial_plan(ctx, "cluster", model) if left is None else left)}
    skipped: list[str] = []

    def wrap_layer(layer: Any) -> Any:
        if isinstance(layer, keras.Model):
            return keras.models.clone_model(layer, clone_function=wrap_layer)
        if id(layer) in left_ids or isinstance(layer, keras.layers.InputLayer):
            return layer  # tfmot cannot cluster it (partial clustering, noted)
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

    with seeded(ctx):
        clustered = wrap(ctx, "cluster", model, lambda: keras.models.clone_model(model, clone_function=wrap_layer))
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
    qat = quantize_aware(ctx, clustered, tfmot.experimental.combine.Default8BitClusterPreserveQuantizeScheme(
        preserve_sparsity=preserve_sparsity))
    finetune(ctx, qat)
    return qat


# -- quantization-aware training ---------------------------------------------------------


def quantize_aware(ctx: BuildContext, model: Any, scheme: Any = None) -> Any:
    """``model`` made quantization-aware (with tfmot's ``scheme``; ``None``: the default
    8-bit one), the whole model when tfmot can take it.

    Partial QAT otherwise: layers tfmot has no QuantizeConfig for, and when its
    whole-model transform fails, the layers its error points to (else the separable
    convolutions its layout transform rewrites), stay float: the others are annotated
    (``quantize_annotate_layer`` through ``clone_model``) and ``quantize_apply``-ed.
    ``ctx.notes["float_layers"]`` and a progress line say which stayed float. Raises
    :class:`VariantUnavailable` when no layer can be quantized, and
    :class:`VariantBuildError` with tfmot's root cause and the layer it points to when the
    partial model fails too.
    """
    from pytest_edgeopt.variants.tfenv import error_details, quiet_warnings, root_cause

    qk = _tfmot().quantization.keras
    left = partial_plan(ctx, "quantize", model)
    if not left:
        try:
            with quiet_warnings(), layer_names_from_zero():
                if scheme is None:
                    return qk.quantize_model(model)
                return qk.quantize_apply(qk.quantize_annotate_model(model), scheme)
        except Exception as exc:
            first: Exception | None = exc
    else:
        first = None
    error: Exception | None = first
    tried_separable = False
    for _ in range(6):
        if error is not None:  # leave what the last error points to float, then retry
            named = layers_named_in(model, str(error))
            pointed = [layer for layer in named if layer not in left and has_weights(layer)]
            if not pointed:
                # The collaborative schemes' registries "support" every layer without weights,
                # so quantize_apply asks for the config of a float one (a tf.math op) that alone
                # feeds an annotated layer, and fails: that consumer stays float too.
                pointed = [layer for layer in sole_consumers(model, [x for x in named if x in left])
                           if layer not in left]
            if not pointed and not tried_separable:
                tried_separable = True
                pointed = [layer for layer in all_layers(model)
                           if type(layer).__name__.startswith("SeparableConv") and layer not in left]
            if not pointed:
                break
            pointed += [layer for layer in folded_into(model, pointed) if layer not in left and layer not in pointed]
            why = f"tfmot's whole-model transform failed: {root_cause(error)}"
            note_partial(ctx, "quantize", pointed, why)
            left = [*left, *pointed]
        try:
            with quiet_warnings(), layer_names_from_zero():
                annotated = clone_wrapping(model, qk.quantize_annotate_layer, left)
                custom = {type(layer).__name__: type(layer) for layer in left}
                with qk.quantize_scope(custom):
                    return qk.quantize_apply(annotated) if scheme is None else qk.quantize_apply(annotated, scheme)
        except Exception as exc:
            error = exc
    assert error is not None
    pointed = layers_named_in(model, str(error))
    where = f" (at layer {describe(pointed)})" if pointed else ""
    raise VariantBuildError(
        f"{ctx.spec.name}: tfmot's quantization-aware training failed{where}: {root_cause(error)}"
        + (f"; also with {describe(left)} left float" if left else ""), error_details(error)) from None


# -- models and wrapping -------------------------------------------------------------------


def _tfmot() -> Any:
    from pytest_edgeopt.variants.tfenv import import_tfmot

    return import_tfmot()


def _fresh_model(ctx: BuildContext) -> Any:
    from pytest_edgeopt.variants.tfenv import load_keras_model

    _tfmot()  # VariantUnavailable first, if tfmot cannot work with tf_keras here
    loss_for(ctx)  # ... or if there is no train data or no loss to fine-tune with
    return load_keras_model(ctx.mut.source, ctx.memo, ctx.mut.fingerprint)


def _copy(model: Any) -> Any:
    from pytest_edgeopt.variants.tfenv import clone_keras_model

    return clone_keras_model(model)


def _convert(ctx: BuildContext, mode: str, model: Any) -> bytes:
    from pytest_edgeopt.variants.ptq import convert

    return convert(ctx, mode, model=model)
