"""The host CPU target as a plugin (pytest11 entry point ``edgeopt-cpu``): declares
``cpu`` (the default target), discovers the host (or the inventory's thread counts) and
makes :class:`~pytest_edgeopt.targets.cpu.CpuTarget`. Its hooks are ``trylast`` so a
conftest wins, and ``optionalhook`` so ``-p no:edgeopt`` (no hookspecs) still works.

Loaded at every pytest start-up: it imports the target module (numpy, LiteRT) only
inside the hooks."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from pytest_edgeopt.names import TargetSpec

if TYPE_CHECKING:  # pragma: no cover
    from pytest_edgeopt.targets.base import Device, Discovery, Target

NAME = "cpu"
TARGETS = [TargetSpec(NAME, "run the item's variants on the host CPU (LiteRT interpreter)", device_kind="host",
                      default=True)]


@pytest.hookimpl(optionalhook=True)
def pytest_edgeopt_targets(config: pytest.Config) -> list[TargetSpec]:
    return TARGETS


@pytest.hookimpl(optionalhook=True, trylast=True)
def pytest_edgeopt_discover(config: pytest.Config, target: str) -> Discovery | None:
    if target != NAME:
        return None
    from pytest_edgeopt.plugin_session import plugin_session
    from pytest_edgeopt.targets.base import HOST, Discovery

    farm = plugin_session(config).farm
    if farm is not None:
        from pytest_edgeopt.farm.inventory import cpu_devices

        return cpu_devices(farm)
    return Discovery((HOST,))


@pytest.hookimpl(optionalhook=True, trylast=True)
def pytest_edgeopt_make_target(config: pytest.Config, name: str, device: Device) -> Target | None:
    if name != NAME:
        return None
    from pytest_edgeopt.plugin_session import plugin_session
    from pytest_edgeopt.targets.cpu import CpuTarget

    # An inventory's per-device settings (Device.details) win over the run's options.
    threads = device.details.get("threads") or plugin_session(config).settings.latency.threads
    return CpuTarget(name, device, threads=threads)
