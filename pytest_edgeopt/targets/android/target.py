"""Android targets: TFLite's ``benchmark_model`` on a phone, driven over adb.

``android_gpu`` runs it with the GPU delegate (``--use_gpu=true``), ``android_cpu`` on the
phone's CPU with the XNNPACK delegate (``--use_xnnpack=true``). Everything goes through an
adb server (adbutils speaks its client protocol; see :mod:`pytest_edgeopt.targets.android.server`)
and one :class:`~pytest_edgeopt.targets.android.link.DeviceLink` per device.

On the device, everything lives in the session's run directory
(:mod:`pytest_edgeopt.targets.android.rundir`): the ``benchmark_model`` binary, the models
and the eval data. :meth:`AndroidTarget.close` releases it (the last target of a device
removes it). Nothing is written outside the run directory.

Faults, per step (push, run, pull...):

- no answer within ``step_timeout_s`` -> :class:`TargetError` naming device and step;
- the device drops off adb mid-step -> reconnect (``adb disconnect``/``connect`` for
  ``HOST:PORT`` serials, then poll for state ``device``) and retry the step once, then
  :class:`TargetError` naming device and step; a device that did not come back fails
  each later step at once (after one quick reconnect attempt);
- ``benchmark_model`` exits non-zero -> :class:`TargetError` with the exit code (and the
  signal's name for 128+N) and the tail of its output;
- no binary, or one the device cannot execute (wrong ABI: exit 126, ``Exec format error``,
  ``not executable``) -> :class:`TargetUnavailable` naming ``--edgeopt-benchmark-model``;
- the device's storage is full on push -> :class:`TargetError` saying so and how many
  bytes were needed.

Plain Python (no pytest); tensorflow is never imported.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import statistics
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from pytest_edgeopt.results import LatencyStats
from pytest_edgeopt.targets.android.android_profile import build_profile
from pytest_edgeopt.targets.android.benchmark_output import (
    BenchmarkOutput,
    BenchmarkOutputError,
    output_tail,
    parse_benchmark_output,
)
from pytest_edgeopt.targets.android.commands import (
    benchmark_args,
    flag_safe_input_name,
    predict_script,
    shell_join,
)
from pytest_edgeopt.targets.android.health_readings import read_device_conditions
from pytest_edgeopt.targets.android.link import DeviceLink, ShellResult
from pytest_edgeopt.targets.android.rundir import RunDir
from pytest_edgeopt.targets.android.server import client_for, default_adb_address
from pytest_edgeopt.targets.android.validation import (
    ELF_ABIS,
    ELF_NAMES,
    describe_exit,
    elf_machine,
    sha256_file,
    validate_affinity_mask,
    validate_remote_path,
    validate_serial,
)
from pytest_edgeopt.targets.base import (
    Device,
    LatencyResult,
    LatencySettings,
    TargetError,
    TargetUnavailable,
    VariantBroken,
)
from pytest_edgeopt.tensors import (
    ModelIO,
    TensorSpec,
    from_model_output,
    to_model_input,
)

__all__ = ["BENCHMARK_MODEL_OPTION", "HOW_TO_GET_BENCHMARK_MODEL", "AndroidTarget"]

#: The plugin option that names the host-side benchmark_model binary.
BENCHMARK_MODEL_OPTION = "--edgeopt-benchmark-model"

#: Where to get the binary, quoted by every "no usable benchmark_model" skip.
HOW_TO_GET_BENCHMARK_MODEL = (
    f"pass {BENCHMARK_MODEL_OPTION}=PATH to an Android build of TFLite's benchmark_model for the "
    "device's ABI (prebuilt nightlies: android_aarch64_benchmark_model, android_arm_benchmark_model; "
    "or `bazel build -c opt --config=android_arm64 //tflite/tools/benchmark:benchmark_model` in LiteRT)"
)

#: What a device says when it cannot run the binary at all (wrong ABI, not executable).
_EXEC_FAILURE_RE = re.compile(
    r"Exec format error|not executable|cannot execute|wrong ELF class|is \d+-bit instead of \d+-bit"
    r"|unexpected e_machine|syntax error: .*unexpected",
    re.IGNORECASE,
)
#: benchmark_model lines that say the device has no GPU the delegate can use (not the model's fault).
_NO_GPU_RE = re.compile(
    r"OpenCL library not loaded|libOpenCL\S* not found|GPU acceleration is unsupported|"
    r"(?:EGL|OpenGL|GLES)\S* (?:is )?not (?:available|supported)|No GPU (?:found|available)",
    re.IGNORECASE,
)


class AndroidTarget:
    """``benchmark_model`` on one Android device: ``gpu=True`` is ``android_gpu`` (GPU
    delegate), ``gpu=False`` is ``android_cpu`` (XNNPACK).

    ``adb`` is the adb server address (default: the device's ``details["adb_server"]``,
    else :func:`~pytest_edgeopt.targets.android.server.default_adb_address`); ``benchmark_model`` the
    host path of an Android build of the tool (the ``--edgeopt-benchmark-model`` option);
    ``threads`` the interpreter threads (default: ``LatencySettings.threads``);
    ``affinity_mask`` a hex CPU mask to pin the tool with ``taskset`` (big cores differ per
    device); ``step_timeout_s`` bounds each push, run and pull, ``reconnect_timeout_s``
    the wait for a device that dropped off adb (default: ``step_timeout_s``, at most
    30 s); ``run_dir`` a fixed directory under /data/local/tmp to reuse across sessions
    (kept on close, with its binary; no owner marker, so no sweep ever removes it)
    instead of a fresh random one; ``repeats`` how many times :meth:`latency` runs the
    tool; ``predict_batch`` the most eval samples per invocation.
    """

    def __init__(
        self,
        name: str,
        device: Device,
        *,
        adb: str | None = None,
        benchmark_model: Path | str | None,
        gpu: bool,
        threads: int | None = None,
        affinity_mask: str | None = None,
        step_timeout_s: float = 120.0,
        run_dir: str | None = None,
        repeats: int = 5,
        gpu_precision_loss_allowed: bool | None = None,
        predict_batch: int = 64,
        reconnect_timeout_s: float | None = None,
        op_profiling: bool = True,
    ) -> None:
        self.name = name
        self.device = device
        self.gpu = gpu
        self.threads = threads
        self.affinity_mask = validate_affinity_mask(affinity_mask) if affinity_mask else None
        self.benchmark_model = Path(benchmark_model) if benchmark_model else None
        self.repeats = max(1, int(repeats))
        self.gpu_precision_loss_allowed = gpu_precision_loss_allowed
        self.predict_batch = max(1, int(predict_batch))
        self.op_profiling = op_profiling
        self.run_dir_arg = validate_remote_path(run_dir) if run_dir else None
        serial = validate_serial(device.id)
        self.adb = adb or str(device.details.get("adb_server") or "") or default_adb_address()
        self.link = DeviceLink(
            client_for(self.adb),
            serial,
            step_timeout_s=step_timeout_s,
            reconnect_timeout_s=reconnect_timeout_s,
            who=f"{name} on {serial}",
        )
        self._rundir: RunDir | None = None
        self._binary: str | None = None
        self._run_count = 0

    def __repr__(self) -> str:
        return f"AndroidTarget({self.name!r}, {self.device.id!r}, adb={self.adb!r})"

    # -- set-up -----------------------------------------------------------------------

    def _check_host_binary(self) -> tuple[Path, str]:
        path = self.benchmark_model
        if path is None:
            raise TargetUnavailable(f"{self.link.who}: no benchmark_model binary given: {HOW_TO_GET_BENCHMARK_MODEL}")
        if not path.is_file():
            raise TargetUnavailable(
                f"{self.link.who}: benchmark_model binary {str(path)!r} does not exist: {HOW_TO_GET_BENCHMARK_MODEL}"
            )
        machine = elf_machine(path)
        abis = [a for a in str(self.device.details.get("abilist") or self.device.details.get("abi") or "").split(",") if a]
        if machine is not None and abis and not set(ELF_ABIS.get(machine, ())) & set(abis):
            raise TargetUnavailable(
                f"{self.link.who}: benchmark_model binary {str(path)!r} is built for "
                f"{ELF_NAMES.get(machine, f'ELF machine {machine}')} but the device runs {', '.join(abis)}: "
                f"{HOW_TO_GET_BENCHMARK_MODEL}"
            )
        return path, sha256_file(path)

    def prepare(self) -> None:
        """Create the run directory and push ``benchmark_model`` (once per device per
        session). Called by :meth:`latency`/:meth:`predict`; call it early to fail fast."""
        if self._binary is not None:
            return
        local, sha = self._check_host_binary()
        if self._rundir is None:
            self._rundir = RunDir.acquire(self.link, self.run_dir_arg)
        self._rundir.ensure(self.link)
        self._binary = self._rundir.ensure_binary(self.link, local, sha)

    def close(self) -> None:
        """Remove the run directory (when this is the last target using it). Best effort:
        a device that is gone by then gets a ``RuntimeWarning``, not an error."""
        rd, self._rundir, self._binary = self._rundir, None, None
        if rd is not None:
            try:
                rd.release(self.link)
            except TargetError as e:
                later = " (the next session that uses the device removes it)" if rd.owned else ""
                warnings.warn(f"could not remove {rd.path}{later}: {e}", RuntimeWarning, stacklevel=2)

    @property
    def run_dir(self) -> str | None:
        """The device directory this target uses (``None`` before the first run)."""
        return self._rundir.path if self._rundir else None

    # -- running the tool -------------------------------------------------------------

    def _delegate_flags(self, threads: int) -> dict[str, Any]:
        return {
            "gpu": self.gpu,
            "threads": threads,
            "gpu_precision_loss_allowed": self.gpu_precision_loss_allowed,
            "affinity_mask": self.affinity_mask,
        }

    def _pid_file(self) -> str:
        """A fresh pid file name per run: a run that never started leaves none behind."""
        assert self._rundir is not None
        self._run_count += 1
        return f"{self._rundir.path}/run-{os.getpid()}-{self._run_count}.pid"

    def _kill_stale(self, pid_file: str) -> None:
        """After a timeout: stop the run left on the device, by the pid it wrote."""
        q = shlex.quote(pid_file)
        # Only that pid, and only while it still is a benchmark_model run (pids get reused).
        cmd = (
            f"p=$(cat {q} 2>/dev/null); [ -n \"$p\" ] && grep -q benchmark_model /proc/$p/cmdline 2>/dev/null "
            f"&& {{ pkill -P \"$p\" 2>/dev/null; kill \"$p\" 2>/dev/null; }}; rm -f {q}; true"
        )
        try:
            DeviceLink(self.link.client, self.link.serial, step_timeout_s=5.0, who=self.link.who).shell(
                "stop the timed-out run", cmd, retry=False
            )
        except TargetError:
            pass

    def _run_tool(self, step: str, script: str, pid_file: str, *, deadline_s: float | None = None) -> ShellResult:
        try:
            res = self.link.shell(step, script, deadline_s=deadline_s)
        except TargetError as e:
            if "timed out" in str(e):
                self._kill_stale(pid_file)
            raise
        if res.returncode != 0:
            self._raise_for_exit(step, res)
        return res

    def _raise_for_exit(self, step: str, res: ShellResult) -> None:
        tail = output_tail(res.output)
        if res.returncode == 126 or _EXEC_FAILURE_RE.search(res.output):
            abi = self.device.details.get("abi") or "unknown ABI"
            raise TargetUnavailable(
                f"{self.link.who}: the device cannot execute benchmark_model {str(self.benchmark_model)!r} "
                f"(step '{step}', {describe_exit(res.returncode)}; device ABI {abi}): {tail}\n"
                f"{HOW_TO_GET_BENCHMARK_MODEL}"
            )
        if self.gpu and _NO_GPU_RE.search(res.output):
            raise TargetUnavailable(
                f"{self.link.who}: the device has no GPU that TFLite's GPU delegate can use "
                f"(step '{step}', {describe_exit(res.returncode)}): {tail}"
            )
        raise VariantBroken(  # it runs other models: this one is the cause
            f"{self.link.who}: benchmark_model failed in step '{step}' with {describe_exit(res.returncode)}; "
            f"output ended with:\n{tail or '<no output>'}"
        )

    def latency(self, model: Path, settings: LatencySettings) -> LatencyResult:
        """Run ``benchmark_model`` ``repeats`` times on the model.

        Each run does ``settings.warmup`` warm-up invokes, then at least
        ``ceil(min_samples / repeats)`` timed invokes and ``min_time_s / repeats`` seconds
        (at most ``max_time_s / repeats``). **A sample is one run's mean latency** (the tool
        prints aggregates, not per-invoke times), so ``stats`` has ``repeats`` samples,
        each a mean of many invokes; the tool's own per-invoke min/median/p95 of every run
        are in ``extras["benchmark"]["runs"]``. ``init_ms``/``first_inference_ms`` are the
        medians over the runs; memory figures the maxima. With ``op_profiling`` (default),
        one more short run with ``--enable_op_profiling=true`` gives the per-op times;
        ``profile`` holds warm-up, peak memory, placement and those times
        (:func:`~pytest_edgeopt.targets.android.android_profile.build_profile`).
        """
        self.prepare()
        assert self._rundir is not None and self._binary is not None
        remote_model = self._rundir.ensure_model(self.link, Path(model))
        threads = self.threads or settings.threads
        per_run = max(1, math.ceil(settings.min_samples / self.repeats))
        args = benchmark_args(
            self._binary,
            remote_model,
            warmup_runs=settings.warmup,
            num_runs=per_run,
            min_secs=settings.min_time_s / self.repeats,
            max_secs=max(settings.max_time_s / self.repeats, settings.min_time_s / self.repeats),
            report_peak_memory=True,
            **self._delegate_flags(threads),
        )
        outputs: list[BenchmarkOutput] = []
        for i in range(self.repeats):
            pid_file = self._pid_file()
            script = f"echo $$ > {shlex.quote(pid_file)}; exec {shell_join(args)} 2>&1"
            step = f"benchmark {Path(model).name} (run {i + 1}/{self.repeats})"
            res = self._run_tool(step, script, pid_file)
            try:
                outputs.append(parse_benchmark_output(res.output))
            except BenchmarkOutputError as e:
                raise TargetError(f"{self.link.who}: step '{step}': {e}") from None
        profiled = self._op_profile_run(model, remote_model, settings, threads, per_run) if self.op_profiling else None
        result = self._latency_result(outputs, args, threads)
        return replace(result, profile=build_profile(outputs, profiled, gpu=self.gpu))

    def _op_profile_run(self, model: Path, remote_model: str, settings: LatencySettings, threads: int,
                        per_run: int) -> BenchmarkOutput | None:
        """One more, short run with ``--enable_op_profiling=true`` (kept out of the timed
        samples: the profiler's per-op events add overhead); ``None`` if its output has no
        profile (a build without the profiler)."""
        assert self._binary is not None
        args = benchmark_args(self._binary, remote_model, warmup_runs=max(1, settings.warmup), num_runs=min(per_run, 20),
                              min_secs=0, report_peak_memory=False,
                              extra=["--enable_op_profiling=true"], **self._delegate_flags(threads))
        pid_file = self._pid_file()
        script = f"echo $$ > {shlex.quote(pid_file)}; exec {shell_join(args)} 2>&1"
        res = self._run_tool(f"op profile {Path(model).name}", script, pid_file)
        try:
            out = parse_benchmark_output(res.output)
        except BenchmarkOutputError as e:
            raise TargetError(f"{self.link.who}: step 'op profile {Path(model).name}': {e}") from None
        return out if out.ops else None

    def _latency_result(self, outputs: list[BenchmarkOutput], args: list[str], threads: int) -> LatencyResult:
        def med(values: list[float | None]) -> float | None:
            vals = [v for v in values if v is not None]
            return float(statistics.median(vals)) if vals else None

        def top(values: list[float | None]) -> float | None:
            vals = [v for v in values if v is not None]
            return float(max(vals)) if vals else None

        first = outputs[0]
        wanted = "GPU" if self.gpu else "XNNPACK"
        outcome = first.delegate(wanted)
        init_us = med([o.init_us if o.init_us is not None else (o.init_ms * 1000 if o.init_ms is not None else None) for o in outputs])
        first_us = med([o.first_inference_us if o.first_inference_us is not None else (o.warmup.first_us if o.warmup else None) for o in outputs])
        extras: dict[str, Any] = {
            "delegation": outcome.outcome if outcome else "none",
            "delegate_kernels": outcome.kernels if outcome else 0,
            "delegate": wanted,
            "memory_init_mb": top([o.memory_init_mb for o in outputs]),
            "memory_overall_mb": top([o.memory_overall_mb for o in outputs]),
            "peak_memory_mb": top([o.peak_memory_mb for o in outputs]),
            "sample": f"mean of one benchmark_model run ({first.inference.count}+ timed invokes)",
            "threads": threads,
            "affinity_mask": self.affinity_mask,
            "benchmark": {"command": args, "runs": [o.to_dict() for o in outputs]},
        }
        if outcome is None:
            extras["delegate_note"] = f"benchmark_model applied no {wanted} delegate (see its log)"
        stats = LatencyStats(tuple(float(o.inference.avg_us) for o in outputs))
        return LatencyResult(
            stats=stats,
            init_ms=init_us / 1000.0 if init_us is not None else None,
            first_inference_ms=first_us / 1000.0 if first_us is not None else None,
            extras=extras,
        )

    # -- accuracy on the device -------------------------------------------------------

    def predict(self, model: Path, inputs: np.ndarray) -> Sequence[np.ndarray]:
        """Run the eval inputs through the model **on the device**; float outputs, one
        array per model output, sample axis first.

        How (``tflite/tools/benchmark/benchmark_tflite_model.cc`` in google-ai-edge/LiteRT):

        - ``--input_layer=NAME --input_layer_shape=N,H,W,C`` are required for value files:
          the tool fills ``inputs_`` only from them (``PopulateInputLayerInfo``), maps the
          entries to the model's inputs *by position* (a name mismatch is only a warning),
          and calls ``ResizeInputTensor`` with the shape before ``AllocateTensors`` (a
          model that cannot take the shape fails there: "Failed to allocate tensors!").
        - ``--input_layer_value_files=NAME:PATH`` (items separated by ``,``; a ``:`` in the
          name written ``::``): ``LoadInputTensorData`` reads the raw file, which must be
          exactly the resized tensor's byte size (else a FATAL abort), and copies it into
          the tensor before *every* run (``ResetInputsAndOutputs``).
        - ``--output_filepath=PATH``: ``OutputSaver::OnBenchmarkEnd`` writes, after all
          runs, the raw bytes of every output tensor of the last invoke, in output order,
          back to back, no header.

        So: the inputs are quantized to the input's dtype (:func:`~pytest_edgeopt.tensors.to_model_input`),
        written as one little-endian raw file, pushed once; one shell command runs the tool
        with ``--warmup_runs=0 --num_runs=1`` on batches of up to ``predict_batch`` samples
        (``dd`` cuts the batches on the device) and concatenates the output files; one
        pull brings them back, and they are dequantized with
        :func:`~pytest_edgeopt.tensors.from_model_output`. A model whose batch axis cannot
        be resized (exit code 1, or outputs of the wrong size) is re-run in chunks of its
        own batch size (zero-padded), still in one shell command.
        """
        self.prepare()
        assert self._rundir is not None and self._binary is not None
        io = ModelIO.of_file(model)
        if len(io.inputs) != 1:
            raise TargetError(f"{self.link.who}: predict supports models with one input; this one has {len(io.inputs)}")
        spec = io.inputs[0]
        x = np.asarray(inputs)
        if x.ndim != len(spec.shape) or x.shape[0] < 1:
            raise TargetError(
                f"{self.link.who}: inputs of shape {x.shape} do not match the model input {spec.name!r} "
                f"of shape {spec.shape} (sample axis first)"
            )
        if spec.dtype.kind not in "fiub":
            raise TargetError(f"{self.link.who}: predict does not support {spec.dtype} inputs")
        n = int(x.shape[0])
        row_shape = tuple(int(d) for d in x.shape[1:])
        static_batch = spec.shape[0] if spec.shape[0] > 0 else 1
        q = to_model_input(x, spec).astype(spec.dtype.newbyteorder("<"), copy=False)
        file_rows = math.ceil(n / static_batch) * static_batch
        if file_rows > n:
            q = np.concatenate([q, np.zeros((file_rows - n, *row_shape), dtype=q.dtype)])
        data = np.ascontiguousarray(q).tobytes()
        row_bytes = len(data) // file_rows

        out_row_shapes = self._output_row_shapes(Path(model), io, row_shape)
        remote_model = self._rundir.ensure_model(self.link, Path(model))
        work = self._rundir.predict_dir
        input_path, output_path = f"{work}/inputs.raw", f"{work}/outputs.raw"
        self.link.push(f"push eval inputs ({n} samples, {len(data)} bytes)", data, input_path)

        threads = self.threads or 1
        run_args = benchmark_args(
            self._binary,
            remote_model,
            warmup_runs=0,
            warmup_min_secs=0,
            num_runs=1,
            min_secs=0,
            report_peak_memory=False,
            **self._delegate_flags(threads),
        )
        name = flag_safe_input_name(spec.name)
        plans = [min(n, self.predict_batch)]
        if plans[0] != static_batch or n % static_batch:
            plans.append(static_batch)
        errors: list[str] = []
        pid_file = self._pid_file()
        for attempt, chunk_rows in enumerate(plans):
            total = n if attempt == 0 else file_rows
            chunks = math.ceil(total / chunk_rows)
            script = predict_script(
                run_args,
                input_name=name,
                row_shape=row_shape,
                row_bytes=row_bytes,
                chunk_rows=chunk_rows,
                total_rows=total,
                file_rows=file_rows,
                input_path=input_path,
                work_dir=work,
                output_path=output_path,
                pid_file=pid_file,
            )
            step = f"predict {Path(model).name} ({n} samples, {chunks} batch{'es' if chunks > 1 else ''} of {chunk_rows})"
            try:
                res = self.link.shell(step, script, deadline_s=self.link.step_timeout_s * chunks)
            except TargetError as e:
                if "timed out" in str(e):
                    self._kill_stale(pid_file)
                raise
            last = attempt == len(plans) - 1
            if res.returncode != 0:
                if res.returncode == 1 and not last and not _EXEC_FAILURE_RE.search(res.output):
                    errors.append(f"batch of {chunk_rows}: {output_tail(res.output, lines=5)}")
                    continue  # the batch resize was refused: fall back to the model's own batch size
                self._raise_for_exit(step, res)
            raw = self.link.pull(f"pull outputs of {Path(model).name}", output_path)
            try:
                return self._decode(raw, io.outputs, out_row_shapes, chunk_rows, total, n)
            except ValueError as e:
                if last:
                    raise TargetError(f"{self.link.who}: step '{step}': {e}" + "".join(f"; earlier: {m}" for m in errors)) from None
                errors.append(f"batch of {chunk_rows}: {e}")
        raise AssertionError("unreachable")

    @staticmethod
    def _output_row_shapes(model: Path, io: ModelIO, row_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
        """Per-sample shape of each output: from the model's signature when static, else
        from the host interpreter with the input resized to one sample."""
        shapes = [tuple(s.shape[1:]) for s in io.outputs]
        if all(d >= 0 for shp in shapes for d in shp) and all(len(s.shape) >= 1 for s in io.outputs):
            return shapes
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(model_path=str(model))
        interp.resize_tensor_input(io.inputs[0].index, [1, *row_shape])
        interp.allocate_tensors()
        return [tuple(int(d) for d in o["shape"][1:]) for o in interp.get_output_details()]

    @staticmethod
    def _decode(
        raw: bytes,
        specs: Sequence[TensorSpec],
        row_shapes: Sequence[tuple[int, ...]],
        chunk_rows: int,
        total_rows: int,
        n: int,
    ) -> list[np.ndarray]:
        """Split the concatenated per-chunk output files into per-output float arrays."""
        per_row = [int(np.prod(shp, dtype=np.int64)) * s.dtype.itemsize for s, shp in zip(specs, row_shapes)]
        expected = total_rows * sum(per_row)
        if len(raw) != expected:
            raise ValueError(
                f"the output file has {len(raw)} bytes, expected {expected} "
                f"({total_rows} samples x {sum(per_row)} bytes of outputs per sample)"
            )
        parts: list[list[np.ndarray]] = [[] for _ in specs]
        offset = 0
        for start in range(0, total_rows, chunk_rows):
            rows = min(chunk_rows, total_rows - start)
            for j, (s, shp) in enumerate(zip(specs, row_shapes)):
                size = rows * per_row[j]
                arr = np.frombuffer(raw, dtype=s.dtype.newbyteorder("<"), count=size // s.dtype.itemsize, offset=offset)
                parts[j].append(arr.reshape((rows, *shp)))
                offset += size
        return [from_model_output(np.concatenate(p)[:n].astype(s.dtype), s) for p, s in zip(parts, specs)]

    # -- device health ----------------------------------------------------------------

    def device_conditions(self) -> dict[str, Any]:
        """Battery, temperature and thermal status of the device
        (:func:`~pytest_edgeopt.targets.android.health_readings.read_device_conditions`)."""
        return read_device_conditions(self.link)
