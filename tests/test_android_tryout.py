"""The Android try-out without a phone, as a new user runs it: ``python -m devices start``
(a real detached process: private adb server, emulated phone, benchmark_model stand-in), then
pytest on ``examples/digits`` with the flags it printed, then ``python -m devices stop``; and the
example's Android tests skipping cleanly without a phone."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from adb_helpers import free_port

ROOT = Path(__file__).resolve().parent.parent


def devices(*args: str, timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "devices", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def pytest_run(*args: str, env: dict[str, str] | None = None, timeout: float = 900.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture
def phone(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """``python -m devices start --dir TMP``: the state directory and what it printed;
    stopped (by the pid it recorded) at the end whatever happened."""
    state = tmp_path / "phone-state"
    started = devices("start", "--dir", str(state))
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield state, started.stdout
    finally:
        devices("stop", "--dir", str(state))


def printed_flags(out: str) -> list[str]:
    """The flags of the ``pytest examples/digits ...`` line that ``start`` printed."""
    line = next(x for x in out.splitlines() if x.strip().startswith("pytest examples/digits --"))
    return shlex.split(line)[2:]


def test_start_prints_the_flags_and_the_phone_is_attached(phone: tuple[Path, str]) -> None:
    state, out = phone
    flags = printed_flags(out)
    assert [f.split("=")[0] for f in flags] == ["--edgeopt-adb", "--edgeopt-serial", "--edgeopt-benchmark-model",
                                               "--edgeopt-targets"]
    assert flags[3] == "--edgeopt-targets=android_gpu,android_cpu"
    standin = Path(flags[2].split("=", 1)[1])
    assert standin.is_file() and os.access(standin, os.X_OK)
    # `flags` prints the same flags on one line; the adb line it printed lists the phone as a device
    assert devices("flags", "--dir", str(state)).stdout.split() == flags
    adb_line = next(x for x in out.splitlines() if x.startswith("its adb: "))
    home, adb, *rest = shlex.split(adb_line.removeprefix("its adb: "))
    listed = subprocess.run([adb, *rest], env={**os.environ, "HOME": home.removeprefix("HOME=")},
                            capture_output=True, text=True, timeout=30)
    serial = flags[1].split("=", 1)[1]
    assert re.search(rf"^{re.escape(serial)}\s+device$", listed.stdout, re.M), listed.stdout
    # starting again reuses the running phone
    again = devices("start", "--dir", str(state))
    assert again.returncode == 0 and printed_flags(again.stdout) == flags
    # pytest with the printed flags collects the example's Android tests on that phone
    collected = pytest_run("examples/digits", "--collect-only", "-q", *flags, timeout=300)
    label = serial.replace(":", "_")
    assert collected.returncode == 0, collected.stdout + collected.stderr
    assert {f"examples/digits/test_phone.py::test_int8_on_the_phone[int8-android_gpu-{label}]",
            f"examples/digits/test_phone.py::test_int8_on_the_phone[int8-android_cpu-{label}]",
            f"examples/digits/test_phone.py::test_float16_runs_entirely_on_the_gpu[float16-android_gpu-{label}]",
            } <= set(collected.stdout.split())
    pid = json.loads((state / "phone.json").read_text())["pid"]
    stopped = devices("stop", "--dir", str(state))
    assert stopped.returncode == 0 and stopped.stdout.startswith(f"stopped the emulated phone {serial}")
    assert not (state / "phone.json").exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    missing = devices("flags", "--dir", str(state))
    assert missing.returncode == 1 and f"python -m devices start --dir {state}" in missing.stderr


def test_the_example_android_tests_skip_without_a_phone() -> None:
    """The README's main command on a machine without adb: the three Android items skip,
    naming the missing adb server (nothing is built for them)."""
    run = pytest_run("examples/digits/test_phone.py", "-rs", env={"ANDROID_ADB_SERVER_PORT": str(free_port())},
                     timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"= 3 skipped in ", run.stdout.splitlines()[-1])
    assert run.stdout.count("no adb server at 127.0.0.1:") >= 3 and "building" not in run.stdout


@pytest.mark.slow
def test_the_example_runs_on_the_emulated_phone_with_the_printed_flags(phone: tuple[Path, str], tmp_path: Path) -> None:
    """The whole copy-paste sequence: the example suite with the printed flags measures int8
    on both Android targets and float16 fully on the GPU delegate (about 80 s on 2 cores)."""
    _, out = phone
    report = tmp_path / "phone.json"
    run = pytest_run("examples/digits", "-rs", *printed_flags(out), f"--edgeopt-json={report}")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert re.search(r"= 3 passed, 6 skipped in ", run.stdout.splitlines()[-1]), run.stdout[-2000:]
    recs = {(r["variant"], r["target"]): r["measurement"] for r in json.loads(report.read_text())["measurements"]}
    assert set(recs) == {("int8", "android_gpu"), ("int8", "android_cpu"), ("float16", "android_gpu")}
    assert all(m["latency"]["samples_us"] and m["accuracy"]["value"] > 0.95 for m in recs.values())
