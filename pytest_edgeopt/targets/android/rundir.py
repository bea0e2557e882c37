"""The run directory: one ``/data/local/tmp/edgeopt-<random>`` per device per session.

It holds the ``benchmark_model`` binary (pushed once, skipped when the same bytes are
there), the models (named by content hash) and the eval data. The targets of one device
share it (reference counted); the last one to close removes it, and an interrupted run
removes it at exit (``atexit``, and SIGTERM when nobody else handles it).

Each directory carries an ``owner`` file (:class:`RunDirOwner`) so that a session's first
use of a device can sweep away the directories other sessions provably abandoned
(:func:`abandoned_reason`, :func:`sweep_abandoned_run_dirs`). A directory without one (a
user's fixed ``run_dir``) is never touched.

Plain Python (no pytest).
"""

from __future__ import annotations

import atexit
import hashlib
import math
import os
import re
import secrets
import shlex
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_edgeopt.targets.android.benchmark_output import output_tail
from pytest_edgeopt.targets.android.link import DeviceLink
from pytest_edgeopt.targets.android.validation import (
    REMOTE_ROOT,
    describe_exit,
    validate_remote_path,
)
from pytest_edgeopt.targets.base import TargetError

__all__ = [
    "ABANDONED_AFTER_S",
    "OWNER_FILE",
    "RUN_DIR_PREFIX",
    "SWEEP_LIST_SCRIPT",
    "ListedRunDir",
    "RunDir",
    "RunDirOwner",
    "abandoned_reason",
    "parse_run_dir_listing",
    "probe_process",
    "process_start",
    "sweep_abandoned_run_dirs",
]

#: The name of each run directory this package creates starts so (``edgeopt-<random>``).
RUN_DIR_PREFIX = "edgeopt-"

#: The marker in each run directory this package creates (not in a fixed ``run_dir``).
OWNER_FILE = "owner"
OWNER_HEADER = "pytest-edgeopt run dir v1"
#: A run directory with no new file for this long (device clock) is abandoned, whoever owns it.
ABANDONED_AFTER_S = 24 * 3600.0
_RUN_DIR_NAME_RE = re.compile(rf"^{RUN_DIR_PREFIX}[A-Za-z0-9._-]+$")
_OWNER_VALUE_RE = re.compile(r"[^A-Za-z0-9._:/@+\[\]-]")

#: The run directories open in this process, by (adb server, serial, fixed ``run_dir``),
#: and the lock that guards them. Process-wide on purpose: the ``android_cpu`` and
#: ``android_gpu`` targets of one device share one directory, the sweep must never remove
#: a directory this process still uses, and the exit handlers (atexit, SIGTERM) must find
#: every directory left to remove, whichever session or target opened it.
_OPEN: dict[tuple[str, str, str | None], RunDir] = {}
_OPEN_LOCK = threading.Lock()
#: Whether :func:`_install_cleanup` registered the exit handlers (once per process).
_cleanup_installed = False


def _owner_value(text: str) -> str:
    return _OWNER_VALUE_RE.sub("_", text)[:200]


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def process_start(pid: int) -> str:
    """What tells process ``pid`` from a later one that gets the same pid: the boot id and
    its start time in clock ticks since boot (Linux ``/proc``); ``""`` where unknown."""
    boot = _read_text("/proc/sys/kernel/random/boot_id")
    try:
        ticks = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""
    return _owner_value(f"{boot}/{ticks}")


def probe_process(pid: int) -> tuple[bool, str]:
    """``(alive, start)`` of a process on this host (:func:`process_start`)."""
    if pid <= 0:
        return True, ""  # not a single process: never provably gone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False, ""
    except OSError:  # EPERM: alive, another user's
        pass
    return True, process_start(pid)


@dataclass(frozen=True, slots=True)
class RunDirOwner:
    """Who made a run directory, as its ``owner`` file says.

    ``host`` is the host name; ``machine`` (a hash of ``/etc/machine-id``, which is not to
    be shown as is) and ``pidns`` (the pid namespace) tell apart hosts and containers that
    share a name, ``""`` where unknown;
    ``pid`` and ``start`` (:func:`process_start`) the process; ``created`` the host's
    clock at creation (Unix seconds).
    """

    host: str
    machine: str
    pidns: str
    pid: int
    start: str
    created: float

    @classmethod
    def current(cls) -> RunDirOwner:
        pidns = ""
        try:
            pidns = os.readlink("/proc/self/ns/pid")
        except OSError:
            pass
        machine = _read_text("/etc/machine-id")
        return cls(
            host=_owner_value(socket.gethostname()),
            machine=hashlib.sha256(f"pytest-edgeopt:{machine}".encode()).hexdigest()[:16] if machine else "",
            pidns=_owner_value(pidns),
            pid=os.getpid(),
            start=process_start(os.getpid()),
            created=round(time.time(), 3),
        )

    def same_host(self, other: RunDirOwner) -> bool:
        """Same host name, machine id and pid namespace: its pids are our pids."""
        return (self.host, self.machine, self.pidns) == (other.host, other.machine, other.pidns)

    def to_text(self) -> str:
        return (
            f"{OWNER_HEADER}\nhost={self.host}\nmachine={self.machine}\npidns={self.pidns}\n"
            f"pid={self.pid}\nstart={self.start}\ncreated={self.created:.3f}\n"
        )

    @classmethod
    def parse(cls, text: str) -> RunDirOwner | None:
        """The owner an ``owner`` file names; ``None`` unless it is a complete marker."""
        lines = text.splitlines()
        if not lines or lines[0].strip() != OWNER_HEADER:
            return None
        values = dict(line.partition("=")[::2] for line in lines[1:] if "=" in line)
        try:
            owner = cls(
                host=values["host"],
                machine=values["machine"],
                pidns=values["pidns"],
                pid=int(values["pid"]),
                start=values["start"],
                created=float(values["created"]),
            )
        except (KeyError, ValueError):
            return None
        return owner if owner.host and owner.pid > 0 and math.isfinite(owner.created) else None


def abandoned_reason(
    owner: RunDirOwner | None,
    idle_s: float | None,
    *,
    me: RunDirOwner,
    in_use_here: bool,
    probe: Callable[[int], tuple[bool, str]] = probe_process,
    max_idle_s: float = ABANDONED_AFTER_S,
) -> str | None:
    """Why another session's run directory is provably abandoned; ``None``: keep it.

    - one of this process's open run directories (``in_use_here``): keep;
    - no owner marker (a user's fixed ``run_dir``, an older version's, one being made): keep;
    - nothing new in it for ``max_idle_s`` (``idle_s``, on the device's clock): abandoned,
      whatever the host;
    - made on another host (or container): keep, its session may be running;
    - made by this process (``me``) but not open: an earlier in-process session lost its
      device before cleaning up: abandoned;
    - made by another process of this host: abandoned when ``probe(pid)`` says that pid is
      gone or now belongs to a process with another start.
    """
    if owner is None or in_use_here:
        return None
    if idle_s is not None and idle_s >= max_idle_s:
        return f"unused for {idle_s / 3600:.0f} h (owner {owner.host} pid {owner.pid})"
    if not owner.same_host(me):
        return None
    if owner.pid == me.pid and owner.start == me.start:
        return f"left by an earlier session of this process ({owner.host} pid {owner.pid})"
    alive, start = probe(owner.pid)
    if not alive:
        return f"its process ended ({owner.host} pid {owner.pid})"
    if owner.start and start and start != owner.start:
        return f"its process ended ({owner.host} pid {owner.pid} is now another process)"
    return None


#: One ``sh -c`` script that lists the run directories of ``$1`` with an owner file:
#: ``now=`` (device clock), then per directory ``dir=``, ``mtime=`` (its newest entry's,
#: 0 if unknown) and the owner file, each line indented by a space (so it cannot pass
#: for a ``dir=`` line). Names with other characters are skipped, never touched.
SWEEP_LIST_SCRIPT = f"""cd "$1" 2>/dev/null || exit 0
printf 'now=%s\\n' "$(date +%s)"
for d in {RUN_DIR_PREFIX}*; do
  case "$d" in *[!A-Za-z0-9._-]*) continue ;; esac
  [ -d "$d" ] && [ ! -L "$d" ] && [ -f "$d/{OWNER_FILE}" ] || continue
  m=0
  for t in $(stat -c %Y "$d" "$d/{OWNER_FILE}" 2>/dev/null); do [ "$t" -gt "$m" ] 2>/dev/null && m=$t; done
  printf 'dir=%s\\nmtime=%s\\n' "$d" "$m"
  head -c 4096 "$d/{OWNER_FILE}" | while IFS= read -r line; do printf ' %s\\n' "$line"; done
done"""


@dataclass(frozen=True, slots=True)
class ListedRunDir:
    """A run directory as :data:`SWEEP_LIST_SCRIPT` describes it."""

    name: str
    owner: RunDirOwner | None
    idle_s: float | None


def parse_run_dir_listing(text: str, host_now: float | None = None) -> list[ListedRunDir]:
    """The directories in :data:`SWEEP_LIST_SCRIPT`'s output. ``idle_s`` is the device's
    now minus the newest mtime; where the device gave no times, the host's clock
    (``host_now``, default now) minus the owner's ``created``."""
    now: int | None = None
    blocks: list[dict[str, Any]] = []
    for line in text.splitlines():
        if line.startswith(" ") and blocks:
            blocks[-1]["owner"].append(line[1:])
        elif line.startswith("now="):
            now = int(line[4:]) if line[4:].strip().isdigit() else None
        elif line.startswith("dir="):
            blocks.append({"name": line[4:], "mtime": None, "owner": []})
        elif line.startswith("mtime=") and blocks and line[6:].strip().isdigit():
            blocks[-1]["mtime"] = int(line[6:]) or None
    host_now = time.time() if host_now is None else host_now
    out = []
    for b in blocks:
        if not _RUN_DIR_NAME_RE.match(b["name"]):
            continue
        owner = RunDirOwner.parse("\n".join(b["owner"]))
        if now is not None and b["mtime"] is not None:
            idle: float | None = float(now - b["mtime"])
        else:
            idle = host_now - owner.created if owner else None
        out.append(ListedRunDir(b["name"], owner, idle))
    return out


def sweep_abandoned_run_dirs(link: DeviceLink, keep: Sequence[str] = ()) -> list[tuple[str, str]]:
    """Remove the run directories under :data:`REMOTE_ROOT` that are provably abandoned
    (:func:`abandoned_reason`): one shell command lists them with their owners, one more
    removes them when there are any. ``keep``: paths never removed. Returns ``(path,
    reason)`` per directory removed; :class:`TargetError` when the device does not answer."""
    res = link.shell("list abandoned run directories", f"sh -c {shlex.quote(SWEEP_LIST_SCRIPT)} sh {REMOTE_ROOT}")
    me = RunDirOwner.current()
    with _OPEN_LOCK:
        in_use = {rd.path for rd in _OPEN.values()}
    doomed: list[tuple[str, str]] = []
    for entry in parse_run_dir_listing(res.output):
        path = f"{REMOTE_ROOT}/{entry.name}"
        if path in keep:
            continue
        reason = abandoned_reason(entry.owner, entry.idle_s, me=me, in_use_here=path in in_use)
        if reason is not None:
            doomed.append((validate_remote_path(path), reason))
    if doomed:
        rm = link.shell("remove abandoned run directories", "rm -rf " + " ".join(shlex.quote(p) for p, _ in doomed))
        if rm.returncode != 0:
            raise TargetError(f"{link.who}: could not remove abandoned run directories: {output_tail(rm.output)}")
    return doomed


class RunDir:
    """The per-device, per-session directory under /data/local/tmp (shared by the
    targets of one device; reference counted; removed at exit if still there)."""

    def __init__(self, path: str, owned: bool) -> None:
        self.path = validate_remote_path(path)
        self.owned = owned
        self.refs = 0
        self.created = False
        self.binary_sha: str | None = None
        self.models: dict[str, str] = {}
        self.link: DeviceLink | None = None
        self.key: tuple[str, str, str | None] | None = None
        #: What the first use of the device swept away: ``(path, reason)`` per directory.
        self.swept: list[tuple[str, str]] | None = None

    @classmethod
    def acquire(cls, link: DeviceLink, run_dir: str | None) -> RunDir:
        key = (link.server, link.serial, run_dir)
        with _OPEN_LOCK:
            rd = _OPEN.get(key)
            if rd is None:
                path = run_dir or f"{REMOTE_ROOT}/{RUN_DIR_PREFIX}{secrets.token_hex(4)}"
                rd = cls(path, owned=run_dir is None)
                rd.key = key
                _OPEN[key] = rd
            rd.refs += 1
            rd.link = link
            _install_cleanup()
            return rd

    def release(self, link: DeviceLink) -> None:
        with _OPEN_LOCK:
            self.refs -= 1
            if self.refs > 0:
                return
            _OPEN.pop(self.key, None)  # type: ignore[arg-type]
        self.remove(link)

    def ensure(self, link: DeviceLink) -> None:
        """Create the directory (with its owner marker unless it is a fixed ``run_dir``);
        the first time, sweep away the run directories other sessions abandoned."""
        if self.created:
            return
        if self.swept is None:
            self.swept = []
            try:
                self.swept = sweep_abandoned_run_dirs(link, keep=(self.path,))
            except TargetError:
                pass  # best effort: a device that does not answer fails the mkdir below
        q = shlex.quote
        cmd = f"mkdir -p {q(self.predict_dir)}"
        if self.owned:
            cmd += f" && printf '%s' {q(RunDirOwner.current().to_text())} > {q(f'{self.path}/{OWNER_FILE}')}"
        res = link.shell("create the run directory", cmd)
        if res.returncode != 0:
            raise TargetError(
                f"{link.who}: cannot create {self.path} ({describe_exit(res.returncode)}): {output_tail(res.output)}"
            )
        self.created = True

    def ensure_binary(self, link: DeviceLink, local: Path, sha: str) -> str:
        remote = f"{self.path}/benchmark_model"
        if self.binary_sha == sha:
            return remote
        marker = f"{remote}.sha256"
        size = local.stat().st_size
        q = shlex.quote
        check = link.shell(
            "check benchmark_model on the device",
            f"sha256sum {q(remote)} 2>/dev/null || echo \"marker:$(cat {q(marker)} 2>/dev/null) "
            f"size:$(wc -c < {q(remote)} 2>/dev/null)\"",
        )
        out = check.output.strip()
        m = re.search(r"marker:(\S*)\s+(\d*)\s+size:\s*(\d+)", out)
        same = out.split()[:1] == [sha] or bool(m and m.groups() == (sha, str(size), str(size)))
        if not same:
            link.push(f"push benchmark_model ({size} bytes)", local, remote, mode=0o755)
            verify = link.shell(
                "verify benchmark_model on the device",
                f"chmod 755 {q(remote)}; echo '{sha} {size}' > {q(marker)}; sha256sum {q(remote)} 2>/dev/null; true",
            )
            got = verify.output.split()[:1]
            if got and re.fullmatch(r"[0-9a-f]{64}", got[0]) and got[0] != sha:
                raise TargetError(f"{link.who}: benchmark_model arrived corrupted (sha256 {got[0]}, expected {sha})")
        self.binary_sha = sha
        return remote

    def ensure_model(self, link: DeviceLink, local: Path) -> str:
        data = Path(local).read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        remote = self.models.get(sha)
        if remote is None:
            remote = f"{self.path}/m-{sha[:16]}.tflite"
            link.push(f"push model {Path(local).name} ({len(data)} bytes)", data, remote)
            self.models[sha] = remote
        return remote

    @property
    def predict_dir(self) -> str:
        """Where eval inputs and outputs go; each predict overwrites the previous one's."""
        return f"{self.path}/predict"

    def remove(self, link: DeviceLink | None = None, timeout: float | None = None) -> None:
        link = link or self.link
        if link is None or not self.created:
            return
        q = shlex.quote
        if self.owned:
            cmd = f"rm -rf {q(self.path)}"
        else:  # a run dir the user keeps: leave the binary, remove this session's files
            files = " ".join(q(p) for p in self.models.values())
            cmd = f"rm -rf {q(self.predict_dir)} {files}"
        if timeout is not None:
            link = DeviceLink(link.client, link.serial, step_timeout_s=timeout, reconnect_timeout_s=timeout, who=link.who)
        try:
            link.shell("remove the run directory", cmd, retry=timeout is None)
        finally:
            self.created = False
            self.models.clear()
            self.binary_sha = None if self.owned else self.binary_sha


def _cleanup_all(timeout: float = 10.0) -> None:
    """Remove every run directory still on a device (atexit / SIGTERM)."""
    with _OPEN_LOCK:
        dirs = list(_OPEN.values())
        _OPEN.clear()
    for rd in dirs:
        try:
            rd.remove(timeout=timeout)
        except Exception:  # best effort at exit: never mask the real exit
            pass


def _on_sigterm(signum: int, frame: Any) -> None:
    _cleanup_all(timeout=5.0)
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_cleanup() -> None:
    global _cleanup_installed
    if _cleanup_installed:
        return
    _cleanup_installed = True
    atexit.register(_cleanup_all)
    # SIGTERM skips atexit; take it only when nobody else did, and only from the main thread.
    if threading.current_thread() is threading.main_thread():
        try:
            if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
                signal.signal(signal.SIGTERM, _on_sigterm)
        except (ValueError, OSError):
            pass
