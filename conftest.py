"""The repository's own test setup.

Being at the repository root, this file puts the root on ``sys.path`` (pytest's default
"prepend" import mode), so tests and examples import ``fixtures`` and ``devices``.
Shared fixtures live here; none of them imports tensorflow until a test needs it.

numpy is imported here, in the outer session: in-process pytester runs restore
``sys.modules`` afterwards, so a module first imported inside one run is imported again by
the next, and numpy's extension refuses to load twice in a process. The plugin no longer
imports numpy at start-up, so without this a test module whose first pytester run imports
``pytest_edgeopt.model`` breaks the next run (tests/plugin/test_options.py run alone).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy  # noqa: F401 (see below)
import pytest

from tests.edgetpu_helpers import STUB_DIR as EDGETPU_STUB_DIR
from tests.edgetpu_helpers import load_edgetpu_stub


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's digits split: x_train, y_train, x_eval (450), y_eval."""
    from fixtures.digits import digits_data

    return digits_data()


@pytest.fixture(scope="session")
def digits_model_path():
    """A trained tf_keras digits CNN (.h5), built once and cached under fixtures/build."""
    from fixtures.digits import digits_model_path as path

    return path()


@pytest.fixture(scope="session")
def tensorflow_loaded() -> None:
    """Import tensorflow and the optimization libraries once in this process.

    In-process pytester runs restore ``sys.modules`` afterwards, so a module first imported
    inside a run would be imported again by the next run, and tensorflow aborts the process
    when imported twice. Tests that build variants through pytester request this first.
    """
    from pytest_edgeopt.variants.tfenv import import_keras, import_tf, import_tfmot

    import_tf()
    import_keras()
    import_tfmot()
    import litert_quantizer.quantizer  # noqa: F401 (imported for its side effect: loaded once)


# -- Android: a real adb server and the emulated device ---------------------------------------
@pytest.fixture(scope="module")
def adb_server():
    """A real adb server (the adbutils wheel's adb) on a free port with a temporary HOME,
    killed at teardown (checked)."""
    from devices.adb_server import AdbServer
    from tests.adb_helpers import bundled_adb

    server = AdbServer(adb=bundled_adb()).start()  # the same adb everywhere, whatever is on PATH
    try:
        yield server
    finally:
        pid = server.pid
        server.stop()
        if pid is not None:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)


@pytest.fixture(scope="module")
def phone(adb_server, tmp_path_factory: pytest.TempPathFactory):
    """An emulated Android device (devices/emulated_device.py) connected to ``adb_server``."""
    from devices.emulated_device import EmulatedDevice

    device = EmulatedDevice(tmp_path_factory.mktemp("phone"), model="Pixel Emu", product="emu_phone",
                            battery_level=81, temperature_c=33.5)
    device.start()
    adb_server.connect(device.address, timeout=20)
    yield device
    adb_server.disconnect(device.address)
    device.stop()


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The benchmark_model stand-in, installed as an executable 'binary' to push."""
    from devices.benchmark_model_standin import write_standin

    return write_standin(tmp_path_factory.mktemp("standin") / "benchmark_model")


# -- Edge TPU: the stub runtime and the stand-in compiler ---------------------------------------
@pytest.fixture(scope="session")
def stub_runtime(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/edgetpu_stub/stub_delegate.c built with the machine's C compiler into
    <tmp>/libedgetpu.so.1: a TFLite external delegate that claims no nodes."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler (gcc/cc) on PATH to build the stub Edge TPU runtime")
    lib = tmp_path_factory.mktemp("stub-runtime") / "libedgetpu.so.1"
    proc = subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(lib), str(EDGETPU_STUB_DIR / "stub_delegate.c")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return lib


@pytest.fixture(scope="session")
def tiny_cnn_variants(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """fp32/float16/dynamic/int8/int8_full/int16x8/... .tflite files of a tiny CNN, built once in a
    tensorflow subprocess (tests/edgetpu_stub/tiny_cnn.py) and cached in pytest's cache."""
    cache = getattr(request.config, "cache", None)
    root = cache.mkdir("edgeopt-edgetpu-models") if cache is not None else tmp_path_factory.getbasetemp() / "models"
    return load_edgetpu_stub("tiny_cnn").ensure_models(Path(root))


@pytest.fixture
def fake_compiler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The stand-in edgetpu_compiler in tmp_path/bin; its calls are logged to tmp_path/calls.jsonl."""
    monkeypatch.setenv("FAKE_EDGETPU_CALLS", str(tmp_path / "calls.jsonl"))
    monkeypatch.delenv("FAKE_EDGETPU_FAIL", raising=False)
    monkeypatch.delenv("FAKE_EDGETPU_VERSION", raising=False)
    return load_edgetpu_stub("fake_edgetpu_compiler").install(tmp_path / "bin")
