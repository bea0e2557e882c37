"""A model under test as a worker process receives it (:class:`PortableModel`), and the error
that says it cannot be sent (:class:`NotPortable`: the caller then works in-process).

Requests themselves live beside the code they run (``BuildRequest`` in
:mod:`pytest_edgeopt.variants.builder`, ``LatencyRequest``/``PredictRequest`` in
:mod:`pytest_edgeopt.targets.cpu`, ``FidelityRequest`` in :mod:`pytest_edgeopt.fidelity`):
any picklable object with ``run(worker)``, executed inside the worker
(:class:`pytest_edgeopt.workers.serve.WorkerState` is ``worker``). A request may define
``for_worker(known)`` to leave out what the worker already holds (a model sent once per
worker, not once per variant). So the worker package imports none of them.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from pytest_edgeopt.model import ModelUnderTest


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
