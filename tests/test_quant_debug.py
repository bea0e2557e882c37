"""Why accuracy was lost: the per-layer quantization report and selective quantization.

Real conversions of two digits CNNs: the trained one, and ``fixtures.fragile``'s copy with one
layer (``outlier_dense``) given an output channel 200 times larger than the rest, which the
next layer ignores. Float is the same; int8 loses about 10 points of top-1, because that one
channel sets the per-tensor int8 scale of the layer's output. About 25 s warm on 2 cores, half
of it importing TensorFlow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fixtures.digits import digits_data, digits_model_path, representative_batches
from fixtures.fragile import OUTLIER_LAYER, fragile_model_path
from pytest_edgeopt.model import ModelUnderTest
from pytest_edgeopt.tensors import ModelIO, outputs_to_float, to_model_input
from pytest_edgeopt.variants.cache import key_of
from pytest_edgeopt.variants.quant_debug import (
    SUGGEST_ERROR,
    QuantDebugReport,
    QuantDebugUnsupported,
    layer_errors,
    unsupported_reason,
)
from pytest_edgeopt.variants.registry import (
    VARIANTS,
    BuildContext,
    VariantBuildError,
    check_options,
    recipe,
    resolve_options,
)


def mut_of(name: str, path: Path) -> ModelUnderTest:
    data = digits_data()
    return ModelUnderTest(name, str(path), representative_data=representative_batches(100),
                          eval_data=(data.x_eval, data.y_eval))


def build(mut: ModelUnderTest, variant: str, tmp_path: Path, fp32: bytes | None = None, **options: Any) -> bytes:
    """The variant's .tflite bytes, through its registered builder (as the plugin builds it)."""

    def baseline() -> bytes:
        return fp32 if fp32 is not None else build(mut, "fp32", tmp_path)

    ctx = BuildContext(mut=mut, spec=VARIANTS[variant], options=resolve_options(mut, options),
                       workdir=tmp_path, progress=lambda line: None, fp32=baseline)
    return VARIANTS[variant].build_function()(ctx)


def top1(model: bytes) -> float:
    """Top-1 on the 450 eval digits with the LiteRT interpreter (reference kernels)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    data = digits_data()
    it = Interpreter(model_content=model, num_threads=1,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    io = ModelIO.of_interpreter(it)
    it.resize_tensor_input(io.inputs[0].index, [len(data.x_eval), 8, 8, 1])
    it.allocate_tensors()
    it.set_tensor(io.inputs[0].index, to_model_input(data.x_eval, io.inputs[0]))
    it.invoke()
    out = outputs_to_float([it.get_tensor(io.outputs[0].index)], io.outputs)[0]
    return float(np.mean(out.argmax(axis=1) == data.y_eval))


@pytest.fixture(scope="module")
def fragile() -> ModelUnderTest:
    return mut_of("fragile", fragile_model_path())


@pytest.fixture(scope="module")
def fragile_report(fragile: ModelUnderTest) -> QuantDebugReport:
    return layer_errors(fragile, "int8", {})


@pytest.fixture(scope="module")
def fragile_fp32(fragile: ModelUnderTest, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return build(fragile, "fp32", tmp_path_factory.mktemp("fp32"))


# -- the fragile model ---------------------------------------------------------------------


def test_fragile_report_names_the_outlier_layer_first(fragile_report: QuantDebugReport) -> None:
    assert fragile_report.samples == 256 and fragile_report.method == "numeric_verify"
    worst, second = fragile_report.rows[:2]
    assert worst.layer == f"fragile/{OUTLIER_LAYER}" and worst.op == "FULLY_CONNECTED"
    assert worst.error > 0.5 and worst.lost_channels > worst.channels / 2
    assert second.error < worst.error / 4
    # TensorFlow's guide metric does not see a range problem: plain rounding, ~0.29.
    assert worst.rmse_over_scale < 0.5
    lines = fragile_report.message_lines(3)
    assert f"fragile/{OUTLIER_LAYER} (FULLY_CONNECTED): 0.9" in lines[1]
    assert lines[-1].strip().startswith("@pytest.mark.edgeopt_options(float_nodes=(")
    assert 0 < fragile_report.seconds  # measured (timing targets live in benchmarks/, not in tests)


def test_suggestion_keeps_the_outlier_tensor_out_of_int8(fragile_report: QuantDebugReport) -> None:
    # Its producer and its consumer: a float producer would be requantized for an int8 consumer.
    assert [n.split("/")[1] for n in fragile_report.suggestion] == [OUTLIER_LAYER, "probs"]
    assert fragile_report.rows[0].keep_float == fragile_report.suggestion
    # The report measured it: back to fp32 on the samples it used.
    assert fragile_report.fp32_metric - fragile_report.quantized_metric > 0.05
    assert fragile_report.suggested_metric >= fragile_report.fp32_metric - 0.01


def test_suggested_float_nodes_recover_int8_accuracy(fragile: ModelUnderTest, fragile_report: QuantDebugReport,
                                                     fragile_fp32: bytes, tmp_path: Path) -> None:
    fp32 = top1(fragile_fp32)
    int8 = top1(build(fragile, "int8", tmp_path, fragile_fp32))
    selective = build(fragile, "int8", tmp_path, fragile_fp32, float_nodes=fragile_report.suggestion)
    assert fp32 - int8 > 0.05, (fp32, int8)
    assert top1(selective) >= fp32 - 0.01, (fp32, int8, top1(selective))


def test_int8_full_with_float_nodes_keeps_int8_io_but_runs_them_in_float(
        fragile: ModelUnderTest, fragile_report: QuantDebugReport, fragile_fp32: bytes, tmp_path: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    model = build(fragile, "int8_full", tmp_path, fragile_fp32, float_nodes=fragile_report.suggestion)
    it = Interpreter(model_content=model)
    io = ModelIO.of_interpreter(it)
    assert io.inputs[0].dtype == np.int8 and io.outputs[0].dtype == np.int8
    ops = [op["op_name"] for op in it._get_ops_details()]
    assert "DEQUANTIZE" in ops  # not integer-only any more
    assert top1(model) >= top1(fragile_fp32) - 0.01


def test_int8_full_report_within_a_time_budget(fragile: ModelUnderTest, fragile_report: QuantDebugReport,
                                               fragile_fp32: bytes) -> None:
    # No time for more than the first chunk of samples (64): still enough to find the layer.
    report = layer_errors(fragile, "int8_full", {}, fp32=fragile_fp32, measure_suggestion=False, max_seconds=0)
    assert report.samples == 64 and report.suggested_metric is None
    assert report.rows[0].layer == f"fragile/{OUTLIER_LAYER}"
    assert report.suggestion == fragile_report.suggestion
    assert "no longer integer-only" in "\n".join(report.message_lines())


def test_report_of_a_variant_that_already_keeps_nodes_in_float(fragile: ModelUnderTest,
                                                               fragile_report: QuantDebugReport) -> None:
    report = layer_errors(fragile, "int8", {"float_nodes": fragile_report.suggestion}, measure_suggestion=False)
    assert report.float_nodes == fragile_report.suggestion
    assert not {r.node for r in report.rows} & set(fragile_report.suggestion)
    assert report.rows[0].error < SUGGEST_ERROR and report.suggestion == ()


def test_report_to_dict_has_every_row(fragile_report: QuantDebugReport) -> None:
    d = json.loads(json.dumps(fragile_report.to_dict()))
    assert len(d["rows"]) == len(fragile_report.rows) == 7  # conv1 pool conv2 flatten dense probs softmax
    assert d["suggestion"] == list(fragile_report.suggestion) and d["marker"] == fragile_report.marker
    row = d["rows"][0]
    assert {"node", "op", "error", "rmse_over_scale", "mean_squared_error", "scale", "zero_point",
            "max_abs_error", "num_elements", "keep_float"} <= set(row)
    assert row["num_elements"] == 65


def test_int16x8_compares_with_fp32_and_suggests_nothing(fragile: ModelUnderTest, fragile_fp32: bytes) -> None:
    report = layer_errors(fragile, "int16x8", {}, fp32=fragile_fp32)
    assert report.method == "direct" and report.suggestion == () and report.rows
    assert all(r.accumulated_error is not None for r in report.rows)
    assert "int16x8 cannot keep layers in float" in "\n".join(report.message_lines())
    # 16-bit activations hold the outlier channel and the others: nothing is lost.
    assert report.quantized_metric >= report.fp32_metric - 0.01


# -- a well-behaved model ----------------------------------------------------------------------


def test_normal_digits_model_has_no_dominant_layer() -> None:
    report = layer_errors(mut_of("digits", digits_model_path()), "int8", {})
    assert len(report.rows) == 7 and all(r.error < SUGGEST_ERROR for r in report.rows)
    assert report.suggestion == () and report.marker is None
    assert "no layer stands out" in "\n".join(report.message_lines())


# -- what does not apply -----------------------------------------------------------------------


@pytest.mark.parametrize("variant, words", [
    ("fp32", "float baseline"),
    ("dynamic_range", "weights only"),
    ("qat_int8", "fine-tuning"),
    ("aeq_static_a8w8", "AI Edge Quantizer"),
])
def test_unsupported_variants_say_why(fragile: ModelUnderTest, variant: str, words: str) -> None:
    reason = unsupported_reason(variant)
    assert reason and "int8, int8_full, int16x8 only" in reason and words in reason
    with pytest.raises(QuantDebugUnsupported, match=words):
        layer_errors(fragile, variant, {})


def test_unknown_float_node_is_a_build_error_listing_the_nodes(fragile: ModelUnderTest, fragile_fp32: bytes,
                                                               tmp_path: Path) -> None:
    with pytest.raises(VariantBuildError, match=r"float_nodes names 'outlier_dense'.*\n.*fragile/conv1/Relu"):
        build(fragile, "int8", tmp_path, fragile_fp32, float_nodes=("outlier_dense",))


def test_int8_step_of_other_variants_ignores_float_nodes(fragile: ModelUnderTest, fragile_fp32: bytes,
                                                        tmp_path: Path) -> None:
    # pruned_int8 calls convert(ctx, "int8") but has no float_nodes knob (not in its cache key).
    from pytest_edgeopt.variants.ptq import convert

    ctx = BuildContext(mut=fragile, spec=VARIANTS["pruned_int8"],
                       options=resolve_options(fragile, {"float_nodes": ("no such node",)}),
                       workdir=tmp_path, progress=lambda line: None,
                       fp32=lambda: fragile_fp32)
    assert convert(ctx, "int8")  # a float_nodes build would refuse the unknown node


# -- the knob --------------------------------------------------------------------------------


def test_float_nodes_is_in_the_recipe_only_when_set(fragile: ModelUnderTest) -> None:
    defaults = resolve_options(fragile)
    for name in ("int8", "int8_full"):
        # Exactly the recipe (so the cache key) variants had before the knob existed.
        assert recipe(VARIANTS[name], defaults) == {"variant": name, "family": "ptq",
                                                    "builder": VARIANTS[name].builder, "calibration_samples": 100}
        with_nodes = recipe(VARIANTS[name], resolve_options(fragile, {"float_nodes": ("b", "a", "b")}))
        assert with_nodes["float_nodes"] == ["a", "b"]
        assert key_of({"recipe": with_nodes}) != key_of({"recipe": recipe(VARIANTS[name], defaults)})
        assert with_nodes == recipe(VARIANTS[name], resolve_options(fragile, {"float_nodes": ["a", "b"]}))
    for name in ("int16x8", "pruned_int8", "aeq_static_a8w8"):
        assert recipe(VARIANTS[name], resolve_options(fragile, {"float_nodes": ("a",)})) == \
            recipe(VARIANTS[name], defaults)


@pytest.mark.parametrize("value", ["fragile/probs", [1], ("",), None])
def test_float_nodes_must_be_a_sequence_of_names(value: Any) -> None:
    with pytest.raises(ValueError, match="float_nodes must be a tuple or list of node names"):
        check_options({"float_nodes": value}, "edgeopt_options")
    check_options({"float_nodes": ("fragile/probs/MatMul;fragile/probs/BiasAdd",)}, "edgeopt_options")
    check_options({"float_nodes": []}, "edgeopt_options")


def test_fragile_fixture_cache_hit_imports_no_tensorflow() -> None:
    import subprocess
    import sys

    fragile_model_path()  # built (or found) here
    code = ("import sys\nfrom fixtures.fragile import fragile_model_path\nfragile_model_path()\n"
            "assert 'tensorflow' not in sys.modules and 'tf_keras' not in sys.modules, 'imported tensorflow'")
    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)
