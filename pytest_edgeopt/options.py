"""Every option of pytest-edgeopt in one table, and one resolver.

An :class:`Option` names its command-line flag, its ini twin, the converter both go
through, its default and its help. :func:`add_options` declares a table on pytest's parser;
:func:`resolve` reads one value: the command line wins, else the ini value converted like
the option, else the default (the pattern pytest-benchmark uses). A converter raises
:class:`argparse.ArgumentTypeError`, so a typo on the command line is a usage error at
start-up; a bad ini value is a ``pytest.UsageError`` naming the ini key.

The core's options are :data:`CORE_OPTIONS`; each target plugin declares its own table
(``targets/android/plugin.py``, ``targets/edgetpu/plugin.py``). The ``edgeopt`` command
(:mod:`pytest_edgeopt.runs.cli`) can reuse the converters and defaults here.

Light on purpose: the plugin imports this module at start-up, so validators that live in
heavier modules are imported on first use (:func:`validated`), and pytest itself only when
an ini value is bad.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # pragma: no cover
    import pytest

#: The ``--help`` group every edgeopt option is listed under.
GROUP = ("edgeopt", "edge model optimization budgets (pytest-edgeopt)")

Converter = Callable[[str], Any]
#: ``value``: one value; ``repeatable``: the flag may be given again (ini: whitespace-separated
#: list); ``flag``: a switch without a value (ini: a bool); ``optional``: a value that may be
#: omitted (``--edgeopt-compare`` alone means ``last``).
Kind = Literal["value", "repeatable", "flag", "optional"]


# -- converters: a typo is a usage error at start-up ------------------------------------------
def names(value: str, known: Collection[str] | None, what: str) -> tuple[str, ...]:
    """Comma-separated names; with ``known``, each must be one of them."""
    found = tuple(n.strip() for n in value.split(",") if n.strip())
    if known is not None:
        for n in found:
            if n not in known:
                raise argparse.ArgumentTypeError(f"unknown {what} {n!r}; choose from {', '.join(known)}")
    if not found:
        raise argparse.ArgumentTypeError(f"no {what} given")
    return found


def parse_target_names(value: str) -> tuple[str, ...]:
    """Target names, checked against the targets the plugins declare at configure time
    (:func:`check_names`): which targets exist is known only once every plugin is loaded."""
    return names(value, None, "target")


def check_names(value: tuple[str, ...], known: Collection[str], what: str) -> tuple[str, ...]:
    """``value`` if every name is in ``known``, else ``ArgumentTypeError`` naming the first
    unknown one and the choices."""
    return names(",".join(value), known, what)


def parse_variants(value: str) -> tuple[str, ...]:
    from pytest_edgeopt.names import VARIANT_NAMES

    return names(value, VARIANT_NAMES, "variant")


def number(kind: type, minimum: float, what: str) -> Converter:
    """A converter to ``kind`` (int or float) of at least ``minimum``."""

    def convert(value: str) -> Any:
        try:
            n = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not {what}") from None
        if n < minimum:
            raise argparse.ArgumentTypeError(f"{value!r} must be at least {minimum:g}")
        return n

    convert.__name__ = f"{kind.__name__}_at_least_{minimum:g}"
    return convert


positive_int = number(int, 1, "a whole number")
non_negative_int = number(int, 0, "a whole number")
seconds = number(float, 0.0, "a number of seconds")


def validated(module: str, name: str) -> Converter:
    """A converter from a validator ``module.name`` that raises ValueError, imported on
    first use so start-up stays light."""

    def convert(value: str) -> Any:
        try:
            return getattr(importlib.import_module(module), name)(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = name
    return convert


#: ``--edgeopt-compare-fail`` (and the ``edgeopt compare --fail`` of the CLI): ``latency:5%`` ->
#: a ``Tolerance``.
tolerance_arg = validated("pytest_edgeopt.runs.tolerance", "parse_tolerance")
#: ``--edgeopt-save``: a name a saved run can have.
run_name_arg = validated("pytest_edgeopt.runs.store", "validate_name")
#: ``--edgeopt-cache-dir`` / ``--edgeopt-storage``: a directory, or a URL whose backend is installed.
location_arg = validated("pytest_edgeopt.storage.location", "check_location")
#: ``--edgeopt-shard``: ``I/N`` -> a ``Shard``; ``--edgeopt-run-id``: an id parts of a run share.
shard_arg = validated("pytest_edgeopt.storage.shards", "parse_shard")
run_id_arg = validated("pytest_edgeopt.storage.shards", "validate_run_id")


# -- the table --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Option:
    """One option and its ini twin (``ini=None``: command line only).

    ``dest`` is the ini name (or the flag's name with ``_``): what :func:`resolve` and
    ``config.getoption`` read. ``ini_help`` replaces the default ini help
    ``"<help> [ini twin of <flag>]"``."""

    flag: str
    ini: str | None
    help: str
    convert: Converter = str
    default: Any = None
    metavar: str | None = None
    kind: Kind = "value"
    ini_help: str | None = None
    #: What ``--edgeopt-compare`` alone means (``kind="optional"``).
    const: Any = None

    @property
    def dest(self) -> str:
        return self.ini or self.flag.lstrip("-").replace("-", "_")

    @property
    def key(self) -> str:
        """The name without the ``edgeopt_`` prefix (``Settings.target_options`` keys)."""
        return self.dest.removeprefix("edgeopt_")

    def convert_ini(self, raw: Any) -> Any:
        """An ini value converted like the command line's (``None`` when unset)."""
        if self.kind == "flag":
            return bool(raw) if raw not in (None, "") else None
        if self.kind == "repeatable":
            return tuple(self.convert(str(v)) for v in raw) or None
        if raw in (None, ""):
            return None
        return self.convert(str(raw))


def add_options(parser: pytest.Parser, table: Iterable[Option]) -> None:
    """Declare ``table``'s flags in the edgeopt ``--help`` group, and their ini twins."""
    group = parser.getgroup(*GROUP)
    for opt in table:
        kwargs: dict[str, Any] = {"dest": opt.dest, "default": None, "help": opt.help}
        if opt.kind == "flag":
            kwargs["action"] = "store_true"
        else:
            kwargs["metavar"] = opt.metavar
            if opt.convert is not str:
                kwargs["type"] = opt.convert
            if opt.kind == "repeatable":
                kwargs["action"] = "append"
            elif opt.kind == "optional":
                kwargs.update(nargs="?", const=opt.const)
        group.addoption(opt.flag, **kwargs)
        if opt.ini is not None:
            ini_type: Literal["args", "bool", "string"] = (
                "args" if opt.kind == "repeatable" else "bool" if opt.kind == "flag" else "string")
            parser.addini(opt.ini, opt.ini_help or f"{opt.help} [ini twin of {opt.flag}]", type=ini_type,
                          default={"repeatable": [], "flag": False}.get(opt.kind))


def given(config: pytest.Config, opt: Option) -> bool:
    """Whether the command line gave ``opt`` (relative paths then start from the
    invocation directory, else from the ini file's)."""
    return config.getoption(opt.dest) not in (None, [])


def resolve(config: pytest.Config, opt: Option) -> Any:
    """The command line's value, else the ini's (converted like the option), else the
    default. Repeatable options give a tuple. A bad ini value is a ``pytest.UsageError``."""
    value = config.getoption(opt.dest)
    if value not in (None, []):
        return tuple(value) if opt.kind == "repeatable" else value
    if opt.ini is not None:
        raw = config.getini(opt.ini)
        try:
            value = opt.convert_ini(raw)
        except argparse.ArgumentTypeError as exc:
            import pytest

            raise pytest.UsageError(f"ini {opt.ini} = {raw!r}: {exc}") from None
        if value is not None:
            return value
    return opt.default


def resolve_all(config: pytest.Config, table: Iterable[Option]) -> dict[str, Any]:
    """Every option of ``table`` resolved, by ``dest``."""
    return {opt.dest: resolve(config, opt) for opt in table}


def by_dest(table: Iterable[Option]) -> dict[str, Option]:
    return {opt.dest: opt for opt in table}


CORE_OPTIONS: tuple[Option, ...] = (
    Option("--edgeopt-targets", "edgeopt_targets",
           "Targets for items without a target marker, and the only targets marked items run on "
           "when given: any target an installed plugin declares (pytest --markers lists them; default: the "
           "host CPU)", parse_target_names, metavar="T1,T2"),
    Option("--edgeopt-variants", "edgeopt_variants",
           "Only these variants (comma-separated), e.g. fp32,int8 (default: every variant)",
           parse_variants, metavar="V1,V2"),
    Option("--edgeopt-require", "edgeopt_require",
           "Targets that must run: a missing device fails the item instead of skipping it (nightly runs)",
           parse_target_names, (), metavar="T1,T2"),
    Option("--edgeopt-threads", "edgeopt_threads",
           "Interpreter threads for latency measurements on the host CPU (default 1)", positive_int, 1, "N"),
    Option("--edgeopt-warmup", "edgeopt_warmup", "Warm-up invocations before timing (default 10)",
           non_negative_int, 10, "N"),
    Option("--edgeopt-min-samples", "edgeopt_min_samples", "Timed invocations at least (default 200)",
           positive_int, 200, "N"),
    Option("--edgeopt-min-time", "edgeopt_min_time", "Seconds of timed invocations at least (default 0.25)",
           seconds, 0.25, "S"),
    Option("--edgeopt-max-samples", "edgeopt_max_samples",
           "Stop timing after this many samples even before --edgeopt-min-time (default 5000)",
           positive_int, 5000, "N"),
    Option("--edgeopt-cache-dir", "edgeopt_cache_dir",
           "Where built variants are cached (default: .edgeopt/cache under the rootdir); cache it in CI. A URL "
           "(s3://bucket/prefix, gs://..., file:///shared/dir) is a cache shared by runners, mirrored in "
           ".edgeopt/cache (see docs/ci.md)", location_arg, metavar="DIR|URL"),
    Option("--edgeopt-json", "edgeopt_json",
           "Write every measurement of the session (with raw latency samples and budget outcomes) to this JSON file",
           metavar="PATH"),
    Option("--edgeopt-html", "edgeopt_html",
           "Write a self-contained HTML report (table, size vs accuracy with the Pareto front, latency, trends) here",
           metavar="PATH"),
    Option("--edgeopt-farm", "edgeopt_farm",
           "Device inventory (TOML): the Android devices (serial or every attached one, adb server HOST:PORT, "
           "benchmark_model, affinity), Edge TPUs and host CPU thread counts to run on; replaces --edgeopt-adb, "
           "--edgeopt-serial and --edgeopt-edgetpu discovery (see docs/farm.md)", metavar="PATH"),
    Option("--edgeopt-max-temperature", "edgeopt_max_temperature",
           "Measure on an Android device only while its battery is at most this hot, in degrees C (default 40)",
           number(float, 0.0, "degrees C"), 40.0, "C"),
    Option("--edgeopt-max-thermal-status", "edgeopt_max_thermal_status",
           "Measure on an Android device only while its thermal status (0 none, 1 light, 2 moderate: throttling, "
           "... 6 shutdown) is at most this (default 1)", non_negative_int, 1, "N"),
    Option("--edgeopt-min-battery", "edgeopt_min_battery",
           "Measure on an Android device only while its battery is at least this charged, in percent (default 20)",
           non_negative_int, 20, "PCT"),
    Option("--edgeopt-cooldown", "edgeopt_cooldown",
           "Seconds to wait for a device outside those limits to recover before reporting it unhealthy (default 300)",
           seconds, 300.0, "S"),
    Option("--edgeopt-health-poll", "edgeopt_health_poll",
           "Seconds between readings while waiting for a device to cool down (default 10)", seconds, 10.0, "S"),
    Option("--edgeopt-health-interval", "edgeopt_health_interval",
           "Read a device's health again before a measurement when the last reading is older than this, "
           "in seconds (default 30; 0: before every measurement)", seconds, 30.0, "S"),
    Option("--edgeopt-lease-dir", "edgeopt_lease_dir",
           "Directory of the per-device leases that let one process at a time measure on a device "
           "(default: pytest-edgeopt-leases-USER in the temp directory, shared by every session of the user)",
           metavar="DIR"),
    Option("--edgeopt-lease-timeout", "edgeopt_lease_timeout",
           "Seconds a measurement waits for a device another process is measuring on (default 3600)",
           seconds, 3600.0, "S"),
    Option("--edgeopt-save", "edgeopt_save", "Save this run under NAME in the storage directory (one file per run)",
           run_name_arg, metavar="NAME",
           ini_help="Save every run under this name [ini twin of --edgeopt-save]"),
    Option("--edgeopt-autosave", "edgeopt_autosave", "Save this run (unnamed) in the storage directory",
           default=False, kind="flag", ini_help="Save every run [ini twin of --edgeopt-autosave]"),
    Option("--edgeopt-storage", "edgeopt_storage",
           "Where saved runs live (default .edgeopt/runs under the rootdir); a URL (s3://bucket/prefix, gs://..., "
           "file://...) keeps a team's runs in one place", location_arg,
           metavar="DIR|URL", ini_help="Saved runs directory or URL [ini twin of --edgeopt-storage]"),
    Option("--edgeopt-shard", "edgeopt_shard",
           "Run shard I of N (1-based, e.g. 2/4): this CI job takes its share of the inventory's devices and of "
           "the variant builds, and saves its part of the run under --edgeopt-run-id", shard_arg, metavar="I/N",
           ini_help="Shard of the run [ini twin of --edgeopt-shard]"),
    Option("--edgeopt-run-id", "edgeopt_run_id",
           "The id the shards of one run share (default: $EDGEOPT_RUN_ID, $GITHUB_RUN_ID, $CI_PIPELINE_ID)",
           run_id_arg, metavar="ID", ini_help="Run id of a sharded run [ini twin of --edgeopt-run-id]"),
    Option("--edgeopt-csv", "edgeopt_csv",
           "Export this session's measurements as CSV (.csv) or Parquet (.parquet, needs pyarrow)",
           metavar="PATH", ini_help="CSV export [ini twin of --edgeopt-csv]"),
    Option("--edgeopt-compare", "edgeopt_compare",
           "Compare with a saved run (default: the last one) and gate on regressions", metavar="NAME|last",
           kind="optional", const="last", ini_help="Baseline run to compare with [ini twin of --edgeopt-compare]"),
    Option("--edgeopt-compare-fail", "edgeopt_compare_fail",
           "Fail on a regression beyond a tolerance (repeatable): latency:5%%, size:1%%, "
           "compressed_size:1%%, accuracy:0.5pt; faster:20%% (an accelerator row got that much faster), "
           "placement:0ops (more ops off the accelerator; the default once any tolerance is given)",
           tolerance_arg, (),
           "EXPR", kind="repeatable", ini_help="Regression tolerances [ini twin of --edgeopt-compare-fail]"),
    Option("--edgeopt-ab-budget", "edgeopt_ab_budget",
           "Seconds the gate's A/B re-measurements may take at the end of the session; rows left over keep "
           "their two-run verdicts and are named (default: no limit)", seconds, None, "S",
           ini_help="A/B re-measurement budget in seconds [ini twin of --edgeopt-ab-budget]"),
    Option("--edgeopt-rebuild", None,
           "Ignore the variant cache and build every variant again (the cache is refreshed)",
           default=False, kind="flag"),
)


def farm_path(config: pytest.Config) -> Path | None:
    """``--edgeopt-farm`` relative to where pytest was invoked; ini ``edgeopt_farm``
    relative to the ini file."""
    opt = by_dest(CORE_OPTIONS)["edgeopt_farm"]
    value = resolve(config, opt)
    if not value:
        return None
    base = config.invocation_params.dir if given(config, opt) else (
        config.inipath.parent if config.inipath else config.rootpath)
    return Path(base, value)
