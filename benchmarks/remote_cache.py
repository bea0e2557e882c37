"""Shared remote cache: what a second CI runner saves, and what a miss costs.

    python benchmarks/remote_cache.py [--reps 6] [--miss-cost-only]

A real S3-compatible server (moto's server mode, tests/s3_server.py) runs on 127.0.0.1; the
example suite, cut to a few cheap variants (``pytest examples/digits -k SELECTION``: float16,
dynamic_range, int8_full, int16x8 and the fp32 baseline), runs in child processes, each over a
new, empty local cache:

- A, remote miss: ``--edgeopt-cache-dir=s3://...`` over an empty remote prefix (every variant
  is a remote miss: built, then uploaded in the background, flushed at the session's end);
- B, local only: ``--edgeopt-cache-dir=DIR`` (no remote cache at all);
- W, warm runner: a second runner on a prefix A filled, with a new empty local mirror (every
  variant is a remote hit: downloaded, checked against its hash).

A and B alternate, A B, B A, A B... (``--reps`` pairs), so a machine whose load drifts weighs
on both arms alike; W runs after the first two A runs. Reported: A / B per pair, median and
range, on the build phase (``totals.build_phase_s`` of ``--edgeopt-json``: wall seconds getting
variants, cache lookups and downloads included; background uploads are not) and on the whole
run's wall time (which includes the wait for the uploads at the end; target <= 1.05 for both);
W / A on the build phase (target <= 0.1) with the bytes W downloaded. The network is the
loopback: on a real bucket the download part of W grows with the bytes moved over the link's
bandwidth, and the upload wait at the end with the bytes uploaded.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

from sidebyside import ROOT, Ratio, alternate, header, python_env, run_child, say

from tests.s3_server import S3Server

WARM_TARGET, MISS_TARGET = 0.1, 1.05
_MOVED = re.compile(r"bytes moved ([\d.]+) MB down, ([\d.]+) MB up")
_WAITED = re.compile(r"waited ([\d.]+) s for uploads")
_OPENED = re.compile(r"waited ([\d.]+) s for the store to open")
#: The cheap variants the benchmark builds (a ``-k`` expression over examples/digits).
SELECTION = "float16-cpu or dynamic_range-cpu or int8_full-cpu or int16x8-cpu or fp32-cpu"


def run_suite(cache: str, mirror: Path, out: Path, env: dict[str, str]) -> dict:
    """One run of the example suite: the JSON's totals, wall seconds and the remote cache line."""
    child = run_child([sys.executable, "-m", "pytest", "examples/digits", "-q", "-p", "no:cacheprovider",
                       "-k", SELECTION, "--edgeopt-targets=cpu",
                       f"--edgeopt-cache-dir={cache}", f"--edgeopt-json={out}"], cwd=ROOT,
                      env={**python_env(), **env, "EDGEOPT_CACHE_MIRROR": str(mirror)}, check=False)
    if not out.exists():
        raise SystemExit(f"the example suite did not finish (exit {child.returncode}):\n{child.stdout[-3000:]}")
    totals = json.loads(out.read_text())["totals"]
    line = next((ln for ln in child.stdout.splitlines() if ln.startswith("edgeopt: remote cache")), "")
    moved, waited, opened = _MOVED.search(line), _WAITED.search(line), _OPENED.search(line)
    return {**totals, "code": child.returncode, "wall_s": child.wall_s, "line": line,
            "down_mb": float(moved[1]) if moved else 0.0, "up_mb": float(moved[2]) if moved else 0.0,
            "flush_s": float(waited[1]) if waited else 0.0, "open_wait_s": float(opened[1]) if opened else 0.0}


def miss_cost(n: int = 30, size: int = 80_000) -> None:
    """What a remote miss adds per variant, without the build: the lookup that misses (a GET
    of meta.json answered 404) and the upload (PUT of the payload, create-only PUT of meta.json)
    of a ``size``-byte model, timed ``n`` times against the local S3 server; then what the
    build's thread spends handing the upload to the background thread (``publish_later``)."""
    import os
    import statistics
    import time

    from pytest_edgeopt.storage.remote_cache import RemoteCache

    with S3Server() as s3:
        os.environ.update(s3.env)
        remote = RemoteCache.at(s3.url("misscost"))
        lookups, uploads = [], []
        for i in range(n):
            key = f"{i:064x}"
            t0 = time.perf_counter()
            assert remote.fetch(key, "model.tflite") is None
            t1 = time.perf_counter()
            assert remote.publish(key, os.urandom(size), {"variant": "bench"}, "model.tflite")
            lookups.append(t1 - t0)
            uploads.append(time.perf_counter() - t1)
        handed = []
        for i in range(n):
            t0 = time.perf_counter()
            remote.publish_later(f"{i + n:064x}", os.urandom(size), {"variant": "bench"}, "model.tflite")
            handed.append(time.perf_counter() - t0)
        remote.flush()
    print(f"{'remote miss, per variant':<34} lookup {statistics.median(lookups) * 1000:.1f} ms + upload "
          f"{statistics.median(uploads) * 1000:.1f} ms (median of {n}, {size / 1000:.0f} kB payload, loopback); "
          f"on the build's path with background uploads: lookup + {statistics.median(handed) * 1000:.2f} ms")


_OPEN = r"""
import json, sys, time
t0 = time.perf_counter()
from pytest_edgeopt.storage.remote_cache import RemoteCache
remote = RemoteCache.at(sys.argv[1])  # the store opens on a background thread
t1 = time.perf_counter()
remote.opening.wait()  # as in a session, whose collection and fixtures give it the time
t2 = time.perf_counter()
remote.fetch("11" * 32, "model.tflite")
t3 = time.perf_counter()
print(json.dumps([t1 - t0, remote.opening.open_s, t3 - t2, remote.stats.open_wait_s]))
"""


def open_cost(n: int = 3) -> None:
    """A run's fixed cost of a remote cache, in fresh processes, in seconds: on the caller's
    thread (import and start of the background opening), the opening on its thread (importing
    s3fs and aiobotocore, making the filesystem, one warm-up GET), then the first lookup once
    the store is open (one GET) and what it waited for the opening (0 when it was done)."""
    import os
    import subprocess

    with S3Server() as s3:
        got = [json.loads(subprocess.run([sys.executable, "-c", _OPEN, s3.url("opencost")], cwd=ROOT, check=True,
                                         env={**os.environ, **python_env(), **s3.env},
                                         capture_output=True, text=True).stdout) for _ in range(n)]
    print(f"{'remote cache, fixed cost per run':<34} on the caller's thread {_join(g[0] for g in got)} s; "
          f"opening on its thread (import, filesystem, warm-up GET) {_join(g[1] for g in got)} s; "
          f"then first lookup {_join(g[2] for g in got)} s, waited for the opening {_join(g[3] for g in got)} s "
          f"({n} fresh processes)")


def _join(values: object) -> str:
    return ", ".join(f"{v:.2f}" for v in values)  # type: ignore[attr-defined]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=6, help="A/B pairs (remote miss, local only); a run takes ~1 min")
    ap.add_argument("--miss-cost-only", action="store_true",
                    help="only time a remote miss's own requests (lookup + upload) and a run's fixed cost")
    args = ap.parse_args()
    if args.miss_cost_only:
        miss_cost()
        open_cost()
        return
    header("remote cache: a remote miss vs local only (interleaved); a second runner on a warm S3 cache")
    say(f"selection: -k {SELECTION!r}")
    second: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="edgeopt-remote-") as tmp, S3Server() as s3:
        t = Path(tmp)
        urls: list[str] = []
        cold: list[dict] = []
        local: list[dict] = []

        def remote_miss() -> float:
            url = s3.url(f"bench{len(cold)}")
            urls.append(url)
            cold.append(run_suite(url, t / f"mirror-a{len(cold)}", t / f"a{len(cold)}.json", s3.env))
            return float(cold[-1]["build_phase_s"])

        def local_only() -> float:
            local.append(run_suite(str(t / f"local-{len(local)}"), t / "unused", t / f"b{len(local)}.json", s3.env))
            return float(local[-1]["build_phase_s"])

        alternate(remote_miss, local_only, args.reps, label="build phase s, remote miss (A) vs local (B)")
        for i, url in enumerate(urls[:2]):
            say(f"warm runner on {url}, empty local mirror")
            second.append(run_suite(url, t / f"mirror-w{i}", t / f"w{i}.json", s3.env))
            say(f"  {second[-1]['line']}; build phase {second[-1]['build_phase_s']:.3f} s")
    miss = Ratio("build phase, remote miss / local", tuple(a["build_phase_s"] for a in cold),
                 tuple(b["build_phase_s"] for b in local))
    miss_wall = Ratio("whole run, remote miss / local", tuple(a["wall_s"] for a in cold),
                      tuple(b["wall_s"] for b in local))
    warm = Ratio("build phase, warm runner / miss", tuple(w["build_phase_s"] for w in second),
                 tuple(a["build_phase_s"] for a in cold[: len(second)]))
    print(miss.line(f"<= {MISS_TARGET}", miss.median <= MISS_TARGET))
    print(miss_wall.line(f"<= {MISS_TARGET}", miss_wall.median <= MISS_TARGET))
    print(warm.line(f"<= {WARM_TARGET}", warm.median <= WARM_TARGET))
    print(f"{'paired ratios, build phase':<34} {', '.join(f'{r:.3f}' for r in miss.ratios)}")
    print(f"{'paired ratios, whole run':<34} {', '.join(f'{r:.3f}' for r in miss_wall.ratios)}")
    print(f"{'upload wait at session end (A)':<34} {_join(a['flush_s'] for a in cold)} s")
    print(f"{'store-open wait, first lookup (A)':<34} {_join(a['open_wait_s'] for a in cold)} s")
    print(f"{'bytes moved, warm runner (down)':<34} {_join(w['down_mb'] for w in second)} MB")
    print(f"{'bytes moved, miss runner (up)':<34} {_join(a['up_mb'] for a in cold)} MB")
    print(f"{'variants built A / W / B':<34} {[a['variants_built'] for a in cold]} / "
          f"{[w['variants_built'] for w in second]} / {[b['variants_built'] for b in local]}")
    print(f"{'exit codes A / W / B':<34} {[a['code'] for a in cold]} / {[w['code'] for w in second]} / "
          f"{[b['code'] for b in local]}")
    for a in cold[:1]:
        print(f"a miss runner's summary line: {a['line']}")
    for w in second[:1]:
        print(f"the warm runner's summary line: {w['line']}")
    miss_cost()
    open_cost()


if __name__ == "__main__":
    main()
