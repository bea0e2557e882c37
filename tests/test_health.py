"""Device health against the emulated phone (real adb server, real dumpsys output): wait
for a hot device to cool down, report one that stays hot or flat."""

from __future__ import annotations

import threading
import time

import pytest

from pytest_edgeopt.farm.health import DeviceUnhealthy, HealthMonitor, HealthPolicy, describe
from pytest_edgeopt.targets.base import Device, TargetError

FAST = HealthPolicy(cooldown_s=20.0, poll_s=0.1, interval_s=0.0)


@pytest.fixture
def target(adb_server, phone):
    from pytest_edgeopt.targets.android.target import AndroidTarget

    device = Device("android", phone.address, label="emu", details={"adb_server": adb_server.address})
    phone.temperature_c, phone.battery_level, phone.thermal_status = 33.5, 81, None
    yield AndroidTarget("android_cpu", device, benchmark_model=None, gpu=False, step_timeout_s=10)
    phone.temperature_c, phone.battery_level, phone.thermal_status = 33.5, 81, None


def later(seconds: float, act) -> threading.Thread:
    thread = threading.Timer(seconds, act)
    thread.start()
    return thread


def test_conditions_come_from_dumpsys_battery_and_thermalservice(target, phone) -> None:
    phone.thermal_status = 2
    c = target.device_conditions()
    assert c["state"] == "device" and c["battery_level"] == 81 and c["battery_temperature_c"] == 33.5
    assert c["thermal_status"] == 2 and c["powered"] == "usb"


def test_a_hot_device_is_waited_for_until_it_cools_down(target, phone) -> None:
    phone.temperature_c = 47.0  # thermal status 3 (severe) too
    said: list[str] = []
    cooler = later(1.0, lambda: setattr(phone, "temperature_c", 35.0))
    conditions = HealthMonitor(FAST, said.append).check(target)
    cooler.join()
    assert conditions["battery_temperature_c"] == 35.0 and conditions["thermal_status"] == 0
    assert 0.8 <= conditions["waited_s"] < 15
    assert said == ["emu: too hot: battery 47 C > 40 C; thermal status 3 (severe) > 1: waiting up to 20 s"]


def test_a_device_that_stays_hot_is_reported_after_the_limit_then_not_waited_for_again(target, phone) -> None:
    phone.temperature_c = 44.0
    monitor = HealthMonitor(HealthPolicy(cooldown_s=0.5, poll_s=0.1))
    start = time.monotonic()
    with pytest.raises(DeviceUnhealthy) as info:
        monitor.check(target)
    assert time.monotonic() - start >= 0.5
    assert str(info.value).startswith("emu is not healthy: too hot: battery 44 C > 40 C; thermal status 2 (moderate) > 1 "
                                      "after waiting 0.")
    assert "(cool-down limit 0.5 s, --edgeopt-cooldown)" in str(info.value)
    start = time.monotonic()
    with pytest.raises(DeviceUnhealthy, match="still, after an earlier wait"):
        monitor.check(target)
    assert time.monotonic() - start < 0.5
    phone.temperature_c = 30.0
    assert monitor.check(target)["waited_s"] == 0.0  # cooled down since: used again


def test_a_flat_battery_is_reported(target, phone) -> None:
    phone.battery_level = 5
    with pytest.raises(DeviceUnhealthy, match=r"battery too low: 5% < 20% after waiting"):
        HealthMonitor(HealthPolicy(cooldown_s=0.2, poll_s=0.1)).check(target)


def test_a_healthy_reading_is_trusted_for_the_interval(target, phone) -> None:
    monitor = HealthMonitor(HealthPolicy(interval_s=60.0))
    first = monitor.check(target)
    phone.temperature_c = 55.0  # not read again within the interval
    again = monitor.check(target)
    assert again["battery_temperature_c"] == first["battery_temperature_c"] == 33.5 and "read_s_ago" in again
    assert describe(first) == "battery 81%, 33.5 C, thermal status 0"


class _Silent:
    name = "android_cpu"
    device = Device("android", "127.0.0.1:1", label="gone", details={"adb_server": "127.0.0.1:5037"})

    def device_conditions(self) -> dict:
        return {"state": "offline", "error": "android_cpu on 127.0.0.1:1: step 'read device conditions' failed"}


def test_a_device_that_does_not_answer_is_a_target_error_naming_the_step() -> None:
    with pytest.raises(TargetError, match=r"^gone: health check: .*step 'read device conditions' failed"):
        HealthMonitor(FAST).check(_Silent())


def test_targets_without_conditions_are_not_checked() -> None:
    class Cpu:
        name, device = "cpu", Device("host", "host")

    assert HealthMonitor(FAST).check(Cpu()) is None
