"""The :class:`~pytest_edgeopt.profile.Profile` of an Android measurement, from what
``benchmark_model`` printed (:mod:`~pytest_edgeopt.targets.android.benchmark_output`).

- ``warmup_mean_ms``: the median over the timed runs of the tool's ``Warmup (avg)``.
- ``peak_memory_mb``: the largest ``Overall peak memory footprint (MB) via periodic
  monitoring`` of the runs (``--report_peak_memory_footprint``), else the largest
  ``Memory footprint delta from the start of the tool (MB): ... overall=``.
- ``placement``: the delegate's ``Replacing N out of M node(s) ... yielding K partitions``
  line (GPU: ``TfLiteGpuDelegateV2``; CPU runs: ``TfLiteXNNPackDelegate``); the ops left
  on the CPU come from the op profile (node index and type) when there is one, else from
  the GPU delegate's list of ops it refused (type only, index ``-1``).
- ``ops``: the ``Run Order`` table of the ``--enable_op_profiling`` run, slowest first.

Plain Python, no device.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from pytest_edgeopt.profile import OpTime, Placement, Profile
from pytest_edgeopt.targets.android.benchmark_output import BenchmarkOutput, DelegateReplacement, OpRow

#: ``Profile.ops_source`` of an Android measurement.
OPS_SOURCE = "benchmark_model --enable_op_profiling"


def _is_delegate_kernel(op: str) -> bool:
    return "Delegate" in op or op == "DELEGATE"


def _where(op: str) -> str:
    if "Gpu" in op or "GPU" in op:
        return "gpu"
    return "delegate" if _is_delegate_kernel(op) else "cpu"


def _replacement(outputs: Sequence[BenchmarkOutput], gpu: bool) -> DelegateReplacement | None:
    key = "gpu" if gpu else "xnnpack"
    for out in outputs:
        for rep in out.replacements:
            if key in rep.name.lower():
                return rep
    return None


def build_placement(outputs: Sequence[BenchmarkOutput], ops: Sequence[OpRow], gpu: bool) -> Placement | None:
    """Where the ops ran, or ``None`` when the output does not say (no ``Replacing`` line and
    no op profile)."""
    delegate = "gpu" if gpu else "xnnpack"
    cpu_rows = [r for r in ops if not _is_delegate_kernel(r.op)]
    first = outputs[0] if outputs else None
    if cpu_rows:
        fallback = tuple((r.index, r.op) for r in cpu_rows)
    elif first is not None:
        fallback = tuple((-1, op.split("/")[0]) for op, _ in first.unsupported)
    else:
        fallback = ()
    rep = _replacement(outputs, gpu)
    if rep is not None:
        total = rep.total if rep.total is not None else rep.replaced + len(cpu_rows)
        return Placement(total, rep.replaced, rep.partitions, delegate, fallback if rep.replaced < total else ())
    if first is not None and first.delegation == "none" and ops:
        return Placement(len(ops), 0, 1, delegate, fallback)
    return None


def build_profile(outputs: Sequence[BenchmarkOutput], profiled: BenchmarkOutput | None, gpu: bool) -> Profile:
    """The profile of one measurement: ``outputs`` of the timed runs, ``profiled`` the op
    profiling run (``None``: not made or no profile printed)."""
    warm = [o.warmup_avg_us if o.warmup_avg_us is not None else (o.warmup.avg_us if o.warmup else None)
            for o in outputs]
    warm_ms = [w / 1000.0 for w in warm if w is not None]
    peaks = [o.peak_memory_mb for o in outputs if o.peak_memory_mb is not None and o.peak_memory_mb > 0]
    overall = [o.memory_overall_mb for o in outputs if o.memory_overall_mb is not None]
    if peaks:
        peak, source = max(peaks), "benchmark_model peak footprint (periodic monitoring)"
    elif overall:
        peak, source = max(overall), "benchmark_model memory footprint delta (overall)"
    else:
        peak, source = None, None
    rows = profiled.ops if profiled is not None else ()
    sources = [*outputs, *([profiled] if profiled is not None else [])]
    ops = tuple(sorted((OpTime(r.index, r.op, r.avg_ms, r.name, _where(r.op)) for r in rows),
                       key=lambda o: o.avg_ms, reverse=True))
    return Profile(
        warmup_mean_ms=float(statistics.median(warm_ms)) if warm_ms else None,
        peak_memory_mb=peak,
        memory_source=source,
        placement=build_placement(sources, rows, gpu),
        ops=ops,
        ops_source=OPS_SOURCE if ops else None,
    )
