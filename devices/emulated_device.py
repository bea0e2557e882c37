"""An emulated Android device that the real adb server drives over TCP.

The device side of the adb protocol (AOSP ``protocol.txt``, ``SERVICES.TXT``,
``SYNC.TXT``), just enough of it for ``adb connect``, ``adb shell``, ``adb push``/``pull``
and adbutils: CNXN without AUTH, streams with one WRTE in flight, shell v2 framing
(stdout 1, stderr 2, exit 3, stdin 0, close-stdin 4), the legacy raw shell, and the
v1 sync service (STAT, LIST, SEND, RECV, QUIT).

The device's file system is a host directory: device path ``/data/local/tmp/x`` is
``root/data/local/tmp/x``. Shell commands run with the host's real ``/bin/sh -c`` after
device path prefixes (``/data``, ``/sdcard``, ``/storage``, ``/system``, ``/vendor``) in the
command text are rewritten into ``root``; output has ``root`` mapped back to ``/``. Small
shims in ``root/system/bin`` stand in for Android-only commands (``getprop``, ``dumpsys``,
``taskset``, ``df``).

SECURITY: shell commands are REAL host commands run as the current user. The device
listens on 127.0.0.1 only (``start`` refuses any other address).

    device = EmulatedDevice(tmp_path / "device")
    port = device.start()                 # ephemeral port, never 5555-5585
    subprocess.run([adb, "-P", adb_port, "connect", device.address])
    ...
    device.faults.hang_shell = True       # the next shell command never answers
    device.stop()                         # the phone "dies": every connection closes
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import selectors
import signal
import socket
import stat as stat_mod
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

# --- adb transport constants (AOSP adb.h) ---------------------------------------------

A_SYNC = 0x434E5953
A_CNXN = 0x4E584E43
A_AUTH = 0x48545541
A_OPEN = 0x4E45504F
A_OKAY = 0x59414B4F
A_CLSE = 0x45534C43
A_WRTE = 0x45545257
A_STLS = 0x534C5453

#: Protocol version with checksums skipped (adb >= 1.0.41 on both sides skips them).
A_VERSION = 0x01000001
#: Largest payload this device accepts; the host's CNXN says what it accepts.
MAX_PAYLOAD = 1024 * 1024
#: Sync DATA chunks are at most 64 KiB (SYNC.TXT).
SYNC_DATA_MAX = 64 * 1024

FEATURES = ("shell_v2", "cmd", "fixed_push_mkdir")

# Shell v2 packet ids (AOSP shell_protocol.h).
_ID_STDIN, _ID_STDOUT, _ID_STDERR, _ID_EXIT, _ID_CLOSE_STDIN, _ID_WINDOW = range(6)

#: Device path prefixes that map into the device root when they start a path in a
#: shell command.
DEVICE_DIRS = ("data", "sdcard", "storage", "system", "vendor")

_HEADER = struct.Struct("<6I")
_EPHEMERAL_PORTS = range(32768, 61000)
_EMULATOR_PORTS = range(5555, 5586)  # adb auto-attaches odd ports here as emulator-N


@dataclass
class Faults:
    """Faults a test injects; each field can be changed at any time from any thread.

    The ``*_shell*`` faults are one-shot: the next shell command consumes them.
    ``standin_*`` fields reach the benchmark_model stand-in through the environment of
    every shell command (``EDGEOPT_STANDIN_CRASH``, ``..._EXIT``, ``..._HANG``,
    ``..._DELAY_US``); see ``devices/README.md``.
    """

    drop_during_shell: bool = False  # close the TCP connection mid-output of the next shell command
    hang_shell: bool = False  # the next shell command never answers (until stop())
    slow_s: float = 0.0  # delay before every packet the device sends
    storage_bytes: int | None = None  # capacity of /data (+ /sdcard): push beyond it fails ENOSPC; df shows it
    fail_next_shell_exit: int | None = None  # the next shell command reports this exit code
    standin_crash: str | None = None  # "segv" or "abort": benchmark_model dies by that signal mid-run
    standin_exit: int | None = None  # benchmark_model exits with this code after its first lines
    standin_hang: bool = False  # benchmark_model prints its first lines, then sleeps forever
    standin_delay_us: int = 0  # extra microseconds per inference (a slow or throttled phone)


class _StreamClosed(Exception):
    pass


class _Stream:
    """One adb stream (a service the host OPENed) on a connection."""

    def __init__(self, conn: _Connection, local_id: int, remote_id: int) -> None:
        self.conn = conn
        self.local_id = local_id
        self.remote_id = remote_id
        self.closed = threading.Event()
        self._can_send = threading.Event()
        self._can_send.set()  # our OKAY to the OPEN lets the first WRTE go
        self._inbox: deque[bytes | None] = deque()
        self._inbox_cv = threading.Condition()
        self._buf = bytearray()
        self.on_close: list = []  # callbacks run once when the stream closes

    # -- called from the connection's reader thread
    def deliver(self, data: bytes) -> None:
        with self._inbox_cv:
            self._inbox.append(data)
            self._inbox_cv.notify()

    def peer_okay(self) -> None:
        self._can_send.set()

    def peer_closed(self) -> None:
        self._mark_closed()

    # -- called from the service thread
    def write(self, data: bytes) -> None:
        """Send data as WRTE packets, one in flight until the host OKAYs it."""
        view = memoryview(data)
        step = self.conn.max_payload
        for start in range(0, len(view), step):
            while not self._can_send.wait(0.5):
                if self.closed.is_set():
                    raise _StreamClosed()
            if self.closed.is_set():
                raise _StreamClosed()
            self._can_send.clear()
            if not self.conn.send_packet(A_WRTE, self.local_id, self.remote_id, bytes(view[start : start + step])):
                self._mark_closed()
                raise _StreamClosed()

    def read_packet(self) -> bytes | None:
        """Next WRTE payload from the host (OKAYed now), or None once the stream closed."""
        with self._inbox_cv:
            while not self._inbox:
                if self.closed.is_set():
                    return None
                self._inbox_cv.wait(0.5)
            data = self._inbox.popleft()
        if data is None:
            return None
        self.conn.send_packet(A_OKAY, self.local_id, self.remote_id)
        return data

    def read_exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            data = self.read_packet()
            if data is None:
                raise _StreamClosed()
            self._buf += data
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def close(self) -> None:
        """Close from the device side: CLSE to the host (once)."""
        if not self.closed.is_set():
            self.conn.send_packet(A_CLSE, self.local_id, self.remote_id)
        self._mark_closed()

    def _mark_closed(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        self._can_send.set()
        with self._inbox_cv:
            self._inbox.append(None)
            self._inbox_cv.notify_all()
        self.conn.forget(self)
        for callback in self.on_close:
            try:
                callback()
            except Exception:
                pass


class _Connection:
    """One TCP connection from the adb server: the device's transport."""

    def __init__(self, device: EmulatedDevice, sock: socket.socket) -> None:
        self.device = device
        self.sock = sock
        self.max_payload = 4096  # until the host's CNXN says more
        self._send_lock = threading.Lock()
        self._streams: dict[int, _Stream] = {}
        self._streams_lock = threading.Lock()
        self._next_id = 1
        self.dead = threading.Event()

    def send_packet(self, command: int, arg0: int, arg1: int, data: bytes = b"") -> bool:
        delay = self.device.faults.slow_s
        if delay > 0:
            time.sleep(delay)
        header = _HEADER.pack(command, arg0, arg1, len(data), sum(data) & 0xFFFFFFFF, command ^ 0xFFFFFFFF)
        with self._send_lock:
            if self.dead.is_set():
                return False
            try:
                self.sock.sendall(header + data)
            except OSError:
                self.abort()
                return False
        return True

    def abort(self) -> None:
        """Drop the TCP connection at once (the cable is pulled)."""
        if self.dead.is_set():
            return
        self.dead.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass
        with self._streams_lock:
            streams = list(self._streams.values())
        for stream in streams:
            stream.peer_closed()

    def forget(self, stream: _Stream) -> None:
        with self._streams_lock:
            self._streams.pop(stream.local_id, None)

    def _recv_exact(self, n: int) -> bytes:
        chunks = bytearray()
        while len(chunks) < n:
            chunk = self.sock.recv(n - len(chunks))
            if not chunk:
                raise ConnectionError("peer closed")
            chunks += chunk
        return bytes(chunks)

    def serve(self) -> None:
        try:
            while not self.dead.is_set():
                command, arg0, arg1, length, _check, magic = _HEADER.unpack(self._recv_exact(_HEADER.size))
                if magic != command ^ 0xFFFFFFFF:
                    raise ConnectionError("bad magic")
                payload = self._recv_exact(length) if length else b""
                self._dispatch(command, arg0, arg1, payload)
        except (OSError, ConnectionError, struct.error):
            pass
        finally:
            self.abort()
            self.device._forget_connection(self)

    def _dispatch(self, command: int, arg0: int, arg1: int, payload: bytes) -> None:
        if command == A_CNXN:
            self.max_payload = max(4096, min(arg1, MAX_PAYLOAD))
            self.send_packet(A_CNXN, A_VERSION, MAX_PAYLOAD, self.device.banner())
        elif command == A_OPEN:
            self._open(arg0, payload.rstrip(b"\0").decode("utf-8", "replace"))
        elif command == A_OKAY:
            stream = self._stream(arg1)
            if stream is not None:
                stream.peer_okay()
        elif command == A_WRTE:
            stream = self._stream(arg1)
            if stream is not None:
                stream.deliver(payload)
        elif command == A_CLSE:
            stream = self._stream(arg1)
            if stream is not None:
                stream.peer_closed()
        # AUTH/STLS/SYNC: never asked for; ignore.

    def _stream(self, local_id: int) -> _Stream | None:
        with self._streams_lock:
            return self._streams.get(local_id)

    def _open(self, remote_id: int, service: str) -> None:
        handler = self.device._service_handler(service)
        if handler is None:
            self.send_packet(A_CLSE, 0, remote_id)
            return
        with self._streams_lock:
            local_id = self._next_id
            self._next_id += 1
            stream = _Stream(self, local_id, remote_id)
            self._streams[local_id] = stream
        self.send_packet(A_OKAY, local_id, remote_id)
        threading.Thread(target=self._run_service, args=(handler, stream, service), daemon=True,
                         name=f"emu-{service[:20]}").start()

    def _run_service(self, handler, stream: _Stream, service: str) -> None:
        try:
            handler(stream, service)
        except _StreamClosed:
            pass
        except Exception as exc:  # a bug here must not kill the transport silently
            if os.environ.get("EDGEOPT_EMU_DEBUG"):
                print(f"emulated device: service {service!r} failed: {exc!r}", file=sys.stderr)
        finally:
            stream.close()


class _PathUnmapper:
    """Maps host paths under the device root back to device paths in a byte stream."""

    def __init__(self, root: bytes) -> None:
        self._root = root
        self._pending = b""

    def feed(self, data: bytes) -> bytes:
        data = self._pending + data
        keep = 0
        tail_start = max(0, len(data) - len(self._root))
        for i in range(tail_start, len(data)):
            if self._root.startswith(data[i:]):
                keep = len(data) - i
                break
        self._pending = data[len(data) - keep :]
        return self._map(data[: len(data) - keep])

    def flush(self) -> bytes:
        out, self._pending = self._map(self._pending), b""
        return out

    def _map(self, data: bytes) -> bytes:
        return data.replace(self._root + b"/", b"/").replace(self._root, b"/")


class EmulatedDevice:
    """An Android device the real adb server talks to over TCP (see module docstring).

    ``battery_level`` (percent), ``temperature_c`` (battery/skin temperature, degrees C),
    ``thermal_status`` (None: derived from the temperature) and ``props`` (getprop) can be
    changed at run time; the next shell command sees the new values.
    """

    def __init__(
        self,
        root: Path,
        *,
        product: str = "edgeopt_emu",
        model: str = "Edgeopt Emulated",
        device: str = "emu",
        abi: str = "x86_64",
        battery_level: int = 100,
        temperature_c: float = 30.0,
        serial_hint: str | None = None,
        has_gpu: bool = True,
        num_cpus: int = 8,
    ) -> None:
        self.root = Path(root).resolve()
        self.product = product
        self.model = model
        self.device = device
        self.abi = abi
        self.battery_level = battery_level
        self.temperature_c = temperature_c
        self.thermal_status: int | None = None
        self.serial_hint = serial_hint
        self.has_gpu = has_gpu
        self.num_cpus = num_cpus
        self.faults = Faults()
        #: Extra environment for every shell command (the device's init environment).
        self.shell_env: dict[str, str] = {}
        self.props: dict[str, str] = {}
        self._host = "127.0.0.1"
        self._port: int | None = None
        self._listener: socket.socket | None = None
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._conns: set[_Connection] = set()
        self._procs: set[subprocess.Popen] = set()
        self._props_written: dict[str, str] | None = None
        #: TCP connections accepted so far (a reconnect by the adb server adds one).
        self.accepted = 0

    # -- lifecycle ----------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Serve in background threads; returns the TCP port (0 picks a free ephemeral one).

        Raises ValueError for a non-loopback host or a port adb would auto-attach
        (5555-5585), OSError if the port is taken. ``start`` after ``stop`` restarts the
        device with its files intact (pass the old port to keep the same address).
        """
        if host not in ("127.0.0.1", "localhost"):
            raise ValueError("the emulated device runs host commands: it listens on 127.0.0.1 only")
        if port in _EMULATOR_PORTS:
            raise ValueError(f"port {port} is in 5555-5585, where adb auto-attaches emulators")
        if self._listener is not None:
            raise RuntimeError("already started")
        self._prepare_root()
        listener = _listen(host, port)
        self._host, self._port = "127.0.0.1", listener.getsockname()[1]
        self._listener = listener
        self._stopped.clear()
        self._install_shims()
        self._write_props()
        threading.Thread(target=self._accept_loop, args=(listener,), daemon=True, name="emu-accept").start()
        return self._port

    def stop(self) -> None:
        """Close every connection and kill every running command (the device dies)."""
        self._stopped.set()
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            except OSError:
                pass
            try:
                listener.close()
            except OSError:
                pass
        with self._lock:
            conns, procs = list(self._conns), list(self._procs)
        for conn in conns:
            conn.abort()
        for proc in procs:
            _kill_group(proc)

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("device not started")
        return self._port

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``: what ``adb connect`` takes and the serial adb shows."""
        return f"{self._host}:{self.port}"

    @property
    def serialno(self) -> str:
        return self.serial_hint or f"EDGEOPT{self.port}"

    def __enter__(self) -> EmulatedDevice:
        if self._listener is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- identity -----------------------------------------------------------------

    def banner(self) -> bytes:
        return (
            f"device::ro.product.name={self.product};ro.product.model={self.model};"
            f"ro.product.device={self.device};features={','.join(FEATURES)}"
        ).encode()

    def all_props(self) -> dict[str, str]:
        props = {
            "ro.product.name": self.product,
            "ro.product.model": self.model,
            "ro.product.device": self.device,
            "ro.product.brand": "edgeopt",
            "ro.product.manufacturer": "Edgeopt",
            "ro.product.cpu.abi": self.abi,
            "ro.product.cpu.abilist": self.abi,
            "ro.build.version.sdk": "34",
            "ro.build.version.release": "14",
            "ro.build.type": "userdebug",
            "ro.build.fingerprint": f"edgeopt/{self.product}/{self.device}:14/EDGEOPT/1:userdebug/test-keys",
            "ro.serialno": self.serialno,
            "ro.hardware": "edgeopt",
            "ro.board.platform": "edgeopt",
            "sys.boot_completed": "1",
            "init.svc.adbd": "running",
        }
        props.update(self.props)
        return props

    # -- file system --------------------------------------------------------------

    def host_path(self, device_path: str) -> Path:
        """The host file behind an absolute device path (``/data/local/tmp/x``)."""
        norm = os.path.normpath("/" + device_path.lstrip("/"))
        return self.root / norm.lstrip("/") if norm != "/" else self.root

    def _prepare_root(self) -> None:
        for sub in ("data/local/tmp", "sdcard", "storage/emulated/0", "system/bin", "vendor"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def _install_shims(self) -> None:
        bindir = self.root / "system" / "bin"
        for name, text in _SHIMS.items():
            text = text.replace("@PYTHON@", sys.executable)
            path = bindir / name
            if not path.exists() or path.read_text() != text:
                path.write_text(text)
            path.chmod(0o755)
        sh = bindir / "sh"
        if not sh.is_symlink():
            if sh.exists():
                sh.unlink()
            sh.symlink_to("/bin/sh")

    def _write_props(self) -> None:
        props = self.all_props()
        if props == self._props_written:
            return
        path = self.root / "system" / "build.prop"
        tmp = path.with_name(f".build.prop.{os.getpid()}.{threading.get_ident()}")
        tmp.write_text("".join(f"{k}={v}\n" for k, v in sorted(props.items())))
        os.replace(tmp, path)
        self._props_written = props

    def used_bytes(self) -> int:
        """Bytes of regular files on the /data partition (everything but /system, /vendor)."""
        total = 0
        for top in self.root.iterdir():
            if top.name in ("system", "vendor"):
                continue
            for dirpath, _dirs, files in os.walk(top):
                for name in files:
                    try:
                        st = os.lstat(os.path.join(dirpath, name))
                    except OSError:
                        continue
                    if stat_mod.S_ISREG(st.st_mode):
                        total += st.st_size
        return total

    # -- serving ------------------------------------------------------------------

    def _accept_loop(self, listener: socket.socket) -> None:
        listener.settimeout(1.0)  # fallback in case shutdown() does not wake accept()
        while not self._stopped.is_set():
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._stopped.is_set():
                sock.close()
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(self, sock)
            with self._lock:
                self._conns.add(conn)
                self.accepted += 1
            threading.Thread(target=conn.serve, daemon=True, name="emu-conn").start()

    def _forget_connection(self, conn: _Connection) -> None:
        with self._lock:
            self._conns.discard(conn)

    def _service_handler(self, service: str):
        if service.startswith("shell") and (service[5:6] in (":", ",")):
            return self._shell_service
        if service.startswith("exec:"):
            return self._shell_service
        if service == "sync:":
            return self._sync_service
        if os.environ.get("EDGEOPT_EMU_DEBUG"):
            print(f"emulated device: refused service {service!r}", file=sys.stderr)
        return None

    def _take(self, name: str):
        """Read a one-shot fault and reset it."""
        with self._lock:
            value = getattr(self.faults, name)
            if name in ("drop_during_shell", "hang_shell"):
                setattr(self.faults, name, False)
            else:
                setattr(self.faults, name, None)
        return value

    # -- shell --------------------------------------------------------------------

    def rewrite_command(self, command: str) -> str:
        """Rewrite device paths in shell command text to host paths under the root."""
        return _DEVICE_PATH_RE.sub(lambda m: f"{self.root}/{m.group(1)}", command)

    def shell_environment(self) -> dict[str, str]:
        root = str(self.root)
        faults = self.faults
        env = {
            "PATH": f"{root}/system/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": root,
            "TMPDIR": f"{root}/data/local/tmp",
            "ANDROID_DATA": f"{root}/data",
            "ANDROID_ROOT": f"{root}/system",
            "EXTERNAL_STORAGE": f"{root}/sdcard",
            "LANG": "C.UTF-8",
            "EDGEOPT_EMU_ROOT": root,
            "EDGEOPT_EMU_BATTERY_LEVEL": str(int(self.battery_level)),
            "EDGEOPT_EMU_BATTERY_TEMP": str(int(round(self.temperature_c * 10))),
            "EDGEOPT_EMU_THERMAL_STATUS": str(self._thermal_status()),
            "EDGEOPT_EMU_NUM_CPUS": str(self.num_cpus),
            "EDGEOPT_STANDIN_HAS_GPU": "1" if self.has_gpu else "0",
        }
        if faults.storage_bytes is not None:
            env["EDGEOPT_EMU_STORAGE_BYTES"] = str(int(faults.storage_bytes))
        if faults.standin_crash:
            env["EDGEOPT_STANDIN_CRASH"] = str(faults.standin_crash)
        if faults.standin_exit is not None:
            env["EDGEOPT_STANDIN_EXIT"] = str(int(faults.standin_exit))
        if faults.standin_hang:
            env["EDGEOPT_STANDIN_HANG"] = "1"
        if faults.standin_delay_us:
            env["EDGEOPT_STANDIN_DELAY_US"] = str(int(faults.standin_delay_us))
        env.update(self.shell_env)
        return env

    def _thermal_status(self) -> int:
        if self.thermal_status is not None:
            return int(self.thermal_status)
        # Android's PowerManager THERMAL_STATUS_* levels, by skin temperature.
        for status, limit in enumerate((40.0, 43.0, 46.0, 50.0, 55.0, 60.0)):
            if self.temperature_c < limit:
                return status
        return 6

    def _shell_service(self, stream: _Stream, service: str) -> None:
        if service.startswith("exec:"):
            v2, command = False, service[5:]
        else:
            head, _, command = service.partition(":")
            v2 = "v2" in head.split(",")[1:]
        if self._take("hang_shell"):
            # Never answer: no output, no exit, until the host closes or the device stops.
            while not (stream.closed.wait(0.2) or self._stopped.is_set()):
                pass
            return
        drop = self._take("drop_during_shell")
        forced_exit = self._take("fail_next_shell_exit")
        self._write_props()
        argv = ["/bin/sh", "-c", self.rewrite_command(command)] if command.strip() else ["/bin/sh"]
        try:
            proc = subprocess.Popen(
                argv,
                cwd=self.root,
                env=self.shell_environment(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE if v2 else subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            message = f"/system/bin/sh: {exc.strerror}\n".encode()
            stream.write(_v2_packet(_ID_STDERR, message) + _v2_packet(_ID_EXIT, b"\x7f") if v2 else message)
            return
        with self._lock:
            self._procs.add(proc)
        stream.on_close.append(lambda: _kill_group(proc))
        if stream.closed.is_set():  # closed before the callback was in place
            _kill_group(proc)
        threading.Thread(target=self._pump_stdin, args=(stream, proc, v2), daemon=True, name="emu-stdin").start()
        try:
            self._pump_output(stream, proc, v2, drop)
            returncode = proc.wait()
        finally:
            _kill_group(proc)  # no-op once it exited; the host went away otherwise
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            with self._lock:
                self._procs.discard(proc)
        if v2:
            code = returncode if returncode >= 0 else 128 - returncode
            if forced_exit is not None:
                code = forced_exit
            stream.write(_v2_packet(_ID_EXIT, bytes([code & 0xFF])))

    def _pump_output(self, stream: _Stream, proc: subprocess.Popen, v2: bool, drop: bool) -> None:
        unmap = {}
        selector = selectors.DefaultSelector()
        ids = {proc.stdout.fileno(): _ID_STDOUT}
        if v2:
            ids[proc.stderr.fileno()] = _ID_STDERR
        for fd in ids:
            selector.register(fd, selectors.EVENT_READ)
            unmap[fd] = _PathUnmapper(str(self.root).encode())
        # Keep each shell packet (5-byte header + data) inside one WRTE.
        chunk = min(stream.conn.max_payload, 64 * 1024) - 5
        open_fds = set(ids)
        try:
            while open_fds:
                for key, _ in selector.select(timeout=0.5):
                    fd = key.fd
                    data = os.read(fd, chunk)
                    if data:
                        data = unmap[fd].feed(data)
                    else:
                        data = unmap[fd].flush()
                        selector.unregister(fd)
                        open_fds.discard(fd)
                    if data:
                        stream.write(_v2_packet(ids[fd], data) if v2 else data)
                        if drop:
                            stream.conn.abort()  # mid-output: the transport dies
                            _kill_group(proc)
                            raise _StreamClosed()
                if stream.closed.is_set():
                    raise _StreamClosed()
            if drop:
                stream.conn.abort()
                _kill_group(proc)
                raise _StreamClosed()
        finally:
            selector.close()
            proc.stdout.close()
            if v2:
                proc.stderr.close()

    def _pump_stdin(self, stream: _Stream, proc: subprocess.Popen, v2: bool) -> None:
        stdin = proc.stdin
        buf = bytearray()
        try:
            while True:
                data = stream.read_packet()
                if data is None:
                    return
                if not v2:
                    stdin.write(data)
                    stdin.flush()
                    continue
                buf += data
                while len(buf) >= 5:
                    kind, length = buf[0], struct.unpack_from("<I", buf, 1)[0]
                    if len(buf) < 5 + length:
                        break
                    payload = bytes(buf[5 : 5 + length])
                    del buf[: 5 + length]
                    if kind == _ID_STDIN and payload:
                        stdin.write(payload)
                        stdin.flush()
                    elif kind == _ID_CLOSE_STDIN:
                        stdin.close()
        except (OSError, ValueError):
            pass
        finally:
            try:
                stdin.close()
            except OSError:
                pass

    # -- sync ---------------------------------------------------------------------

    def _sync_service(self, stream: _Stream, service: str) -> None:
        while True:
            request = stream.read_exact(8)
            ident, length = request[:4], struct.unpack("<I", request[4:])[0]
            if length > 1024:
                stream.write(_sync_fail("path too long"))
                return
            name = stream.read_exact(length).decode("utf-8", "surrogateescape")
            if ident == b"STAT":
                stream.write(self._sync_stat(name))
            elif ident == b"LIST":
                self._sync_list(stream, name)
            elif ident == b"SEND":
                if not self._sync_send(stream, name):
                    return
            elif ident == b"RECV":
                if not self._sync_recv(stream, name):
                    return
            elif ident == b"QUIT":
                return
            else:
                if os.environ.get("EDGEOPT_EMU_DEBUG"):
                    print(f"emulated device: unknown sync request {ident!r}", file=sys.stderr)
                stream.write(_sync_fail(f"unknown command {struct.unpack('<I', ident)[0]:08x}"))
                return

    def _sync_stat(self, name: str) -> bytes:
        try:
            st = os.lstat(self.host_path(name))
            values = (st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime) & 0xFFFFFFFF)
        except OSError:
            values = (0, 0, 0)
        return b"STAT" + struct.pack("<III", *values)

    def _sync_list(self, stream: _Stream, name: str) -> None:
        path = self.host_path(name)
        out = bytearray()
        try:
            entries = [".", ".."] + os.listdir(path)
        except OSError:
            entries = []
        for entry in entries:
            try:
                st = os.lstat(os.path.join(path, entry))
            except OSError:
                continue
            raw = entry.encode("utf-8", "surrogateescape")
            out += b"DENT" + struct.pack("<IIII", st.st_mode, st.st_size & 0xFFFFFFFF,
                                         int(st.st_mtime) & 0xFFFFFFFF, len(raw)) + raw
            if len(out) >= SYNC_DATA_MAX:
                stream.write(bytes(out))
                out.clear()
        out += b"DONE" + bytes(16)
        stream.write(bytes(out))

    def _sync_send(self, stream: _Stream, spec: str) -> bool:
        """SEND path,mode + DATA... + DONE mtime -> OKAY, like AOSP's do_send_v1."""
        path_text, comma, mode_text = spec.rpartition(",")
        if not comma:
            stream.write(_sync_fail("missing , in ID_SEND_V1"))
            return False
        try:
            mode = _strtoul(mode_text)
        except ValueError:
            stream.write(_sync_fail("bad mode"))
            return False
        path = self.host_path(path_text)
        if stat_mod.S_ISLNK(mode):
            return self._sync_send_link(stream, path)
        # Copy user permission bits to group and other, as adbd does.
        mode &= 0o777
        mode |= (mode >> 3) & 0o070
        mode |= (mode >> 3) & 0o007
        limit = self.faults.storage_bytes
        counted = limit is not None and not _under(path, (self.root / "system", self.root / "vendor"))
        used = 0
        if counted:
            try:
                old = os.lstat(path)
                old_size = old.st_size if stat_mod.S_ISREG(old.st_mode) else 0
            except OSError:
                old_size = 0
            used = self.used_bytes() - old_size
        try:
            if path.is_symlink() or path.is_file():
                path.unlink()
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
            except FileNotFoundError:
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    return self._sync_send_fail(stream, f"secure_mkdirs failed: {os.strerror(exc.errno or errno.EIO)}")
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        except OSError as exc:
            return self._sync_send_fail(stream, f"couldn't create file: {os.strerror(exc.errno or errno.EIO)}")
        written = 0
        try:
            os.fchmod(fd, mode)
            while True:
                header = stream.read_exact(8)
                ident, size = header[:4], struct.unpack("<I", header[4:])[0]
                if ident == b"DONE":
                    mtime = size
                    break
                if ident != b"DATA":
                    stream.write(_sync_fail("invalid data message"))
                    os.close(fd)
                    fd = -1
                    path.unlink(missing_ok=True)
                    return False
                if size > SYNC_DATA_MAX:
                    stream.write(_sync_fail("oversize data message"))
                    os.close(fd)
                    fd = -1
                    path.unlink(missing_ok=True)
                    return False
                data = stream.read_exact(size)
                if counted and used + written + len(data) > limit:
                    room = max(0, limit - used - written)
                    os.write(fd, data[:room])  # a full disk takes what fits, then ENOSPC
                    os.close(fd)
                    fd = -1
                    return self._sync_send_fail(stream, f"write failed: {os.strerror(errno.ENOSPC)}", path)
                _write_all(fd, data)
                written += len(data)
        except OSError as exc:
            if fd >= 0:
                os.close(fd)
                fd = -1
            return self._sync_send_fail(stream, f"write failed: {os.strerror(exc.errno or errno.EIO)}", path)
        finally:
            if fd >= 0:
                os.close(fd)
        try:
            os.utime(path, (mtime, mtime), follow_symlinks=False)
        except OSError:
            pass
        stream.write(b"OKAY" + bytes(4))
        return True

    def _sync_send_fail(self, stream: _Stream, message: str, unlink: Path | None = None) -> bool:
        """Report FAIL, then swallow DATA until DONE (AOSP handle_send_file's fail path)."""
        stream.write(_sync_fail(message))
        while True:
            header = stream.read_exact(8)
            ident, size = header[:4], struct.unpack("<I", header[4:])[0]
            if ident != b"DATA" or size > SYNC_DATA_MAX:
                break
            stream.read_exact(size)
        if unlink is not None:
            unlink.unlink(missing_ok=True)
        return False

    def _sync_send_link(self, stream: _Stream, path: Path) -> bool:
        header = stream.read_exact(8)
        if header[:4] != b"DATA":
            stream.write(_sync_fail("invalid data message: expected ID_DATA"))
            return False
        target = stream.read_exact(struct.unpack("<I", header[4:])[0]).rstrip(b"\0")
        try:
            if path.is_symlink() or path.exists():
                path.unlink()
            path.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(target, path)
        except OSError as exc:
            stream.write(_sync_fail(f"symlink failed: {os.strerror(exc.errno or errno.EIO)}"))
            return False
        header = stream.read_exact(8)
        if header[:4] != b"DONE":
            stream.write(_sync_fail("invalid data message: expected ID_DONE"))
            return False
        stream.write(b"OKAY" + bytes(4))
        return True

    def _sync_recv(self, stream: _Stream, name: str) -> bool:
        try:
            f = open(self.host_path(name), "rb")
        except OSError as exc:
            stream.write(_sync_fail(f"open failed: {os.strerror(exc.errno or errno.EIO)}"))
            return False
        # Pack several DATA messages into one WRTE: each WRTE waits a round trip for OKAY.
        batch = bytearray()
        with f:
            while True:
                try:
                    data = f.read(SYNC_DATA_MAX - 8)
                except OSError as exc:
                    stream.write(bytes(batch) + _sync_fail(f"read failed: {os.strerror(exc.errno or errno.EIO)}"))
                    return False
                if not data:
                    break
                batch += b"DATA" + struct.pack("<I", len(data)) + data
                if len(batch) + SYNC_DATA_MAX > stream.conn.max_payload:
                    stream.write(bytes(batch))
                    batch.clear()
        stream.write(bytes(batch) + b"DONE" + bytes(4))
        return True


# --- helpers ----------------------------------------------------------------------------

_DEVICE_PATH_RE = re.compile(r"(?<![\w./~-])/(%s)(?![\w.-])" % "|".join(DEVICE_DIRS))


def _v2_packet(kind: int, data: bytes) -> bytes:
    return struct.pack("<BI", kind, len(data)) + data


def _sync_fail(message: str) -> bytes:
    raw = message.encode()
    return b"FAIL" + struct.pack("<I", len(raw)) + raw


def _strtoul(text: str) -> int:
    """C strtoul(text, nullptr, 0): 0x.. hex, 0.. octal, else decimal."""
    text = text.strip()
    if text[:2].lower() == "0x":
        return int(text[2:], 16)
    if len(text) > 1 and text.startswith("0"):
        return int(text[1:], 8)
    return int(text, 10)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _under(path: Path, parents: tuple[Path, ...]) -> bool:
    return any(path == p or p in path.parents for p in parents)


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket; port 0 picks an ephemeral port outside 5555-5585."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    if sock.getsockname()[1] in _EMULATOR_PORTS:  # only possible with odd kernel port ranges
        sock.close()
        return _listen(host, port)
    sock.listen(16)
    return sock


def _adb_binary() -> str:
    try:
        import adbutils

        return adbutils.adb_path()
    except Exception:
        return "adb"


# --- Android-only commands, installed into root/system/bin ------------------------------

_GETPROP = r"""#!/bin/sh
# getprop for the edgeopt emulated device: reads /system/build.prop.
props="$EDGEOPT_EMU_ROOT/system/build.prop"
if [ $# -eq 0 ]; then
  awk '/^[^#]/ { i = index($0, "="); printf "[%s]: [%s]\n", substr($0, 1, i - 1), substr($0, i + 1) }' "$props"
  exit 0
fi
awk -v k="$1" -v d="$2" '
  /^[^#]/ { i = index($0, "="); if (substr($0, 1, i - 1) == k) { print substr($0, i + 1); found = 1; exit } }
  END { if (!found) print d }' "$props"
"""

_DUMPSYS = r"""#!/bin/sh
# dumpsys for the edgeopt emulated device: battery and thermalservice only.
temp="${EDGEOPT_EMU_BATTERY_TEMP:-300}"
celsius="$(awk -v t="$temp" 'BEGIN { printf "%.1f", t / 10 }')"
status="${EDGEOPT_EMU_THERMAL_STATUS:-0}"
case "$1" in
  battery)
    cat <<EOF
Current Battery Service state:
  AC powered: false
  USB powered: true
  Wireless powered: false
  Dock powered: false
  Max charging current: 500000
  Max charging voltage: 5000000
  Charge counter: 4000000
  status: 2
  health: 2
  present: true
  level: ${EDGEOPT_EMU_BATTERY_LEVEL:-100}
  scale: 100
  voltage: 4350
  temperature: $temp
  technology: Li-ion
EOF
    ;;
  thermalservice)
    cat <<EOF
IsStatusOverride: false
ThermalEventListeners:
	callbacks: 1
	killed: false
	broadcasts count: -1
ThermalStatusListeners:
	callbacks: 1
	killed: false
	broadcasts count: -1
Thermal Status: $status
Cached temperatures:
	Temperature{mValue=$celsius, mType=3, mName=skin, mStatus=$status}
HAL Ready: true
HAL connection:
	ThermalHAL AIDL 1  connected: yes
Current temperatures from HAL:
	Temperature{mValue=$celsius, mType=0, mName=cpu0, mStatus=$status}
	Temperature{mValue=$celsius, mType=2, mName=battery, mStatus=$status}
	Temperature{mValue=$celsius, mType=3, mName=skin, mStatus=$status}
Current cooling devices from HAL:
	CoolingDevice{mValue=0, mType=2, mName=cpu0}
EOF
    ;;
  -l)
    printf 'Currently running services:\n  battery\n  thermalservice\n'
    ;;
  *)
    echo "Can't find service: $1" >&2
    ;;
esac
"""

_TASKSET = r"""#!/bin/sh
# taskset for the edgeopt emulated device: validates the mask, then runs the command
# without pinning (the host has other cores than the phone it stands in for).
ncpu="${EDGEOPT_EMU_NUM_CPUS:-8}"
all="$(awk -v n="$ncpu" 'BEGIN { printf "%x", 2 ^ n - 1 }')"
usage() { echo "usage: taskset [-ap] [mask] [PID | cmd [args...]]" >&2; exit 1; }
check_mask() {
  m="${1#0x}"; m="${m#0X}"
  case "$m" in ''|*[!0-9a-fA-F]*) echo "taskset: bad mask '$1'" >&2; exit 1 ;; esac
  hit="$(awk -v m="$m" -v n="$ncpu" 'BEGIN { v = 0; m = tolower(m);
      for (i = 1; i <= length(m); i++) v = v * 16 + index("0123456789abcdef", substr(m, i, 1)) - 1;
      print (v % (2 ^ n) > 0) ? 1 : 0 }')"
  if [ "$hit" != 1 ]; then echo "taskset: sched_setaffinity: Invalid argument" >&2; exit 1; fi
}
[ $# -ge 1 ] || usage
case "$1" in
  -p|-ap|-pa)
    shift
    if [ $# -eq 1 ]; then echo "pid $1's affinity mask: $all"; exit 0; fi
    [ $# -eq 2 ] || usage
    check_mask "$1"; exit 0 ;;
esac
check_mask "$1"; shift
[ $# -ge 1 ] || usage
exec "$@"
"""

_DF = r"""#!@PYTHON@
# df for the edgeopt emulated device: /data has EDGEOPT_EMU_STORAGE_BYTES when set.
import os, shutil, stat, sys

root = os.environ["EDGEOPT_EMU_ROOT"]
human = any(a.startswith("-") and "h" in a for a in sys.argv[1:])
limit = os.environ.get("EDGEOPT_EMU_STORAGE_BYTES")
used = 0
for top in os.listdir(root):
    if top in ("system", "vendor"):
        continue
    for dirpath, _, files in os.walk(os.path.join(root, top)):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                used += st.st_size
total = int(limit) if limit else shutil.disk_usage(root).total
avail = max(0, total - used)
pct = (used * 100 + total - 1) // total if total else 100

def size(n):
    if human and n == 0:
        return "0"
    if not human:
        return str(-(-n // 1024))
    for unit in "KMGT":
        n /= 1024
        if n < 1024:
            return ("%.1f%s" % (n, unit)) if n < 10 else ("%d%s" % (round(n), unit))
    return "%dP" % round(n / 1024)

if human:
    print("Filesystem       Size  Used Avail Use% Mounted on")
    print("/dev/block/dm-8 %5s %5s %5s %3d%% /data" % (size(total), size(used), size(avail), pct))
else:
    print("Filesystem      1K-blocks    Used Available Use% Mounted on")
    print("/dev/block/dm-8 %9s %7s %9s %3d%% /data" % (size(total), size(used), size(avail), pct))
"""

_SHIMS = {"getprop": _GETPROP, "dumpsys": _DUMPSYS, "taskset": _TASKSET, "df": _DF}


# --- command line ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run one emulated device in the foreground until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m devices.emulated_device", description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="host directory holding the device's files")
    parser.add_argument("--port", type=int, default=0, help="TCP port (default: a free ephemeral port)")
    parser.add_argument("--connect", type=int, metavar="ADB_PORT",
                        help="run `adb -P ADB_PORT connect ADDRESS` once the device listens")
    parser.add_argument("--adb", default=None, help="adb binary for --connect (default: adbutils.adb_path())")
    parser.add_argument("--model", default="Edgeopt Emulated")
    parser.add_argument("--battery-level", type=int, default=100)
    parser.add_argument("--temperature-c", type=float, default=30.0)
    parser.add_argument("--no-gpu", action="store_true", help="benchmark_model finds no GPU")
    parser.add_argument("--slow-s", type=float, default=0.0, help="delay before every packet sent")
    parser.add_argument("--storage-bytes", type=int, help="capacity of /data")
    parser.add_argument("--hang-shell", action="store_true", help="the first shell command never answers")
    parser.add_argument("--drop-during-shell", action="store_true", help="drop the connection in the first shell command")
    parser.add_argument("--standin-crash", choices=("segv", "abort"), help="benchmark_model dies by this signal")
    parser.add_argument("--standin-exit", type=int, help="benchmark_model exits with this code")
    parser.add_argument("--standin-delay-us", type=int, default=0, help="extra us per inference")
    args = parser.parse_args(argv)

    device = EmulatedDevice(args.root, model=args.model, battery_level=args.battery_level,
                            temperature_c=args.temperature_c, has_gpu=not args.no_gpu)
    device.faults.slow_s = args.slow_s
    device.faults.storage_bytes = args.storage_bytes
    device.faults.hang_shell = args.hang_shell
    device.faults.drop_during_shell = args.drop_during_shell
    device.faults.standin_crash = args.standin_crash
    device.faults.standin_exit = args.standin_exit
    device.faults.standin_delay_us = args.standin_delay_us
    device.start(port=args.port)
    print(device.address, flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    if args.connect is not None:
        result = subprocess.run([args.adb or _adb_binary(), "-P", str(args.connect), "connect", device.address],
                                capture_output=True, text=True)
        print((result.stdout + result.stderr).strip(), file=sys.stderr, flush=True)
        if result.returncode != 0:
            device.stop()
            return result.returncode
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        device.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
