"""Parallel build: the example suite from an empty cache with ``-n 2`` (pytest-xdist) vs serially.

    python benchmarks/parallel_build.py [--reps 2]

Each run is ``pytest examples/digits`` over a new, empty cache directory, so every one of
the 18 variants is built; serial (B) and ``-n 2`` (A) runs alternate. Target: wall time A/B
as close to 0.5 as two cores allow. What the cores allow is printed next to it: before each
run two busy loops measure how many of the two cores a CPU-bound job gets (``K``; other
users' work takes the rest), the serial run keeps ``u`` cores busy on average, so spreading
its work over ``K`` cores gives at best ``max(0.5, u / K)``. The CPU the workers add
(each imports TensorFlow, loads the model, converts its own first model) shows as the
CPU-time ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from sidebyside import ROOT, Ratio, alternate, cores_available, header, python_env, run_child


def run_suite(tmp: Path, tag: str, extra: list[str]) -> dict:
    cache = Path(tempfile.mkdtemp(prefix=f"cache-{tag}-", dir=tmp))
    out = cache.with_suffix(".json")
    child = run_child([sys.executable, "-m", "pytest", "examples/digits", "-q", "-p", "no:cacheprovider",
                       f"--edgeopt-cache-dir={cache}", f"--edgeopt-json={out}", *extra], cwd=ROOT, env=python_env(),
                      check=False)
    if not out.exists():
        raise SystemExit(f"the example suite did not finish (exit {child.returncode}):\n{child.stdout[-3000:]}")
    totals = json.loads(out.read_text())["totals"]
    return {"wall_s": child.wall_s, "cpu_s": child.cpu_s, "code": child.returncode, **totals}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=2, help="runs per side (default 2; a serial run takes ~1 min)")
    ap.add_argument("--workers", default="2", help="pytest-xdist -n value (default 2)")
    args = ap.parse_args()
    header(f"parallel build: example suite, empty cache, -n {args.workers} vs serial")
    runs: dict[str, list[dict]] = {"par": [], "ser": []}
    capacity: list[float] = []
    with tempfile.TemporaryDirectory(prefix="edgeopt-parallel-") as tmp:
        def par() -> float:
            capacity.append(cores_available())
            runs["par"].append(run_suite(Path(tmp), "par", ["-n", args.workers]))
            return runs["par"][-1]["wall_s"]

        def ser() -> float:
            capacity.append(cores_available())
            runs["ser"].append(run_suite(Path(tmp), "ser", []))
            return runs["ser"][-1]["wall_s"]

        a, b = alternate(par, ser, args.reps, label=f"-n {args.workers} / serial wall")
    wall = Ratio(f"wall time, -n {args.workers} / serial", tuple(a), tuple(b))
    cpu = Ratio("CPU time (user+sys), -n / serial", tuple(r["cpu_s"] for r in runs["par"]),
                tuple(r["cpu_s"] for r in runs["ser"]))
    busy = statistics.median(r["cpu_s"] / r["wall_s"] for r in runs["ser"])
    cores = min(2.0, statistics.median(capacity))
    # With no extra work, -n could at best spread the serial run's CPU over the cores it gets.
    bound = max(0.5, busy / cores)
    print(wall.line(f"-> 0.5; the cores free now allow ~{bound:.2f}", None))
    print(cpu.line("(information: work the workers add)", None))
    print(f"{'cores free for us (2 busy loops)':<34} median {statistics.median(capacity):.2f} of 2 "
          f"({', '.join(f'{c:.2f}' for c in capacity)}; the machine is shared)")
    print(f"{'cores busy on average, serial':<34} {busy:.2f} (so the free cores allow a ratio of ~{bound:.2f} at best,"
          " if -n added no work)")
    par_busy = statistics.median(r["cpu_s"] / r["wall_s"] for r in runs["par"])
    print(f"{'cores busy on average, -n':<34} {par_busy:.2f}")
    print(f"{'build phase (summed over workers)':<34} -n {statistics.median(r['build_phase_s'] for r in runs['par']):.1f} s, "
          f"serial {statistics.median(r['build_phase_s'] for r in runs['ser']):.1f} s")
    print(f"{'variants built (baselines included)':<34} -n {[r['variants_built'] for r in runs['par']]}, "
          f"serial {[r['variants_built'] for r in runs['ser']]}")
    print(f"{'exit codes':<34} -n {[r['code'] for r in runs['par']]}, serial {[r['code'] for r in runs['ser']]}")
    gap = wall.median - bound
    print(f"verdict: ratio {wall.median:.3f} vs achievable ~{bound:.2f}: "
          f"{'PASS (within 0.1 of what two cores allow)' if gap <= 0.1 else 'MISS'}")


if __name__ == "__main__":
    main()
