"""Workers: the example suite with builds and host-CPU measurements in a worker process vs
in the pytest process (``EDGEOPT_IN_PROCESS=1``), cold and warm.

    python benchmarks/workers.py [--reps 2]

Each repetition runs ``pytest examples/digits`` four times, each side alternately first:
cold (an empty cache: every variant built) through workers and in-process, then warm (the
same cache again: every variant from the cache) through workers and in-process. Figures:

- cold: the build phase (``totals.build_phase_s`` of ``--edgeopt-json``: wall seconds
  spent getting variants), the whole run's wall time and its CPU time (pytest and its
  worker: the worker is a waited-for child, so ``wait4`` counts it), workers / in-process.
  Target: the workers' extra cost under 5% of the cold build (ratio <= 1.05);
- warm: the build phase (no worker starts: every lookup is in the pytest process) and the
  whole run's wall time (a measuring worker starts, importing LiteRT only), workers /
  in-process. Target: no cost (build phase ratio <= 1.05; the wall ratio is printed);
- whether each warm run imported tensorflow in the pytest process (it should not).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import warm_cache
from sidebyside import Ratio, header, say

TARGET = 1.05

def run_suite(cache: Path, out: Path, in_process: bool) -> dict:
    """The example suite through a worker process, or in the pytest process (``EDGEOPT_IN_PROCESS``)."""
    return warm_cache.run_suite(cache, out, {"EDGEOPT_IN_PROCESS": "1" if in_process else "0"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=2, help="repetitions (default 2; each is ~4 minutes)")
    args = ap.parse_args()
    header("workers: the example suite through a worker process vs in the pytest process")
    runs: dict[str, list[dict]] = {"cold_w": [], "cold_p": [], "warm_w": [], "warm_p": []}
    with tempfile.TemporaryDirectory(prefix="edgeopt-workers-") as tmp:
        counter = iter(range(10_000))

        def side(kind: str, in_process: bool, cache: Path) -> float:
            n = next(counter)
            r = run_suite(cache, Path(tmp) / f"run{n}.json", in_process)
            runs[kind].append(r)
            say(f"  {kind}: build phase {r['build_phase_s']:.2f} s, wall {r['wall_s']:.1f} s, "
                f"CPU {r['cpu_s']:.1f} s, built "
                f"{r['variants_built']}, from cache {r['variants_from_cache']}, exit {r['code']}")
            return float(r["build_phase_s"])

        for i in range(args.reps):
            say(f"repetition {i + 1}/{args.reps}")
            wcache, pcache = Path(tmp) / f"w{i}", Path(tmp) / f"p{i}"
            for phase in ("cold", "warm"):
                workers = lambda ph=phase, c=wcache: side(f"{ph}_w", False, c)  # type: ignore[misc]  # noqa: E731
                in_proc = lambda ph=phase, c=pcache: side(f"{ph}_p", True, c)  # type: ignore[misc]  # noqa: E731
                if i % 2 == 0:  # each side goes first equally often
                    workers(), in_proc()
                else:
                    in_proc(), workers()
    for phase in ("cold", "warm"):
        w, p = runs[f"{phase}_w"], runs[f"{phase}_p"]
        build = Ratio(f"{phase}: build phase, workers / in-proc", tuple(r["build_phase_s"] for r in w),
                      tuple(r["build_phase_s"] for r in p))
        wall = Ratio(f"{phase}: whole run, workers / in-proc", tuple(r["wall_s"] for r in w),
                     tuple(r["wall_s"] for r in p))
        print(build.line(f"<= {TARGET}", build.median <= TARGET))
        cpu = Ratio(f"{phase}: CPU time, workers / in-proc", tuple(r["cpu_s"] for r in w),
                    tuple(r["cpu_s"] for r in p))
        print(wall.line("(information)", None))
        print(cpu.line("(information)", None))
    print(f"{'variants built cold (workers/in-proc)':<34} {[r['variants_built'] for r in runs['cold_w']]} / "
          f"{[r['variants_built'] for r in runs['cold_p']]}")
    print(f"{'tensorflow in the warm pytest process':<34} workers {[r['tensorflow'] for r in runs['warm_w']]}, "
          f"in-process {[r['tensorflow'] for r in runs['warm_p']]}")
    print(f"{'exit codes cold/warm (workers)':<34} {[r['code'] for r in runs['cold_w']]} / "
          f"{[r['code'] for r in runs['warm_w']]}")


if __name__ == "__main__":
    main()
