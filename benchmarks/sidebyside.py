"""Side-by-side measurement for the overhead benchmarks: run A (through pytest-edgeopt) and B
(the bare tool) alternately in one run, and report the ratio A/B with its spread.

These machines are shared and noisy, so absolute times mean little from one run to the next;
a ratio of A and B measured in alternation (A B B A A B ...: each side goes first equally
often) is what the benchmarks report. Each repetition gives one paired ratio; the summary is
the median paired ratio, its interquartile range and its extremes.

Imported by the scripts next to it (``python benchmarks/X.py`` puts this directory first on
``sys.path``); they also put the repository root on ``sys.path`` so ``fixtures`` and
``pytest_edgeopt`` import from the checkout.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: Where benchmarks keep what is worth keeping between runs (trained scaling models) and what
#: they write (figures, plots). ``.edgeopt/`` is ignored by git; ``benchmarks/results/`` is not.
WORK = ROOT / ".edgeopt" / "benchmarks"
RESULTS = ROOT / "benchmarks" / "results"


def bare_converter(tf: Any, model: Any, variant: str, samples: Sequence[Any]) -> Any:
    """The B side of the conversion benchmarks: a ``TFLiteConverter`` set up for ``variant``
    as TensorFlow's post-training quantization guide writes it (no plugin code); ``samples``
    are the calibration inputs. The caller converts (and times) it."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if variant != "fp32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if variant in ("int8", "int8_full", "int16x8"):
        converter.representative_dataset = lambda: ([s] for s in samples)
    if variant == "int8_full":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    elif variant == "int16x8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    return converter


def say(msg: str) -> None:
    """Progress on stderr (the figures go to stdout)."""
    print(msg, file=sys.stderr, flush=True)


def alternate(a: Callable[[], float], b: Callable[[], float], reps: int,
              label: str = "") -> tuple[list[float], list[float]]:
    """Call ``a`` and ``b`` ``reps`` times each in the order A B, B A, A B... and return
    what they returned (their measured values), in repetition order."""
    xs: list[float] = []
    ys: list[float] = []
    for i in range(reps):
        if i % 2 == 0:
            x = a()
            y = b()
        else:
            y = b()
            x = a()
        xs.append(x)
        ys.append(y)
        if label:
            say(f"  {label} {i + 1}/{reps}: A {x:.4g}  B {y:.4g}  A/B {x / y:.3f}")
    return xs, ys


def quantile(values: Sequence[float], q: float) -> float:
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@dataclass(frozen=True, slots=True)
class Ratio:
    """The paired ratios A_i/B_i of one comparison, and the medians of each side."""

    what: str
    a: tuple[float, ...]
    b: tuple[float, ...]
    unit: str = "s"

    @property
    def ratios(self) -> list[float]:
        return [x / y for x, y in zip(self.a, self.b)]

    @property
    def median(self) -> float:
        return statistics.median(self.ratios)

    @property
    def iqr(self) -> tuple[float, float]:
        r = self.ratios
        return quantile(r, 0.25), quantile(r, 0.75)

    def line(self, target: str, ok: bool | None) -> str:
        lo, hi = self.iqr
        r = self.ratios
        verdict = "" if ok is None else ("PASS" if ok else "MISS")
        d = 4 if self.median < 0.1 else 3
        return (f"{self.what:<34} ratio {self.median:6.{d}f}  (IQR {lo:.{d}f}-{hi:.{d}f}, range {min(r):.{d}f}-{max(r):.{d}f}, "
                f"n={len(r)}; median A {fmt(statistics.median(self.a), self.unit)}, "
                f"B {fmt(statistics.median(self.b), self.unit)})  target {target}  {verdict}").rstrip()


def fmt(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value:.3f} s" if value >= 0.1 else f"{value * 1000:.1f} ms"
    if unit == "us":
        return f"{value:.3f} us"
    if unit == "MiB":
        return f"{value:.0f} MiB"
    return f"{value:.4g} {unit}"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def header(title: str) -> None:
    """What, when and where: printed first by every benchmark."""
    try:
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    now = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    print(f"# {title}")
    print(f"# {now}  {cpu_model()}, {os.cpu_count()} cores, load {load}, Python {platform.python_version()}")
    sys.stdout.flush()


@dataclass(frozen=True, slots=True)
class Child:
    """A finished subprocess: exit code, output, wall seconds, CPU seconds (user + system)
    and peak resident set size in MiB (of that process and its waited-for children)."""

    returncode: int
    stdout: str
    stderr: str
    wall_s: float
    cpu_s: float
    maxrss_mib: float


def run_child(cmd: Sequence[str], cwd: Path | str = ROOT, env: dict[str, str] | None = None,
              check: bool = True) -> Child:
    """Run ``cmd`` to completion and measure it on its own (``os.wait4`` gives the rusage of
    that one child, unlike ``RUSAGE_CHILDREN``, which is the maximum over all of them)."""
    full_env = {**os.environ, **(env or {})}
    start = time.perf_counter()
    proc = subprocess.Popen(list(cmd), cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    # communicate() reads the pipes; wait4 then reaps the child with its own rusage.
    out, err = _drain(proc)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    child = Child(proc.returncode, out, err, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)
    if check and child.returncode not in (0,):
        raise SystemExit(f"{' '.join(cmd)} exited {child.returncode}:\n{out[-3000:]}\n{err[-3000:]}")
    return child


def _drain(proc: subprocess.Popen) -> tuple[str, str]:
    """Read stdout and stderr to EOF without reaping the process (``communicate`` would)."""
    import threading

    chunks: dict[str, list[str]] = {"out": [], "err": []}

    def read(stream: Any, key: str) -> None:
        chunks[key].append(stream.read())
        stream.close()

    threads = [threading.Thread(target=read, args=(proc.stdout, "out")),
               threading.Thread(target=read, args=(proc.stderr, "err"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return "".join(chunks["out"]), "".join(chunks["err"])


def python_env() -> dict[str, str]:
    """Environment for child Pythons: the checkout first on the import path, quiet TF."""
    path = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": str(ROOT) + (os.pathsep + path if path else ""), "TF_CPP_MIN_LOG_LEVEL": "2"}


_SPIN = "import time\nc0 = time.process_time(); t0 = time.perf_counter()\nwhile time.perf_counter() - t0 < %r: pass\nprint(time.process_time() - c0)\n"


def cores_available(seconds: float = 1.5, width: int = 2) -> float:
    """How many of ``width`` cores a CPU-bound job gets right now: ``width`` busy loops run
    for ``seconds`` side by side; the CPU time they got, divided by ``seconds``."""
    procs = [subprocess.Popen([sys.executable, "-c", _SPIN % seconds], stdout=subprocess.PIPE, text=True)
             for _ in range(width)]
    return sum(float(p.communicate()[0]) for p in procs) / seconds
