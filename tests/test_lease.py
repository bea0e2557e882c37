"""Device leases across real processes: one measurement at a time per device."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_edgeopt.farm.lease import DeviceLeases, LeaseTimeout, describe_holder, holder_text, lease_key
from pytest_edgeopt.targets.base import HOST, Device

PHONE = Device("android", "127.0.0.1:40001", label="pixel", details={"adb_server": "127.0.0.1:5037"})

HOLDER = """
import sys, time
from pathlib import Path
from pytest_edgeopt.farm.lease import DeviceLeases
from pytest_edgeopt.targets.base import Device
phone = Device("android", "127.0.0.1:40001", label="pixel", details={"adb_server": "127.0.0.1:5037"})
with DeviceLeases(Path(sys.argv[1])).hold(phone, "digits int8 on android_cpu"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
print("released", flush=True)
"""


@pytest.fixture
def holder(tmp_path: Path):
    """Start a process that holds the phone's lease for ``seconds``; returns it once it holds it."""
    procs: list[subprocess.Popen] = []

    def start(seconds: float) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path), str(seconds)],
                                stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1])
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_a_second_process_waits_for_the_lease(tmp_path: Path, holder) -> None:
    proc = holder(1.0)
    leases = DeviceLeases(tmp_path, timeout_s=30)
    said: list[str] = []
    leases.progress = said.append
    start = time.monotonic()
    with leases.hold(PHONE, "me"):
        waited = time.monotonic() - start
        assert proc.poll() is not None or proc.stdout.readline().strip() == "released"
    assert 0.5 < waited < 10, waited
    assert said and said[0].startswith(f"waiting for pixel: pid {proc.pid} on ")
    assert "measuring 'digits int8 on android_cpu'" in said[0]


def test_a_lease_held_too_long_times_out_naming_the_holder(tmp_path: Path, holder) -> None:
    proc = holder(30.0)
    with pytest.raises(LeaseTimeout) as info:
        with DeviceLeases(tmp_path, timeout_s=0.3).hold(PHONE, "me"):
            pass
    message = str(info.value)
    assert message.startswith(f"pixel is busy: leased by pid {proc.pid} on ")
    assert "measuring 'digits int8 on android_cpu'" in message and "gave up after 0.3 s (--edgeopt-lease-timeout" in message


def test_after_a_timeout_a_still_busy_device_is_not_waited_for_again(tmp_path: Path, holder) -> None:
    holder(30.0)
    leases = DeviceLeases(tmp_path, timeout_s=0.5)
    with pytest.raises(LeaseTimeout, match="gave up after 0.5 s"):
        with leases.hold(PHONE, "me"):
            pass
    start = time.monotonic()
    with pytest.raises(LeaseTimeout, match=r"still busy: .*after an earlier wait of 0.5 s"):
        with leases.hold(PHONE, "me"):
            pass
    assert time.monotonic() - start < 0.3


def test_a_holder_that_dies_releases_the_lease(tmp_path: Path, holder) -> None:
    proc = holder(30.0)
    proc.kill()
    proc.wait()
    with DeviceLeases(tmp_path, timeout_s=5).hold(PHONE, "me"):
        pass


def test_the_lease_is_reentrant_in_one_process_and_the_host_is_never_leased(tmp_path: Path) -> None:
    leases = DeviceLeases(tmp_path, timeout_s=0.1)
    with leases.hold(PHONE, "outer"), leases.hold(PHONE, "inner"):
        assert "outer" in leases.holder_path(lease_key(PHONE)).read_text()
    assert not leases.holder_path(lease_key(PHONE)).exists()
    with leases.hold(HOST, "cpu"):
        assert not list(tmp_path.glob("host*"))


def test_the_same_phone_through_the_same_server_is_one_lease() -> None:
    gpu = Device("android", PHONE.id, label="other-label", details={"adb_server": "127.0.0.1:5037", "x": 1})
    assert lease_key(gpu) == lease_key(PHONE) == "android:127.0.0.1:5037:127.0.0.1:40001"
    assert lease_key(Device("edgetpu", "usb:0")) == "edgetpu:usb:0"
    assert describe_holder("garbage") == "another process (it did not say who)"
    assert describe_holder(holder_text("x")).startswith("pid ")
