"""parse_benchmark_output on the formats benchmark_model prints (new, old, GPU, odd)."""

from __future__ import annotations

import math

import pytest

from pytest_edgeopt.targets.android.benchmark_output import (
    BenchmarkOutputError,
    Delegation,
    output_tail,
    parse_benchmark_output,
)

# A current console build on an arm64 phone, GPU delegate, peak memory monitoring on.
NEW_GPU = """\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Min num runs: [50]
INFO: Graph: [/data/local/tmp/edgeopt-1a2b3c4d/m-0f1e2d3c.tflite]
INFO: Use gpu: [1]
INFO: Report the peak memory footprint: [1]
INFO: Loaded model /data/local/tmp/edgeopt-1a2b3c4d/m-0f1e2d3c.tflite
INFO: Initialized TensorFlow Lite runtime.
INFO: Created TensorFlow Lite delegate for GPU.
INFO: GPU delegate created.
INFO: Initialized OpenCL-based API.
INFO: Created 1 GPU delegate kernels.
INFO: Explicitly applied GPU delegate, and the model graph will be completely executed by the delegate.
INFO: The input model file size (MB): 16.9008
INFO: Initialized session in 1190.45ms.
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=31 first=40111 curr=15671 min=15215 max=40111 avg=16321.6 std=4411 p5=15215 median=15581 p95=16873

INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=65 first=15510 curr=15377 min=14953 max=17020 avg=15448.9 std=384 p5=15026 median=15377 p95=16247

INFO: Inference timings in us: Init: 1190453, First inference: 40111, Warmup (avg): 16321.6, Inference (avg): 15448.9
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=168.734 overall=171.109
INFO: Overall peak memory footprint (MB) via periodic monitoring: 181.551
INFO: Memory status at the end of exeution:
INFO: - VmRSS              : 185 MB
INFO: + RssAnnon           : 160 MB
INFO: + RssFile + RssShmem : 25 MB
"""

# The example of FACTS.md: a slow model, scientific notation for the averages.
SCIENTIFIC = """\
INFO: The input model file size (MB): 4.27694
INFO: Initialized session in 5.579ms.
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=1 curr=1357602 p5=1357602 median=1357602 p95=1357602

INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=50 first=1249964 curr=1240143 min=1238588 max=1252566 avg=1.24027e+06 std=2565 p5=1238753 median=1239807 p95=1247415

INFO: Inference timings in us: Init: 5579, First inference: 1357602, Warmup (avg): 1.3576e+06, Inference (avg): 1.24027e+06
"""

# An old build (TF 2.3 era): no INFO prefix, no percentiles, "Peak memory footprint",
# "Initialized session in Xms" without the period.
OLD = """\
STARTING!
Min num runs: [50]
Min runs duration (seconds): [1]
Max runs duration (seconds): [150]
Inter-run delay (seconds): [-1]
Num threads: [4]
Benchmark name: []
Output prefix: []
Min warmup runs: [1]
Min warmup runs duration (seconds): [0.5]
Graph: [mobilenet_v1_1.0_224.tflite]
Input layers: []
Input shapes: []
Use nnapi : [0]
Use legacy nnapi : [0]
Use gpu : [0]
Allow fp16 : [0]
Require full delegation : [0]
Enable op profiling: [0]
Max profiling buffer entries: [1024]
Loaded model mobilenet_v1_1.0_224.tflite
resolved reporter
INFO: Initialized TensorFlow Lite runtime.
The input model file size (MB): 16.9008
Initialized session in 2.891ms
[Init Phase] - Memory usage: max resident set size = 20.6875 MB, total malloc-ed size = 0.0235138 MB
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=4 first=139547 curr=121913 min=121913 max=139547 avg=127167 std=7152

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=50 first=121865 curr=122371 min=120912 max=131190 avg=123017 std=2017

Inference timings in us: Init: 2891, First inference: 139547, Warmup (avg): 127167, Inference (avg): 123017
Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
Peak memory footprint (MB): init=2.02734 overall=28.2734
"""

PARTIAL_GPU = """\
INFO: Created TensorFlow Lite delegate for GPU.
INFO: Replacing 5 out of 7 node(s) with delegate (TfLiteGpuDelegateV2) node, yielding 2 partitions for the whole graph.
INFO: Explicitly applied GPU delegate, and the model graph will be partially executed by the delegate w/ 2 delegate kernels.
INFO: The input model file size (MB): 0.052192
INFO: Initialized session in 88.2ms.
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=412 first=2210 curr=1180 min=1102 max=2210 avg=1212.9 std=88 p5=1120 median=1199 p95=1330

INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=845 first=1190 curr=1175 min=1099 max=1510 avg=1181.2 std=41 p5=1121 median=1177 p95=1250

INFO: Inference timings in us: Init: 88200, First inference: 2210, Warmup (avg): 1212.9, Inference (avg): 1181.2
"""

NONE_GPU = """\
INFO: Created TensorFlow Lite delegate for GPU.
ERROR: Following operations are not supported by GPU delegate:
ERROR: CUSTOM MyOp: Operation is not supported.
ERROR: No operations will run on the GPU, and all 3 operations will run on the CPU.
INFO: Though GPU delegate is explicitly applied, the model graph will not be executed by the delegate.
INFO: The input model file size (MB): 0.001
INFO: Initialized session in 3ms.
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=9000 curr=55(all same) p5=55 median=55 p95=55

INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=18000 curr=55(all same) p5=55 median=55 p95=55

INFO: Inference timings in us: Init: 3000, First inference: 55, Warmup (avg): 55, Inference (avg): 55
"""

XNNPACK_CPU = """\
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
INFO: Explicitly applied XNNPACK delegate, and the model graph will be completely executed by the delegate.
INFO: The input model file size (MB): 0.17562
INFO: Initialized session in 4.12ms.
INFO: Running benchmark for at least 10 iterations and at least 0.5 seconds but terminate if exceeding 10 seconds.
INFO: count=9102 first=161 curr=52 min=50 max=161 avg=54.4082 std=6 p5=51 median=53 p95=61

INFO: Running benchmark for at least 100 iterations and at least 0.2 seconds but terminate if exceeding 10 seconds.
INFO: count=3711 first=55 curr=53 min=50 max=99 avg=53.5 std=3 p5=51 median=53 p95=58

INFO: Inference timings in us: Init: 4120, First inference: 161, Warmup (avg): 54.4082, Inference (avg): 53.5
"""


def test_new_format_with_gpu_and_peak_memory() -> None:
    out = parse_benchmark_output(NEW_GPU)
    assert out.model_size_mb == pytest.approx(16.9008)
    assert out.init_ms == pytest.approx(1190.45)
    assert out.warmup is not None and out.warmup.count == 31 and out.warmup.first_us == 40111
    inf = out.inference
    assert (inf.count, inf.first_us, inf.curr_us, inf.min_us, inf.max_us) == (65, 15510, 15377, 14953, 17020)
    assert inf.avg_us == pytest.approx(15448.9) and inf.std_us == 384
    assert (inf.p5_us, inf.median_us, inf.p95_us) == (15026, 15377, 16247)
    assert not inf.all_same
    assert out.init_us == 1190453 and out.first_inference_us == 40111
    assert out.warmup_avg_us == pytest.approx(16321.6) and out.inference_avg_us == pytest.approx(15448.9)
    assert (out.memory_init_mb, out.memory_overall_mb) == (pytest.approx(168.734), pytest.approx(171.109))
    assert out.peak_memory_mb == pytest.approx(181.551)
    assert out.delegation == Delegation.FULL and out.delegate_kernels == 1
    assert out.delegate("gpu") is not None and out.delegate("XNNPACK") is None


def test_scientific_notation_and_single_warmup_run() -> None:
    out = parse_benchmark_output(SCIENTIFIC)
    assert out.inference.avg_us == pytest.approx(1.24027e6)
    assert out.warmup_avg_us == pytest.approx(1.3576e6) and out.inference_avg_us == pytest.approx(1.24027e6)
    # count=1 prints only curr: every statistic is that one value.
    w = out.warmup
    assert w is not None and w.count == 1 and w.all_same
    assert w.first_us == w.min_us == w.max_us == w.avg_us == 1357602 and w.std_us == 0
    assert out.memory_init_mb is None and out.peak_memory_mb is None and out.delegation is None


def test_old_build_without_prefix_percentiles_or_period() -> None:
    out = parse_benchmark_output(OLD)
    assert out.init_ms == pytest.approx(2.891)
    assert out.inference.count == 50 and out.inference.avg_us == 123017
    assert out.inference.p5_us is None and out.inference.median_us is None and out.inference.p95_us is None
    assert out.warmup is not None and out.warmup.count == 4
    assert (out.memory_init_mb, out.memory_overall_mb) == (pytest.approx(2.02734), pytest.approx(28.2734))
    assert out.peak_memory_mb is None


def test_partial_delegation_counts_kernels() -> None:
    out = parse_benchmark_output(PARTIAL_GPU)
    assert out.delegation == Delegation.PARTIAL and out.delegate_kernels == 2
    assert out.inference.median_us == 1177


def test_no_delegation_and_all_same_lines() -> None:
    out = parse_benchmark_output(NONE_GPU)
    assert out.delegation == Delegation.NONE and out.delegate_kernels == 0
    inf = out.inference
    assert inf.all_same and inf.count == 18000
    assert inf.curr_us == inf.min_us == inf.max_us == inf.avg_us == 55 and inf.std_us == 0
    assert inf.median_us == 55
    assert any("not supported by GPU delegate" in e for e in out.errors)


def test_xnnpack_delegate_is_named() -> None:
    out = parse_benchmark_output(XNNPACK_CPU)
    d = out.delegate("XNNPACK")
    assert d is not None and d.outcome == Delegation.FULL
    assert out.inference.count == 3711


def test_interleaved_lines_and_op_profiling_tables_are_ignored() -> None:
    text = XNNPACK_CPU.replace(
        "INFO: Inference timings",
        "INFO: Profiling Info for Benchmark Initialization:\n"
        "============================== Run Order ==============================\n"
        "\t     [node type]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]\n"
        "Timings (microseconds): count=1 curr=3923\n"
        "Memory (bytes): count=0\n"
        "31 nodes observed\n"
        "some other tool: batch count=7 things\n"
        "INFO: Inference timings",
    )
    out = parse_benchmark_output(text)
    assert out.inference.count == 3711 and out.warmup is not None and out.warmup.count == 9102


def test_logcat_style_prefixes() -> None:
    text = "\n".join(
        f"11-23 18:00:00.000  1234  1234 I tflite  : {line[len('INFO: '):]}" if line.startswith("INFO: ") else line
        for line in XNNPACK_CPU.splitlines()
    )
    out = parse_benchmark_output(text)
    assert out.inference.avg_us == pytest.approx(53.5) and out.delegation == Delegation.FULL


def test_windows_line_endings() -> None:
    out = parse_benchmark_output(NEW_GPU.replace("\n", "\r\n"))
    assert out.inference.count == 65 and out.peak_memory_mb == pytest.approx(181.551)


def test_to_dict_is_plain_json() -> None:
    import json

    d = parse_benchmark_output(PARTIAL_GPU).to_dict()
    assert json.loads(json.dumps(d))["inference"]["median_us"] == 1177
    assert d["delegation"] == "partial" and d["delegate_kernels"] == 2


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "no benchmark statistics"),
        ("Usage: benchmark_model --graph=...\n", "no benchmark statistics"),
        (NEW_GPU.split("INFO: Running benchmark for at least 50")[0], "only the warm-up statistics"),
        ("INFO: count=3 curr=5(all same)\nINFO: count=0 p5=0 median=0 p95=0\n", "ran 0 times"),
        ("INFO: count=3 curr=5(all same)\nINFO: count=50 first=1 min=1 max=2 avg=1.5 std=0\n", "no curr="),
        ("INFO: count=3 curr=5(all same)\nINFO: count=50 first=1 curr=1 min=1\n", "missing max, avg, std"),
    ],
    ids=["empty", "usage", "truncated", "zero-runs", "no-curr", "missing-fields"],
)
def test_unusable_output_is_an_error_quoting_the_tail(text: str, reason: str) -> None:
    with pytest.raises(BenchmarkOutputError, match=reason) as info:
        parse_benchmark_output(text)
    assert "benchmark_model output ended with" in str(info.value)
    if text.strip():
        assert text.strip().splitlines()[-1].strip() in str(info.value)


def test_crash_output_tail_is_quoted() -> None:
    text = (
        "INFO: Loaded model /data/local/tmp/x.tflite\n"
        "ERROR: Didn't find op for builtin opcode 'STABLEHLO_COMPOSITE' version '1'\n"
        "ERROR: Registration failed.\n"
        "Failed to construct interpreter\n"
        "Benchmarking failed.\n"
    )
    with pytest.raises(BenchmarkOutputError) as info:
        parse_benchmark_output(text)
    assert "STABLEHLO_COMPOSITE" in str(info.value) and "Benchmarking failed." in info.value.tail


def test_tail_is_bounded() -> None:
    text = "\n".join(f"line {i}" for i in range(1000))
    tail = output_tail(text)
    assert tail.splitlines()[-1] == "line 999" and len(tail.splitlines()) <= 15
    assert len(output_tail("x" * 10_000)) == 2000


def test_nan_average_is_refused() -> None:
    with pytest.raises(BenchmarkOutputError, match="non-finite"):
        parse_benchmark_output("count=1 curr=3\ncount=5 first=1 curr=1 min=1 max=2 avg=nan std=0\n")
    assert math.isnan(float("nan"))


# -- placement and per-op time (--enable_op_profiling): formats of profile_summary_formatter.cc,
# stats_calculator.cc (InitField: a tab, right-aligned, 3 decimals) and profile_summarizer.cc
# (name "[output tensors]:NODE_INDEX") in google-ai-edge/LiteRT.
def _row(kind: str, first: float, avg: float, pct: float, cdf: float, name: str) -> str:
    return (f"\t{kind:>40}\t{first:>9.3f}\t{avg:>9.3f}\t{pct:>7.3f}%\t{cdf:>7.3f}%\t{0.0:>10.3f}\t{1:>9}\t{name}")


_HEAD = ("\t" + "[node type]".rjust(40) + "\t" + "[first]".rjust(9) + "\t" + "[avg ms]".rjust(9) + "\t"
         + "[%]".rjust(8) + "\t" + "[cdf%]".rjust(8) + "\t" + "[mem KB]".rjust(10) + "\t"
         + "[times called]".rjust(9) + "\t[Name]")
OP_PROFILE = "\n".join([
    "INFO: Profiling Info for Benchmark Initialization:",
    "============================== Run Order ==============================",
    _HEAD,
    _row("ModifyGraphWithDelegate", 80.1, 80.1, 91.0, 91.0, "ModifyGraphWithDelegate/0"),
    _row("AllocateTensors", 7.9, 7.9, 9.0, 100.0, "AllocateTensors/0"),
    "",
    "Timings (microseconds): count=1 curr=88000",
    "Memory (bytes): count=0",
    "2 nodes observed",
    "",
    "INFO: Operator-wise Profiling Info for Regular Benchmark Runs:",
    "============================== Run Order ==============================",
    _HEAD,
    _row("TfLiteGpuDelegateV2", 0.990, 0.905, 76.6, 76.6, "[conv2/Relu]:7"),
    _row("RESHAPE", 0.004, 0.003, 0.3, 76.9, "[flatten/Reshape]:3"),
    _row("FULLY_CONNECTED", 0.270, 0.262, 22.2, 99.1, "[dense/MatMul;dense/Relu]:4"),
    _row("SOFTMAX", 0.012, 0.011, 0.9, 100.0, "[StatefulPartitionedCall:0]:6"),
    "",
    "============================== Top by Computation Time ==============================",
    _HEAD,
    _row("TfLiteGpuDelegateV2", 0.990, 0.905, 76.6, 76.6, "[conv2/Relu]:7"),
    "",
    "Number of nodes executed: 4",
    "Timings (microseconds): count=845 first=1276 curr=1180 min=1099 max=1510 avg=1181.2 std=41",
    "Memory (bytes): count=0",
    "4 nodes observed",
])


def test_op_profile_and_placement_are_read() -> None:
    text = PARTIAL_GPU.replace(
        "INFO: Replacing 5 out of 7",
        "ERROR: Following operations are not supported by GPU delegate:\n"
        "CUSTOM MyOp: Operation is not supported.\n"
        "FULLY_CONNECTED: Forced onto the CPU.\n"
        "5 operations will run on the GPU, and the remaining 2 operations will run on the CPU.\n"
        "INFO: Replacing 5 out of 7",
    ) + OP_PROFILE + "\n"
    out = parse_benchmark_output(text)
    assert out.inference.count == 845  # the profile's "Timings (microseconds): count=" is not a run's stats
    (rep,) = out.replacements
    assert (rep.name, rep.replaced, rep.total, rep.partitions) == ("TfLiteGpuDelegateV2", 5, 7, 2)
    assert out.unsupported == (("CUSTOM MyOp", "Operation is not supported."), ("FULLY_CONNECTED", "Forced onto the CPU."))
    assert [(r.index, r.op) for r in out.ops] == [(7, "TfLiteGpuDelegateV2"), (3, "RESHAPE"), (4, "FULLY_CONNECTED"),
                                                 (6, "SOFTMAX")]  # the regular runs' run order, not the init table
    fc = out.ops[2]
    assert (fc.first_ms, fc.avg_ms, fc.percent, fc.name) == (0.270, 0.262, 22.2, "[dense/MatMul;dense/Relu]:4")
    assert out.to_dict()["replacements"][0]["partitions"] == 2


def test_older_replacing_wording_and_no_profile() -> None:
    text = PARTIAL_GPU.replace("Replacing 5 out of 7 node(s) with delegate (TfLiteGpuDelegateV2) node, yielding 2 "
                               "partitions for the whole graph.",
                               "Replacing 5 node(s) with delegate (TfLiteGpuDelegateV2) node, yielding 2 partitions.")
    out = parse_benchmark_output(text)
    (rep,) = out.replacements
    assert (rep.replaced, rep.total, rep.partitions) == (5, None, 2)
    assert out.ops == () and out.unsupported == ()


def test_placement_and_profile_from_the_parsed_runs() -> None:
    from pytest_edgeopt.targets.android.android_profile import build_profile

    timed = parse_benchmark_output(PARTIAL_GPU)
    profiled = parse_benchmark_output(PARTIAL_GPU + OP_PROFILE + "\n")
    p = build_profile([timed], profiled, gpu=True)
    assert p.warmup_mean_ms == pytest.approx(1.2129)
    assert p.placement is not None
    assert (p.placement.delegated_nodes, p.placement.total_nodes, p.placement.partitions) == (5, 7, 2)
    assert p.placement.fallback == ((3, "RESHAPE"), (4, "FULLY_CONNECTED"), (6, "SOFTMAX"))
    assert [o.index for o in p.ops] == [7, 4, 6, 3] and p.ops[0].on == "gpu" and p.ops[1].on == "cpu"
    bare = build_profile([parse_benchmark_output(NONE_GPU)], None, gpu=True)
    assert bare.placement is None and bare.ops == () and bare.ops_source is None  # nothing said where ops ran
