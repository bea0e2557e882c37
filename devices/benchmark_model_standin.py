#!/usr/bin/env python3
"""A stand-in for TFLite's ``benchmark_model`` that runs on the emulated Android device.

It takes the real tool's flags, prints the real tool's lines (``INFO: `` prefixed, same
wording and number formatting as ``tflite/tools/benchmark/benchmark_model.cc`` and
``benchmark_tflite_model.cc``), and really runs the model with ai_edge_litert's
Interpreter, so every latency and memory figure is measured on this host, not invented.
``--use_gpu=true`` reports delegation from the ops a mobile GPU delegate accepts (the
model still runs on the CPU here). Semantics of the input/output file flags follow the
LiteRT source; ``devices/README.md`` records what was read where.

Install it as the device's binary with :func:`write_standin`, which writes a copy whose
``#!`` line is this Python (it needs ai_edge_litert and numpy)::

    write_standin(device.root / "data/local/tmp/benchmark_model")
    # or write it to a host file and `adb push` that (mode 0755) like the real binary

Faults, from the environment (the emulated device sets them from ``Faults.standin_*``):
``EDGEOPT_STANDIN_CRASH=segv|abort`` dies by that signal after the init lines (exit 139 /
134 through the shell), ``EDGEOPT_STANDIN_EXIT=N`` exits N after the init lines,
``EDGEOPT_STANDIN_HANG=1`` hangs in the first run, ``EDGEOPT_STANDIN_DELAY_US=N`` adds N us
to every inference, ``EDGEOPT_STANDIN_HAS_GPU=0`` makes the GPU delegate fail to apply.
Planted regressions (set through the device's ``shell_env``): ``EDGEOPT_STANDIN_OP_DELAY_MS=
N:MS[,N:MS...]`` makes node N slower by MS milliseconds per inference (a real sleep inside
the timed invoke, charged to that node, or to the delegate kernel that holds it, in the op
profile); ``EDGEOPT_STANDIN_CPU_OPS=N[,N...]`` makes the GPU delegate refuse node N, so it
falls back to the CPU and splits the graph.

``--enable_op_profiling=true`` prints the real tool's tables (``Profiling Info for Benchmark
Initialization:``, ``Operator-wise Profiling Info for Regular Benchmark Runs:``, ``Run
Order``, ``Top by Computation Time``, ``Summary by node type``; formats of
``stats_calculator.cc`` and ``profile_summarizer.cc``). The Python interpreter has no
per-op timer, so each measured invoke time is **split across the execution plan's nodes in
proportion to a static cost estimate** (multiply-accumulates from the tensor shapes), plus
the planted delays, which are measured: per-op figures from the stand-in say where time
went only roughly; their sum is the measured invoke time.
"""

from __future__ import annotations

import math
import os
import re
import struct
import sys
import threading
import time
from pathlib import Path

INT_MAX = 2**31 - 1


def write_standin(dest: Path | str) -> Path:
    """Write an executable copy of this script to ``dest`` that runs with this Python."""
    dest = Path(dest)
    source = Path(__file__).read_text()
    body = source.split("\n", 1)[1]
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(f"#!{sys.executable}\n{body}")
    dest.chmod(0o755)
    return dest


# --- logging, as tflite/tools/logging.h: INFO/WARN to stdout, ERROR/FATAL to stderr -------


def _info(msg: str) -> None:
    sys.stdout.write(f"INFO: {msg}\n")
    sys.stdout.flush()


def _warn(msg: str) -> None:
    sys.stdout.write(f"WARN: {msg}\n")
    sys.stdout.flush()


def _error(msg: str) -> None:
    sys.stdout.flush()
    sys.stderr.write(f"ERROR: {msg}\n")
    sys.stderr.flush()


def _fatal(msg: str) -> None:
    sys.stdout.flush()
    sys.stderr.write(f"FATAL: {msg}\n")
    sys.stderr.flush()
    _die(6)


def _runtime(level: str, msg: str) -> None:
    """A message of the TFLite runtime itself (minimal_logging: stderr, 'INFO: ')."""
    sys.stdout.flush()
    sys.stderr.write(f"{level}: {msg}\n")
    sys.stderr.flush()


def _die(signum: int) -> None:
    import resource
    import signal

    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ValueError, OSError):
        pass
    sys.stdout.flush()
    sys.stderr.flush()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    time.sleep(5)
    os._exit(128 + signum)


def _g(x: float) -> str:
    """A double as C++ ostream prints it by default (%g, 6 significant digits)."""
    if math.isnan(x):
        return "nan" if math.copysign(1.0, x) > 0 else "-nan"
    return f"{x:g}"


# --- flags, as tflite/tools/command_line_flags.cc -----------------------------------------

_INT_RE = re.compile(r"\s*[+-]?\d+")
_FLOAT_RE = re.compile(r"\s*[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf(?:inity)?|nan)", re.I)


def _parse_value(kind: str, text: str):
    if kind == "bool":
        if text not in ("true", "false", "0", "1"):
            raise ValueError(text)
        return text in ("true", "1")
    if kind == "string":
        return text
    if text == "":  # istringstream at eof: accepted, value unspecified
        return 0
    m = (_INT_RE if kind == "int32" else _FLOAT_RE).match(text)
    if not m:
        raise ValueError(text)
    value = int(m.group()) if kind == "int32" else float(m.group())
    if kind == "int32" and not -(2**31) <= value <= INT_MAX:
        raise ValueError(text)
    if kind == "float":
        value = struct.unpack("f", struct.pack("f", value))[0] if math.isfinite(value) else value
    return value


# (name, type, default), in the order GetFlags() builds the list: BenchmarkModel, BenchmarkTfLiteModel, then the
# delegate providers.
_FLAGS = [
    ("num_runs", "int32", 50),
    ("min_secs", "float", 1.0),
    ("max_secs", "float", 150.0),
    ("run_delay", "float", -1.0),
    ("run_frequency", "float", -1.0),
    ("num_threads", "int32", -1),
    ("use_caching", "bool", False),
    ("benchmark_name", "string", ""),
    ("output_prefix", "string", ""),
    ("warmup_runs", "int32", 1),
    ("warmup_min_secs", "float", 0.5),
    ("verbose", "bool", False),
    ("dry_run", "bool", False),
    ("report_peak_memory_footprint", "bool", False),
    ("memory_footprint_check_interval_ms", "int32", 50),
    ("gpu_invoke_loop_times", "int32", 1),
    ("graph", "string", ""),
    ("input_layer", "string", ""),
    ("input_layer_shape", "string", ""),
    ("input_layer_value_range", "string", ""),
    ("input_layer_value_files", "string", ""),
    ("allow_fp16", "bool", False),
    ("require_full_delegation", "bool", False),
    ("enable_op_profiling", "bool", False),
    ("op_profiling_output_mode", "string", "stdout"),
    ("op_profiling_output_file", "string", ""),
    ("max_profiling_buffer_entries", "int32", 1024),
    ("allow_dynamic_profiling_buffer_increase", "bool", False),
    ("profiling_output_csv_file", "string", ""),
    ("export_model_runtime_info", "bool", False),
    ("model_runtime_info_output_file", "string", ""),
    ("print_preinvoke_state", "bool", False),
    ("print_postinvoke_state", "bool", False),
    ("release_dynamic_tensors", "bool", False),
    ("optimize_memory_for_large_tensors", "int32", 0),
    ("disable_delegate_clustering", "bool", False),
    ("enable_builtin_cast_constant_cache", "bool", False),
    ("output_filepath", "string", ""),
    ("output_proto_filepath", "string", ""),
    ("tensor_name_display_length", "int32", 25),
    ("tensor_type_display_length", "int32", 15),
    ("alloc_type_display_length", "int32", 18),
    ("signature_to_run_for", "string", ""),
    ("list_signatures", "bool", False),
    ("result_file_path", "string", ""),
    # tools/delegates/default_execution_provider.cc
    ("help", "bool", False),
    ("max_delegated_partitions", "int32", 0),
    ("min_nodes_per_partition", "int32", 0),
    ("first_delegate_node_index", "int32", 0),
    ("last_delegate_node_index", "int32", INT_MAX),
    ("delegate_serialize_dir", "string", ""),
    ("delegate_serialize_token", "string", ""),
    # tools/delegates/gpu_delegate_provider.cc (Android build)
    ("use_gpu", "bool", False),
    ("gpu_precision_loss_allowed", "bool", True),
    ("gpu_experimental_enable_quant", "bool", True),
    ("gpu_inference_for_sustained_speed", "bool", False),
    ("gpu_backend", "string", ""),
    # tools/delegates/nnapi_delegate_provider.cc, hexagon, external (accepted; no device)
    ("use_nnapi", "bool", False),
    ("nnapi_execution_preference", "string", ""),
    ("nnapi_execution_priority", "string", ""),
    ("nnapi_accelerator_name", "string", ""),
    ("disable_nnapi_cpu", "bool", True),
    ("nnapi_allow_fp16", "bool", False),
    ("use_hexagon", "bool", False),
    ("hexagon_lib_path", "string", "/data/local/tmp"),
    ("hexagon_profiling", "bool", False),
    # tools/delegates/xnnpack_delegate_provider.cc
    ("use_xnnpack", "bool", False),
    ("xnnpack_force_fp16", "bool", False),
    ("xnnpack_weight_cache_file_path", "string", ""),
    ("xnnpack_runtime_flags", "int32", 0),
    ("external_delegate_path", "string", ""),
    ("external_delegate_options", "string", ""),
    ("stable_delegate_settings_file", "string", ""),
]
_KIND = {name: kind for name, kind, _d in _FLAGS}


class Params:
    """Flag values, whether each was set on the command line, and its argv position."""

    def __init__(self) -> None:
        self.values = {name: default for name, _k, default in _FLAGS}
        self.position: dict[str, int] = {}

    def __getitem__(self, name: str):
        return self.values[name]

    def is_set(self, name: str) -> bool:
        return name in self.position


def parse_flags(argv: list[str], params: Params) -> tuple[bool, list[str]]:
    """Flags::Parse: ``--name=value`` only; returns (ok, unconsumed args)."""
    unknown = [True] * len(argv)
    ok = True
    for name, kind, _default in _FLAGS:
        prefix = f"--{name}="
        for i in range(1, len(argv)):
            if not unknown[i] or not argv[i].startswith(prefix):
                continue
            try:
                params.values[name] = _parse_value(kind, argv[i][len(prefix):])
            except ValueError:
                _error(f"Failed to parse flag '{name}' against argv '{argv[i]}'")
                ok = False
            unknown[i] = False
            params.position[name] = i
            break
    rest = [a for i, a in enumerate(argv) if i > 0 and unknown[i]]
    return ok and not (rest and rest[0] == "--help"), rest


def _usage(prog: str) -> str:
    descs = dict(_LOG_ORDER)
    rows = [(f"--{n}={_show(d, k)}", k, descs.get(n, "")) for n, k, d in _FLAGS]
    width = max(len(r[0]) for r in rows)
    lines = [f"usage: {prog} <flags>", "Flags:"]
    lines += [f"\t{flag:<{width}}\t{kind}\toptional\t{desc or ''}" for flag, kind, desc in rows]
    return "\n".join(lines) + "\n"


def _show(value, kind: str) -> str:
    if kind == "bool":
        return "true" if value else "false"
    if kind == "float":
        return _g(value)
    return str(value)


def _log_value(value, kind: str) -> str:
    """Values as LOG_BENCHMARK_PARAM streams them: bools as 0/1, floats as %g."""
    if kind == "bool":
        return "1" if value else "0"
    if kind == "float":
        return _g(value)
    return str(value)


#: LogParams() order: BenchmarkModel, BenchmarkTfLiteModel, then each delegate provider.
#: (name, description); "#threads used for CPU inference" logs num_threads a second time.
_LOG_ORDER = [
    ("num_runs", "Min num runs"),
    ("min_secs", "Min runs duration (seconds)"),
    ("max_secs", "Max runs duration (seconds)"),
    ("run_delay", "Inter-run delay (seconds)"),
    ("run_frequency", "Number of prorated runs per second"),
    ("num_threads", "Num threads"),
    ("use_caching", "Use caching"),
    ("benchmark_name", "Benchmark name"),
    ("output_prefix", "Output prefix"),
    ("warmup_runs", "Min warmup runs"),
    ("warmup_min_secs", "Min warmup runs duration (seconds)"),
    ("dry_run", "Run w/o invoking kernels"),
    ("report_peak_memory_footprint", "Report the peak memory footprint"),
    ("memory_footprint_check_interval_ms", "Memory footprint check interval (ms)"),
    ("graph", "Graph"),
    ("signature_to_run_for", "Signature to run"),
    ("list_signatures", "List signatures from the provided model"),
    ("input_layer", "Input layers"),
    ("input_layer_shape", "Input shapes"),
    ("input_layer_value_range", "Input value ranges"),
    ("input_layer_value_files", "Input value files"),
    ("allow_fp16", "Allow fp16"),
    ("require_full_delegation", "Require full delegation"),
    ("enable_op_profiling", "Enable op profiling"),
    ("op_profiling_output_mode", "Op profiling output mode."),
    ("op_profiling_output_file", "Op profiling output file."),
    ("max_profiling_buffer_entries", "Max initial profiling buffer entries"),
    ("allow_dynamic_profiling_buffer_increase", "Allow dynamic increase on profiling buffer entries"),
    ("profiling_output_csv_file", "CSV File to export profiling data to"),
    ("export_model_runtime_info", "Enable Model Runtime Info Export"),
    ("model_runtime_info_output_file", "Proto File to export model runtime info to"),
    ("print_preinvoke_state", "Print pre-invoke interpreter state"),
    ("print_postinvoke_state", "Print post-invoke interpreter state"),
    ("release_dynamic_tensors", "Release dynamic tensor memory"),
    ("optimize_memory_for_large_tensors", "Optimize memory usage for large tensors"),
    ("disable_delegate_clustering", "Disable delegate clustering"),
    ("enable_builtin_cast_constant_cache", "Constant CAST output cache"),
    ("output_filepath", "File path to export outputs layer to"),
    ("output_proto_filepath", "File path to export outputs layer as tf example to"),
    ("result_file_path", "File path to save the benchmark result in binary proto format"),
    ("tensor_name_display_length", "Tensor name display length"),
    ("tensor_type_display_length", "Tensor type display length"),
    ("alloc_type_display_length", "Tensor allocation type display length"),
    ("help", "print out all supported flags"),
    ("num_threads", "#threads used for CPU inference"),
    ("max_delegated_partitions", "Max number of delegated partitions"),
    ("min_nodes_per_partition", "Min nodes per partition"),
    ("first_delegate_node_index", "Index of the first node that could be delegated"),
    ("last_delegate_node_index", "Index of the last node that could be delegated"),
    ("gpu_invoke_loop_times", "Number of GPU delegate invoke loop iterations"),
    ("delegate_serialize_dir", "Directory for delegate serialization"),
    ("delegate_serialize_token", "Model-specific token/key for delegate serialization."),
    ("use_gpu", "Use gpu"),
    ("gpu_precision_loss_allowed", "Allow lower precision in gpu"),
    ("gpu_experimental_enable_quant", "Enable running quant models in gpu"),
    ("gpu_inference_for_sustained_speed", "Prefer maximizing the throughput in gpu"),
    ("gpu_backend", "GPU backend"),
    ("use_nnapi", "Use NNAPI"),
    ("nnapi_execution_preference", "nnapi execution preference"),
    ("nnapi_execution_priority", "nnapi execution priority"),
    ("nnapi_accelerator_name", "nnapi accelerator"),
    ("disable_nnapi_cpu", "Disable NNAPI cpu"),
    ("nnapi_allow_fp16", "Allow fp16 in NNAPI"),
    ("use_hexagon", "Use Hexagon"),
    ("hexagon_lib_path", "Hexagon lib path"),
    ("hexagon_profiling", "Hexagon profiling"),
    ("use_xnnpack", "Use xnnpack"),
    ("xnnpack_force_fp16", "xnnpack_force_fp16"),
    ("xnnpack_weight_cache_file_path", "xnnpack_weight_cache_file_path"),
    ("xnnpack_runtime_flags", "Extra flags for XNNPACK runtime"),
    ("external_delegate_path", "External delegate path"),
    ("external_delegate_options", "External delegate options"),
    ("stable_delegate_settings_file", "Delegate settings file path"),
]


def log_params(params: Params) -> None:
    verbose = params["verbose"]
    _info(f"Log parameter values verbosely: [{_log_value(verbose, 'bool')}]")
    always = {"graph", "signature_to_run_for"}
    for name, desc in _LOG_ORDER:
        shown = params.is_set(name) or name in always or (verbose and name != "list_signatures")
        if shown:
            _info(f"{desc}: [{_log_value(params[name], _KIND[name])}]")


# --- statistics, as tsl/util/stats_calculator.h -------------------------------------------


class Stat:
    def __init__(self) -> None:
        self.values: list[int] = []

    def add(self, v: int) -> None:
        self.values.append(int(v))

    @property
    def count(self) -> int:
        return len(self.values)

    def first(self) -> int:
        return self.values[0] if self.values else 0

    def avg(self) -> float:
        # Empty: numeric_limits<int64_t>::quiet_NaN(), which is 0 for an integer type.
        return sum(self.values) / len(self.values) if self.values else 0.0

    def std_deviation(self) -> int:
        v = self.values
        if not v or min(v) == max(v):
            return 0
        mean = sum(v) / len(v)
        variance = int(sum(x * x for x in v) / len(v) - mean * mean)  # ValueType is int64
        return int(math.sqrt(variance))

    def percentile(self, p: int) -> int:
        v = sorted(self.values)
        return v[len(v) * p // 100] if v else 0

    def __str__(self) -> str:
        v = self.values
        if not v:
            text = "count=0"
        elif min(v) == max(v):
            text = f"count={len(v)} curr={v[-1]}" + ("(all same)" if len(v) > 1 else "")
        else:
            text = (f"count={len(v)} first={v[0]} curr={v[-1]} min={min(v)} max={max(v)}"
                    f" avg={_g(self.avg())} std={self.std_deviation()}")
        if not v:
            return text + " p5=0 median=0 p95=0"
        return text + f" p5={self.percentile(5)} median={self.percentile(50)} p95={self.percentile(95)}"


# --- memory, as tflite/profiling/memory_info.cc (ru_maxrss on Linux) ----------------------


def _footprint_kb() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


class _PeakMonitor(threading.Thread):
    def __init__(self, interval_ms: int) -> None:
        super().__init__(daemon=True)
        self.interval_s = interval_ms / 1000.0
        self.peak_kb = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.peak_kb = max(self.peak_kb, _footprint_kb())
            self._halt.wait(self.interval_s)

    def stop(self) -> float:
        self._halt.set()
        self.join()
        self.peak_kb = max(self.peak_kb, _footprint_kb())
        return self.peak_kb / 1024.0


# --- GPU delegate coverage ---------------------------------------------------------------

#: Builtin ops the TFLite GPU delegate (tflite/delegates/gpu/common/model_builder.cc) parses.
GPU_OPS = frozenset("""
ABS ADD AVERAGE_POOL_2D BATCH_MATMUL CAST CONCATENATION CONV_2D COS CUMSUM DENSIFY
DEPTH_TO_SPACE DEPTHWISE_CONV_2D DEQUANTIZE DIV ELU EQUAL EXP FLOOR FLOOR_DIV FLOOR_MOD
FULLY_CONNECTED GATHER GELU GREATER GREATER_EQUAL HARD_SWISH LEAKY_RELU LESS LESS_EQUAL LOG
LOGICAL_AND LOGISTIC LSTM MAX_POOL_2D MAXIMUM MEAN MINIMUM MIRROR_PAD MUL NEG NOT_EQUAL
ONE_HOT PACK PAD PADV2 POW PRELU QUANTIZE REDUCE_MAX REDUCE_MIN REDUCE_PROD RELU RELU6
RELU_N1_TO_1 RELU_0_TO_1 RESHAPE RESIZE_BILINEAR RESIZE_NEAREST_NEIGHBOR RSQRT SELECT_V2 SIN
SLICE SOFTMAX SPACE_TO_DEPTH SPLIT SPLIT_V SQRT SQUARE SQUARED_DIFFERENCE SQUEEZE
STRIDED_SLICE SUB SUM TANH TILE TRANSPOSE TRANSPOSE_CONV UNPACK
""".split())


def _gpu_supports(node: dict, dtypes: dict[int, str], quant: bool) -> str | None:
    """None if the GPU delegate takes the node, else the reason it does not."""
    if node["op_name"] not in GPU_OPS:
        return "Operation is not supported."
    allowed = {"float32", "float16", "int32", "bool"} | ({"int8", "uint8"} if quant else set())
    for t in list(node["inputs"]) + list(node["outputs"]):
        if t >= 0 and dtypes.get(t) not in allowed:
            return f"{dtypes.get(t)} tensors are not supported."  # int16 activations never are
    return None


def _partitions(nodes: list[int], supported: set[int]) -> list[list[int]]:
    """Runs of consecutive supported nodes in execution order."""
    parts, current = [], []
    for n in nodes:
        if n in supported:
            current.append(n)
        elif current:
            parts.append(current)
            current = []
    if current:
        parts.append(current)
    return parts


def _subsets(nodes: list[int], replaced: set[int]) -> int:
    """PartitionGraphIntoIndependentNodeSubsets for a chain: runs of replaced / kept nodes."""
    runs, last = 0, None
    for n in nodes:
        here = n in replaced
        if here != last:
            runs += 1
            last = here
    return runs


def _xnnpack_covered(ops: list[dict]) -> set[int]:
    """Original nodes that the interpreter replaced with XNNPACK DELEGATE nodes."""
    producers = {}
    for op in ops:
        if op["op_name"] != "DELEGATE":
            for t in op["outputs"]:
                producers[int(t)] = op["index"]
    covered: set[int] = set()
    for op in ops:
        if op["op_name"] != "DELEGATE":
            continue
        boundary = {int(t) for t in op["inputs"]}
        stack = [int(t) for t in op["outputs"]]
        seen = set()
        while stack:
            t = stack.pop()
            if t in seen or t in boundary or t not in producers:
                continue
            seen.add(t)
            n = producers[t]
            covered.add(n)
            stack.extend(int(x) for x in ops[n]["inputs"] if x >= 0)
    return covered


# --- the benchmark -------------------------------------------------------------------------


class Benchmark:
    def __init__(self, params: Params, argv0: str) -> None:
        self.p = params
        self.argv0 = argv0
        self.inputs: list[dict] = []  # InputLayerInfo: name, shape, low/high, file
        self.interpreter = None
        self.input_data: list = []
        self.delay_s = int(os.environ.get("EDGEOPT_STANDIN_DELAY_US", "0") or 0) / 1e6
        self.op_delay_ms = _node_map(os.environ.get("EDGEOPT_STANDIN_OP_DELAY_MS", ""))
        self.cpu_ops = set(_node_map(os.environ.get("EDGEOPT_STANDIN_CPU_OPS", ""), default=0.0))
        self.groups: list[tuple[str, list[int]]] = []  # delegate kernels: (name, original nodes)
        self.run_stats: Stat | None = None

    # ValidateParams + PopulateInputLayerInfo
    def validate(self) -> bool:
        p = self.p
        if p["report_peak_memory_footprint"] and p["memory_footprint_check_interval_ms"] <= 0:
            _warn(f"--memory_footprint_check_interval_ms is set to {p['memory_footprint_check_interval_ms']} (ms), "
                  "This value is invalid, and it will be set to the default value 50 (ms).")
            p.values["memory_footprint_check_interval_ms"] = 50
        if not p["graph"]:
            _error("Please specify the name of your TF Lite input file with --graph")
            return False
        if p["enable_op_profiling"] and p["op_profiling_output_mode"] not in ("stdout", "csv", "proto"):
            _error(f"Output mode{p['op_profiling_output_mode']} is not supported. Supported values are: "
                   "'stdout', 'csv' and 'proto'.")
            return False
        names_string = p["input_layer"]
        names = names_string.split(",") if names_string else []
        shapes = p["input_layer_shape"].split(":") if p["input_layer_shape"] else []
        if len(names) != len(shapes):
            _error(f"The number of items in --input_layer_shape ({p['input_layer_shape']}, with {len(shapes)} "
                   f"items) must match the number of items in --input_layer ({names_string}, with {len(names)} "
                   "items). For example --input_layer=input1,input2 --input_layer_shape=1,224,224,4:1,20")
            return False
        for name, shape_text in zip(names, shapes):
            try:
                shape = [int(x) for x in shape_text.split(",")] if shape_text else []
            except ValueError:
                _fatal(f"Incorrect size string specified: {shape_text}")
                return False
            if -1 in shape:
                _error("Any unknown sizes in the shapes (-1's) must be replaced with the size you want to "
                       "benchmark with.")
                return False
            self.inputs.append({"name": name, "shape": shape, "range": None, "file": ""})

        def find(name: str) -> dict:
            for info in self.inputs:
                if info["name"] == name:
                    return info
            _fatal(f"Cannot find the corresponding input_layer name({name}) in --input_layer as {names_string}")
            raise AssertionError

        ranges = p["input_layer_value_range"]
        for item in ranges.split(":") if ranges else []:
            parts = item.split(",")
            if len(parts) != 3:
                _error(f"Wrong input value range item specified: {item}")
                return False
            info = find(parts[0])
            try:
                low, high = int(parts[1]), int(parts[2])
            except ValueError:
                low, high = 1, 0
            if low > high:
                _error(f"Wrong low and high value of the input value range specified: {item}")
                return False
            info["range"] = (low, high)
        files = p["input_layer_value_files"]
        for item in files.split(",") if files else []:
            pair = split_name_and_file(item)
            if pair is None:
                _error(f"Wrong input value file item specified: {item}")
                _error("1")
                return False
            info = find(pair[0])
            if info["range"] is not None:
                _warn(f"The input_name:{info['name']} appears both in input_layer_value_files and "
                      "input_layer_value_range. The input_layer_value_range of the input_name will be ignored.")
            info["file"] = pair[1]
        return True

    def init(self) -> bool:
        """Init(): load, build the interpreter, resize inputs, apply delegates, allocate."""
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        p = self.p
        graph = p["graph"]
        try:
            with open(graph, "rb") as f:
                model = f.read()
        except OSError:
            _runtime("ERROR", f"Could not open '{graph}'.")
            _error(f"Failed to load model {graph}")
            return False
        _info(f"Loaded model {graph}")
        explicit_xnnpack = p.is_set("use_xnnpack")
        resolver = (OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
                    if explicit_xnnpack and not p["use_xnnpack"] else OpResolverType.AUTO)
        threads = p["num_threads"]
        try:
            it = Interpreter(model_content=model, num_threads=threads if threads >= 1 else None,
                             experimental_op_resolver_type=resolver)
        except (ValueError, RuntimeError) as exc:
            _runtime("ERROR", str(exc).strip())
            _error("Failed to initialize the interpreter")
            return False
        self.interpreter = it
        _runtime("INFO", "Initialized TensorFlow Lite runtime.")
        signatures = list(it.get_signature_list())
        if p["list_signatures"]:
            _info(f"The Model contains {len(signatures)} signature key(s).")
            if signatures:
                _info("They are listed below: ")
            for key in signatures:
                _info(f"-> Signature Key: {key}")
            return False
        key = p["signature_to_run_for"]
        if signatures:
            if len(signatures) == 1 and not key:
                key = signatures[0]
            elif key not in signatures:
                _error('Signature not specified or incorrect. Pass one of the following to the flag '
                       '"--signature_to_run_for"')
                for k in signatures:
                    _error(f" #> Signature Key: {k}")
                return False
            if key != signatures[0]:
                _error(f"This stand-in runs the first signature only, not {key!r}.")
                return False
            _info(f"Using signature: {key}")
        elif key:
            _error("Signature key is specified, but the model does not have any signatures.")
            return False

        details = it.get_input_details()
        if self.inputs and len(self.inputs) != len(details):
            _fatal(f"Inputs mismatch: Model inputs #:{len(self.inputs)} expected: {len(details)}")
        for info, d in zip(self.inputs, details):
            if info["name"] != d["name"]:
                _warn(f"Tensor # {d['index']} is named {d['name']} but flags call it {info['name']}")
            if d["dtype"] is not bytes and len(info["shape"]) != len(d["shape"]):
                _error(f"Input tensor #{d['index']} should have {len(d['shape'])} dimensions!")
                return False
        for info, d in zip(self.inputs, details):
            if d["dtype"] is not bytes:
                it.resize_tensor_input(d["index"], info["shape"])

        if not self.apply_delegates():
            return False
        try:
            it.allocate_tensors()
        except RuntimeError as exc:
            _runtime("ERROR", str(exc).strip())
            _error("Failed to allocate tensors!")
            return False
        if self.xnnpack_rank is not None and not self.report_xnnpack():
            return False
        return True

    def apply_delegates(self) -> bool:
        """Delegate providers in argv order (CreateAllRankedDelegates) and their reports."""
        p = self.p
        created = []
        if p["use_gpu"]:
            created.append((p.position["use_gpu"], "GPU"))
        if p["use_xnnpack"]:
            created.append((p.position["use_xnnpack"], "XNNPACK"))
        if p["use_nnapi"]:
            _warn("NNAPI acceleration is unsupported on this platform.")
        if p["use_hexagon"]:
            _warn("Hexagon acceleration is unsupported on this platform.")
        created.sort()
        if len(created) >= 2:
            _info(f"Going to apply {len(created)} delegates one after another.")
        if not created and p["require_full_delegation"]:
            _error("Disallowed CPU fallback detected.")
            return False
        it = self.interpreter
        ops = [op for op in it._get_ops_details() if op["op_name"] != "DELEGATE"]
        self.plan = [op["index"] for op in ops]  # undelegated nodes
        self.kernels = 0  # delegate nodes in the execution plan
        self.xnnpack_rank = None
        dtypes = {}
        for t in {int(x) for op in ops for x in list(op["inputs"]) + list(op["outputs"]) if x >= 0}:
            try:
                dtypes[t] = it._get_tensor_details(t, 0)["dtype"].__name__
            except Exception:
                dtypes[t] = "unknown"
        for _rank, name in created:
            if name == "GPU":
                if not self.apply_gpu(ops, dtypes):
                    return False
            else:
                # XNNPACK's coverage is only known after AllocateTensors; reported then.
                self.xnnpack_rank = len(self.plan)
        return True

    def apply_gpu(self, ops: list[dict], dtypes: dict[int, str]) -> bool:
        p = self.p
        _runtime("INFO", "Created TensorFlow Lite delegate for GPU.")
        quant = p["gpu_experimental_enable_quant"]
        reasons = {op["index"]: _gpu_supports(op, dtypes, quant) for op in ops if op["index"] in self.plan}
        for n in self.cpu_ops & set(reasons):
            reasons[n] = "Forced onto the CPU (EDGEOPT_STANDIN_CPU_OPS)."
        supported = {n for n, why in reasons.items() if why is None}
        parts = _partitions(self.plan, supported)
        parts.sort(key=len, reverse=True)
        taken = parts[: max(1, p["max_delegated_partitions"])]
        replaced = {n for part in taken for n in part}
        total = len(self.plan)
        if len(replaced) < total:
            lines = sorted({f"{ops[n]['op_name']}: {why}" for n, why in reasons.items() if why is not None})
            if len(replaced) < len(supported):
                lines.append("Only the largest partition is delegated (--max_delegated_partitions).")
            _runtime("ERROR", "Following operations are not supported by GPU delegate:\n" + "\n".join(lines)
                     + f"\n{len(replaced)} operations will run on the GPU, and the remaining "
                     f"{total - len(replaced)} operations will run on the CPU.")
        if os.environ.get("EDGEOPT_STANDIN_HAS_GPU", "1") == "0" and replaced:
            _runtime("ERROR", 'TfLiteGpuDelegate Init: OpenCL library not loaded - dlopen failed: library '
                     '"libOpenCL.so" not found')
            _runtime("ERROR", "TfLiteGpuDelegate Prepare: delegate is not initialized")
            _runtime("ERROR", "Node number 0 (TfLiteGpuDelegateV2) failed to prepare.")
            _runtime("ERROR", "Restored original execution plan after delegate application failure.")
            _error("Failed to apply GPU delegate.")
            return False
        if replaced:
            _runtime("INFO", f"Replacing {len(replaced)} out of {total} node(s) with delegate "
                     f"(TfLiteGpuDelegateV2) node, yielding {_subsets(self.plan, replaced)} partitions "
                     "for the whole graph.")
            _runtime("INFO", "Initialized OpenCL-based API.")
            _runtime("INFO", f"Created {len(taken)} GPU delegate kernels.")
        self.plan = [n for n in self.plan if n not in replaced]
        self.groups += [("TfLiteGpuDelegateV2", sorted(part)) for part in taken]
        return self.report("GPU", len(taken))

    def report_xnnpack(self) -> bool:
        ops = self.interpreter._get_ops_details()
        covered = _xnnpack_covered(ops)
        remaining = [n for n in self.plan if n not in covered]
        parts = _partitions(self.plan, covered)
        kernels = len(parts)
        if covered:
            _runtime("INFO", f"Replacing {len(covered & set(self.plan))} out of {len(self.plan)} node(s) with delegate "
                     f"(TfLiteXNNPackDelegate) node, yielding {_subsets(self.plan, covered)} partitions for the "
                     "whole graph.")
        self.groups += [("TfLiteXNNPackDelegate", part) for part in parts]
        self.plan = remaining
        return self.report("XNNPACK", kernels)

    def report(self, name: str, kernels: int) -> bool:
        self.kernels += kernels
        fully = kernels == 1 and self.kernels == 1 and not self.plan
        if self.p["require_full_delegation"] and not fully:
            _error("Disallowed CPU fallback detected.")
            return False
        if fully:
            _info(f"Explicitly applied {name} delegate, and the model graph will be completely executed by "
                  "the delegate.")
        elif kernels > 0:
            _info(f"Explicitly applied {name} delegate, and the model graph will be partially executed by the "
                  f"delegate w/ {kernels} delegate kernels.")
        else:
            _info(f"Though {name} delegate is explicitly applied, the model graph will not be executed by the "
                  "delegate.")
        return True

    def prepare_input_data(self) -> None:
        """PrepareInputData: value files (exact tensor bytes) or random values."""
        import numpy as np

        rng = np.random.default_rng()
        for i, d in enumerate(self.interpreter.get_input_details()):
            info = self.inputs[i] if self.inputs else None
            dtype = np.dtype(d["dtype"]) if d["dtype"] is not bytes else None
            shape = tuple(int(x) for x in d["shape"])
            if info and info["file"]:
                path = info["file"]
                try:
                    with open(path, "rb") as f:
                        raw = f.read()
                except OSError:
                    _fatal(f"Failed to read the input_layer_value_file:{path}")
                if dtype is None:
                    strings = [raw] if path.endswith(".pb") else raw.split(b"\0")
                    if not path.endswith(".pb"):
                        if strings and strings[-1] == b"":
                            strings.pop()
                        want = int(np.prod(shape))
                        if len(strings) != want:
                            _fatal(f"The number of string in the input_layer_value_file({path}) is "
                                   f"{len(strings)}. It should be {want}.")
                    else:
                        _info(f"Read {len(raw)} bytes data from {path}.")
                    self.input_data.append(np.array(strings, dtype=object).reshape(shape if len(strings) > 1 else (1,)))
                    continue
                want = int(np.prod(shape)) * dtype.itemsize
                if len(raw) != want:
                    _fatal(f"The size of {path} is {len(raw)} bytes. It should be {want} bytes.")
                self.input_data.append(np.frombuffer(raw, dtype=dtype).reshape(shape))
                continue
            if dtype is None:
                text = b"we're have some friends over saturday to hang out in the yard"
                self.input_data.append(np.array([text] * int(np.prod(shape)), dtype=object).reshape(shape))
                continue
            low, high = info["range"] if info and info["range"] else _data_range(dtype)
            if dtype.kind == "f":
                data = rng.uniform(low, high, size=shape).astype(dtype)
            elif dtype.kind == "b":
                data = rng.integers(0, 2, size=shape).astype(dtype)
            else:
                data = rng.integers(int(low), int(high) + 1, size=shape).astype(dtype)
            self.input_data.append(data)

    def run_loop(self, min_num_times: int, min_secs: float, max_secs: float, warmup: bool) -> tuple[Stat, bool]:
        """BenchmarkModel::Run(min_num_times, min_secs, max_secs, ...)."""
        p = self.p
        it = self.interpreter
        stats = Stat()
        _info(f"Running benchmark for at least {min_num_times} iterations and at least {_g(min_secs)} seconds "
              f"but terminate if exceeding {_g(max_secs)} seconds.")
        if os.environ.get("EDGEOPT_STANDIN_HANG") == "1":
            while True:
                time.sleep(3600)
        now_us = _now_us()
        min_finish_us = now_us + int(min_secs * 1e6)
        max_finish_us = now_us + int(max_secs * 1e6)
        ok = True
        sleep_s = p["run_delay"]
        frequency = p["run_frequency"]
        gap = 1.0 / frequency if frequency else math.inf
        next_finish = now_us * 1e-6 + gap
        inputs = [d["index"] for d in it.get_input_details()]
        run = 0
        while (run < min_num_times or now_us < min_finish_us) and now_us <= max_finish_us:
            for index, data in zip(inputs, self.input_data):
                it.set_tensor(index, data)
            start = time.perf_counter_ns()
            try:
                it.invoke()
                if self.delay_s:
                    time.sleep(self.delay_s)
                if self.op_delay_ms:
                    time.sleep(sum(self.op_delay_ms.values()) / 1e3)
            except (RuntimeError, ValueError) as exc:
                _runtime("ERROR", str(exc).strip())
                ok = False
            duration_us = (time.perf_counter_ns() - start) // 1000
            stats.add(duration_us)
            if frequency > 0:
                sleep_s = next_finish - _now_us() * 1e-6
                next_finish += gap
            if sleep_s > 0:
                time.sleep(sleep_s)
            now_us = _now_us()
            run += 1
        _info(f"{stats}\n")
        if not warmup:
            self.run_stats = stats
        return stats, ok

    # -- op profiling: ProfilingListener + ProfileSummaryDefaultFormatter + StatsCalculator --

    def _op_cost(self, op: dict) -> float:
        """Multiply-accumulates of one node, from its tensor shapes (a static estimate)."""
        import numpy as np

        def shape(t: int) -> list[int]:
            try:
                return [int(d) for d in self.interpreter._get_tensor_details(t, 0)["shape"]]
            except Exception:
                return []

        outs = [t for t in op["outputs"] if t >= 0]
        out_elems = sum(int(np.prod(shape(t))) for t in outs) or 1
        ins = [t for t in op["inputs"] if t >= 0]
        name = op["op_name"]
        if name in ("CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV") and len(ins) >= 2:
            w = shape(ins[1])
            per_out = int(np.prod(w)) // max(1, w[0]) if w else 1
            return float(out_elems * max(1, per_out))
        if name == "DEPTHWISE_CONV_2D" and len(ins) >= 2:
            w = shape(ins[1])
            return float(out_elems * max(1, int(np.prod(w[1:3])) if len(w) >= 3 else 1))
        return float(out_elems + sum(int(np.prod(shape(t))) for t in ins[:1]))

    def _exec_plan(self) -> list[tuple[int, str, str, float, float]]:
        """(node index, type, name, cost, planted ms) in execution order, delegate kernels
        in place of the nodes they took (new node indices after the model's own)."""
        ops = [op for op in self.interpreter._get_ops_details() if op["op_name"] != "DELEGATE"]
        by_index = {op["index"]: op for op in ops}

        def tensor_name(t: int) -> str:
            try:
                return str(self.interpreter._get_tensor_details(t, 0)["name"])
            except Exception:
                return "Unknown"

        first_of = {members[0]: (k, name, members) for k, (name, members) in enumerate(self.groups) if members}
        in_group = {n for _name, members in self.groups for n in members}
        plan = []
        for op in ops:
            n = op["index"]
            if n in first_of:
                k, name, members = first_of[n]
                outs = by_index[members[-1]]["outputs"]
                label = "[" + ", ".join(tensor_name(t) for t in outs) + f"]:{len(ops) + k}"
                plan.append((len(ops) + k, name, label, sum(self._op_cost(by_index[m]) for m in members),
                             sum(self.op_delay_ms.get(m, 0.0) for m in members)))
            elif n not in in_group:
                label = "[" + ", ".join(tensor_name(t) for t in op["outputs"]) + f"]:{n}"
                plan.append((n, op["op_name"], label, self._op_cost(op), self.op_delay_ms.get(n, 0.0)))
        return plan

    def print_op_profile(self, init_us: int) -> None:
        stats = self.run_stats
        if stats is None or not stats.values:
            return
        plan = self._exec_plan()
        total_cost = sum(c for _i, _t, _n, c, _d in plan) or 1.0
        planted_us = sum(d for *_x, d in plan) * 1000.0
        rows = []  # (index, type, name, Stat of us per run)
        for index, kind, name, cost, delay in plan:
            st = Stat()
            for run_us in stats.values:
                st.add(int(max(0.0, run_us - planted_us) * cost / total_cost + delay * 1000.0))
            rows.append((index, kind, name, st))
        init = Stat()
        init.add(init_us)
        init_text = _stats_tables([(0, "AllocateTensors", "AllocateTensors/0", init)], init)
        run_total = Stat()
        for r in range(stats.count):
            run_total.add(sum(st.values[r] for *_x, st in rows))
        _info("Profiling Info for Benchmark Initialization:\n" + init_text)
        _info("Operator-wise Profiling Info for Regular Benchmark Runs:\n" + _stats_tables(rows, run_total))

    def save_outputs(self) -> None:
        """OutputSaver::OnBenchmarkEnd: every output tensor's raw bytes, in output order."""
        import numpy as np

        path = self.p["output_filepath"]
        if not path:
            return
        try:
            with open(path, "wb") as f:
                for d in self.interpreter.get_output_details():
                    value = self.interpreter.get_tensor(d["index"])
                    if value.dtype == object:
                        continue  # string tensors: not emulated
                    f.write(np.ascontiguousarray(value).tobytes())
        except OSError:
            pass  # std::ofstream that is not good(): silently nothing

    def save_result(self, init_us: int, warmup: Stat, inference: Stat, init_kb: int, overall_kb: int,
                    peak_mb: float, model_mb: float, input_bytes: int) -> None:
        """ProtoBenchmarkReporter: a tflite.tools.benchmark.BenchmarkResult proto."""
        path = self.p["result_file_path"]
        if not path:
            return
        total_s = sum(inference.values) / 1e6
        throughput = (input_bytes / (1024 * 1024)) * inference.count / total_s if total_s > 0 else 0.0
        latency = b"".join([
            _pb_float(1, inference.avg() / 1000.0), _pb_float(2, min(inference.values or [0]) / 1000.0),
            _pb_float(3, max(inference.values or [0]) / 1000.0), _pb_float(4, inference.std_deviation() / 1000.0),
            _pb_float(5, inference.percentile(50) / 1000.0), _pb_float(6, inference.percentile(5) / 1000.0),
            _pb_float(7, inference.percentile(95) / 1000.0), _pb_float(8, init_us / 1000.0),
            _pb_float(9, warmup.first() / 1000.0), _pb_float(10, warmup.avg() / 1000.0),
        ])
        memory = _pb_varint_field(1, init_kb) + _pb_varint_field(2, overall_kb)
        if peak_mb > 0:
            memory += _pb_float(3, peak_mb)
        misc = (_pb_float(1, model_mb) + _pb_varint_field(2, inference.count) + _pb_varint_field(3, warmup.count)
                + _pb_float(4, throughput))
        result = _pb_bytes(2, latency) + _pb_bytes(3, memory) + _pb_bytes(4, misc)
        try:
            with open(path, "wb") as f:
                _info(f"Saving benchmark result to: {path}")
                f.write(result)
            _info(f"Saved benchmark result to: {path}")
        except OSError:
            _error(f"Failed to save benchmark result to: {path}")

    def run(self) -> bool:
        """BenchmarkModel::Run()."""
        import ai_edge_litert.interpreter  # noqa: F401  (linked in, in the real tool)
        import numpy as np

        p = self.p
        if not self.validate():
            return False
        log_params(p)
        monitor = None
        if p["report_peak_memory_footprint"]:
            monitor = _PeakMonitor(p["memory_footprint_check_interval_ms"])
            monitor.start()
        try:
            model_size_mb = os.path.getsize(p["graph"]) / 1e6
        except OSError:
            model_size_mb = -1e-6
        start_kb = _footprint_kb()
        init_start = _now_us()
        if not self.init():
            return False
        init_kb = _footprint_kb() - start_kb
        init_us = _now_us() - init_start
        if model_size_mb > 0:
            _info(f"The input model file size (MB): {_g(model_size_mb)}")
        else:
            _warn("Failed to get the input model file size.")
        _info(f"Initialized session in {_g(init_us / 1e3)}ms.")
        _maybe_fault()
        self.prepare_input_data()
        input_bytes = sum(int(np.asarray(x).nbytes) for x in self.input_data)
        if p["dry_run"]:
            p.values.update(warmup_runs=0, warmup_min_secs=-1.0, num_runs=0, min_secs=-1.0)
        warmup, ok = self.run_loop(p["warmup_runs"], p["warmup_min_secs"], p["max_secs"], warmup=True)
        if not ok:
            return False
        inference, ok = self.run_loop(p["num_runs"], p["min_secs"], p["max_secs"], warmup=False)
        overall_kb = _footprint_kb() - start_kb
        peak_mb = monitor.stop() if monitor else -1.0
        # BenchmarkLoggingListener::OnBenchmarkEnd
        _info(f"Inference timings in us: Init: {init_us}, First inference: {warmup.first()}, "
              f"Warmup (avg): {_g(warmup.avg())}, Inference (avg): {_g(inference.avg())}")
        _info("Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE "
              "to the actual memory footprint of the model at runtime. Take the information at your discretion.")
        _info(f"Memory footprint delta from the start of the tool (MB): init={_g(init_kb / 1024.0)} "
              f"overall={_g(overall_kb / 1024.0)}")
        if peak_mb > 0:
            _info(f"Overall peak memory footprint (MB) via periodic monitoring: {_g(peak_mb)}")
            rss, shared = _statm_mb()
            _info("Memory status at the end of exeution:")
            _info(f"- VmRSS              : {rss} MB")
            _info(f"+ RssAnnon           : {rss - shared} MB")
            _info(f"+ RssFile + RssShmem : {shared} MB")
        if p["enable_op_profiling"] and p["op_profiling_output_mode"] == "stdout":
            self.print_op_profile(init_us)
        self.save_result(init_us, warmup, inference, init_kb, overall_kb, peak_mb, model_size_mb, input_bytes)
        self.save_outputs()
        return ok


def _field(width: int, value: str) -> str:
    """InitField: a tab, then right-aligned in ``width``."""
    return "\t" + value.rjust(width)


def _stats_tables(rows: list, run_total: Stat) -> str:
    """StatsCalculator::GetOutputString with show_run_order, show_time and show_type
    (ProfileSummaryDefaultFormatter's options), then GetShortSummary, as the real tool."""
    total = sum(run_total.values) or 1
    runs = max(1, run_total.count)

    def header(title: str) -> str:
        return (f"============================== {title} ==============================\n"
                + _field(40, "[node type]") + _field(9, "[first]") + _field(9, "[avg ms]") + _field(8, "[%]")
                + _field(8, "[cdf%]") + _field(10, "[mem KB]") + _field(9, "[times called]") + "\t[Name]")

    def table(title: str, ordered: list) -> str:
        lines, cdf = [header(title)], 0
        for _i, kind, name, st in ordered:
            cdf += sum(st.values)
            lines.append(_field(40, kind) + _field(9, f"{st.first() / 1000.0:.3f}") + _field(9, f"{st.avg() / 1000.0:.3f}")
                         + _field(7, f"{sum(st.values) * 100.0 / total:.3f}") + "%"
                         + _field(7, f"{cdf * 100.0 / total:.3f}") + "%" + _field(10, "0.000")
                         + _field(9, str(st.count // runs)) + f"\t{name}")
        return "\n".join(lines) + "\n\n"

    by_time = sorted(rows, key=lambda r: r[3].avg(), reverse=True)
    out = table("Run Order", rows) + table("Top by Computation Time", by_time)
    types: dict[str, list[int]] = {}
    for _i, kind, _n, st in rows:
        t = types.setdefault(kind, [0, 0, 0])
        t[0] += 1
        t[1] += sum(st.values) // runs
        t[2] += st.count // runs
    acc = sum(v[1] for v in types.values()) or 1
    out += f"Number of nodes executed: {len(rows)}\n"
    out += "============================== Summary by node type ==============================\n"
    out += (_field(40, "[Node type]") + _field(9, "[count]") + _field(10, "[avg ms]") + _field(11, "[avg %]")
            + _field(11, "[cdf %]") + _field(10, "[mem KB]") + _field(10, "[times called]") + "\n")
    cdf_pct = 0.0
    for kind, (count, us, called) in sorted(types.items(), key=lambda kv: kv[1][1], reverse=True):
        pct = us * 100.0 / acc
        cdf_pct += pct
        out += (_field(40, kind) + _field(9, str(count)) + _field(10, f"{us / 1000.0:.3f}")
                + _field(10, f"{pct:.3f}") + "%" + _field(10, f"{cdf_pct:.3f}") + "%" + _field(10, "0.000")
                + _field(9, str(called)) + "\n")
    out += "\n"
    out += f"Timings (microseconds): {run_total}\nMemory (bytes): count=0\n{len(rows)} nodes observed\n\n"
    return out


def _node_map(text: str, default: float | None = None) -> dict[int, float]:
    """``N:MS,N:MS`` (or ``N,N`` with ``default``) -> {node: ms}; malformed items are ignored."""
    out: dict[int, float] = {}
    for item in text.split(","):
        node, _, ms = item.strip().partition(":")
        try:
            out[int(node)] = float(ms) if ms else float(default if default is not None else "x")
        except ValueError:
            continue
    return out


def split_name_and_file(item: str) -> tuple[str, str] | None:
    """SplitInputLayerNameAndValueFile: one unescaped ':' separates; '::' is a literal ':'."""
    delim = -1
    i = 0
    while i < len(item) - 1:
        if item[i] == ":":
            if item[i + 1] == ":":
                i += 1
            elif delim == -1:
                delim = i
            else:
                _error(f"{item} contains more than one delimiter.")
                return None
        i += 1
    if delim == -1:
        _error(f"{item} doesn't contain any delimiter.")
        return None
    return item[:delim].replace("::", ":"), item[delim + 1:].replace("::", ":")


def _data_range(dtype) -> tuple[float, float]:
    """utils::GetDataRangesForType."""
    name = dtype.name
    if dtype.kind == "f":
        return -0.5, 0.5
    return {"uint8": (0, 254), "int8": (-127, 127), "int16": (-32767, 32767), "bool": (0, 1)}.get(name, (0, 99))


def _now_us() -> int:
    return time.perf_counter_ns() // 1000


def _statm_mb() -> tuple[int, int]:
    try:
        with open("/proc/self/statm") as f:
            fields = [int(x) for x in f.read().split()[:3]]
    except OSError:
        return 0, 0
    page = os.sysconf("SC_PAGE_SIZE")
    return fields[1] * page >> 20, fields[2] * page >> 20


def _maybe_fault() -> None:
    crash = os.environ.get("EDGEOPT_STANDIN_CRASH", "")
    code = os.environ.get("EDGEOPT_STANDIN_EXIT", "")
    pid = os.getpid()
    if crash in ("segv", "abort"):
        signum, name, detail = (11, "SIGSEGV", "code 1 (SEGV_MAPERR), fault addr 0x0") if crash == "segv" else (
            6, "SIGABRT", "code -1 (SI_QUEUE)")
        sys.stdout.flush()
        sys.stderr.write(f"Fatal signal {signum} ({name}), {detail} in tid {pid} (benchmark_model), "
                         f"pid {pid} (benchmark_model)\n")
        _die(signum)
    if code:
        sys.stdout.flush()
        sys.exit(int(code))


def _pb_key(field: int, wire: int) -> bytes:
    return _pb_varint((field << 3) | wire)


def _pb_varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _pb_varint_field(field: int, value: int) -> bytes:
    return _pb_key(field, 0) + _pb_varint(int(value))


def _pb_float(field: int, value: float) -> bytes:
    return _pb_key(field, 5) + struct.pack("<f", value)


def _pb_bytes(field: int, data: bytes) -> bytes:
    return _pb_key(field, 2) + _pb_varint(len(data)) + data


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    _info("STARTING!")
    params = Params()
    ok, rest = parse_flags(argv, params)
    if not ok or params["help"]:
        _error(_usage(argv[0] if argv else "benchmark_model"))
        _error("Benchmarking failed.")
        return 1
    if rest:
        _warn(f"Unconsumed cmdline flags: {' '.join(rest)}")
    if not Benchmark(params, argv[0]).run():
        _error("Benchmarking failed.")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
