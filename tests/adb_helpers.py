"""A real adb server for tests, on a port and HOME of its own.

adb writes ``~/.android/adbkey`` and adbutils' auto-start ignores a custom port, so tests
start the server themselves (``adb -P PORT start-server`` with ``HOME`` set to a temporary
directory) and kill it at teardown. See ``shared/notes/FACTS.md``, "Android over adb".
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import adbutils

_EMULATOR_PORTS = range(5555, 5586)  # adb auto-attaches odd ports here as emulator-N


def free_port() -> int:
    """A free ephemeral TCP port on 127.0.0.1, never one adb takes for an emulator."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _EMULATOR_PORTS:
            return port


def bundled_adb() -> str:
    """The adb binary adbutils' wheel bundles (adb 36).

    Not ``adbutils.adb_path()``: that prefers an ``adb`` on PATH (Debian's is 29.0.6),
    and the tests should run the same adb everywhere.
    """
    path = Path(adbutils.__file__).parent / "binaries" / "adb"
    return str(path) if path.is_file() else adbutils.adb_path()


def system_adb() -> str | None:
    """An ``adb`` on PATH that is not the bundled one, if any."""
    found = shutil.which("adb")
    if found and Path(found).resolve() != Path(bundled_adb()).resolve():
        return found
    return None


class AdbServer:
    """One adb server process: ``run`` its command line, ``client`` it with adbutils."""

    def __init__(self, home: Path, binary: str | None = None, port: int | None = None) -> None:
        self.binary = binary or bundled_adb()
        self.port = port or free_port()
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        # No mDNS (no LAN traffic), no USB scan, no emulator-port scan (5555-5585): this
        # server sees only the devices a test connects (AOSP adb client/main.cpp).
        self.env = {**os.environ, "HOME": str(self.home), "ADB_MDNS": "0", "ADB_USB": "0", "ADB_EMU": "0"}
        self.env.pop("ANDROID_ADB_SERVER_PORT", None)
        self.env.pop("ANDROID_SERIAL", None)

    def run(self, *args: str, timeout: float = 30, input: bytes | None = None) -> subprocess.CompletedProcess:
        """``adb -P PORT ARGS...``; bytes stdout/stderr; never raises on a non-zero exit."""
        return subprocess.run(
            [self.binary, "-P", str(self.port), *args],
            env=self.env,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
        )

    def start(self) -> "AdbServer":
        result = self.run("start-server", timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"adb start-server failed: {result.stderr.decode(errors='replace')}")
        return self

    def kill(self) -> None:
        try:
            self.run("kill-server", timeout=20)
        except subprocess.TimeoutExpired:
            pass

    def client(self) -> adbutils.AdbClient:
        return adbutils.AdbClient(host="127.0.0.1", port=self.port)

    def devices(self) -> dict[str, str]:
        """serial -> state (``device``, ``offline``, ...) from ``adb devices``."""
        out = self.run("devices").stdout.decode(errors="replace")
        states = {}
        for line in out.splitlines()[1:]:
            serial, _, state = line.partition("\t")
            if state:
                states[serial] = state.strip()
        return states

    def wait_for(self, serial: str, state: str | None = "device", timeout: float = 15) -> None:
        """Poll until ``serial`` is in ``state`` (None: gone from the list)."""
        deadline = time.monotonic() + timeout
        while True:
            current = self.devices().get(serial)
            if current == state:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{serial} is {current!r}, not {state!r}, after {timeout} s")
            time.sleep(0.1)

    def connect(self, address: str, timeout: float = 15) -> None:
        """``adb connect`` and wait for state ``device``.

        A device that restarted stays ``offline`` and ``connect`` answers "already
        connected": disconnect first, then connect, then poll (FACTS.md).
        """
        self.run("disconnect", address)
        result = self.run("connect", address)
        out = (result.stdout + result.stderr).decode(errors="replace")
        if "connected to" not in out:
            raise RuntimeError(f"adb connect {address}: {out.strip()}")
        self.wait_for(address, "device", timeout)
