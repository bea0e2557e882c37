"""A cross-process lease per device: one measurement at a time on each phone or Edge TPU.

pytest-xdist workers, and other pytest sessions of the same user on this host, measure on
a device only while holding its lease: a ``filelock`` lock file in a shared directory
(default ``<tmp>/pytest-edgeopt-leases-<user>``, ``--edgeopt-lease-dir``), one per device.
The holder writes who it is next to the lock (host, pid, xdist worker, what it measures,
since when), so a run that gives up waiting says who holds the device. The lock is the
operating system's (``flock``): a holder that dies releases it.

Sessions on *different* hosts driving the same phone through its farm host's adb server
only exclude each other when their lease directories are the same directory (a shared
file system with working ``flock``); otherwise give each CI runner its own phones.

Plain Python (no pytest).
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import os
import re
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_edgeopt.targets.base import Device, TargetUnavailable

if TYPE_CHECKING:
    from filelock import FileLock

#: Seconds a measurement waits for a device another process is measuring on.
DEFAULT_TIMEOUT_S = 3600.0


class LeaseTimeout(TargetUnavailable):
    """The device stayed leased by another process for the whole timeout; the message
    names the holder."""


def default_lease_dir() -> Path:
    """``<tmp>/pytest-edgeopt-leases-<user>``: shared by every session of this user on this host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        user = str(os.getuid()) if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"pytest-edgeopt-leases-{re.sub(r'[^A-Za-z0-9_.-]', '_', user)}"


def lease_key(device: Device) -> str | None:
    """What identifies the physical device (``None``: the host, never leased): an Android
    device by its adb server and serial, others by kind and id."""
    if device.kind == "host":
        return None
    server = device.details.get("adb_server")
    return f"{device.kind}:{server}:{device.id}" if server else f"{device.kind}:{device.id}"


def _file_stem(key: str) -> str:
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", key).strip("_")[:80]
    return f"{readable}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def holder_text(what: str) -> str:
    """This process as a lease holder (JSON)."""
    return json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                       "worker": os.environ.get("PYTEST_XDIST_WORKER"), "what": what, "since": time.time()})


def describe_holder(text: str, now: float | None = None) -> str:
    """``pid 123 on host h (xdist worker gw1), measuring '...' for 12 s``, or a fallback."""
    try:
        h: dict[str, Any] = json.loads(text)
        since = float(h["since"])
    except (ValueError, KeyError, TypeError):
        return "another process (it did not say who)"
    worker = f" (xdist worker {h['worker']})" if h.get("worker") else ""
    age = (time.time() if now is None else now) - since
    return f"pid {h.get('pid')} on {h.get('host')}{worker}, measuring {h.get('what')!r} for {age:.0f} s"


class DeviceLeases:
    """The leases of one process. :meth:`hold` is re-entrant per device within the process
    (a measurement that needs its baseline on the same device does not wait for itself).
    Once a device stayed busy for a whole timeout, later holds of it do not wait again
    while it is still busy."""

    def __init__(self, directory: Path | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                 progress: Callable[[str], None] = lambda msg: None) -> None:
        self.directory = Path(directory) if directory is not None else default_lease_dir()
        self.timeout_s = float(timeout_s)
        self.progress = progress
        self._locks: dict[str, Any] = {}
        self._gave_up: set[str] = set()
        #: Seconds spent waiting for leases, per device key (for reports and tests).
        self.waited_s: dict[str, float] = {}

    def _lock(self, key: str) -> FileLock:
        lock = self._locks.get(key)
        if lock is None:
            from filelock import FileLock  # only runs that lease a device import it

            self.directory.mkdir(parents=True, exist_ok=True)
            lock = self._locks[key] = FileLock(str(self.directory / f"{_file_stem(key)}.lock"))
        return lock

    def holder_path(self, key: str) -> Path:
        return self.directory / f"{_file_stem(key)}.holder"

    @contextlib.contextmanager
    def hold(self, device: Device, what: str) -> Iterator[dict[str, Any] | None]:
        """Hold ``device``'s lease for the block, which gets ``{"waited_s", "since"}``
        (seconds waited, wall-clock Unix time acquired; ``None`` for the host CPU, which is
        not leased); :class:`LeaseTimeout` naming the holder after ``timeout_s`` of waiting."""
        key = lease_key(device)
        if key is None:
            yield None
            return
        from filelock import Timeout

        lock = self._lock(key)
        name = device.label or device.id
        start = time.monotonic()
        try:
            lock.acquire(timeout=0)
        except Timeout:
            if key in self._gave_up:  # waited the whole timeout before: do not wait again
                raise LeaseTimeout(f"{name} is still busy: leased by {self._holder(key)} "
                                   f"(after an earlier wait of {self.timeout_s:g} s; --edgeopt-lease-timeout)") from None
            self.progress(f"waiting for {name}: {self._holder(key)}")
            try:
                lock.acquire(timeout=max(0.0, self.timeout_s - (time.monotonic() - start)))
            except Timeout:
                self._gave_up.add(key)
                raise LeaseTimeout(
                    f"{name} is busy: leased by {self._holder(key)}; gave up after {self.timeout_s:g} s "
                    f"(--edgeopt-lease-timeout; lock {lock.lock_file})") from None
        self._gave_up.discard(key)
        waited = time.monotonic() - start
        self.waited_s[key] = self.waited_s.get(key, 0.0) + waited
        outer = lock.lock_counter == 1
        try:
            if outer:
                self.holder_path(key).write_text(holder_text(what))
            yield {"waited_s": round(waited, 3), "since": time.time()}
        finally:
            if outer:
                with contextlib.suppress(OSError):
                    self.holder_path(key).unlink()
            lock.release()

    def _holder(self, key: str) -> str:
        try:
            return describe_holder(self.holder_path(key).read_text())
        except OSError:
            return "another process (it did not say who)"
