"""A device farm through pytest end to end: four emulated phones behind two real adb servers
(as if on two hosts), driven from one inventory, serially and with pytest-xdist; a phone
killed mid-run; a required target whose phones are all too hot; a bad inventory.

The runs are subprocesses (pytest-xdist needs them). Each benchmark_model stand-in run
starts a Python with LiteRT on this host (about 0.6 s of CPU), so the project runs two
repeats per latency measurement and two variants."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("xdist")

CONFTEST = """
import pytest
from fixtures.digits import digits_data, representative_batches
from pytest_edgeopt import ModelUnderTest

@pytest.fixture(scope="session")
def edgeopt_model():
    d = digits_data()
    return ModelUnderTest(name="digits-cnn", model={model!r}, representative_data=representative_batches(50)
                          {eval})
"""
EVAL = ", eval_data=(d.x_eval[:64], d.y_eval[:64])"

TWO_VARIANTS = """
    import pytest
    @pytest.mark.edgeopt_variants("fp32", "int8")
    @pytest.mark.android_cpu
    def test_phone(measurement):
        pass
"""


@pytest.fixture(scope="module")
def host_b():
    """A second real adb server: the phones "on the other host". It runs another adb build
    where one is installed (Debian's adb 29 on PATH; ``.ci/run`` installs it), as two farm
    hosts often do: the whole path (push, benchmark_model, pull, accuracy) then goes through
    both builds."""
    from devices.adb_server import AdbServer
    from tests.adb_helpers import bundled_adb, system_adb

    server = AdbServer(adb=system_adb() or bundled_adb()).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def phones(adb_server, host_b, tmp_path_factory: pytest.TempPathFactory):
    """Four emulated phones: a1, a2 on ``adb_server``, two more on ``host_b``."""
    from devices.emulated_device import EmulatedDevice

    out = {}
    for name, server in (("a1", adb_server), ("a2", adb_server), ("b1", host_b), ("b2", host_b)):
        device = EmulatedDevice(tmp_path_factory.mktemp(f"phone-{name}"), model=f"Emu {name}")
        device.start()
        server.connect(device.address, timeout=20)
        out[name] = device
    yield out
    for device in out.values():
        device.stop()


@pytest.fixture
def farm(pytester: pytest.Pytester, adb_server, host_b, phones, standin: Path) -> Path:
    """The inventory: a1 and a2 by serial on host A, every phone of host B as rack-b-*."""
    path = pytester.path / "farm.toml"
    path.write_text(f"""
[android]
benchmark_model = "{standin}"

[android.a1]
serial = "{phones['a1'].address}"
adb = "{adb_server.address}"

[android.a2]
serial = "{phones['a2'].address}"
adb = "{adb_server.address}"
affinity = "f0"

[android.rack-b]
serial = "*"
adb = "{host_b.address}"
""")
    return path


def labels(phones) -> dict[str, str]:
    return {"a1": "a1", "a2": "a2", **{n: "rack-b-" + phones[n].address.replace(":", "_") for n in ("b1", "b2")}}


@pytest.fixture
def project(pytester: pytest.Pytester, farm: Path, digits_model_path: Path, tensorflow_loaded: None,
            tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[2]))  # subprocess runs import fixtures
    cache = tmp_path_factory.getbasetemp() / "edgeopt-variant-cache"  # one content-addressed cache for every digits run of the session
    pytester.makeconftest(CONFTEST.format(model=str(digits_model_path), eval=EVAL))
    pytester.makeini(f"[pytest]\nedgeopt_cache_dir = {cache}\nedgeopt_min_time = 0.05\nedgeopt_min_samples = 20\n"
                     f"edgeopt_android_repeats = 2\nedgeopt_farm = farm.toml\n"
                     f"edgeopt_lease_dir = {pytester.path / 'leases'}\n")
    pytester.makepyfile(test_phone=TWO_VARIANTS)
    return pytester


def run(project: pytest.Pytester, name: str, *args: str) -> tuple[pytest.RunResult, list[dict]]:
    out = project.path / f"{name}.json"
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", "-v",
                                          f"--edgeopt-json={out}", *args)
    return result, json.loads(out.read_text())["measurements"]


def figures(records: list[dict]) -> dict[tuple, tuple]:
    """What must not depend on how the run was scheduled: sizes and on-device accuracy,
    per (variant, target, device); latencies are timings and differ by noise."""
    return {(r["variant"], r["target"], r["device"]): (
        r["measurement"]["size_bytes"], r["measurement"]["compressed_size_bytes"],
        r["measurement"]["accuracy"]["value"], r["measurement"]["baseline"]["accuracy"]["value"])
        for r in records}


def lease_windows(records: list[dict]) -> dict[str, list[tuple[float, float]]]:
    """Per device, when each of its measurements (variants and baselines) held its lease."""
    out: dict[str, set] = {}
    for r in records:
        for obs in (r["measurement"], r["measurement"]["baseline"]):
            lease = obs["extras"]["lease"]
            out.setdefault(r["device"], set()).add((lease["since"], lease["until"]))
    return {d: sorted(w) for d, w in out.items()}


@pytest.mark.slow  # bigger model or matrix; its fast twin runs by default
def test_every_device_of_two_servers_measures_serially_and_in_parallel_with_equal_results(
        project: pytest.Pytester, phones) -> None:
    serial_result, serial = run(project, "serial")
    serial_result.assert_outcomes(passed=8)
    parallel_result, parallel = run(project, "parallel", "-n", "2")
    parallel_result.assert_outcomes(passed=8)

    wanted = set(labels(phones).values())
    for records in (serial, parallel):
        assert {r["device"] for r in records} == wanted
    serial_result.stdout.fnmatch_lines(["*test_phone[[]int8-android_cpu-a1[]] PASSED*",
                                        "*test_phone[[]int8-android_cpu-rack-b-127.0.0.1_*[]] PASSED*"])
    assert figures(serial) == figures(parallel)
    by_label = {r["device"]: r["measurement"] for r in parallel}
    assert by_label["a2"]["extras"]["affinity_mask"] == "f0"
    assert by_label["a1"]["extras"]["conditions"]["battery_level"] == 100

    # One measurement at a time on each device, and devices measured at the same time.
    windows = lease_windows(parallel)
    for device, spans in windows.items():
        assert all(end <= nxt for (_, end), (nxt, _) in zip(spans, spans[1:])), (device, spans)
    spans = [(s, e, d) for d, w in windows.items() for s, e in w]
    assert any(s1 < e2 and s2 < e1 for s1, e1, d1 in spans for s2, e2, d2 in spans if d1 != d2)
    # Each device's items ran in one worker (--dist loadgroup by device): its fp32 measured once.
    for device in wanted:
        assert len({json.dumps(r["measurement"]["baseline"]["latency"]["samples_us"])
                    for r in parallel if r["device"] == device}) == 1
    parallel_result.stdout.fnmatch_lines(["*edgeopt devices*", "a1 * android_cpu: measured 2, failed 0, skipped 0; "
                                          "last conditions: battery 100%, 30 C, thermal status 0*"])


class KillWhenMeasured(threading.Thread):
    """Stops ``device`` once the controller's JSON holds a record of ``label``."""

    def __init__(self, json_path: Path, label: str, device) -> None:
        super().__init__(daemon=True)
        self.json_path, self.label, self.device = json_path, label, device
        self.done = threading.Event()
        self.killed = False

    def run(self) -> None:
        while not self.done.is_set():
            try:
                records = json.loads(self.json_path.read_text())["measurements"]
            except (OSError, ValueError):
                records = []
            if any(r["device"] == self.label for r in records):
                self.device.stop()
                self.killed = True
                return
            time.sleep(0.05)


def test_a_device_killed_mid_run_fails_its_items_and_the_others_results_are_kept(
        project: pytest.Pytester, phones, adb_server, digits_model_path: Path) -> None:
    project.makeconftest(CONFTEST.format(model=str(digits_model_path), eval=""))  # latency only: faster
    victim = phones["a1"]
    victim.faults.standin_delay_us = 20_000  # its measurements last long enough to be cut
    out = project.path / "killed.json"
    killer = KillWhenMeasured(out, "a1", victim)
    killer.start()
    port = victim.port
    try:
        result = project.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", "-v", "-n", "2",
                                              "--edgeopt-step-timeout=5", f"--edgeopt-json={out}")
    finally:
        killer.done.set()
        killer.join()
        victim.faults.standin_delay_us = 0
        if killer.killed:
            victim.start(port=port)
            adb_server.connect(victim.address)
    assert killer.killed
    result.assert_outcomes(passed=7, errors=1)
    records = {(r["device"], r["variant"]): r for r in json.loads(out.read_text())["measurements"]}
    assert records[("a1", "fp32")]["outcome"] == "passed"
    assert records[("a1", "int8")]["outcome"] == "failed" and records[("a1", "int8")]["measurement"] is None
    others = [r for (device, _), r in records.items() if device != "a1"]
    assert len(others) == 6 and all(r["outcome"] == "passed" and r["measurement"] for r in others)
    result.stdout.fnmatch_lines([
        "*edgeopt devices*",
        "a1 * android_cpu: measured 1, failed 1, skipped 0*",
        f"    failed: digits-cnn int8 on android_cpu: *android_cpu on {victim.address}: *step '*'*",
        "a2 * android_cpu: measured 2, failed 0, skipped 0*",
    ])


def test_a_required_target_whose_devices_all_stay_too_hot_fails_with_the_reason(
        project: pytest.Pytester, phones) -> None:
    project.makepyfile(test_phone=TWO_VARIANTS.replace('"fp32", "int8"', '"int8"').replace("android_cpu", "android_gpu"))
    for device in phones.values():
        device.temperature_c = 47.0
    try:
        result, records = run(project, "hot", "--edgeopt-require=android_gpu", "--edgeopt-cooldown=0.3",
                              "--edgeopt-health-poll=0.1")
    finally:
        for device in phones.values():
            device.temperature_c = 30.0
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(errors=4)
    assert all(r["outcome"] == "failed" and r["measurement"] is None for r in records)
    result.stdout.fnmatch_lines([
        "*int8 on android_gpu: a1 is not healthy: too hot: battery 47 C > 40 C; thermal status 3 (severe) > 1 "
        "after waiting 0.* s (cool-down limit 0.3 s, --edgeopt-cooldown) (required by --edgeopt-require)*",
        "*edgeopt devices*",
        "required target android_gpu: no healthy device measured it (reasons above)",
    ])


def test_without_require_a_missing_inventory_device_skips_naming_its_entry(
        project: pytest.Pytester, farm: Path) -> None:
    from tests.adb_helpers import free_port

    farm.write_text(farm.read_text() + f'\n[android.gone]\nserial = "127.0.0.1:{free_port()}"\n'
                    'adb = "127.0.0.1:1"\n')
    project.makepyfile(test_phone="""
        import pytest
        @pytest.mark.edgeopt_variants("int8")
        @pytest.mark.android_cpu
        def test_phone(measurement):
            pass
    """)
    result = project.runpytest("-p", "no:cacheprovider", "-rs", "-k", "gone")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*android_cpu: farm.toml [[]android.gone[]]: no adb server at 127.0.0.1:1*",
                                 "gone * android_cpu: measured 0, failed 0, skipped 1"])


def test_a_bad_inventory_is_a_usage_error_naming_the_line_and_field(project: pytest.Pytester, farm: Path) -> None:
    farm.write_text('[android.p]\nserial = "R5"\naffinity = "zz"\n')
    result = project.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--edgeopt-farm: {farm}:3: android.p.affinity: invalid CPU affinity mask 'zz'*"])
