"""Saved runs: one file per pytest session in a storage directory (default ``.edgeopt/runs``).

A saved run is the ``--edgeopt-json`` document (every measurement with its raw latency
samples and budget outcomes) plus three keys written first:

- ``run``: ``number`` (a counter, 1, 2, ...), ``name`` (or ``None``), ``saved`` (UTC ISO
  time), and a summary for listings and noise estimates (``commit``, ``dirty``,
  ``totals``, ``latency_settings``, ``p50_ms`` per measurement key);
- ``metadata``: :func:`run_metadata` -- git commit and dirty flag, the machine (CPU model,
  cores, OS, load), Python and package versions;
- ``devices``: each device the run measured on, with its identity and conditions.

Files are named ``NNNN_NAME_YYYYmmddTHHMMSSZ.json.gz`` (``NNNN_YYYYmmddTHHMMSSZ.json.gz``
without a name), so they sort by counter; compact gzip-compressed JSON, since 50,000 raw
samples per measurement make a plain file of tens of MB. Writes go through
:func:`~pytest_edgeopt.atomic.atomic_write_bytes` under a lock: a session killed half-way
leaves earlier runs intact and at worst a hidden ``.*.tmp`` file, which listing ignores
and the next save removes.
A corrupt file is skipped with a :class:`StoreWarning`, never an exception.
"""

from __future__ import annotations

import datetime as _dt
import gzip
import json
import os
import platform
import re
import subprocess
import sys
import warnings
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from importlib import metadata as _metadata
from pathlib import Path
from typing import Any

from filelock import FileLock

from pytest_edgeopt.atomic import atomic_write_bytes
from pytest_edgeopt.runs.gate import p50s_of
from pytest_edgeopt.runs.record import RunMetadata, RunRecord, RunSummary, SchemaError, check_schema
from pytest_edgeopt.versions import tool_versions

#: Where runs are saved unless ``--edgeopt-storage`` says otherwise (relative to the rootdir).
DEFAULT_STORAGE = Path(".edgeopt") / "runs"

#: Suffix of saved runs. ``load_run`` also reads a plain ``.json`` (an ``--edgeopt-json`` file).
SUFFIX = ".json.gz"

#: Distributions whose versions are recorded besides the build tools of the variant cache.
EXTRA_DISTRIBUTIONS = ("pytest", "pytest-edgeopt", "numpy", "pandas", "scipy", "adbutils")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_FILE_RE = re.compile(r"^(?P<number>\d{4,})_(?:(?P<name>.+)_)?(?P<time>\d{8}T\d{6}Z)\.json\.gz$")
_TIME_FORMAT = "%Y%m%dT%H%M%SZ"
#: How long ``git`` may take before the commit is recorded as unknown, in seconds.
_GIT_TIMEOUT_S = 10.0


class RunNotFound(LookupError):
    """No saved run matches; the message names the runs that exist."""


class StoreWarning(UserWarning):
    """A saved run could not be read (corrupt, truncated, or from a newer schema) and was skipped."""


# -- names --------------------------------------------------------------------------------------
def validate_name(name: str) -> str:
    """``name`` if it can name a saved run, else ``ValueError`` saying what is allowed.

    Allowed: 1-64 characters of letters, digits, ``.``, ``_`` and ``-``, starting with a
    letter or digit; not all digits (a number refers to a run's counter) and not ``last``.
    """
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(
            f"invalid run name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit (e.g. 'main', 'pr-123', 'nightly_2026.11')")
    if name.isdigit():
        raise ValueError(f"invalid run name {name!r}: a name cannot be all digits (numbers refer to run counters)")
    if name == "last":
        raise ValueError("invalid run name 'last': it is reserved for the most recent run")
    return name


# -- metadata -----------------------------------------------------------------------------------
def git_state(root: Path | None = None) -> dict[str, Any]:
    """``commit`` (full sha), ``branch`` and ``dirty`` (tracked files modified) of the git
    checkout at ``root`` (default: the working directory). Every value is ``None`` when git
    is missing, ``root`` is not a checkout, or git fails."""
    unknown: dict[str, Any] = {"commit": None, "branch": None, "dirty": None}
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain=v2", "--branch", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, timeout=_GIT_TIMEOUT_S, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return unknown
    state = dict(unknown, dirty=False)
    for line in out.splitlines():
        if line.startswith("# branch.oid "):
            oid = line.split()[2]
            state["commit"] = None if oid == "(initial)" else oid
        elif line.startswith("# branch.head "):
            head = line.split()[2]
            state["branch"] = None if head == "(detached)" else head
        elif line and not line.startswith("#"):
            state["dirty"] = True
    return state


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what ``platform`` knows)."""
    info = _read("/proc/cpuinfo") or ""
    for key in ("model name", "Hardware", "Processor", "cpu model", "cpu"):
        for line in info.splitlines():
            k, _, v = line.partition(":")
            if k.strip() == key and v.strip():
                return v.strip()
    return platform.processor() or platform.machine() or "unknown"


def machine() -> dict[str, Any]:
    """The host: ``cpu_model``, ``cores`` (logical), ``usable_cores`` (this process's
    affinity), ``arch``, ``os`` (system name), ``os_release``, ``platform``, ``hostname``,
    ``memory_bytes``, and the conditions at save time: ``loadavg`` (1, 5, 15 minutes) and
    the CPU frequency ``governor`` (``None`` where unknown)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    memory = None
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            memory = int(line.split()[1]) * 1024
    try:
        load: list[float] | None = [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        load = None
    governor = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "arch": platform.machine(),
        "os": platform.system(),
        "os_release": platform.release(),
        "platform": platform.platform(),
        "hostname": platform.node(),
        "memory_bytes": memory,
        "loadavg": load,
        "governor": governor.strip() if governor else None,
    }


def package_versions() -> dict[str, str | None]:
    """Versions of the build tools (:data:`~pytest_edgeopt.variants.cache.TOOL_DISTRIBUTIONS`) and of
    :data:`EXTRA_DISTRIBUTIONS`, ``None`` for those not installed (read without importing)."""
    out = dict(tool_versions())
    for dist in EXTRA_DISTRIBUTIONS:
        try:
            out[dist] = _metadata.version(dist)
        except _metadata.PackageNotFoundError:
            out[dist] = None
    return out


def run_metadata(root: Path | None = None) -> dict[str, Any]:
    """What a saved run records about where it ran: ``git`` (see :func:`git_state`, for the
    checkout at ``root``), ``machine`` (see :func:`machine`), ``python`` (version) and
    ``packages`` (see :func:`package_versions`), ``host`` and ``runner``
    (:mod:`pytest_edgeopt.runs.host`)."""
    from pytest_edgeopt.runs.host import host_identity, runner_ids

    host = machine()
    return {
        "git": git_state(root),
        "machine": host,
        "python": sys.version.split()[0],
        "packages": package_versions(),
        "host": host_identity(host),
        "runner": runner_ids(),
    }


def devices_of(doc: RunRecord | Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each (target, device) the document measured on, once: ``target``, ``kind``, ``id``,
    ``label``, ``details`` (identity: model, serial, ABI...) and ``conditions`` (the
    measurement settings the target reported, e.g. threads, delegate, affinity mask)."""
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for m in RunRecord.of(doc).measured():
        for obs in (m.observation, m.baseline):
            if obs is None or obs.target is None:
                continue
            dev = obs.device
            key = (str(obs.target), str(dev.id))
            if key in seen:
                continue
            conditions = {k: obs.extras[k] for k in ("threads", "op_resolver", "delegate", "affinity_mask", "library")
                          if k in obs.extras}
            seen[key] = {"target": obs.target, "kind": dev.kind, "id": dev.id, "label": dev.label,
                         "details": dict(dev.details), "conditions": conditions}
    return [seen[k] for k in sorted(seen)]


# -- saving ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RunInfo:
    """A saved run as listed: its counter ``number``, ``name`` (or ``None``), ``time`` saved
    (UTC), ``path``, git ``commit`` and ``dirty`` flag (``None`` when unknown), and the
    session's ``totals`` (items, passed, failed, skipped, ...)."""

    number: int
    name: str | None
    time: _dt.datetime
    path: Path
    commit: str | None
    dirty: bool | None
    totals: Mapping[str, Any]

    @property
    def label(self) -> str:
        """``#7 nightly`` (or ``#7``): how messages refer to the run."""
        return f"#{self.number} {self.name}" if self.name else f"#{self.number}"

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, "name": self.name, "time": self.time.isoformat(), "path": str(self.path),
                "commit": self.commit, "dirty": self.dirty, "totals": dict(self.totals)}


def _parse_file_name(path: Path) -> tuple[int, str | None, _dt.datetime] | None:
    m = _FILE_RE.match(path.name)
    if not m:
        return None
    try:
        when = _dt.datetime.strptime(m["time"], _TIME_FORMAT).replace(tzinfo=_dt.timezone.utc)
    except ValueError:
        return None
    return int(m["number"]), m["name"], when


def _run_files(storage: Path) -> list[tuple[int, str | None, _dt.datetime, Path]]:
    """Saved-run files by counter (oldest first); temporary and foreign files are ignored."""
    if not storage.is_dir():
        return []
    found = []
    for p in storage.iterdir():
        if p.name.startswith(".") or not p.is_file():
            continue
        parsed = _parse_file_name(p)
        if parsed:
            found.append((*parsed, p))
    return sorted(found, key=lambda f: (f[0], f[2], f[3].name))


def _encode(doc: Mapping[str, Any]) -> bytes:
    text = json.dumps(doc, separators=(",", ":"), default=str, allow_nan=True)
    # Level 1: a third of the compact text, 0.1 s per 10 MB; higher levels gain little on float lists.
    return gzip.compress(text.encode(), compresslevel=1, mtime=0)


def save_run(storage: Path, doc: RunRecord | Mapping[str, Any], name: str | None = None, *,
             root: Path | None = None, now: _dt.datetime | None = None, number: int | None = None) -> Path:
    """Save ``doc`` (a run record or ``--edgeopt-json`` document) as the next run in ``storage``;
    return its path.

    Adds ``run``, ``metadata`` (:func:`run_metadata` for ``root``, unless ``doc`` has one)
    and ``devices``. Raises ``ValueError`` for an invalid ``name`` (see :func:`validate_name`)
    before anything is written. Concurrent sessions get distinct counters (a file lock);
    the file appears whole or not at all. ``number``: the counter to use (claimed in a
    shared store by :class:`~pytest_edgeopt.storage.history.RemoteHistory`).
    """
    if name is not None:
        validate_name(name)
    record = RunRecord.of(doc)
    storage = Path(storage)
    storage.mkdir(parents=True, exist_ok=True)
    now = (now or _dt.datetime.now(_dt.timezone.utc)).astimezone(_dt.timezone.utc)
    meta = record.metadata or RunMetadata.from_dict(run_metadata(root))
    with FileLock(str(storage / ".lock")):
        # Writers hold the lock while writing: a temporary file seen now was left by a killed one.
        for orphan in storage.glob(f".*{SUFFIX}.*.tmp"):
            orphan.unlink(missing_ok=True)
        if number is None:
            files = _run_files(storage)
            number = (files[-1][0] + 1) if files else 1
        stamp = now.strftime(_TIME_FORMAT)
        path = storage / (f"{number:04d}_{name}_{stamp}{SUFFIX}" if name else f"{number:04d}_{stamp}{SUFFIX}")
        git = meta.git
        run = RunSummary(number=number, name=name, saved=now.isoformat(timespec="seconds"),
                         commit=git.commit if git else None, dirty=git.dirty if git else None,
                         totals=dict(record.totals),
                         # For noise estimates over many runs without reading their samples.
                         latency_settings=record.settings.get("latency"), p50_ms=p50s_of(record))
        # "run" comes first (RunRecord.to_dict) so listings parse only the head of the file.
        full = replace(record, run=run, metadata=meta, devices=tuple(devices_of(record)))
        atomic_write_bytes(path, _encode(full.to_dict()))
    return path


# -- reading -------------------------------------------------------------------------------------
class _Unreadable(Exception):
    pass


def _text(path: Path) -> tuple[str, bool]:
    """The file's text, and whether it was gzip-compressed (then its CRC was checked, so a
    truncated or altered file fails here)."""
    try:
        data = path.read_bytes()
        packed = data[:2] == b"\x1f\x8b"
        if packed:
            data = gzip.decompress(data)
        return data.decode("utf-8"), packed
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile, UnicodeDecodeError) as exc:
        raise _Unreadable(f"{type(exc).__name__}: {exc}") from None


def _check(doc: Any) -> dict[str, Any]:
    """``doc`` when it reads as a :class:`~pytest_edgeopt.runs.record.RunRecord`."""
    _record(doc)
    return doc  # type: ignore[no-any-return]


def _record(doc: Any) -> RunRecord:
    try:
        return RunRecord.from_dict(doc)
    except ValueError as exc:  # SchemaError among them
        raise _Unreadable(str(exc)) from None


def _check_schema(schema: Any) -> None:
    try:
        check_schema(schema)
    except SchemaError as exc:
        raise _Unreadable(str(exc)) from None


def _parse(path: Path) -> dict[str, Any]:
    text, _ = _text(path)
    try:
        return _check(json.loads(text))
    except ValueError as exc:
        raise _Unreadable(f"invalid JSON: {exc}") from None


def read_run(path: Path) -> dict[str, Any]:
    """The document in ``path`` (a saved ``.json.gz`` run or a plain ``--edgeopt-json`` file).

    Raises ``ValueError`` naming the file and the problem when it is unreadable.
    """
    try:
        return _parse(Path(path))
    except _Unreadable as exc:
        raise ValueError(f"cannot read run {path}: {exc}") from None


def _head(path: Path) -> RunRecord:
    """``schema``, ``run`` and ``metadata`` of a saved run (its ``measurements`` left out).
    A compressed file written by :func:`save_run` starts with them, so only its head is
    parsed (decompressing it whole still checks its integrity); anything else is parsed whole."""
    text, packed = _text(path)
    head = '{"schema":'
    if packed and text.startswith(head):
        dec = json.JSONDecoder()
        try:
            out: dict[str, Any] = {}
            out["schema"], i = dec.raw_decode(text, len(head))
            for key in ("run", "metadata"):
                prefix = f',"{key}":'
                if not text.startswith(prefix, i):
                    raise ValueError(f"no {key!r} at the head")
                out[key], i = dec.raw_decode(text, i + len(prefix))
        except ValueError:
            pass
        else:
            _check_schema(out["schema"])
            return RunRecord(schema=out["schema"], run=_opt_run(out["run"]), metadata=_opt_meta(out["metadata"]))
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise _Unreadable(f"invalid JSON: {exc}") from None
    return replace(_record(doc), measurements=())


def _opt_run(d: Any) -> RunSummary | None:
    return RunSummary.from_dict(d) if isinstance(d, Mapping) else None


def _opt_meta(d: Any) -> RunMetadata | None:
    return RunMetadata.from_dict(d) if isinstance(d, Mapping) else None


def _warn_skip(path: Path, why: str) -> None:
    warnings.warn(StoreWarning(f"skipping saved run {path.name}: {why}"), stacklevel=3)


def list_runs(storage: Path, progress: Callable[[str], None] | None = None) -> list[RunInfo]:
    """Every readable saved run in ``storage``, oldest first (empty when there is none).

    A corrupt, truncated or too-new file is skipped with a :class:`StoreWarning`.
    ``progress`` gets a line per file read (files are decompressed to check them).
    """
    files = _run_files(Path(storage))
    out = []
    for i, (number, name, when, path) in enumerate(files, 1):
        if progress:
            progress(f"reading {path.name} ({i}/{len(files)})")
        try:
            head = _head(path)
        except _Unreadable as exc:
            _warn_skip(path, str(exc))
            continue
        out.append(RunInfo(number=number, name=name, time=when, path=path, commit=head.commit, dirty=head.dirty,
                           totals=dict(head.run.totals) if head.run else {}))
    return out


def _describe(files: list[tuple[int, str | None, _dt.datetime, Path]]) -> str:
    if not files:
        return "no runs are saved there yet (save one with --edgeopt-save=NAME or --edgeopt-autosave)"
    shown = [f"#{n}" + (f" {name}" if name else "") for n, name, _, _ in files[-10:]]
    more = f" (and {len(files) - 10} older)" if len(files) > 10 else ""
    names = sorted({name for _, name, _, _ in files if name})
    return f"saved runs: {', '.join(shown)}{more}" + (f"; names: {', '.join(names)}" if names else "")


def _is_path(ref: str) -> bool:
    return ref.endswith((".json", ".gz")) or "/" in ref or os.sep in ref


def _candidates(storage: Path, ref: str | Path) -> tuple[list[Path], bool]:
    """Files ``ref`` may refer to, newest first, and whether later ones are fallbacks
    (``last`` and names fall back past unreadable files; numbers and paths do not)."""
    text = str(ref)
    if isinstance(ref, Path) or _is_path(text):
        for p in (Path(text), storage / text):
            if p.is_file():
                return [p], False
        raise RunNotFound(f"no run file {text}")
    files = _run_files(storage)
    if text == "last":
        picked = files
    elif text.isdigit():
        picked = [f for f in files if f[0] == int(text)]
    else:
        picked = [f for f in files if f[1] == text]
    if not picked:
        raise RunNotFound(f"no saved run {text!r} in {storage}: {_describe(files)}")
    return [f[3] for f in reversed(picked)], not text.isdigit()


def resolve_run(storage: Path, ref: str | Path) -> Path:
    """The file ``ref`` refers to: ``last`` (the newest run), a run number (``7`` or
    ``0007``), a name (the newest run saved under it), or the path of a run or
    ``--edgeopt-json`` file. Raises :class:`RunNotFound` naming the runs that exist."""
    return _candidates(Path(storage), ref)[0][0]


def load_run(storage: Path, ref: str | Path = "last") -> dict[str, Any]:
    """The document of the run ``ref`` refers to (see :func:`resolve_run`).

    For ``last`` or a name, an unreadable newest file is skipped with a :class:`StoreWarning`
    and the one before it is taken. Raises :class:`RunNotFound` when nothing (readable)
    matches, ``ValueError`` when an explicit run number or path is unreadable.
    """
    storage = Path(storage)
    paths, fallback = _candidates(storage, ref)
    if not fallback:
        return read_run(paths[0])
    for p in paths:
        try:
            return _parse(p)
        except _Unreadable as exc:
            _warn_skip(p, str(exc))
    raise RunNotFound(f"no readable saved run {str(ref)!r} in {storage}: {_describe(_run_files(storage))}")


def load_run_docs(storage: Path | str, progress: Callable[[str], None] | None = None,
                  before: int | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Documents of the readable saved runs in ``storage``, oldest first: all of them, or
    the last ``limit`` numbered below ``before``. Unreadable files are skipped with a
    :class:`StoreWarning`; ``progress`` gets a line per file."""
    if isinstance(storage, str) and "://" in storage:  # load_runs("s3://bucket/runs")
        from pytest_edgeopt.storage.history import local_storage

        storage = local_storage(storage, progress=progress or (lambda msg: None))
    files = [f for f in _run_files(Path(storage)) if before is None or f[0] < before]
    if limit is not None:
        files = files[-limit:] if limit > 0 else []
    docs = []
    for i, f in enumerate(files, 1):
        if progress:
            progress(f"loading {f[3].name} ({i}/{len(files)})")
        try:
            docs.append(_parse(f[3]))
        except _Unreadable as exc:
            _warn_skip(f[3], str(exc))
    return docs


#: Machine facts two runs must share for one's latency to tell about the other's noise.
SAME_MACHINE = ("cpu_model", "cores", "arch", "os", "hostname")


def _same_machine(a: RunMetadata, b: RunMetadata) -> bool:
    """Whether runs ``a`` and ``b`` ran on the same kind of machine: the same machine class
    when both record one (CI runners of one pool, whatever their host names), else the same
    :data:`SAME_MACHINE` facts."""
    ca, cb = (a.host or {}).get("machine_class"), (b.host or {}).get("machine_class")
    if ca and cb:
        return bool(ca == cb)
    return all((b.machine or {}).get(f) == (a.machine or {}).get(f) for f in SAME_MACHINE)


def noise_history(storage: Path, like: RunRecord | Mapping[str, Any], limit: int = 20,
                  before: int | None = None) -> list[dict[str, float]]:
    """p50s (measurement key -> ms) of the last ``limit`` saved runs made like ``like``
    (a run document with ``metadata``: same machine class (see :func:`_same_machine`), Python, packages and latency
    settings), oldest first, numbered below ``before`` when given: the input of
    :func:`pytest_edgeopt.runs.noise.estimate_noise`. Empty when ``like`` has no metadata."""
    like_run = RunRecord.of(like)
    meta = like_run.metadata
    if meta is None or not meta.to_dict():
        return []
    settings = like_run.settings.get("latency")
    out: list[dict[str, float]] = []
    for number, _name, _when, path in _run_files(Path(storage)):
        if before is not None and number >= before:
            continue
        try:
            head = _head(path)
        except _Unreadable:
            continue  # list_runs warns about it
        run, m = head.run or RunSummary(), head.metadata or RunMetadata()
        if not _same_machine(meta, m):
            continue
        if m.packages != meta.packages or m.python != meta.python:
            continue
        if run.latency_settings != settings or not run.p50_ms:
            continue
        out.append(dict(run.p50_ms))
    return out[-limit:] if limit > 0 else []
