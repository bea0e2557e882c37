"""The worker's side: a loop that runs requests sent over a pipe, one at a time.

Started by :class:`pytest_edgeopt.workers.pool.Worker` as ``python -m
pytest_edgeopt.workers.serve FD`` (FD: its end of the pipe). stdout and stderr (file
descriptors 1 and 2, so TensorFlow's and LiteRT's native logging too) go to a per-worker
file the parent quotes after a crash. The first message is the parent's ``sys.path``. SIGINT is ignored: on Ctrl-C the parent
decides (it kills the worker). Messages to the parent: ``("stage", name)``,
``("progress", text)``, then ``("ok", result)`` or ``("error", exception)``.

Self-test: with ``PYTEST_EDGEOPT_SELFTEST_CRASH=STAGE:WHAT:GLOB`` in its environment a
worker entering ``STAGE`` for a request whose label matches ``GLOB`` kills itself with
signal ``WHAT`` (``SIGABRT``, ``SIGKILL``, ...) or, with ``hang``, sleeps for ever. The
test suite uses it to crash a worker on purpose; nothing else sets it.
"""

from __future__ import annotations

import fnmatch
import os
import pickle
import signal
import sys
import time
import traceback
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from pytest_edgeopt.workers.stage import set_reporter

if TYPE_CHECKING:  # pragma: no cover
    from pytest_edgeopt.model import ModelUnderTest
    from pytest_edgeopt.workers.portable import PortableModel

SELFTEST_ENV = "PYTEST_EDGEOPT_SELFTEST_CRASH"


class WorkerState:
    """What a worker keeps between requests: the models it was sent (by token), and ``memo``,
    where requests keep what they load or make once per worker (the builder of a cache, the
    fidelity check's source models)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.label = ""
        self._models: dict[str, ModelUnderTest] = {}
        #: What requests keep between calls, by a key of their own.
        self.memo: dict[Any, Any] = {}
        self._crash = _selftest_crash(os.environ.get(SELFTEST_ENV, ""))

    def progress(self, message: str) -> None:
        self.conn.send(("progress", message))

    def enter_stage(self, name: str) -> None:
        self.conn.send(("stage", name))
        if self._crash is not None:
            where, what, pattern = self._crash
            if where == name and fnmatch.fnmatchcase(self.label, pattern):
                os.write(2, f"pytest-edgeopt self-test: {what} in {name} of {self.label}\n".encode())
                if what == "hang":
                    while True:
                        time.sleep(3600)
                os.kill(os.getpid(), signal.Signals[what])

    def model(self, token: str, portable: PortableModel | None) -> ModelUnderTest:
        if portable is not None and token not in self._models:
            self._models[token] = portable.restore()
        return self._models[token]



def _selftest_crash(spec: str) -> tuple[str, str, str] | None:
    parts = spec.split(":", 2)
    if len(parts) != 3:
        return None
    return parts[0], parts[1], parts[2]


def _sendable(exc: BaseException) -> BaseException:
    """``exc`` as the parent can receive it: the same exception when it pickles (the
    worker's traceback attached as a note for unexpected types), else a RuntimeError
    carrying its type, message and traceback."""
    from pytest_edgeopt.model import ModelError
    from pytest_edgeopt.targets.base import TargetError, TargetUnavailable
    from pytest_edgeopt.variants.registry import VariantBuildError, VariantUnavailable

    expected = (VariantUnavailable, VariantBuildError, ModelError, TargetError, TargetUnavailable)
    tb = "".join(traceback.format_exception(exc))
    if not isinstance(exc, expected):
        exc.add_note(f"(raised in the pytest-edgeopt worker process {os.getpid()}:)\n{tb}")
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        plain = RuntimeError(f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}")
        plain.add_note(f"(raised in the pytest-edgeopt worker process {os.getpid()}:)\n{tb}")
        return plain


def main(conn: Connection) -> None:
    """The worker's loop: serve requests until the pipe closes or ``None`` arrives."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        paths: list[str] = conn.recv()
    except (EOFError, OSError):
        return
    sys.path[:] = paths + [p for p in sys.path if p not in paths]
    state = WorkerState(conn)
    set_reporter(state.enter_stage)
    while True:
        try:
            raw = conn.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            message: Any = pickle.loads(raw)
        except Exception as exc:  # a class the worker cannot import, a model that cannot load here
            from pytest_edgeopt.workers.portable import NotPortable

            conn.send(("error", NotPortable(f"the worker cannot load the request ({type(exc).__name__}: {exc})")))
            continue
        if message is None:
            return
        state.label, request = message
        try:
            result = request.run(state)
        except BaseException as exc:  # everything goes back to the parent, which decides
            conn.send(("error", _sendable(exc)))
        else:
            conn.send(("ok", result))


if __name__ == "__main__":
    main(Connection(int(sys.argv[1])))
