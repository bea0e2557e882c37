"""A private adb server for tests, benchmarks and demos: ``adb -P PORT server nodaemon``
with ``HOME`` in a temporary directory, owned by this process.

adbutils does not start a server on a custom port by itself (its auto-start ignores the
port), so :class:`AdbServer` runs one as a child process with a temporary ``HOME`` (adb
writes ``~/.android/adbkey`` there) and kills it on :meth:`AdbServer.stop`. It serves only
the devices :meth:`AdbServer.connect` attaches, such as the emulated phone in
``devices/emulated_device.py``.

Not part of the shipped package: ``pytest_edgeopt`` never imports ``devices``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO

import adbutils

from pytest_edgeopt.targets.android.server import (
    DEFAULT_HOST,
    AdbServerClient,
    AdbServerUnavailable,
    check_server,
    disconnect_device,
    format_adb_address,
    reconnect_device,
    wait_for_state,
)

__all__ = ["EMULATOR_PORTS", "AdbServer", "bundled_adb", "find_adb", "free_port"]

#: adb attaches anything listening on an odd port here as ``emulator-N``.
EMULATOR_PORTS = range(5555, 5586)


def bundled_adb() -> str | None:
    """The adb binary the adbutils wheel bundles (adb 36), ``None`` if it has none."""
    path = Path(adbutils.__file__).parent / "binaries" / ("adb.exe" if os.name == "nt" else "adb")
    return str(path) if path.is_file() and os.access(path, os.X_OK) else None


def find_adb(path: str | os.PathLike[str] | None = None) -> str:
    """The adb binary: ``path`` if given, else ``adb`` on ``PATH``, else the one bundled
    in the adbutils wheel. Raises :class:`AdbServerUnavailable` when none is usable."""
    if path is not None:
        p = Path(path)
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
        raise AdbServerUnavailable(f"adb binary {str(p)!r} does not exist or is not executable")
    found = shutil.which("adb") or bundled_adb()
    if found:
        return found
    raise AdbServerUnavailable(
        "no adb binary: install Android platform-tools (Debian: apt-get install adb) or "
        "reinstall adbutils, whose wheel bundles one"
    )


def free_port(host: str = DEFAULT_HOST) -> int:
    """A TCP port the OS just reported free, never one in :data:`EMULATOR_PORTS` (adb
    would attach a device listening there as an emulator)."""
    while True:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port not in EMULATOR_PORTS:
            return port


class AdbServer:
    """A private adb server: ``adb -P PORT server nodaemon`` with ``HOME`` in a temporary
    directory, owned by this process (so :meth:`stop` can always kill it). It serves only
    the devices :meth:`connect` attaches: no USB scan (a second server grabbing USB
    devices fights the user's own server over them), no emulator-port scan, no mDNS.

    >>> with AdbServer() as server:                      # doctest: +SKIP
    ...     server.connect("127.0.0.1:40123")
    ...     server.wait_for_state("127.0.0.1:40123")
    """

    def __init__(
        self,
        port: int = 0,
        *,
        adb: str | os.PathLike[str] | None = None,
        host: str = DEFAULT_HOST,
        home: Path | None = None,
        start_timeout: float = 20.0,
    ) -> None:
        self.adb = find_adb(adb)
        self.host = host
        self.port = port
        self.start_timeout = start_timeout
        self._home_arg = home
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.home: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def address(self) -> str:
        return format_adb_address(self.host, self.port)

    @property
    def client(self) -> AdbServerClient:
        return AdbServerClient(self.host, self.port)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def env(self) -> dict[str, str]:
        """The environment the server and :meth:`run` get (also right for other adb
        command lines aimed at this server)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANDROID_", "ADB_"))}
        assert self.home is not None, "the server is not started"
        env["HOME"] = str(self.home)
        env["ANDROID_ADB_SERVER_PORT"] = str(self.port)
        # No mDNS (LAN traffic), no USB scan, no emulator-port scan (5555-5585): only the
        # devices connected by address (AOSP adb client/main.cpp).
        env.update(ADB_MDNS="0", ADB_USB="0", ADB_EMU="0")
        return env

    def run(self, *args: str, timeout: float = 30.0, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        """``adb -P PORT ARGS...`` against this server; bytes stdout/stderr; never raises
        on a non-zero exit (``subprocess.TimeoutExpired`` after ``timeout``)."""
        return subprocess.run(
            [self.adb, "-P", str(self.port), *args],
            env=self.env,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
        )

    def start(self) -> AdbServer:
        """Start the server and wait until it answers; returns ``self``."""
        if self._proc is not None:
            return self
        if self._home_arg is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="edgeopt-adb-home-")
            self.home = Path(self._tmp.name)
        else:
            self.home = Path(self._home_arg)
            self.home.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port(self.host)
        self._log = open(self.home / "adb-server.log", "wb")
        self._proc = subprocess.Popen(
            [self.adb, "-P", str(self.port), "server", "nodaemon"],
            env=self.env,
            cwd=self.home,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._proc.poll() is not None:
                log = self.log_tail()
                self.stop()
                raise AdbServerUnavailable(f"adb server on port {self.port} exited at start-up:\n{log}")
            try:
                check_server(self.client, timeout=1.0)
                return self
            except AdbServerUnavailable:
                if time.monotonic() > deadline:
                    log = self.log_tail()
                    self.stop()
                    raise AdbServerUnavailable(
                        f"adb server on port {self.port} did not answer within {self.start_timeout:g} s:\n{log}"
                    ) from None
                time.sleep(0.1)

    def log_tail(self, lines: int = 20) -> str:
        if self.home is None or not (self.home / "adb-server.log").exists():
            return ""
        text = (self.home / "adb-server.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """``adb kill-server``, then make sure the process is gone (SIGTERM, SIGKILL)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                try:
                    self.run("kill-server", timeout=10)
                except (OSError, subprocess.TimeoutExpired):
                    pass
            for send in (None, proc.terminate, proc.kill):
                if send is not None and proc.poll() is None:
                    send()
                try:
                    proc.wait(timeout=5)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def connect(self, address: str, timeout: float = 15.0) -> None:
        """Attach the device at ``address`` and wait until it is in state ``device``
        (:func:`reconnect_device`: also brings back a device that restarted)."""
        reconnect_device(self.client, address, timeout)

    def disconnect(self, address: str) -> str:
        return disconnect_device(self.client, address)

    def wait_for_state(self, serial: str, state: str = "device", timeout: float = 30.0) -> None:
        wait_for_state(self.client, serial, state, timeout)

    def __enter__(self) -> AdbServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
