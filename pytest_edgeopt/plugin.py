"""pytest11 entry point: options, ini values, markers, fixtures and hooks (kept thin).

State lives in the config's stash (:class:`EdgeoptSession`); the domain modules are plain
Python. Nothing here imports tensorflow: builders import it when a variant is built. Every
pytest run of a project with the plugin installed loads this module, so at start-up it
imports only the light modules that name the options (targets, variants, settings): the
session, the builder, numpy and the reports are imported when an item or an output needs
them (``python benchmarks/startup.py`` measures it).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, NoReturn

import pytest

from pytest_edgeopt.names import TARGET_NAMES, VARIANT_NAMES

if TYPE_CHECKING:  # pragma: no cover
    from pytest_edgeopt.variants.builder import BuiltVariant
    from pytest_edgeopt.farm.inventory import Inventory
    from pytest_edgeopt.measurement import Measurement
    from pytest_edgeopt.model import ModelUnderTest
    from pytest_edgeopt.runs.outputs import Gate, OutputSettings
    from pytest_edgeopt.session import EdgeoptSession
    from pytest_edgeopt.settings import Settings
    from pytest_edgeopt.targets.base import Device, Discovery

SETTINGS = pytest.StashKey["Settings"]()
SESSION = pytest.StashKey["EdgeoptSession"]()
RECORDS = pytest.StashKey[list]()
DISCOVERED = pytest.StashKey[dict]()
MEASUREMENT = pytest.StashKey["Measurement"]()
RECORD = pytest.StashKey[dict]()
BUILD_START = pytest.StashKey[float]()
RECORDER = pytest.StashKey["_Recorder"]()
OUTPUTS = pytest.StashKey["OutputSettings | None"]()
GATE = pytest.StashKey["Gate | None"]()
COMPARISON = pytest.StashKey[Any]()
SAVED = pytest.StashKey["Path | None"]()
FARM = pytest.StashKey["Inventory | None"]()
BY_DEVICE = pytest.StashKey[bool]()

MARKERS = (
    "cpu: run the item's variants on the host CPU (LiteRT interpreter)",
    "android_gpu: run the item's variants on every selected Android device, GPU delegate on (benchmark_model --use_gpu)",
    "android_cpu: run the item's variants on every selected Android device's CPU (benchmark_model, XNNPACK)",
    "edgetpu: run the item's variants on every selected Coral Edge TPU",
    "edgeopt_variants(*names): the variants to parametrize over (default: every variant; unsupported ones skip with the reason)",
    "edgeopt_budget(**budgets): budgets checked on the item's measurement after the test body "
    "(keywords as measurement.check: min_size_reduction, max_accuracy_drop, min_speedup, ...)",
    "edgeopt_options(**knobs): variant knobs for this test (sparsity, clusters, finetune_epochs, learning_rate, "
    "batch_size, calibration_samples, loss, seed)",
)

# Since TF 2.16 tf.keras is Keras 3 unless this is set before tensorflow is imported;
# tfmot only works with Keras 2 (tf_keras). Set it now, before any conftest imports
# tensorflow; a user who wants Keras 3 sets TF_USE_LEGACY_KERAS=0 explicitly.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


# -- converters: a typo is a usage error at start-up ------------------------------------------
def _names(value: str, known: tuple[str, ...] | list[str], what: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    for n in names:
        if n not in known:
            raise argparse.ArgumentTypeError(f"unknown {what} {n!r}; choose from {', '.join(known)}")
    if not names:
        raise argparse.ArgumentTypeError(f"no {what} given")
    return names


def parse_targets(value: str) -> tuple[str, ...]:
    return _names(value, TARGET_NAMES, "target")


def parse_variants(value: str) -> tuple[str, ...]:
    return _names(value, VARIANT_NAMES, "variant")


def _number(kind: type, minimum: float, what: str):
    """An argparse converter to ``kind`` (int or float) of at least ``minimum``."""

    def convert(value: str):
        try:
            n = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not {what}") from None
        if n < minimum:
            raise argparse.ArgumentTypeError(f"{value!r} must be at least {minimum:g}")
        return n

    return convert


_positive_int = _number(int, 1, "a whole number")
_non_negative_int = _number(int, 0, "a whole number")
_seconds = _number(float, 0.0, "a number of seconds")


def _validated(module: str, name: str):
    """An argparse converter from a validator that raises ValueError (imported on first use,
    so the plugin's start-up stays light)."""

    def convert(value: str) -> Any:
        import importlib

        try:
            return getattr(importlib.import_module(module, __package__), name)(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


# (option, ini name, converter, default, help)
_SETTINGS = (
    ("--edgeopt-targets", "edgeopt_targets", parse_targets, None,
     "Targets for items without a target marker, and the only targets marked items run on "
     f"when given: {', '.join(TARGET_NAMES)} (default: cpu)"),
    ("--edgeopt-variants", "edgeopt_variants", parse_variants, None,
     "Only these variants (comma-separated), e.g. fp32,int8 (default: every variant)"),
    ("--edgeopt-require", "edgeopt_require", parse_targets, (),
     "Targets that must run: a missing device fails the item instead of skipping it (nightly runs)"),
    ("--edgeopt-threads", "edgeopt_threads", _positive_int, 1,
     "Interpreter threads for latency measurements on the host CPU (default 1)"),
    ("--edgeopt-warmup", "edgeopt_warmup", _non_negative_int, 10,
     "Warm-up invocations before timing (default 10)"),
    ("--edgeopt-min-samples", "edgeopt_min_samples", _positive_int, 200,
     "Timed invocations at least (default 200)"),
    ("--edgeopt-min-time", "edgeopt_min_time", _seconds, 0.25,
     "Seconds of timed invocations at least (default 0.25)"),
    ("--edgeopt-max-samples", "edgeopt_max_samples", _positive_int, 5000,
     "Stop timing after this many samples even before --edgeopt-min-time (default 5000)"),
    ("--edgeopt-cache-dir", "edgeopt_cache_dir", str, None,
     "Where built variants are cached (default: .edgeopt/cache under the rootdir); cache it in CI"),
    ("--edgeopt-json", "edgeopt_json", str, None,
     "Write every measurement of the session (with raw latency samples and budget outcomes) to this JSON file"),
    ("--edgeopt-html", "edgeopt_html", str, None,
     "Write a self-contained HTML report (table, size vs accuracy with the Pareto front, latency, trends) here"),
    ("--edgeopt-farm", "edgeopt_farm", str, None,
     "Device inventory (TOML): the Android devices (serial or every attached one, adb server HOST:PORT, "
     "benchmark_model, affinity), Edge TPUs and host CPU thread counts to run on; replaces --edgeopt-adb, "
     "--edgeopt-serial and --edgeopt-edgetpu discovery (see docs/farm.md)"),
    ("--edgeopt-max-temperature", "edgeopt_max_temperature", _number(float, 0.0, "degrees C"), 40.0,
     "Measure on an Android device only while its battery is at most this hot, in degrees C (default 40)"),
    ("--edgeopt-max-thermal-status", "edgeopt_max_thermal_status", _non_negative_int, 1,
     "Measure on an Android device only while its thermal status (0 none, 1 light, 2 moderate: throttling, "
     "... 6 shutdown) is at most this (default 1)"),
    ("--edgeopt-min-battery", "edgeopt_min_battery", _non_negative_int, 20,
     "Measure on an Android device only while its battery is at least this charged, in percent (default 20)"),
    ("--edgeopt-cooldown", "edgeopt_cooldown", _seconds, 300.0,
     "Seconds to wait for a device outside those limits to recover before reporting it unhealthy (default 300)"),
    ("--edgeopt-health-poll", "edgeopt_health_poll", _seconds, 10.0,
     "Seconds between readings while waiting for a device to cool down (default 10)"),
    ("--edgeopt-health-interval", "edgeopt_health_interval", _seconds, 30.0,
     "Read a device's health again before a measurement when the last reading is older than this, "
     "in seconds (default 30; 0: before every measurement)"),
    ("--edgeopt-lease-dir", "edgeopt_lease_dir", str, None,
     "Directory of the per-device leases that let one process at a time measure on a device "
     "(default: pytest-edgeopt-leases-USER in the temp directory, shared by every session of the user)"),
    ("--edgeopt-lease-timeout", "edgeopt_lease_timeout", _seconds, 3600.0,
     "Seconds a measurement waits for a device another process is measuring on (default 3600)"),
)


def _adb_address(value: str) -> str:
    """``HOST:PORT`` normalised (``[V6]:PORT`` for IPv6)."""
    from pytest_edgeopt.targets.android.server import parse_adb_address

    host, port = parse_adb_address(value)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


parse_edgetpu_device = _validated(".targets.edgetpu.target", "parse_device")
parse_adb = _validated(".plugin", "_adb_address")
parse_serial = _validated(".targets.android.target", "validate_serial")
parse_affinity = _validated(".targets.android.target", "validate_affinity_mask")


# Target options: (option, ini name, converter, repeatable, default, help). The ini twin of a
# repeatable option is a whitespace-separated list.
_TARGET_SETTINGS = (
    ("--edgeopt-adb", "edgeopt_adb", parse_adb, False, None,
     "adb server for the Android targets as HOST:PORT (default: ANDROID_ADB_SERVER_PORT, else 127.0.0.1:5037)"),
    ("--edgeopt-serial", "edgeopt_serial", parse_serial, True, (),
     "Android device serial to run on (repeatable; default every device in state 'device')"),
    ("--edgeopt-benchmark-model", "edgeopt_benchmark_model", str, False, None,
     "Host path of TFLite's benchmark_model built for the devices' ABI (pushed once per device)"),
    ("--edgeopt-android-threads", "edgeopt_android_threads", _positive_int, False, None,
     "benchmark_model --num_threads on Android (default: --edgeopt-threads)"),
    ("--edgeopt-android-repeats", "edgeopt_android_repeats", _positive_int, False, 5,
     "benchmark_model runs per latency measurement on Android; each run's mean is one sample (default 5)"),
    ("--edgeopt-affinity", "edgeopt_affinity", parse_affinity, False, None,
     "CPU affinity mask in hex for taskset on Android, e.g. f0 for the big cores"),
    ("--edgeopt-step-timeout", "edgeopt_step_timeout", _seconds, False, 300.0,
     "Seconds one adb step (push, benchmark run, pull) may take before it is an error (default 300)"),
    ("--edgeopt-edgetpu", "edgeopt_edgetpu", parse_edgetpu_device, True, (),
     "Edge TPU to run on: usb, usb:N, pci, pci:N or :N (repeatable; default every one found)"),
    ("--edgeopt-edgetpu-compiler", "edgeopt_edgetpu_compiler", str, False, None,
     "Path of edgetpu_compiler (default: edgetpu_compiler on PATH)"),
    ("--edgeopt-edgetpu-library", "edgeopt_edgetpu_library", str, False, "libedgetpu.so.1",
     "The Edge TPU runtime library to load as a TFLite delegate (default libedgetpu.so.1)"),
)


@pytest.hookimpl(wrapper=True)
def pytest_cmdline_main(config: pytest.Config) -> Iterator[Any]:
    """Note, before pytest-xdist turns ``-n N`` into ``--dist load``, whether a run with a
    device inventory left the distribution mode to us (see :func:`pytest_xdist_make_scheduler`)."""
    option = config.option
    config.stash[BY_DEVICE] = bool(
        getattr(option, "numprocesses", None) and getattr(option, "dist", None) == "no"
        and not getattr(option, "distload", False) and _setting(config, "edgeopt_farm"))
    return (yield)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """With a device inventory and ``-n N`` (no ``--dist``), hand out work by device: all
    items of one device (both Android targets of a phone) go to one worker, so each device
    is measured by one worker at a time, its fp32 baseline once, and N workers keep N
    devices busy without queueing for each other's leases. Items of the host CPU are
    handed out one by one. (``--dist loadgroup`` would do this with ``xdist_group`` marks,
    but it relies on rewriting node ids, which pytest 9.2 ignores: pytest-xdist #1386.)"""
    if not config.stash.get(BY_DEVICE, False) or config.stash.get(FARM, None) is None:
        return None
    from xdist.scheduler import LoadScopeScheduling

    from pytest_edgeopt.farm.inventory import device_group

    farm = config.stash[FARM]

    class DeviceScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return device_group(nodeid, farm) or nodeid

    return DeviceScheduling(config, log)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from pytest_edgeopt import hookspec

    pluginmanager.add_hookspecs(hookspec)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("edgeopt", "edge model optimization budgets (pytest-edgeopt)")
    for opt, ini, conv, _default, help_text in _SETTINGS:
        metavar = {"--edgeopt-targets": "T1,T2", "--edgeopt-require": "T1,T2", "--edgeopt-variants": "V1,V2",
                   "--edgeopt-cache-dir": "DIR", "--edgeopt-json": "PATH", "--edgeopt-html": "PATH",
                   "--edgeopt-farm": "PATH", "--edgeopt-lease-dir": "DIR", "--edgeopt-max-temperature": "C",
                   "--edgeopt-min-battery": "PCT"}.get(opt, "S" if conv is _seconds else "N")
        group.addoption(opt, dest=ini, type=conv, default=None, metavar=metavar, help=help_text)
        parser.addini(ini, f"{help_text} [ini twin of {opt}]", type="string", default=None)
    for opt, ini, conv, repeat, _default, help_text in _TARGET_SETTINGS:
        metavar = {"edgeopt_adb": "HOST:PORT", "edgeopt_serial": "SERIAL", "edgeopt_edgetpu": "DEVICE",
                   "edgeopt_android_threads": "N", "edgeopt_android_repeats": "N", "edgeopt_affinity": "HEX",
                   "edgeopt_step_timeout": "S"}.get(ini, "PATH")
        group.addoption(opt, dest=ini, type=conv, default=None, metavar=metavar, help=help_text,
                        action="append" if repeat else "store")
        parser.addini(ini, f"{help_text} [ini twin of {opt}]", type="args" if repeat else "string",
                      default=[] if repeat else None)
    group.addoption("--edgeopt-save", dest="edgeopt_save", metavar="NAME", type=_validated(".runs.store", "validate_name"),
                    help="Save this run under NAME in the storage directory (one file per run)")
    parser.addini("edgeopt_save", "Save every run under this name [ini twin of --edgeopt-save]", default=None)
    group.addoption("--edgeopt-autosave", dest="edgeopt_autosave", action="store_true", default=None,
                    help="Save this run (unnamed) in the storage directory")
    parser.addini("edgeopt_autosave", "Save every run [ini twin of --edgeopt-autosave]", type="bool", default=False)
    group.addoption("--edgeopt-storage", dest="edgeopt_storage", metavar="DIR", default=None,
                    help="Where saved runs live (default .edgeopt/runs under the rootdir)")
    parser.addini("edgeopt_storage", "Saved runs directory [ini twin of --edgeopt-storage]", default=None)
    group.addoption("--edgeopt-csv", dest="edgeopt_csv", metavar="PATH", default=None,
                    help="Export this session's measurements as CSV (.csv) or Parquet (.parquet, needs pyarrow)")
    parser.addini("edgeopt_csv", "CSV export [ini twin of --edgeopt-csv]", default=None)
    group.addoption("--edgeopt-compare", dest="edgeopt_compare", metavar="NAME|last", nargs="?", const="last",
                    default=None, help="Compare with a saved run (default: the last one) and gate on regressions")
    parser.addini("edgeopt_compare", "Baseline run to compare with [ini twin of --edgeopt-compare]", default=None)
    group.addoption("--edgeopt-compare-fail", dest="edgeopt_compare_fail", metavar="EXPR", action="append",
                    default=None, type=_validated(".runs.gate", "parse_tolerance"),
                    help="Fail on a regression beyond a tolerance (repeatable): latency:5%%, size:1%%, "
                         "compressed_size:1%%, accuracy:0.5pt")
    parser.addini("edgeopt_compare_fail", "Regression tolerances [ini twin of --edgeopt-compare-fail]",
                  type="args", default=[])
    group.addoption("--edgeopt-rebuild", action="store_true", default=False,
                    help="Ignore the variant cache and build every variant again (the cache is refreshed)")


def _setting(config: pytest.Config, ini: str) -> Any:
    """The command line's value, else the ini's (converted like the option), else the default."""
    value = config.getoption(ini)
    if value is not None:
        return value
    spec = next(s for s in _SETTINGS if s[1] == ini)
    raw = config.getini(ini)
    if raw in (None, ""):
        return spec[3]
    try:
        return spec[2](str(raw))
    except argparse.ArgumentTypeError as exc:
        raise pytest.UsageError(f"ini {ini} = {raw!r}: {exc}") from None


def _target_options(config: pytest.Config) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for _opt, ini, conv, repeat, default, _help in _TARGET_SETTINGS:
        value = config.getoption(ini)
        if value is None:
            raw = config.getini(ini)
            try:
                value = [conv(str(v)) for v in raw] if repeat else (conv(str(raw)) if raw not in (None, "") else None)
            except argparse.ArgumentTypeError as exc:
                raise pytest.UsageError(f"ini {ini} = {raw!r}: {exc}") from None
        if value in (None, []):
            value = default
        out[ini.removeprefix("edgeopt_")] = tuple(value) if repeat else value
    return out


def _farm_path(config: pytest.Config) -> Path | None:
    """``--edgeopt-farm`` relative to where pytest was invoked; ini ``edgeopt_farm``
    relative to the ini file."""
    value = _setting(config, "edgeopt_farm")
    if not value:
        return None
    base = config.invocation_params.dir if config.getoption("edgeopt_farm") else (
        config.inipath.parent if config.inipath else config.rootpath)
    return Path(base, value)


def settings_from_config(config: pytest.Config) -> Settings:
    from pytest_edgeopt.farm.health import HealthPolicy
    from pytest_edgeopt.settings import Settings
    from pytest_edgeopt.targets.base import LatencySettings

    cache = _setting(config, "edgeopt_cache_dir")
    json_path = _setting(config, "edgeopt_json")
    lease_dir = _setting(config, "edgeopt_lease_dir")
    return Settings(
        targets=_setting(config, "edgeopt_targets"),
        variants=_setting(config, "edgeopt_variants"),
        require=frozenset(_setting(config, "edgeopt_require")),
        cache_dir=(config.rootpath / cache) if cache else config.rootpath / ".edgeopt" / "cache",
        rebuild=bool(config.getoption("edgeopt_rebuild")),
        json_path=Path(json_path) if json_path else None,
        latency=LatencySettings(
            warmup=_setting(config, "edgeopt_warmup"),
            min_samples=_setting(config, "edgeopt_min_samples"),
            min_time_s=_setting(config, "edgeopt_min_time"),
            max_samples=_setting(config, "edgeopt_max_samples"),
            threads=_setting(config, "edgeopt_threads"),
        ),
        target_options=_target_options(config),
        farm=_farm_path(config),
        health=HealthPolicy(
            max_temperature_c=_setting(config, "edgeopt_max_temperature"),
            max_thermal_status=_setting(config, "edgeopt_max_thermal_status"),
            min_battery_pct=_setting(config, "edgeopt_min_battery"),
            cooldown_s=_setting(config, "edgeopt_cooldown"),
            poll_s=_setting(config, "edgeopt_health_poll"),
            interval_s=_setting(config, "edgeopt_health_interval"),
        ),
        lease_dir=config.rootpath / lease_dir if lease_dir else None,
        lease_timeout_s=_setting(config, "edgeopt_lease_timeout"),
    )


_OUTPUT_OPTIONS = ("edgeopt_save", "edgeopt_autosave", "edgeopt_csv", "edgeopt_compare", "edgeopt_compare_fail")


def output_settings(config: pytest.Config) -> OutputSettings | None:
    """What the session leaves behind besides the JSON; ``None`` when nothing is asked for
    (most runs: then :mod:`pytest_edgeopt.runs.outputs` is not even imported)."""

    def opt(name: str) -> Any:
        value = config.getoption(name)
        return value if value not in (None, []) else (config.getini(name) or None)

    def path(value: Any) -> Path | None:
        return None if not value else Path(config.invocation_params.dir, value)

    html = _setting(config, "edgeopt_html")
    if not html and not any(opt(name) for name in _OUTPUT_OPTIONS):
        return None
    from pytest_edgeopt.runs.outputs import OutputSettings

    storage = opt("edgeopt_storage")
    return OutputSettings(
        storage=Path(config.rootpath, storage) if storage else config.rootpath / ".edgeopt" / "runs",
        save=opt("edgeopt_save"), autosave=bool(opt("edgeopt_autosave")), csv=path(opt("edgeopt_csv")),
        html=path(html), compare=opt("edgeopt_compare"),
        tolerances=tuple(str(t) for t in (opt("edgeopt_compare_fail") or ())),
    )


def _progress(config: pytest.Config):
    """A callable writing one line through the terminal reporter, with capture suspended,
    so a long build never looks hung."""

    def say(message: str) -> None:
        tr = config.pluginmanager.get_plugin("terminalreporter")
        if tr is None:
            return
        capman = config.pluginmanager.get_plugin("capturemanager")
        ctx = capman.global_and_fixture_disabled() if capman is not None else contextlib.nullcontext()
        with ctx:
            tr.ensure_newline()
            tr.write_line(f"[edgeopt] {message}")

    return say


def pytest_configure(config: pytest.Config) -> None:
    for line in MARKERS:
        config.addinivalue_line("markers", line)
    # Every setting is checked now (a typo is a usage error at start-up); the Settings
    # object, which imports more of the package, is made on first use (_settings).
    for spec in _SETTINGS:
        _setting(config, spec[1])
    _target_options(config)
    config.stash[RECORDS] = []
    config.stash[DISCOVERED] = {}
    config.stash[FARM] = None
    farm = _farm_path(config)
    if farm is not None:
        from pytest_edgeopt.farm.inventory import InventoryError, load_inventory

        try:
            config.stash[FARM] = load_inventory(farm)
        except InventoryError as exc:
            raise pytest.UsageError(f"pytest-edgeopt: --edgeopt-farm: {exc}") from None
    outputs = config.stash[OUTPUTS] = output_settings(config)
    if outputs is not None and not _is_xdist_worker(config):
        from pytest_edgeopt.runs.outputs import prepare

        try:
            config.stash[GATE] = prepare(outputs)
        except ValueError as exc:
            raise pytest.UsageError(f"pytest-edgeopt: {exc}") from None
    config.stash[RECORDER] = _Recorder(config)
    config.pluginmanager.register(config.stash[RECORDER], "edgeopt-recorder")


def _settings(config: pytest.Config) -> Settings:
    """The run's settings (checked in pytest_configure), made on first use."""
    settings = config.stash.get(SETTINGS, None)
    if settings is None:
        settings = config.stash[SETTINGS] = settings_from_config(config)
    return settings


def _edge(config: pytest.Config) -> EdgeoptSession:
    """The session's builder and measurements, made on first use (not at start-up: it
    imports the builder, the targets and numpy)."""
    edge = config.stash.get(SESSION, None)
    if edge is None:
        from pytest_edgeopt.session import EdgeoptSession

        edge = config.stash[SESSION] = EdgeoptSession(
            _settings(config),
            make_target=lambda name, device: _make_target(config, name, device),
            progress=_progress(config),
        )
    return edge


def _make_target(config: pytest.Config, name: str, device: Device):
    from pytest_edgeopt.targets.base import TargetUnavailable

    target = config.hook.pytest_edgeopt_make_target(config=config, name=name, device=device)
    if target is None:
        raise TargetUnavailable(f"no plugin provides target {name!r} for device {device.id!r}")
    return target


# -- built-in targets, through the same hooks a conftest can implement ------------------------
@pytest.hookimpl(trylast=True)
def pytest_edgeopt_discover(config: pytest.Config, target: str) -> Discovery | None:
    from pytest_edgeopt.targets.base import HOST, Discovery

    options = _settings(config).target_options
    farm = config.stash[FARM]
    if target == "cpu":
        if farm is not None:
            from pytest_edgeopt.farm.inventory import cpu_devices

            return cpu_devices(farm)
        return Discovery((HOST,))
    if target in ("android_gpu", "android_cpu"):
        found = config.stash[DISCOVERED].get("android")
        if found is None:  # one discovery serves both Android targets
            if farm is not None:
                from pytest_edgeopt.farm.inventory import android_devices

                found = android_devices(farm)
            else:
                from pytest_edgeopt.targets.android.target import discover_android

                found = discover_android(options["adb"], options["serial"])
            config.stash[DISCOVERED]["android"] = found
        return found
    if target == "edgetpu":
        if farm is not None:
            from pytest_edgeopt.farm.inventory import edgetpu_devices

            return edgetpu_devices(farm, library=options["edgetpu_library"])
        from pytest_edgeopt.targets.edgetpu.target import discover_edgetpu

        return discover_edgetpu(options["edgetpu"], library=options["edgetpu_library"])
    return None


@pytest.hookimpl(trylast=True)
def pytest_edgeopt_make_target(config: pytest.Config, name: str, device: Device):
    settings = _settings(config)
    options = settings.target_options
    # An inventory's per-device settings (Device.details) win over the run's options.
    details = device.details
    if name == "cpu":
        from pytest_edgeopt.targets.cpu import CpuTarget

        return CpuTarget(name, device, threads=details.get("threads") or settings.latency.threads)
    if name in ("android_gpu", "android_cpu"):
        from pytest_edgeopt.targets.android.target import AndroidTarget
        from pytest_edgeopt.targets.base import TargetUnavailable

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
    if name == "edgetpu":
        from pytest_edgeopt.targets.edgetpu.target import EdgeTpuTarget

        return EdgeTpuTarget(device, name=name, library=options["edgetpu_library"],
                             compiler=details.get("compiler") or options["edgetpu_compiler"],
                             cache_dir=settings.cache_dir, threads=settings.latency.threads)
    return None


def _discover(config: pytest.Config, target: str) -> Discovery:
    cache = config.stash[DISCOVERED]
    if target not in cache:
        from pytest_edgeopt.targets.base import Discovery

        found = config.hook.pytest_edgeopt_discover(config=config, target=target)
        cache[target] = found if found is not None else Discovery((), missing=f"no plugin discovers {target!r} devices")
    return cache[target]


# -- parametrization: variant x target x device ------------------------------------------------
@dataclass(frozen=True, slots=True)
class Case:
    """One parametrization: a variant, and (for measured items) a target and device.
    ``missing`` says why the target has no device (the item skips, or fails if required)."""

    variant: str
    target: str | None = None
    device: Device | None = None
    missing: str | None = None

    @property
    def id(self) -> str:
        parts = [self.variant]
        if self.target:
            parts.append(self.target)
        if self.device is not None and self.device.label:
            parts.append(self.device.label)
        return "-".join(parts)


_TARGET_USERS = ("measurement",)
_VARIANT_USERS = ("optimized_model", "measurement")


def _wants_edgeopt(metafunc: pytest.Metafunc) -> bool:
    if any(name in metafunc.fixturenames for name in _VARIANT_USERS):
        return True
    return any(metafunc.definition.get_closest_marker(m) for m in ("edgeopt_budget", "edgeopt_variants"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "edgeopt_case" not in metafunc.fixturenames or not _wants_edgeopt(metafunc):
        return
    config = metafunc.config
    settings = _settings(config)
    marker = metafunc.definition.get_closest_marker("edgeopt_variants")
    variants = [v for v in (marker.args if marker and marker.args else VARIANT_NAMES) if v in VARIANT_NAMES]
    if settings.variants:
        variants = [v for v in variants if v in settings.variants]
    measured = "measurement" in metafunc.fixturenames or metafunc.definition.get_closest_marker("edgeopt_budget")
    marked = [t for t in TARGET_NAMES if metafunc.definition.get_closest_marker(t)]
    if measured or marked:
        targets = marked or list(settings.targets or ("cpu",))
        if settings.targets and marked:
            targets = [t for t in targets if t in settings.targets]
        cases = []
        for v in variants:
            for t in targets:
                found = _discover(config, t)
                if found.devices:  # an inventory device that is not there: its items skip with the reason
                    cases += [Case(v, t, d, d.details.get("unavailable")) for d in found.devices]
                else:
                    cases.append(Case(v, t, None, found.missing or f"no {t} device found"))
    else:
        cases = [Case(v) for v in variants]
    if not cases:
        # Every variant or target was filtered out: keep one visible, skipped item.
        metafunc.parametrize("edgeopt_case", [pytest.param(None, marks=pytest.mark.skip(
            reason="no variant/target left after --edgeopt-variants/--edgeopt-targets"))], ids=["none"],
            indirect=True)
        return
    metafunc.parametrize("edgeopt_case", cases, ids=[c.id for c in cases], indirect=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    _check_markers(items)
    if getattr(config, "workerinput", {}).get("edgeopt_dist") in ("load", "worksteal"):
        _costliest_builds_first(items)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist, on the controller: tell each worker how work is handed out (a worker's
    own ``dist`` option reads ``no``)."""
    node.workerinput["edgeopt_dist"] = node.config.option.dist


def _costliest_builds_first(items: list[pytest.Item]) -> None:
    """Under pytest-xdist's load distribution, hand out the items whose variants fine-tune
    longest first (VariantSpec.phases: pcqat_int8, then pqat_int8 and cqat_int8, then the
    single-phase ones), so no worker starts a long build while the others finish: the
    longest-first rule for balancing jobs over workers. Every worker sorts its collection
    the same way (the controller requires identical collections); the sort is stable, so
    the other items keep their order, and a serial run keeps the collection order."""
    from pytest_edgeopt.variants.registry import VARIANTS

    def phases(item: pytest.Item) -> int:
        case = getattr(getattr(item, "callspec", None), "params", {}).get("edgeopt_case")
        return VARIANTS[case.variant].phases if isinstance(case, Case) else 0

    items.sort(key=lambda item: -phases(item))


def _check_markers(items: list[pytest.Item]) -> None:
    """Check marker arguments at collection: a typo is a usage error, not 50 failures."""
    if not any(item.get_closest_marker(m) for item in items
               for m in ("edgeopt_variants", "edgeopt_budget", "edgeopt_options")):
        return
    from pytest_edgeopt.budgets.rules import BudgetError, validate as validate_budgets
    from pytest_edgeopt.variants.registry import check_options

    problems: list[str] = []
    for item in items:
        for marker in item.iter_markers("edgeopt_variants"):
            unknown = [v for v in marker.args if v not in VARIANT_NAMES]
            if unknown or marker.kwargs:
                problems.append(f"{item.nodeid}: edgeopt_variants: unknown variant {', '.join(map(repr, unknown or marker.kwargs))}; "
                                f"known: {', '.join(VARIANT_NAMES)}")
        for marker in item.iter_markers("edgeopt_budget"):
            try:
                validate_budgets(marker.kwargs, "edgeopt_budget")
            except BudgetError as exc:
                problems.append(f"{item.nodeid}: {exc}")
            if marker.args:
                problems.append(f"{item.nodeid}: edgeopt_budget takes keywords only, got {marker.args!r}")
        for marker in item.iter_markers("edgeopt_options"):
            try:
                check_options(marker.kwargs, "edgeopt_options")
            except ValueError as exc:
                problems.append(f"{item.nodeid}: {exc}")
    if problems:
        raise pytest.UsageError("pytest-edgeopt: bad marker arguments:\n  " + "\n  ".join(dict.fromkeys(problems)))


# -- budgets declared in edgeopt.toml / [tool.edgeopt] ------------------------------------------
def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.name == "edgeopt.toml" or (
        file_path.name == "pyproject.toml" and b"[tool.edgeopt" in file_path.read_bytes()
    ):
        return BudgetFileModule.from_parent(parent, path=file_path)
    return None


class BudgetFileModule(pytest.Module):
    """A budget file collected like a test module: its tests become ordinary test functions
    (same fixtures, ids, measurements and JSON as budgets written in Python)."""

    def _getobj(self):
        from pytest_edgeopt.budgets.file import BudgetFileError, parse

        try:
            parsed = parse(self.path)
        except BudgetFileError as exc:
            raise self.CollectError(str(exc)) from None
        if parsed is None:
            raise self.CollectError(f"{self.path}: no [tool.edgeopt] table")
        return _budget_module(parsed, self.config.rootpath)


def _budget_module(parsed: Any, root: Path) -> Any:
    import types

    from pytest_edgeopt.budgets.file import BudgetFileError

    module = types.ModuleType(f"edgeopt_budgets_{abs(hash(str(parsed.path)))}")
    module.__file__ = str(parsed.path)

    @pytest.fixture(scope="session", name="edgeopt_model")
    def _model_from_file() -> ModelUnderTest:
        from pytest_edgeopt.model import ModelError

        try:
            return parsed.model_under_test(root)
        except (BudgetFileError, ModelError) as exc:
            _fail(f"{parsed.path}: {exc}")

    module.edgeopt_model = _model_from_file
    for spec in parsed.tests:
        test = _budget_test(spec)
        test = pytest.mark.edgeopt_variants(*spec.variants)(test)
        for target in spec.targets:
            test = getattr(pytest.mark, target)(test)
        setattr(module, spec.name, test)
    return module


def _budget_test(spec: Any):
    def test(measurement: Measurement) -> None:
        __tracebackhide__ = True
        measurement.check(**spec.budgets_for(measurement.variant, measurement.target))

    test.__name__ = test.__qualname__ = spec.name
    test.__doc__ = f"Budgets of {spec.name} from the budget file."
    return test


def _fail(message: str) -> NoReturn:
    """Fail the item with ``message`` alone: no traceback, and no "during handling of the
    above exception" chain when called inside an ``except`` block."""
    __tracebackhide__ = True
    raise pytest.fail.Exception(message, pytrace=False) from None


def _skip(message: str) -> NoReturn:
    __tracebackhide__ = True
    raise pytest.skip.Exception(message) from None


def _unavailable(message: str, required: bool) -> NoReturn:
    """A target that cannot run: skip, or fail when the run requires it."""
    __tracebackhide__ = True
    if required:
        _fail(message + " (required by --edgeopt-require)")
    _skip(message)


# -- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def edgeopt_model() -> ModelUnderTest:
    """The model under test. Override it in your conftest.py (see the README)."""
    pytest.fail(
        "pytest-edgeopt: no edgeopt_model fixture is defined. Define one in conftest.py:\n\n"
        "    import pytest\n"
        "    from pytest_edgeopt import ModelUnderTest\n\n"
        "    @pytest.fixture(scope=\"session\")\n"
        "    def edgeopt_model():\n"
        "        return ModelUnderTest(name=\"my-model\", model=\"path/to/model.keras\",\n"
        "                              representative_data=..., train_data=(x, y), eval_data=(x, y))\n",
        pytrace=False,
    )


@pytest.fixture
def edgeopt_case(request: pytest.FixtureRequest) -> Case | None:
    """This item's variant/target/device (``None`` for items that are not parametrized by edgeopt).

    An item whose target has no device skips here, before anything is built (or fails
    when the target is required)."""
    case = getattr(request, "param", None)
    if case is not None:
        _record(request, case, model=None)
        request.node.stash[BUILD_START] = _edge(request.config).builder.seconds
    if case is not None and case.target and (case.device is None or case.missing):
        _unavailable(f"{case.target}: {case.missing}", case.target in _settings(request.config).require)
    return case


@pytest.fixture
def edgeopt_session(request: pytest.FixtureRequest) -> EdgeoptSession:
    """The session's builder and measurements (for advanced use)."""
    return _edge(request.config)


def _model(request: pytest.FixtureRequest) -> ModelUnderTest:
    from pytest_edgeopt.model import ModelUnderTest

    mut = request.getfixturevalue("edgeopt_model")
    if not isinstance(mut, ModelUnderTest):
        pytest.fail(f"pytest-edgeopt: the edgeopt_model fixture returned {type(mut).__name__}; "
                    "return a pytest_edgeopt.ModelUnderTest", pytrace=False)
    return mut


def _test_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    for marker in reversed(list(request.node.iter_markers("edgeopt_options"))):
        opts.update(marker.kwargs)
    return opts


def _record(request: pytest.FixtureRequest, case: Case, **fields: Any) -> None:
    request.node.stash[RECORD] = {
        "variant": case.variant, "target": case.target,
        "device": (case.device.label or case.device.id) if case.device else None, **fields,
    }


@pytest.fixture
def optimized_model(request: pytest.FixtureRequest, edgeopt_case: Case | None) -> BuiltVariant:
    """The item's variant, built (or taken from the cache): name, path of the .tflite, size
    and gzip-9 size in bytes, full recipe, build time in seconds, and ``from_cache``."""
    if edgeopt_case is None:
        pytest.fail("pytest-edgeopt: optimized_model is parametrized by pytest-edgeopt; this item has no variant",
                    pytrace=False)
    from pytest_edgeopt.model import ModelError
    from pytest_edgeopt.variants.registry import VariantBuildError, VariantUnavailable

    mut = _model(request)
    session = _edge(request.config)
    request.node.stash[RECORD]["model"] = mut.name
    try:
        built = session.build(mut, edgeopt_case.variant, _test_options(request))
    except VariantUnavailable as exc:
        _skip(f"{edgeopt_case.variant}: {exc}")
    except (VariantBuildError, ModelError) as exc:
        _fail(f"{mut.name} {edgeopt_case.variant}: {exc}")
    request.node.stash[RECORD]["built"] = {
        "size_bytes": built.size_bytes, "compressed_size_bytes": built.compressed_size_bytes,
        "from_cache": built.from_cache, "build_seconds": built.build_seconds, "recipe": dict(built.recipe),
    }
    return built


@pytest.fixture
def measurement(request: pytest.FixtureRequest, edgeopt_case: Case | None,
                optimized_model: BuiltVariant) -> Measurement:
    """The item's variant measured on the item's target, against fp32 on the same target."""
    case = edgeopt_case
    assert case is not None and case.target is not None
    from pytest_edgeopt.model import ModelError
    from pytest_edgeopt.targets.base import ModelIncompatible, TargetError, TargetUnavailable
    from pytest_edgeopt.variants.registry import VariantBuildError, VariantUnavailable

    session = _edge(request.config)
    required = case.target in session.settings.require
    assert case.device is not None
    mut = _model(request)
    try:
        target = session.target(case.target, case.device)
        m = session.measure(mut, optimized_model, target)
    except ModelIncompatible as exc:  # the variant's fault, not a missing device: never "required"
        _skip(f"{case.variant} on {case.target}: {exc}")
    except TargetUnavailable as exc:
        _unavailable(f"{case.variant} on {case.target}: {exc}", required)
    except (TargetError, ModelError, VariantBuildError) as exc:
        _fail(f"{mut.name} {case.variant} on {case.target}: {exc}")
    except VariantUnavailable as exc:
        _fail(f"{mut.name}: the fp32 baseline cannot be built: {exc}")
    request.node.stash[MEASUREMENT] = m
    # JUnit XML properties, for CI dashboards that read them.
    d = m.summary()
    request.node.user_properties.extend(
        (f"edgeopt_{k}", d[k]) for k in ("variant", "target", "device", "size_bytes", "compressed_size_bytes",
                                          "size_reduction", "p50_ms", "p90_ms", "speedup", "metric", "accuracy_drop")
        if d[k] is not None)
    return m


@pytest.fixture(autouse=True)
def _edgeopt_budget_marker(request: pytest.FixtureRequest, edgeopt_case: Case | None) -> None:
    """Items with ``edgeopt_budget`` but no ``measurement`` argument still get measured."""
    if edgeopt_case is not None and edgeopt_case.target and request.node.get_closest_marker("edgeopt_budget"):
        request.getfixturevalue("measurement")


# -- checking budgets after the body, and reporting -----------------------------------------------
@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    __tracebackhide__ = True
    result = yield
    m = item.stash.get(MEASUREMENT, None)
    if m is not None:
        for marker in item.iter_markers("edgeopt_budget"):
            m.check(**marker.kwargs)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    rep = yield
    record = item.stash.get(RECORD, None)
    if record is not None and (rep.when == "call" or (rep.when == "setup" and not rep.passed)):
        m = item.stash.get(MEASUREMENT, None)
        reason = None
        if rep.skipped and isinstance(rep.longrepr, tuple):
            reason = rep.longrepr[2].removeprefix("Skipped: ")
        elif rep.failed:
            crash = getattr(rep.longrepr, "reprcrash", None)
            reason = crash.message if crash is not None else str(rep.longrepr)
            for prefix in ("pytest_edgeopt.budgets.rules.BudgetExceeded: ", "Failed: "):
                reason = reason.removeprefix(prefix)
        builder = _edge(item.config).builder
        # A plain dict: it travels from xdist workers to the controller with the report.
        rep.edgeopt = {**record, "test": item.nodeid, "outcome": rep.outcome, "reason": reason,
                       "build_wall_s": builder.seconds - item.stash.get(BUILD_START, builder.seconds),
                       "measurement": m.to_dict() if m is not None else None}
    return rep


class _Recorder:
    """Collects the records that reach this process's reports (on the xdist controller, the
    workers' reports arrive here with their records), and keeps the ``--edgeopt-json`` file
    current while the session runs (each write atomic), so a killed run keeps what it measured."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.records: list[dict] = config.stash[RECORDS]
        self._saved_at = 0.0
        self._save_cost = 0.0

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        record = getattr(report, "edgeopt", None)
        if record is None:
            return
        self.records.append(record)
        # Every record is saved as it arrives; past a few hundred, rewriting the whole file
        # each time grows quadratically, so then at most a tenth of the run goes to saving.
        if len(self.records) <= 300 or time.monotonic() - self._saved_at >= 10 * self._save_cost:
            self.save()

    def path(self, path: Path | None) -> Path | None:
        """A results path relative to where pytest was invoked."""
        if path is None or path.is_absolute():
            return path
        return Path(self.config.invocation_params.dir) / path

    def document(self) -> dict:
        from pytest_edgeopt.runs import terminal as report

        return report.document(self.records, _settings(self.config).to_dict())

    def save(self, doc: dict | None = None) -> None:
        """Write the JSON (when asked for): ``doc``, or the session so far."""
        if _is_xdist_worker(self.config) or not _setting(self.config, "edgeopt_json"):
            return
        json_path = self.path(_settings(self.config).json_path)
        from pytest_edgeopt.runs import terminal as report

        start = time.monotonic()
        report.write_json(json_path, doc if doc is not None else self.document())
        self._saved_at = time.monotonic()
        self._save_cost = self._saved_at - start


def _is_xdist_worker(config: pytest.Config) -> bool:
    return os.environ.get("PYTEST_XDIST_WORKER") is not None


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if RECORDER not in config.stash:  # pytest_configure did not finish (a usage error)
        return
    try:
        if not _is_xdist_worker(config):
            _finish(session)
    finally:
        edge = config.stash.get(SESSION, None)
        if edge is not None:
            edge.close()


def _finish(session: pytest.Session) -> None:
    """The session's outputs: comparison (while targets are open), JSON, saved run, CSV, HTML."""
    config = session.config
    recorder, settings = config.stash[RECORDER], config.stash[OUTPUTS]
    if settings is None:
        recorder.save()
        return
    from pytest_edgeopt.runs import outputs

    gate = config.stash.get(GATE, None)
    doc = recorder.document()
    edge = _edge(config)
    done = outputs.finish(doc, settings, gate, edge, config.rootpath, edge.progress)
    recorder.save(doc)
    config.stash[SAVED] = done.saved
    if done.comparison is not None:
        config.stash[COMPARISON] = done.comparison
        if done.comparison.failed and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if settings.html is not None and doc["measurements"]:
        from pytest_edgeopt.runs.html import write_html

        write_html(settings.html, doc, outputs.history(settings))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if _is_xdist_worker(config):
        return
    if not config.stash.get(RECORDS, None):
        return
    from pytest_edgeopt.runs import terminal as report

    comparison = config.stash.get(COMPARISON, None)
    lines = report.table_lines(config.stash[RECORDS], comparison)
    if not lines:
        return
    terminalreporter.section("edgeopt summary")
    for line in lines:
        terminalreporter.write_line(line)
    from pytest_edgeopt.runs.recommend import recommendation_lines

    advice = recommendation_lines(config.stash[RECORDS])
    if advice:
        terminalreporter.section("edgeopt recommendation")
        for line in advice:
            terminalreporter.write_line(line)
    run = _settings(config)
    devices = report.device_lines(config.stash[RECORDS], run.require)
    if devices:
        terminalreporter.section("edgeopt devices")
        for line in devices:
            terminalreporter.write_line(line)
    if run.json_path is not None:
        terminalreporter.write_line(f"edgeopt: measurements written to {run.json_path}")
    if comparison is not None:
        terminalreporter.section("edgeopt comparison", red=comparison.failed, green=not comparison.failed)
        for line in comparison.lines():
            terminalreporter.write_line(line)
    settings = config.stash[OUTPUTS]
    saved = config.stash.get(SAVED, None)
    if saved is not None:
        terminalreporter.write_line(f"edgeopt: run saved to {saved}")
    if settings is None:
        return
    if settings.html is not None:
        terminalreporter.write_line(f"edgeopt: HTML report written to {settings.html}")
    if settings.csv is not None:
        terminalreporter.write_line(f"edgeopt: measurements exported to {settings.csv}")
