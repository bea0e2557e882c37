"""The bridge from Keras 3 (and Keras 2 SavedModels) to the tf_keras model tfmot fine-tunes.

tfmot works only with tf_keras (Keras 2). A Keras 3 model is rebuilt as a tf_keras twin from
its config (layer by layer: every Keras 3 layer class must have a tf_keras class of the same
name) and its weights (layer by layer, by name); a SavedModel written by tf_keras 2.x loads as
tf_keras from its ``keras_metadata.pb``. Before anything is fine-tuned, the twin is proved
equivalent: its outputs on the eval inputs (else the representative or train inputs) are
compared with the original's (the Keras 3 model; the SavedModel's serving signature) and the
largest absolute difference is recorded in the variant's recipe (``ctx.notes["keras_bridge"]``).
A layer with no tf_keras twin, or outputs that differ, refuse the variant (a skip) with the
reason.

Importing this module is cheap; tensorflow, tf_keras and keras are imported by the functions.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from pytest_edgeopt.model import ModelUnderTest
from pytest_edgeopt.variants.registry import BuildContext, VariantBuildError, VariantUnavailable

#: Samples the equivalence check runs through both models (at most).
CHECK_SAMPLES = 256
#: The check passes when max |twin - original| <= RELATIVE_TOLERANCE * max(1, max |original|).
RELATIVE_TOLERANCE = 1e-4

#: Keyword arguments every tf_keras ``Layer`` takes through ``**kwargs``.
_BASE_LAYER_KWARGS = frozenset({"name", "trainable", "dtype", "dynamic", "input_dim", "input_shape",
                                "batch_input_shape", "batch_size", "weights", "activity_regularizer",
                                "autocast", "implementation"})
#: Keras 3 layer arguments with no tf_keras twin that may be dropped when they hold these values
#: (they then change nothing the tf_keras layer computes).
_DROPPABLE = {"quantization_config": (None,), "optional": (False,), "lora_rank": (None, 0),
              "lora_alpha": None}  # None: any value (it only matters with a lora_rank)


@dataclass(frozen=True, slots=True)
class Equivalence:
    """How the tf_keras twin compares with the original model: ``max_abs_diff`` over every
    output element of ``samples`` inputs taken from ``inputs`` (``eval_data``,
    ``representative_data`` or ``train_data``), against ``tolerance`` (same units as the
    outputs); ``source`` and ``target`` name the two sides with their versions."""

    source: str
    target: str
    max_abs_diff: float
    tolerance: float
    samples: int
    inputs: str

    @property
    def equivalent(self) -> bool:
        return bool(np.isfinite(self.max_abs_diff)) and self.max_abs_diff <= self.tolerance

    def to_note(self) -> dict[str, Any]:
        return {"from": self.source, "to": self.target, "max_abs_diff": self.max_abs_diff,
                "tolerance": self.tolerance, "samples": self.samples, "inputs": self.inputs}


def bridged(function: Callable[[BuildContext], bytes]) -> Callable[[BuildContext], bytes]:
    """``function`` (a tfmot builder) made to accept a Keras 3 model (built on its tf_keras
    twin) and a Keras SavedModel (built once the tf_keras load matches the signature); other
    sources pass through unchanged."""

    @functools.wraps(function)
    def build(ctx: BuildContext) -> bytes:
        src = ctx.mut.source
        if src.kind == "keras3":
            twin, figures = keras3_twin(ctx)
            ctx.notes["keras_bridge"] = figures.to_note()
            return function(replace(ctx, mut=twin_under_test(ctx.mut, twin)))
        if src.kind == "saved_model" and src.trainable:
            ctx.notes["keras_bridge"] = saved_model_equivalence(ctx).to_note()
        return function(ctx)

    return build


def twin_under_test(mut: ModelUnderTest, twin: Any) -> ModelUnderTest:
    """``mut`` with its model replaced by the tf_keras ``twin`` (same name, data, options and
    fingerprint: the cache keys and the shared intermediates stay those of the user's model)."""
    copy = ModelUnderTest(mut.name, twin, representative_data=mut.representative_batches(),
                          train_data=mut.train_arrays, eval_data=mut.eval_arrays, metric=mut.metric,
                          options=mut.options)
    copy._fingerprint = mut.fingerprint
    return copy


# -- Keras 3 -> tf_keras ----------------------------------------------------------------------


def keras3_twin(ctx: BuildContext) -> tuple[Any, Equivalence]:
    """The tf_keras twin of the Keras 3 model under test and its equivalence figures, made
    once per process (``ctx.memo``). Raises :class:`VariantUnavailable` naming the layer
    with no tf_keras twin, or giving the difference when the outputs do not match."""
    key = ("keras3 twin", ctx.mut.fingerprint)
    if key in ctx.memo:
        return ctx.memo[key]  # type: ignore[no-any-return]
    from pytest_edgeopt.variants.tfenv import _keras3_original, import_keras, import_keras3

    keras3 = import_keras3()
    tf_keras = import_keras()
    src = ctx.mut.source
    with warnings.catch_warnings():  # a .keras file's optimizer state: the twin needs none
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        original = src.obj if src.obj is not None else _keras3_original(src, ctx.memo, ctx.mut.fingerprint)
    twin = rebuild(original, tf_keras, ctx.spec.name)
    x, where = check_inputs(ctx.mut)
    figures = compare(lambda batch: _outputs(original, batch), lambda batch: _outputs(twin, batch), x, where,
                      f"keras {keras3.__version__}", f"tf_keras {tf_keras.__version__}")
    if not figures.equivalent:
        raise VariantUnavailable(
            f"{ctx.spec.name}: the tf_keras twin of Keras 3 model {ctx.mut.name!r} does not match it: "
            f"max |twin - original| = {figures.max_abs_diff:.3g} on {figures.samples} {where} samples "
            f"(tolerance {figures.tolerance:.3g}); tfmot's fine-tuning would start from another model. "
            "Build the model with tf_keras (`import tf_keras as keras`) to get the training-based variants")
    ctx.memo[key] = (twin, figures)
    return twin, figures


def rebuild(model: Any, tf_keras: Any, variant: str) -> Any:
    """A tf_keras Sequential/Functional model with ``model``'s (Keras 3) architecture and
    weights, compiled with its loss when that has a tf_keras twin."""
    name = getattr(model, "name", type(model).__name__)
    try:
        config = model.get_config()
    except Exception:
        config = None
    sequential = type(model).__name__ == "Sequential"
    if not isinstance(config, Mapping) or "layers" not in config or not (sequential or "input_layers" in config):
        raise VariantUnavailable(
            f"{variant}: Keras 3 model {name!r} is a subclassed {type(model).__name__}: there is no layer graph in its "
            "config to rebuild it as a tf_keras model for tfmot. Build it with the Sequential or functional API")
    translated = _model_config(config, tf_keras, variant, sequential)
    from pytest_edgeopt.variants.tfenv import quiet_warnings, root_cause

    with quiet_warnings():
        try:
            twin = (tf_keras.Sequential if sequential else tf_keras.Model).from_config(translated)
        except Exception as exc:
            raise VariantUnavailable(f"{variant}: tf_keras cannot rebuild Keras 3 model {name!r} from its config: "
                                     f"{root_cause(exc)}") from None
    _copy_weights(model, twin, variant)
    loss = _loss_twin(getattr(model, "loss", None), tf_keras)
    if loss is not None:
        twin.compile(optimizer="adam", loss=loss)
    return twin


def _model_config(config: Mapping[str, Any], tf_keras: Any, variant: str, sequential: bool) -> dict[str, Any]:
    layers = [_layer(item, tf_keras, variant, functional=not sequential) for item in config["layers"]]
    out: dict[str, Any] = {"name": config.get("name"), "layers": layers}
    if not sequential:
        out["input_layers"] = _history_list(config["input_layers"])
        out["output_layers"] = _history_list(config["output_layers"])
    return out


def _history_list(value: Any) -> list[list[Any]]:
    """Keras 3 writes one input as ``["name", 0, 0]``, several as a list of those."""
    if value and isinstance(value[0], str):
        return [list(value)]
    return [list(v) for v in value]


def _layer(item: Mapping[str, Any], tf_keras: Any, variant: str, functional: bool) -> dict[str, Any]:
    cls_name = item["class_name"]
    config = dict(item.get("config", {}))
    name = config.get("name", item.get("name", "?"))
    module = str(item.get("module") or "")
    if cls_name in ("Sequential", "Functional"):
        nested = _model_config(config, tf_keras, variant, cls_name == "Sequential")
        out: dict[str, Any] = {"class_name": "Sequential" if cls_name == "Sequential" else "Functional",
                               "config": nested}
    else:
        cls = getattr(tf_keras.layers, cls_name, None)
        if cls is None or item.get("registered_name") not in (None, cls_name) or not module.startswith("keras"):
            raise VariantUnavailable(
                f"{variant}: layer {name!r} ({module + '.' if module else ''}{cls_name}) of the Keras 3 model has no "
                "tf_keras twin, so tfmot cannot fine-tune a copy of the model; build the model with tf_keras "
                "layers (`import tf_keras as keras`) to get the training-based variants")
        out = {"class_name": cls_name, "config": _layer_config(cls, cls_name, name, config, tf_keras, variant)}
    if functional:
        out["name"] = item.get("name", name)
        out["inbound_nodes"] = [_node(node, name, variant) for node in item.get("inbound_nodes", [])]
    return out


def _layer_config(cls: Any, cls_name: str, name: str, config: dict[str, Any], tf_keras: Any,
                  variant: str) -> dict[str, Any]:
    if cls_name == "InputLayer" and "batch_shape" in config:
        config["batch_input_shape"] = config.pop("batch_shape")
    allowed = _init_arguments(cls)
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key == "dtype" and isinstance(value, dict):  # a DTypePolicy
            value = value.get("config", {}).get("name", "float32")
        elif isinstance(value, dict) and "class_name" in value and key != "activation":
            value = _nested_object(key, value, tf_keras)
        if key not in allowed:
            droppable = _DROPPABLE.get(key, ())
            if key in _DROPPABLE and (droppable is None or value in droppable):
                continue
            raise VariantUnavailable(
                f"{variant}: layer {name!r} ({cls_name}) of the Keras 3 model sets {key}={value!r}, which tf_keras' "
                f"{cls_name} does not take: no tf_keras twin of that layer for tfmot")
        out[key] = value
    return out


def _init_arguments(cls: Any) -> frozenset[str]:
    """The keyword arguments a tf_keras layer class takes (its and its bases' ``__init__``)."""
    names: set[str] = set()
    takes_kwargs = False
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names.update(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
        takes_kwargs = True
    return frozenset(names | (_BASE_LAYER_KWARGS if takes_kwargs else set()))


def _nested_object(key: str, value: Mapping[str, Any], tf_keras: Any) -> dict[str, Any]:
    """An initializer, regularizer or constraint in tf_keras' form, with the arguments its
    tf_keras class takes (Keras 3 adds some, e.g. an initializer's ``input_axes``)."""
    kind = ("initializers" if key.endswith("initializer") else "regularizers" if key.endswith("regularizer")
            else "constraints" if key.endswith("constraint") else None)
    cls = getattr(getattr(tf_keras, kind), value["class_name"], None) if kind else None
    config = dict(value.get("config") or {})
    if cls is not None:
        params = inspect.signature(cls.__init__).parameters
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            config = {k: v for k, v in config.items() if k in params}
    return {"class_name": value["class_name"], "config": config}


def _node(node: Any, layer: str, variant: str) -> list[list[Any]]:
    """A Keras 3 inbound node (``{"args": [...], "kwargs": {...}}``) as tf_keras' list of
    ``[layer, node_index, tensor_index, kwargs]``."""
    if not isinstance(node, Mapping):
        return list(node)
    args = list(node.get("args", []))
    kwargs = {k: v for k, v in dict(node.get("kwargs") or {}).items() if v is not None}
    if any(_history(v) for v in kwargs.values()) or len(args) > 1:
        raise VariantUnavailable(
            f"{variant}: layer {layer!r} of the Keras 3 model is called with several tensor arguments, which the "
            "tf_keras twin cannot reproduce from the config; build the model with tf_keras layers for tfmot")
    tensors = _history(args[0]) if args else []
    return [[*h, kwargs] for h in tensors]


def _history(value: Any) -> list[list[Any]]:
    """The ``keras_history`` entries of the Keras tensors in ``value`` (nested lists), in order."""
    if isinstance(value, Mapping) and value.get("class_name") == "__keras_tensor__":
        return [list(value["config"]["keras_history"])]
    if isinstance(value, (list, tuple)):
        return [h for v in value for h in _history(v)]
    return []


def _copy_weights(model: Any, twin: Any, variant: str) -> None:
    twins = {layer.name: layer for layer in _all_layers(twin)}
    for layer in _all_layers(model):
        weights = [np.asarray(w) for w in layer.get_weights()]
        if not weights or hasattr(layer, "layers"):
            continue
        target = twins.get(layer.name)
        try:
            if target is None:
                raise ValueError("no layer of that name in the twin")
            target.set_weights(weights)
        except ValueError as exc:
            raise VariantUnavailable(
                f"{variant}: the weights of layer {layer.name!r} ({type(layer).__name__}) of the Keras 3 model do not "
                f"fit its tf_keras twin ({exc}); build the model with tf_keras for tfmot") from None


def _all_layers(model: Any) -> list[Any]:
    found: list[Any] = []
    for layer in getattr(model, "layers", []):
        found.append(layer)
        if hasattr(layer, "layers"):
            found.extend(_all_layers(layer))
    return found


def _loss_twin(loss: Any, tf_keras: Any) -> Any:
    """The tf_keras twin of a Keras 3 compiled loss (a name or a ``keras.losses`` object);
    ``None`` when there is none or no twin (the fine-tuning then infers one from the labels)."""
    if not loss:
        return None
    try:
        if isinstance(loss, str):
            return tf_keras.losses.get(loss)
        cls = getattr(tf_keras.losses, type(loss).__name__, None)
        if cls is None:
            return None
        params = inspect.signature(cls.__init__).parameters
        return cls(**{k: v for k, v in loss.get_config().items() if k in params and k != "dtype"})
    except Exception:
        return None


# -- the check ------------------------------------------------------------------------------


def check_inputs(mut: ModelUnderTest) -> tuple[np.ndarray, str]:
    """Up to :data:`CHECK_SAMPLES` inputs to compare the models on, and where they come from:
    the eval inputs, else the representative data, else the train inputs."""
    if mut.eval_arrays is not None:
        return np.asarray(mut.eval_arrays[0])[:CHECK_SAMPLES], "eval_data"
    batches = mut.representative_batches()
    if batches:
        return np.concatenate([b if b.ndim > 0 else b[None] for b in batches])[:CHECK_SAMPLES], "representative_data"
    if mut.train_arrays is not None:
        return np.asarray(mut.train_arrays[0])[:CHECK_SAMPLES], "train_data"
    raise VariantUnavailable(f"{mut.name!r} sets no eval_data, representative_data or train_data to check the "
                             "tf_keras twin against the original on")


def compare(original: Callable[[np.ndarray], list[np.ndarray]], twin: Callable[[np.ndarray], list[np.ndarray]],
            x: np.ndarray, where: str, source: str, target: str) -> Equivalence:
    """Run ``x`` through both sides (functions returning the list of outputs) and measure."""
    expected, got = original(x), twin(x)
    if len(expected) != len(got):
        return Equivalence(source, target, float("inf"), 0.0, len(x), where)
    diff, scale = 0.0, 1.0
    for e, g in zip(expected, got):
        e, g = np.asarray(e, dtype=np.float64), np.asarray(g, dtype=np.float64)
        if e.shape != g.shape:
            return Equivalence(source, target, float("inf"), 0.0, len(x), where)
        diff = max(diff, float(np.max(np.abs(e - g))) if e.size else 0.0)
        scale = max(scale, float(np.max(np.abs(e))) if e.size else 0.0)
    return Equivalence(source, target, diff, RELATIVE_TOLERANCE * scale, len(x), where)


def _outputs(model: Any, x: np.ndarray) -> list[np.ndarray]:
    out = model.predict(x, verbose=0, batch_size=64)
    if isinstance(out, dict):
        return [np.asarray(out[k]) for k in sorted(out)]
    return [np.asarray(o) for o in out] if isinstance(out, (list, tuple)) else [np.asarray(out)]


# -- Keras 2 SavedModels ------------------------------------------------------------------------


def saved_model_equivalence(ctx: BuildContext) -> Equivalence:
    """The tf_keras load of a Keras SavedModel against the SavedModel's own serving signature,
    once per process. Raises :class:`VariantUnavailable` when they differ."""
    key = ("keras savedmodel check", ctx.mut.fingerprint)
    if key in ctx.memo:
        return ctx.memo[key]  # type: ignore[no-any-return]
    from pytest_edgeopt.variants.tfenv import import_keras, import_tf, keras_original, quiet_warnings

    tf = import_tf()
    tf_keras = import_keras()
    model = keras_original(ctx.mut.source, ctx.memo, ctx.mut.fingerprint)
    with quiet_warnings():
        loaded = tf.saved_model.load(str(ctx.mut.source.path))
    signatures = dict(getattr(loaded, "signatures", {}))
    if len(signatures) != 1 and "serving_default" not in signatures:
        raise VariantBuildError(f"{ctx.spec.name}: {ctx.mut.source.description} has {len(signatures)} serving "
                                "signatures and none named serving_default: nothing to check the tf_keras load against")
    signature = signatures.get("serving_default") or next(iter(signatures.values()))
    _, spec = signature.structured_input_signature
    if len(spec) != 1:
        raise VariantUnavailable(f"{ctx.spec.name}: the equivalence check of {ctx.mut.source.description} takes one "
                                 f"input; its signature has {', '.join(spec)}")
    input_name = next(iter(spec))

    def by_signature(x: np.ndarray) -> list[np.ndarray]:
        outs = [signature(**{input_name: tf.constant(x[i:i + 64])}) for i in range(0, len(x), 64)]
        return [np.concatenate([o[k].numpy() for o in outs]) for k in sorted(outs[0])]

    x, where = check_inputs(ctx.mut)
    figures = compare(by_signature, lambda b: _outputs(model, b), x, where,
                      "SavedModel serving signature", f"tf_keras {tf_keras.__version__}")
    if not figures.equivalent:
        raise VariantUnavailable(
            f"{ctx.spec.name}: tf_keras loads {ctx.mut.source.description} as a model whose outputs differ from the "
            f"SavedModel's serving signature: max |d| = {figures.max_abs_diff:.3g} on {figures.samples} {where} "
            f"samples (tolerance {figures.tolerance:.3g}); pass the Keras model or a .keras/.h5 file")
    ctx.memo[key] = figures
    return figures
