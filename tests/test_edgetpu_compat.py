"""Edge TPU compatibility analysis on real converted variants and handwritten flatbuffers."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import flatbuffers
import numpy as np
import pytest

from pytest_edgeopt.targets.base import TargetUnavailable
from pytest_edgeopt.targets.edgetpu.compat import (
    STATUS_DATA_TYPE,
    STATUS_LIMITATION,
    STATUS_MAPPED,
    STATUS_NOT_SUPPORTED,
    STATUS_RANK,
    STATUS_SUBGRAPH,
    EdgeTpuIncompatible,
    analyze,
    edgetpu_op_fraction,
)

STUB_DIR = Path(__file__).parent / "edgetpu_stub"


def _tiny_cnn() -> Any:
    spec = importlib.util.spec_from_file_location("edgetpu_stub_tiny_cnn", STUB_DIR / "tiny_cnn.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def variants(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny CNN's converted variants (built once in a tensorflow subprocess, then
    cached in pytest's cache directory)."""
    cache = getattr(request.config, "cache", None)
    root = cache.mkdir("edgeopt-edgetpu-models") if cache is not None else tmp_path_factory.getbasetemp() / "models"
    return _tiny_cnn().ensure_models(Path(root))


# --- real converted variants ----------------------------------------------------------------


def test_int8_full_maps_completely(variants: dict[str, Path]) -> None:
    r = analyze(variants["int8_full"])
    assert [o.op for o in r.ops] == ["CONV_2D", "MAX_POOL_2D", "RESHAPE", "FULLY_CONNECTED", "FULLY_CONNECTED", "SOFTMAX"]
    assert r.edgetpu_op_fraction == 1.0 and r.supported_op_fraction == 1.0
    assert r.fully_mapped and r.compilable and not r.reasons
    assert {o.status for o in r.ops} == {STATUS_MAPPED}
    assert r.summary == "all 6 ops map to the Edge TPU"
    # the converter's -1 batch signature is noted, not held against the model
    assert any("-1 batch" in n for n in r.notes)


@pytest.mark.parametrize("variant", ["fp32", "float16", "dynamic_range"])
def test_float_variants_are_refused_with_the_float_tensors_named(variants: dict[str, Path], variant: str) -> None:
    r = analyze(variants[variant])
    assert r.edgetpu_op_fraction == 0.0 and not r.compilable
    assert "input tensor 'serving_default_x:0' is float32" in r.reasons
    assert "no op can run on the Edge TPU" in r.summary
    conv = next(o for o in r.ops if o.op == "CONV_2D")
    assert conv.status == STATUS_DATA_TYPE and not conv.mappable


def test_float16_weights_go_through_dequantize(variants: dict[str, Path]) -> None:
    r = analyze(variants["float16"])
    deq = [o for o in r.ops if o.op == "DEQUANTIZE"]  # float16 weights -> float32, one per constant
    assert len(deq) == 4 and all(o.status == STATUS_NOT_SUPPORTED for o in deq)
    assert "quantize the whole model to int8" in deq[0].reasons[0]


def test_dynamic_range_names_its_int8_weights_as_fine_and_activations_as_float(variants: dict[str, Path]) -> None:
    r = analyze(variants["dynamic_range"])
    fc = next(o for o in r.ops if o.op == "FULLY_CONNECTED")
    assert any("is float32" in reason and reason.startswith("input tensor") for reason in fc.reasons)
    assert not any("sequential/dense/MatMul'" in reason for reason in fc.reasons)  # its int8 weights pass


def test_int16x8_is_refused_for_its_int16_activations(variants: dict[str, Path]) -> None:
    r = analyze(variants["int16x8"])
    assert not r.compilable
    conv = next(o for o in r.ops if o.op == "CONV_2D")
    assert any(reason.endswith("is int16") for reason in conv.reasons)
    assert conv.status == STATUS_DATA_TYPE


def test_float_io_int8_model_maps_between_quantize_and_dequantize(variants: dict[str, Path]) -> None:
    r = analyze(variants["int8_float_io"])
    assert [o.op for o in r.ops][0] == "QUANTIZE" and r.ops[-1].op == "DEQUANTIZE"
    assert [o.on_edgetpu for o in r.ops] == [False] + [True] * 6 + [False]
    assert r.edgetpu_op_fraction == pytest.approx(6 / 8)
    assert r.compilable and not r.fully_mapped
    assert "op #0 QUANTIZE ahead of them" in r.summary


def test_unsupported_op_in_the_middle_sends_the_rest_to_the_cpu(variants: dict[str, Path]) -> None:
    r = analyze(variants["leaky_int8"])
    assert [o.op for o in r.ops][:2] == ["CONV_2D", "LEAKY_RELU"]
    assert r.supported_op_fraction == pytest.approx(6 / 7)  # every op but LEAKY_RELU could map alone
    assert r.edgetpu_op_fraction == pytest.approx(1 / 7)  # only the CONV_2D before it does
    assert r.ops[1].status == STATUS_NOT_SUPPORTED
    assert r.ops[1].reasons == ("LEAKY_RELU is not supported by the Edge TPU",)
    assert all(o.status == STATUS_SUBGRAPH and o.mappable for o in r.ops[2:])
    assert r.cut is r.ops[1]
    assert "op #1 LEAKY_RELU cannot map, so it and the 5 op(s) after it run on the CPU" in r.summary


def test_shape_computed_at_run_time_is_flagged(variants: dict[str, Path]) -> None:
    r = analyze(variants["dyn_reshape_int8"])
    shape_op = next(o for o in r.ops if o.op == "SHAPE")
    assert "fixed batch size" in shape_op.reasons[0]
    assert r.cut is shape_op


def test_report_is_json_serialisable(variants: dict[str, Path]) -> None:
    d = json.loads(json.dumps(analyze(variants["leaky_int8"]).to_dict()))
    assert d["edgetpu_ops"] == 1 and d["total_ops"] == 7 and d["compilable"] is True
    assert d["ops"][1] == {
        "index": 1,
        "op": "LEAKY_RELU",
        "mappable": False,
        "on_edgetpu": False,
        "status": STATUS_NOT_SUPPORTED,
        "reasons": ["LEAKY_RELU is not supported by the Edge TPU"],
    }
    assert d["source"].startswith("https://coral.ai/docs/edgetpu/models-intro")


def test_fraction_helper_reads_paths_and_bytes(variants: dict[str, Path]) -> None:
    path = variants["leaky_int8"]
    assert edgetpu_op_fraction(path) == edgetpu_op_fraction(path.read_bytes()) == pytest.approx(1 / 7)
    assert edgetpu_op_fraction(str(variants["fp32"])) == 0.0


def test_incompatible_error_is_a_skip_with_reasons(variants: dict[str, Path]) -> None:
    err = EdgeTpuIncompatible(analyze(variants["fp32"]), "fp32.tflite")
    assert isinstance(err, TargetUnavailable)
    assert str(err).startswith("fp32.tflite: not compatible with the Edge TPU: no op can run")
    assert "input tensor 'serving_default_x:0' is float32" in err.reasons


def test_not_a_tflite_file(tmp_path: Path) -> None:
    p = tmp_path / "x.tflite"
    p.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="not a TensorFlow Lite flatbuffer"):
        analyze(p)


# --- handwritten flatbuffers ------------------------------------------------------------------


def _schema() -> Any:
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


class Flatbuffer:
    """A tiny TFLite model writer over the schema's object API."""

    def __init__(self) -> None:
        s = _schema()
        self.s = s
        self.model = s.ModelT()
        self.model.version = 3
        self.model.buffers = [s.BufferT()]
        self.model.operatorCodes = []
        self.sub = s.SubGraphT()
        self.sub.tensors, self.sub.operators, self.sub.inputs, self.sub.outputs = [], [], [], []
        self.model.subgraphs = [self.sub]

    def tensor(
        self,
        name: str,
        shape: list[int],
        dtype: str = "INT8",
        *,
        signature: list[int] | None = None,
        quantized: bool = True,
        data: np.ndarray | None = None,
    ) -> int:
        s = self.s
        t = s.TensorT()
        t.name, t.shape, t.type = name, list(shape), getattr(s.TensorType, dtype)
        t.shapeSignature = signature
        if quantized:
            q = s.QuantizationParametersT()
            q.scale, q.zeroPoint = [0.05], [0]
            t.quantization = q
        if data is not None:
            b = s.BufferT()
            b.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), dtype=np.uint8)
            self.model.buffers.append(b)
            t.buffer = len(self.model.buffers) - 1
        self.sub.tensors.append(t)
        return len(self.sub.tensors) - 1

    def op(self, name: str, inputs: list[int], outputs: list[int], options: Any = None, custom: str | None = None) -> None:
        s = self.s
        code = s.OperatorCodeT()
        code.builtinCode = getattr(s.BuiltinOperator, "CUSTOM" if custom else name)
        code.deprecatedBuiltinCode = min(code.builtinCode, 127)
        code.version = 1
        code.customCode = custom
        self.model.operatorCodes.append(code)
        op = s.OperatorT()
        op.opcodeIndex = len(self.model.operatorCodes) - 1
        op.inputs, op.outputs = inputs, outputs
        if options is not None:
            op.builtinOptionsType = getattr(s.BuiltinOptions, type(options).__name__[:-1])
            op.builtinOptions = options
        self.sub.operators.append(op)

    def build(self) -> bytes:
        b = flatbuffers.Builder(1024)
        b.Finish(self.model.Pack(b), file_identifier=b"TFL3")
        return bytes(b.Output())


def test_five_dimensional_reshape_is_a_rank_problem() -> None:
    fb = Flatbuffer()
    x = fb.tensor("x", [1, 16])
    shape = fb.tensor("new_shape", [5], "INT32", quantized=False, data=np.array([1, 2, 2, 2, 2], np.int32))
    y = fb.tensor("y5d", [1, 2, 2, 2, 2])
    fb.op("RESHAPE", [x, shape], [y])
    r = analyze(fb.build())
    (op,) = r.ops
    assert op.status == STATUS_RANK and not r.compilable
    assert op.reasons == ("output tensor 'y5d' has shape [1, 2, 2, 2, 2]: only the 3 innermost dimensions may be larger than 1",)


def test_four_dimensions_with_leading_one_are_fine_but_batch_two_is_not() -> None:
    for batch, ok in ((1, True), (2, False)):
        fb = Flatbuffer()
        x = fb.tensor("x", [batch, 4, 4, 8])
        y = fb.tensor("y", [batch, 4, 4, 8])
        fb.op("RELU", [x], [y])
        r = analyze(fb.build())
        assert r.fully_mapped is ok, r.summary


def test_dynamic_dimension_other_than_batch_is_reported() -> None:
    fb = Flatbuffer()
    x = fb.tensor("x", [1, 8, 8, 1], signature=[-1, -1, 8, 1])
    y = fb.tensor("y", [1, 8, 8, 1], signature=[-1, 8, 8, 1])
    fb.op("RELU", [x], [y])
    r = analyze(fb.build())
    assert r.ops[0].reasons == ("input tensor 'x' has a dynamic shape [-1, -1, 8, 1] (sizes must be constant)",)
    assert r.ops[0].status == STATUS_LIMITATION


def test_int8_without_quantization_and_int32_activations() -> None:
    fb = Flatbuffer()
    x = fb.tensor("raw", [1, 8], quantized=False)
    y = fb.tensor("ints", [1, 8], "INT32", quantized=False)
    fb.op("ADD", [x, x], [y])
    reasons = analyze(fb.build()).ops[0].reasons
    assert "input tensor 'raw' is int8 without quantization parameters" in reasons
    assert any(r.startswith("output tensor 'ints' is int32") for r in reasons)


def test_documented_limitations_are_checked() -> None:
    s = _schema()
    fb = Flatbuffer()
    a = fb.tensor("a", [1, 8, 8, 4])
    b = fb.tensor("b", [1, 4, 4, 4])
    pool = s.Pool2DOptionsT()
    pool.fusedActivationFunction = s.ActivationFunctionType.RELU
    fb.op("MAX_POOL_2D", [a], [b], pool)
    big = fb.tensor("logits", [1, 20000])
    probs = fb.tensor("probs", [1, 20000])
    fb.op("SOFTMAX", [big], [probs], s.SoftmaxOptionsT())
    begin = fb.tensor("begin", [4], "INT32", quantized=False, data=np.zeros(4, np.int32))
    end = fb.tensor("end", [4], "INT32", quantized=False, data=np.array([1, 8, 8, 4], np.int32))
    strides = fb.tensor("strides", [4], "INT32", quantized=False, data=np.array([1, 2, 2, 1], np.int32))
    sl = fb.tensor("sliced", [1, 4, 4, 4])
    fb.op("STRIDED_SLICE", [a, begin, end, strides], [sl], s.StridedSliceOptionsT())
    axes = fb.tensor("axes", [1], "INT32", quantized=False, data=np.array([0], np.int32))
    m = fb.tensor("mean", [1, 8, 8, 4])
    fb.op("MEAN", [a, axes], [m], s.ReducerOptionsT())
    r = analyze(fb.build())
    reasons = {o.op: o.reasons for o in r.ops}
    assert reasons["MAX_POOL_2D"] == ("MAX_POOL_2D has a fused RELU activation (no fused activation allowed)",)
    assert reasons["SOFTMAX"] == ("SOFTMAX input 'logits' has 20000 elements (max 16000)",)
    assert reasons["STRIDED_SLICE"] == ("STRIDED_SLICE strides are [1, 2, 2, 1] (all must be 1)",)
    assert reasons["MEAN"] == ("MEAN reduces over the batch dimension",)
    assert {o.status for o in r.ops} == {STATUS_LIMITATION}


def test_partition_keeps_leading_cpu_ops_and_cuts_at_the_next_unsupported_op() -> None:
    fb = Flatbuffer()
    t = [fb.tensor(f"t{i}", [1, 8]) for i in range(5)]
    fb.op("LEAKY_RELU", [t[0]], [t[1]])
    fb.op("RELU", [t[1]], [t[2]])
    fb.op("LEAKY_RELU", [t[2]], [t[3]])
    fb.op("RELU", [t[3]], [t[4]])
    r = analyze(fb.build())
    assert [o.on_edgetpu for o in r.ops] == [False, True, False, False]
    assert [o.status for o in r.ops] == [STATUS_NOT_SUPPORTED, STATUS_MAPPED, STATUS_NOT_SUPPORTED, STATUS_SUBGRAPH]
    assert r.supported_op_fraction == 0.5 and r.edgetpu_op_fraction == 0.25


def test_already_compiled_model_is_recognised() -> None:
    fb = Flatbuffer()
    x = fb.tensor("x", [1, 8, 8, 1], "UINT8")
    y = fb.tensor("y", [1, 10], "UINT8")
    fb.op("CUSTOM", [x], [y], custom="edgetpu-custom-op")
    r = analyze(fb.build())
    assert r.precompiled and r.fully_mapped
    assert r.summary == "compiled for the Edge TPU: all 1 ops run on it"
