"""Android targets: TFLite's ``benchmark_model`` on a phone, driven over adb.

``android_gpu`` runs it with the GPU delegate (``--use_gpu=true``), ``android_cpu`` on the
phone's CPU with the XNNPACK delegate (``--use_xnnpack=true``). Everything goes through an
adb server (adbutils speaks its client protocol; see :mod:`pytest_edgeopt.targets.android.server`).

On the device, one run directory ``/data/local/tmp/edgeopt-<random>`` per device per
session holds the ``benchmark_model`` binary (pushed once, skipped when the same bytes
are there: ``sha256sum`` on the device, or a ``.sha256`` marker), the models (pushed once
each, named by content hash) and the eval data. :meth:`AndroidTarget.close` removes it
(shared by the ``android_cpu`` and ``android_gpu`` targets of a device: the last one to
close removes it); an interrupted run removes it at exit (``atexit``, and SIGTERM when
nobody else handles it). Nothing is written outside the run directory.

A run that cannot clean up (the device vanished mid-run, the host process was killed
with SIGKILL) leaves its directory behind, so each one carries an ``owner`` file (host,
pid, process start, creation time) and a session's first use of a device sweeps away the
``edgeopt-*`` directories that are provably abandoned: the same host's whose process is
gone, and anyone's with nothing new in them for 24 hours (:func:`abandoned_reason`). A
directory without an owner file (a user's fixed ``run_dir``) is never touched.

Faults, per step (push, run, pull...):

- no answer within ``step_timeout_s`` -> :class:`TargetError` naming device and step;
- the device drops off adb mid-step -> reconnect (``adb disconnect``/``connect`` for
  ``HOST:PORT`` serials, then poll for state ``device``) and retry the step once, then
  :class:`TargetError` naming device and step; a device that did not come back fails
  each later step at once (after one quick reconnect attempt);
- ``benchmark_model`` exits non-zero -> :class:`TargetError` with the exit code (and the
  signal's name for 128+N) and the tail of its output;
- no binary, or one the device cannot execute (wrong ABI: exit 126, ``Exec format error``,
  ``not executable``) -> :class:`TargetUnavailable` naming ``--edgeopt-benchmark-model``;
- the device's storage is full on push -> :class:`TargetError` saying so and how many
  bytes were needed.

Plain Python (no pytest); tensorflow is never imported.
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
import statistics
import struct
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

import numpy as np
from adbutils import AdbClient, AdbDevice, AdbError, AdbTimeout

from pytest_edgeopt.targets.android.server import (
    AdbServerError,
    AdbServerUnavailable,
    check_server,
    client_for,
    default_adb_address,
    device_state,
    format_adb_address,
    is_tcp_serial,
    reconnect_device,
)
from pytest_edgeopt.targets.android.benchmark_output import BenchmarkOutput, BenchmarkOutputError, output_tail, parse_benchmark_output
from pytest_edgeopt.results import LatencyStats
from pytest_edgeopt.tensors import ModelIO, TensorSpec, from_model_output, to_model_input
from pytest_edgeopt.targets.base import Device, Discovery, LatencyResult, LatencySettings, TargetError, TargetUnavailable

__all__ = [
    "AndroidTarget",
    "DeviceLink",
    "RunDirOwner",
    "ShellResult",
    "BENCHMARK_MODEL_OPTION",
    "abandoned_reason",
    "benchmark_args",
    "discover_android",
    "parse_dumpsys_battery",
    "parse_run_dir_listing",
    "predict_script",
    "sweep_abandoned_run_dirs",
    "validate_remote_path",
    "validate_serial",
]

#: The plugin option that names the host-side benchmark_model binary.
BENCHMARK_MODEL_OPTION = "--edgeopt-benchmark-model"
#: Where everything goes on the device (the only world-writable place adb shell has).
REMOTE_ROOT = "/data/local/tmp"
RUN_DIR_PREFIX = "edgeopt-"

HOW_TO_GET_BENCHMARK_MODEL = (
    f"pass {BENCHMARK_MODEL_OPTION}=PATH to an Android build of TFLite's benchmark_model for the "
    "device's ABI (prebuilt nightlies: android_aarch64_benchmark_model, android_arm_benchmark_model; "
    "or `bazel build -c opt --config=android_arm64 //tflite/tools/benchmark:benchmark_model` in LiteRT)"
)

_SERIAL_RE = re.compile(r"^[A-Za-z0-9._:\[\]-]{1,128}$")
_PATH_PART_RE = re.compile(r"^[A-Za-z0-9._-]+$")
_MASK_RE = re.compile(r"^(?:0[xX])?[0-9a-fA-F]{1,16}$")
_EXEC_FAILURE_RE = re.compile(
    r"Exec format error|not executable|cannot execute|wrong ELF class|is \d+-bit instead of \d+-bit"
    r"|unexpected e_machine|syntax error: .*unexpected",
    re.IGNORECASE,
)
#: benchmark_model lines that say the device has no GPU the delegate can use (not the model's fault).
_NO_GPU_RE = re.compile(
    r"OpenCL library not loaded|libOpenCL\S* not found|GPU acceleration is unsupported|"
    r"(?:EGL|OpenGL|GLES)\S* (?:is )?not (?:available|supported)|No GPU (?:found|available)",
    re.IGNORECASE,
)
_NO_SPACE_RE = re.compile(r"No space left on device|ENOSPC|disk full|storage full|out of space", re.IGNORECASE)

#: ELF e_machine -> the Android ABIs that run it.
_ELF_ABIS = {183: ("arm64-v8a",), 40: ("armeabi-v7a", "armeabi"), 62: ("x86_64",), 3: ("x86",), 243: ("riscv64",)}
_ELF_NAMES = {183: "aarch64", 40: "arm", 62: "x86-64", 3: "x86", 243: "riscv"}

#: getprop names read at discovery, by the key they get in Device.details.
DEVICE_PROPS = {
    "model": "ro.product.model",
    "product": "ro.product.name",
    "device": "ro.product.device",
    "manufacturer": "ro.product.manufacturer",
    "abi": "ro.product.cpu.abi",
    "abilist": "ro.product.cpu.abilist",
    "sdk": "ro.build.version.sdk",
    "release": "ro.build.version.release",
}

T = TypeVar("T")


# --------------------------------------------------------------------------- validation


def validate_serial(serial: str) -> str:
    """An adb serial made only of ``[A-Za-z0-9._:[]-]`` (USB serials, ``emulator-5554``,
    ``HOST:PORT``, ``[V6]:PORT``); ``ValueError`` otherwise (it goes into shell-free
    protocol strings, but also into messages and file names)."""
    if not isinstance(serial, str) or not _SERIAL_RE.match(serial):
        raise ValueError(f"invalid adb serial {serial!r} (allowed: letters, digits, . _ : - [ ])")
    return serial


def validate_remote_path(path: str, root: str = REMOTE_ROOT) -> str:
    """A device path strictly under ``root`` whose components are ``[A-Za-z0-9._-]+``
    (no ``.``/``..``, no spaces or shell characters); ``ValueError`` otherwise."""
    if not isinstance(path, str) or not path.startswith(root + "/"):
        raise ValueError(f"device path {path!r} is not under {root}/")
    parts = path[len(root) + 1 :].split("/")
    for part in parts:
        if part in ("", ".", "..") or not _PATH_PART_RE.match(part):
            raise ValueError(f"invalid device path {path!r} (component {part!r})")
    return path


def validate_affinity_mask(mask: str) -> str:
    """A ``taskset`` CPU mask in hex (``f0``, ``0xF0``); ``ValueError`` otherwise."""
    if not isinstance(mask, str) or not _MASK_RE.match(mask) or int(mask, 16) == 0:
        raise ValueError(f"invalid CPU affinity mask {mask!r} (expected a non-zero hex mask such as f0)")
    return mask


def sanitize_label(serial: str) -> str:
    """A test-id and file-name friendly form of a serial (``127.0.0.1:5555`` -> ``127.0.0.1_5555``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", serial).strip("_") or "android"


def signal_name(returncode: int) -> str | None:
    """``SIGSEGV`` for 139 (a shell's 128+N), ``None`` when it is not a signal exit."""
    n = returncode - 128 if returncode > 128 else -returncode if returncode < 0 else 0
    try:
        return signal.Signals(n).name if n > 0 else None
    except ValueError:
        return None


def describe_exit(returncode: int) -> str:
    sig = signal_name(returncode)
    return f"exit code {returncode} ({sig})" if sig else f"exit code {returncode}"


def elf_machine(path: Path) -> int | None:
    """ELF ``e_machine`` of a file, ``None`` if it is not an ELF file (a script, say)."""
    try:
        with open(path, "rb") as f:
            head = f.read(20)
    except OSError:
        return None
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    return struct.unpack("<H" if head[5] == 1 else ">H", head[18:20])[0]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- adb plumbing


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
            except (AdbTimeout, TimeoutError, socket.timeout, _StepTimeout):
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
        except (socket.timeout, TimeoutError):
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


# --------------------------------------------------------------------------- discovery


def read_props(link: DeviceLink, names: Sequence[str]) -> dict[str, str]:
    """``getprop`` of several properties in one shell command (``{}`` entries are ``""``)."""
    for n in names:
        if not re.match(r"^[A-Za-z0-9._-]+$", n):
            raise ValueError(f"invalid property name {n!r}")
    cmd = "; ".join(f"echo {shlex.quote(n)}=\"$(getprop {shlex.quote(n)})\"" for n in names)
    res = link.shell("read device properties", cmd, timeout=min(link.step_timeout_s, 30.0))
    props: dict[str, str] = {}
    for line in res.output.splitlines():
        key, sep, value = line.partition("=")
        if sep and key in names:
            props[key] = value.strip()
    return props


def discover_android(adb: str | None = None, serials: Sequence[str] = (), *, timeout_s: float = 30.0) -> Discovery:
    """The devices in state ``device`` on the adb server at ``adb`` (``HOST:PORT``;
    default :func:`~pytest_edgeopt.targets.android.server.default_adb_address`): all of them, or
    the given ``serials``.

    A given serial that is not listed, offline or unauthorized is named in
    ``Discovery.missing`` (the others are still returned). No server: no devices, and
    ``missing`` says how to start one. Each device's ``details`` carry its model,
    product, ABI, SDK level and the adb server address, read with ``getprop``.
    """
    address = adb or default_adb_address()
    try:
        client = client_for(address)
        check_server(client, timeout=min(5.0, timeout_s))
        listed = {info.serial: info.state for info in client.list()}
    except AdbServerUnavailable as e:
        return Discovery((), missing=str(e))
    except (AdbError, OSError, ValueError) as e:
        return Discovery((), missing=f"adb server at {address} failed to list devices: {e}")

    problems: list[str] = []
    wanted: list[str] = []
    for serial in serials or sorted(s for s, st in listed.items() if st == "device"):
        try:
            validate_serial(serial)
        except ValueError as e:
            problems.append(str(e))
            continue
        state = listed.get(serial)
        if state == "device":
            wanted.append(serial)
        elif state is None:
            attached = ", ".join(f"{s} ({st})" for s, st in sorted(listed.items())) or "none"
            hint = f"; `adb -P {client.port} connect {serial}` first" if is_tcp_serial(serial) else ""
            problems.append(f"device {serial} is not attached to the adb server at {address} (attached: {attached}){hint}")
        elif state == "unauthorized":
            problems.append(f"device {serial} is unauthorized: accept the USB debugging prompt on the phone")
        else:
            problems.append(f"device {serial} is {state} on the adb server at {address}")

    devices: list[Device] = []
    for serial in wanted:
        link = DeviceLink(client, serial, step_timeout_s=timeout_s, reconnect_timeout_s=min(10.0, timeout_s))
        try:
            props = read_props(link, list(DEVICE_PROPS.values()))
        except TargetError as e:
            problems.append(str(e))
            continue
        details: dict[str, Any] = {key: props.get(prop, "") for key, prop in DEVICE_PROPS.items()}
        details["serial"] = serial
        details["adb_server"] = address
        details["transport"] = "tcp" if is_tcp_serial(serial) else "usb"
        devices.append(Device(kind="android", id=serial, label=sanitize_label(serial), details=details))

    if not devices and not problems:
        others = ", ".join(f"{s} ({st})" for s, st in sorted(listed.items()))
        problems.append(
            f"no Android device in state 'device' on the adb server at {address}"
            + (f" (listed: {others})" if others else "")
            + ": plug one in with USB debugging on, or `adb connect HOST:PORT`"
        )
    return Discovery(tuple(devices), missing="; ".join(problems) or None)


# --------------------------------------------------------------------------- commands


def benchmark_args(
    binary: str,
    graph: str,
    *,
    gpu: bool,
    threads: int = 1,
    warmup_runs: int = 1,
    warmup_min_secs: float | None = None,
    num_runs: int = 50,
    min_secs: float = 1.0,
    max_secs: float | None = None,
    gpu_precision_loss_allowed: bool | None = None,
    affinity_mask: str | None = None,
    report_peak_memory: bool = True,
    extra: Sequence[str] = (),
) -> list[str]:
    """The argv of one ``benchmark_model`` run (``taskset MASK`` first when pinned).

    GPU runs add ``--use_gpu=true`` and leave XNNPACK as the runtime's default for any
    CPU fallback; CPU runs add ``--use_gpu=false --use_xnnpack=true``.
    """
    validate_remote_path(binary)
    validate_remote_path(graph)
    if threads < 1:
        raise ValueError(f"threads must be >= 1, not {threads}")
    args: list[str] = []
    if affinity_mask:
        args += ["taskset", validate_affinity_mask(affinity_mask)]
    args += [
        binary,
        f"--graph={graph}",
        f"--num_threads={threads}",
        f"--warmup_runs={max(0, warmup_runs)}",
    ]
    if warmup_min_secs is not None:
        args.append(f"--warmup_min_secs={warmup_min_secs:g}")
    args += [f"--num_runs={max(1, num_runs)}", f"--min_secs={min_secs:g}"]
    if max_secs is not None:
        args.append(f"--max_secs={max_secs:g}")
    if gpu:
        args.append("--use_gpu=true")
        if gpu_precision_loss_allowed is not None:
            args.append(f"--gpu_precision_loss_allowed={str(gpu_precision_loss_allowed).lower()}")
    else:
        args += ["--use_gpu=false", "--use_xnnpack=true"]
    if report_peak_memory:
        args.append("--report_peak_memory_footprint=true")
    args += list(extra)
    return args


def shell_join(args: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in args)


def value_files_item(name: str, path: str) -> str:
    """One ``--input_layer_value_files`` item: ``NAME:PATH`` with ``:`` in the name
    written ``::`` (``SplitInputLayerNameAndValueFile`` in benchmark_tflite_model.cc)."""
    if "," in name or "," in path or ":" in path:
        raise ValueError(f"input name {name!r} / path {path!r} cannot go into --input_layer_value_files")
    return f"{name.replace(':', '::')}:{path}"


def flag_safe_input_name(name: str) -> str:
    """The input's own name when the flags can carry it, else ``input_0``: the tool maps
    ``--input_layer`` entries to inputs by position and only warns on a name mismatch."""
    return name if name and re.match(r"^[A-Za-z0-9_./:-]+$", name) else "input_0"


def predict_script(
    run_args: Sequence[str],
    *,
    input_name: str,
    row_shape: Sequence[int],
    row_bytes: int,
    chunk_rows: int,
    total_rows: int,
    file_rows: int,
    input_path: str,
    work_dir: str,
    output_path: str,
    pid_file: str | None = None,
) -> str:
    """One shell script that feeds ``total_rows`` rows of ``input_path`` through
    ``benchmark_model`` in chunks of ``chunk_rows`` and leaves all outputs, chunk after
    chunk, in ``output_path``.

    ``run_args`` is the run's argv without input/output flags. When one chunk covers the
    whole file it is read directly; otherwise ``dd`` cuts each chunk into
    ``work_dir/chunk.in``. Each run's log goes to ``work_dir/run.log`` and is printed only
    when the run fails (then the script exits with the run's exit code); a ``chunk N``
    line per chunk keeps the adb stream alive.
    """
    for p in (input_path, work_dir, output_path):
        validate_remote_path(p)
    if chunk_rows < 1 or total_rows < 1 or file_rows < total_rows:
        raise ValueError("bad chunking")
    q = shlex.quote
    chunk_in, chunk_out, log = f"{work_dir}/chunk.in", f"{work_dir}/chunk.out", f"{work_dir}/run.log"

    def run(rows: int, infile: str, outfile: str) -> str:
        shape = ",".join(str(d) for d in (rows, *row_shape))
        argv = [
            *run_args,
            f"--input_layer={input_name}",
            f"--input_layer_shape={shape}",
            f"--input_layer_value_files={value_files_item(input_name, infile)}",
            f"--output_filepath={outfile}",
        ]
        return f"{shell_join(argv)} > {q(log)} 2>&1 || {{ rc=$?; cat {q(log)}; exit $rc; }}"

    lines = [f"rm -f {q(output_path)}"]
    if pid_file:
        lines.append(f"echo $$ > {q(pid_file)}")
    full, tail = divmod(total_rows, chunk_rows)
    if full == 1 and tail == 0 and file_rows == total_rows:
        lines.append(run(total_rows, input_path, output_path))
        lines.append("echo chunk 1")
    else:
        if full:
            lines.append(
                f"i=0; while [ $i -lt {full} ]; do "
                f"dd if={q(input_path)} of={q(chunk_in)} bs={row_bytes} skip=$((i*{chunk_rows})) "
                f"count={chunk_rows} 2>/dev/null || exit 90; "
                f"{run(chunk_rows, chunk_in, chunk_out)}; "
                f"cat {q(chunk_out)} >> {q(output_path)} || exit 91; i=$((i+1)); echo chunk $i; done"
            )
        if tail:
            lines.append(
                f"dd if={q(input_path)} of={q(chunk_in)} bs={row_bytes} skip={full * chunk_rows} "
                f"count={tail} 2>/dev/null || exit 90"
            )
            lines.append(run(tail, chunk_in, chunk_out))
            lines.append(f"cat {q(chunk_out)} >> {q(output_path)} || exit 91")
            lines.append("echo chunk tail")
    return "\n".join(lines)


# --------------------------------------------------------------------------- run directory

#: The marker in each run directory this package creates (not in a fixed ``run_dir``).
OWNER_FILE = "owner"
OWNER_HEADER = "pytest-edgeopt run dir v1"
#: A run directory with no new file for this long (device clock) is abandoned, whoever owns it.
ABANDONED_AFTER_S = 24 * 3600.0
_RUN_DIR_NAME_RE = re.compile(rf"^{RUN_DIR_PREFIX}[A-Za-z0-9._-]+$")
_OWNER_VALUE_RE = re.compile(r"[^A-Za-z0-9._:/@+\[\]-]")


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
    def current(cls) -> "RunDirOwner":
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

    def same_host(self, other: "RunDirOwner") -> bool:
        """Same host name, machine id and pid namespace: its pids are our pids."""
        return (self.host, self.machine, self.pidns) == (other.host, other.machine, other.pidns)

    def to_text(self) -> str:
        return (
            f"{OWNER_HEADER}\nhost={self.host}\nmachine={self.machine}\npidns={self.pidns}\n"
            f"pid={self.pid}\nstart={self.start}\ncreated={self.created:.3f}\n"
        )

    @classmethod
    def parse(cls, text: str) -> "RunDirOwner | None":
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
    with _RunDir._lock:
        in_use = {rd.path for rd in _RunDir._registry.values()}
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


class _RunDir:
    """The per-device, per-session directory under /data/local/tmp (shared by the
    targets of one device; reference counted; removed at exit if still there)."""

    _registry: dict[tuple[str, str, str | None], "_RunDir"] = {}
    _lock = threading.Lock()

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
    def acquire(cls, link: DeviceLink, run_dir: str | None) -> "_RunDir":
        key = (link.server, link.serial, run_dir)
        with cls._lock:
            rd = cls._registry.get(key)
            if rd is None:
                path = run_dir or f"{REMOTE_ROOT}/{RUN_DIR_PREFIX}{secrets.token_hex(4)}"
                rd = cls(path, owned=run_dir is None)
                rd.key = key
                cls._registry[key] = rd
            rd.refs += 1
            rd.link = link
            _install_cleanup()
            return rd

    def release(self, link: DeviceLink) -> None:
        with self._lock:
            self.refs -= 1
            if self.refs > 0:
                return
            self._registry.pop(self.key, None)  # type: ignore[arg-type]
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


_cleanup_installed = False


def _cleanup_all(timeout: float = 10.0) -> None:
    """Remove every run directory still on a device (atexit / SIGTERM)."""
    with _RunDir._lock:
        dirs = list(_RunDir._registry.values())
        _RunDir._registry.clear()
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


# --------------------------------------------------------------------------- the target


class AndroidTarget:
    """``benchmark_model`` on one Android device: ``gpu=True`` is ``android_gpu`` (GPU
    delegate), ``gpu=False`` is ``android_cpu`` (XNNPACK).

    ``adb`` is the adb server address (default: the device's ``details["adb_server"]``,
    else :func:`~pytest_edgeopt.targets.android.server.default_adb_address`); ``benchmark_model`` the
    host path of an Android build of the tool (the ``--edgeopt-benchmark-model`` option);
    ``threads`` the interpreter threads (default: ``LatencySettings.threads``);
    ``affinity_mask`` a hex CPU mask to pin the tool with ``taskset`` (big cores differ per
    device); ``step_timeout_s`` bounds each push, run and pull, ``reconnect_timeout_s``
    the wait for a device that dropped off adb (default: ``step_timeout_s``, at most
    30 s); ``run_dir`` a fixed directory under /data/local/tmp to reuse across sessions
    (kept on close, with its binary; no owner marker, so no sweep ever removes it)
    instead of a fresh random one; ``repeats`` how many times :meth:`latency` runs the
    tool; ``predict_batch`` the most eval samples per invocation.
    """

    def __init__(
        self,
        name: str,
        device: Device,
        *,
        adb: str | None = None,
        benchmark_model: Path | str | None,
        gpu: bool,
        threads: int | None = None,
        affinity_mask: str | None = None,
        step_timeout_s: float = 120.0,
        run_dir: str | None = None,
        repeats: int = 5,
        gpu_precision_loss_allowed: bool | None = None,
        predict_batch: int = 64,
        reconnect_timeout_s: float | None = None,
    ) -> None:
        self.name = name
        self.device = device
        self.gpu = gpu
        self.threads = threads
        self.affinity_mask = validate_affinity_mask(affinity_mask) if affinity_mask else None
        self.benchmark_model = Path(benchmark_model) if benchmark_model else None
        self.repeats = max(1, int(repeats))
        self.gpu_precision_loss_allowed = gpu_precision_loss_allowed
        self.predict_batch = max(1, int(predict_batch))
        self.run_dir_arg = validate_remote_path(run_dir) if run_dir else None
        serial = validate_serial(device.id)
        self.adb = adb or str(device.details.get("adb_server") or "") or default_adb_address()
        self.link = DeviceLink(
            client_for(self.adb),
            serial,
            step_timeout_s=step_timeout_s,
            reconnect_timeout_s=reconnect_timeout_s,
            who=f"{name} on {serial}",
        )
        self._rundir: _RunDir | None = None
        self._binary: str | None = None
        self._run_count = 0

    def __repr__(self) -> str:
        return f"AndroidTarget({self.name!r}, {self.device.id!r}, adb={self.adb!r})"

    # -- set-up -----------------------------------------------------------------------

    def _check_host_binary(self) -> tuple[Path, str]:
        path = self.benchmark_model
        if path is None:
            raise TargetUnavailable(f"{self.link.who}: no benchmark_model binary given: {HOW_TO_GET_BENCHMARK_MODEL}")
        if not path.is_file():
            raise TargetUnavailable(
                f"{self.link.who}: benchmark_model binary {str(path)!r} does not exist: {HOW_TO_GET_BENCHMARK_MODEL}"
            )
        machine = elf_machine(path)
        abis = [a for a in str(self.device.details.get("abilist") or self.device.details.get("abi") or "").split(",") if a]
        if machine is not None and abis and not set(_ELF_ABIS.get(machine, ())) & set(abis):
            raise TargetUnavailable(
                f"{self.link.who}: benchmark_model binary {str(path)!r} is built for "
                f"{_ELF_NAMES.get(machine, f'ELF machine {machine}')} but the device runs {', '.join(abis)}: "
                f"{HOW_TO_GET_BENCHMARK_MODEL}"
            )
        return path, sha256_file(path)

    def prepare(self) -> None:
        """Create the run directory and push ``benchmark_model`` (once per device per
        session). Called by :meth:`latency`/:meth:`predict`; call it early to fail fast."""
        if self._binary is not None:
            return
        local, sha = self._check_host_binary()
        if self._rundir is None:
            self._rundir = _RunDir.acquire(self.link, self.run_dir_arg)
        self._rundir.ensure(self.link)
        self._binary = self._rundir.ensure_binary(self.link, local, sha)

    def close(self) -> None:
        """Remove the run directory (when this is the last target using it). Best effort:
        a device that is gone by then gets a ``RuntimeWarning``, not an error."""
        rd, self._rundir, self._binary = self._rundir, None, None
        if rd is not None:
            try:
                rd.release(self.link)
            except TargetError as e:
                later = " (the next session that uses the device removes it)" if rd.owned else ""
                warnings.warn(f"could not remove {rd.path}{later}: {e}", RuntimeWarning, stacklevel=2)

    @property
    def run_dir(self) -> str | None:
        """The device directory this target uses (``None`` before the first run)."""
        return self._rundir.path if self._rundir else None

    # -- running the tool -------------------------------------------------------------

    def _delegate_flags(self, threads: int) -> dict[str, Any]:
        return {
            "gpu": self.gpu,
            "threads": threads,
            "gpu_precision_loss_allowed": self.gpu_precision_loss_allowed,
            "affinity_mask": self.affinity_mask,
        }

    def _pid_file(self) -> str:
        """A fresh pid file name per run: a run that never started leaves none behind."""
        assert self._rundir is not None
        self._run_count += 1
        return f"{self._rundir.path}/run-{os.getpid()}-{self._run_count}.pid"

    def _kill_stale(self, pid_file: str) -> None:
        """After a timeout: stop the run left on the device, by the pid it wrote."""
        q = shlex.quote(pid_file)
        # Only that pid, and only while it still is a benchmark_model run (pids get reused).
        cmd = (
            f"p=$(cat {q} 2>/dev/null); [ -n \"$p\" ] && grep -q benchmark_model /proc/$p/cmdline 2>/dev/null "
            f"&& {{ pkill -P \"$p\" 2>/dev/null; kill \"$p\" 2>/dev/null; }}; rm -f {q}; true"
        )
        try:
            DeviceLink(self.link.client, self.link.serial, step_timeout_s=5.0, who=self.link.who).shell(
                "stop the timed-out run", cmd, retry=False
            )
        except TargetError:
            pass

    def _run_tool(self, step: str, script: str, pid_file: str, *, deadline_s: float | None = None) -> ShellResult:
        try:
            res = self.link.shell(step, script, deadline_s=deadline_s)
        except TargetError as e:
            if "timed out" in str(e):
                self._kill_stale(pid_file)
            raise
        if res.returncode != 0:
            self._raise_for_exit(step, res)
        return res

    def _raise_for_exit(self, step: str, res: ShellResult) -> None:
        tail = output_tail(res.output)
        if res.returncode == 126 or _EXEC_FAILURE_RE.search(res.output):
            abi = self.device.details.get("abi") or "unknown ABI"
            raise TargetUnavailable(
                f"{self.link.who}: the device cannot execute benchmark_model {str(self.benchmark_model)!r} "
                f"(step '{step}', {describe_exit(res.returncode)}; device ABI {abi}): {tail}\n"
                f"{HOW_TO_GET_BENCHMARK_MODEL}"
            )
        if self.gpu and _NO_GPU_RE.search(res.output):
            raise TargetUnavailable(
                f"{self.link.who}: the device has no GPU that TFLite's GPU delegate can use "
                f"(step '{step}', {describe_exit(res.returncode)}): {tail}"
            )
        raise TargetError(
            f"{self.link.who}: benchmark_model failed in step '{step}' with {describe_exit(res.returncode)}; "
            f"output ended with:\n{tail or '<no output>'}"
        )

    def latency(self, model: Path, settings: LatencySettings) -> LatencyResult:
        """Run ``benchmark_model`` ``repeats`` times on the model.

        Each run does ``settings.warmup`` warm-up invokes, then at least
        ``ceil(min_samples / repeats)`` timed invokes and ``min_time_s / repeats`` seconds
        (at most ``max_time_s / repeats``). **A sample is one run's mean latency** (the tool
        prints aggregates, not per-invoke times), so ``stats`` has ``repeats`` samples,
        each a mean of many invokes; the tool's own per-invoke min/median/p95 of every run
        are in ``extras["benchmark"]["runs"]``. ``init_ms``/``first_inference_ms`` are the
        medians over the runs; memory figures the maxima.
        """
        self.prepare()
        assert self._rundir is not None and self._binary is not None
        remote_model = self._rundir.ensure_model(self.link, Path(model))
        threads = self.threads or settings.threads
        per_run = max(1, math.ceil(settings.min_samples / self.repeats))
        args = benchmark_args(
            self._binary,
            remote_model,
            warmup_runs=settings.warmup,
            num_runs=per_run,
            min_secs=settings.min_time_s / self.repeats,
            max_secs=max(settings.max_time_s / self.repeats, settings.min_time_s / self.repeats),
            report_peak_memory=True,
            **self._delegate_flags(threads),
        )
        outputs: list[BenchmarkOutput] = []
        for i in range(self.repeats):
            pid_file = self._pid_file()
            script = f"echo $$ > {shlex.quote(pid_file)}; exec {shell_join(args)} 2>&1"
            step = f"benchmark {Path(model).name} (run {i + 1}/{self.repeats})"
            res = self._run_tool(step, script, pid_file)
            try:
                outputs.append(parse_benchmark_output(res.output))
            except BenchmarkOutputError as e:
                raise TargetError(f"{self.link.who}: step '{step}': {e}") from None
        return self._latency_result(outputs, args, threads)

    def _latency_result(self, outputs: list[BenchmarkOutput], args: list[str], threads: int) -> LatencyResult:
        def med(values: list[float | None]) -> float | None:
            vals = [v for v in values if v is not None]
            return float(statistics.median(vals)) if vals else None

        def top(values: list[float | None]) -> float | None:
            vals = [v for v in values if v is not None]
            return float(max(vals)) if vals else None

        first = outputs[0]
        wanted = "GPU" if self.gpu else "XNNPACK"
        outcome = first.delegate(wanted)
        init_us = med([o.init_us if o.init_us is not None else (o.init_ms * 1000 if o.init_ms is not None else None) for o in outputs])
        first_us = med([o.first_inference_us if o.first_inference_us is not None else (o.warmup.first_us if o.warmup else None) for o in outputs])
        extras: dict[str, Any] = {
            "delegation": outcome.outcome if outcome else "none",
            "delegate_kernels": outcome.kernels if outcome else 0,
            "delegate": wanted,
            "memory_init_mb": top([o.memory_init_mb for o in outputs]),
            "memory_overall_mb": top([o.memory_overall_mb for o in outputs]),
            "peak_memory_mb": top([o.peak_memory_mb for o in outputs]),
            "sample": f"mean of one benchmark_model run ({first.inference.count}+ timed invokes)",
            "threads": threads,
            "affinity_mask": self.affinity_mask,
            "benchmark": {"command": args, "runs": [o.to_dict() for o in outputs]},
        }
        if outcome is None:
            extras["delegate_note"] = f"benchmark_model applied no {wanted} delegate (see its log)"
        stats = LatencyStats(tuple(float(o.inference.avg_us) for o in outputs))
        return LatencyResult(
            stats=stats,
            init_ms=init_us / 1000.0 if init_us is not None else None,
            first_inference_ms=first_us / 1000.0 if first_us is not None else None,
            extras=extras,
        )

    # -- accuracy on the device -------------------------------------------------------

    def predict(self, model: Path, inputs: np.ndarray) -> Sequence[np.ndarray]:
        """Run the eval inputs through the model **on the device**; float outputs, one
        array per model output, sample axis first.

        How (``tflite/tools/benchmark/benchmark_tflite_model.cc`` in google-ai-edge/LiteRT):

        - ``--input_layer=NAME --input_layer_shape=N,H,W,C`` are required for value files:
          the tool fills ``inputs_`` only from them (``PopulateInputLayerInfo``), maps the
          entries to the model's inputs *by position* (a name mismatch is only a warning),
          and calls ``ResizeInputTensor`` with the shape before ``AllocateTensors`` (a
          model that cannot take the shape fails there: "Failed to allocate tensors!").
        - ``--input_layer_value_files=NAME:PATH`` (items separated by ``,``; a ``:`` in the
          name written ``::``): ``LoadInputTensorData`` reads the raw file, which must be
          exactly the resized tensor's byte size (else a FATAL abort), and copies it into
          the tensor before *every* run (``ResetInputsAndOutputs``).
        - ``--output_filepath=PATH``: ``OutputSaver::OnBenchmarkEnd`` writes, after all
          runs, the raw bytes of every output tensor of the last invoke, in output order,
          back to back, no header.

        So: the inputs are quantized to the input's dtype (:func:`~pytest_edgeopt.tensors.to_model_input`),
        written as one little-endian raw file, pushed once; one shell command runs the tool
        with ``--warmup_runs=0 --num_runs=1`` on batches of up to ``predict_batch`` samples
        (``dd`` cuts the batches on the device) and concatenates the output files; one
        pull brings them back, and they are dequantized with
        :func:`~pytest_edgeopt.tensors.from_model_output`. A model whose batch axis cannot
        be resized (exit code 1, or outputs of the wrong size) is re-run in chunks of its
        own batch size (zero-padded), still in one shell command.
        """
        self.prepare()
        assert self._rundir is not None and self._binary is not None
        io = ModelIO.of_file(model)
        if len(io.inputs) != 1:
            raise TargetError(f"{self.link.who}: predict supports models with one input; this one has {len(io.inputs)}")
        spec = io.inputs[0]
        x = np.asarray(inputs)
        if x.ndim != len(spec.shape) or x.shape[0] < 1:
            raise TargetError(
                f"{self.link.who}: inputs of shape {x.shape} do not match the model input {spec.name!r} "
                f"of shape {spec.shape} (sample axis first)"
            )
        if spec.dtype.kind not in "fiub":
            raise TargetError(f"{self.link.who}: predict does not support {spec.dtype} inputs")
        n = int(x.shape[0])
        row_shape = tuple(int(d) for d in x.shape[1:])
        static_batch = spec.shape[0] if spec.shape[0] > 0 else 1
        q = to_model_input(x, spec).astype(spec.dtype.newbyteorder("<"), copy=False)
        file_rows = math.ceil(n / static_batch) * static_batch
        if file_rows > n:
            q = np.concatenate([q, np.zeros((file_rows - n, *row_shape), dtype=q.dtype)])
        data = np.ascontiguousarray(q).tobytes()
        row_bytes = len(data) // file_rows

        out_row_shapes = self._output_row_shapes(Path(model), io, row_shape)
        remote_model = self._rundir.ensure_model(self.link, Path(model))
        work = self._rundir.predict_dir
        input_path, output_path = f"{work}/inputs.raw", f"{work}/outputs.raw"
        self.link.push(f"push eval inputs ({n} samples, {len(data)} bytes)", data, input_path)

        threads = self.threads or 1
        run_args = benchmark_args(
            self._binary,
            remote_model,
            warmup_runs=0,
            warmup_min_secs=0,
            num_runs=1,
            min_secs=0,
            report_peak_memory=False,
            **self._delegate_flags(threads),
        )
        name = flag_safe_input_name(spec.name)
        plans = [min(n, self.predict_batch)]
        if plans[0] != static_batch or n % static_batch:
            plans.append(static_batch)
        errors: list[str] = []
        pid_file = self._pid_file()
        for attempt, chunk_rows in enumerate(plans):
            total = n if attempt == 0 else file_rows
            chunks = math.ceil(total / chunk_rows)
            script = predict_script(
                run_args,
                input_name=name,
                row_shape=row_shape,
                row_bytes=row_bytes,
                chunk_rows=chunk_rows,
                total_rows=total,
                file_rows=file_rows,
                input_path=input_path,
                work_dir=work,
                output_path=output_path,
                pid_file=pid_file,
            )
            step = f"predict {Path(model).name} ({n} samples, {chunks} batch{'es' if chunks > 1 else ''} of {chunk_rows})"
            try:
                res = self.link.shell(step, script, deadline_s=self.link.step_timeout_s * chunks)
            except TargetError as e:
                if "timed out" in str(e):
                    self._kill_stale(pid_file)
                raise
            last = attempt == len(plans) - 1
            if res.returncode != 0:
                if res.returncode == 1 and not last and not _EXEC_FAILURE_RE.search(res.output):
                    errors.append(f"batch of {chunk_rows}: {output_tail(res.output, lines=5)}")
                    continue  # the batch resize was refused: fall back to the model's own batch size
                self._raise_for_exit(step, res)
            raw = self.link.pull(f"pull outputs of {Path(model).name}", output_path)
            try:
                return self._decode(raw, io.outputs, out_row_shapes, chunk_rows, total, n)
            except ValueError as e:
                if last:
                    raise TargetError(f"{self.link.who}: step '{step}': {e}" + "".join(f"; earlier: {m}" for m in errors)) from None
                errors.append(f"batch of {chunk_rows}: {e}")
        raise AssertionError("unreachable")

    @staticmethod
    def _output_row_shapes(model: Path, io: ModelIO, row_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
        """Per-sample shape of each output: from the model's signature when static, else
        from the host interpreter with the input resized to one sample."""
        shapes = [tuple(s.shape[1:]) for s in io.outputs]
        if all(d >= 0 for shp in shapes for d in shp) and all(len(s.shape) >= 1 for s in io.outputs):
            return shapes
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(model_path=str(model))
        interp.resize_tensor_input(io.inputs[0].index, [1, *row_shape])
        interp.allocate_tensors()
        return [tuple(int(d) for d in o["shape"][1:]) for o in interp.get_output_details()]

    @staticmethod
    def _decode(
        raw: bytes,
        specs: Sequence[TensorSpec],
        row_shapes: Sequence[tuple[int, ...]],
        chunk_rows: int,
        total_rows: int,
        n: int,
    ) -> list[np.ndarray]:
        """Split the concatenated per-chunk output files into per-output float arrays."""
        per_row = [int(np.prod(shp, dtype=np.int64)) * s.dtype.itemsize for s, shp in zip(specs, row_shapes)]
        expected = total_rows * sum(per_row)
        if len(raw) != expected:
            raise ValueError(
                f"the output file has {len(raw)} bytes, expected {expected} "
                f"({total_rows} samples x {sum(per_row)} bytes of outputs per sample)"
            )
        parts: list[list[np.ndarray]] = [[] for _ in specs]
        offset = 0
        for start in range(0, total_rows, chunk_rows):
            rows = min(chunk_rows, total_rows - start)
            for j, (s, shp) in enumerate(zip(specs, row_shapes)):
                size = rows * per_row[j]
                arr = np.frombuffer(raw, dtype=s.dtype.newbyteorder("<"), count=size // s.dtype.itemsize, offset=offset)
                parts[j].append(arr.reshape((rows, *shp)))
                offset += size
        return [from_model_output(np.concatenate(p)[:n].astype(s.dtype), s) for p, s in zip(parts, specs)]

    # -- device health ----------------------------------------------------------------

    def device_conditions(self) -> dict[str, Any]:
        """``state`` (``device``), battery level (%), temperature (deg C) and charging status
        from ``dumpsys battery``, ``thermal_status`` (0-6) from ``dumpsys thermalservice``
        where the device has it (Android 10+), in one shell command; ``{"state": ...,
        "error": ...}`` when the device does not answer (the error names the step)."""
        command = f"dumpsys battery; echo {_THERMAL_MARK}; dumpsys thermalservice 2>/dev/null"
        try:
            res = self.link.shell("read device conditions", command, timeout=min(self.link.step_timeout_s, 20.0))
        except TargetError as e:
            try:
                state = device_state(self.link.client, self.link.serial) or "not attached"
            except (AdbError, OSError):
                state = "unknown"
            return {"state": state, "error": str(e)}
        battery, _, thermal = res.output.partition(_THERMAL_MARK)
        out: dict[str, Any] = {"state": "device", **parse_dumpsys_battery(battery)}
        m = re.search(r"^\s*Thermal Status:\s*(\d+)\s*$", thermal, re.MULTILINE)
        if m:
            out["thermal_status"] = int(m.group(1))
        return out


_THERMAL_MARK = "__edgeopt_thermal__"


def parse_dumpsys_battery(text: str) -> dict[str, Any]:
    """``dumpsys battery`` -> ``battery_level`` (%), ``battery_temperature_c``,
    ``battery_status`` (Android's BATTERY_STATUS_* number), ``powered`` (AC/USB/wireless)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition(":")
        if sep:
            values[key.strip().lower()] = value.strip()
    out: dict[str, Any] = {}
    if values.get("level", "").lstrip("-").isdigit():
        out["battery_level"] = int(values["level"])
    if values.get("temperature", "").lstrip("-").isdigit():
        out["battery_temperature_c"] = int(values["temperature"]) / 10.0
    if values.get("status", "").isdigit():
        out["battery_status"] = int(values["status"])
    powered = [k.split()[0] for k in ("ac powered", "usb powered", "wireless powered") if values.get(k) == "true"]
    if any(k in values for k in ("ac powered", "usb powered")):
        out["powered"] = ",".join(powered) or "no"
    return out
