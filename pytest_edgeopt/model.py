"""ModelUnderTest: what the user hands us, what kind of model it is, and its fingerprint.

Classifying a model and fingerprinting a file never imports tensorflow: a warm-cache
run over a model file costs no tensorflow import at all. An in-memory model (or a
callable returning one) was made with tensorflow already, so fingerprinting it uses it.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: Model kinds. ``keras``: a tf_keras (Keras 2) model, every variant; ``keras3``: a
#: Keras 3 model, every variant (tfmot fine-tunes its tf_keras twin, see
#: :mod:`pytest_edgeopt.variants.keras_bridge`); ``saved_model``: a SavedModel directory
#: (fine-tunable only when it is a Keras SavedModel); ``tflite``: a float ``.tflite``, the
#: post-training variants through AI Edge Quantizer, no fine-tuning.
KINDS = ("keras", "keras3", "saved_model", "tflite")

#: Metric names understood without a callable.
METRICS = ("top1", "top5", "neg_mse")


class ModelError(ValueError):
    """The model or its data is unusable; the message says what is wrong and how to fix it."""


@dataclass(frozen=True, slots=True)
class ModelSource:
    """The resolved model: its ``kind`` (one of :data:`KINDS`), the path when it came
    from a file (``None`` for an in-memory model), the in-memory object, and whether
    its Keras layers can be fine-tuned (``trainable``)."""

    kind: str
    path: Path | None
    obj: Any
    trainable: bool

    @property
    def description(self) -> str:
        where = str(self.path) if self.path else f"in-memory {type(self.obj).__name__}"
        return f"{self.kind} model ({where})"


def _sha256_file(path: Path, h: hashlib._Hash) -> None:
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)


def fingerprint_path(path: Path) -> str:
    """sha256 of a file, or of every file of a directory (relative names and bytes)."""
    h = hashlib.sha256()
    if path.is_dir():
        for p in sorted(x for x in path.rglob("*") if x.is_file()):
            h.update(str(p.relative_to(path)).encode())
            h.update(b"\0")
            _sha256_file(p, h)
    else:
        _sha256_file(path, h)
    return h.hexdigest()


def fingerprint_arrays(*arrays: Any) -> str:
    """sha256 over arrays' dtypes, shapes and bytes (nested lists/tuples allowed)."""
    h = hashlib.sha256()

    def add(a: Any) -> None:
        if isinstance(a, (list, tuple)):
            h.update(b"[%d" % len(a))
            for x in a:
                add(x)
            h.update(b"]")
            return
        if isinstance(a, Mapping):
            h.update(b"{%d" % len(a))
            for k in sorted(a):
                h.update(str(k).encode() + b"\0")
                add(a[k])
            h.update(b"}")
            return
        arr = np.ascontiguousarray(np.asarray(a))
        h.update(f"{arr.dtype.str}{arr.shape}".encode())
        h.update(arr.tobytes())

    for a in arrays:
        add(a)
    return h.hexdigest()


def fingerprint_keras(model: Any) -> str:
    """sha256 of a Keras model's architecture (JSON config), weights and compiled loss (the
    fine-tuning variants train with it when the ``loss`` knob is not set)."""
    from pytest_edgeopt.variants.cache import stable_form

    h = hashlib.sha256()
    h.update(type(model).__module__.encode())
    try:
        h.update(model.to_json().encode())
    except Exception:  # subclassed models have no JSON config; the weights still identify them
        h.update(type(model).__qualname__.encode())
    h.update(fingerprint_arrays([np.asarray(w) for w in model.get_weights()]).encode())
    loss = getattr(model, "loss", None)
    if loss:
        h.update(json.dumps(stable_form(loss), sort_keys=True, default=stable_form).encode())
    return h.hexdigest()


def _keras_file_version(path: Path) -> str | None:
    """The Keras version that wrote a ``.keras`` zip (from its metadata.json), if readable."""
    try:
        with zipfile.ZipFile(path) as z:
            meta = json.loads(z.read("metadata.json"))
        return str(meta.get("keras_version", "")) or None
    except (OSError, KeyError, zipfile.BadZipFile, ValueError):
        return None


def classify_path(path: Path) -> ModelSource:
    """Decide the kind of a model file without importing tensorflow."""
    if not path.exists():
        raise ModelError(f"model path {path} does not exist")
    if path.is_dir():
        if not (path / "saved_model.pb").exists():
            raise ModelError(
                f"{path} is a directory without saved_model.pb: give a SavedModel directory, "
                "a .keras/.h5 file or a float .tflite"
            )
        # A Keras SavedModel (tf_keras .save(format="tf")) keeps its layers: fine-tunable.
        return ModelSource("saved_model", path, None, trainable=(path / "keras_metadata.pb").exists())
    suffix = path.suffix.lower()
    if suffix == ".tflite":
        return ModelSource("tflite", path, None, trainable=False)
    if suffix in (".h5", ".hdf5"):
        return ModelSource("keras", path, None, trainable=True)
    if suffix == ".keras":
        version = _keras_file_version(path)
        if version is None:
            raise ModelError(f"{path} is not a readable .keras archive (no metadata.json): is it truncated?")
        kind = "keras" if version.startswith("2.") else "keras3"
        return ModelSource(kind, path, None, trainable=True)
    raise ModelError(
        f"cannot tell what kind of model {path.name} is: use a .keras/.h5 file, a SavedModel "
        "directory or a .tflite file"
    )


def classify_object(obj: Any) -> ModelSource:
    """Decide the kind of an in-memory model from its class's module (or its nearest base
    class's, for a subclassed model defined in the user's module)."""
    module = type(obj).__module__
    for klass in type(obj).__mro__:
        name = klass.__module__
        if name.startswith("tf_keras") or name.startswith("tensorflow.python.keras"):
            return ModelSource("keras", None, obj, trainable=True)
        if name.startswith("keras"):
            return ModelSource("keras3", None, obj, trainable=True)
    raise ModelError(
        f"model is a {module}.{type(obj).__qualname__}: pass a tf_keras Model, a zero-argument "
        "callable returning one, or a path to a .keras/.h5 file, SavedModel directory or float .tflite"
    )


#: Model inputs as given: one array (batch axis first), a list of arrays (one per model
#: input, in the order of the Keras model's inputs, same number of samples), or a dict of
#: arrays keyed by input name.
Inputs = Any


def n_samples(x: Inputs) -> int:
    """Samples in ``x`` (one array, or a list/dict of arrays with the same batch size)."""
    if isinstance(x, Mapping):
        return len(next(iter(x.values())))
    if isinstance(x, list):
        return len(x[0])
    return len(x)


def take(x: Inputs, index: Any) -> Inputs:
    """``x[index]`` of every input."""
    if isinstance(x, Mapping):
        return {k: v[index] for k, v in x.items()}
    if isinstance(x, list):
        return [v[index] for v in x]
    return x[index]


def _is_multi(x: Any, n: int | None) -> bool:
    """Whether ``x`` (a list/tuple) holds one array per model input rather than samples:
    arrays of different shapes, or arrays of ``n`` samples each (``n``: the labels') when the
    list itself is not ``n`` long."""
    if not isinstance(x, (list, tuple)) or len(x) < 2:
        return False
    if not all(hasattr(a, "shape") and len(a.shape) >= 1 for a in x):
        return False
    shapes = {tuple(a.shape) for a in x}
    if len(shapes) > 1:
        return True
    return n is not None and len(x) != n and all(len(a) == n for a in x)


def as_inputs(x: Any, field_name: str, n: int | None = None, dtype: Any = None) -> Inputs:
    """``x`` as one array, a list of arrays or a dict of arrays (see :data:`Inputs`);
    a ModelError when the inputs hold different numbers of samples."""
    def arr(a: Any) -> np.ndarray:
        return np.asarray(a) if dtype is None else np.asarray(a, dtype=dtype)

    if isinstance(x, Mapping):
        if not x:
            raise ModelError(f"{field_name}: x is an empty dict; key it by the model's input names")
        out: Inputs = {str(k): arr(v) for k, v in x.items()}
        sizes = {k: len(v) for k, v in out.items()}
    elif _is_multi(x, n):
        out = [arr(a) for a in x]
        sizes = {f"input {i}": len(v) for i, v in enumerate(out)}
    else:
        return arr(x)
    if len(set(sizes.values())) > 1:
        raise ModelError(f"{field_name}: the model inputs in x hold different numbers of samples "
                         f"({', '.join(f'{k}: {v}' for k, v in sizes.items())}); give the same N for each")
    return out


def _as_xy(value: Any, field_name: str) -> tuple[Inputs, np.ndarray] | None:
    if value is None:
        return None
    if callable(value):
        value = value()
    try:
        x, y = value
    except (TypeError, ValueError):
        raise ModelError(f"{field_name} must be a pair (x, y) of arrays, got {type(value).__name__}") from None
    y = np.asarray(y)
    x = as_inputs(x, field_name, len(y) if y.ndim else None)
    if n_samples(x) != len(y):
        raise ModelError(f"{field_name}: x has {n_samples(x)} samples but y has {len(y)}")
    if len(y) == 0:
        raise ModelError(f"{field_name} is empty")
    return x, y


@dataclass
class ModelUnderTest:
    """A model to optimize and measure, with the data its variants need.

    ``model``: a tf_keras or Keras 3 Model, a zero-argument callable returning one, or a path
    to a ``.keras``/``.h5`` file, a SavedModel directory or a float ``.tflite`` (what each gets:
    :func:`pytest_edgeopt.variants.registry.input_support_table`).
    ``representative_data``: an iterable (or a callable returning one) of input batches,
    used to calibrate ``int8``, ``int8_full``, ``int16x8`` and static AI Edge Quantizer recipes.
    ``train_data``: ``(x, y)`` for quantization-aware training, pruning and clustering.
    ``eval_data``: labelled ``(x, y)`` the metric is computed on. For a model with several
    inputs, ``x`` is a list of arrays (one per input, in the Keras model's input order, same
    N) or a dict keyed by input name (:data:`Inputs`).
    ``metric``: ``"top1"``, ``"top5"``, ``"neg_mse"`` or ``callable(outputs, labels) -> float``
    (higher is better; ``outputs`` is the first output, or a list when the model has several
    outputs and the metric is a callable).
    ``options``: variant knobs for every test of this model (see
    :data:`pytest_edgeopt.variants.registry.DEFAULT_OPTIONS`).
    """

    name: str
    model: Any
    representative_data: Any = None
    train_data: Any = None
    eval_data: Any = None
    metric: str | Callable[[Any, np.ndarray], float] = "top1"
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ModelError("ModelUnderTest needs a non-empty name")
        if isinstance(self.metric, str) and self.metric not in METRICS:
            raise ModelError(f"unknown metric {self.metric!r}: use one of {', '.join(METRICS)} or a callable")
        self._source: ModelSource | None = None
        self._fingerprint: str | None = None
        self._representative: list[np.ndarray] | None = None
        self._train: tuple[np.ndarray, np.ndarray] | None | bool = False
        self._eval: tuple[np.ndarray, np.ndarray] | None | bool = False

    # -- the model -----------------------------------------------------------------
    @property
    def source(self) -> ModelSource:
        """The resolved model (calls a callable ``model`` once)."""
        if self._source is None:
            m = self.model
            if isinstance(m, (str, Path)):
                self._source = classify_path(Path(m))
            else:
                if callable(m) and not hasattr(m, "get_weights"):
                    m = m()
                self._source = classify_object(m)
        return self._source

    @property
    def fingerprint(self) -> str:
        """sha256 identifying the model: file bytes, or architecture and weights."""
        if self._fingerprint is None:
            src = self.source
            self._fingerprint = fingerprint_path(src.path) if src.path else fingerprint_keras(src.obj)
        return self._fingerprint

    # -- the data --------------------------------------------------------------------
    def representative_batches(self, limit: int | None = None) -> list[np.ndarray] | None:
        """Up to ``limit`` representative input batches as float32 arrays (or ``None``); for
        a model with several inputs, each batch is a list (Keras input order) or a dict (by
        input name) of arrays; same-shaped inputs must come as a dict."""
        if self.representative_data is None:
            return None
        if self._representative is None:
            data = self.representative_data
            if callable(data):
                data = data()
            if isinstance(data, np.ndarray):
                data = [data]
            batches: list[np.ndarray] = []
            for b in data:
                if isinstance(b, (list, tuple)) and len(b) == 1:
                    b = b[0]
                # several inputs: a list (Keras input order) or a dict keyed by input name
                batches.append(as_inputs(b, "representative_data", dtype=np.float32))
            if not batches:
                raise ModelError("representative_data yielded no batches")
            self._representative = batches
        return self._representative if limit is None else self._representative[:limit]

    @property
    def train_arrays(self) -> tuple[Inputs, np.ndarray] | None:
        if self._train is False:
            self._train = _as_xy(self.train_data, "train_data")
        return self._train  # type: ignore[return-value]

    @property
    def eval_arrays(self) -> tuple[Inputs, np.ndarray] | None:
        if self._eval is False:
            self._eval = _as_xy(self.eval_data, "eval_data")
        return self._eval  # type: ignore[return-value]

    def input_names(self) -> list[str] | None:
        """The in-memory Keras model's input names, in its order (``None`` for a file: its
        inputs are not read without TensorFlow)."""
        obj = self.source.obj
        try:
            return [str(t.name).split(":")[0] for t in obj.inputs] if obj is not None else None
        except Exception:
            return None

    def data_fingerprint(self, field_name: str, limit: int | None = None) -> str | None:
        """Fingerprint of the data a build used (``representative_data`` up to ``limit``
        batches, ``train_data``), ``None`` when absent."""
        if field_name == "representative_data":
            batches = self.representative_batches(limit)
            return None if batches is None else fingerprint_arrays(batches)
        if field_name == "train_data":
            xy = self.train_arrays
            return None if xy is None else fingerprint_arrays(*xy)
        raise KeyError(field_name)

    @property
    def metric_name(self) -> str:
        return self.metric if isinstance(self.metric, str) else getattr(self.metric, "__name__", "metric")


def score(metric: str | Callable[[Any, np.ndarray], float], outputs: Sequence[np.ndarray], labels: np.ndarray) -> float:
    """The metric of float model outputs against labels (higher is better).

    ``top1``/``top5`` use the first output; labels may be class indices or one-hot.
    """
    if callable(metric):
        return float(metric(outputs[0] if len(outputs) == 1 else list(outputs), labels))
    out = np.asarray(outputs[0])
    labels = np.asarray(labels)
    if metric == "neg_mse":
        return -float(np.mean((out.reshape(labels.shape) - labels) ** 2))
    out = out.reshape(len(out), -1)
    if labels.ndim > 1 and labels.shape[-1] == out.shape[-1] and labels.shape[-1] > 1:
        labels = np.argmax(labels, axis=-1)
    labels = labels.reshape(-1).astype(np.int64)
    k = 1 if metric == "top1" else 5
    top = np.argsort(-out, axis=-1)[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=-1)))
