"""Can the latency gate be trusted? Replay real runs of the example suite through it.

    python benchmarks/gate_trust.py                # replay benchmarks/data/gate_trust_runs.json
    python benchmarks/gate_trust.py --record       # first run the example suite --runs times (default 8)
    python benchmarks/gate_trust.py --add A.json B.json   # add runs made elsewhere (--edgeopt-json files)

Recording runs ``python -m pytest examples/digits --edgeopt-json=...`` (the variant cache
makes each run take seconds) and keeps, per measurement, what the gate uses: the 32
contiguous block medians the latency test reduces a run's samples to (5 KB per run instead
of 1 MB of raw samples), the sample count and the raw p50.

Replay, for every ordered pair (baseline run, current run) of distinct recorded runs:

- unchanged: the current run as recorded, against the baseline -> every latency
  regression reported is a false alarm;
- slowed: the current run with every sample multiplied by ``--slowdown`` (1.10) -> every
  measurement should be reported.

Each comparison is :func:`pytest_edgeopt.runs.gate.compare_runs` with ``latency:TOL%``, the
between-run noise estimated (as the plugin does from saved runs) from the other recorded
runs, and ``judge_identical=True`` (all recorded runs share the same cached model files,
which the gate would otherwise rightly decline to judge). The replay stores block medians
as the samples, so the test sees exactly what it sees in a session; only the p50 of the
ratio is the median of the block medians instead of the raw median (0.2% apart on average).

Then, live on this machine (``--no-ab`` skips it; about 5 minutes), the A/B
re-measurement the plugin uses to settle latency verdicts when both model files exist
(:func:`pytest_edgeopt.runs.abtest.ab_latency`): ``--ab-trials`` trials on each of
``--ab-models`` variant files from the cache, each file timed against itself (false alarm
if called slower) and the same windows with one side's samples times ``--slowdown``.

Printed: the false alarm rate (target <= 1/100, with its 95% upper bound) and the
detection rate (target >= 95/100) per measurement comparison, for the two-run test alone
and for the gate with A/B confirmation; the share of run pairs with at least one false
alarm; where the false alarms came from; and the same rates for two simpler tests, to show
why the gate is built the way it is. Exit status 0 when the gate meets both targets.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import itertools
import json
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pytest_edgeopt.runs.gate import compare_runs, observations  # noqa: E402
from pytest_edgeopt.runs.noise import BLOCKS, block_medians, estimate_noise  # noqa: E402
from pytest_edgeopt.runs.store import machine  # noqa: E402
from pytest_edgeopt.variants.cache import atomic_write_json  # noqa: E402

DATA = ROOT / "benchmarks" / "data" / "gate_trust_runs.json"
SUITE = ["examples/digits", "-p", "no:cacheprovider", "-q"]


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- recording ------------------------------------------------------------------------------------
def summarize(doc: dict[str, Any]) -> dict[str, Any]:
    """What the gate needs of one run: per measurement key, block medians (us), count, p50."""
    out = {}
    for key, obs in observations(doc).items():
        samples = np.asarray(obs.observation.samples_us, dtype=float)
        out["/".join(key)] = {
            "samples": int(samples.size),
            "p50_us": round(float(np.median(samples)), 4),
            "blocks_us": [round(float(x), 4) for x in block_medians(samples, BLOCKS)],
        }
    return {"created": doc.get("created"), "settings_latency": (doc.get("settings") or {}).get("latency"),
            "measurements": out}


def load_data(path: Path) -> dict[str, Any]:
    if path.exists():
        return json.loads(path.read_text())
    return {"schema": 1, "about": "latency block medians of real runs of examples/digits (benchmarks/gate_trust.py)",
            "blocks": BLOCKS, "machine": machine(), "runs": []}


def add_docs(data: dict[str, Any], docs: list[dict[str, Any]], path: Path) -> None:
    for doc in docs:
        data["runs"].append(summarize(doc))
    data["updated"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    atomic_write_json(path, data, compact=True)
    say(f"{len(data['runs'])} runs in {path} ({path.stat().st_size / 1024:.0f} KiB)")


def record(n: int, extra: list[str]) -> list[dict[str, Any]]:
    """Run the example suite ``n`` times (budget failures do not matter here)."""
    docs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(1, n + 1):
            out = Path(tmp) / f"run{i}.json"
            say(f"recording run {i}/{n}: python -m pytest {' '.join(SUITE)} --edgeopt-json=...")
            proc = subprocess.run([sys.executable, "-m", "pytest", *SUITE, f"--edgeopt-json={out}", *extra],
                                  cwd=ROOT, capture_output=True, text=True)
            if not out.exists():
                raise SystemExit(f"run {i} wrote no JSON (exit {proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
            docs.append(json.loads(out.read_text()))
    return docs


# -- replay ---------------------------------------------------------------------------------------
def as_doc(run: dict[str, Any], slowdown: float = 1.0) -> dict[str, Any]:
    """A run document whose samples are the recorded block medians (times ``slowdown``)."""
    recs = []
    for key, m in run["measurements"].items():
        model, variant, target, device = key.split("/")
        recs.append({"test": key, "outcome": "passed", "measurement": {
            "model": model, "variant": variant, "target": target,
            "device": {"kind": "host", "id": device, "label": None if device == "host" else device},
            "size_bytes": 1, "compressed_size_bytes": 1, "accuracy": None, "recipe": {},
            "latency": {"samples_us": [x * slowdown for x in m["blocks_us"]]}}})
    return {"schema": 1, "settings": {"latency": run.get("settings_latency")}, "measurements": recs}


def p50s(run: dict[str, Any]) -> dict[str, float]:
    return {k: m["p50_us"] / 1000 for k, m in run["measurements"].items()}


def replay(data: dict[str, Any], tol: float, slowdown: float, alpha: float) -> dict[str, Any]:
    runs = data["runs"]
    if len(runs) < 3:
        raise SystemExit(f"need at least 3 recorded runs, have {len(runs)}: run with --record")
    docs = [as_doc(r) for r in runs]
    slowed = [as_doc(r, slowdown) for r in runs]
    tolerance = [f"latency:{tol:g}%"]
    fa = det = n = 0
    pairs_with_fa = 0
    sources: Counter[str] = Counter()
    noises = []
    simple = {"within-run only (noise 0)": [0, 0], "block Mann-Whitney U + ratio > tolerance": [0, 0]}
    pairs = list(itertools.permutations(range(len(runs)), 2))
    screened = [0, 0]
    for done, (i, j) in enumerate(pairs, 1):
        if done % 40 == 0:
            say(f"replaying pair {done}/{len(pairs)}")
        history = [p50s(r) for h, r in enumerate(runs) if h not in (i, j)]
        noise = estimate_noise(history)
        noises.append(noise)
        same = compare_runs(docs[i], docs[j], tolerance, alpha=alpha, history=history, judge_identical=True)
        slow = compare_runs(docs[i], slowed[j], tolerance, alpha=alpha, history=history, judge_identical=True)
        n += sum(r.latency is not None for r in same.rows)
        # confirm_latency's default screen: A/B for rows slower than half the tolerance
        screened[0] += sum(r.latency is not None and r.latency.ratio > 1 + tol / 200 for r in same.rows)
        screened[1] += sum(r.latency is not None and r.latency.ratio > 1 + tol / 200 for r in slow.rows)
        fa += len(same.regressions)
        det += len(slow.regressions)
        pairs_with_fa += bool(same.regressions)
        for r in same.regressions:
            sources[f"run {j + 1} {r.variant}"] += 1
        for name, noise_ in (("within-run only (noise 0)", 0.0),):
            simple[name][0] += len(compare_runs(docs[i], docs[j], tolerance, alpha=alpha, noise=noise_,
                                                judge_identical=True).regressions)
            simple[name][1] += len(compare_runs(docs[i], slowed[j], tolerance, alpha=alpha, noise=noise_,
                                                judge_identical=True).regressions)
        for k in runs[i]["measurements"]:
            if k not in runs[j]["measurements"]:
                continue
            a = np.asarray(runs[i]["measurements"][k]["blocks_us"])
            b = np.asarray(runs[j]["measurements"][k]["blocks_us"])
            for idx, s in ((0, 1.0), (1, slowdown)):
                simple["block Mann-Whitney U + ratio > tolerance"][idx] += _mwu_rule(a, b * s, tol, alpha)
    return {"comparisons": n, "false_alarms": fa, "detected": det, "pairs": len(pairs),
            "pairs_with_false_alarm": pairs_with_fa, "sources": sources, "noise": noises, "simple": simple,
            "screened": screened}


def _mwu_rule(a: np.ndarray, b: np.ndarray, tol: float, alpha: float) -> bool:
    from scipy.stats import mannwhitneyu

    p = mannwhitneyu(b, a, alternative="greater").pvalue
    return bool(p < alpha and np.median(b) / np.median(a) > 1 + tol / 100)


def _upper(k: int, n: int, conf: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound of a rate seen k times in n trials."""
    from scipy.stats import beta

    return 1.0 if k >= n else float(beta.ppf(conf, k + 1, n - k))


# -- A/B re-measurement, live -------------------------------------------------------------------
def ab_models(limit: int) -> list[Path]:
    """Variant files of the example suite in the variant cache (built by its runs)."""
    found = sorted((ROOT / ".edgeopt" / "cache" / "variants").glob("*/*/model.tflite"))
    return found[:limit]


def ab_live(models: list[Path], trials: int, tol: float, slowdown: float, alpha: float, rounds: int) -> dict[str, Any]:
    """A/B trials on this machine, now: each trial re-measures one file against itself
    (false alarm if called a regression) and the same windows with the current side's
    samples times ``slowdown`` (detection)."""
    from pytest_edgeopt.runs.abtest import ab_latency
    from pytest_edgeopt.runs.noise import latency_exceeds
    from pytest_edgeopt.runs.tolerance import Tolerance
    from pytest_edgeopt.targets.base import LatencySettings
    from pytest_edgeopt.targets.cpu import CpuTarget

    target = CpuTarget()
    window = LatencySettings(warmup=10, min_samples=200, min_time_s=0.02, max_samples=5000, threads=1)
    t = Tolerance("latency", tol, "%")
    fa = det = n = 0
    total = len(models) * trials
    for path in models:
        for k in range(trials):
            n += 1
            if n % 10 == 0 or n == 1:
                say(f"A/B trial {n}/{total} ({path.parent.name[:12]})")
            wins_a: list[tuple[float, ...]] = []
            wins_b: list[tuple[float, ...]] = []

            def measure(into: list) -> tuple[float, ...]:
                s = target.latency(path, window).stats.samples_us
                into.append(s)
                return s

            same = ab_latency(lambda: measure(wins_a), lambda: measure(wins_b), rounds=rounds, alpha=alpha)
            it_a, it_b = iter(wins_a), iter(wins_b)
            slow = ab_latency(lambda: next(it_a), lambda: np.asarray(next(it_b)) * slowdown, rounds=rounds, alpha=alpha)
            fa += same.p_value < alpha and latency_exceeds(t, same)
            det += slow.p_value < alpha and latency_exceeds(t, slow)
    target.close()
    return {"trials": n, "false_alarms": fa, "detected": det, "models": len(models)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--record", action="store_true", help="run the example suite --runs times and add the runs")
    ap.add_argument("--fresh", action="store_true", help="with --record: replace the recorded runs")
    ap.add_argument("--runs", type=int, default=8, help="runs to record (default 8)")
    ap.add_argument("--add", nargs="+", type=Path, default=[], metavar="JSON", help="add --edgeopt-json files as runs")
    ap.add_argument("--data", type=Path, default=DATA, help=f"recorded runs (default {DATA.relative_to(ROOT)})")
    ap.add_argument("--tolerance", type=float, default=5.0, help="latency tolerance in %% (default 5)")
    ap.add_argument("--slowdown", type=float, default=1.10, help="factor of the slowed copies (default 1.10)")
    ap.add_argument("--alpha", type=float, default=0.01, help="significance level (default 0.01)")
    ap.add_argument("--no-ab", action="store_true", help="skip the live A/B re-measurement trials")
    ap.add_argument("--ab-trials", type=int, default=100, help="A/B trials per model file (default 100)")
    ap.add_argument("--ab-models", type=int, default=3, help="model files for the A/B trials (default 3)")
    ap.add_argument("--ab-rounds", type=int, default=12, help="rounds per A/B re-measurement (default 12)")
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments for --record (after --)")
    args = ap.parse_args(argv)

    data = load_data(args.data)
    if args.record and args.fresh:
        data["runs"] = []
    if args.add:
        add_docs(data, [json.loads(p.read_text()) for p in args.add], args.data)
    if args.record or not data["runs"]:
        add_docs(data, record(args.runs, args.pytest_args), args.data)

    res = replay(data, args.tolerance, args.slowdown, args.alpha)
    n = res["comparisons"]
    fa_rate, det_rate = res["false_alarms"] / n, res["detected"] / n
    noise = [x for x in res["noise"] if x is not None]
    print(f"recorded runs: {len(data['runs'])} of examples/digits on {data['machine'].get('cpu_model')} "
          f"({data['machine'].get('cores')} cores); {len(data['runs'][0]['measurements'])} measurements per run")
    print(f"gate: latency:{args.tolerance:g}%, one-sided p < {args.alpha:g}, between-run noise estimated from the "
          f"other runs: {100 * float(np.median(noise)):.1f}% (range {100 * min(noise):.1f}-{100 * max(noise):.1f}%)")
    print(f"unchanged runs: {res['false_alarms']} false alarms in {n} comparisons = {100 * fa_rate:.2f}% "
          f"(95% upper bound {100 * _upper(res['false_alarms'], n):.2f}%; target <= 1%): "
          f"{'MET' if fa_rate <= 0.01 else 'NOT MET'}")
    print(f"slowed by {100 * (args.slowdown - 1):.0f}%: {res['detected']} detected in {n} comparisons = "
          f"{100 * det_rate:.1f}% (target >= 95%): {'MET' if det_rate >= 0.95 else 'NOT MET'}")
    print(f"run pairs with at least one false alarm: {res['pairs_with_false_alarm']} of {res['pairs']} "
          f"({100 * res['pairs_with_false_alarm'] / res['pairs']:.0f}%)")
    if res["sources"]:
        top = ", ".join(f"{k} x{v}" for k, v in res["sources"].most_common(8))
        print(f"false alarms came from: {top}")
    for name, (f, d) in res["simple"].items():
        print(f"for comparison, {name}: false alarms {100 * f / n:.1f}%, detection {100 * d / n:.1f}%")
    ok = fa_rate <= 0.01 and det_rate >= 0.95
    if args.no_ab:
        return 0 if ok else 1
    models = ab_models(args.ab_models)
    if not models:
        print("A/B: no model files in .edgeopt/cache (run with --record first)")
        return 0 if ok else 1
    ab = ab_live(models, args.ab_trials, args.tolerance, args.slowdown, args.alpha, args.ab_rounds)
    m = ab["trials"]
    ab_fa, ab_det = ab["false_alarms"] / m, ab["detected"] / m
    print(f"A/B re-measurement in one session ({args.ab_rounds} rounds of ~20 ms windows per model, sign test), "
          f"{m} live trials on {ab['models']} model files:")
    print(f"  unchanged: {ab['false_alarms']} false alarms in {m} = {100 * ab_fa:.2f}% (95% upper bound "
          f"{100 * _upper(ab['false_alarms'], m):.2f}%; target <= 1%): {'MET' if ab_fa <= 0.01 else 'NOT MET'}")
    print(f"  slowed by {100 * (args.slowdown - 1):.0f}%: {ab['detected']} detected in {m} = {100 * ab_det:.1f}% "
          f"(target >= 95%): {'MET' if ab_det >= 0.95 else 'NOT MET'}")
    # The plugin's gate: two runs screen (A/B for rows slower than half the tolerance), A/B decides.
    screened_same, screened_slow = res["screened"][0] / n, res["screened"][1] / n
    gate_fa, gate_det = screened_same * ab_fa, screened_slow * ab_det
    print(f"gate = two-run screen (ratio > {1 + args.tolerance / 200:g}: {100 * screened_same:.0f}% of unchanged, "
          f"{100 * screened_slow:.1f}% of "
          f"slowed comparisons) then A/B: false alarms {100 * gate_fa:.2f}%, detection {100 * gate_det:.1f}%: "
          f"{'targets MET' if gate_fa <= 0.01 and gate_det >= 0.95 else 'targets NOT MET'}")
    return 0 if gate_fa <= 0.01 and gate_det >= 0.95 else 1


if __name__ == "__main__":
    sys.exit(main())
