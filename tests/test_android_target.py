"""The Android targets: adb server handling, command building, and end to end against a
real adb server driving the emulated device (devices/emulated_device.py) that runs the
benchmark_model stand-in (devices/benchmark_model_standin.py) with LiteRT on the host."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from devices.adb_server import AdbServer, find_adb, free_port
from pytest_edgeopt.targets.android.commands import (
    benchmark_args,
    flag_safe_input_name,
    predict_script,
    value_files_item,
)
from pytest_edgeopt.targets.android.discovery import discover_android
from pytest_edgeopt.targets.android.health_readings import parse_dumpsys_battery
from pytest_edgeopt.targets.android.link import DeviceLink
from pytest_edgeopt.targets.android.rundir import (
    ABANDONED_AFTER_S,
    RunDirOwner,
    abandoned_reason,
    parse_run_dir_listing,
    process_start,
)
from pytest_edgeopt.targets.android.server import (
    AdbServerUnavailable,
    check_server,
    client_for,
    default_adb_address,
    is_tcp_serial,
    parse_adb_address,
)
from pytest_edgeopt.targets.android.target import AndroidTarget
from pytest_edgeopt.targets.android.validation import (
    describe_exit,
    elf_machine,
    sanitize_label,
    signal_name,
    validate_affinity_mask,
    validate_remote_path,
    validate_serial,
)
from pytest_edgeopt.targets.base import (
    Device,
    LatencyResult,
    LatencySettings,
    Target,
    TargetError,
    TargetUnavailable,
)
from pytest_edgeopt.tensors import ModelIO, TensorSpec, from_model_output, to_model_input

RUN = "/data/local/tmp/edgeopt-test"

# ----------------------------------------------------------------------------- unit tests


@pytest.mark.parametrize(
    "text, expected",
    [
        ("127.0.0.1:5037", ("127.0.0.1", 5037)),
        ("farm.example:15037", ("farm.example", 15037)),
        ("5038", ("127.0.0.1", 5038)),
        (":5039", ("127.0.0.1", 5039)),
        ("tcp:10.0.0.2:5037", ("10.0.0.2", 5037)),
        ("[::1]:5037", ("::1", 5037)),
    ],
)
def test_parse_adb_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_adb_address(text) == expected


@pytest.mark.parametrize("text", ["", "host:", "host:0", "host:65536", "host:abc", "::1:5037", "[::1]5037"])
def test_parse_adb_address_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_adb_address(text)


def test_default_address_follows_adb_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANDROID_ADB_SERVER_HOST", raising=False)
    monkeypatch.delenv("ANDROID_ADB_SERVER_PORT", raising=False)
    assert default_adb_address() == "127.0.0.1:5037"
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", "15037")
    assert default_adb_address() == "127.0.0.1:15037"


def test_find_adb(tmp_path: Path) -> None:
    assert os.access(find_adb(), os.X_OK)
    with pytest.raises(AdbServerUnavailable, match="does not exist"):
        find_adb(tmp_path / "adb")


def test_no_server_says_how_to_start_one() -> None:
    port = free_port()
    with pytest.raises(AdbServerUnavailable) as info:
        check_server(client_for(f"127.0.0.1:{port}"), timeout=1)
    msg = str(info.value)
    assert f"no adb server at 127.0.0.1:{port}" in msg
    assert "adb start-server" in msg and "server nodaemon" in msg
    assert isinstance(info.value, TargetUnavailable)


def test_clients_never_start_an_adb_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """adbutils runs `adb start-server` (on the default port) when a connect fails; ours must not."""
    marker = tmp_path / "adb-was-run"
    fake = tmp_path / "adb"
    fake.write_text(f"#!/bin/sh\ntouch {marker}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("ADBUTILS_ADB_PATH", str(fake))
    from adbutils import AdbError

    with pytest.raises(AdbError):
        client_for(f"127.0.0.1:{free_port()}").list()
    assert not marker.exists()


def test_discovery_without_server_reports_missing() -> None:
    found = discover_android(f"127.0.0.1:{free_port()}")
    assert found.devices == () and found.missing is not None
    assert "no adb server at" in found.missing and "adb start-server" in found.missing


ANDROID_PACKAGE = Path(__file__).resolve().parent.parent / "pytest_edgeopt" / "targets" / "android"


def test_validators_import_without_adbutils_or_numpy() -> None:
    """The plugin's option converters import the validators: that must stay light."""
    code = (
        "import sys, pytest_edgeopt.targets.android.validation, pytest_edgeopt.targets.android.commands; "
        "print(sorted(m for m in ('adbutils', 'numpy', 'tensorflow', 'pytest') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ANDROID_PACKAGE.parent.parent.parent)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_shipped_android_code_never_imports_the_test_devices() -> None:
    """``devices/`` (the emulated phone, the test adb server) is not shipped."""
    import ast

    for path in sorted(ANDROID_PACKAGE.parent.parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            assert not any(n == "devices" or n.startswith("devices.") for n in names), f"{path}:{node.lineno}"


def test_android_modules_stay_small() -> None:
    sizes = {p.name: len(p.read_text().splitlines()) for p in ANDROID_PACKAGE.glob("*.py")}
    assert {"validation.py", "link.py", "discovery.py", "commands.py", "rundir.py", "target.py"} <= set(sizes)
    assert max(sizes.values()) <= 600, sizes


def test_validation() -> None:
    for ok in ("R58M123ABC", "emulator-5554", "127.0.0.1:40123", "[::1]:5555", "adb-XYZ._adb-tls-connect._tcp"):
        assert validate_serial(ok) == ok
    for bad in ("", "a b", "x;rm -rf /", "$(id)", "a'b", "x" * 200):
        with pytest.raises(ValueError):
            validate_serial(bad)
    assert validate_remote_path(f"{RUN}/m-1.tflite")
    for bad in ("/data/local/tmp", "/sdcard/x", f"{RUN}/../x", f"{RUN}/a b", f"{RUN}/x;y", f"{RUN}//x", "/data/local/tmpx/y"):
        with pytest.raises(ValueError):
            validate_remote_path(bad)
    assert validate_affinity_mask("f0") == "f0" and validate_affinity_mask("0xF0") == "0xF0"
    for bad in ("0", "xyz", "f0 ; reboot", ""):
        with pytest.raises(ValueError):
            validate_affinity_mask(bad)
    assert is_tcp_serial("127.0.0.1:5555") and is_tcp_serial("[::1]:5555") and not is_tcp_serial("R58M123")
    assert sanitize_label("127.0.0.1:40123") == "127.0.0.1_40123"


def test_exit_codes_name_signals() -> None:
    assert signal_name(139) == "SIGSEGV" and signal_name(134) == "SIGABRT" and signal_name(-9) == "SIGKILL"
    assert signal_name(1) is None and signal_name(126) is None
    assert describe_exit(139) == "exit code 139 (SIGSEGV)" and describe_exit(3) == "exit code 3"


def test_benchmark_args_cpu_and_gpu() -> None:
    cpu = benchmark_args(f"{RUN}/benchmark_model", f"{RUN}/m.tflite", gpu=False, threads=4, warmup_runs=10,
                         num_runs=20, min_secs=0.04, max_secs=2, affinity_mask="f0")
    assert cpu[:3] == ["taskset", "f0", f"{RUN}/benchmark_model"]
    assert "--use_xnnpack=true" in cpu and "--use_gpu=false" in cpu and "--num_threads=4" in cpu
    assert "--num_runs=20" in cpu and "--min_secs=0.04" in cpu and "--max_secs=2" in cpu
    assert "--report_peak_memory_footprint=true" in cpu
    gpu = benchmark_args(f"{RUN}/benchmark_model", f"{RUN}/m.tflite", gpu=True, gpu_precision_loss_allowed=False,
                         report_peak_memory=False)
    assert gpu[0] == f"{RUN}/benchmark_model" and "--use_gpu=true" in gpu
    assert "--gpu_precision_loss_allowed=false" in gpu and not any("xnnpack" in a for a in gpu)
    assert not any("peak_memory" in a for a in gpu)
    with pytest.raises(ValueError):
        benchmark_args("/data/local/tmp/a b", f"{RUN}/m.tflite", gpu=False)


def test_value_files_item_escapes_colons() -> None:
    assert value_files_item("serving_default_image:0", f"{RUN}/in.raw") == f"serving_default_image::0:{RUN}/in.raw"
    assert flag_safe_input_name("serving_default_image:0") == "serving_default_image:0"
    assert flag_safe_input_name("in put,1") == "input_0"
    with pytest.raises(ValueError):
        value_files_item("a,b", f"{RUN}/in.raw")


def test_predict_script_single_batch_reads_the_file_directly() -> None:
    script = predict_script(
        [f"{RUN}/benchmark_model", f"--graph={RUN}/m.tflite"], input_name="image:0", row_shape=(8, 8, 1),
        row_bytes=256, chunk_rows=450, total_rows=450, file_rows=450, input_path=f"{RUN}/predict/inputs.raw",
        work_dir=f"{RUN}/predict", output_path=f"{RUN}/predict/outputs.raw", pid_file=f"{RUN}/run.pid",
    )
    assert "dd " not in script
    assert "--input_layer_shape=450,8,8,1" in script
    assert f"--input_layer_value_files=image::0:{RUN}/predict/inputs.raw" in script
    assert f"--output_filepath={RUN}/predict/outputs.raw" in script
    for line in script.splitlines():  # every line is valid sh
        shlex.split(line)


def test_predict_script_chunks_with_dd_and_a_tail() -> None:
    script = predict_script(
        [f"{RUN}/benchmark_model"], input_name="x", row_shape=(13,), row_bytes=52, chunk_rows=64,
        total_rows=150, file_rows=150, input_path=f"{RUN}/predict/inputs.raw", work_dir=f"{RUN}/predict",
        output_path=f"{RUN}/predict/outputs.raw",
    )
    assert "while [ $i -lt 2 ]" in script and "skip=$((i*64)) count=64" in script
    assert "--input_layer_shape=64,13" in script and "--input_layer_shape=22,13" in script
    assert "skip=128 count=22" in script
    assert script.count(">> /data/local/tmp/edgeopt-test/predict/outputs.raw") == 2


def test_decode_splits_chunks_and_dequantizes() -> None:
    spec = TensorSpec("out", 0, (-1, 3), np.dtype(np.int8), 0.5, -1)
    rows = np.arange(15, dtype=np.int8).reshape(5, 3)
    raw = rows.tobytes()
    got = AndroidTarget._decode(raw, [spec], [(3,)], chunk_rows=2, total_rows=5, n=4)
    np.testing.assert_array_equal(got[0], from_model_output(rows[:4], spec))
    with pytest.raises(ValueError, match="expected 15"):
        AndroidTarget._decode(raw[:-1], [spec], [(3,)], chunk_rows=2, total_rows=5, n=5)


def test_elf_machine(tmp_path: Path) -> None:
    f = tmp_path / "bin"
    f.write_bytes(_elf_header(183))
    assert elf_machine(f) == 183
    f.write_text("#!/bin/sh\n")
    assert elf_machine(f) is None


def test_parse_dumpsys_battery() -> None:
    text = "Current Battery Service state:\n  AC powered: false\n  USB powered: true\n  status: 2\n  level: 87\n  temperature: 312\n"
    assert parse_dumpsys_battery(text) == {
        "battery_level": 87, "battery_temperature_c": 31.2, "battery_status": 2, "powered": "usb"}


ME = RunDirOwner(host="ci-1", machine="m1", pidns="pid:[4026531836]", pid=100, start="boot1/500", created=1e9)
DAY_H = ABANDONED_AFTER_S / 3600


@pytest.mark.parametrize(
    "owner, idle_h, probe, in_use, why",
    [
        (None, 1000, None, False, None),  # no marker: a user's fixed run_dir, an older version's
        (ME, 1000, None, True, None),  # one of this process's open run dirs
        (dataclasses.replace(ME, host="ci-2"), 1, None, False, None),  # another host: may be live
        (dataclasses.replace(ME, host="ci-2"), None, None, False, None),
        (dataclasses.replace(ME, host="ci-2"), DAY_H + 1, None, False, "unused for 25 h"),
        (dataclasses.replace(ME, pid=7), DAY_H + 1, (True, "boot1/9"), False, "unused for 25 h"),
        (dataclasses.replace(ME, pid=7, start="boot1/9"), 1, (False, ""), False, "its process ended (ci-1 pid 7)"),
        (dataclasses.replace(ME, pid=7, start="boot1/9"), 1, (True, "boot1/9"), False, None),
        (dataclasses.replace(ME, pid=7, start="boot1/9"), 1, (True, "boot2/9"), False, "pid 7 is now another process"),
        (dataclasses.replace(ME, pid=7, start=""), 1, (True, "boot1/9"), False, None),  # start unknown: alive
        (dataclasses.replace(ME, pid=7, start="boot1/9"), 1, (True, ""), False, None),
        (ME, 1, None, False, "left by an earlier session of this process"),
        # same name, another machine or container: its pids are not ours
        (dataclasses.replace(ME, pid=7, machine="m2"), 1, (False, ""), False, None),
        (dataclasses.replace(ME, pid=7, pidns="pid:[4026532000]"), 1, (False, ""), False, None),
    ],
)
def test_abandoned_reason(owner, idle_h, probe, in_use, why) -> None:
    def no_probe(pid: int) -> tuple[bool, str]:
        raise AssertionError("the pid must not matter here")

    got = abandoned_reason(owner, None if idle_h is None else idle_h * 3600.0, me=ME, in_use_here=in_use,
                           probe=(lambda pid: probe) if probe else no_probe)
    assert (got is None) == (why is None) and (why is None or why in got), got


def test_owner_marker_round_trip() -> None:
    me = RunDirOwner.current()
    assert me.pid == os.getpid() and me.host and me.created > 0
    assert RunDirOwner.parse(me.to_text()) == me
    assert process_start(os.getpid()) == me.start
    for bad in ("", "host=x\npid=1", me.to_text().replace("pid=", "pid=x"), me.to_text().replace("pid=", "pid=-")):
        assert RunDirOwner.parse(bad) is None


def test_parse_run_dir_listing() -> None:
    owner = ME.to_text()
    text = (
        "now=1000100\n"
        "dir=edgeopt-a1\nmtime=1000000\n" + "".join(f" {line}\n" for line in owner.splitlines())
        + " dir=edgeopt-injected\n"  # owner lines are indented: never a directory of their own
        + "dir=edgeopt-b2\nmtime=0\n" + "".join(f" {line}\n" for line in owner.splitlines())
        + "dir=edgeopt-c3\nmtime=999999\n junk\n"
        + "sh: something on stderr\n"
        + "dir=../etc\nmtime=1\n" + "".join(f" {line}\n" for line in owner.splitlines())
    )
    got = parse_run_dir_listing(text, host_now=ME.created + 50)
    assert [(d.name, d.idle_s) for d in got] == [("edgeopt-a1", 100.0), ("edgeopt-b2", 50.0), ("edgeopt-c3", 101.0)]
    assert got[0].owner == ME and got[1].owner == ME and got[2].owner is None


def _elf_header(machine: int) -> bytes:
    """The first bytes of a 64-bit little-endian ELF executable for ``machine``."""
    return b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8) + struct.pack("<HHI", 2, machine, 1) + bytes(240)


# ----------------------------------------------------------------------------- end to end

@pytest.fixture(scope="module")
def models() -> dict[str, Path]:
    """The repository's cached digits CNN as float and int8-I/O .tflite (tensorflow is
    imported only when fixtures/build lacks them)."""
    from fixtures.models import float_tflite, int8_tflite

    return {"float": float_tflite(), "int8": int8_tflite()}


def _build_fixed_batch_model(out: Path) -> None:
    """A digits-shaped model whose Reshape hard-codes batch 1: it cannot take a batch."""
    from fixtures.cache import legacy_tf_keras

    tf, _ = legacy_tf_keras()
    rng = np.random.default_rng(0)
    w = tf.constant(rng.normal(size=(64, 10)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 1], tf.float32, name="image")])
    def serve(image):
        return tf.nn.softmax(tf.matmul(tf.reshape(image, [1, 64]), w))

    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()])
    out.write_bytes(converter.convert())


@pytest.fixture(scope="module")
def fixed_batch_model() -> Path:
    """Built once with tensorflow (cached in fixtures/build like the repository's fixtures)."""
    from fixtures.cache import cached_path, package_versions, recipe_key

    key = recipe_key(_build_fixed_batch_model, package_versions("tensorflow"))
    return cached_path("android_fixed_batch", ".tflite", key, _build_fixed_batch_model)


@pytest.fixture(scope="module")
def eval_x() -> np.ndarray:
    from fixtures.digits import digits_data

    return np.asarray(digits_data().x_eval, dtype=np.float32)


@pytest.fixture
def device(adb_server: AdbServer, phone) -> Device:
    found = discover_android(adb_server.address, [phone.address])
    assert found.missing is None, found.missing
    return found.devices[0]


@pytest.fixture
def make_target(adb_server: AdbServer, device: Device, standin: Path, phone):
    """Targets on the emulated phone, closed after the test; faults reset."""
    made: list[AndroidTarget] = []

    def make(name: str = "android_cpu", **kw) -> AndroidTarget:
        kw.setdefault("benchmark_model", standin)
        kw.setdefault("gpu", name == "android_gpu")
        kw.setdefault("repeats", 2)
        kw.setdefault("step_timeout_s", 60)
        kw.setdefault("reconnect_timeout_s", 15)
        kw.setdefault("op_profiling", False)  # its own tests are in test_profile_budgets.py; one run less each
        t = AndroidTarget(name, kw.pop("device", device), adb=adb_server.address, **kw)
        made.append(t)
        return t

    yield make
    from devices.emulated_device import Faults

    phone.faults = Faults()
    for t in made:
        t.close()


FAST = LatencySettings(warmup=2, min_samples=10, min_time_s=0.0, max_time_s=2.0)


class Spy:
    """Counts DeviceLink calls (push/shell/pull) by step, around the real methods."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, str]] = []
        for name in ("push", "shell", "pull", "reconnect"):
            real = getattr(DeviceLink, name)

            def wrapper(link, step, *a, _real=real, _name=name, **kw):
                self.calls.append((_name, step))
                return _real(link, step, *a, **kw)

            monkeypatch.setattr(DeviceLink, name, wrapper)

    def count(self, kind: str, step_contains: str = "") -> int:
        return sum(1 for k, s in self.calls if k == kind and step_contains in s)


def test_discovery_reads_device_properties(adb_server: AdbServer, phone) -> None:
    found = discover_android(adb_server.address)
    assert found.missing is None
    (dev,) = [d for d in found.devices if d.id == phone.address]
    assert dev.kind == "android" and dev.label == sanitize_label(phone.address)
    d = dev.details
    assert (d["model"], d["product"], d["abi"], d["sdk"]) == ("Pixel Emu", "emu_phone", "x86_64", "34")
    assert d["adb_server"] == adb_server.address and d["transport"] == "tcp"


def test_discovery_reports_missing_serials(adb_server: AdbServer, phone) -> None:
    found = discover_android(adb_server.address, [phone.address, "127.0.0.1:1", "bad serial"])
    assert [d.id for d in found.devices] == [phone.address]
    assert found.missing is not None
    assert "127.0.0.1:1 is not attached" in found.missing and "connect 127.0.0.1:1" in found.missing
    assert "invalid adb serial 'bad serial'" in found.missing


def test_target_protocol(make_target) -> None:
    assert isinstance(make_target(), Target)


def test_latency_on_android_cpu(make_target, models: dict[str, Path], phone) -> None:
    t = make_target("android_cpu", threads=2, affinity_mask="f0")
    r = t.latency(models["float"], FAST)
    assert isinstance(r, LatencyResult)
    assert r.stats.count == 2 and all(s > 0 for s in r.stats.samples_us)
    assert r.init_ms is not None and r.init_ms > 0 and r.first_inference_ms is not None
    assert r.extras["delegate"] == "XNNPACK" and r.extras["delegation"] == "full"
    runs = r.extras["benchmark"]["runs"]
    assert len(runs) == 2 and runs[0]["inference"]["count"] >= 5
    cmd = r.extras["benchmark"]["command"]
    assert cmd[:2] == ["taskset", "f0"] and "--num_threads=2" in cmd and "--use_xnnpack=true" in cmd
    assert r.extras["peak_memory_mb"] is None or r.extras["peak_memory_mb"] > 0
    assert t.device_conditions()["battery_level"] == 81


def test_latency_on_android_gpu_parses_delegation(make_target, models: dict[str, Path]) -> None:
    r = make_target("android_gpu").latency(models["float"], FAST)
    assert r.extras["delegate"] == "GPU"
    assert r.extras["delegation"] in ("full", "partial")
    assert "--use_gpu=true" in r.extras["benchmark"]["command"]


def test_gpu_less_device_is_unavailable_for_android_gpu(make_target, models: dict[str, Path], phone) -> None:
    phone.has_gpu = False
    try:
        with pytest.raises(TargetUnavailable, match="no GPU that TFLite's GPU delegate can use") as info:
            make_target("android_gpu").latency(models["float"], FAST)
        assert "libOpenCL.so" in str(info.value)
        assert make_target("android_cpu").latency(models["float"], FAST).stats.count == 2
    finally:
        phone.has_gpu = True


def _host_outputs(model: Path, x: np.ndarray) -> list[np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(model), num_threads=1)
    io = ModelIO.of_interpreter(interp)
    interp.resize_tensor_input(io.inputs[0].index, list(x.shape))
    interp.allocate_tensors()
    interp.set_tensor(io.inputs[0].index, to_model_input(x, io.inputs[0]))
    interp.invoke()
    return [from_model_output(interp.get_tensor(o.index), o) for o in io.outputs]


@pytest.mark.parametrize("kind", ["float", "int8"])
def test_predict_on_the_device_matches_the_host(make_target, models: dict[str, Path], eval_x: np.ndarray,
                                                kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    t = make_target("android_cpu")
    t.prepare()
    t.predict(models[kind], eval_x[:3])  # model pushed; the next call is the one counted
    spy = Spy(monkeypatch)
    got = t.predict(models[kind], eval_x)
    assert (spy.count("push"), spy.count("shell"), spy.count("pull")) == (1, 1, 1), spy.calls
    want = _host_outputs(models[kind], eval_x)
    assert len(got) == len(want) == 1 and got[0].shape == (len(eval_x), 10) and got[0].dtype == np.float32
    if kind == "int8":
        np.testing.assert_array_equal(got[0], want[0])
    else:
        np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)


def test_predict_in_several_batches_in_one_shell(make_target, models: dict[str, Path], eval_x: np.ndarray,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    t = make_target("android_gpu", predict_batch=128)
    spy = Spy(monkeypatch)
    got = t.predict(models["int8"], eval_x[:300])
    assert spy.count("shell", "predict") == 1 and spy.count("pull") == 1 and spy.count("push", "eval") == 1
    np.testing.assert_array_equal(got[0], _host_outputs(models["int8"], eval_x[:300])[0])


def test_predict_falls_back_to_the_models_own_batch(make_target, fixed_batch_model: Path, eval_x: np.ndarray,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    t = make_target("android_cpu")
    t.prepare()
    spy = Spy(monkeypatch)
    got = t.predict(fixed_batch_model, eval_x[:20])
    # The batch of 20 is refused (exit 1), then 20 runs of batch 1 in one more shell command.
    assert (spy.count("push", "eval"), spy.count("shell", "predict"), spy.count("pull")) == (1, 2, 1), spy.calls
    want = np.concatenate([_host_outputs(fixed_batch_model, eval_x[i : i + 1])[0] for i in range(20)])
    np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=1e-6)


def test_binary_pushed_once_per_device(make_target, models: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                       phone) -> None:
    spy = Spy(monkeypatch)
    cpu, gpu = make_target("android_cpu"), make_target("android_gpu")
    cpu.latency(models["float"], FAST)
    gpu.latency(models["float"], FAST)
    gpu.predict(models["float"], np.zeros((2, 8, 8, 1), np.float32))
    assert cpu.run_dir == gpu.run_dir
    assert spy.count("push", "benchmark_model") == 1
    assert spy.count("push", "model") - spy.count("push", "benchmark_model") == 1  # the .tflite once too
    run_dir = phone.host_path(cpu.run_dir)
    assert (run_dir / "benchmark_model").is_file()
    cpu.close()
    assert run_dir.exists()  # gpu still uses it
    gpu.close()
    assert not run_dir.exists()


def test_fixed_run_dir_skips_the_same_binary_next_session(make_target, standin: Path,
                                                          monkeypatch: pytest.MonkeyPatch, phone) -> None:
    fixed = "/data/local/tmp/edgeopt-keep"
    first = make_target(run_dir=fixed)
    first.prepare()
    first.close()
    assert (phone.host_path(fixed) / "benchmark_model").is_file()  # kept for the next session
    spy = Spy(monkeypatch)
    second = make_target(run_dir=fixed)
    second.prepare()
    assert spy.count("push") == 0 and spy.count("shell", "check benchmark_model") == 1
    second.close()


def test_run_dir_removed_on_close(make_target, models: dict[str, Path], phone) -> None:
    t = make_target()
    t.latency(models["float"], FAST)
    path = phone.host_path(t.run_dir)
    assert path.is_dir() and any(p.suffix == ".tflite" for p in path.iterdir())
    t.close()
    assert not path.exists() and t.run_dir is None
    assert not [p for p in phone.host_path("/data/local/tmp").iterdir() if p.name.startswith("edgeopt-")
                and p.name != "edgeopt-keep"]


def test_drop_mid_run_reconnects_and_retries(make_target, models: dict[str, Path], phone, adb_server: AdbServer,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    t = make_target()
    t.prepare()
    spy = Spy(monkeypatch)
    phone.faults.drop_during_shell = True
    r = t.latency(models["float"], FAST)
    assert r.stats.count == 2
    assert spy.count("reconnect") == 1
    assert adb_server.client.list() and dict((i.serial, i.state) for i in adb_server.client.list())[phone.address] == "device"


def test_drop_twice_is_an_error_naming_device_and_step(make_target, models: dict[str, Path], phone,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    t = make_target()
    t.prepare()
    real = DeviceLink.reconnect

    def rearm(link, step, cause=None):
        real(link, step, cause)
        phone.faults.drop_during_shell = True  # the retry drops too

    monkeypatch.setattr(DeviceLink, "reconnect", rearm)
    phone.faults.drop_during_shell = True
    with pytest.raises(TargetError) as info:
        t.latency(models["float"], FAST)
    msg = str(info.value)
    assert phone.address in msg and "failed again after reconnecting" in msg and "benchmark digits_float" in msg


def test_adb_server_gone_is_a_quick_clear_error(phone, device: Device, standin: Path,
                                               models: dict[str, Path]) -> None:
    with AdbServer() as own:
        own.connect(phone.address)
        t = AndroidTarget("android_cpu", device, adb=own.address, benchmark_model=standin, gpu=False, repeats=1)
        t.prepare()
    start = time.monotonic()
    with pytest.raises(TargetError, match=f"no adb server at {own.address}"):
        t.latency(models["float"], FAST)
    assert time.monotonic() - start < 10
    with pytest.warns(RuntimeWarning, match="could not remove"):
        t.close()


def test_hung_shell_times_out(make_target, models: dict[str, Path], phone) -> None:
    t = make_target(step_timeout_s=2)
    t.prepare()
    phone.faults.hang_shell = True
    start = time.monotonic()
    with pytest.raises(TargetError) as info:
        t.latency(models["float"], FAST)
    assert time.monotonic() - start < 20
    msg = str(info.value)
    assert phone.address in msg and "timed out after 2 s" in msg and "benchmark digits_float" in msg


def test_hung_benchmark_model_is_stopped(make_target, models: dict[str, Path], phone) -> None:
    t = make_target(step_timeout_s=3)
    t.prepare()
    phone.faults.standin_hang = True
    with pytest.raises(TargetError, match="timed out"):
        t.latency(models["float"], FAST)
    phone.faults.standin_hang = False
    assert not list(phone.host_path(t.run_dir).glob("run-*.pid"))  # found by its pid and stopped


@pytest.mark.parametrize("crash, shown", [("segv", "SIGSEGV"), ("abort", "SIGABRT")])
def test_crash_quotes_the_output_tail(make_target, models: dict[str, Path], phone, crash: str, shown: str) -> None:
    t = make_target()
    phone.faults.standin_crash = crash
    with pytest.raises(TargetError) as info:
        t.latency(models["float"], FAST)
    msg = str(info.value)
    assert shown in msg and phone.address in msg and "output ended with" in msg
    assert "benchmark_model failed" in msg


def test_non_zero_exit_is_an_error_with_the_code(make_target, models: dict[str, Path], phone) -> None:
    phone.faults.standin_exit = 3
    with pytest.raises(TargetError, match=r"exit code 3\b"):
        make_target().predict(models["float"], np.zeros((2, 8, 8, 1), np.float32))


def test_missing_binary_is_unavailable_naming_the_option(make_target, models: dict[str, Path], tmp_path: Path) -> None:
    for binary in (tmp_path / "benchmark_model", None):
        with pytest.raises(TargetUnavailable, match="--edgeopt-benchmark-model"):
            make_target(benchmark_model=binary).latency(models["float"], FAST)


def test_wrong_architecture_binary_is_unavailable(make_target, models: dict[str, Path], tmp_path: Path,
                                                  device: Device) -> None:
    arm = tmp_path / "benchmark_model_arm64"
    arm.write_bytes(_elf_header(183))
    arm.chmod(0o755)
    # Known on the host: an aarch64 ELF for an x86_64 device.
    with pytest.raises(TargetUnavailable, match="built for aarch64 but the device runs x86_64"):
        make_target(benchmark_model=arm).latency(models["float"], FAST)
    # Found on the device: the phone claims arm64 but cannot execute it.
    arm_phone = Device(device.kind, device.id, device.label, {**device.details, "abi": "arm64-v8a", "abilist": "arm64-v8a"})
    with pytest.raises(TargetUnavailable) as info:
        make_target(benchmark_model=arm, device=arm_phone).latency(models["float"], FAST)
    assert "cannot execute" in str(info.value) and "--edgeopt-benchmark-model" in str(info.value)
    assert "Exec format error" in str(info.value) or "126" in str(info.value)


def test_full_storage_says_how_much_was_needed(make_target, models: dict[str, Path], phone) -> None:
    t = make_target()
    t.prepare()
    phone.faults.storage_bytes = phone.used_bytes() + 1000
    size = models["float"].stat().st_size
    with pytest.raises(TargetError) as info:
        t.latency(models["float"], FAST)
    msg = str(info.value)
    assert "storage is full" in msg and f"needed {size} bytes" in msg and "No space left on device" in msg
    assert phone.address in msg


@contextlib.contextmanager
def _session_in_a_child(adb_server: AdbServer, device: Device, standin: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    """A child process whose target has made its run dir on the phone, then sleeps;
    yields it and the run dir's path, kills it at the end if still alive."""
    code = f"""
import time
from pathlib import Path
from pytest_edgeopt.targets.android.target import AndroidTarget
from pytest_edgeopt.targets.base import Device
t = AndroidTarget("android_cpu", Device("android", {device.id!r}, None, {dict(device.details)!r}),
                  adb={adb_server.address!r}, benchmark_model=Path({str(standin)!r}), gpu=False)
t.prepare()
print(t.run_dir, flush=True)
time.sleep(60)
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parent.parent)
    try:
        run_dir = proc.stdout.readline().strip()
        assert run_dir.startswith("/data/local/tmp/edgeopt-"), run_dir
        yield proc, run_dir
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_interrupted_session_removes_its_run_dir_at_exit(adb_server: AdbServer, phone, standin: Path,
                                                         device: Device) -> None:
    """A child process that is killed with SIGTERM mid-session still removes its run dir."""
    with _session_in_a_child(adb_server, device, standin) as (proc, run_dir):
        assert phone.host_path(run_dir).is_dir()
        proc.terminate()
        proc.wait(timeout=30)
    assert not phone.host_path(run_dir).exists()


def _fake_run_dir(phone, name: str, owner: RunDirOwner | None, age_h: float = 0.0) -> Path:
    path = phone.host_path(f"/data/local/tmp/{name}")
    (path / "predict").mkdir(parents=True)
    files = [path]
    if owner is not None:
        (path / "owner").write_text(owner.to_text())
        files.append(path / "owner")
    if age_h:
        then = time.time() - age_h * 3600
        for f in files:
            os.utime(f, (then, then))
    return path


def test_first_use_sweeps_provably_abandoned_run_dirs(make_target, phone) -> None:
    me = RunDirOwner.current()
    dead = subprocess.Popen(["true"])
    dead.wait()
    live = subprocess.Popen(["sleep", "60"])
    other = dataclasses.replace(me, host="farm-host-2", machine="", pidns="", pid=dead.pid)
    fakes = {
        "edgeopt-deadpid": (dataclasses.replace(me, pid=dead.pid, start="x/1"), 0, True),
        "edgeopt-reused": (dataclasses.replace(me, pid=live.pid, start="x/1"), 0, True),
        "edgeopt-livepid": (dataclasses.replace(me, pid=live.pid, start=process_start(live.pid)), 0, False),
        "edgeopt-earlier": (me, 0, True),  # this process, not in use: an earlier in-process session's
        "edgeopt-otheryoung": (other, 23, False),
        "edgeopt-otherold": (other, 25, True),
        "edgeopt-fixed": (None, 48, False),  # a user's run_dir: no owner marker
    }
    paths = {name: _fake_run_dir(phone, name, owner, age_h) for name, (owner, age_h, _) in fakes.items()}
    try:
        t = make_target()
        t.prepare()
        for name, (_, _, removed) in fakes.items():
            assert paths[name].exists() != removed, name
        assert phone.host_path(t.run_dir).is_dir()
        swept = dict(t._rundir.swept)
        assert sorted(swept) == sorted(f"/data/local/tmp/{n}" for n, (_, _, r) in fakes.items() if r)
        assert "unused for 25 h" in swept["/data/local/tmp/edgeopt-otherold"]
        assert f"pid {dead.pid}" in swept["/data/local/tmp/edgeopt-deadpid"]
        owner = RunDirOwner.parse(phone.host_path(f"{t.run_dir}/owner").read_text())
        assert owner is not None and owner.same_host(me) and owner.pid == os.getpid()
        gpu = make_target("android_gpu")  # the device's second target shares the run dir: no second sweep
        gpu.prepare()
        assert gpu.run_dir == t.run_dir and dict(gpu._rundir.swept) == swept
    finally:
        live.kill()
        live.wait()
        for path in paths.values():
            subprocess.run(["rm", "-rf", str(path)], check=True)


def test_run_dir_of_a_killed_session_is_swept_by_the_next(adb_server: AdbServer, phone, standin: Path,
                                                          device: Device, make_target) -> None:
    """SIGKILL leaves no chance to clean up: the next session on this host removes the dir."""
    with _session_in_a_child(adb_server, device, standin) as (proc, run_dir):
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    left = phone.host_path(run_dir)
    owner = RunDirOwner.parse((left / "owner").read_text())
    assert owner is not None and owner.pid == proc.pid and owner.same_host(RunDirOwner.current())
    make_target().prepare()
    assert not left.exists()


def test_a_device_that_does_not_come_back_fails_later_steps_at_once(adb_server: AdbServer, standin: Path,
                                                                    models: dict[str, Path], tmp_path: Path) -> None:
    from devices.emulated_device import EmulatedDevice

    dev = EmulatedDevice(tmp_path / "phone")
    dev.start()
    try:
        adb_server.connect(dev.address)
        (found,) = discover_android(adb_server.address, [dev.address]).devices
        t = AndroidTarget("android_cpu", found, adb=adb_server.address, benchmark_model=standin, gpu=False,
                          repeats=1, step_timeout_s=30, reconnect_timeout_s=2)
        t.prepare()
        port = dev.port
        dev.stop()
        with pytest.raises(TargetError) as info:
            t.latency(models["float"], FAST)
        first = str(info.value)
        assert f"android_cpu on {dev.address}: the device went offline during step 'push model" in first
        assert "did not come back within 2 s" in first
        start = time.monotonic()
        with pytest.raises(TargetError) as info:
            t.latency(models["int8"], FAST)
        assert time.monotonic() - start < 2
        assert "not run: the device went offline during step 'push model" in str(info.value)
        dev.start(port=port)  # it comes back: the next step reconnects and runs
        assert t.latency(models["int8"], FAST).stats.count == 1
        t.close()
        assert not [p for p in dev.host_path("/data/local/tmp").iterdir() if p.name.startswith("edgeopt-")]
    finally:
        dev.stop()
        adb_server.disconnect(dev.address)
