"""Conversion fidelity: does the fp32 ``.tflite`` compute what the source model computes?

Before any variant of a model is judged against fp32, the fp32 ``.tflite`` is run on the
eval inputs next to the source model it was converted from (a Keras model, a SavedModel,
or what a callable returns; a ``.tflite`` source has nothing to compare with). The check
records the largest absolute output difference, the range of the source's outputs and
the metric of each. Beyond the tolerance (:class:`Tolerance`, the ``fidelity`` knob) every
test of that model fails with :class:`FidelityError`, naming the first op whose output
leaves the source model's, found the way TensorFlow's quantization debugger compares
layers: Keras layer outputs against the ``.tflite``'s intermediate tensors
(``experimental_preserve_all_tensors``).

The source model runs in the worker process (:class:`pytest_edgeopt.workers.portable.FidelityRequest`);
the figures are kept in the variant cache (payload :data:`PAYLOAD`) keyed by the fp32
variant's key, the eval data and the tool versions, so a warm run imports no TensorFlow.
Importing this module does not import TensorFlow either.

The ``stateful`` knob (``None``: decide from the model) says whether the model carries
state across calls (a Keras RNN with ``stateful=True``); such a model is evaluated as one
sequence, source and ``.tflite`` alike: samples in order, no reset between them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pytest_edgeopt.targets.base import TargetError, VariantBroken
from pytest_edgeopt.workers.stage import stage

if TYPE_CHECKING:  # pragma: no cover
    from pytest_edgeopt.workers.portable import PortableModel
    from pytest_edgeopt.workers.serve import WorkerState

#: Payload file name of a fidelity entry in :class:`~pytest_edgeopt.variants.cache.VariantCache`.
PAYLOAD = "fidelity.json"
#: Bump when what the entry holds or how it is computed changes.
FORMAT = 1
#: Samples the first-divergent-op search runs through both models (it keeps every tensor).
DIVERGENCE_SAMPLES = 8
#: Ops the ``.tflite`` of a model that carries state across calls has (resource variables).
STATE_OPS = frozenset({"ASSIGN_VARIABLE", "VAR_HANDLE", "READ_VARIABLE"})


#: Default tolerance: the fp32 metric within this of the source model's (absolute)...
DEFAULT_METRIC_ABS = 0.01
#: ... and max |output difference| within this fraction of the source's output range.
DEFAULT_MAX_DIFF_REL = 0.01
#: A max |output difference| at or below this (absolute) is float32 rounding, never a divergence:
#: it only matters for near-constant outputs (a random-weight classifier's ~1/classes scores,
#: whose range can be 1e-7), where a fraction of the range is below what float32 can resolve.
FLOAT32_ROUNDING_ABS = 1e-6


class FidelityError(VariantBroken):
    """The fp32 ``.tflite`` differs from the source model beyond the tolerance (a FAIL of
    every test of the model). ``fidelity``: the figures."""

    def __init__(self, message: str, fidelity: Fidelity | None = None) -> None:
        super().__init__(message)
        self.fidelity = fidelity

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.fidelity))


@dataclass(frozen=True, slots=True)
class Tolerance:
    """How far the fp32 conversion may stray: ``metric_abs`` in the metric's units
    (absolute), ``max_diff_rel``: max |output difference| as a fraction of the source's
    output range (max - min over the eval set). ``enabled=False`` skips the check."""

    metric_abs: float = 0.01  # = DEFAULT_METRIC_ABS
    max_diff_rel: float = 0.01  # = DEFAULT_MAX_DIFF_REL
    enabled: bool = True

    @classmethod
    def from_option(cls, value: Any) -> Tolerance:
        """The ``fidelity`` knob: ``None`` (defaults), ``False`` (off), or a mapping with
        ``metric_abs`` and/or ``max_diff_rel``. Raises ValueError naming a bad value."""
        if value is None or value is True:
            return cls()
        if value is False:
            return cls(enabled=False)
        if not isinstance(value, Mapping):
            raise ValueError(f"the fidelity option must be None, False or a dict with metric_abs/max_diff_rel, "
                             f"got {value!r}")
        unknown = set(value) - {"metric_abs", "max_diff_rel"}
        if unknown:
            raise ValueError(f"fidelity option: unknown key(s) {', '.join(sorted(unknown))}; "
                             "known: metric_abs, max_diff_rel")
        for key, v in value.items():
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                raise ValueError(f"fidelity option: {key} must be a number >= 0, got {v!r}")
        return cls(float(value.get("metric_abs", DEFAULT_METRIC_ABS)),
                   float(value.get("max_diff_rel", DEFAULT_MAX_DIFF_REL)))

    def to_dict(self) -> dict[str, Any]:
        return {"metric_abs": self.metric_abs, "max_diff_rel": self.max_diff_rel, "enabled": self.enabled}


@dataclass(frozen=True, slots=True)
class Fidelity:
    """The fp32 ``.tflite`` next to its source model on ``samples`` eval samples.

    ``source_metric`` / ``tflite_metric``: the metric (``metric``) of each; ``max_abs_diff``:
    the largest |tflite - source| over every output element; ``output_range``: max - min of
    the source's outputs (what ``max_abs_diff`` is relative to); ``stateful``: evaluated as
    a sequence; ``first_divergent_op`` / ``first_divergent_layer``: where the outputs part
    (found only when the outputs differ beyond the tolerance, for a Keras source);
    ``from_cache``: read from the variant cache.
    """

    metric: str
    source_metric: float | None
    tflite_metric: float | None
    max_abs_diff: float
    output_range: float
    samples: int
    source_kind: str
    stateful: bool = False
    first_divergent_op: str | None = None
    first_divergent_layer: str | None = None
    from_cache: bool = False

    @property
    def max_diff_rel(self) -> float:
        """``max_abs_diff`` as a fraction of the source's output range."""
        return self.max_abs_diff / self.output_range if self.output_range > 0 else self.max_abs_diff

    def problems(self, tolerance: Tolerance) -> list[str]:
        """What exceeds ``tolerance`` (empty: within it)."""
        found = []
        if (tolerance.enabled and self.source_metric is not None and self.tflite_metric is not None
                and abs(self.source_metric - self.tflite_metric) > tolerance.metric_abs + 1e-12):
            found.append("metric")
        if (tolerance.enabled and not self.max_diff_rel <= tolerance.max_diff_rel  # NaN fails too
                and not self.max_abs_diff <= FLOAT32_ROUNDING_ABS):
            found.append("max_diff")
        return found

    def message(self) -> str:
        """``fp32 conversion differs from the source model: top1 0.115 vs 0.542, max |d| 0.99,
        first divergent op UNIDIRECTIONAL_SEQUENCE_LSTM (layer 'lstm_1')``."""
        parts = []
        if self.source_metric is not None and self.tflite_metric is not None:
            parts.append(f"{self.metric} {self.tflite_metric:.3f} vs {self.source_metric:.3f}")
        parts.append(f"max |d| {self.max_abs_diff:.3g} (output range {self.output_range:.3g})")
        if self.first_divergent_op:
            layer = f" (layer {self.first_divergent_layer!r})" if self.first_divergent_layer else ""
            parts.append(f"first divergent op {self.first_divergent_op}{layer}")
        return "fp32 conversion differs from the source model: " + ", ".join(parts)

    def check(self, tolerance: Tolerance) -> None:
        """Raise :class:`FidelityError` when beyond ``tolerance``."""
        if self.problems(tolerance):
            raise FidelityError(
                f"{self.message()}; tolerance: {self.metric} within {tolerance.metric_abs:g}, max |d| within "
                f"{tolerance.max_diff_rel:g} of the output range (the 'fidelity' model option)", self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric, "source_metric": self.source_metric, "tflite_metric": self.tflite_metric,
            "max_abs_diff": self.max_abs_diff, "output_range": self.output_range, "samples": self.samples,
            "source_kind": self.source_kind, "stateful": self.stateful,
            "first_divergent_op": self.first_divergent_op, "first_divergent_layer": self.first_divergent_layer,
            "from_cache": self.from_cache,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Fidelity:
        def num(v: Any) -> float | None:
            return None if v is None else float(v)

        return cls(
            metric=str(d["metric"]), source_metric=num(d.get("source_metric")), tflite_metric=num(d.get("tflite_metric")),
            max_abs_diff=float(d["max_abs_diff"]), output_range=float(d["output_range"]), samples=int(d["samples"]),
            source_kind=str(d["source_kind"]), stateful=bool(d.get("stateful", False)),
            first_divergent_op=d.get("first_divergent_op"), first_divergent_layer=d.get("first_divergent_layer"),
            from_cache=bool(d.get("from_cache", False)),
        )


# -- comparing outputs (plain NumPy) ---------------------------------------------------------


def output_difference(source: Sequence[np.ndarray], tflite: Sequence[np.ndarray]) -> tuple[float, float]:
    """(max |tflite - source| over every output element, max - min of the source outputs).
    Raises VariantBroken when the outputs do not line up (count or shape)."""
    if len(source) != len(tflite):
        raise VariantBroken(f"the fp32 .tflite has {len(tflite)} outputs but the source model {len(source)}")
    diff, lo, hi = 0.0, math.inf, -math.inf
    for s, t in zip(source, tflite):
        s = np.asarray(s, dtype=np.float64)
        t = np.asarray(t, dtype=np.float64)
        if s.size != t.size:
            raise VariantBroken(f"the fp32 .tflite's output has shape {t.shape} but the source model's {s.shape}")
        d = np.abs(t.reshape(-1) - s.reshape(-1))
        diff = max(diff, float(np.max(d)) if d.size else 0.0)
        if np.isnan(d).any():
            diff = math.nan
        if s.size:
            lo, hi = min(lo, float(np.nanmin(s))), max(hi, float(np.nanmax(s)))
    return diff, (hi - lo if hi >= lo else 0.0)


def has_state_ops(model: Path | bytes) -> bool:
    """Whether the ``.tflite`` keeps state in resource variables across ``invoke()`` (what a
    stateful Keras RNN converts to: ``VAR_HANDLE``/``ASSIGN_VARIABLE``). LiteRT only."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=model) if isinstance(model, bytes) else Interpreter(model_path=str(model))
    return any(op["op_name"] in STATE_OPS for op in it._get_ops_details())


# -- running the source model (TensorFlow; in the worker) ------------------------------------


@dataclass(frozen=True, slots=True)
class SourceRun:
    """The source model's float ``outputs`` on the eval inputs, whether it is ``stateful``,
    and where the fp32 ``.tflite`` first parts from it (``divergence``: op, layer)."""

    outputs: list[np.ndarray]
    tflite_outputs: list[np.ndarray]
    stateful: bool
    divergence: tuple[str, str | None] | None = None


def run_source(source: Any, inputs: Any, tflite: Path, stateful: bool | None, max_diff_rel: float,
               memo: dict[Any, Any] | None = None, fingerprint: str | None = None) -> SourceRun:
    """Run the source model (a :class:`~pytest_edgeopt.model.ModelSource`) and the fp32
    ``.tflite`` on ``inputs``; when they differ by more than ``max_diff_rel`` of the
    output range, find the first divergent op (Keras sources). Imports TensorFlow."""
    from pytest_edgeopt.targets.cpu import run_predict
    from pytest_edgeopt.variants.tfenv import quiet_warnings

    with quiet_warnings():
        model = _load(source, memo, fingerprint)
        if stateful is None:
            stateful = _keras_stateful(model) or has_state_ops(tflite)
        outputs = _predict(model, _named(inputs, tflite), stateful)
    tflite_outputs = run_predict(tflite, inputs, sequence=stateful)
    diff, span = output_difference(outputs, tflite_outputs)
    divergence = None
    rel = diff / span if span > 0 else diff
    if not rel <= max_diff_rel and hasattr(model, "layers") and not stateful and not isinstance(inputs, list):
        with quiet_warnings():
            divergence = first_divergent(model, tflite.read_bytes(), inputs[:DIVERGENCE_SAMPLES], max_diff_rel)
    return SourceRun(outputs, tflite_outputs, stateful, divergence)


def _named(inputs: Any, tflite: Path) -> Any:
    """Several inputs (a list in the ``.tflite``'s input order) as a dict keyed by input name,
    which a Keras model matches to its own inputs whatever their order; one array as it is."""
    if not isinstance(inputs, list):
        return inputs
    from pytest_edgeopt.tensors import ModelIO, input_key

    return {input_key(spec.name): x for spec, x in zip(ModelIO.of_file(tflite).inputs, inputs)}


def _load(source: Any, memo: dict[Any, Any] | None, fingerprint: str | None) -> Any:
    """A Keras model (tf_keras or Keras 3), or a plain SavedModel's serving function."""
    from pytest_edgeopt.variants import tfenv

    if source.obj is not None:
        return source.obj
    if source.kind == "keras" or (source.kind == "saved_model" and source.trainable):
        return tfenv.keras_original(source, memo, fingerprint)
    if source.kind == "keras3":
        return tfenv.import_keras3().models.load_model(str(source.path))
    if source.kind == "saved_model":
        tf = tfenv.import_tf()
        loaded = tf.saved_model.load(str(source.path))
        return _Signature(loaded, loaded.signatures["serving_default"])
    raise TargetError(f"no source model to compare with for a {source.kind} model")


class _Signature:
    """A plain SavedModel's serving signature, called one batch at a time."""

    def __init__(self, loaded: Any, signature: Any) -> None:
        self.loaded = loaded  # keeps the variables alive
        self.signature = signature
        _, named = signature.structured_input_signature
        if len(named) != 1:
            raise TargetError(f"the SavedModel's serving signature takes {len(named)} inputs; the check supports one")
        (self.name, self.spec), = named.items()

    @property
    def batch(self) -> int | None:
        first = self.spec.shape[0] if self.spec.shape.rank else None
        return None if first is None else int(first)

    def __call__(self, x: Any) -> list[np.ndarray]:
        import tensorflow as tf

        out = self.signature(**{self.name: tf.constant(x, dtype=self.spec.dtype)})
        return [np.asarray(out[k]) for k in sorted(out)]


def _keras_stateful(model: Any) -> bool:
    for layer in getattr(model, "layers", []):
        inner = getattr(layer, "forward_layer", None) or layer
        if getattr(inner, "stateful", False) or (hasattr(layer, "layers") and _keras_stateful(layer)):
            return True
    return False


def _predict(model: Any, inputs: Any, stateful: bool) -> list[np.ndarray]:
    """Float outputs of the source model: batches of 256, or of its own fixed batch size;
    a stateful model's state reset once, then the samples in order."""
    call: Callable[[Any], list[np.ndarray]]
    if isinstance(model, _Signature):
        batch = model.batch or 256
        call = model
    else:
        first = model.inputs[0].shape[0] if getattr(model, "inputs", None) else None
        batch = int(first) if first else 256
        dtype = model.inputs[0].dtype if getattr(model, "inputs", None) else "float32"
        if stateful and hasattr(model, "reset_states"):
            model.reset_states()

        def keras_call(x: Any) -> list[np.ndarray]:
            def cast(a: Any) -> np.ndarray:
                return np.asarray(a, dtype=getattr(dtype, "as_numpy_dtype", dtype))

            out = model({k: cast(v) for k, v in x.items()} if isinstance(x, dict) else cast(x), training=False)
            outs = out if isinstance(out, (list, tuple)) else [out]
            return [np.asarray(o) for o in outs]

        call = keras_call
    if isinstance(inputs, dict) and isinstance(model, _Signature):
        raise TargetError(f"the SavedModel's serving signature is called with one input; the model has {len(inputs)}")
    chunks: list[list[np.ndarray]] = []
    n = len(next(iter(inputs.values()))) if isinstance(inputs, dict) else len(inputs)
    for start in range(0, n, batch):
        x = {k: v[start:start + batch] for k, v in inputs.items()} if isinstance(inputs, dict) else inputs[start:start + batch]
        real = min(batch, n - start)
        if real < batch and (batch != 256 or isinstance(model, _Signature)):  # a fixed batch: pad
            x = {k: _pad(v, batch) for k, v in x.items()} if isinstance(x, dict) else _pad(x, batch)
        chunks.append([np.asarray(o, dtype=np.float32)[:real] for o in call(x)])
    return [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]


def _pad(a: np.ndarray, batch: int) -> np.ndarray:
    """``a`` padded with zero samples to ``batch``."""
    return np.concatenate([a, np.zeros((batch - len(a), *a.shape[1:]), dtype=a.dtype)])


# -- the first divergent op (TensorFlow and LiteRT; in the worker) ----------------------------


def first_divergent(model: Any, tflite: bytes, x: np.ndarray, max_diff_rel: float) -> tuple[str, str | None] | None:
    """Where the ``.tflite`` first parts from the Keras ``model`` on the samples ``x``:
    ``(op name, layer name)``, or ``None`` when no layer output can be told apart.

    Every Keras layer's output is looked for among the ``.tflite``'s tensors of the same
    shape (all kept, one sample at a time, variable tensors reset before each). A layer
    whose output is found nowhere, and none of whose descendants' outputs are found either
    (a layer fused into the next, such as a BatchNormalization folded into its conv, has
    a found descendant), is the first divergent layer; its op is the first op run after
    the ops that produced its inputs, preferring one whose tensor names carry the layer's
    name (LSTM outputs are named ``tfl.unidirectional_sequence_lstm``, so often neither).
    """
    layers, keras_outputs = _layer_outputs(model, x)
    tensors = _tflite_tensors(tflite, x)
    found: dict[str, int] = {}  # layer name -> position of the first op whose output matches
    for layer, k in zip(layers, keras_outputs):
        if k is None:
            continue
        span = float(np.max(k) - np.min(k)) if k.size else 0.0
        limit = max(max_diff_rel * span, 1e-5) if span > 0 else 1e-5
        for pos, (_, _, values) in enumerate(tensors):
            if values.shape == k.shape and float(np.max(np.abs(values - k))) <= limit:
                found[layer.name] = pos
                break
    children = _children(layers)
    for layer, k in zip(layers, keras_outputs):
        if k is None or layer.name in found:
            continue
        if any(d in found for d in _descendants(layer.name, children)):
            continue  # fused into a later op, whose output matches
        after = max((found[p] for p in _parents(layer) if p in found), default=-1)
        later = tensors[after + 1:]
        if not later:
            return None
        named = [t for t in later if f"/{layer.name}/" in t[1] or t[1].startswith(f"{layer.name}/")]
        op = (named or later)[0][0]
        return op, layer.name
    return None


def _layer_outputs(model: Any, x: np.ndarray) -> tuple[list[Any], list[np.ndarray | None]]:
    """The model's layers (input layers left out) and each one's output on ``x``."""
    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    outs = [layer.output for layer in layers]
    outs = [o[0] if isinstance(o, (list, tuple)) else o for o in outs]
    probe = _functional(model, outs)
    dtype = model.inputs[0].dtype
    values = probe(np.asarray(x, dtype=getattr(dtype, "as_numpy_dtype", dtype)), training=False)
    values = values if isinstance(values, (list, tuple)) else [values]
    return layers, [np.asarray(v, dtype=np.float32) for v in values]


def _functional(model: Any, outputs: list[Any]) -> Any:
    """A functional model from ``model``'s inputs to ``outputs``, of the same Keras."""
    import importlib

    module = type(model).__module__.split(".")[0]  # tf_keras or keras
    keras = importlib.import_module(module)
    return keras.Model(model.inputs, outputs)


def _tflite_tensors(tflite: bytes, x: np.ndarray) -> list[tuple[str, str, np.ndarray]]:
    """``(op name, tensor name, values for every sample of x)`` for each op output, in
    execution order, run one sample at a time (batch axis dropped and re-stacked)."""
    from pytest_edgeopt.tensors import ModelIO, to_model_input
    from pytest_edgeopt.variants.debug_graph import debug_interpreter, ops_details

    it = debug_interpreter(tflite)
    it.allocate_tensors()
    spec = ModelIO.of_interpreter(it).inputs[0]
    details = {d["index"]: d for d in it.get_tensor_details()}
    ops = [op for op in ops_details(it) if op["op_name"] != "DELEGATE"]
    per_sample: list[list[np.ndarray]] = [[] for op in ops for _ in op["outputs"]]
    for sample in x:
        it.reset_all_variables()
        it.set_tensor(spec.index, to_model_input(sample[None], spec))
        it.invoke()
        i = 0
        for op in ops:
            for t in op["outputs"]:
                try:
                    value = np.asarray(it.get_tensor(t), dtype=np.float32)
                except (ValueError, TypeError):
                    value = np.zeros(0, np.float32)
                per_sample[i].append(value[0] if value.ndim and value.shape[0] == 1 else value)
                i += 1
    result = []
    i = 0
    for op in ops:
        for t in op["outputs"]:
            result.append((op["op_name"], details.get(t, {}).get("name", ""), np.stack(per_sample[i])))
            i += 1
    return result


def _parents(layer: Any) -> list[str]:
    names: list[str] = []
    for node in getattr(layer, "_inbound_nodes", []):
        inbound = node.inbound_layers
        for p in inbound if isinstance(inbound, (list, tuple)) else [inbound]:
            names.append(p.name)
    return names


def _children(layers: Sequence[Any]) -> dict[str, set[str]]:
    children: dict[str, set[str]] = {}
    for layer in layers:
        for p in _parents(layer):
            children.setdefault(p, set()).add(layer.name)
    return children


def _descendants(name: str, children: Mapping[str, set[str]]) -> set[str]:
    seen: set[str] = set()
    todo = list(children.get(name, ()))
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(children.get(n, ()))
    return seen


def to_json(fidelity: Fidelity) -> bytes:
    return json.dumps({"format": FORMAT, **fidelity.to_dict()}, sort_keys=True).encode()


def from_json(data: bytes) -> Fidelity:
    return Fidelity.from_dict(json.loads(data))


# -- the request a worker process runs (pytest_edgeopt.workers) --------------------------------
@dataclass(frozen=True, slots=True)
class FidelityRequest:
    """Run the source model of ``model`` (the worker's copy of ``token``) and the fp32
    ``.tflite`` at ``tflite`` on ``inputs`` (float32, batch axis first), and look for the
    first divergent op beyond ``max_diff_rel`` (:func:`pytest_edgeopt.fidelity.run_source`).
    ``stateful``: the ``stateful`` knob (``None``: decide from the model)."""

    token: str
    model: PortableModel | None
    tflite: Path
    inputs: np.ndarray
    stateful: bool | None
    max_diff_rel: float

    def for_worker(self, known: set[str]) -> FidelityRequest:
        if self.token in known:
            return replace(self, model=None)
        known.add(self.token)
        return self

    def run(self, worker: WorkerState) -> SourceRun:
        stage("load")
        mut = worker.model(self.token, self.model)
        return run_source(mut.source, self.inputs, self.tflite, self.stateful, self.max_diff_rel,
                          worker.memo, mut.fingerprint)
