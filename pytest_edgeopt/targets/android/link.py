"""One Android device behind an adb server: shell, push and pull with timeouts,
reconnect-and-retry-once, and errors that name the device and the step.

:class:`DeviceLink` runs each step through adbutils' connection to the server, speaking
the shell protocol v2 (``shell,v2:``, for the exit code and stderr) and the sync
protocol (``SEND``/``RECV``, for the device's FAIL reasons, such as full storage) itself;
AOSP adb's ``SERVICES.TXT`` and ``SYNC.TXT`` describe both.

Plain Python (no pytest).
"""

from __future__ import annotations

import re
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from adbutils import AdbClient, AdbDevice, AdbError, AdbTimeout

from pytest_edgeopt.targets.android.server import (
    AdbServerError,
    AdbServerUnavailable,
    check_server,
    format_adb_address,
    reconnect_device,
)
from pytest_edgeopt.targets.android.validation import (
    REMOTE_ROOT,
    validate_remote_path,
    validate_serial,
)
from pytest_edgeopt.targets.base import TargetError

__all__ = ["GONE_RECHECK_S", "DeviceLink", "ShellResult", "posix_dirname"]

#: What a device says in a sync FAIL when its storage is full.
_NO_SPACE_RE = re.compile(r"No space left on device|ENOSPC|disk full|storage full|out of space", re.IGNORECASE)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ShellResult:
    """What one ``adb shell`` command returned (stdout and stderr merged in order when
    the command redirects ``2>&1``)."""

    command: str
    returncode: int
    output: str


class _PushRefused(Exception):
    """The device answered FAIL to a sync SEND (a reason, not a transport problem)."""


class _StepTimeout(Exception):
    pass


_TRANSPORT_ERRORS = (AdbError, EOFError, OSError)

#: (adb server, serial) -> the step during which the device went offline and did not come
#: back. Later steps on it make one quick reconnect attempt instead of waiting
#: ``reconnect_timeout_s`` again: a dead phone must not cost that much per remaining test.
#: Process-wide on purpose: every target, session and short-lived link (cleanup, discovery)
#: of one device makes its own DeviceLink, and all of them must know the device is gone.
_GONE: dict[tuple[str, str], str] = {}
#: How long that quick attempt may take, in seconds.
GONE_RECHECK_S = 1.0


class DeviceLink:
    """One device behind an adb server, with timeouts, reconnect-and-retry-once and
    errors that name the device and the step.

    ``shell``/``push``/``pull`` take a ``step`` (words for messages: ``"push model
    m.tflite"``). Each gets ``step_timeout_s`` of silence at most (and ``deadline_s`` in
    total when given); a transport failure (the device dropped off adb) reconnects and
    retries the step once. Waiting for the device to come back is silence too, so
    ``reconnect_timeout_s`` defaults to ``step_timeout_s``, at most 30 s. Once a device
    did not come back, each later step (of any link to it) tries one quick reconnect
    (``GONE_RECHECK_S``) and fails at once naming the step it went offline in.
    """

    def __init__(
        self,
        client: AdbClient,
        serial: str,
        *,
        step_timeout_s: float = 120.0,
        reconnect_timeout_s: float | None = None,
        who: str | None = None,
    ) -> None:
        self.client = client
        self.serial = validate_serial(serial)
        self.step_timeout_s = float(step_timeout_s)
        self.reconnect_timeout_s = float(
            min(30.0, self.step_timeout_s) if reconnect_timeout_s is None else reconnect_timeout_s
        )
        self.who = who or f"Android device {serial}"
        self._shell_v2: bool | None = None

    @property
    def server(self) -> str:
        return format_adb_address(self.client.host, self.client.port)

    @property
    def _key(self) -> tuple[str, str]:
        return (self.server, self.serial)

    def _device(self) -> AdbDevice:
        return AdbDevice(self.client, serial=self.serial)

    # -- fault handling ---------------------------------------------------------------

    def run(self, step: str, fn: Callable[[AdbDevice], T], *, timeout: float | None = None, retry: bool = True) -> T:
        """``fn(device)`` with the step's fault semantics (see the class docstring)."""
        t = self.step_timeout_s if timeout is None else timeout
        gone_in = _GONE.get(self._key)
        if gone_in is not None:
            self._recheck(step, gone_in)
        for attempt in (1, 2):
            try:
                return fn(self._device())
            except (AdbTimeout, TimeoutError, _StepTimeout):
                raise TargetError(
                    f"{self.who}: step '{step}' timed out after {t:g} s without an answer "
                    f"(adb server {self.server}); the device may be hung or the step too slow for the timeout"
                ) from None
            except _TRANSPORT_ERRORS as e:
                if not retry:
                    raise TargetError(f"{self.who}: step '{step}' failed: {_why(e)}") from None
                if attempt == 2:
                    raise TargetError(
                        f"{self.who}: step '{step}' failed again after reconnecting to the device: {_why(e)} "
                        f"(adb server {self.server})"
                    ) from None
                self.reconnect(step, e)
        raise AssertionError("unreachable")

    def reconnect(self, step: str, cause: BaseException | None = None) -> None:
        """Bring the device back to state ``device`` (:func:`~pytest_edgeopt.targets.android.server.reconnect_device`:
        ``adb disconnect``/``connect`` for ``HOST:PORT`` serials, a wait for USB ones);
        :class:`TargetError` after ``reconnect_timeout_s``."""
        self._shell_v2 = None
        why = f" ({_why(cause)})" if cause else ""
        try:
            check_server(self.client, timeout=min(5.0, self.reconnect_timeout_s))
        except AdbServerUnavailable as e:  # nothing to reconnect through
            raise TargetError(f"{self.who}: step '{step}' failed{why}: {e}") from None
        try:
            reconnect_device(self.client, self.serial, self.reconnect_timeout_s)
        except AdbServerError as e:
            _GONE[self._key] = step
            raise TargetError(
                f"{self.who}: the device went offline during step '{step}'{why} and did not come back within "
                f"{self.reconnect_timeout_s:g} s (adb server {self.server}; last: {e})"
            ) from None
        _GONE.pop(self._key, None)

    def _recheck(self, step: str, gone_in: str) -> None:
        """The device did not come back during an earlier step: one quick reconnect, else
        :class:`TargetError` at once."""
        try:
            check_server(self.client, timeout=GONE_RECHECK_S)
            reconnect_device(self.client, self.serial, GONE_RECHECK_S)
        except (AdbServerUnavailable, AdbServerError) as e:
            raise TargetError(
                f"{self.who}: step '{step}' not run: the device went offline during step '{gone_in}' "
                f"and is still unreachable (adb server {self.server}; last: {e})"
            ) from None
        self._shell_v2 = None
        _GONE.pop(self._key, None)

    # -- shell ------------------------------------------------------------------------

    def _supports_shell_v2(self, dev: AdbDevice, timeout: float) -> bool:
        if self._shell_v2 is None:
            with dev.open_transport("features", timeout=timeout) as c:
                self._shell_v2 = "shell_v2" in c.read_string_block().split(",")
        return self._shell_v2

    def shell(
        self,
        step: str,
        command: str,
        *,
        timeout: float | None = None,
        deadline_s: float | None = None,
        retry: bool = True,
    ) -> ShellResult:
        """Run ``command`` with the device's ``sh``; its exit code (shell protocol v2;
        with v1 devices via an appended ``echo``)."""
        t = self.step_timeout_s if timeout is None else timeout

        def go(dev: AdbDevice) -> ShellResult:
            end = time.monotonic() + (deadline_s if deadline_s is not None else float("inf"))
            if self._supports_shell_v2(dev, t):
                return _shell_v2(dev, command, t, end)
            raw = dev.shell(command + "; echo X4EXIT:$?", timeout=t, encoding=None, rstrip=False)
            assert isinstance(raw, bytes)
            i = raw.rfind(b"X4EXIT:")
            if i < 0:
                raise EOFError("shell output ended before the exit status")
            return ShellResult(command, int(raw[i + 7 :].strip() or 255), raw[:i].decode("utf-8", "replace"))

        return self.run(step, go, timeout=t, retry=retry)

    # -- sync -------------------------------------------------------------------------

    def push(self, step: str, source: bytes | Path, remote: str, *, mode: int = 0o644) -> int:
        """Write ``source`` (bytes or a host file) to ``remote``; returns the bytes sent.

        A FAIL answer mentioning full storage raises :class:`TargetError` saying how many
        bytes were needed; other FAIL answers raise :class:`TargetError` with the reason.
        """
        validate_remote_path(remote)
        size = len(source) if isinstance(source, (bytes, bytearray)) else Path(source).stat().st_size

        def go(dev: AdbDevice) -> int:
            try:
                return _sync_send(dev, source, remote, mode, self.step_timeout_s)
            except _PushRefused as e:
                reason = str(e)
                if _NO_SPACE_RE.search(reason):
                    raise TargetError(
                        f"{self.who}: the device's storage is full: step '{step}' needed {size} bytes "
                        f"({size / 1e6:.1f} MB) under {posix_dirname(remote)} and the device answered: {reason}. "
                        f"Free at least that much on the device (e.g. old files in {REMOTE_ROOT})"
                    ) from None
                raise TargetError(f"{self.who}: step '{step}': the device refused the push: {reason}") from None

        return self.run(step, go)

    def pull(self, step: str, remote: str) -> bytes:
        """The content of ``remote``; :class:`TargetError` if the device says it is missing."""
        validate_remote_path(remote)

        def go(dev: AdbDevice) -> bytes:
            try:
                return _sync_recv(dev, remote, self.step_timeout_s)
            except _PushRefused as e:
                raise TargetError(f"{self.who}: step '{step}': cannot read {remote}: {e}") from None

        return self.run(step, go)


def posix_dirname(path: str) -> str:
    """The directory part of a device path (``/`` for a top-level entry)."""
    return path.rsplit("/", 1)[0] or "/"


def _why(e: BaseException | None) -> str:
    if e is None:
        return ""
    text = str(e) or type(e).__name__
    return f"{type(e).__name__}: {text}" if type(e).__name__ not in text else text


def _shell_v2(dev: AdbDevice, command: str, timeout: float, end: float) -> ShellResult:
    """adb's shell protocol v2: packets of (id byte, u32 LE length, data); id 1 stdout,
    2 stderr, 3 exit code. ``timeout`` bounds each read, ``end`` (monotonic) the total."""
    out = bytearray()
    with dev.open_transport(timeout=timeout) as c:
        c.send_command("shell,v2:" + command)
        c.check_okay()
        while True:
            if time.monotonic() > end:
                raise _StepTimeout()
            header = c.read_exact(5)
            kind, length = header[0], int.from_bytes(header[1:5], "little")
            data = c.read_exact(length) if length else b""
            if kind in (1, 2):
                out += data
            elif kind == 3:
                return ShellResult(command, data[0] if data else 255, out.decode("utf-8", "replace"))


def _sync_open(dev: AdbDevice, timeout: float) -> Any:
    c = dev.open_transport(timeout=timeout)
    c.send_command("sync:")
    c.check_okay()
    return c


def _read_fail(c: Any) -> str:
    n = int.from_bytes(c.read_exact(4), "little")
    return c.read_exact(n).decode("utf-8", "replace") if n else "FAIL"


def _sync_send(dev: AdbDevice, source: bytes | Path, remote: str, mode: int, timeout: float) -> int:
    """SYNC SEND (AOSP adb SYNC.TXT), reading the FAIL reason adbutils' push drops."""
    path = f"{remote},{0o100000 | mode}".encode()
    total = 0
    c = _sync_open(dev, timeout)
    try:
        sock = c.conn
        send_error: OSError | None = None
        try:
            sock.sendall(b"SEND" + struct.pack("<I", len(path)) + path)
            for chunk in _chunks(source, 64 * 1024):
                sock.sendall(b"DATA" + struct.pack("<I", len(chunk)) + chunk)
                total += len(chunk)
            sock.sendall(b"DONE" + struct.pack("<I", int(time.time())))
        except TimeoutError:
            raise
        except OSError as e:  # the device may answer FAIL and hang up mid-transfer
            send_error = e
        try:
            status = c.read_exact(4)
        except (EOFError, OSError):
            if send_error is not None:
                raise send_error from None
            raise
        if status == b"FAIL":
            raise _PushRefused(_read_fail(c))
        if status != b"OKAY":
            raise AdbError(f"unexpected sync answer {status!r} to SEND {remote}")
        return total
    finally:
        c.close()


def _sync_recv(dev: AdbDevice, remote: str, timeout: float) -> bytes:
    """SYNC RECV: DATA chunks until DONE, or FAIL with a reason (a missing file)."""
    data = bytearray()
    c = _sync_open(dev, timeout)
    try:
        p = remote.encode()
        c.conn.sendall(b"RECV" + struct.pack("<I", len(p)) + p)
        while True:
            kind = c.read_exact(4)
            if kind == b"DATA":
                n = int.from_bytes(c.read_exact(4), "little")
                data += c.read_exact(n)
            elif kind == b"DONE":
                return bytes(data)
            elif kind == b"FAIL":
                raise _PushRefused(_read_fail(c))
            else:
                raise AdbError(f"unexpected sync answer {kind!r} to RECV {remote}")
    finally:
        c.close()


def _chunks(source: bytes | Path, size: int) -> Iterator[bytes]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        mv = memoryview(source)
        for i in range(0, len(mv), size):
            yield bytes(mv[i : i + size])
        return
    with open(source, "rb") as f:
        yield from iter(lambda: f.read(size), b"")
