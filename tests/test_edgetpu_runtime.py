"""The Edge TPU target against a stub runtime: a real TFLite external delegate built
from tests/edgetpu_stub/stub_delegate.c with gcc, loaded through the same
``load_delegate`` path as libedgetpu.so.1. It claims no node, so models run on the CPU."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest

from pytest_edgeopt.targets.base import Device, LatencySettings, Target, TargetUnavailable
from pytest_edgeopt.targets.edgetpu.compat import EdgeTpuIncompatible
from pytest_edgeopt.targets.edgetpu.target import NO_DEVICE, EdgeTpuTarget, discover_edgetpu, parse_device
from pytest_edgeopt.tensors import ModelIO, from_model_output, to_model_input

STUB_DIR = Path(__file__).parent / "edgetpu_stub"
QUICK = LatencySettings(warmup=2, min_samples=20, min_time_s=0.01, max_time_s=2.0)


from edgetpu_helpers import load_edgetpu_stub  # noqa: E402

fake = load_edgetpu_stub("fake_edgetpu_compiler")


@pytest.fixture(scope="session")
def variants(tiny_cnn_variants: dict[str, Path]) -> dict[str, Path]:
    return tiny_cnn_variants


@pytest.fixture
def record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """File the stub writes its delegate options to."""
    path = tmp_path / "options.txt"
    monkeypatch.setenv("EDGETPU_STUB_RECORD", str(path))
    monkeypatch.delenv("EDGETPU_STUB_FAIL", raising=False)
    return path


@pytest.fixture
def compiler(fake_compiler: Path) -> Path:
    return fake_compiler


def compile_calls(tmp_path: Path) -> int:
    f = tmp_path / "calls.jsonl"
    return sum(1 for line in f.read_text().splitlines() if line != '["--version"]') if f.exists() else 0


# --- device strings and discovery -------------------------------------------------------------


@pytest.mark.parametrize("spec", ["usb", "usb:0", "usb:12", "pci", "pci:1", ":0", " usb:1 "])
def test_valid_device_strings(spec: str) -> None:
    assert parse_device(spec) == spec.strip()


@pytest.mark.parametrize("spec", ["", "usb0", "usb:", "usb:x", "pcie:0", "tpu", ":", "usb:0:1", "USB:0"])
def test_invalid_device_strings(spec: str) -> None:
    with pytest.raises(ValueError, match="expected usb, usb:N, pci, pci:N or :N"):
        parse_device(spec)


def test_explicit_devices_are_used_as_given() -> None:
    d = discover_edgetpu(["usb:1", "pci", "usb:1"], library="libedgetpu-missing.so.1")
    assert [x.id for x in d.devices] == ["usb:1", "pci"]
    assert d.missing is None
    assert d.devices[0] == Device(kind="edgetpu", id="usb:1", label="usb:1", details={"source": "user"})
    with pytest.raises(ValueError, match="invalid Edge TPU device 'tpu0'"):
        discover_edgetpu(["usb", "tpu0"])


def test_discovery_without_runtime() -> None:
    d = discover_edgetpu(library="libedgetpu-missing.so.1")
    assert d.devices == ()
    assert d.missing is not None
    assert d.missing.startswith("Edge TPU runtime libedgetpu-missing.so.1 not found")
    assert "packages.cloud.google.com/apt coral-edgetpu-stable main" in d.missing
    assert "libedgetpu1-std" in d.missing


def _usb(root: Path, name: str, vendor: str, product: str) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "idVendor").write_text(vendor + "\n")
    (root / name / "idProduct").write_text(product + "\n")


def test_discovery_reads_sysfs_and_dev(stub_runtime: Path, tmp_path: Path) -> None:
    usb, dev = tmp_path / "usb", tmp_path / "dev"
    _usb(usb, "1-1", "1a6e", "089a")  # accelerator before its firmware is loaded
    _usb(usb, "2-1", "18d1", "9302")  # ... and after
    _usb(usb, "3-1", "046d", "c52b")  # a mouse
    dev.mkdir()
    (dev / "apex_0").touch()
    d = discover_edgetpu(library=str(stub_runtime), usb_root=usb, dev_root=dev)
    assert d.missing is None
    assert [x.id for x in d.devices] == ["pci:0", "usb:0", "usb:1"]
    assert d.devices[1].details["usb_id"] == "1a6e:089a"
    assert d.devices[2].details["path"] == str(usb / "2-1")


def test_discovery_with_runtime_but_no_device(stub_runtime: Path, tmp_path: Path) -> None:
    d = discover_edgetpu(library=str(stub_runtime), usb_root=tmp_path / "usb", dev_root=tmp_path)
    assert d.devices == () and d.missing == NO_DEVICE


# --- running through the stub runtime ---------------------------------------------------------


def target(stub_runtime: Path, compiler: Path | None, tmp_path: Path, device: str = "usb:1") -> EdgeTpuTarget:
    return EdgeTpuTarget(device, library=str(stub_runtime), compiler=compiler, cache_dir=tmp_path / "cache")


def test_latency_through_the_delegate(
    stub_runtime: Path, compiler: Path, record: Path, variants: dict[str, Path], tmp_path: Path
) -> None:
    t = target(stub_runtime, compiler, tmp_path)
    assert isinstance(t, Target)
    res = t.latency(variants["int8_full"], QUICK)
    assert record.read_text() == "device=usb:1\n"  # the device string reached the runtime
    assert res.stats.count >= QUICK.min_samples
    assert res.first_inference_ms is not None and res.first_inference_ms > 0
    assert res.init_ms is not None and res.init_ms > 0
    assert res.extras["delegate"] == str(stub_runtime)
    assert res.extras["edgetpu_analysis"]["edgetpu_op_fraction"] == 1.0
    assert res.extras["edgetpu_analysis"]["summary"] == "all 6 ops map to the Edge TPU"
    compile_log = res.extras["edgetpu_compile"]
    assert compile_log["total_ops"] == 6 and compile_log["edgetpu_ops"] == 6
    assert compile_calls(tmp_path) == 1
    t.latency(variants["int8_full"], QUICK)
    assert compile_calls(tmp_path) == 1  # compiled once


def test_predict_matches_the_plain_interpreter(
    stub_runtime: Path, compiler: Path, record: Path, variants: dict[str, Path], tmp_path: Path
) -> None:
    from ai_edge_litert.interpreter import Interpreter

    x = np.random.default_rng(1).random((7, 8, 8, 1), dtype=np.float32)
    got = target(stub_runtime, compiler, tmp_path, device="pci:0").predict(variants["int8_full"], x)

    interp = Interpreter(model_path=str(variants["int8_full"]))
    interp.allocate_tensors()
    io = ModelIO.of_interpreter(interp)
    want = []
    for i in range(len(x)):
        interp.set_tensor(io.inputs[0].index, to_model_input(x[i : i + 1], io.inputs[0]))
        interp.invoke()
        want.append(from_model_output(interp.get_tensor(io.outputs[0].index), io.outputs[0]))
    assert len(got) == 1 and got[0].shape == (7, 10)
    np.testing.assert_array_equal(got[0], np.concatenate(want))
    assert record.read_text() == "device=pci:0\n"


def test_runtime_absent_is_unavailable_and_quiet(
    capfd: pytest.CaptureFixture[str], compiler: Path, variants: dict[str, Path], tmp_path: Path
) -> None:
    t = EdgeTpuTarget("usb", library="libedgetpu-missing.so.1", compiler=compiler, cache_dir=tmp_path)
    with pytest.raises(TargetUnavailable, match="Edge TPU runtime libedgetpu-missing.so.1 not found"):
        t.latency(variants["int8_full"], QUICK)
    gc.collect()
    assert "Exception ignored" not in capfd.readouterr().err


def test_device_that_does_not_open_is_unavailable_and_quiet(
    capfd: pytest.CaptureFixture[str],
    stub_runtime: Path,
    compiler: Path,
    record: Path,
    variants: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EDGETPU_STUB_FAIL", "Failed to open device usb:3")
    t = target(stub_runtime, compiler, tmp_path, device="usb:3")
    with pytest.raises(TargetUnavailable, match="Edge TPU 'usb:3' could not be opened .*Failed to open device usb:3"):
        t.predict(variants["int8_full"], np.zeros((1, 8, 8, 1), np.float32))
    gc.collect()
    assert "Exception ignored" not in capfd.readouterr().err


def test_incompatible_variant_is_reported_with_reasons(
    stub_runtime: Path, compiler: Path, record: Path, variants: dict[str, Path], tmp_path: Path
) -> None:
    t = target(stub_runtime, compiler, tmp_path)
    with pytest.raises(EdgeTpuIncompatible) as info:
        t.latency(variants["fp32"], QUICK)
    assert "input tensor 'serving_default_x:0' is float32" in info.value.reasons
    assert compile_calls(tmp_path) == 0 and not record.exists()


def test_missing_compiler_is_unavailable(
    stub_runtime: Path, variants: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(TargetUnavailable, match="edgetpu_compiler not found on PATH.*--edgeopt-edgetpu-compiler"):
        target(stub_runtime, None, tmp_path).latency(variants["int8_full"], QUICK)
    with pytest.raises(TargetUnavailable, match="is not an executable"):
        target(stub_runtime, tmp_path / "no-compiler", tmp_path).latency(variants["int8_full"], QUICK)
