"""Budget arithmetic and messages, on hand-made observations."""

from __future__ import annotations

import pytest

from pytest_edgeopt.budgets.rules import BudgetError, BudgetExceeded, validate
from pytest_edgeopt.measurement import Measurement
from pytest_edgeopt.results import Accuracy, LatencyStats, Observation


def obs(variant: str, size: int, gz: int, lat_us: float, acc: float | None, device=None) -> Observation:
    return Observation(
        model="m", variant=variant, target="cpu", device=device or {"kind": "host", "id": "host", "label": None},
        size_bytes=size, compressed_size_bytes=gz,
        latency=LatencyStats(tuple(lat_us * f for f in (0.9, 1.0, 1.0, 1.1, 1.0))),
        accuracy=None if acc is None else Accuracy("top1", acc, 450),
    )


@pytest.fixture
def int8() -> Measurement:
    return Measurement(obs("int8", 52_192, 46_040, 50.0, 0.951), obs("fp32", 175_620, 160_654, 100.0, 0.982))


def test_derived_figures(int8: Measurement) -> None:
    assert int8.size_reduction == pytest.approx(1 - 52_192 / 175_620)
    assert int8.compressed_size_reduction == pytest.approx(1 - 46_040 / 160_654)
    assert int8.speedup == pytest.approx(2.0)
    assert int8.accuracy_drop == pytest.approx(0.031)
    assert int8.latency.p50_ms == pytest.approx(0.05)


def test_met_budgets_pass_and_are_recorded(int8: Measurement) -> None:
    int8.check(min_size_reduction=0.7, min_speedup=1.5, max_accuracy_drop=0.05, max_latency_ms=0.06)
    assert int8.passed and int8.outcomes[-1].violations == ()


def test_accuracy_drop_message_matches_the_contract(int8: Measurement) -> None:
    with pytest.raises(BudgetExceeded) as info:
        int8.check(max_accuracy_drop=0.01)
    assert str(info.value) == "int8 on cpu: accuracy drop 0.031 > 0.010 (fp32 0.982 -> int8 0.951 on 450 samples)"
    assert isinstance(info.value, AssertionError)
    assert not int8.passed


def test_every_missed_budget_is_listed(int8: Measurement) -> None:
    with pytest.raises(BudgetExceeded) as info:
        int8.check(min_size_reduction=0.9, min_speedup=3, max_size_bytes=50_000, min_accuracy=0.99,
                   max_latency_ms=0.01, min_compressed_size_reduction=0.8)
    lines = str(info.value).splitlines()
    assert len(lines) == 6
    assert lines[0] == "int8 on cpu: size reduction 0.703 < 0.900 (fp32 175,620 B -> int8 52,192 B)"
    assert lines[1] == "int8 on cpu: speedup 2.00x < 3.00x (fp32 p50 0.1 ms -> int8 p50 0.05 ms)"
    assert lines[2] == "int8 on cpu: size 52,192 B > 50,000 B (fp32 175,620 B)"
    assert lines[3] == "int8 on cpu: top1 0.951 < 0.990 (fp32 0.982 -> int8 0.951 on 450 samples)"
    assert lines[4].startswith("int8 on cpu: latency p50 0.05 ms > 0.01 ms (p50 of 5 samples, cv 0.07; fp32 p50 0.1 ms)")
    assert lines[5] == "int8 on cpu: compressed size reduction 0.713 < 0.800 (gzip-9: fp32 160,654 B -> int8 46,040 B)"


def test_latency_percentile_selects_the_statistic(int8: Measurement) -> None:
    int8.check(max_latency_ms=0.051)  # p50 = 50 us
    with pytest.raises(BudgetExceeded, match=r"latency p90 0.053 ms > 0.051 ms"):
        int8.check(max_latency_ms=0.051, latency_percentile=90)


def test_device_is_named_in_the_message() -> None:
    dev = {"kind": "android", "id": "R58M", "label": "pixel8"}
    m = Measurement(obs("int8", 10, 10, 50.0, 0.9, dev), obs("fp32", 40, 40, 100.0, 0.95, dev))
    with pytest.raises(BudgetExceeded, match=r"^int8 on cpu/pixel8: accuracy drop"):
        m.check(max_accuracy_drop=0.01)


@pytest.mark.parametrize(("budgets", "message"), [
    ({"max_acuracy_drop": 0.01}, "unknown budget keyword 'max_acuracy_drop'"),
    ({"min_size_reduction": 1.5}, "min_size_reduction=1.5 must be a fraction between 0 and 1"),
    ({"min_speedup": -1}, "min_speedup=-1 must be a positive number"),
    ({"max_latency_ms": "5ms"}, "max_latency_ms='5ms' must be a positive number"),
    ({"max_accuracy_drop": -0.1}, "must be a non-negative number"),
    ({"latency_percentile": 90}, "latency_percentile alone sets no budget"),
    ({"max_latency_ms": 1, "latency_percentile": 101}, "latency_percentile=101 must be a percentile"),
    ({}, "no budget given"),
])
def test_malformed_budgets_are_refused(budgets: dict, message: str) -> None:
    with pytest.raises(BudgetError, match=message.replace("(", r"\(").replace(".", r"\.")):
        validate(budgets)


def test_accuracy_budget_without_eval_data_says_what_to_set() -> None:
    m = Measurement(obs("int8", 10, 10, 50.0, None), obs("fp32", 40, 40, 100.0, None))
    with pytest.raises(BudgetError, match=r"needs an accuracy, but the model has no eval data; set ModelUnderTest\(eval_data"):
        m.check(max_accuracy_drop=0.01)
    m.check(min_size_reduction=0.5)


def test_measurement_round_trips_through_a_dict(int8: Measurement) -> None:
    with pytest.raises(BudgetExceeded):
        int8.check(max_accuracy_drop=0.01)
    again = Measurement.from_dict(int8.to_dict())
    assert again.summary() == int8.summary()
    assert again.latency.samples_us == int8.latency.samples_us
    assert [o.to_dict() for o in again.outcomes] == [o.to_dict() for o in int8.outcomes]


def test_full_delegation_budget_reads_the_android_outcome() -> None:
    dev = {"kind": "android", "id": "emu", "label": "emu"}
    base = obs("fp32", 40, 40, 100.0, 0.95, dev)
    partial = obs("int8", 10, 10, 50.0, 0.9, dev)
    partial = Observation(**{**partial.to_dict(), "latency": partial.latency, "accuracy": partial.accuracy,
                             "extras": {"delegation": "partial", "delegate_kernels": 3}})
    m = Measurement(partial, base)
    m.check(require_full_delegation=False)
    with pytest.raises(BudgetExceeded, match=r"^int8 on cpu/emu: full GPU delegation required, but the graph is "
                                             r"partially delegated \(3 delegate kernels\)$"):
        m.check(require_full_delegation=True)
    with pytest.raises(BudgetError, match="require_full_delegation=1 must be True or False"):
        m.check(require_full_delegation=1)


def test_full_delegation_budget_on_a_target_without_delegation_is_explained(int8: Measurement) -> None:
    with pytest.raises(BudgetError, match="applies to the android_gpu target"):
        int8.check(require_full_delegation=True)
