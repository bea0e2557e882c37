"""The emulated Android device, driven through a REAL adb server.

Every test goes adbutils (or the adb command line) -> real adb server -> emulated device,
the path the Android target uses with a phone. The benchmark_model stand-in runs real
.tflite models made by TensorFlow in a session fixture.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import adbutils
import numpy as np
import pytest
from adb_helpers import bundled_adb, system_adb

from pytest_edgeopt.targets.android.server import device_state

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # devices/ is not an installed package; a root conftest.py would do this
    sys.path.insert(0, str(REPO))

from devices import EmulatedDevice, write_standin  # noqa: E402
from devices.adb_server import AdbServer  # noqa: E402

TMP = "/data/local/tmp"
INPUT = "serving_default_input_1:0"  # the Keras model's input tensor name
FAST = "--min_secs=0 --warmup_min_secs=0 --warmup_runs=1"


@pytest.fixture(scope="session")
def adb_server():
    with AdbServer(adb=bundled_adb()) as server:
        yield server


@pytest.fixture
def device(tmp_path: Path, adb_server: AdbServer):
    dev = EmulatedDevice(tmp_path / "device")
    dev.start()
    adb_server.connect(dev.address)
    yield dev
    dev.stop()
    adb_server.disconnect(dev.address)


@pytest.fixture
def phone(device: EmulatedDevice, adb_server: AdbServer) -> adbutils.AdbDevice:
    return adb_server.client.device(device.address)


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """fp32, int16x8 and an ARG_MAX-headed (GPU: partial) model of one small Dense net.

    Built in a subprocess so tensorflow stays out of the test process.
    """
    out = tmp_path_factory.mktemp("models")
    script = textwrap.dedent(
        """
        import os, sys
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        import numpy as np, tensorflow as tf, tf_keras as keras
        out = sys.argv[1]
        keras.utils.set_random_seed(0)
        inp = keras.layers.Input((8, 8, 1))
        x = keras.layers.Flatten()(inp)
        x = keras.layers.Dense(16, activation="relu")(x)
        x = keras.layers.Dense(10, activation="softmax")(x)
        model = keras.Model(inp, x)
        def save(name, converter):
            open(os.path.join(out, name + ".tflite"), "wb").write(converter.convert())
        save("fp32", tf.lite.TFLiteConverter.from_keras_model(model))
        c = tf.lite.TFLiteConverter.from_keras_model(model)
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.representative_dataset = lambda: ([np.random.rand(1, 8, 8, 1).astype("float32")] for _ in range(8))
        c.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        save("int16x8", c)
        save("argmax", tf.lite.TFLiteConverter.from_keras_model(keras.Model(inp, tf.math.argmax(x, axis=-1))))
        """
    )
    subprocess.run([sys.executable, "-c", script, str(out)], check=True, capture_output=True, timeout=300)
    return {name: out / f"{name}.tflite" for name in ("fp32", "int16x8", "argmax")}


def install(device: EmulatedDevice, models: dict[str, Path]) -> None:
    """Put the stand-in and the models into /data/local/tmp (no adb; see test_standin_via_adb_push)."""
    write_standin(device.host_path(f"{TMP}/benchmark_model"))
    for name, path in models.items():
        device.host_path(f"{TMP}/{name}.tflite").write_bytes(path.read_bytes())


def bench(phone: adbutils.AdbDevice, args: str, timeout: float = 60) -> adbutils.ShellReturn:
    return phone.shell2(f"{TMP}/benchmark_model {args}", v2=True, timeout=timeout)


# --- transport and shell ---------------------------------------------------------------


def test_connect_lists_the_banner_identity(device: EmulatedDevice, adb_server: AdbServer, phone) -> None:
    listing = adb_server.run("devices", "-l").stdout.decode()
    assert re.search(rf"^{re.escape(device.address)}\s+device product:edgeopt_emu model:Edgeopt_Emulated "
                     r"device:emu", listing, re.M)
    assert phone.prop.model == "Edgeopt Emulated"
    assert phone.getprop("ro.product.cpu.abi") == "x86_64"
    assert "shell_v2" in phone.get_features().split(",")


def test_cli_shell_exit_code_and_separate_stderr(device: EmulatedDevice, adb_server: AdbServer) -> None:
    assert adb_server.run("-s", device.address, "shell", "exit 3").returncode == 3
    result = adb_server.run("-s", device.address, "shell", "echo out; echo err >&2; exit 7")
    assert (result.returncode, result.stdout, result.stderr) == (7, b"out\n", b"err\n")


def test_cli_shell_forwards_stdin(device: EmulatedDevice, adb_server: AdbServer) -> None:
    result = adb_server.run("-s", device.address, "shell", "cat; echo done", input=b"from the host\n")
    assert result.stdout == b"from the host\ndone\n"


def test_shell_v2_and_legacy_shell(phone) -> None:
    result = phone.shell2("echo a; echo b >&2; exit 5", v2=True)
    assert (result.returncode, result.stdout, result.stderr) == (5, "a\n", "b\n")
    assert phone.shell("echo a; echo b >&2") == "a\nb"  # legacy shell: merged, no exit code


def test_exit_code_of_a_signal_is_128_plus_signal(phone) -> None:
    assert phone.shell2("kill -SEGV $$", v2=True).returncode == 128 + signal.SIGSEGV
    assert phone.shell2("sh -c 'kill -9 $$'", v2=True).returncode == 128 + signal.SIGKILL


def test_odd_characters_survive_quoting(phone, device: EmulatedDevice, adb_server: AdbServer) -> None:
    odd = "it's \"quoted\" $HOME `x` \\ ; & | * ü 日本"
    assert phone.shell2(["printf", "%s", odd], v2=True).stdout == odd
    result = adb_server.run("-s", device.address, "shell", "printf '%s' 'it'\\''s $HOME'")
    assert result.stdout == b"it's $HOME"


def test_device_paths_live_under_root(phone, device: EmulatedDevice) -> None:
    result = phone.shell2(f"mkdir -p {TMP}/d && echo hi > {TMP}/d/f && ls -d {TMP}/d/f && cd {TMP} && pwd"
                          " && ls /nope", v2=True)
    assert (device.root / "data/local/tmp/d/f").read_text() == "hi\n"
    assert result.stdout == f"{TMP}/d/f\n{TMP}\n"  # host paths mapped back to device paths
    assert "/nope" in result.stderr and str(device.root) not in result.stderr


def test_refused_service_is_closed(phone) -> None:
    with pytest.raises(adbutils.AdbError):
        phone.create_connection(adbutils.Network.TCP, 1234)


# --- files -------------------------------------------------------------------------------


def test_adbutils_push_stat_list_pull(phone, device: EmulatedDevice, tmp_path: Path) -> None:
    payload = os.urandom(300_000)
    assert phone.sync.push(payload, f"{TMP}/sub/blob.bin", mode=0o644) == len(payload)  # fixed_push_mkdir
    info = phone.sync.stat(f"{TMP}/sub/blob.bin")
    assert (info.size, info.mode & 0o777) == (len(payload), 0o666)  # adbd copies user bits to group/other
    assert phone.sync.stat(f"{TMP}/missing").mode == 0
    assert [e.path for e in phone.sync.list(f"{TMP}/sub")] == [".", "..", "blob.bin"]
    assert phone.sync.read_bytes(f"{TMP}/sub/blob.bin") == payload
    phone.sync.pull_file(f"{TMP}/sub/blob.bin", tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == payload
    with pytest.raises(adbutils.AdbError):
        phone.sync.read_bytes(f"{TMP}/missing")


def test_cli_push_pull_1mb_byte_exact(device: EmulatedDevice, adb_server: AdbServer, phone, tmp_path: Path) -> None:
    payload = os.urandom(1 << 20)
    (tmp_path / "up.bin").write_bytes(payload)
    assert adb_server.run("-s", device.address, "push", str(tmp_path / "up.bin"), f"{TMP}/up.bin").returncode == 0
    assert adb_server.run("-s", device.address, "pull", f"{TMP}/up.bin", str(tmp_path / "down.bin")).returncode == 0
    assert (tmp_path / "down.bin").read_bytes() == payload
    assert phone.shell2(f"sha256sum {TMP}/up.bin", v2=True).stdout.split()[0] == hashlib.sha256(payload).hexdigest()


def test_large_transfers_respect_flow_control(phone) -> None:
    payload = os.urandom(6 << 20)
    phone.sync.push(payload, f"{TMP}/big.bin")
    assert phone.sync.read_bytes(f"{TMP}/big.bin") == payload
    out = phone.shell2("head -c 3000000 /dev/zero | tr '\\0' a; echo; seq 1 3 >&2", v2=True, timeout=30)
    assert out.stdout == "a" * 3_000_000 + "\n" and out.stderr == "1\n2\n3\n"


# --- Android-only commands -------------------------------------------------------------


def test_getprop_dumpsys_taskset_shims(phone, device: EmulatedDevice) -> None:
    assert "[ro.product.model]: [Edgeopt Emulated]" in phone.shell2("getprop", v2=True).stdout
    assert phone.shell2("getprop no.such.prop fallback", v2=True).stdout == "fallback\n"
    battery = phone.shell2("dumpsys battery", v2=True).stdout
    assert battery.startswith("Current Battery Service state:\n") and "  level: 100\n" in battery
    assert "  temperature: 300\n" in battery
    device.battery_level, device.temperature_c = 42, 47.5  # the phone heats up at run time
    battery = phone.shell2("dumpsys battery", v2=True).stdout
    assert "  level: 42\n" in battery and "  temperature: 475\n" in battery
    assert "Thermal Status: 3\n" in phone.shell2("dumpsys thermalservice", v2=True).stdout
    assert phone.shell2("taskset f0 echo pinned", v2=True).stdout == "pinned\n"
    assert phone.shell2("taskset zz echo no", v2=True).returncode == 1


# --- faults ------------------------------------------------------------------------------


def test_drop_during_shell_breaks_the_command_and_the_transport(device: EmulatedDevice, adb_server: AdbServer,
                                                                phone) -> None:
    accepted = device.accepted
    device.faults.drop_during_shell = True
    with pytest.raises((EOFError, adbutils.AdbError)):
        phone.shell2("seq 1 200000", v2=True, timeout=10)
    # The transport went offline; adb reconnects a dropped `adb connect` device by itself.
    deadline = time.monotonic() + 15
    while not (device.accepted > accepted and device_state(adb_server.client, device.address) == "device"):
        assert time.monotonic() < deadline, "adb did not reconnect the dropped transport"
        time.sleep(0.1)
    device.faults.drop_during_shell = True
    result = adb_server.run("-s", device.address, "shell", "seq 1 200000")
    assert result.returncode != 0 and len(result.stdout) < len("\n".join(map(str, range(1, 200001))))
    adb_server.connect(device.address)
    assert phone.shell2("echo alive", v2=True).stdout == "alive\n"


def test_hang_shell_times_out_the_client(device: EmulatedDevice, phone) -> None:
    device.faults.hang_shell = True
    started = time.monotonic()
    with pytest.raises(adbutils.AdbTimeout):
        phone.shell2("echo never", v2=True, timeout=1)
    assert time.monotonic() - started < 5
    assert phone.shell2("echo next", v2=True).stdout == "next\n"  # one-shot


def test_storage_full_fails_push_with_enospc(device: EmulatedDevice, adb_server: AdbServer, phone,
                                             tmp_path: Path) -> None:
    device.faults.storage_bytes = 100_000
    (tmp_path / "big.bin").write_bytes(os.urandom(200_000))
    result = adb_server.run("-s", device.address, "push", str(tmp_path / "big.bin"), f"{TMP}/big.bin")
    assert result.returncode != 0
    assert b"No space left on device" in result.stderr + result.stdout
    assert not (device.root / "data/local/tmp/big.bin").exists()
    with pytest.raises(adbutils.AdbError):
        phone.sync.push(os.urandom(200_000), f"{TMP}/big2.bin")
    phone.sync.push(b"small", f"{TMP}/small.bin")
    df = phone.shell2("df /data", v2=True).stdout.splitlines()
    assert df[0].split()[:2] == ["Filesystem", "1K-blocks"] and df[1].split()[1] == "98"


def test_slow_packets_and_forced_exit(device: EmulatedDevice, phone) -> None:
    device.faults.fail_next_shell_exit = 42
    assert phone.shell2("true", v2=True).returncode == 42
    assert phone.shell2("true", v2=True).returncode == 0
    device.faults.slow_s = 0.1
    started = time.monotonic()
    assert phone.shell2("echo slow", v2=True).stdout == "slow\n"
    assert time.monotonic() - started >= 0.2  # OKAY, WRTE, exit WRTE, CLSE each wait


def test_stop_restart_reconnect(device: EmulatedDevice, adb_server: AdbServer, phone) -> None:
    phone.sync.push(b"persists", f"{TMP}/keep.txt")
    port = device.port
    device.stop()
    adb_server.wait_for_state(device.address, "offline")
    dead = adb_server.run("-s", device.address, "shell", "echo dead")
    assert dead.returncode != 0 and b"offline" in dead.stderr
    device.start(port=port)
    adb_server.connect(device.address)  # disconnect, connect, poll for "device"
    assert phone.shell2(f"cat {TMP}/keep.txt", v2=True).stdout == "persists"


def test_command_line_runs_a_device(tmp_path: Path, adb_server: AdbServer) -> None:
    command = [sys.executable, "-m", "devices.emulated_device", "--root", str(tmp_path / "dev"),
               "--connect", str(adb_server.port), "--adb", adb_server.adb]
    with subprocess.Popen(command, cwd=REPO, env=adb_server.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as proc:
        try:
            address = proc.stdout.readline().strip()
            assert re.fullmatch(r"127\.0\.0\.1:\d+", address)
            adb_server.wait_for_state(address, "device")
            model = adb_server.run("-s", address, "shell", "getprop ro.product.model").stdout
            assert model == b"Edgeopt Emulated\n"
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert f"connected to {address}" in err
    adb_server.disconnect(address)


@pytest.mark.skipif(system_adb() is None, reason="no adb on PATH besides the bundled one (apt-get install adb)")
def test_system_adb_cli(tmp_path: Path) -> None:
    server = AdbServer(adb=system_adb(), home=tmp_path / "home").start()
    dev = EmulatedDevice(tmp_path / "device")
    try:
        dev.start()
        server.connect(dev.address)
        result = server.run("-s", dev.address, "shell", "echo out; echo err >&2; exit 3")
        assert (result.returncode, result.stdout, result.stderr) == (3, b"out\n", b"err\n")
        payload = os.urandom(1 << 20)
        (tmp_path / "up.bin").write_bytes(payload)
        assert server.run("-s", dev.address, "push", str(tmp_path / "up.bin"), f"{TMP}/up.bin").returncode == 0
        assert server.run("-s", dev.address, "pull", f"{TMP}/up.bin", str(tmp_path / "dn.bin")).returncode == 0
        assert (tmp_path / "dn.bin").read_bytes() == payload
    finally:
        dev.stop()
        server.stop()


# --- benchmark_model stand-in --------------------------------------------------------------

STATS = re.compile(r"^INFO: count=(\d+) first=(\d+) curr=(\d+) min=(\d+) max=(\d+) avg=(\S+) std=(\d+) "
                   r"p5=(\d+) median=(\d+) p95=(\d+)$|^INFO: count=(\d+) curr=(\d+)(?:\(all same\))? "
                   r"p5=(\d+) median=(\d+) p95=(\d+)$", re.M)


def test_standin_via_adb_push_measures_a_real_model(device: EmulatedDevice, adb_server: AdbServer, phone,
                                                    models: dict[str, Path], tmp_path: Path) -> None:
    standin = write_standin(tmp_path / "benchmark_model")
    assert standin.read_text().startswith(f"#!{sys.executable}\n")
    for local, remote in ((standin, "benchmark_model"), (models["fp32"], "fp32.tflite")):
        assert adb_server.run("-s", device.address, "push", str(local), f"{TMP}/{remote}").returncode == 0
    result = phone.shell2(f"taskset f0 {TMP}/benchmark_model --graph={TMP}/fp32.tflite --num_threads=1 "
                          f"--num_runs=30 {FAST} --report_peak_memory_footprint=true --bogus_flag=1",
                          v2=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("INFO: STARTING!\n")
    assert "WARN: Unconsumed cmdline flags: --bogus_flag=1\n" in out
    assert f"INFO: Graph: [{TMP}/fp32.tflite]\n" in out
    assert f"INFO: The input model file size (MB): {models['fp32'].stat().st_size / 1e6:g}\n" in out
    assert re.search(r"^INFO: Initialized session in [\d.e+-]+ms\.$", out, re.M)
    assert ("INFO: Running benchmark for at least 30 iterations and at least 0 seconds but terminate if "
            "exceeding 150 seconds.\n") in out
    counts = [int(m.group(1) or m.group(11)) for m in STATS.finditer(out)]
    assert len(counts) == 2 and counts[1] >= 30
    timings = re.search(r"^INFO: Inference timings in us: Init: (\d+), First inference: (\d+), "
                        r"Warmup \(avg\): (\S+), Inference \(avg\): (\S+)$", out, re.M)
    assert timings and int(timings.group(1)) > 0
    assert re.search(r"^INFO: Memory footprint delta from the start of the tool \(MB\): init=\S+ overall=\S+$",
                     out, re.M)
    assert re.search(r"^INFO: Overall peak memory footprint \(MB\) via periodic monitoring: [\d.]+$", out, re.M)


def test_standin_batch_files_match_the_host_interpreter(device: EmulatedDevice, phone, models,
                                                        tmp_path: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    install(device, models)
    batch = np.random.default_rng(1).random((7, 8, 8, 1), dtype=np.float32)
    phone.sync.push(batch.tobytes(), f"{TMP}/in.bin")
    escaped = INPUT.replace(":", "::")  # ':' in a layer name is escaped in the value-files list
    result = bench(phone, f"--graph={TMP}/fp32.tflite --input_layer={INPUT} --input_layer_shape=7,8,8,1 "
                          f"--input_layer_value_files={escaped}:{TMP}/in.bin --output_filepath={TMP}/out.bin "
                          f"--num_runs=3 {FAST}")
    assert result.returncode == 0, result.stderr
    got = np.frombuffer(phone.sync.read_bytes(f"{TMP}/out.bin"), dtype=np.float32).reshape(7, 10)
    interpreter = Interpreter(model_path=str(models["fp32"]))
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, [7, 8, 8, 1])
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, batch)
    interpreter.invoke()
    np.testing.assert_allclose(got, interpreter.get_tensor(interpreter.get_output_details()[0]["index"]), rtol=1e-6)
    # A file that does not hold exactly the resized tensor's bytes is FATAL: abort().
    phone.sync.push(batch[:6].tobytes(), f"{TMP}/short.bin")
    result = bench(phone, f"--graph={TMP}/fp32.tflite --input_layer={INPUT} --input_layer_shape=7,8,8,1 "
                          f"--input_layer_value_files={escaped}:{TMP}/short.bin {FAST}")
    assert result.returncode == 128 + signal.SIGABRT
    assert "FATAL: The size of /data/local/tmp/short.bin is 1536 bytes. It should be 1792 bytes." in result.stderr


def test_standin_reports_gpu_delegation(device: EmulatedDevice, phone, models) -> None:
    install(device, models)
    expected = {
        "fp32": "INFO: Explicitly applied GPU delegate, and the model graph will be completely executed by the "
                "delegate.",
        "int16x8": "INFO: Though GPU delegate is explicitly applied, the model graph will not be executed by the "
                   "delegate.",
        "argmax": "INFO: Explicitly applied GPU delegate, and the model graph will be partially executed by the "
                  "delegate w/ 1 delegate kernels.",
    }
    for name, line in expected.items():
        result = bench(phone, f"--graph={TMP}/{name}.tflite --use_gpu=true --num_runs=2 {FAST}")
        assert result.returncode == 0 and line + "\n" in result.stdout, (name, result.stdout, result.stderr)
    result = bench(phone, f"--graph={TMP}/argmax.tflite --use_gpu=true --require_full_delegation=true {FAST}")
    assert result.returncode == 1
    assert "ERROR: Disallowed CPU fallback detected.\nERROR: Benchmarking failed.\n" in result.stderr


def test_standin_faults_and_flag_errors(device: EmulatedDevice, phone, models) -> None:
    install(device, models)
    device.faults.standin_crash = "segv"
    result = bench(phone, f"--graph={TMP}/fp32.tflite {FAST}")
    assert result.returncode == 139
    assert "INFO: Initialized session in" in result.stdout and "Fatal signal 11 (SIGSEGV)" in result.stderr
    device.faults.standin_crash = None
    result = bench(phone, f"--graph={TMP}/fp32.tflite --num_runs=abc {FAST}")
    assert result.returncode == 1
    assert "ERROR: Failed to parse flag 'num_runs' against argv '--num_runs=abc'" in result.stderr
