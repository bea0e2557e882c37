"""The Android targets as a plugin (pytest11 entry point ``edgeopt-android``):
``android_gpu`` and ``android_cpu`` run TFLite's ``benchmark_model`` over adb on every
selected device, GPU delegate on or off. Declares the targets and their options (adb server,
serials, benchmark_model, threads, repeats, affinity, step timeout), discovers the devices
once for both targets (adb, or the inventory's ``[android.*]``) and makes
:class:`~pytest_edgeopt.targets.android.target.AndroidTarget`. Hooks are ``trylast`` (a
conftest wins) and ``optionalhook`` (``-p no:edgeopt`` still works).

Loaded at every pytest start-up: adbutils and numpy are imported only inside the hooks."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pytest_edgeopt.names import TargetSpec
from pytest_edgeopt.options import Option, add_options, positive_int, seconds, validated

if TYPE_CHECKING:  # pragma: no cover
    from pytest_edgeopt.targets.base import Device, Discovery, Target


def _adb_address(value: str) -> str:
    """``HOST:PORT`` normalised (``[V6]:PORT`` for IPv6); ValueError otherwise."""
    from pytest_edgeopt.targets.android.server import parse_adb_address

    host, port = parse_adb_address(value)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


OPTIONS: tuple[Option, ...] = (
    Option("--edgeopt-adb", "edgeopt_adb",
           "adb server for the Android targets as HOST:PORT (default: ANDROID_ADB_SERVER_PORT, else 127.0.0.1:5037)",
           validated(__name__, "_adb_address"), metavar="HOST:PORT"),
    Option("--edgeopt-serial", "edgeopt_serial",
           "Android device serial to run on (repeatable; default every device in state 'device')",
           validated("pytest_edgeopt.targets.android.validation", "validate_serial"), (), "SERIAL",
           kind="repeatable"),
    Option("--edgeopt-benchmark-model", "edgeopt_benchmark_model",
           "Host path of TFLite's benchmark_model built for the devices' ABI (pushed once per device)",
           metavar="PATH"),
    Option("--edgeopt-android-threads", "edgeopt_android_threads",
           "benchmark_model --num_threads on Android (default: --edgeopt-threads)", positive_int, metavar="N"),
    Option("--edgeopt-android-repeats", "edgeopt_android_repeats",
           "benchmark_model runs per latency measurement on Android; each run's mean is one sample (default 5)",
           positive_int, 5, "N"),
    Option("--edgeopt-affinity", "edgeopt_affinity",
           "CPU affinity mask in hex for taskset on Android, e.g. f0 for the big cores",
           validated("pytest_edgeopt.targets.android.validation", "validate_affinity_mask"), metavar="HEX"),
    Option("--edgeopt-step-timeout", "edgeopt_step_timeout",
           "Seconds one adb step (push, benchmark run, pull) may take before it is an error (default 300)",
           seconds, 300.0, "S"),
)

TARGETS = [
    TargetSpec("android_gpu", "run the item's variants on every selected Android device, GPU delegate on "
               "(benchmark_model --use_gpu)", device_kind="android", options=OPTIONS),
    TargetSpec("android_cpu", "run the item's variants on every selected Android device's CPU "
               "(benchmark_model, XNNPACK)", device_kind="android", options=OPTIONS),
]
_NAMES = {spec.name for spec in TARGETS}
#: One discovery serves both Android targets.
_FOUND = pytest.StashKey["Discovery"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser, OPTIONS)


@pytest.hookimpl(optionalhook=True)
def pytest_edgeopt_targets(config: pytest.Config) -> list[TargetSpec]:
    return TARGETS


@pytest.hookimpl(optionalhook=True, trylast=True)
def pytest_edgeopt_discover(config: pytest.Config, target: str) -> Discovery | None:
    if target not in _NAMES:
        return None
    found = config.stash.get(_FOUND, None)
    if found is None:
        from pytest_edgeopt.plugin_session import plugin_session

        session = plugin_session(config)
        if session.farm is not None:
            from pytest_edgeopt.farm.inventory import android_devices

            found = android_devices(session.farm)
        else:
            from pytest_edgeopt.targets.android.discovery import discover_android

            options = session.settings.target_options
            found = discover_android(options["adb"], options["serial"])
        config.stash[_FOUND] = found
    return found


@pytest.hookimpl(optionalhook=True, trylast=True)
def pytest_edgeopt_make_target(config: pytest.Config, name: str, device: Device) -> Target | None:
    if name not in _NAMES:
        return None
    from pytest_edgeopt.plugin_session import plugin_session
    from pytest_edgeopt.targets.android.target import AndroidTarget
    from pytest_edgeopt.targets.base import TargetUnavailable

    settings = plugin_session(config).settings
    options = settings.target_options
    # An inventory's per-device settings (Device.details) win over the run's options.
    details = device.details
    binary = details.get("benchmark_model") or options["benchmark_model"]
    if not binary:
        where = f"benchmark_model in [android.{details['inventory']}] of {settings.farm.name} or " \
            if details.get("inventory") and settings.farm else ""
        raise TargetUnavailable(
            "no benchmark_model binary for the device: build or download TFLite's Android benchmark_model "
            f"for its ABI and set {where}--edgeopt-benchmark-model=PATH (or ini edgeopt_benchmark_model)")
    return AndroidTarget(name, device, adb=details.get("adb_server") or options["adb"],
                         benchmark_model=Path(binary), gpu=name == "android_gpu",
                         threads=details.get("threads") or options["android_threads"] or settings.latency.threads,
                         affinity_mask=details.get("affinity") or options["affinity"],
                         step_timeout_s=options["step_timeout"], repeats=options["android_repeats"])
