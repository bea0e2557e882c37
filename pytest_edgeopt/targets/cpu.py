"""The host CPU target: the LiteRT interpreter from ``ai-edge-litert``.

Latency: warm-up invokes, then timed invokes until both a minimum count and a minimum
time are reached; each sample is one ``invoke()`` timed with ``perf_counter_ns`` and
nothing else inside the timed region. Also measured: model load (``init_ms``), the first
invoke, the warm-up mean and the peak RSS growth of loading and running the model
(:mod:`pytest_edgeopt.targets.host_memory`); no per-op times (LiteRT's Python interpreter
has no profiler API). Accuracy: the eval set in batches (the input's
batch axis resized, else the model's own batch size), variable tensors (RNN state) reset
before each batch, or fed in order as one sequence for a stateful model; quantized I/O
converted with the tensors' scale and zero point.

Given a :class:`~pytest_edgeopt.workers.pool.WorkerPool` (the session attaches its own
through :meth:`CpuTarget.use_workers`), both run in the worker process, the timed loop
entirely inside it, so a native crash of the interpreter fails one measurement, naming
the stage (``load``: creating the interpreter, ``invoke``, ``teardown``: freeing it).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pytest_edgeopt.profile import Profile
from pytest_edgeopt.targets.base import HOST, Device, LatencyResult, LatencySettings, TargetError, VariantBroken
from pytest_edgeopt.targets.host_memory import SOURCE, PeakRss
from pytest_edgeopt.tensors import ModelIO, outputs_to_float, to_model_input
from pytest_edgeopt.timing import time_invokes
from pytest_edgeopt.workers.stage import stage

if TYPE_CHECKING:  # pragma: no cover
    from pytest_edgeopt.workers.pool import WorkerPool
    from pytest_edgeopt.workers.serve import WorkerState

#: Eval samples per invoke when the model accepts a resized batch axis.
EVAL_BATCH = 256


def make_interpreter(model: Path | bytes, threads: int = 1) -> tuple[Any, str]:
    """A LiteRT interpreter with tensors allocated, and the op resolver it uses.

    Tries the default resolver (XNNPACK) first; a model XNNPACK refuses to prepare (e.g.
    sparse int8, see FACTS) falls back to the builtin kernels without default delegates.
    XNNPACK is the fastest CPU path LiteRT 2.3 offers here: ``benchmarks/cpu_kernels.py``
    (2026-12-07, x86-64 AVX2, 1 thread) ran fp32 and int8 MobileNet/MobileNetV2 wholly in
    it, 2-3x faster than the builtin kernels; XNNPACK's "latest features" and the
    CompiledModel API were no faster; the reference kernels abort on int8 MobileNet.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    content = model if isinstance(model, bytes) else Path(model).read_bytes()
    last: Exception | None = None
    for resolver in (OpResolverType.AUTO, OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES):
        try:
            interp = Interpreter(model_content=content, num_threads=max(1, threads),
                                 experimental_op_resolver_type=resolver)
            interp.allocate_tensors()
            return interp, resolver.name
        except (RuntimeError, ValueError) as exc:
            last = exc
    raise VariantBroken(f"the LiteRT interpreter cannot load the model: {last}")


def sample_input(io: ModelIO, rng: np.random.Generator) -> list[np.ndarray]:
    """A deterministic input for timing, one per model input, batch of 1."""
    out = []
    for spec in io.inputs:
        shape = tuple(1 if d < 0 else d for d in spec.shape)
        x = rng.random(shape, dtype=np.float32)
        out.append(to_model_input(x, spec))
    return out


_runtime_warmed = False


def _warm_runtime(model: Path, threads: int) -> None:
    """Once per process: load and invoke ``model`` untimed, so the runtime's one-time set-up
    (library, XNNPACK, thread pool) is not charged to whichever variant is measured first."""
    global _runtime_warmed
    if _runtime_warmed:
        return
    _runtime_warmed = True
    interp, _ = make_interpreter(model, threads)
    io = ModelIO.of_interpreter(interp)
    for spec, x in zip(io.inputs, sample_input(io, np.random.default_rng(0))):
        interp.set_tensor(spec.index, x)
    time_invokes(interp.invoke, LatencySettings(warmup=1, min_samples=2, min_time_s=0.0))
    del interp


def measure_latency(model: Path, settings: LatencySettings) -> LatencyResult:
    """Latency of the ``.tflite`` at ``model`` in this process (see the module docstring)."""
    stage("load")
    _warm_runtime(model, settings.threads)
    peak = PeakRss()
    peak.start()
    t0 = time.perf_counter_ns()
    interp, resolver = make_interpreter(model, settings.threads)
    init_ns = time.perf_counter_ns() - t0
    io = ModelIO.of_interpreter(interp)
    for spec, x in zip(io.inputs, sample_input(io, np.random.default_rng(0))):
        interp.set_tensor(spec.index, x)
    stage("invoke")
    timed = time_invokes(interp.invoke, settings)
    peak_mb = peak.peak_mb()
    stage("teardown")
    del interp  # freed here, so a crash in the interpreter's destructor is blamed on teardown
    return LatencyResult(
        stats=timed.stats,
        init_ms=init_ns / 1e6,
        first_inference_ms=timed.first_ms,
        extras={"op_resolver": resolver, "threads": settings.threads},
        # No per-op times: ai_edge_litert's Python Interpreter has no profiler API (see docs/profiling.md).
        profile=Profile(warmup_mean_ms=timed.warmup_mean_ms, peak_memory_mb=peak_mb,
                        memory_source=SOURCE if peak_mb is not None else None),
    )


def run_predict(model: Path, inputs: np.ndarray | Sequence[np.ndarray], threads: int = 1,
                sequence: bool = False) -> list[np.ndarray]:
    """Float outputs of the ``.tflite`` at ``model`` for ``inputs`` (batch axis first), in this process;
    a model with several inputs takes a list of arrays, one per input in the ``.tflite``'s
    input order (:func:`pytest_edgeopt.tensors.arrange_inputs`), the same N each.

    Samples are independent: variable tensors (the hidden and cell state
    ``UNIDIRECTIONAL_SEQUENCE_LSTM`` keeps across ``invoke()``, see FACTS "Recurrent
    models") are reset before every invoke, so no sample sees the state another left.
    Batches of :data:`EVAL_BATCH` when the input's batch axis can be resized; otherwise
    (a batch-1 concrete-function model, or a resize the model refuses) in chunks of the
    model's own batch size, each with its own reset.

    ``sequence=True``: the model carries state across calls (a stateful RNN): the samples
    are fed in order, in chunks of the model's own batch size, with one reset before the
    first only.
    """
    stage("load")
    interp, _ = make_interpreter(model, threads)
    io = ModelIO.of_interpreter(interp)
    xs = [inputs] if isinstance(inputs, np.ndarray) else [np.asarray(a) for a in inputs]
    if len(xs) != len(io.inputs):
        names = ", ".join(s.name for s in io.inputs)
        raise TargetError(f"the model has {len(io.inputs)} inputs ({names}) but {len(xs)} input arrays were given")
    n = len(xs[0])
    first = io.inputs[0]
    own = max(1, int(interp.get_input_details()[0]["shape"][0])) if first.shape else 1
    dynamic = all(s.shape and s.shape[0] == -1 for s in io.inputs)
    batch = EVAL_BATCH if dynamic and not sequence else own
    if batch != own:
        try:
            for spec in io.inputs:
                interp.resize_tensor_input(spec.index, [batch, *spec.shape[1:]], strict=True)
            interp.allocate_tensors()
        except (RuntimeError, ValueError):
            batch = own
            interp, _ = make_interpreter(model, threads)
    stage("invoke")
    interp.reset_all_variables()
    chunks: list[list[np.ndarray]] = []
    for start in range(0, n, batch):
        real = min(batch, n - start)
        if not sequence and start:
            interp.reset_all_variables()
        for spec, xi in zip(io.inputs, xs):
            x = xi[start:start + batch]
            if real < batch:  # pad the last chunk to the allocated batch size
                x = np.concatenate([x, np.zeros((batch - real, *x.shape[1:]), dtype=x.dtype)])
            interp.set_tensor(spec.index, to_model_input(x, spec))
        interp.invoke()
        outs = [interp.get_tensor(o.index)[:real] for o in io.outputs]
        chunks.append(outputs_to_float(outs, io.outputs))
    stage("teardown")
    del interp
    return [np.concatenate([c[i] for c in chunks]) for i in range(len(io.outputs))]


class CpuTarget:
    """Runs models on the host CPU with ``threads`` interpreter threads; in ``workers``'
    worker process when given (see :meth:`use_workers`), else in this process."""

    def __init__(self, name: str = "cpu", device: Device = HOST, threads: int = 1,
                 workers: WorkerPool | None = None) -> None:
        self.name = name
        self.device = device
        self.threads = threads
        self.workers = workers

    def use_workers(self, workers: WorkerPool | None) -> None:
        """Run later measurements in ``workers`` (unless the target was given its own)."""
        if self.workers is None:
            self.workers = workers

    def latency(self, model: Path, settings: LatencySettings) -> LatencyResult:
        if self.workers is None:
            return measure_latency(model, settings)
        from pytest_edgeopt.workers.pool import MEASURE_TIMEOUT_S, MeasureCrashed

        result: LatencyResult = self.workers.call(LatencyRequest(Path(model).resolve(), settings),
                                                  timeout_s=MEASURE_TIMEOUT_S, crashed=MeasureCrashed)
        return result

    #: :meth:`predict` can evaluate a stateful model as one sequence (``sequence=True``).
    supports_sequence = True

    #: :meth:`predict` takes a list of arrays for a model with several inputs.
    supports_multi_input = True

    def predict(self, model: Path, inputs: np.ndarray | Sequence[np.ndarray],
                sequence: bool = False) -> Sequence[np.ndarray]:
        """Float outputs for ``inputs``; see :func:`run_predict` (resets, ``sequence``)."""
        if self.workers is None:
            return run_predict(model, inputs, self.threads, sequence)
        from pytest_edgeopt.workers.pool import MEASURE_TIMEOUT_S, MeasureCrashed

        outputs: list[np.ndarray] = self.workers.call(PredictRequest(Path(model).resolve(), inputs, self.threads, sequence),
                                                      timeout_s=MEASURE_TIMEOUT_S, crashed=MeasureCrashed)
        return outputs

    def close(self) -> None:
        pass


# -- requests a worker process runs (pytest_edgeopt.workers) -----------------------------------
@dataclass(frozen=True, slots=True)
class LatencyRequest:
    """Time the ``.tflite`` at ``path`` on the host CPU (the whole timed loop in the worker)."""

    path: Path
    settings: LatencySettings

    def run(self, worker: WorkerState) -> LatencyResult:
        return measure_latency(self.path, self.settings)


@dataclass(frozen=True, slots=True)
class PredictRequest:
    """Run ``inputs`` (float32, batch axis first) through the ``.tflite`` at ``path``
    (``sequence``: in order, state carried; see :func:`pytest_edgeopt.targets.cpu.run_predict`)."""

    path: Path
    inputs: np.ndarray | Sequence[np.ndarray]
    threads: int
    sequence: bool = False

    def run(self, worker: WorkerState) -> Sequence[np.ndarray]:
        return run_predict(self.path, self.inputs, self.threads, self.sequence)


