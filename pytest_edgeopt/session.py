"""The per-process state of a pytest-edgeopt run: settings, the builder, targets, and the
measurements made so far (each variant measured once per target, fp32 once per target)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from .builder import Builder, BuiltVariant
from .cache import VariantCache
from .health import HealthMonitor, HealthPolicy
from .lease import DEFAULT_TIMEOUT_S, DeviceLeases
from .measure import observe
from .measurement import Measurement
from .model import ModelUnderTest
from .results import Observation
from .targets.base import HOST, Device, LatencySettings, ModelIncompatible, Target
from .variants.registry import BASELINE


@dataclass(frozen=True, slots=True)
class Settings:
    """What the command line and ini chose. ``targets`` is ``None`` when not given
    (unmarked tests then run on the CPU); ``variants`` is ``None`` for every variant."""

    targets: tuple[str, ...] | None
    variants: tuple[str, ...] | None
    require: frozenset[str]
    cache_dir: Path
    rebuild: bool
    json_path: Path | None
    latency: LatencySettings
    #: Target-specific settings by option name without the ``edgeopt_`` prefix
    #: (``edgetpu``: device strings, ``edgetpu_library``, ``adb``, ``serial``...).
    target_options: dict[str, Any] = field(default_factory=dict)
    #: The device inventory file (``--edgeopt-farm``), when the run has one.
    farm: Path | None = None
    #: When a device is healthy enough to measure on (Android: temperature, battery).
    health: HealthPolicy = field(default_factory=HealthPolicy)
    #: Where device leases live (``None``: :func:`~pytest_edgeopt.lease.default_lease_dir`),
    #: and how long a measurement waits for a device another process is using.
    lease_dir: Path | None = None
    lease_timeout_s: float = DEFAULT_TIMEOUT_S

    def to_dict(self) -> dict[str, Any]:
        return {
            "targets": list(self.targets) if self.targets else None,
            "variants": list(self.variants) if self.variants else None,
            "require": sorted(self.require),
            "cache_dir": str(self.cache_dir),
            "rebuild": self.rebuild,
            "latency": {
                "warmup": self.latency.warmup, "min_samples": self.latency.min_samples,
                "min_time_s": self.latency.min_time_s, "max_time_s": self.latency.max_time_s,
                "max_samples": self.latency.max_samples,
                "threads": self.latency.threads,
            },
            "target_options": dict(self.target_options),
            "farm": str(self.farm) if self.farm else None,
            "health": self.health.to_dict(),
            "lease_dir": str(self.lease_dir) if self.lease_dir else None,
            "lease_timeout_s": self.lease_timeout_s,
        }


class EdgeoptSession:
    """Builds and measures on demand, remembering results for the rest of the session.

    ``make_target(name, device)`` creates a Target (the plugin routes it to the
    ``pytest_edgeopt_make_target`` hook); targets are closed by :meth:`close`. Each
    measurement on a device holds the device's lease (:mod:`pytest_edgeopt.lease`: one
    measurement at a time per device across processes) and starts with a health check
    (:mod:`pytest_edgeopt.health`); building never holds a lease.
    """

    def __init__(self, settings: Settings, make_target: Callable[[str, Device], Target],
                 progress: Callable[[str], None] = lambda msg: None) -> None:
        self.settings = settings
        self.progress = progress
        self.builder = Builder(VariantCache(settings.cache_dir, rebuild=settings.rebuild), progress)
        self._make_target = make_target
        self.leases = DeviceLeases(settings.lease_dir, settings.lease_timeout_s, progress)
        self.health = HealthMonitor(settings.health, progress)
        self._targets: dict[tuple[str, str], Target] = {}
        self._observed: dict[tuple[str, str, str], Observation | BaseException] = {}

    def target(self, name: str, device: Device) -> Target:
        key = (name, device.id)
        if key not in self._targets:
            self._targets[key] = self._make_target(name, device)
        return self._targets[key]

    def find_target(self, name: str, device_label: str | None) -> Target | None:
        """An open target by name and device label (or id), e.g. for re-measuring."""
        for (tname, _), target in self._targets.items():
            if tname == name and device_label in (target.device.label, target.device.id, None):
                return target
        return None

    def build(self, mut: ModelUnderTest, variant: str, options: Mapping[str, Any] | None = None) -> BuiltVariant:
        return self.builder.build(mut, variant, options)

    def observe(self, mut: ModelUnderTest, built: BuiltVariant, target: Target) -> Observation:
        """``built`` measured on ``target``, once per session (a failure is remembered too)."""
        key = (built.key, target.name, target.device.id)
        done = self._observed.get(key)
        if isinstance(done, BaseException):
            raise done
        if done is None:
            where = target.name if target.device.label is None else f"{target.name}/{target.device.label}"
            self.progress(f"measuring {mut.name} {built.name} on {where}")
            try:
                with self.leases.hold(target.device, f"{mut.name} {built.name} on {where}") as lease:
                    conditions = self.health.check(target)
                    done = observe(target, built, mut, self.settings.latency)
                    if lease is not None:  # when, and after how long a wait, the device was ours
                        lease = {**lease, "until": time.time()}
                extras = {"conditions": conditions, "lease": lease}
                done = replace(done, extras={**done.extras, **{k: v for k, v in extras.items() if v is not None}})
            except Exception as exc:
                self._observed[key] = exc
                raise
            self._observed[key] = done
        return done

    def measure(self, mut: ModelUnderTest, built: BuiltVariant, target: Target) -> Measurement:
        """``built`` on ``target`` compared with fp32 measured on the same target."""
        base_built = built if built.name == BASELINE else self.build(mut, BASELINE)
        if built.key == base_built.key:
            obs = self.observe(mut, built, target)
            return Measurement(obs, obs, model_path=built.path)
        obs = self.observe(mut, built, target)
        try:
            baseline = self.observe(mut, base_built, target)
        except ModelIncompatible:
            # fp32 cannot run here (an Edge TPU takes integer models only): compare with fp32
            # on the host CPU, and say so in the figures (baseline target "cpu").
            baseline = self.observe(mut, base_built, self.target("cpu", HOST))
        return Measurement(obs, baseline, model_path=built.path)

    def close(self) -> None:
        for target in self._targets.values():
            try:
                target.close()
            except Exception:  # closing must not hide the run's results
                pass
        self._targets.clear()
