"""The pytest process's side of the workers: start, call, detect a crash, replace.

One :class:`Worker` is one fresh Python process (no TensorFlow state inherited, none
imported until a request needs it) serving requests over a pipe (:mod:`pytest_edgeopt.workers.serve`). :class:`WorkerPool` starts it on the first
request and reuses it for every later one, so TensorFlow is imported once. When the worker
dies by a signal, is killed for memory, exits, or runs past the call's timeout (then it is
killed), the call raises :class:`WorkerCrashed` naming the stage it was in, the signal and
the last lines it wrote to stderr, with a remedy where one is known, and the next call
starts a new worker: as pytest-xdist reports a crashed worker's item and replaces it.
"""

from __future__ import annotations

import atexit
import contextvars
import os
import pickle
import re
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Pipe
from pathlib import Path
from typing import Any

from pytest_edgeopt.targets.base import VariantBroken
from pytest_edgeopt.variants.registry import VariantBuildError
from pytest_edgeopt.workers.portable import NotPortable

#: Seconds a build may take in a worker before it counts as hung (fine-tuning included).
BUILD_TIMEOUT_S = 4 * 3600.0
#: Seconds one host-CPU measurement request (accuracy run or timed loop) may take.
MEASURE_TIMEOUT_S = 3600.0
#: Lines of the worker's stderr quoted in a crash message.
STDERR_LINES = 3

#: What the session is doing ("digits-cnn int8 on cpu"): sent with each request, quoted on a crash.
activity: contextvars.ContextVar[str] = contextvars.ContextVar("edgeopt_worker_activity", default="")


@dataclass(frozen=True, slots=True)
class Crash:
    """How a worker ended: the ``stage`` it was in (``convert``, ``load``, ``invoke``,
    ``teardown``, or ``None`` before any), the ``signal`` name (``SIGABRT``) or the
    ``exitcode``, ``timeout_s`` when it was killed for running past it, and the last
    lines it wrote to stderr (``stderr_tail``)."""

    label: str
    stage: str | None
    signal: str | None
    exitcode: int | None
    timeout_s: float | None
    stderr_tail: tuple[str, ...]

    @property
    def cause(self) -> str:
        if self.timeout_s is not None:
            return f"ran past its {self.timeout_s:g} s timeout and was killed"
        if self.signal is not None:
            return f"died by {self.signal}"
        return f"exited with code {self.exitcode}"

    @property
    def remedy(self) -> str | None:
        if self.timeout_s is not None:
            return ("a conversion or interpreter that never returns; run the variant alone "
                    "(-k) to see whether it hangs or is only slow")
        if self.signal == "SIGKILL":
            return ("SIGKILL is most often the kernel's out-of-memory killer (`dmesg` says so): give the run "
                    "more memory, run fewer pytest-xdist workers, or lower calibration_samples / batch_size")
        if self.signal is None:
            return None
        if self.stage == "convert":
            return ("a native crash in TensorFlow's converter or tfmot: report it with the model at "
                    "https://github.com/tensorflow/tensorflow/issues; the other variants are unaffected")
        return ("a native crash in the LiteRT interpreter running this variant (heap corruption such as "
                "'free(): invalid next size' is a known int8 converter bug around LSTM/concat): keep the "
                "offending nodes in float (edgeopt_options float_nodes=..., suggested by the quantization "
                "debugger) or report it with the .tflite at https://github.com/google-ai-edge/LiteRT/issues")

    def describe(self) -> str:
        where = f" during {self.stage}" if self.stage else " before it started the request"
        native = " (LiteRT/TensorFlow native crash)" if self.signal not in (None, "SIGKILL") else ""
        parts = [f"the worker process {self.cause}{where}{native}"]
        if self.stderr_tail:
            parts.append("last stderr: " + " | ".join(self.stderr_tail))
        parts.append("the worker was replaced")
        if self.remedy:
            parts.append("remedy: " + self.remedy)
        return "; ".join(parts)


class WorkerCrashed(Exception):
    """A worker died or hung while serving a request; ``crash`` says how (see :class:`Crash`)."""

    def __init__(self, crash: Crash) -> None:
        super().__init__(crash.describe())
        self.crash = crash

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.crash,))


class BuildCrashed(WorkerCrashed, VariantBuildError):
    """A worker crashed building a variant: a FAIL of that variant (a VariantBuildError)."""


class MeasureCrashed(WorkerCrashed, VariantBroken):
    """A worker crashed measuring on the host CPU: a FAIL on that target (a VariantBroken)."""


#: Lines TensorFlow and LiteRT print in every process, whatever happens next: LiteRT's ``INFO:``
#: (delegate created), absl's preamble and TensorFlow's CUDA probing (``I0000 ... cudart_stub.cc``,
#: ``E0000 ... cuda_platform.cc ... cuInit``). They say nothing about a crash.
_NOISE = re.compile(r"^(INFO: |WARNING: All log messages before absl::InitializeLog\(\)"
                    r"|[IWE]\d{4} [\d:.]+\s+\d+ (cudart_stub|cuda_platform|cuda_executor|cuda_diagnostics"
                    r"|gpu_device|port|cpu_feature_guard)\.cc:\d+\])")


def _start_up_noise(line: str) -> bool:
    return _NOISE.match(line.strip()) is not None


def stderr_tail(path: Path, lines: int = STDERR_LINES, width: int = 300) -> tuple[str, ...]:
    """The last ``lines`` non-blank lines of ``path``, each cut to ``width`` characters;
    start-up noise (:data:`_NOISE`) says nothing about a crash and is left out."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ()
    kept = [ln.strip() for ln in text.splitlines() if ln.strip() and not _start_up_noise(ln)][-lines:]
    return tuple(ln if len(ln) <= width else ln[: width - 3] + "..." for ln in kept)


def _signal_name(exitcode: int | None) -> str | None:
    if exitcode is None or exitcode >= 0:
        return None
    try:
        return signal.Signals(-exitcode).name
    except ValueError:
        return f"signal {-exitcode}"


class Worker:
    """One worker process (``python -m pytest_edgeopt.workers.serve``), its pipe and its
    stderr file (``log_path``, stdout goes there too).

    A plain subprocess rather than a ``multiprocessing`` *spawn* process: the same fresh
    interpreter, without re-running the parent's ``__main__`` script in the child (a
    ``pytest.main()`` script without an ``if __name__ == "__main__"`` guard would start
    over). The worker gets the parent's ``sys.path`` first, so whatever the parent can
    unpickle (a conftest's model, a test-only request class) it can too.
    """

    def __init__(self, log_dir: Path | None = None) -> None:
        fd, name = tempfile.mkstemp(prefix="edgeopt-worker-", suffix=".log", dir=log_dir)
        self.log_path = Path(name)
        self._conn, child = Pipe(duplex=True)
        # The package's own directory on PYTHONPATH: -m finds it even when it is not installed.
        home = str(Path(__file__).resolve().parents[2])
        pythonpath = os.pathsep.join(p for p in (home, os.environ.get("PYTHONPATH")) if p)
        # Unbuffered: a crash loses nothing the worker printed.
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": pythonpath}
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pytest_edgeopt.workers.serve", str(child.fileno())],
                stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, pass_fds=(child.fileno(),), env=env,
            )
        finally:
            os.close(fd)
            child.close()
        self._conn.send(list(sys.path))
        _LIVE.add(self)
        #: Tokens of the models this worker already holds (sent once per worker).
        self.known: set[str] = set()
        #: The stage of the request being served (reported by the worker).
        self.stage: str | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def call(self, request: Any, timeout_s: float, label: str, progress: Callable[[str], None]) -> Any:
        """Send ``request``, forward its progress lines, return its result or raise what it
        raised. Raises NotPortable when the request cannot be pickled, and ``_Died`` (with the
        :class:`Crash`) when the worker dies or passes ``timeout_s``."""
        outgoing = request.for_worker(self.known) if hasattr(request, "for_worker") else request
        try:
            blob = pickle.dumps((label, outgoing), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # a lambda loss, a custom object: any pickling error
            raise NotPortable(f"{type(exc).__name__}: {exc}") from None
        self.stage = None
        try:
            self._conn.send_bytes(blob)
        except OSError:
            raise _Died(self._ended(label, None)) from None
        token = getattr(request, "token", None)
        if token is not None:
            self.known.add(token)
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise _Died(self._ended(label, timeout_s))
            try:
                ready = self._conn.poll(min(left, 0.5))
                message = self._conn.recv() if ready else None
            except (EOFError, OSError):
                raise _Died(self._ended(label, None)) from None
            if message is None:
                if not self.alive():
                    raise _Died(self._ended(label, None))
                continue
            kind, payload = message
            if kind == "stage":
                self.stage = payload
            elif kind == "progress":
                progress(payload)
            elif kind == "ok":
                return payload
            elif kind == "error":
                raise payload
            else:  # pragma: no cover - a protocol error is a bug
                raise RuntimeError(f"unknown message from the worker: {kind!r}")

    def _ended(self, label: str, timeout_s: float | None) -> Crash:
        try:
            code: int | None = self.process.wait(5)
        except subprocess.TimeoutExpired:  # the pipe broke but the process lingers: end it
            self.kill()
            code = self.process.returncode
        return Crash(label=label, stage=self.stage, signal=_signal_name(code) if timeout_s is None else None,
                     exitcode=code, timeout_s=timeout_s, stderr_tail=stderr_tail(self.log_path))

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:  # pragma: no cover - a process in uninterruptible sleep
            pass

    def close(self, grace_s: float = 5.0) -> None:
        """Ask the worker to stop, kill it if it does not within ``grace_s``, drop its files."""
        try:
            if self.alive() and grace_s > 0:
                self._conn.send(None)
                self.process.wait(grace_s)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()
        self._conn.close()
        self.log_path.unlink(missing_ok=True)
        _LIVE.discard(self)


#: Workers not yet closed: killed when the pytest process exits without closing them.
_LIVE: weakref.WeakSet[Worker] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    for worker in list(_LIVE):
        worker.kill()


class _Died(Exception):
    def __init__(self, crash: Crash) -> None:
        super().__init__(crash.describe())
        self.crash = crash


class WorkerPool:
    """The session's worker: started on the first :meth:`call`, reused, replaced after a crash.

    ``progress(message)`` receives the worker's progress lines while a call runs (a build's
    epoch lines). ``started`` counts the workers started so far; ``pids`` lists them.
    """

    def __init__(self, progress: Callable[[str], None] = lambda msg: None, log_dir: Path | None = None) -> None:
        self.progress = progress
        self.log_dir = log_dir
        self._worker: Worker | None = None
        self.pids: list[int] = []

    @property
    def started(self) -> int:
        return len(self.pids)

    @property
    def worker(self) -> Worker | None:
        """The live worker, if one is running."""
        return self._worker

    def call(self, request: Any, *, timeout_s: float, crashed: type[WorkerCrashed] = WorkerCrashed,
             label: str | None = None) -> Any:
        """``request.run(...)`` in the worker. Raises what it raised (same type and message),
        NotPortable when it cannot be sent, or ``crashed`` (a :class:`WorkerCrashed`) when the
        worker died or hung; the next call then starts a new worker. On KeyboardInterrupt
        (or any other BaseException) the worker is killed before it propagates."""
        if self._worker is None:
            self._worker = Worker(self.log_dir)
            self.pids.append(self._worker.pid)
        worker = self._worker
        try:
            return worker.call(request, timeout_s, activity.get() if label is None else label, self.progress)
        except _Died as died:
            self._discard()
            raise crashed(died.crash) from None
        except Exception:
            raise
        except BaseException:
            self._discard()
            raise

    def _discard(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.kill()
            worker.close(grace_s=0)

    def close(self) -> None:
        """Stop the worker (at the end of the session)."""
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.close()
