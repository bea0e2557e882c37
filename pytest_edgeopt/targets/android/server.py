"""The adb server the Android targets talk to: its address, a client that never starts
one, and the device states and (re)connects it handles.

adbutils speaks the adb *client* protocol to a server (``adb start-server``, port 5037 by
default). The plugin never starts a server: the user runs one (``adb start-server``), or a
farm host runs a long-lived one (``adb -a -P PORT server nodaemon``) and the plugin is
pointed at it with ``--edgeopt-adb=HOST:PORT``. (The tests start private ones with
``devices/adb_server.py``.)

Plain Python: no pytest.
"""

from __future__ import annotations

import os
import re
import socket
import time

from adbutils import AdbClient, AdbConnection, AdbError, AdbTimeout

from pytest_edgeopt.targets.base import TargetUnavailable

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5037

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
    s = s.removeprefix("tcp:")
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


class _NoAutoStartConnection(AdbConnection):  # type: ignore[misc]
    # adbutils runs `adb start-server` when a connect fails: on the *default* port,
    # whatever port the client was given. A test plugin must not leave an adb daemon
    # behind on the user's machine, so a missing server is an error here.
    def _safe_connect(self) -> socket.socket:
        return self._create_socket()  # type: ignore[no-any-return]


class AdbServerClient(AdbClient):  # type: ignore[misc]
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
            return str(info.state)
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
    return str(answer)


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
