"""Timing an interpreter in-process: the first invoke on its own, warm-up, then timed
invokes. Shared by the targets that run the LiteRT interpreter on this host (cpu, edgetpu)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from pytest_edgeopt.results import LatencyStats
from pytest_edgeopt.targets.base import LatencySettings


@dataclass(frozen=True, slots=True)
class Timed:
    """``first_ms``: the first invoke in ms (on an accelerator it loads the parameters);
    ``stats``: the steady-state samples in microseconds; ``warmup_mean_ms``: mean of the
    warm-up invokes in ms (``None`` without warm-up)."""

    first_ms: float
    stats: LatencyStats
    warmup_mean_ms: float | None = None


def time_invokes(invoke: Callable[[], object], settings: LatencySettings) -> Timed:
    """Time ``invoke``: once on its own, ``settings.warmup`` untimed, then timed until both
    ``min_samples`` and ``min_time_s`` are reached, stopping early at ``max_samples`` samples
    or ``max_time_s`` seconds. Only the call itself is inside the timed region."""
    clock = time.perf_counter_ns
    t0 = clock()
    invoke()
    first_ns = clock() - t0
    w0 = clock()
    for _ in range(settings.warmup):
        invoke()
    warmup_ns = clock() - w0
    samples: list[int] = []
    append = samples.append
    min_ns, max_ns = int(settings.min_time_s * 1e9), int(settings.max_time_s * 1e9)
    min_n, max_n = settings.min_samples, max(settings.max_samples, settings.min_samples)
    start = clock()
    while True:
        t0 = clock()
        invoke()
        t1 = clock()
        append(t1 - t0)
        n, elapsed = len(samples), t1 - start
        if (n >= min_n and elapsed >= min_ns) or n >= max_n or elapsed >= max_ns:
            break
    warmup_ms = warmup_ns / 1e6 / settings.warmup if settings.warmup > 0 else None
    return Timed(first_ns / 1e6, LatencyStats(tuple(s / 1000.0 for s in samples)), warmup_ms)
