"""Requests for the worker-pool tests (tests/test_workers.py): each runs inside a spawned
worker, so it lives in an importable module, not in the test file."""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any

from pytest_edgeopt.workers.stage import stage


@dataclass(frozen=True)
class Echo:
    value: Any

    def run(self, worker: Any) -> tuple[Any, int]:
        return self.value, os.getpid()


@dataclass(frozen=True)
class Talk:
    """Sends progress lines, then returns how many."""

    lines: tuple[str, ...]

    def run(self, worker: Any) -> int:
        for line in self.lines:
            worker.progress(line)
        return len(self.lines)


@dataclass(frozen=True)
class Die:
    """Enters ``where``, writes ``said`` to fd 2 as native code would, then kills itself with ``sig``."""

    where: str
    said: str
    sig: str = "SIGABRT"

    def run(self, worker: Any) -> None:
        stage(self.where)
        os.write(2, self.said.encode() + b"\n")
        os.kill(os.getpid(), signal.Signals[self.sig])
        time.sleep(30)


@dataclass(frozen=True)
class Hang:
    where: str

    def run(self, worker: Any) -> None:
        stage(self.where)
        time.sleep(600)


@dataclass(frozen=True)
class Raise:
    exc: BaseException

    def run(self, worker: Any) -> None:
        raise self.exc


@dataclass(frozen=True)
class Modules:
    """Which of ``names`` the worker has imported."""

    names: tuple[str, ...]

    def run(self, worker: Any) -> list[str]:
        return [n for n in self.names if n in sys.modules]


@dataclass(frozen=True)
class TalkSlowly:
    """Sends a progress line, then works for ``seconds``."""

    seconds: float

    def run(self, worker: Any) -> None:
        worker.progress("started")
        time.sleep(self.seconds)
