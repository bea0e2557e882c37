"""The Target protocol: where a built variant runs.

A target is one (kind of execution, device) pair: ``cpu`` on the host, ``android_gpu``
on the phone with serial ``R58M...``, ``edgetpu`` on ``usb:0``. The plugin asks the
``pytest_edgeopt_discover`` hook which devices a target name has, and the
``pytest_edgeopt_make_target`` hook for a :class:`Target` per device; the built-in
targets go through the same hooks, so a farm's conftest can add its own.

Everything here is plain Python: no pytest, no tensorflow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from pytest_edgeopt.profile import Profile
    from pytest_edgeopt.results import LatencyStats



class TargetUnavailable(Exception):
    """Raised by a target (or its discovery) when the device cannot be used.

    The message says what is missing and how to provide it (the option to set,
    the runtime to install). The plugin turns it into a skip, or into a failure
    when the run requires the target (``--edgeopt-require``).
    """


class ModelIncompatible(TargetUnavailable):
    """This model cannot run on this target at all (a float model on an Edge TPU).

    The variant's fault, not the device's: the item skips with the reasons even when the
    target is required, and an fp32 baseline that cannot run on the target is measured on
    the host CPU instead.
    """


class TargetError(Exception):
    """A target failed while running a model (device offline, tool crashed, timeout).

    The message names the device and the step, and quotes the tool's output tail. A fault
    of the machine or the harness: the item errors.
    """


class VariantBroken(TargetError):
    """The variant ran on the target and proved broken: it does not load, crashes at invoke,
    gives NaN/inf outputs. A property of the model, not of the device: the item fails (in its
    call phase), with the root cause and the remedy where one is known.
    """


@dataclass(frozen=True, slots=True)
class Device:
    """One device a target can run on.

    ``kind`` is the device family (``host``, ``android``, ``edgetpu``); ``id`` is what
    addresses it (``host``, an adb serial, ``usb:0``); ``label`` is what test ids show
    (``None`` for the host CPU, whose ids are just ``[int8-cpu]``); ``details`` carries
    identity and connection facts that go into saved results (model, adb server...).
    """

    kind: str
    id: str
    label: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "id": self.id, "label": self.label, "details": dict(self.details)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Device:
        return cls(kind=d["kind"], id=d["id"], label=d.get("label"), details=dict(d.get("details") or {}))


HOST = Device(kind="host", id="host", label=None)


@dataclass(frozen=True, slots=True)
class Discovery:
    """What discovery found for one target name.

    ``devices`` may be empty; then ``missing`` says why (no adb server, no runtime, ...)
    in words a user can act on.
    """

    devices: tuple[Device, ...]
    missing: str | None = None


@dataclass(frozen=True, slots=True)
class LatencyResult:
    """What a target measured when timing a model.

    ``stats`` holds the steady-state samples in microseconds. ``init_ms`` and
    ``first_inference_ms`` are measured separately where the target can (model load
    and the first invoke, which on accelerators loads parameters). ``extras`` carries
    target-specific facts that go into the measurement and the JSON (GPU delegation
    outcome, memory footprint in MB, Edge TPU compile log...), JSON-serialisable.
    ``profile``: warm-up, peak memory, placement and per-op times where the target
    measures them (:class:`~pytest_edgeopt.profile.Profile`).
    """

    stats: LatencyStats
    init_ms: float | None = None
    first_inference_ms: float | None = None
    extras: Mapping[str, Any] = field(default_factory=dict)
    profile: Profile | None = None


@dataclass(frozen=True, slots=True)
class LatencySettings:
    """How long to time: warm-up invokes, then timed invokes until both ``min_samples``
    and ``min_time_s`` are reached, or ``max_samples`` samples or ``max_time_s`` seconds
    (whichever first), with ``threads`` threads. The sample cap keeps saved runs small for
    models that take microseconds: 5,000 samples already pin the median tightly."""

    warmup: int = 10
    min_samples: int = 100
    min_time_s: float = 0.2
    max_time_s: float = 10.0
    threads: int = 1
    max_samples: int = 5000


@runtime_checkable
class Target(Protocol):
    """Runs ``.tflite`` files on one device.

    ``name`` is the target name (``cpu``, ``android_gpu``...), ``device`` the device.
    ``latency`` times the model; ``predict`` runs a batch of float inputs through it and
    returns the float (dequantized) outputs, one array per model output, each with the
    sample axis first. Quantized inputs/outputs are the target's business (see
    :mod:`pytest_edgeopt.tensors`). Both raise :class:`TargetError` on device failures
    and :class:`TargetUnavailable` when the device cannot be used at all.
    """

    name: str
    device: Device

    def latency(self, model: Path, settings: LatencySettings) -> LatencyResult: ...

    def predict(self, model: Path, inputs: np.ndarray) -> Sequence[np.ndarray]: ...

    def close(self) -> None: ...
