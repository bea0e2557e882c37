"""Which layers tfmot can wrap, wrapping the whole model or only those layers, and the
messages that name the layers it cannot take.

tfmot's whole-model calls (``quantize_model``, ``prune_low_magnitude(model)``,
``cluster_weights(model)``) refuse a model with one layer they cannot wrap (a custom
layer, a preprocessing layer). Its documented way round is to wrap layer by layer:
``clone_model`` with a ``clone_function`` (``quantize_annotate_layer`` then
``quantize_apply`` for QAT). :func:`clone_wrapping` does that, leaving the other layers as
they are (dense, unclustered, float); the builders record which in ``ctx.notes``. When no
layer can be wrapped the variant is unavailable (a skip naming the layers).
"""

from __future__ import annotations

import collections
import contextlib
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from pytest_edgeopt.variants.registry import BuildContext, VariantBuildError, VariantUnavailable

# How to make a layer acceptable to each tfmot tool, for error messages.
FIXES = {
    "quantize": "give it a QuantizeConfig (tfmot.quantization.keras.quantize_annotate_layer) or "
                "replace it with built-in Keras layers",
    "prune": "implement tfmot.sparsity.keras.PrunableLayer (get_prunable_weights) or replace it with "
             "built-in Keras layers",
    "cluster": "implement tfmot.clustering.keras.ClusterableLayer or replace it with built-in Keras layers",
}

#: How the layers a partial variant leaves alone stay, by tool (for notes and messages).
LEFT_AS = {"quantize": "float", "prune": "dense", "cluster": "unclustered"}


def wrap(ctx: BuildContext, tool: str, model: Any, call: Callable[[], Any]) -> Any:
    """Run a tfmot wrapping call; a failure becomes a :class:`VariantBuildError` naming the
    layer(s) it points to, their class, and tfmot's root-cause line."""
    from pytest_edgeopt.variants.tfenv import error_details, quiet_warnings, root_cause

    try:
        with quiet_warnings(), layer_names_from_zero():
            return call()
    except (VariantBuildError, VariantUnavailable):
        raise
    except Exception as exc:
        culprits = unsupported_layers(model, tool) or layers_named_in(model, str(exc))
        raise VariantBuildError(unwrappable_message(ctx, tool, culprits, root_cause(exc)),
                                error_details(exc)) from None


@contextlib.contextmanager
def layer_names_from_zero() -> Iterator[None]:
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


def describe(layers: Iterable[Any]) -> str:
    """``'gain' (Scale), 'lstm' (LSTM)``."""
    return ", ".join(f"{layer.name!r} ({type(layer).__name__})" for layer in layers)


def unwrappable_message(ctx: BuildContext, tool: str, culprits: list[Any], cause: str | None) -> str:
    cause_text = f" (tfmot: {cause})" if cause else ""
    if not culprits:
        return f"{ctx.spec.name}: tfmot cannot {tool} {ctx.mut.name!r}{cause_text}"
    noun = "layer" if len(culprits) == 1 else "layers"
    return (f"{ctx.spec.name}: tfmot cannot {tool} {noun} {describe(culprits)} of {ctx.mut.name!r}: "
            f"{FIXES[tool]}, or leave {ctx.spec.name} out of this model's variants.{cause_text}")


def has_weights(layer: Any) -> bool:
    return bool(getattr(layer, "trainable_weights", None))


def partial_plan(ctx: BuildContext, tool: str, model: Any) -> list[Any]:
    """The layers of ``model`` tfmot's ``tool`` cannot wrap (``[]``: wrap the whole model).

    Raises :class:`VariantUnavailable` naming them when no layer with weights is left to
    wrap; otherwise reports through ``ctx.progress`` and records in ``ctx.notes`` (key
    ``"float_layers"``, ``"dense_layers"`` or ``"unclustered_layers"``) which stay as they are.
    """
    culprits = unsupported_layers(model, tool)
    if not culprits:
        return []
    left = {id(layer) for layer in culprits}
    wrappable = [layer for layer in all_layers(model) if id(layer) not in left and has_weights(layer)]
    if not wrappable:
        raise VariantUnavailable(
            f"{ctx.spec.name}: tfmot cannot {tool} any layer with weights of {ctx.mut.name!r}: "
            f"{describe(culprits)} {'is' if len(culprits) == 1 else 'are'} not supported ({FIXES[tool]})")
    # Pruning and clustering leave weightless layers (a Rescaling...) as they are anyway.
    noted = culprits if tool == "quantize" else [layer for layer in culprits if has_weights(layer)]
    if noted:
        note_partial(ctx, tool, noted, "tfmot cannot " + tool + (" it" if len(noted) == 1 else " them"))
    return culprits


def note_partial(ctx: BuildContext, tool: str, layers: list[Any], why: str) -> None:
    """Record (``ctx.notes``) and report (``ctx.progress``) the layers left as they are."""
    state = LEFT_AS[tool]
    ctx.notes[f"{state}_layers"] = sorted({*ctx.notes.get(f"{state}_layers", ()), *(x.name for x in layers)})
    ctx.progress(f"{ctx.spec.name}: partial {_VERB[tool]}: left {describe(layers)} {state} ({why})")


_VERB = {"quantize": "quantization-aware training", "prune": "pruning", "cluster": "clustering"}


def all_layers(model: Any) -> list[Any]:
    """The layers of ``model``, nested models' layers instead of the nested models."""
    found = []
    for layer in getattr(model, "layers", []):
        if hasattr(layer, "layers") and hasattr(layer, "inputs") and not hasattr(layer, "cell"):
            found.extend(all_layers(layer))
        else:
            found.append(layer)
    return found


def copy_weights(source: Any, target: Any) -> None:
    """Set ``target``'s weights to ``source``'s, layer by layer (the two models have the same
    architecture: ``target`` is a ``clone_model`` of ``source``), matching each layer's
    weights by shape and then by name rather than by position.

    A flat ``set_weights(get_weights())`` is not enough after tfmot's ``strip_clustering``:
    the MultiHeadAttention it puts back lists its four kernels, then its four biases, where
    a new layer of the same config lists kernel and bias per projection. Raises
    ``ValueError`` naming the layer when a weight has no counterpart."""
    pairs: list[tuple[Any, Any]] = []
    for mine, theirs in zip(target.layers, source.layers, strict=True):
        free = dict(enumerate(theirs.weights))  # by index: variables do not compare with ==
        for w in mine.weights:
            fits = [i for i, s in free.items() if tuple(s.shape) == tuple(w.shape)]
            if not fits:
                raise ValueError(f"layer {mine.name!r}: no weight of shape {tuple(w.shape)} for {w.name!r} "
                                 f"among {[s.name for s in theirs.weights]}")
            best = max(fits, key=lambda i: _common_tail(free[i].name, w.name))
            pairs.append((w, free.pop(best).numpy()))
    for w, value in pairs:
        w.assign(value)


def _common_tail(a: str, b: str) -> int:
    """How many trailing ``/``-separated parts the weight names ``a`` and ``b`` share
    (``mha/query/kernel:0`` and ``query/kernel:0``: 2)."""
    pa, pb = a.split(":")[0].split("/"), b.split(":")[0].split("/")
    n = 0
    while n < min(len(pa), len(pb)) and pa[-1 - n] == pb[-1 - n]:
        n += 1
    return n


def clone_wrapping(model: Any, wrap_layer: Callable[[Any], Any], leave: Iterable[Any]) -> Any:
    """``clone_model(model, clone_function=...)`` applying ``wrap_layer`` to every layer but
    the ``leave`` ones and input layers (nested models are cloned the same way)."""
    from pytest_edgeopt.variants.tfenv import import_keras

    keras = import_keras()
    left = {id(layer) for layer in leave}

    def clone(layer: Any) -> Any:
        if isinstance(layer, keras.Model):
            return keras.models.clone_model(layer, clone_function=clone)
        if id(layer) in left or isinstance(layer, keras.layers.InputLayer):
            return layer
        return wrap_layer(layer)

    return keras.models.clone_model(model, clone_function=clone)


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
        try:
            supported = supports(layer)
        except Exception:
            supported = False
        if not supported:
            found.append(layer)
    return found


#: Layers tfmot's default 8-bit scheme quantizes through its layout transforms rather than
#: its registry: separable convolutions are split into depthwise + pointwise convolutions,
#: batch normalization is folded into the convolution or Dense before it.
TRANSFORMED = frozenset({"SeparableConv1D", "SeparableConv2D", "BatchNormalization", "SyncBatchNormalization"})


def _support_check(tool: str) -> Callable[[Any], bool]:
    if tool == "quantize":
        from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
            default_8bit_quantize_registry as reg,
        )

        registry = reg.Default8BitQuantizeRegistry()
        return lambda layer: (registry.supports(layer)
                              or any(c.__name__ in TRANSFORMED for c in type(layer).__mro__))
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


def folded_into(model: Any, layers: list[Any]) -> list[Any]:
    """The batch normalization layers that directly follow one of ``layers`` (tfmot folds
    them into it, so they stay float with it)."""
    ids = {id(layer) for layer in layers}
    found = []
    for layer in all_layers(model):
        if not any(c.__name__ in ("BatchNormalization", "SyncBatchNormalization") for c in type(layer).__mro__):
            continue
        for node in getattr(layer, "_inbound_nodes", []):
            inbound = node.inbound_layers
            inbound = inbound if isinstance(inbound, (list, tuple)) else [inbound]
            if any(id(x) in ids for x in inbound):
                found.append(layer)
                break
    return found


def sole_consumers(model: Any, layers: list[Any]) -> list[Any]:
    """The layers whose one input comes from one of ``layers``: tfmot quantizes the output
    of a layer that alone feeds an annotated layer (``requires_output_quantize``), so when
    ``layers`` stay float, their sole consumers must stay float with them."""
    ids = {id(layer) for layer in layers}
    found = []
    for layer in all_layers(model):
        for node in getattr(layer, "_inbound_nodes", []):
            inbound = node.inbound_layers
            inbound = inbound if isinstance(inbound, (list, tuple)) else [inbound]
            if len(inbound) == 1 and id(inbound[0]) in ids:
                found.append(layer)
                break
    return found


def layers_named_in(model: Any, message: str) -> list[Any]:
    """Layers whose name or class name the tfmot error message mentions."""
    return [layer for layer in all_layers(model)
            if re.search(rf"\b{re.escape(layer.name)}\b", message)
            or re.search(rf"\.{re.escape(type(layer).__name__)}'", message)]
