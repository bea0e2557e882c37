"""What the pytest process asks a worker to do: typed, picklable requests and replies.

Each request has ``run(worker)``, executed inside the worker
(:class:`pytest_edgeopt.workers.serve.WorkerState` is ``worker``). A request may define
``for_worker(known)`` to leave out what the worker already holds (a model sent once per
worker, not once per variant).
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_edgeopt.workers.stage import stage

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from pytest_edgeopt.fidelity import SourceRun
    from pytest_edgeopt.model import ModelUnderTest
    from pytest_edgeopt.targets.base import LatencyResult, LatencySettings
    from pytest_edgeopt.variants.builder import BuiltVariant
    from pytest_edgeopt.variants.cache import Entry
    from pytest_edgeopt.variants.registry import VariantSpec
    from pytest_edgeopt.workers.serve import WorkerState


class NotPortable(Exception):
    """The model (or a knob) cannot be sent to a worker process: build in-process instead."""


@dataclass(frozen=True, slots=True)
class PortableModel:
    """A :class:`~pytest_edgeopt.model.ModelUnderTest` as a worker receives it: the model
    file's absolute ``path`` or the in-memory model ``pickled``, the parent's
    ``fingerprint`` (so the worker's cache keys are exactly the parent's), and the data
    fields a build needs resolved to arrays (``representative``: float32 batches;
    ``train``: ``(x, y)``). ``token`` names it in the worker."""

    token: str
    name: str
    path: Path | None
    pickled: bytes | None
    fingerprint: str
    representative: list[Any] | None
    train: tuple[Any, Any] | None
    options: Mapping[str, Any]

    @classmethod
    def of(cls, mut: ModelUnderTest, fields: Sequence[str], pickled: bytes | None = None) -> PortableModel:
        """``mut`` with the data ``fields`` (``representative_data``, ``train_data``) resolved.
        ``pickled``: the in-memory model already pickled (callers keep it per model).
        Raises NotPortable when the in-memory model cannot be pickled."""
        src = mut.source
        if src.path is None and pickled is None:
            pickled = pickle_model(src.obj)
        representative = mut.representative_batches() if "representative_data" in fields else None
        train = mut.train_arrays if "train_data" in fields else None
        token = f"{id(mut)}:{mut.fingerprint}:{','.join(sorted(fields))}"
        return cls(token, mut.name, None if src.path is None else src.path.resolve(), pickled,
                   mut.fingerprint, representative, train, dict(mut.options or {}))

    def restore(self) -> ModelUnderTest:
        """The model under test in the worker (same fingerprint as in the parent). Raises
        NotPortable when the in-memory model cannot be rebuilt here."""
        from pytest_edgeopt.model import ModelUnderTest

        try:
            model: Any = self.path if self.path is not None else pickle.loads(self.pickled or b"")
        except Exception as exc:  # a custom layer the worker cannot rebuild (defined in a conftest)
            raise NotPortable(f"the worker cannot rebuild {self.name} ({type(exc).__name__}: {exc})") from None
        mut = ModelUnderTest(self.name, model, representative_data=self.representative,
                             train_data=self.train, options=self.options)
        mut._fingerprint = self.fingerprint  # the parent's, so keys match without re-hashing
        return mut


def pickle_model(obj: Any) -> bytes:
    """An in-memory model as bytes (tf_keras models pickle through a saved copy), or NotPortable."""
    try:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # a custom layer or an attached closure: any pickling error
        raise NotPortable(f"{type(obj).__name__} cannot be pickled ({type(exc).__name__}: {exc})") from None


@dataclass(frozen=True, slots=True)
class BuildReply:
    """The cache ``entry`` the worker built or found, and every variant it got on the way
    (``nested``: the fp32 a quantized build starts from), for the parent's bookkeeping."""

    entry: Entry
    nested: tuple[BuiltVariant, ...]


@dataclass(frozen=True, slots=True)
class BuildRequest:
    """Build the variant ``spec`` of ``model`` into the cache at ``cache_root`` under ``key``.

    The worker builds with its own :class:`~pytest_edgeopt.variants.builder.Builder` over
    the same store (its cross-process lock holds), started with the parent's tool
    ``versions`` and cache creation time (``created``) so keys and ``--edgeopt-rebuild``
    freshness agree. ``model`` is ``None`` when the worker already holds ``token``."""

    token: str
    model: PortableModel | None
    spec: VariantSpec
    options: Mapping[str, Any]
    material: Mapping[str, Any]
    key: str
    cache_root: Path
    rebuild: bool
    created: float
    versions: Mapping[str, str | None]

    def for_worker(self, known: set[str]) -> BuildRequest:
        if self.token in known:
            return replace(self, model=None)
        known.add(self.token)
        return self

    def run(self, worker: WorkerState) -> BuildReply:
        stage("convert")
        mut = worker.model(self.token, self.model)
        builder = worker.builder(self.cache_root, self.rebuild, self.created, self.versions)
        before = {b.key for b in builder.variants_done()}
        entry = builder.produce(mut, self.spec, self.options, self.material, self.key)
        nested = tuple(b for b in builder.variants_done() if b.key not in before and b.key != self.key)
        return BuildReply(entry, nested)


@dataclass(frozen=True, slots=True)
class LatencyRequest:
    """Time the ``.tflite`` at ``path`` on the host CPU (the whole timed loop in the worker)."""

    path: Path
    settings: LatencySettings

    def run(self, worker: WorkerState) -> LatencyResult:
        from pytest_edgeopt.targets.cpu import measure_latency

        return measure_latency(self.path, self.settings)


@dataclass(frozen=True, slots=True)
class PredictRequest:
    """Run ``inputs`` (float32, batch axis first) through the ``.tflite`` at ``path``
    (``sequence``: in order, state carried; see :func:`pytest_edgeopt.targets.cpu.run_predict`)."""

    path: Path
    inputs: np.ndarray
    threads: int
    sequence: bool = False

    def run(self, worker: WorkerState) -> Sequence[np.ndarray]:
        from pytest_edgeopt.targets.cpu import run_predict

        return run_predict(self.path, self.inputs, self.threads, self.sequence)


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
        from pytest_edgeopt.fidelity import run_source

        stage("load")
        mut = worker.model(self.token, self.model)
        return run_source(mut.source, self.inputs, self.tflite, self.stateful, self.max_diff_rel,
                          worker.memo, mut.fingerprint)
