"""The per-process state of a pytest-edgeopt run: settings, the builder, targets, the
worker process that runs native code, and the measurements made so far (each variant
measured once per target, fp32 once per target)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from pytest_edgeopt.farm.health import HealthMonitor
from pytest_edgeopt.farm.lease import DeviceLeases
from pytest_edgeopt.measure import observe
from pytest_edgeopt.measurement import Measurement
from pytest_edgeopt.model import ModelUnderTest
from pytest_edgeopt.results import Observation
from pytest_edgeopt.settings import Settings
from pytest_edgeopt.targets.base import HOST, Device, ModelIncompatible, Target
from pytest_edgeopt.variants.builder import Builder, BuiltVariant
from pytest_edgeopt.variants.cache import VariantCache
from pytest_edgeopt.variants.registry import BASELINE
from pytest_edgeopt.workers.pool import WorkerPool, activity

#: Set to 1 to build and measure in the pytest process itself (no worker process): for
#: comparing the cost of workers (benchmarks/workers.py) and for debugging a builder.
IN_PROCESS_ENV = "EDGEOPT_IN_PROCESS"


class EdgeoptSession:
    """Builds and measures on demand, remembering results for the rest of the session.

    ``make_target(name, device)`` creates a Target (the plugin routes it to the
    ``pytest_edgeopt_make_target`` hook); targets are closed by :meth:`close`. Each
    measurement on a device holds the device's lease (:mod:`pytest_edgeopt.farm.lease`: one
    measurement at a time per device across processes) and starts with a health check
    (:mod:`pytest_edgeopt.farm.health`); building never holds a lease.

    Cache misses are built, and host-CPU measurements run, in one worker process
    (:mod:`pytest_edgeopt.workers`), started on first need and replaced after a crash;
    ``in_process=True`` (or ``EDGEOPT_IN_PROCESS=1``) runs them here instead.
    """

    def __init__(self, settings: Settings, make_target: Callable[[str, Device], Target],
                 progress: Callable[[str], None] = lambda msg: None, in_process: bool | None = None) -> None:
        self.settings = settings
        self.progress = progress
        if in_process is None:
            in_process = os.environ.get(IN_PROCESS_ENV, "") not in ("", "0")
        self.workers: WorkerPool | None = None if in_process else WorkerPool(progress)
        self.builder = Builder(VariantCache(settings.cache_dir, rebuild=settings.rebuild), progress, self.workers)
        self._make_target = make_target
        self.leases = DeviceLeases(settings.lease_dir, settings.lease_timeout_s, progress)
        self.health = HealthMonitor(settings.health, progress)
        self._targets: dict[tuple[str, str], Target] = {}
        self._observed: dict[tuple[str, str, str], Observation | BaseException] = {}

    def target(self, name: str, device: Device) -> Target:
        key = (name, device.id)
        if key not in self._targets:
            target = self._make_target(name, device)
            use_workers = getattr(target, "use_workers", None)  # targets that run native code here
            if callable(use_workers):
                use_workers(self.workers)
            self._targets[key] = target
        return self._targets[key]

    def find_target(self, name: str, device_label: str | None) -> Target | None:
        """An open target by name and device label (or id), e.g. for re-measuring."""
        for (tname, _), target in self._targets.items():
            if tname == name and device_label in (target.device.label, target.device.id, None):
                return target
        return None

    def build(self, mut: ModelUnderTest, variant: str, options: Mapping[str, Any] | None = None) -> BuiltVariant:
        token = activity.set(f"{mut.name} {variant}")
        try:
            return self.builder.build(mut, variant, options)
        finally:
            activity.reset(token)

    def observe(self, mut: ModelUnderTest, built: BuiltVariant, target: Target) -> Observation:
        """``built`` measured on ``target``, once per session (a failure is remembered too)."""
        key = (built.key, target.name, target.device.id)
        done = self._observed.get(key)
        if isinstance(done, BaseException):
            raise done
        if done is None:
            where = target.name if target.device.label is None else f"{target.name}/{target.device.label}"
            self.progress(f"measuring {mut.name} {built.name} on {where}")
            label = activity.set(f"{mut.name} {built.name} on {where}")
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
            finally:
                activity.reset(label)
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
        """Close the targets and stop the worker process."""
        for target in self._targets.values():
            try:
                target.close()
            except Exception:  # closing must not hide the run's results
                pass
        self._targets.clear()
        if self.workers is not None:
            self.workers.close()
