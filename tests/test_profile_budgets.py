"""Profile figures (lifecycle, peak memory, placement, per-op time) measured on every target,
and the budgets that read them: each keyword broken by one measurement and met by another, on
the host CPU, the emulated phone (real adb server, benchmark_model stand-in) and the Edge TPU
stand-ins (fake edgetpu_compiler, stub runtime)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_edgeopt.budgets.rules import BudgetError, BudgetExceeded
from pytest_edgeopt.measurement import Measurement
from pytest_edgeopt.profile import Profile
from pytest_edgeopt.results import Observation
from pytest_edgeopt.targets.base import HOST, Device, LatencyResult, LatencySettings
from pytest_edgeopt.targets.host_memory import PeakRss

FAST = LatencySettings(warmup=3, min_samples=20, min_time_s=0.0, max_time_s=2.0)


def observe(variant: str, target: str, r: LatencyResult, device: Device = HOST, model: Path | None = None) -> Observation:
    size = model.stat().st_size if model else 1000
    return Observation(model="digits", variant=variant, target=target, device=device.to_dict(), size_bytes=size,
                       compressed_size_bytes=size, latency=r.stats, accuracy=None, init_ms=r.init_ms,
                       first_inference_ms=r.first_inference_ms, extras=dict(r.extras), profile=r.profile)


def budget_failure(m: Measurement, **budget: object) -> str:
    with pytest.raises(BudgetExceeded) as info:
        m.check(**budget)
    (v,) = info.value.violations
    return v.message


def assert_names(msg: str, variant: str, where: str, base: str = "fp32") -> None:
    assert msg.startswith(f"{variant} on {where}: "), msg
    assert f"({base} " in msg or f"; {base} " in msg, msg


# -- host CPU ---------------------------------------------------------------------------------

def test_peak_rss_reset_measures_only_what_follows() -> None:
    big = bytearray(64 * 1024 * 1024)
    big[::4096] = b"x" * len(big[::4096])  # 64 MiB resident, the lifetime peak from now on
    del big
    peak = PeakRss()
    peak.start()
    small = bytearray(8 * 1024 * 1024)
    small[::4096] = b"y" * len(small[::4096])
    grown = peak.peak_mb()
    del small
    assert grown is not None and 6 <= grown < 32, grown  # 8 MiB, not the 64 MiB before the reset


@pytest.fixture(scope="module")
def cpu_runs() -> dict[str, LatencyResult]:
    from fixtures.models import float_tflite, int8_tflite
    from pytest_edgeopt.targets.cpu import measure_latency

    return {"fp32": measure_latency(float_tflite(), FAST), "int8": measure_latency(int8_tflite(), FAST)}


def test_cpu_measures_lifecycle_and_memory_but_no_per_op_times(cpu_runs: dict[str, LatencyResult]) -> None:
    for r in cpu_runs.values():
        assert r.init_ms is not None and r.init_ms > 0 and r.first_inference_ms is not None
        p = r.profile
        assert p is not None and p.warmup_mean_ms is not None and p.warmup_mean_ms > 0
        assert p.peak_memory_mb is not None and p.peak_memory_mb >= 0
        assert p.memory_source is not None and "clear_refs" in p.memory_source
        assert p.ops == () and p.placement is None  # LiteRT's Python interpreter has no profiler


def test_cpu_lifecycle_and_memory_budgets(cpu_runs: dict[str, LatencyResult]) -> None:
    m = Measurement(observe("int8", "cpu", cpu_runs["int8"]), observe("fp32", "cpu", cpu_runs["fp32"]))
    init, first = m.observation.init_ms, m.observation.first_inference_ms
    assert init is not None and first is not None and m.observation.profile is not None
    msg = budget_failure(m, max_init_ms=init / 10)
    assert_names(msg, "int8", "cpu")
    assert f"init time {init:.4g} ms > {init / 10:.4g} ms" in msg
    msg = budget_failure(m, max_first_inference_ms=first / 10)
    assert f"first inference {first:.4g} ms > " in msg
    peak = m.observation.profile.peak_memory_mb
    assert peak is not None
    msg = budget_failure(m, max_peak_memory_mb=0.0001)
    assert f"peak memory {peak:.4g} MiB > 0.0001 MiB" in msg and "clear_refs" in msg
    m.check(max_init_ms=init * 10, max_first_inference_ms=first * 10 + 1, max_peak_memory_mb=peak + 100)


def test_budgets_a_target_cannot_measure_are_errors_not_passes(cpu_runs: dict[str, LatencyResult]) -> None:
    m = Measurement(observe("int8", "cpu", cpu_runs["int8"]), observe("fp32", "cpu", cpu_runs["fp32"]))
    for budget in ({"max_delegate_partitions": 1}, {"min_delegated_op_fraction": 0.5},
                   {"max_edgetpu_offchip_bytes": 0}):
        with pytest.raises(BudgetError, match=f"{next(iter(budget))} needs .* target cpu did not measure"):
            m.check(**budget)
    with pytest.raises(BudgetError, match="max_delegate_partitions=0 must be a whole number"):
        m.check(max_delegate_partitions=0)


def test_profile_survives_the_measurement_json(cpu_runs: dict[str, LatencyResult]) -> None:
    m = Measurement(observe("int8", "cpu", cpu_runs["int8"]), observe("fp32", "cpu", cpu_runs["fp32"]))
    back = Measurement.from_dict(m.to_dict())
    assert back.observation.profile == m.observation.profile
    assert back.baseline.profile is not None and back.baseline.profile.warmup_mean_ms == cpu_runs["fp32"].profile.warmup_mean_ms  # type: ignore[union-attr]


# -- emulated phone ---------------------------------------------------------------------------

@pytest.fixture
def android(adb_server, phone, standin: Path) -> Iterator:
    """A factory of targets on the emulated phone; the planted knobs are cleared after."""
    from pytest_edgeopt.targets.android.discovery import discover_android
    from pytest_edgeopt.targets.android.target import AndroidTarget

    (device,) = discover_android(adb_server.address, [phone.address]).devices
    made = []

    def make(name: str) -> AndroidTarget:
        t = AndroidTarget(name, device, adb=adb_server.address, benchmark_model=standin, gpu=name == "android_gpu",
                          repeats=1, step_timeout_s=60)
        made.append(t)
        return t

    yield make, device
    phone.shell_env.clear()
    for t in made:
        t.close()


@pytest.fixture(scope="module")
def digits_models() -> dict[str, Path]:
    from fixtures.models import float_tflite, int8_tflite

    return {"fp32": float_tflite(), "int8": int8_tflite()}


def test_android_gpu_profile_names_a_planted_fallback_and_slow_op(android, phone, digits_models) -> None:
    make, device = android
    # Node 4 (the first FULLY_CONNECTED) forced off the GPU delegate and made 8 ms slower.
    phone.shell_env.update(EDGEOPT_STANDIN_CPU_OPS="4", EDGEOPT_STANDIN_OP_DELAY_MS="4:8")
    r = make("android_gpu").latency(digits_models["fp32"], FAST)
    p = r.profile
    assert p is not None and p.warmup_mean_ms is not None and p.warmup_mean_ms >= 8
    assert r.init_ms is not None and r.first_inference_ms is not None and r.first_inference_ms >= 8
    assert p.peak_memory_mb is not None and p.peak_memory_mb > 0 and "periodic monitoring" in (p.memory_source or "")
    pl = p.placement
    assert pl is not None and pl.delegate == "gpu"
    assert (pl.delegated_nodes, pl.total_nodes, pl.partitions) == (4, 7, 2)  # nodes 0-3 on the GPU, 4-6 not
    assert [i for i, _ in pl.fallback] == [4, 5, 6] and pl.fallback[0] == (4, "FULLY_CONNECTED")
    assert p.ops_source == "benchmark_model --enable_op_profiling"
    top = p.ops[0]
    assert (top.index, top.op, top.on) == (4, "FULLY_CONNECTED", "cpu") and top.avg_ms >= 8
    assert {o.op for o in p.ops} >= {"TfLiteGpuDelegateV2", "SOFTMAX"}


def test_android_budgets_break_on_the_planted_phone_and_hold_on_the_clean_one(android, phone, digits_models) -> None:
    make, device = android
    target = make("android_gpu")
    base = observe("fp32", "android_gpu", target.latency(digits_models["fp32"], FAST), device, digits_models["fp32"])
    clean = Measurement(observe("int8", "android_gpu", target.latency(digits_models["int8"], FAST), device,
                                digits_models["int8"]), base)
    phone.shell_env.update(EDGEOPT_STANDIN_CPU_OPS="3", EDGEOPT_STANDIN_OP_DELAY_MS="1:30")
    slow = Measurement(observe("int8", "android_gpu", target.latency(digits_models["int8"], FAST), device,
                               digits_models["int8"]), base)
    where = f"android_gpu/{device.label}"
    clean_pl = clean.observation.profile.placement  # type: ignore[union-attr]
    assert clean_pl is not None and clean_pl.delegated_fraction == 1.0 and clean_pl.partitions == 1
    first = clean.observation.first_inference_ms
    assert first is not None
    clean.check(max_delegate_partitions=1, min_delegated_op_fraction=1.0, max_first_inference_ms=first + 25,
                max_init_ms=10_000, max_peak_memory_mb=10_000)

    msg = budget_failure(slow, max_delegate_partitions=1)
    assert_names(msg, "int8", where)
    assert re.search(r"delegate partitions 2 > 1 \(3 of 7 ops on gpu, 2 partitions; on the CPU: RESHAPE #3, "
                     r"FULLY_CONNECTED #4, FULLY_CONNECTED #5, SOFTMAX #6; fp32 1\)", msg), msg
    msg = budget_failure(slow, min_delegated_op_fraction=0.9)
    assert "delegated op fraction 0.429 < 0.900" in msg and "RESHAPE #3" in msg
    msg = budget_failure(slow, max_first_inference_ms=first + 25)
    assert_names(msg, "int8", where)
    assert re.search(r"first inference \d+(\.\d+)? ms > [\d.]+ ms \(fp32 [\d.]+ ms\)", msg), msg
    init = slow.observation.init_ms
    assert init is not None
    assert f"init time {init:.4g} ms > " in budget_failure(slow, max_init_ms=init / 100)
    assert "peak memory" in budget_failure(slow, max_peak_memory_mb=0.001)


# -- Edge TPU stand-ins -----------------------------------------------------------------------

@pytest.fixture
def edgetpu(stub_runtime: Path, fake_compiler: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from pytest_edgeopt.targets.edgetpu.target import EdgeTpuTarget

    monkeypatch.delenv("EDGETPU_STUB_FAIL", raising=False)

    def make(offchip: int = 0) -> EdgeTpuTarget:
        monkeypatch.setenv("FAKE_EDGETPU_OFFCHIP_BYTES", str(offchip))
        return EdgeTpuTarget("usb:0", library=str(stub_runtime), compiler=fake_compiler,
                             cache_dir=tmp_path / f"cache-{offchip}")

    return make


def test_edgetpu_profile_and_budgets(edgetpu, tiny_cnn_variants: dict[str, Path]) -> None:
    base_r = edgetpu().latency(tiny_cnn_variants["int8_full"], FAST)
    full_r = edgetpu().latency(tiny_cnn_variants["int8_full"], FAST)
    big_r = edgetpu(offchip=3 * 1024 * 1024).latency(tiny_cnn_variants["int8_full"], FAST)
    partial_r = edgetpu().latency(tiny_cnn_variants["int8_float_io"], FAST)
    dev = Device(kind="edgetpu", id="usb:0", label="usb_0")
    base = observe("int8_full", "edgetpu", base_r, dev)
    p = full_r.profile
    assert p is not None and p.warmup_mean_ms is not None and p.peak_memory_mb is not None
    assert p.edgetpu_offchip_bytes == 0 and p.edgetpu_onchip_bytes is not None and p.edgetpu_onchip_bytes > 0
    assert p.placement is not None and p.placement.delegated_fraction == 1.0 and p.placement.partitions == 1
    assert big_r.profile is not None and big_r.profile.edgetpu_offchip_bytes == 3 * 1024 * 1024
    pp = partial_r.profile
    assert pp is not None and pp.placement is not None and pp.placement.fallback
    assert {op for _, op in pp.placement.fallback} <= {"QUANTIZE", "DEQUANTIZE"}

    ok = Measurement(observe("int8", "edgetpu", full_r, dev), base)
    ok.check(max_edgetpu_offchip_bytes=0, max_delegate_partitions=1, min_delegated_op_fraction=1.0,
             max_init_ms=60_000, max_first_inference_ms=60_000, max_peak_memory_mb=10_000)
    big = Measurement(observe("int8", "edgetpu", big_r, dev), base)
    msg = budget_failure(big, max_edgetpu_offchip_bytes=1_000_000)
    assert_names(msg, "int8", "edgetpu/usb_0", base="int8_full")
    assert "Edge TPU off-chip parameter memory 3,145,728 B > 1,000,000 B" in msg and "on-chip" in msg
    partial = Measurement(observe("int8_float_io", "edgetpu", partial_r, dev), base)
    msg = budget_failure(partial, min_delegated_op_fraction=1.0)
    assert "delegated op fraction" in msg and "on the CPU: QUANTIZE #0" in msg, msg
    assert "delegate partitions" in budget_failure(partial, max_delegate_partitions=1)
    init = partial.observation.init_ms
    assert init is not None and "init time" in budget_failure(partial, max_init_ms=init / 100)


def test_profile_round_trips_through_the_run_record(cpu_runs: dict[str, LatencyResult]) -> None:
    from pytest_edgeopt.runs.record import ObservationRecord

    obs = observe("int8", "cpu", cpu_runs["int8"])
    rec = ObservationRecord.from_dict(obs.to_dict())
    assert isinstance(rec.profile, Profile) and rec.profile == obs.profile
    assert rec.to_dict()["profile"] == obs.to_dict()["profile"]


# -- HTML report ------------------------------------------------------------------------------

def test_html_report_shows_lifecycle_memory_placement_and_the_per_op_diff() -> None:
    import copy
    import json

    from pytest_edgeopt.profile import OpTime, Placement
    from pytest_edgeopt.runs.html import render_html

    doc = json.loads((Path(__file__).parent / "data" / "edgeopt_example_run.json").read_text())
    item = next(r for r in doc["measurements"] if r.get("measurement") and r["target"] == "android_gpu"
                and r["variant"] == "int8")

    def profiled(ops: tuple[OpTime, ...], fallback: tuple[tuple[int, str], ...]) -> dict:
        return Profile(warmup_mean_ms=0.05, peak_memory_mb=48.6, memory_source="benchmark_model peak footprint",
                       placement=Placement(7, 7 - len(fallback), 1 + bool(fallback), "gpu", fallback), ops=ops,
                       ops_source="benchmark_model --enable_op_profiling").to_dict()

    before = copy.deepcopy(doc)
    next(r for r in before["measurements"] if r["test"] == item["test"])["measurement"]["profile"] = profiled(
        (OpTime(7, "TfLiteGpuDelegateV2", 0.9, on="gpu"), OpTime(6, "SOFTMAX", 0.01)), ())
    item["measurement"]["profile"] = profiled(
        (OpTime(4, "FULLY_CONNECTED", 3.25), OpTime(7, "TfLiteGpuDelegateV2", 0.8, on="gpu"), OpTime(6, "SOFTMAX", 0.01)),
        ((4, "FULLY_CONNECTED"),))
    page = render_html(doc, baseline=before)
    assert '<section id="profile">' in page
    section = page.split('<section id="profile">', 1)[1]
    assert "48.6" in section and "6 of 7 on gpu, 2 part.; CPU: FULLY_CONNECTED #4" in section
    assert "Slowest ops: int8 on android_gpu/" in section
    rows = re.findall(r"<tr><td>(\d+)</td><td>([A-Za-z_0-9]+)</td><td>\w+</td><td>([\d.]+)</td><td>[\d.]+%</td>"
                      r"<td>([\d.]*)</td><td>([^<]+)</td></tr>", section)
    assert rows[0] == ("4", "FULLY_CONNECTED", "3.250", "", "new")  # slowest first; not in the baseline run
    assert rows[1] == ("7", "TfLiteGpuDelegateV2", "0.8000", "0.9000", "-0.100 ms")
    assert "compared with the same op in baseline run" in section
    alone = render_html(doc).split('<section id="profile">', 1)[1]
    assert "FULLY_CONNECTED" in alone and "compared with the same op" not in alone and "change" not in alone
