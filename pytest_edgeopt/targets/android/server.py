"""The adb server the Android targets talk to: find it, start one, connect devices.

adbutils speaks the adb *client* protocol to a server (``adb start-server``, port 5037 by
default); it does not start one on a custom port by itself (its auto-start ignores the
port), so :class:`AdbServer` runs ``adb -P PORT server nodaemon`` as a child process with a
temporary ``HOME`` (adb writes ``~/.android/adbkey`` there) and kills it on :meth:`stop`.
A farm host runs its own long-lived server instead (``adb -a -P PORT server nodaemon``)
and the plugin is pointed at it with ``--edgeopt-adb=HOST:PORT``.

Plain Python: no pytest.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import adbutils
from adbutils import AdbClient, AdbConnection, AdbError, AdbTimeout

from pytest_edgeopt.targets.base import TargetUnavailable

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5037
#: adb attaches anything listening on an odd port here as ``emulator-N``.
EMULATOR_PORTS = range(5555, 5586)

_TCP_SERIAL_RE = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$")

#: How a user starts a server, quoted by every "no server" message.
HOW_TO_START = (
    "start one with `adb start-server` (port 5037), or `adb -P PORT start-server` and "
    "--edgeopt-adb=127.0.0.1:PORT; a device farm host serves its phones with "
    "`adb -a -P PORT server nodaemon` and the run points --edgeopt-adb=FARMHOST:PORT at it"
)


class AdbServerUnavailable(TargetUnavailable):
    """No adb server answers at the address (or no adb binary to start one)."""


class AdbServerError(RuntimeError):
    """The adb server refused a request (connect, disconnect) or a device did not
    reach the wanted state in time."""


def parse_adb_address(text: str) -> tuple[str, int]:
    """``"HOST:PORT"``, ``"PORT"``, ``"[V6ADDR]:PORT"`` or ``"tcp:HOST:PORT"`` -> ``(host, port)``.

    A missing host is ``127.0.0.1``. Raises ``ValueError`` on anything else (a bad or
    out-of-range port, an empty string), so it works as an argparse ``type=`` after
    wrapping.
    """
    s = text.strip()
    if s.startswith("tcp:"):
        s = s[4:]
    if not s:
        raise ValueError("empty adb server address (expected HOST:PORT)")
    if s.startswith("["):
        host, sep, rest = s[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"bad adb server address {text!r} (expected [IPV6]:PORT)")
        port_s = rest[1:]
    elif ":" in s:
        host, _, port_s = s.rpartition(":")
        if ":" in host:
            raise ValueError(f"bad adb server address {text!r} (write IPv6 hosts as [ADDR]:PORT)")
    else:
        host, port_s = "", s
    host = host or DEFAULT_HOST
    if not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise ValueError(f"bad port in adb server address {text!r} (expected HOST:PORT, port 1-65535)")
    return host, int(port_s)


def format_adb_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def default_adb_address() -> str:
    """What adb itself would use: ``ANDROID_ADB_SERVER_HOST``/``ANDROID_ADB_SERVER_PORT``,
    else ``127.0.0.1:5037``."""
    host = os.environ.get("ANDROID_ADB_SERVER_HOST") or DEFAULT_HOST
    port = os.environ.get("ANDROID_ADB_SERVER_PORT") or str(DEFAULT_PORT)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"ANDROID_ADB_SERVER_PORT={port!r} is not a port number")
    return format_adb_address(host, int(port))


def is_tcp_serial(serial: str) -> bool:
    """A ``HOST:PORT`` serial (``adb connect``-ed): those can be reconnected."""
    return bool(_TCP_SERIAL_RE.match(serial))


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


class _NoAutoStartConnection(AdbConnection):
    # adbutils runs `adb start-server` when a connect fails: on the *default* port,
    # whatever port the client was given. A test plugin must not leave an adb daemon
    # behind on the user's machine, so a missing server is an error here.
    def _safe_connect(self):  # type: ignore[override]
        return self._create_socket()


class AdbServerClient(AdbClient):
    """adbutils' client that never starts an adb server by itself (see
    :class:`_NoAutoStartConnection`); a missing server raises ``AdbConnectionError``."""

    def __init__(self, host: str, port: int, socket_timeout: float | None = None) -> None:
        super().__init__(host=host, port=port, socket_timeout=socket_timeout)
        self._default_timeout = socket_timeout

    def make_connection(self, timeout: float | None = None) -> AdbConnection:
        timeout = timeout or self._default_timeout
        try:
            conn = _NoAutoStartConnection(self.host, self.port)
        except TimeoutError:
            raise AdbTimeout("connect to adb server timeout") from None
        if timeout:
            conn.conn.settimeout(timeout)
        return conn


def client_for(address: str | None = None, *, socket_timeout: float | None = None) -> AdbServerClient:
    """A client for the server at ``address`` (default: :func:`default_adb_address`)
    that never starts a server itself."""
    host, port = parse_adb_address(address or default_adb_address())
    return AdbServerClient(host, port, socket_timeout=socket_timeout)


def check_server(client: AdbClient, timeout: float = 5.0) -> int:
    """The server's protocol version (e.g. 41); :class:`AdbServerUnavailable` saying
    how to start a server when nothing answers at the client's address."""
    addr = format_adb_address(client.host, client.port)
    try:
        with socket.create_connection((client.host, client.port), timeout=timeout):
            pass
    except OSError as e:
        raise AdbServerUnavailable(f"no adb server at {addr}: {e.strerror or e}; {HOW_TO_START}") from None
    try:
        with client.make_connection(timeout=timeout) as c:
            c.send_command("host:version")
            c.check_okay()
            return int(c.read_string_block(), 16)
    except (AdbError, OSError, ValueError, EOFError) as e:
        raise AdbServerUnavailable(
            f"something listens at {addr} but does not answer as an adb server ({e}); {HOW_TO_START}"
        ) from None


def device_state(client: AdbClient, serial: str) -> str | None:
    """``device``, ``offline``, ``unauthorized``... for ``serial``; ``None`` if the
    server does not list it."""
    for info in client.list():
        if info.serial == serial:
            return info.state
    return None


def wait_for_state(client: AdbClient, serial: str, state: str = "device", timeout: float = 30.0) -> None:
    """Poll ``adb devices`` until ``serial`` is in ``state``; :class:`AdbServerError`
    with the last state seen after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: str | None = None
    while True:
        try:
            last = device_state(client, serial)
        except (AdbError, OSError) as e:
            last = f"server error: {e}"
        if last == state:
            return
        if time.monotonic() >= deadline:
            raise AdbServerError(
                f"{serial} did not reach state {state!r} within {timeout:g} s (last: {last or 'not listed'})"
            )
        time.sleep(0.2)


def connect_device(client: AdbClient, address: str, timeout: float = 10.0) -> str:
    """``adb connect ADDRESS``; returns the server's answer, raises
    :class:`AdbServerError` when it says it could not connect."""
    try:
        answer = client.connect(address, timeout=timeout)
    except (AdbError, OSError) as e:
        raise AdbServerError(f"adb connect {address} failed: {e}") from None
    if any(word in answer.lower() for word in ("unable", "failed", "cannot", "error")):
        raise AdbServerError(f"adb connect {address}: {answer}")
    return answer


def disconnect_device(client: AdbClient, address: str) -> str:
    """``adb disconnect ADDRESS``; the server's answer (empty when it did not know it)."""
    try:
        return client.disconnect(address) or ""
    except (AdbError, OSError):
        return ""


def reconnect_device(client: AdbClient, serial: str, timeout: float = 30.0) -> None:
    """Bring ``serial`` to state ``device``. A ``HOST:PORT`` serial is disconnected,
    connected and polled, again every 0.5 s until it is back (a device that restarted
    stays ``offline`` and ``adb connect`` answers "already connected" unless it is
    disconnected first); a USB serial is waited for. :class:`AdbServerError` with the
    last refusal after ``timeout`` seconds."""
    if not is_tcp_serial(serial):
        wait_for_state(client, serial, "device", timeout)
        return
    deadline = time.monotonic() + timeout
    while True:
        disconnect_device(client, serial)
        try:
            connect_device(client, serial, timeout=max(0.5, min(10.0, deadline - time.monotonic())))
            wait_for_state(client, serial, "device", max(0.5, min(5.0, deadline - time.monotonic())))
            return
        except AdbServerError as e:
            last = e
        if time.monotonic() >= deadline:
            raise last
        time.sleep(0.5)


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
        self._log = None

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

    def start(self) -> "AdbServer":
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

    def __enter__(self) -> "AdbServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
