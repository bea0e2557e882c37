"""The Coral Edge TPU target as a plugin (pytest11 entry point ``edgeopt-edgetpu``):
declares ``edgetpu`` and its options (device, compiler, runtime library), discovers the
Edge TPUs (attached, or the inventory's ``[edgetpu.*]``) and makes
:class:`~pytest_edgeopt.targets.edgetpu.target.EdgeTpuTarget`. Hooks are ``trylast`` (a
conftest wins) and ``optionalhook`` (``-p no:edgeopt`` still works).

Loaded at every pytest start-up: the target module is imported only inside the hooks."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from pytest_edgeopt.names import TargetSpec
from pytest_edgeopt.options import Option, add_options, validated

if TYPE_CHECKING:  # pragma: no cover
    from pytest_edgeopt.targets.base import Device, Discovery, Target

NAME = "edgetpu"
OPTIONS: tuple[Option, ...] = (
    Option("--edgeopt-edgetpu", "edgeopt_edgetpu",
           "Edge TPU to run on: usb, usb:N, pci, pci:N or :N (repeatable; default every one found)",
           validated("pytest_edgeopt.targets.edgetpu.target", "parse_device"), (), "DEVICE", kind="repeatable"),
    Option("--edgeopt-edgetpu-compiler", "edgeopt_edgetpu_compiler",
           "Path of edgetpu_compiler (default: edgetpu_compiler on PATH)", metavar="PATH"),
    Option("--edgeopt-edgetpu-library", "edgeopt_edgetpu_library",
           "The Edge TPU runtime library to load as a TFLite delegate (default libedgetpu.so.1)",
           default="libedgetpu.so.1", metavar="PATH"),
)
TARGETS = [TargetSpec(NAME, "run the item's variants on every selected Coral Edge TPU", device_kind="edgetpu",
                      options=OPTIONS)]


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser, OPTIONS)


@pytest.hookimpl(optionalhook=True)
def pytest_edgeopt_targets(config: pytest.Config) -> list[TargetSpec]:
    return TARGETS


@pytest.hookimpl(optionalhook=True, trylast=True)
def pytest_edgeopt_discover(config: pytest.Config, target: str) -> Discovery | None:
    if target != NAME:
        return None
    from pytest_edgeopt.plugin_session import plugin_session

    session = plugin_session(config)
    options = session.settings.target_options
    if session.farm is not None:
        from pytest_edgeopt.farm.inventory import edgetpu_devices

        return edgetpu_devices(session.farm, library=options["edgetpu_library"])
    from pytest_edgeopt.targets.edgetpu.target import discover_edgetpu

    return discover_edgetpu(options["edgetpu"], library=options["edgetpu_library"])


@pytest.hookimpl(optionalhook=True, trylast=True)
def pytest_edgeopt_make_target(config: pytest.Config, name: str, device: Device) -> Target | None:
    if name != NAME:
        return None
    from pytest_edgeopt.plugin_session import plugin_session
    from pytest_edgeopt.targets.edgetpu.target import EdgeTpuTarget

    settings = plugin_session(config).settings
    options = settings.target_options
    return EdgeTpuTarget(device, name=name, library=options["edgetpu_library"],
                         compiler=device.details.get("compiler") or options["edgetpu_compiler"],
                         cache_dir=settings.cache_dir, threads=settings.latency.threads)
