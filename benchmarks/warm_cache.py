"""Warm cache: the variant build time of a second run of the example suite vs the first.

    python benchmarks/warm_cache.py [--reps 2]

Each repetition runs ``pytest examples/digits`` twice over a new, empty cache directory
(``--edgeopt-cache-dir``): the first run builds all 18 variants, the second finds them
all in the cache. The build time is the session's build phase (``totals.build_phase_s`` of
``--edgeopt-json``: wall seconds spent getting variants, cache lookups included).
Target: second / first <= 0.05. Also printed: whole-run wall times, and whether the warm
run imported tensorflow (it should not need to: every variant comes from the cache).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from sidebyside import ROOT, Ratio, header, python_env, run_child, say

TARGET = 0.05

RUNNER = '''import json, sys, pytest
code = pytest.main(sys.argv[1:])
print("EDGEOPT_BENCH=" + json.dumps({"code": int(code),
      "tensorflow": "tensorflow" in sys.modules, "tfmot": "tensorflow_model_optimization" in sys.modules}))
'''


def run_suite(cache: Path, out: Path, env: dict[str, str] | None = None) -> dict:
    """One run of the example suite over ``cache`` (a child process): its EDGEOPT_BENCH line
    (exit code, whether tensorflow was imported), the JSON's totals, wall and CPU seconds."""
    child = run_child([sys.executable, "-c", RUNNER, "examples/digits", "-q", "-p", "no:cacheprovider",
                       f"--edgeopt-cache-dir={cache}", f"--edgeopt-json={out}"], cwd=ROOT,
                      env={**python_env(), **(env or {})}, check=False)
    line = next((ln for ln in child.stdout.splitlines() if ln.startswith("EDGEOPT_BENCH=")), None)
    if line is None or not out.exists():
        raise SystemExit(f"the example suite did not finish (exit {child.returncode}):\n{child.stdout[-3000:]}\n"
                         f"{child.stderr[-3000:]}")
    info = json.loads(line.removeprefix("EDGEOPT_BENCH="))
    totals = json.loads(out.read_text())["totals"]
    return {**info, **totals, "wall_s": child.wall_s, "cpu_s": child.cpu_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=2, help="cold+warm pairs (default 2; a cold run takes ~1 min)")
    args = ap.parse_args()
    header("warm cache: build phase of the example suite, second run vs first")
    cold: list[dict] = []
    warm: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="edgeopt-warm-") as tmp:
        for i in range(args.reps):
            cache = Path(tmp) / f"cache{i}"
            say(f"pair {i + 1}/{args.reps}: first run (empty cache)")
            cold.append(run_suite(cache, Path(tmp) / f"cold{i}.json"))
            say(f"  built {cold[-1]['variants_built']}, build phase {cold[-1]['build_phase_s']:.2f} s, "
                f"wall {cold[-1]['wall_s']:.1f} s; second run")
            warm.append(run_suite(cache, Path(tmp) / f"warm{i}.json"))
            say(f"  from cache {warm[-1]['variants_from_cache']}, build phase {warm[-1]['build_phase_s']:.3f} s, "
                f"wall {warm[-1]['wall_s']:.1f} s")
    build = Ratio("variant build time, warm / cold", tuple(w["build_phase_s"] for w in warm),
                  tuple(c["build_phase_s"] for c in cold))
    wall = Ratio("whole run wall time, warm / cold", tuple(w["wall_s"] for w in warm), tuple(c["wall_s"] for c in cold))
    print(build.line(f"<= {TARGET}", build.median <= TARGET))
    print(wall.line("(information)", None))
    print(f"{'variants built cold / from cache warm':<34} "
          f"{statistics.median(c['variants_built'] for c in cold):.0f} / "
          f"{statistics.median(w['variants_from_cache'] for w in warm):.0f} "
          f"(warm run built {max(w['variants_built'] for w in warm)})")
    tf_warm = any(w["tensorflow"] for w in warm)
    print(f"{'tensorflow imported by the warm run':<34} {'yes' if tf_warm else 'no'}"
          f"{'  (the example conftest or a measurement needs it)' if tf_warm else ''}")
    print(f"{'test outcomes (exit code) cold/warm':<34} {[c['code'] for c in cold]} / {[w['code'] for w in warm]}")


if __name__ == "__main__":
    main()
