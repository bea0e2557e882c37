"""Where a request is (``convert``, ``load``, ``invoke``, ``teardown``), reported from the
code that runs native calls, so a worker that dies can be blamed on a stage.

In the pytest process (no worker) :func:`stage` does nothing; inside a worker,
:mod:`pytest_edgeopt.workers.serve` installs a reporter that tells the parent. This module
imports nothing heavy: the targets call it on every measurement.
"""

from __future__ import annotations

from collections.abc import Callable

#: The stages a crash can be blamed on, in the order a request goes through them.
STAGES = ("convert", "load", "invoke", "teardown")

_reporter: Callable[[str], None] | None = None


def stage(name: str) -> None:
    """Enter stage ``name`` (one of :data:`STAGES`): reported to the parent when in a worker."""
    if _reporter is not None:
        _reporter(name)


def set_reporter(reporter: Callable[[str], None] | None) -> None:
    """Install (or, with ``None``, remove) the function :func:`stage` reports to."""
    global _reporter
    _reporter = reporter
