"""Try the Android targets without a phone, in three commands:

    python -m devices start                      # adb server + emulated phone + benchmark_model stand-in
    pytest examples/digits $(python -m devices flags)
    python -m devices stop

``start`` runs :func:`serve` in a detached process and returns once the phone is attached,
printing the pytest flags; ``serve`` does the same in the foreground until Ctrl-C or SIGTERM.
What it sets up, in one state directory (``--dir``, default ``$TMPDIR/edgeopt-phone-$UID``):

- a private adb server (:class:`~devices.adb_server.AdbServer`: ``adb -P PORT server
  nodaemon`` on a free port, ``HOME`` in ``adb-home/``, no USB or emulator scan), so the
  user's own adb server and phones are left alone;
- the emulated phone (:class:`~devices.emulated_device.EmulatedDevice`, files under
  ``phone/``), attached to that server with ``adb connect``;
- the ``benchmark_model`` stand-in (:func:`~devices.benchmark_model_standin.write_standin`)
  at ``benchmark_model``, which the Android target pushes to the phone like the real binary;
- ``phone.json``: the addresses, the stand-in's path and the serving process's id (what
  ``flags`` and ``stop`` read).

The flags: ``--edgeopt-adb=HOST:PORT --edgeopt-serial=SERIAL
--edgeopt-benchmark-model=PATH --edgeopt-targets=android_gpu,android_cpu``.

SECURITY: the emulated phone runs shell commands as real host commands (see
``devices/README.md``); it listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

#: Targets the printed flags select.
TARGETS = "android_gpu,android_cpu"
STATE_FILE = "phone.json"
#: The repository root (``devices`` is imported from there).
ROOT = Path(__file__).resolve().parent.parent


def default_dir() -> Path:
    """``$TMPDIR/edgeopt-phone-$UID``: one try-out phone per user."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"edgeopt-phone-{uid}"


@dataclass(frozen=True, slots=True)
class Phone:
    """A running try-out phone: its adb server ``adb`` (``HOST:PORT``), the phone's
    ``serial`` (its ``127.0.0.1:PORT`` address), the host path of the ``benchmark_model``
    stand-in, the serving process ``pid``, the server's ``adb_home`` and ``adb`` binary."""

    adb: str
    serial: str
    benchmark_model: str
    pid: int
    adb_home: str
    adb_binary: str

    @property
    def flags(self) -> list[str]:
        """The pytest flags that run the Android targets on this phone."""
        return [f"--edgeopt-adb={self.adb}", f"--edgeopt-serial={self.serial}",
                f"--edgeopt-benchmark-model={self.benchmark_model}", f"--edgeopt-targets={TARGETS}"]

    def lines(self, state_dir: Path | None = None) -> list[str]:
        """What ``start`` and ``serve`` print (``state_dir``: named in the commands when it
        is not the default)."""
        port = self.adb.rsplit(":", 1)[1]
        where = f" --dir {state_dir}" if state_dir is not None and state_dir != default_dir() else ""
        return [
            f"emulated phone {self.serial} attached to a private adb server at {self.adb} (pid {self.pid})",
            f"benchmark_model stand-in: {self.benchmark_model}",
            "run the Android tests on it:",
            f"  pytest examples/digits {' '.join(self.flags)}",
            f"  (or: pytest examples/digits $(python -m devices flags{where}))",
            f"its adb: HOME={self.adb_home} {self.adb_binary} -P {port} devices",
            f"stop it: python -m devices stop{where}",
        ]

    def save(self, state_dir: Path) -> None:
        tmp = state_dir / f".{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=1))
        os.replace(tmp, state_dir / STATE_FILE)

    @classmethod
    def load(cls, state_dir: Path) -> Phone | None:
        """The phone served from ``state_dir``, ``None`` when none is (a stale file of a
        process that is gone is removed)."""
        path = state_dir / STATE_FILE
        try:
            phone = cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None
        if not _alive(phone.pid):
            path.unlink(missing_ok=True)
            return None
        return phone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def serve(state_dir: Path, *, stop: threading.Event | None = None, quiet: bool = False) -> int:
    """Start the adb server, the phone and the stand-in in ``state_dir``, write
    ``phone.json``, print the flags, and serve until ``stop`` is set (SIGTERM, SIGINT).
    Everything is stopped and ``phone.json`` removed on the way out. Returns the exit code
    (1 when a phone is already served from ``state_dir``)."""
    from devices.adb_server import AdbServer, bundled_adb
    from devices.benchmark_model_standin import write_standin
    from devices.emulated_device import EmulatedDevice

    state_dir.mkdir(parents=True, exist_ok=True)
    running = Phone.load(state_dir)
    if running is not None:
        print(f"a phone is already served from {state_dir} (pid {running.pid}): python -m devices stop"
              + (f" --dir {state_dir}" if state_dir != default_dir() else ""), file=sys.stderr)
        return 1
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
    server = AdbServer(adb=bundled_adb(), home=state_dir / "adb-home").start()
    device = EmulatedDevice(state_dir / "phone")
    try:
        device.start()
        server.connect(device.address)
        standin = write_standin(state_dir / "benchmark_model")
        phone = Phone(adb=server.address, serial=device.address, benchmark_model=str(standin), pid=os.getpid(),
                      adb_home=str(server.home), adb_binary=server.adb)
        phone.save(state_dir)
        if not quiet:
            print("\n".join(phone.lines(state_dir)), flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        (state_dir / STATE_FILE).unlink(missing_ok=True)
        device.stop()
        server.stop()
    return 0


def start(state_dir: Path, *, timeout: float = 60.0) -> int:
    """Run :func:`serve` in a detached process (its output in ``state_dir/serve.log``) and
    return once the phone is attached, printing what ``serve`` prints; 1 with the log's tail
    when it does not come up within ``timeout`` seconds."""
    state_dir.mkdir(parents=True, exist_ok=True)
    running = Phone.load(state_dir)
    if running is not None:
        print("\n".join(running.lines(state_dir)))
        return 0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    with open(state_dir / "serve.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "devices", "serve", "--dir", str(state_dir), "--quiet"],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=ROOT, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        phone = Phone.load(state_dir)
        if phone is not None and phone.pid == proc.pid:
            print("\n".join(phone.lines(state_dir)))
            return 0
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    if proc.poll() is None:
        proc.terminate()
        proc.wait(10)
    tail = (state_dir / "serve.log").read_text(errors="replace").splitlines()[-20:]
    print(f"the emulated phone did not come up within {timeout:g} s:\n" + "\n".join(tail), file=sys.stderr)
    return 1


def stop(state_dir: Path, *, timeout: float = 30.0) -> int:
    """SIGTERM the serving process and wait until it is gone (it stops the phone and the adb
    server). 0 also when nothing was running (it says so)."""
    phone = Phone.load(state_dir)
    if phone is None:
        print(f"no emulated phone is served from {state_dir}")
        return 0
    os.kill(phone.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(phone.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(phone.pid):
        print(f"the serving process {phone.pid} did not stop within {timeout:g} s", file=sys.stderr)
        return 1
    print(f"stopped the emulated phone {phone.serial} and its adb server {phone.adb}")
    return 0


def flags(state_dir: Path) -> int:
    """Print the pytest flags of the running phone on one line (for ``$(...)``); 1 when none runs."""
    phone = Phone.load(state_dir)
    if phone is None:
        where = f" --dir {state_dir}" if state_dir != default_dir() else ""
        print(f"no emulated phone is served from {state_dir}: python -m devices start{where}", file=sys.stderr)
        return 1
    print(" ".join(phone.flags))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devices", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("start", "flags", "stop", "serve"),
                        help="start: detached, returns once the phone is attached; flags: print the pytest flags; "
                             "stop; serve: in the foreground until Ctrl-C")
    parser.add_argument("--dir", type=Path, default=None, help=f"state directory (default {default_dir()})")
    parser.add_argument("--quiet", action="store_true", help="serve: print nothing")
    args = parser.parse_args(argv)
    state_dir = (args.dir or default_dir()).absolute()
    if args.command == "serve":
        return serve(state_dir, quiet=args.quiet)
    return {"start": start, "flags": flags, "stop": stop}[args.command](state_dir)
