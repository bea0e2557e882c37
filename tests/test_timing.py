"""The timing loop's stopping rules, on a fake invoke whose cost is known."""

import time

from pytest_edgeopt.targets.base import LatencySettings
from pytest_edgeopt.timing import time_invokes


def counting(cost_s: float = 0.0):
    calls = []

    def invoke():
        calls.append(1)
        if cost_s:
            time.sleep(cost_s)

    return invoke, calls


def test_first_and_warmup_are_not_samples() -> None:
    invoke, calls = counting()
    timed = time_invokes(invoke, LatencySettings(warmup=7, min_samples=30, min_time_s=0.0))
    assert timed.stats.count == 30
    assert len(calls) == 1 + 7 + 30
    assert timed.first_ms >= 0


def test_min_time_keeps_sampling_past_min_samples() -> None:
    invoke, _ = counting(0.001)
    timed = time_invokes(invoke, LatencySettings(warmup=0, min_samples=5, min_time_s=0.05, max_samples=10_000))
    assert timed.stats.count > 5
    assert sum(timed.stats.samples_us) >= 50_000 * 0.9


def test_max_samples_caps_fast_models() -> None:
    invoke, _ = counting()
    timed = time_invokes(invoke, LatencySettings(warmup=0, min_samples=10, min_time_s=60.0, max_samples=500))
    assert timed.stats.count == 500


def test_max_time_caps_slow_models() -> None:
    invoke, _ = counting(0.02)
    start = time.perf_counter()
    timed = time_invokes(invoke, LatencySettings(warmup=0, min_samples=1000, min_time_s=0.0, max_time_s=0.1))
    assert timed.stats.count < 1000 and time.perf_counter() - start < 1.0
    assert timed.stats.p50_ms >= 20
