"""The shell commands that run ``benchmark_model`` on a device: its argv
(:func:`benchmark_args`) and the script that feeds eval data through it in chunks
(:func:`predict_script`). Pure string building: every path is validated, every argument
quoted.

Plain Python (no pytest, no adb).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

from pytest_edgeopt.targets.android.validation import (
    validate_affinity_mask,
    validate_remote_path,
)

__all__ = ["benchmark_args", "flag_safe_input_name", "predict_script", "shell_join", "value_files_item"]


def benchmark_args(
    binary: str,
    graph: str,
    *,
    gpu: bool,
    threads: int = 1,
    warmup_runs: int = 1,
    warmup_min_secs: float | None = None,
    num_runs: int = 50,
    min_secs: float = 1.0,
    max_secs: float | None = None,
    gpu_precision_loss_allowed: bool | None = None,
    affinity_mask: str | None = None,
    report_peak_memory: bool = True,
    extra: Sequence[str] = (),
) -> list[str]:
    """The argv of one ``benchmark_model`` run (``taskset MASK`` first when pinned).

    GPU runs add ``--use_gpu=true`` and leave XNNPACK as the runtime's default for any
    CPU fallback; CPU runs add ``--use_gpu=false --use_xnnpack=true``.
    """
    validate_remote_path(binary)
    validate_remote_path(graph)
    if threads < 1:
        raise ValueError(f"threads must be >= 1, not {threads}")
    args: list[str] = []
    if affinity_mask:
        args += ["taskset", validate_affinity_mask(affinity_mask)]
    args += [
        binary,
        f"--graph={graph}",
        f"--num_threads={threads}",
        f"--warmup_runs={max(0, warmup_runs)}",
    ]
    if warmup_min_secs is not None:
        args.append(f"--warmup_min_secs={warmup_min_secs:g}")
    args += [f"--num_runs={max(1, num_runs)}", f"--min_secs={min_secs:g}"]
    if max_secs is not None:
        args.append(f"--max_secs={max_secs:g}")
    if gpu:
        args.append("--use_gpu=true")
        if gpu_precision_loss_allowed is not None:
            args.append(f"--gpu_precision_loss_allowed={str(gpu_precision_loss_allowed).lower()}")
    else:
        args += ["--use_gpu=false", "--use_xnnpack=true"]
    if report_peak_memory:
        args.append("--report_peak_memory_footprint=true")
    args += list(extra)
    return args


def shell_join(args: Sequence[str]) -> str:
    """One ``sh`` command line of ``args``, each quoted (:func:`shlex.quote`)."""
    return " ".join(shlex.quote(a) for a in args)


def value_files_item(name: str, path: str) -> str:
    """One ``--input_layer_value_files`` item: ``NAME:PATH`` with ``:`` in the name
    written ``::`` (``SplitInputLayerNameAndValueFile`` in benchmark_tflite_model.cc)."""
    if "," in name or "," in path or ":" in path:
        raise ValueError(f"input name {name!r} / path {path!r} cannot go into --input_layer_value_files")
    return f"{name.replace(':', '::')}:{path}"


def flag_safe_input_name(name: str) -> str:
    """The input's own name when the flags can carry it, else ``input_0``: the tool maps
    ``--input_layer`` entries to inputs by position and only warns on a name mismatch."""
    return name if name and re.match(r"^[A-Za-z0-9_./:-]+$", name) else "input_0"


def predict_script(
    run_args: Sequence[str],
    *,
    input_name: str,
    row_shape: Sequence[int],
    row_bytes: int,
    chunk_rows: int,
    total_rows: int,
    file_rows: int,
    input_path: str,
    work_dir: str,
    output_path: str,
    pid_file: str | None = None,
) -> str:
    """One shell script that feeds ``total_rows`` rows of ``input_path`` through
    ``benchmark_model`` in chunks of ``chunk_rows`` and leaves all outputs, chunk after
    chunk, in ``output_path``.

    ``run_args`` is the run's argv without input/output flags. When one chunk covers the
    whole file it is read directly; otherwise ``dd`` cuts each chunk into
    ``work_dir/chunk.in``. Each run's log goes to ``work_dir/run.log`` and is printed only
    when the run fails (then the script exits with the run's exit code); a ``chunk N``
    line per chunk keeps the adb stream alive.
    """
    for p in (input_path, work_dir, output_path):
        validate_remote_path(p)
    if chunk_rows < 1 or total_rows < 1 or file_rows < total_rows:
        raise ValueError("bad chunking")
    q = shlex.quote
    chunk_in, chunk_out, log = f"{work_dir}/chunk.in", f"{work_dir}/chunk.out", f"{work_dir}/run.log"

    def run(rows: int, infile: str, outfile: str) -> str:
        shape = ",".join(str(d) for d in (rows, *row_shape))
        argv = [
            *run_args,
            f"--input_layer={input_name}",
            f"--input_layer_shape={shape}",
            f"--input_layer_value_files={value_files_item(input_name, infile)}",
            f"--output_filepath={outfile}",
        ]
        return f"{shell_join(argv)} > {q(log)} 2>&1 || {{ rc=$?; cat {q(log)}; exit $rc; }}"

    lines = [f"rm -f {q(output_path)}"]
    if pid_file:
        lines.append(f"echo $$ > {q(pid_file)}")
    full, tail = divmod(total_rows, chunk_rows)
    if full == 1 and tail == 0 and file_rows == total_rows:
        lines.append(run(total_rows, input_path, output_path))
        lines.append("echo chunk 1")
    else:
        if full:
            lines.append(
                f"i=0; while [ $i -lt {full} ]; do "
                f"dd if={q(input_path)} of={q(chunk_in)} bs={row_bytes} skip=$((i*{chunk_rows})) "
                f"count={chunk_rows} 2>/dev/null || exit 90; "
                f"{run(chunk_rows, chunk_in, chunk_out)}; "
                f"cat {q(chunk_out)} >> {q(output_path)} || exit 91; i=$((i+1)); echo chunk $i; done"
            )
        if tail:
            lines.append(
                f"dd if={q(input_path)} of={q(chunk_in)} bs={row_bytes} skip={full * chunk_rows} "
                f"count={tail} 2>/dev/null || exit 90"
            )
            lines.append(run(tail, chunk_in, chunk_out))
            lines.append(f"cat {q(chunk_out)} >> {q(output_path)} || exit 91")
            lines.append("echo chunk tail")
    return "\n".join(lines)
