"""The device farm inventory: the phones, Edge TPUs and host CPU settings a run measures on.

A TOML file (``--edgeopt-farm=PATH``, ini ``edgeopt_farm``); each entry's table name is its
label, which test ids show (``test_budgets[int8-android_gpu-pixel8]``)::

    [android]                                   # plain keys here are defaults for every entry
    benchmark_model = "bin/android_aarch64_benchmark_model"   # relative to this file

    [android.pixel8]
    serial = "38101FDJH00ABC"                   # an adb serial, or "*": every attached device
    adb = "farm-a.lan:5037"                     # the adb server that reaches it (HOST:PORT)
    affinity = "f0"                             # taskset mask of the big cores
    threads = 4                                 # benchmark_model --num_threads

    [android.lab-b]
    serial = "*"                                # labelled lab-b-<serial>
    adb = "farm-b.lan:5037"

    [edgetpu.coral-usb]
    device = "usb:0"
    compiler = "/usr/bin/edgetpu_compiler"

    [cpu]
    threads = [1, 4]                            # one host "device" per thread count

Devices on other hosts are reached through those hosts' adb servers (``adb -a -P PORT
server nodaemon`` there, ``HOST:PORT`` here): no protocol of our own. Edge TPUs are the
ones plugged into the host that runs pytest.

:func:`load_inventory` validates everything it can without a device and raises
:class:`InventoryError` (a ``ValueError``) as ``PATH:LINE: table.field: problem``. The
discovery functions turn entries into :class:`~pytest_edgeopt.targets.base.Device`\\ s; an
entry whose device is not there still yields one, with ``details["unavailable"]`` saying
why, so test ids stay the same whether or not a phone is attached.

Plain Python (no pytest).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from pytest_edgeopt.budgets.file import _line_of
from pytest_edgeopt.targets.base import HOST, Device, Discovery

#: An Android entry's ``serial`` that stands for every device in state ``device`` on its server.
EVERY_DEVICE = "*"
ANDROID_FIELDS = ("serial", "adb", "benchmark_model", "affinity", "threads")
EDGETPU_FIELDS = ("device", "compiler")
CPU_FIELDS = ("threads",)
TABLES = ("android", "edgetpu", "cpu")
#: Labels go into test ids, xdist group names and file names.
_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class InventoryError(ValueError):
    """The inventory is malformed: ``PATH:LINE: table.field: problem``."""


@dataclass(frozen=True, slots=True)
class AndroidEntry:
    """``[android.LABEL]``: one phone (``serial``), or every phone its adb server lists
    (``serial = "*"``). ``adb`` is ``HOST:PORT`` (``None``: the default server);
    ``benchmark_model`` a host path, absolute; ``affinity`` a hex ``taskset`` mask;
    ``threads`` benchmark_model's ``--num_threads``; ``line`` where the entry starts."""

    label: str
    serial: str
    adb: str | None = None
    benchmark_model: Path | None = None
    affinity: str | None = None
    threads: int | None = None
    line: int | None = None

    @property
    def every(self) -> bool:
        return self.serial == EVERY_DEVICE


@dataclass(frozen=True, slots=True)
class EdgeTpuEntry:
    """``[edgetpu.LABEL]``: an Edge TPU of this host (``usb:0``, ``pci:0``...) and the
    ``edgetpu_compiler`` to compile for it (``None``: the run's)."""

    label: str
    device: str
    compiler: Path | None = None
    line: int | None = None


@dataclass(frozen=True, slots=True)
class Inventory:
    """A loaded inventory. ``cpu_threads`` empty: the run's ``--edgeopt-threads``."""

    path: Path
    android: tuple[AndroidEntry, ...] = ()
    edgetpu: tuple[EdgeTpuEntry, ...] = ()
    cpu_threads: tuple[int, ...] = ()

    def where(self, entry: AndroidEntry | EdgeTpuEntry) -> str:
        """``farm.toml [android.pixel8]``: how messages name an entry."""
        kind = "android" if isinstance(entry, AndroidEntry) else "edgetpu"
        return f"{self.path.name} [{kind}.{entry.label}]"


# -- loading ------------------------------------------------------------------------------------


class _Checker:
    """Raises :class:`InventoryError` naming the line of a table's field."""

    def __init__(self, path: Path, text: str) -> None:
        self.path, self.text = path, text

    def fail(self, table: str, key: str | None, message: str) -> InventoryError:
        line = _line_of(self.text, table, key) if table else self._top_level_line(key or "")
        where = f"{self.path}:{line}" if line else str(self.path)
        return InventoryError(f"{where}: {'.'.join(p for p in (table, key) if p)}: {message}")

    def _top_level_line(self, key: str) -> int | None:
        """A top-level table's line: ``[key]``, ``key = ...``, or its first ``[key.sub]``."""
        found = _line_of(self.text, key) or _line_of(self.text, "", key)
        if found is None:
            header = re.compile(rf'^\s*\[\s*"?{re.escape(key)}"?\s*\.')
            found = next((n for n, line in enumerate(self.text.splitlines(), 1) if header.match(line)), None)
        return found

    def check(self, table: str, key: str, value: Any, convert: Callable[[Any], Any]) -> Any:
        try:
            return convert(value)
        except (ValueError, TypeError) as exc:
            raise self.fail(table, key, str(exc)) from None

    def known(self, table: str, values: dict[str, Any], fields: tuple[str, ...], allow_tables: bool = False) -> None:
        for key, value in values.items():
            if allow_tables and isinstance(value, dict):
                continue
            if key not in fields:
                raise self.fail(table, key, f"unknown field; known: {', '.join(fields)}")


def _string(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"must be a non-empty string, not {value!r}")
    return value.strip()


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"must be a whole number >= 1, not {value!r}")
    return value


def _path(base: Path) -> Callable[[Any], Path]:
    def convert(value: Any) -> Path:
        p = Path(_string(value)).expanduser()
        return p if p.is_absolute() else (base / p).resolve()

    return convert


def _adb(value: Any) -> str:
    from pytest_edgeopt.targets.android.server import format_adb_address, parse_adb_address

    return format_adb_address(*parse_adb_address(_string(value)))


def _serial(value: Any) -> str:
    from pytest_edgeopt.targets.android.validation import validate_serial

    s = _string(value)
    return s if s == EVERY_DEVICE else validate_serial(s)


def _affinity(value: Any) -> str:
    from pytest_edgeopt.targets.android.validation import validate_affinity_mask

    return validate_affinity_mask(_string(value))


def _edgetpu_device(value: Any) -> str:
    from pytest_edgeopt.targets.edgetpu.target import parse_device

    return parse_device(_string(value))


def _thread_counts(value: Any) -> tuple[int, ...]:
    counts = tuple(_count(v) for v in value) if isinstance(value, list) else (_count(value),)
    if not counts:
        raise ValueError("must be a thread count or a non-empty list of them")
    if len(set(counts)) != len(counts):
        raise ValueError(f"lists a thread count twice: {list(value)}")
    return counts


def load_inventory(path: str | Path) -> Inventory:
    """Read and validate the inventory at ``path``; :class:`InventoryError` naming the
    line and the field of the first problem (also for a missing file or bad TOML)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise InventoryError(f"{path}: cannot read the device inventory: {exc.strerror or exc}") from None
    return parse_inventory(text, path)


def parse_inventory(text: str, path: Path) -> Inventory:
    """The inventory in ``text`` (``path`` names it in messages and anchors relative paths)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"at line (\d+)", str(exc))
        raise InventoryError(f"{path}:{m.group(1) if m else '?'}: invalid TOML: {exc}") from None
    c = _Checker(path, text)
    for table, value in data.items():
        if table not in TABLES:
            raise c.fail("", table, f"unknown table; known: {', '.join(TABLES)}")
        if not isinstance(value, dict):
            raise c.fail("", table, f"must be a table ([{table}]), not {type(value).__name__}")
    base = path.parent
    labels: dict[str, str] = {}

    def entries(kind: str, fields: tuple[str, ...], converters: dict[str, Callable[[Any], Any]],
                missing: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """``(label, table, values)`` of each ``[kind.LABEL]``, the plain keys of ``[kind]``
        as defaults (every field but the first, which each entry must have)."""
        section = data.get(kind, {})
        c.known(kind, section, fields[1:], allow_tables=True)
        defaults = {k: c.check(kind, k, v, converters[k]) for k, v in section.items() if not isinstance(v, dict)}
        for name, entry in section.items():
            if not isinstance(entry, dict):
                continue
            table = f"{kind}.{name}"
            if not _LABEL_RE.match(name):
                raise c.fail(table, None, f"label {name!r} must be 1-64 letters, digits, '.', '_' or '-', "
                                          "starting with a letter or digit (it goes into test ids)")
            if name in labels:
                raise c.fail(table, None, f"label {name!r} is already used by [{labels[name]}.{name}]")
            labels[name] = kind
            c.known(table, entry, fields)
            if fields[0] not in entry:
                raise c.fail(table, fields[0], f"missing ({missing})")
            yield name, table, {**defaults, **{k: c.check(table, k, v, converters[k]) for k, v in entry.items()}}

    android: list[AndroidEntry] = []
    seen: dict[tuple[str | None, str], str] = {}
    converters = {"serial": _serial, "adb": _adb, "benchmark_model": _path(base), "affinity": _affinity,
                  "threads": _count}
    for label, table, values in entries("android", ANDROID_FIELDS, converters,
                                        f"an adb serial, or {EVERY_DEVICE!r} for every attached device"):
        e = AndroidEntry(label=label, line=_line_of(text, table), **values)
        if (e.adb, e.serial) in seen:
            raise c.fail(table, "serial", f"{e.serial!r} on adb server {e.adb or 'default'} is already "
                                          f"[android.{seen[e.adb, e.serial]}]")
        seen[e.adb, e.serial] = label
        android.append(e)

    edgetpu: list[EdgeTpuEntry] = []
    tpus: dict[str, str] = {}
    for label, table, values in entries("edgetpu", EDGETPU_FIELDS, {"device": _edgetpu_device, "compiler": _path(base)},
                                        "usb, usb:N, pci, pci:N or :N"):
        tpu = EdgeTpuEntry(label=label, line=_line_of(text, table), **values)
        if tpu.device in tpus:
            raise c.fail(table, "device", f"{tpu.device!r} is already [edgetpu.{tpus[tpu.device]}]")
        tpus[tpu.device] = label
        edgetpu.append(tpu)

    section = data.get("cpu", {})
    c.known("cpu", section, CPU_FIELDS)
    threads = c.check("cpu", "threads", section["threads"], _thread_counts) if "threads" in section else ()
    return Inventory(path=path, android=tuple(android), edgetpu=tuple(edgetpu), cpu_threads=threads)


# -- discovery ----------------------------------------------------------------------------------


def _absent(kind: str, id: str, label: str, reason: str, **details: Any) -> Device:
    return Device(kind=kind, id=id, label=label, details={**details, "inventory": label, "unavailable": reason})


def android_devices(inventory: Inventory, *, timeout_s: float = 30.0) -> Discovery:
    """The inventory's phones, asked of their adb servers (one listing per entry).

    A named serial that is not attached in state ``device`` still yields a Device (its
    label, ``details["unavailable"]`` the reason naming the entry); a ``"*"`` entry yields
    every device its server lists in state ``device`` except the serials other entries
    name, labelled ``LABEL-<serial>``, or one unavailable Device when there is none.
    Each device's ``details`` carry its entry's ``benchmark_model``, ``affinity`` and
    ``threads`` besides what :func:`~pytest_edgeopt.targets.android.discovery.discover_android` reads.
    """
    from pytest_edgeopt.targets.android.discovery import discover_android
    from pytest_edgeopt.targets.android.server import default_adb_address
    from pytest_edgeopt.targets.android.validation import sanitize_label

    if not inventory.android:
        return Discovery((), missing=f"the device inventory {inventory.path} lists no Android device "
                                     "(add an [android.LABEL] table with serial and adb)")
    named = {(e.adb or default_adb_address(), e.serial) for e in inventory.android if not e.every}
    devices: list[Device] = []
    for e in inventory.android:
        adb = e.adb or default_adb_address()
        extra = {k: v for k, v in (("benchmark_model", str(e.benchmark_model) if e.benchmark_model else None),
                                   ("affinity", e.affinity), ("threads", e.threads)) if v is not None}
        found = discover_android(adb, () if e.every else (e.serial,), timeout_s=timeout_s)
        if e.every:
            mine = [d for d in found.devices if (adb, d.id) not in named]
            for d in mine:
                label = f"{e.label}-{sanitize_label(d.id)}"
                devices.append(replace(d, label=label, details={**d.details, **extra, "inventory": e.label}))
            if not mine:
                why = found.missing or f"every device on the adb server at {adb} is named by another entry"
                devices.append(_absent("android", EVERY_DEVICE, e.label, f"{inventory.where(e)}: {why}",
                                       adb_server=adb))
        elif found.devices:
            (d,) = found.devices
            devices.append(replace(d, label=e.label, details={**d.details, **extra, "inventory": e.label}))
        else:
            devices.append(_absent("android", e.serial, e.label, f"{inventory.where(e)}: {found.missing}",
                                   adb_server=adb, serial=e.serial))
    return Discovery(tuple(devices))


def edgetpu_devices(inventory: Inventory, *, library: str) -> Discovery:
    """The inventory's Edge TPUs; unavailable (with the reason) when the runtime
    ``library`` does not load."""
    from pytest_edgeopt.targets.edgetpu.target import runtime_error, runtime_missing

    if not inventory.edgetpu:
        return Discovery((), missing=f"the device inventory {inventory.path} lists no Edge TPU "
                                     "(add an [edgetpu.LABEL] table with device)")
    err = runtime_error(library)
    out = []
    for e in inventory.edgetpu:
        details = {"source": "inventory", **({"compiler": str(e.compiler)} if e.compiler else {})}
        if err is not None:
            out.append(_absent("edgetpu", e.device, e.label, f"{inventory.where(e)}: {runtime_missing(library, err)}",
                               **details))
        else:
            out.append(Device(kind="edgetpu", id=e.device, label=e.label, details={**details, "inventory": e.label}))
    return Discovery(tuple(out))


def cpu_devices(inventory: Inventory) -> Discovery:
    """The host CPU once per thread count of ``[cpu] threads`` (labelled ``4t``), or the
    host with the run's threads when the inventory gives none (or one count: no label)."""
    counts = inventory.cpu_threads
    if not counts:
        return Discovery((HOST,))
    if len(counts) == 1:
        return Discovery((replace(HOST, details={"threads": counts[0]}),))
    return Discovery(tuple(Device(kind="host", id=f"host-{n}t", label=f"{n}t", details={"threads": n})
                           for n in counts))


# -- scheduling by device (pytest-xdist) ---------------------------------------------------------

def device_group(nodeid: str, inventory: Inventory, device_targets: Mapping[str, str]) -> str | None:
    """The inventory device an item runs on, read from its node id's parameters
    (``test_x.py::test[int8-android_gpu-pixel8]`` -> ``android:pixel8``; both Android
    targets of a phone give the same group), ``None`` for any other item. A device of a
    ``"*"`` entry is ``LABEL-<serial>``: when other parameters follow it in the id, they
    become part of its group (still correct, less grouped). ``device_targets`` maps the
    run's target names to their device kind (``TargetRegistry.device_kinds()``); kinds the
    inventory lists no devices of (the host) are ignored."""
    params = nodeid.rsplit("::", 1)[-1].partition("[")[2]
    if not params.endswith("]"):
        return None
    params = params[:-1]
    named = {"android": [e.label for e in inventory.android if not e.every],
             "edgetpu": [e.label for e in inventory.edgetpu]}
    every = [e.label for e in inventory.android if e.every]
    for target, kind in device_targets.items():
        if kind not in named:
            continue
        for m in re.finditer(rf"(?:^|-){target}-", params):
            rest = params[m.end():]
            for label in sorted(named[kind], key=len, reverse=True):
                if rest == label or rest.startswith(label + "-"):
                    return f"{kind}:{label}"
            if kind == "android" and any(rest.startswith(prefix + "-") for prefix in every):
                return f"{kind}:{rest}"
    return None


def device_shards(inventory: Inventory, count: int) -> dict[str, int]:
    """Each named inventory device's shard (1-based) of ``count`` (``--edgeopt-shard``), by
    :func:`device_group` name: Android entries, then Edge TPUs, round-robin in inventory order.
    (The devices of a ``"*"`` entry are known only once attached: they go by a hash of their
    group, :func:`pytest_edgeopt.storage.shards.item_shard`.)"""
    named = [f"android:{e.label}" for e in inventory.android if not e.every]
    named += [f"edgetpu:{e.label}" for e in inventory.edgetpu]
    return {group: i % count + 1 for i, group in enumerate(named)}
