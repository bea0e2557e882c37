"""Latency statistics from raw samples."""

import math

import numpy as np
import pytest

from pytest_edgeopt.results import LatencyStats


def test_statistics_from_samples() -> None:
    samples = tuple(float(x) for x in range(1, 101))  # 1..100 us
    s = LatencyStats(samples)
    assert s.count == 100
    assert s.p50_ms == pytest.approx(np.percentile(samples, 50) / 1000)
    assert s.p90_ms == pytest.approx(np.percentile(samples, 90) / 1000)
    assert s.mean_ms == pytest.approx(0.0505)
    assert s.stdev_ms == pytest.approx(np.std(samples, ddof=1) / 1000)
    assert s.cv == pytest.approx(s.stdev_ms / s.mean_ms)
    assert s.min_ms == pytest.approx(0.001)


def test_single_sample_has_zero_spread() -> None:
    s = LatencyStats((250.0,))
    assert s.stdev_ms == 0.0 and s.cv == 0.0 and s.p90_ms == 0.25


def test_no_samples_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one sample"):
        LatencyStats(())


def test_round_trip() -> None:
    s = LatencyStats((3.0, 4.5, 5.25))
    d = s.to_dict()
    assert d["p50_ms"] == pytest.approx(0.0045) and d["count"] == 3
    assert LatencyStats.from_dict(d) == s
    assert not math.isnan(d["cv"])
