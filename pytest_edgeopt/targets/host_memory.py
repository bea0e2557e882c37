"""Peak memory of loading and running one model in this (reused) process, on Linux.

The CPU target measures in its worker process, which lives across many variants, so the
process's lifetime high-water mark (``VmHWM``, ``ru_maxrss``) would report the largest
variant seen so far. Linux lets a process reset its own ``VmHWM`` to the current RSS by
writing ``5`` to ``/proc/self/clear_refs`` (``Documentation/admin-guide/mm/soft-dirty.rst``,
"5 - reset the peak resident set size"), so :class:`PeakRss` resets it before the model
is loaded (after glibc's ``malloc_trim(0)``, so memory freed by an earlier variant is not
silently reused) and reads it after the last invoke: the figure is **the peak RSS growth of
loading and running this model** (``VmHWM`` after minus ``VmRSS`` before, in MiB), the
same notion as ``benchmark_model``'s "Memory footprint delta from the start of the tool".
Where the reset is not allowed (not Linux, a locked-down ``/proc``) the figure is ``None``,
never the lifetime peak. Plain Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: What :attr:`pytest_edgeopt.profile.Profile.memory_source` says for this measure.
SOURCE = "VmHWM growth in the worker (peak reset via /proc/self/clear_refs)"

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(key: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _trim_heap() -> None:
    """glibc ``malloc_trim(0)``: return free heap pages to the system (no-op elsewhere)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@dataclass(slots=True)
class PeakRss:
    """Call :meth:`start` before loading the model and :meth:`peak_mb` after running it."""

    start_kib: int | None = None

    def start(self) -> None:
        """Give freed heap back to the system (so the model's allocations fault in new pages
        rather than reuse resident ones), reset the peak RSS to the current RSS, note it."""
        _trim_heap()
        try:
            _CLEAR_REFS.write_text("5")
        except OSError:
            self.start_kib = None
            return
        self.start_kib = _status_kib("VmRSS")

    def peak_mb(self) -> float | None:
        """Peak RSS growth since :meth:`start` in MiB, or ``None`` when it cannot be measured."""
        if self.start_kib is None:
            return None
        hwm = _status_kib("VmHWM")
        if hwm is None:
            return None
        return max(0, hwm - self.start_kib) / 1024.0
