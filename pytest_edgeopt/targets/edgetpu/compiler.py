"""Coral's ``edgetpu_compiler``: find it, run it, parse what it prints, cache its output.

The compiler (Debian package ``edgetpu-compiler`` from Coral's apt repository, x86-64
Linux only) turns a fully int8-quantized ``.tflite`` into ``<stem>_edgetpu.tflite``
where the ops that map are replaced by one ``edgetpu-custom-op``. Usage, from
https://coral.ai/docs/edgetpu/compiler/::

    edgetpu_compiler [options] model...
      -o, --out_dir DIR              write <stem>_edgetpu.tflite and <stem>_edgetpu.log there
      -s, --show_operations          print the operation table
      -m, --min_runtime_version N    oldest Edge TPU runtime the model must run on
      -n, --num_segments N           split the model for pipelining on N Edge TPUs
      -d, --search_delegate / -k, --delegate_search_step N / -i, --intermediate_tensors NAMES
      -a, --enable_multiple_subgraphs (experimental)
      -v, --version

``compile_model`` always passes ``-s -o OUT_DIR`` plus the caller's extra flags.
What it prints (stdout), in the format seen in real logs::

    Edge TPU Compiler version 16.0.384591198
    Started a compilation timeout timer of 180 seconds.

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

    Model successfully compiled but not all operations are supported by the Edge TPU. A
    percentage of the model will instead run on the CPU, which is slower. [...]
    Number of operations that will run on Edge TPU: 2
    Number of operations that will run on CPU: 34

    Operator                       Count      Status

    MAX_POOL_2D                    6          More than one subgraph is not supported
    CONV_2D                        1          Mapped to Edge TPU
    LEAKY_RELU                     11         Operation not supported

The ``.log`` file holds the version line, ``Input:``/``Output:`` paths and the table.
Failures print ``ERROR: ...``, ``Compilation failed: ...``, ``Internal compiler error.
Aborting!`` or ``Model not quantized`` and end with ``Compilation failed!``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock

from pytest_edgeopt.targets.base import TargetError
from pytest_edgeopt.targets.edgetpu.compat import EdgeTpuIncompatible, analyze

COMPILER_NAME = "edgetpu_compiler"

#: Where Coral's apt package puts the compiler; told to users when it is missing.
INSTALL_HINT = (
    "install it from Coral's apt repository (x86-64 Debian/Ubuntu): "
    'echo "deb https://packages.cloud.google.com/apt coral-edgetpu-stable main" | '
    "sudo tee /etc/apt/sources.list.d/coral-edgetpu.list; "
    "curl https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo apt-key add -; "
    "sudo apt-get update && sudo apt-get install edgetpu-compiler"
)


class EdgeTpuCompileError(TargetError):
    """``edgetpu_compiler`` failed on a model (or could not be run). The message quotes
    the end of its output; ``log`` holds all of it and ``returncode`` its exit status
    (``None`` on timeout). A :class:`~.targets.base.TargetError`: the measurement fails."""

    def __init__(self, message: str, log: str = "", returncode: int | None = None):
        super().__init__(message)
        self.log = log
        self.returncode = returncode


# --- finding and asking the compiler --------------------------------------------------------


def find_compiler(path: str | os.PathLike[str] | None = None) -> Path | None:
    """The compiler to use: ``path`` if given (a file, or a name looked up on PATH),
    else ``edgetpu_compiler`` on PATH. ``None`` when it is not there or not executable."""
    if path is not None:
        p = Path(path).expanduser()
        if p.is_file() and os.access(p, os.X_OK):
            return p.resolve()
        found = shutil.which(str(path))
        return Path(found).resolve() if found else None
    found = shutil.which(COMPILER_NAME)
    return Path(found).resolve() if found else None


_VERSION_RE = re.compile(r"Edge TPU Compiler version\s+(\S+)")


def compiler_version(path: str | os.PathLike[str], *, timeout_s: float = 30) -> str:
    """The version ``edgetpu_compiler --version`` prints (``"16.0.384591198"``).

    Raises :class:`EdgeTpuCompileError` when the program fails or prints no version.
    """
    try:
        proc = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise EdgeTpuCompileError(f"cannot run {path} --version: {e}") from e
    text = proc.stdout + proc.stderr
    m = _VERSION_RE.search(text)
    if proc.returncode != 0 or not m:
        raise EdgeTpuCompileError(
            f"{path} --version exited {proc.returncode} without a version line:\n{_tail(text)}",
            text,
            proc.returncode,
        )
    return m.group(1)


# --- parsing ------------------------------------------------------------------------------

_UNITS = {"B": 1, "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "KB": 1000, "MB": 1000**2, "GB": 1000**3}
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMG]?i?B)\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``"4.24MiB"`` -> 4445962, ``"0.00B"`` -> 0, ``"512.00KiB"`` -> 524288 (bytes, rounded)."""
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f"not a size: {text!r}")
    return int(round(float(m.group(1)) * _UNITS[m.group(2).upper()]))


@dataclass(frozen=True, slots=True)
class OperatorStatus:
    """One row of the ``Operator  Count  Status`` table."""

    op: str
    count: int
    status: str

    @property
    def mapped(self) -> bool:
        return self.status == "Mapped to Edge TPU"

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "count": self.count, "status": self.status}


@dataclass(frozen=True, slots=True)
class CompileLog:
    """What the compiler reported. Sizes in bytes, time in ms; ``None`` when not printed.

    ``edgetpu_ops``/``cpu_ops`` come from the explicit lines when printed, else from the
    table, else (a success without the "not all operations" warning) from the total.
    """

    compiler_version: str | None = None
    compile_ms: float | None = None
    input_model: str | None = None
    output_model: str | None = None
    input_size_bytes: int | None = None
    output_size_bytes: int | None = None
    on_chip_memory_used_bytes: int | None = None
    on_chip_memory_remaining_bytes: int | None = None
    off_chip_memory_used_bytes: int | None = None
    edgetpu_subgraphs: int | None = None
    total_ops: int | None = None
    edgetpu_ops: int | None = None
    cpu_ops: int | None = None
    operators: tuple[OperatorStatus, ...] = ()
    partially_mapped: bool = False
    succeeded: bool = False
    errors: tuple[str, ...] = ()

    @property
    def edgetpu_op_fraction(self) -> float | None:
        if self.edgetpu_ops is None or not self.total_ops:
            return None
        return self.edgetpu_ops / self.total_ops

    @property
    def unmapped(self) -> tuple[OperatorStatus, ...]:
        return tuple(o for o in self.operators if not o.mapped)

    def to_dict(self) -> dict[str, Any]:
        return {
            "compiler_version": self.compiler_version,
            "compile_ms": self.compile_ms,
            "input_model": self.input_model,
            "output_model": self.output_model,
            "input_size_bytes": self.input_size_bytes,
            "output_size_bytes": self.output_size_bytes,
            "on_chip_memory_used_bytes": self.on_chip_memory_used_bytes,
            "on_chip_memory_remaining_bytes": self.on_chip_memory_remaining_bytes,
            "off_chip_memory_used_bytes": self.off_chip_memory_used_bytes,
            "edgetpu_subgraphs": self.edgetpu_subgraphs,
            "total_ops": self.total_ops,
            "edgetpu_ops": self.edgetpu_ops,
            "cpu_ops": self.cpu_ops,
            "edgetpu_op_fraction": self.edgetpu_op_fraction,
            "operators": [o.to_dict() for o in self.operators],
            "partially_mapped": self.partially_mapped,
            "succeeded": self.succeeded,
            "errors": list(self.errors),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CompileLog:
        return cls(
            compiler_version=d.get("compiler_version"),
            compile_ms=d.get("compile_ms"),
            input_model=d.get("input_model"),
            output_model=d.get("output_model"),
            input_size_bytes=d.get("input_size_bytes"),
            output_size_bytes=d.get("output_size_bytes"),
            on_chip_memory_used_bytes=d.get("on_chip_memory_used_bytes"),
            on_chip_memory_remaining_bytes=d.get("on_chip_memory_remaining_bytes"),
            off_chip_memory_used_bytes=d.get("off_chip_memory_used_bytes"),
            edgetpu_subgraphs=d.get("edgetpu_subgraphs"),
            total_ops=d.get("total_ops"),
            edgetpu_ops=d.get("edgetpu_ops"),
            cpu_ops=d.get("cpu_ops"),
            operators=tuple(OperatorStatus(o["op"], int(o["count"]), o["status"]) for o in d.get("operators", ())),
            partially_mapped=bool(d.get("partially_mapped", False)),
            succeeded=bool(d.get("succeeded", False)),
            errors=tuple(d.get("errors", ())),
        )


_LINE_FIELDS: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("compiler_version", re.compile(r"^Edge TPU Compiler version\s+(\S+)"), "str"),
    ("compile_ms", re.compile(r"^Model compiled successfully in\s+([0-9.]+)\s*ms"), "float"),
    ("input_model", re.compile(r"^Input(?: model)?:\s*(.+?)\s*$"), "str"),
    ("output_model", re.compile(r"^Output(?: model)?:\s*(.+?)\s*$"), "str"),
    ("input_size_bytes", re.compile(r"^Input size:\s*(\S+)"), "size"),
    ("output_size_bytes", re.compile(r"^Output size:\s*(\S+)"), "size"),
    ("on_chip_memory_used_bytes", re.compile(r"^On-chip memory used for caching model parameters:\s*(\S+)"), "size"),
    (
        "on_chip_memory_remaining_bytes",
        re.compile(r"^On-chip memory remaining for caching model parameters:\s*(\S+)"),
        "size",
    ),
    (
        "off_chip_memory_used_bytes",
        re.compile(r"^Off-chip memory used for streaming uncached model parameters:\s*(\S+)"),
        "size",
    ),
    ("edgetpu_subgraphs", re.compile(r"^Number of Edge TPU subgraphs:\s*(\d+)"), "int"),
    ("total_ops", re.compile(r"^Total number of operations:\s*(\d+)"), "int"),
    ("edgetpu_ops", re.compile(r"^Number of operations that will run on Edge TPU:\s*(\d+)"), "int"),
    ("cpu_ops", re.compile(r"^Number of operations that will run on CPU:\s*(\d+)"), "int"),
)
_CONVERT: dict[str, Callable[[str], Any]] = {"size": parse_size, "int": int, "float": float, "str": str}
_TABLE_HEADER = re.compile(r"^Operator\s+Count\s+Status\s*$")
_TABLE_ROW = re.compile(r"^(\S+)\s+(\d+)\s+(\S.*?)\s*$")
_PARTIAL = "not all operations are supported by the Edge TPU"
_ERROR_RES = (
    re.compile(r"^ERROR:.*"),
    re.compile(r"^Compilation failed.*"),
    re.compile(r"^Internal compiler error.*"),
    re.compile(r"^Model not quantized.*"),
)


def parse_compiler_log(text: str) -> CompileLog:
    """Parse the compiler's stdout or its ``.log`` file (or both, concatenated)."""
    values: dict[str, Any] = {}
    rows: list[OperatorStatus] = []
    errors: list[str] = []
    in_table = False
    partial = False
    for raw in text.splitlines():
        line = raw.strip()
        if _TABLE_HEADER.match(line):
            in_table = True
            rows = []  # stdout and .log both hold the table: keep the last one
            continue
        if in_table:
            if not line:
                continue
            m = _TABLE_ROW.match(line)
            if m and not line.startswith("..."):
                rows.append(OperatorStatus(m.group(1), int(m.group(2)), m.group(3)))
                continue
            if line.startswith("..."):  # "... All other operators were mapped successfully."
                continue
            in_table = False
        if _PARTIAL in line:
            partial = True
        field_match = False
        for key, rx, kind in _LINE_FIELDS:
            m = rx.match(line)
            if not m:
                continue
            field_match = True
            if key not in values:  # stdout comes first; the .log repeats some lines
                try:
                    values[key] = _CONVERT[kind](m.group(1))
                except ValueError:
                    pass
            break
        if not field_match and any(rx.match(line) for rx in _ERROR_RES):
            errors.append(line)
    succeeded = "compile_ms" in values or "Compilation succeeded" in text
    total = values.get("total_ops")
    if "edgetpu_ops" not in values and rows:
        values["edgetpu_ops"] = sum(r.count for r in rows if r.mapped)
        values["cpu_ops"] = sum(r.count for r in rows if not r.mapped)
    elif "edgetpu_ops" not in values and succeeded and not partial and total is not None:
        values["edgetpu_ops"], values["cpu_ops"] = total, 0
    if "cpu_ops" not in values and total is not None and values.get("edgetpu_ops") is not None:
        values["cpu_ops"] = total - values["edgetpu_ops"]
    return CompileLog(
        **values,
        operators=tuple(rows),
        partially_mapped=partial,
        succeeded=succeeded and not errors,
        errors=tuple(errors),
    )


# --- running ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CompileResult:
    """A compiled model: its path, the parsed log, the command that made it, and
    whether it came from the cache."""

    model: Path
    log: CompileLog
    command: tuple[str, ...] = ()
    compiler_version: str | None = None
    from_cache: bool = False
    output: str = field(default="", repr=False)


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def compile_model(
    compiler: str | os.PathLike[str],
    model: Path,
    out_dir: Path,
    *,
    flags: Sequence[str] = (),
    timeout_s: float = 300,
) -> CompileResult:
    """Run ``compiler -s -o OUT_DIR [flags] MODEL``; return ``OUT_DIR/<stem>_edgetpu.tflite``.

    Raises :class:`EdgeTpuCompileError` (quoting the compiler's output) when it exits
    non-zero, reports a failure, times out after ``timeout_s`` or writes no model.
    """
    model = Path(model)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = (str(compiler), "-s", "-o", str(out_dir), *flags, str(model))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        raise EdgeTpuCompileError(
            f"edgetpu_compiler timed out after {timeout_s:.0f} s on {model}:\n{_tail(out)}", out, None
        ) from e
    except OSError as e:
        raise EdgeTpuCompileError(f"cannot run {compiler}: {e}") from e
    output = proc.stdout + (("\n" + proc.stderr) if proc.stderr.strip() else "")
    compiled = out_dir / f"{model.stem}_edgetpu.tflite"
    log_file = out_dir / f"{model.stem}_edgetpu.log"
    text = output
    if log_file.exists():
        text = output + "\n" + log_file.read_text(errors="replace")
    log = parse_compiler_log(text)
    if proc.returncode != 0 or log.errors or not compiled.exists():
        why = f"exit status {proc.returncode}" if proc.returncode != 0 else (
            log.errors[0] if log.errors else f"no {compiled.name} written"
        )
        raise EdgeTpuCompileError(
            f"edgetpu_compiler failed on {model} ({why}):\n{_tail(output)}", output, proc.returncode
        )
    return CompileResult(compiled, log, cmd, log.compiler_version, False, output)


# --- caching ------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class CompileCache:
    """Compiled models keyed by (sha256 of the input model, compiler version, flags).

    An entry is a directory ``<cache_dir>/<key>/`` with ``model_edgetpu.tflite`` and
    ``entry.json`` (the parsed log and the compiled file's sha256), written to temporary
    names and ``os.replace``d into place, ``entry.json`` last, under a per-key
    :class:`filelock.FileLock`, so concurrent pytest-xdist workers compile a model once.
    An entry whose files are missing or whose model does not match its recorded hash is
    rebuilt. Models with no op for the Edge TPU (see :func:`~.edgetpu_compat.analyze`)
    are refused with :class:`~.edgetpu_compat.EdgeTpuIncompatible` before the compiler
    is started.
    """

    ENTRY = "entry.json"
    MODEL = "model_edgetpu.tflite"

    def __init__(
        self,
        cache_dir: Path,
        compiler: str | os.PathLike[str],
        *,
        flags: Sequence[str] = (),
        timeout_s: float = 300,
    ):
        self.cache_dir = Path(cache_dir)
        self.compiler = Path(compiler)
        self.flags = tuple(flags)
        self.timeout_s = timeout_s
        self._version: str | None = None

    @property
    def version(self) -> str:
        if self._version is None:
            self._version = compiler_version(self.compiler)
        return self._version

    def key(self, model_sha256: str) -> str:
        blob = json.dumps([model_sha256, self.version, list(self.flags)])
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    def compile(self, model: Path, *, check: bool = True) -> CompileResult:
        """The compiled model for ``model``, from the cache or from the compiler."""
        model = Path(model)
        if check:
            report = analyze(model)
            if not report.compilable:
                raise EdgeTpuIncompatible(report, model.name)
        key = self.key(_sha256(model))
        entry_dir = self.cache_dir / key
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        hit = self._load(entry_dir)
        if hit is not None:
            return hit
        with FileLock(str(self.cache_dir / f"{key}.lock")):
            hit = self._load(entry_dir)  # built by another process while we waited
            if hit is not None:
                return hit
            return self._build(model, entry_dir)

    def _load(self, entry_dir: Path) -> CompileResult | None:
        try:
            meta = json.loads((entry_dir / self.ENTRY).read_text())
            compiled = entry_dir / self.MODEL
            if meta.get("sha256") != _sha256(compiled):
                return None
            return CompileResult(
                compiled,
                CompileLog.from_dict(meta["log"]),
                tuple(meta.get("command", ())),
                meta.get("compiler_version"),
                True,
                meta.get("output", ""),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _build(self, model: Path, entry_dir: Path) -> CompileResult:
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry_dir.name}-", dir=self.cache_dir))
        try:
            result = compile_model(self.compiler, model, tmp / "out", flags=self.flags, timeout_s=self.timeout_s)
            entry_dir.mkdir(exist_ok=True)
            (entry_dir / self.ENTRY).unlink(missing_ok=True)  # invalidate a corrupt entry first
            final_model = entry_dir / self.MODEL
            os.replace(result.model, final_model)
            meta = {
                "sha256": _sha256(final_model),
                "source_model": str(model),
                "compiler": str(self.compiler),
                "compiler_version": self.version,
                "flags": list(self.flags),
                "command": list(result.command),
                "log": result.log.to_dict(),
                "output": result.output,
            }
            tmp_entry = tmp / self.ENTRY
            tmp_entry.write_text(json.dumps(meta, indent=1))
            os.replace(tmp_entry, entry_dir / self.ENTRY)
            return CompileResult(final_model, result.log, result.command, self.version, False, result.output)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
