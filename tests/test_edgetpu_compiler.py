"""edgetpu_compiler: log parsing (recorded formats), and running/caching against a
stand-in executable that takes the real flags and prints the real format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_edgeopt.targets.base import TargetError
from pytest_edgeopt.targets.edgetpu.compat import EdgeTpuIncompatible
from pytest_edgeopt.targets.edgetpu.compiler import (
    CompileCache,
    CompileLog,
    EdgeTpuCompileError,
    compile_model,
    compiler_version,
    find_compiler,
    parse_compiler_log,
    parse_size,
)

STUB_DIR = Path(__file__).parent / "edgetpu_stub"


from edgetpu_helpers import load_edgetpu_stub  # noqa: E402

fake = load_edgetpu_stub("fake_edgetpu_compiler")


@pytest.fixture(scope="session")
def variants(tiny_cnn_variants: dict[str, Path]) -> dict[str, Path]:
    return tiny_cnn_variants


# --- parsing: texts in the format of real compiler runs ------------------------------------

FULLY_MAPPED = """\
Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.

Model compiled successfully in 1524 ms.

Input model: mobilenet_v2_1.0_224_quant.tflite
Input size: 4.24MiB
Output model: mobilenet_v2_1.0_224_quant_edgetpu.tflite
Output size: 5.57MiB
On-chip memory used for caching model parameters: 4.21MiB
On-chip memory remaining for caching model parameters: 3.19MiB
Off-chip memory used for streaming uncached model parameters: 0.00B
Number of Edge TPU subgraphs: 1
Total number of operations: 65
Operation log: mobilenet_v2_1.0_224_quant_edgetpu.log

Operator                       Count      Status

ADD                            10         Mapped to Edge TPU
AVERAGE_POOL_2D                1          Mapped to Edge TPU
CONV_2D                        36         Mapped to Edge TPU
DEPTHWISE_CONV_2D              17         Mapped to Edge TPU
RESHAPE                        1          Mapped to Edge TPU
Compilation child process completed within timeout period.
Compilation succeeded!
"""

# yolov3-tiny, compiler 15 (as published in a user's README)
PARTIAL = """\
Edge TPU Compiler version 15.0.340273435

Model compiled successfully in 577 ms.

Input model: /home/yolo/yolov3-tiny_int8.tflite
Input size: 8.58MiB
Output model: /home/yolo/yolov3-tiny_int8_edgetpu.tflite
Output size: 8.70MiB
On-chip memory used for caching model parameters: 3.00KiB
On-chip memory remaining for caching model parameters: 7.67MiB
Off-chip memory used for streaming uncached model parameters: 0.00B
Number of Edge TPU subgraphs: 1
Total number of operations: 36
Operation log: /home/yolo/yolov3-tiny_int8_edgetpu.log

Model successfully compiled but not all operations are supported by the Edge TPU. A percentage of the model will instead run on the CPU, which is slower. If possible, consider updating your model to use only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs.
Number of operations that will run on Edge TPU: 2
Number of operations that will run on CPU: 34

Operator                       Count      Status

MAX_POOL_2D                    6          More than one subgraph is not supported
QUANTIZE                       2          Operation is otherwise supported, but not mapped due to some unspecified limitation
QUANTIZE                       1          Mapped to Edge TPU
QUANTIZE                       1          More than one subgraph is not supported
CONV_2D                        1          Mapped to Edge TPU
CONV_2D                        12         More than one subgraph is not supported
RESIZE_NEAREST_NEIGHBOR        1          Operation version not supported
LEAKY_RELU                     11         Operation not supported
CONCATENATION                  1          More than one subgraph is not supported
"""

# compiler 16 without -s: only the unmapped rows, then a pointer to the .log
TRUNCATED_TABLE = """\
Input model: FRC_model.tflite
Input size: 8.05MiB
Output model: FRC_model_edgetpu.tflite
Output size: 14.17MiB
On-chip memory used for caching model parameters: 7.14MiB
On-chip memory remaining for caching model parameters: 1.75KiB
Off-chip memory used for streaming uncached model parameters: 6.63MiB
Number of Edge TPU subgraphs: 1
Total number of operations: 141
Operation log: FRC_model_edgetpu.log

Model successfully compiled but not all operations are supported by the Edge TPU. A percentage of the model will instead run on the CPU, which is slower. If possible, consider updating your model to use only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs.
Number of operations that will run on Edge TPU: 138
Number of operations that will run on CPU: 3

Operator                       Count      Status

RESHAPE                        1          Operation is otherwise supported, but not mapped due to some unspecified limitation
CONCATENATION                  1          Operation is otherwise supported, but not mapped due to some unspecified limitation
QUANTIZE                       1          Operation is otherwise supported, but not mapped due to some unspecified limitation
... All other operators were mapped successfully. See FRC_model_edgetpu.log.
"""

# the .log file the compiler writes next to the model
LOG_FILE = """\
Edge TPU Compiler version 15.0.340273435
Input: mnist4.tflite
Output: mnist4_edgetpu.tflite

Operator                       Count      Status

RESHAPE                        1          Mapped to Edge TPU
CONV_2D                        2          Mapped to Edge TPU
SOFTMAX                        1          Mapped to Edge TPU
QUANTIZE                       1          Operation is otherwise supported, but not mapped due to some unspecified limitation
DEQUANTIZE                     1          Operation is working on an unsupported data type
MAX_POOL_2D                    2          Mapped to Edge TPU
FULLY_CONNECTED                2          Mapped to Edge TPU
"""

DYNAMIC_FAILURE = """\
Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.
ERROR: Attempting to use a delegate that only supports static-sized tensors with a graph that has dynamic-sized tensors.
Compilation failed: Model failed in Tflite interpreter. Please ensure model can be loaded/run in Tflite interpreter.
Compilation child process completed within timeout period.
Compilation failed!
"""


def test_fully_mapped_log() -> None:
    log = parse_compiler_log(FULLY_MAPPED)
    assert log.compiler_version == "16.0.384591198"
    assert log.compile_ms == 1524.0
    assert log.input_model == "mobilenet_v2_1.0_224_quant.tflite"
    assert log.output_model == "mobilenet_v2_1.0_224_quant_edgetpu.tflite"
    assert log.input_size_bytes == round(4.24 * 2**20)
    assert log.output_size_bytes == round(5.57 * 2**20)
    assert log.on_chip_memory_used_bytes == round(4.21 * 2**20)
    assert log.on_chip_memory_remaining_bytes == round(3.19 * 2**20)
    assert log.off_chip_memory_used_bytes == 0
    assert (log.edgetpu_subgraphs, log.total_ops, log.edgetpu_ops, log.cpu_ops) == (1, 65, 65, 0)
    assert log.edgetpu_op_fraction == 1.0
    assert len(log.operators) == 5 and all(o.mapped for o in log.operators)
    assert log.succeeded and not log.partially_mapped and not log.errors


def test_partially_mapped_log_with_its_table() -> None:
    log = parse_compiler_log(PARTIAL)
    assert log.partially_mapped and log.succeeded
    assert (log.total_ops, log.edgetpu_ops, log.cpu_ops) == (36, 2, 34)
    assert log.on_chip_memory_used_bytes == 3072
    assert len(log.operators) == 9
    assert sum(o.count for o in log.operators) == 36
    assert {o.status for o in log.unmapped} == {
        "More than one subgraph is not supported",
        "Operation is otherwise supported, but not mapped due to some unspecified limitation",
        "Operation version not supported",
        "Operation not supported",
    }
    assert log.operators[7].op == "LEAKY_RELU" and log.operators[7].count == 11


def test_truncated_table_keeps_the_explicit_counts() -> None:
    log = parse_compiler_log(TRUNCATED_TABLE)
    assert (log.total_ops, log.edgetpu_ops, log.cpu_ops) == (141, 138, 3)
    assert [o.op for o in log.operators] == ["RESHAPE", "CONCATENATION", "QUANTIZE"]
    assert log.on_chip_memory_remaining_bytes == round(1.75 * 1024)
    assert log.off_chip_memory_used_bytes == round(6.63 * 2**20)


def test_operation_log_file() -> None:
    log = parse_compiler_log(LOG_FILE)
    assert log.input_model == "mnist4.tflite" and log.output_model == "mnist4_edgetpu.tflite"
    assert (log.edgetpu_ops, log.cpu_ops) == (8, 2)
    assert log.compile_ms is None and log.input_size_bytes is None


@pytest.mark.parametrize(
    ("text", "first_error"),
    [
        (DYNAMIC_FAILURE, "ERROR: Attempting to use a delegate that only supports static-sized tensors"),
        ("Edge TPU Compiler version 16.0.384591198\nInternal compiler error. Aborting!\n", "Internal compiler error. Aborting!"),
        ("Edge TPU Compiler version 2.0.267685300\nModel not quantized\n", "Model not quantized"),
    ],
)
def test_failure_logs(text: str, first_error: str) -> None:
    log = parse_compiler_log(text)
    assert not log.succeeded
    assert log.errors[0].startswith(first_error)
    assert log.total_ops is None and log.edgetpu_op_fraction is None


@pytest.mark.parametrize(
    ("text", "size"),
    [("4.24MiB", 4445962), ("0.00B", 0), ("512.00KiB", 524288), ("1.50GiB", 1610612736), ("3.00KiB", 3072)],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_bad_size() -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size("lots")


def test_log_round_trips_through_json() -> None:
    log = parse_compiler_log(PARTIAL)
    assert CompileLog.from_dict(json.loads(json.dumps(log.to_dict()))) == log


# --- running the stand-in --------------------------------------------------------------------


@pytest.fixture
def compiler(fake_compiler: Path) -> Path:
    return fake_compiler


def calls(tmp_path: Path) -> list[list[str]]:
    f = tmp_path / "calls.jsonl"
    return [json.loads(line) for line in f.read_text().splitlines()] if f.exists() else []


def test_find_compiler_on_path_and_by_path(compiler: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(compiler.parent))
    assert find_compiler() == compiler.resolve()
    assert find_compiler(str(compiler)) == compiler.resolve()
    assert find_compiler(tmp_path / "nowhere" / "edgetpu_compiler") is None
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert find_compiler() is None


def test_compiler_version(compiler: Path) -> None:
    assert compiler_version(compiler) == "16.0.384591198"


def test_compile_model_runs_the_real_flags(compiler: Path, variants: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = compile_model(compiler, variants["int8_full"], out)
    assert calls(tmp_path) == [["-s", "-o", str(out), str(variants["int8_full"])]]
    assert res.model == out / "int8_full_edgetpu.tflite"
    assert res.model.read_bytes().endswith(fake.MARKER)
    assert (out / "int8_full_edgetpu.log").exists()
    assert res.log.succeeded and res.log.compiler_version == "16.0.384591198"
    assert (res.log.total_ops, res.log.edgetpu_ops, res.log.cpu_ops) == (6, 6, 0)
    assert res.log.input_model == str(variants["int8_full"])


def test_extra_flags_are_passed_before_the_model(compiler: Path, variants: dict[str, Path], tmp_path: Path) -> None:
    compile_model(compiler, variants["leaky_int8"], tmp_path / "o", flags=("-m", "13"))
    (argv,) = calls(tmp_path)
    assert argv == ["-s", "-o", str(tmp_path / "o"), "-m", "13", str(variants["leaky_int8"])]


def test_partially_mapped_compile(compiler: Path, variants: dict[str, Path], tmp_path: Path) -> None:
    res = compile_model(compiler, variants["leaky_int8"], tmp_path / "out")
    assert res.log.partially_mapped
    assert (res.log.edgetpu_ops, res.log.cpu_ops) == (1, 6)
    assert any(o.op == "LEAKY_RELU" and o.status == "Operation not supported" for o in res.log.operators)


def test_compile_failure_quotes_the_log(
    compiler: Path, variants: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_EDGETPU_FAIL", "internal")
    with pytest.raises(EdgeTpuCompileError, match="Internal compiler error. Aborting!") as info:
        compile_model(compiler, variants["int8_full"], tmp_path / "out")
    assert isinstance(info.value, TargetError)
    assert info.value.returncode == 1
    assert "Compilation failed!" in str(info.value)


def test_cache_compiles_once(compiler: Path, variants: dict[str, Path], tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    first = CompileCache(cache_dir, compiler).compile(variants["int8_full"])
    n = len(calls(tmp_path))
    assert not first.from_cache and n == 2  # --version, then the compile
    second = CompileCache(cache_dir, compiler).compile(variants["int8_full"])  # a fresh process, say
    assert second.from_cache and second.model == first.model
    assert second.log == first.log
    assert [c for c in calls(tmp_path)[n:] if c != ["--version"]] == []  # not compiled again


def test_cache_key_follows_compiler_version_and_flags(
    compiler: Path, variants: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_dir = tmp_path / "cache"
    model = variants["int8_full"]
    a = CompileCache(cache_dir, compiler).compile(model)
    monkeypatch.setenv("FAKE_EDGETPU_VERSION", "16.1.000000001")
    b = CompileCache(cache_dir, compiler).compile(model)
    c = CompileCache(cache_dir, compiler, flags=("-m", "13")).compile(model)
    assert not b.from_cache and not c.from_cache
    assert len({a.model.parent, b.model.parent, c.model.parent}) == 3
    assert b.compiler_version == "16.1.000000001"
    assert len([argv for argv in calls(tmp_path) if argv != ["--version"]]) == 3


def test_corrupt_entry_is_rebuilt(compiler: Path, variants: dict[str, Path], tmp_path: Path) -> None:
    cache = CompileCache(tmp_path / "cache", compiler)
    first = cache.compile(variants["int8_full"])
    first.model.write_bytes(b"truncated")
    again = cache.compile(variants["int8_full"])
    assert not again.from_cache
    assert again.model.read_bytes().endswith(fake.MARKER)
    assert len([argv for argv in calls(tmp_path) if argv != ["--version"]]) == 2


@pytest.mark.parametrize("variant", ["fp32", "float16", "dynamic_range", "int16x8"])
def test_models_without_edgetpu_ops_are_not_sent(
    compiler: Path, variants: dict[str, Path], tmp_path: Path, variant: str
) -> None:
    with pytest.raises(EdgeTpuIncompatible, match="not compatible with the Edge TPU"):
        CompileCache(tmp_path / "cache", compiler).compile(variants[variant])
    assert calls(tmp_path) == []
