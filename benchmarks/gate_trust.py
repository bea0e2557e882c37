"""Can the latency gate be trusted? Replay real runs of the example suite through it.

    python benchmarks/gate_trust.py                # replay both recorded data sets, then live A/B trials
    python benchmarks/gate_trust.py --record       # first run the example suite --runs times (default 8)
    python benchmarks/gate_trust.py --record --busy 1 --days 2 --data benchmarks/data/gate_trust_noisy_runs.json
                                                   # record on a loaded runner, over two days' caches
    python benchmarks/gate_trust.py --add A.json B.json   # add runs made elsewhere (--edgeopt-json files)

Recording runs ``python -m pytest examples/digits --edgeopt-json=...`` (the variant cache
makes each run take seconds) and keeps, per measurement, what the gate uses: the 32
contiguous block medians the latency test reduces a run's samples to (5 KB per run instead
of 1 MB of raw samples), the sample count and the raw p50. ``--busy N`` keeps N CPU busy
loops running meanwhile (a loaded CI runner); ``--days N`` splits the runs over N fresh
variant cache directories (an ephemeral runner rebuilding its models on another day).

Data sets: ``benchmarks/data/gate_trust_runs.json`` (a quiet day, 2.4% between-run noise) and
``benchmarks/data/gate_trust_noisy_runs.json`` (runs under busy loops on three caches, about
15%). Each is replayed as recorded and with ``--extra-noise`` levels of between-run noise
injected on top (each measurement of each run scaled by ``exp(N(0, sigma))``, the gate's
definition of between-run noise), for every ordered pair (baseline run, current run):

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

Then, live on this machine (``--no-ab`` skips it; ``--busy`` loops run meanwhile), the A/B
re-measurement the plugin uses to settle latency verdicts
(:func:`pytest_edgeopt.runs.abtest.ab_latency`): ``--ab-trials`` trials on each of
``--ab-models`` variant files from the cache, each file timed against itself (false alarm
if called slower) and the same windows with one side's samples times ``--slowdown``.

Printed per data set: the two-run test alone (false alarms with their 95% upper bound,
detection, where the false alarms came from) and two simpler tests, to show why the gate is
built the way it is; then per noise level the full gate: the adaptive screen's share (rows
whose interval reaches the tolerance go to A/B), the median minimum detectable effect, and
the gate's rates (screen share x A/B rate). Exit status 0 when the gate meets both targets
(<= 1% false alarms, >= 95% detection) at every level up to 20% noise.
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

from pytest_edgeopt.runs.abtest import AB_MAX_ROUNDS, ab_candidates  # noqa: E402
from pytest_edgeopt.runs.gate import compare_runs, observations  # noqa: E402
from pytest_edgeopt.runs.noise import BLOCKS, block_medians, estimate_noise  # noqa: E402
from pytest_edgeopt.runs.store import machine  # noqa: E402
from pytest_edgeopt.variants.cache import atomic_write_json  # noqa: E402

DATA = ROOT / "benchmarks" / "data" / "gate_trust_runs.json"
#: Runs recorded on a loaded machine (``--record --busy 1 --days 2``).
NOISY = ROOT / "benchmarks" / "data" / "gate_trust_noisy_runs.json"
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
            **({"recording": doc["recording"]} if doc.get("recording") else {}), "measurements": out}


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


def busy_loops(n: int) -> list[subprocess.Popen[bytes]]:
    """``n`` processes each spinning one CPU (a noisy neighbour), until :func:`stop`."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.kill()
        p.wait()


def record(n: int, extra: list[str], *, busy: int = 0, days: int = 1) -> list[dict[str, Any]]:
    """Run the example suite ``n`` times (budget failures do not matter here).

    ``busy``: CPU busy loops kept running while recording (a loaded CI runner). ``days``:
    the runs are split over this many fresh variant cache directories, each filled by its
    first run, as an ephemeral CI runner rebuilds its models on another day (other files,
    other memory layout)."""
    docs = []
    loops = busy_loops(busy)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(1, n + 1):
                out = Path(tmp) / f"run{i}.json"
                cache = ["--edgeopt-cache-dir", str(Path(tmp) / f"day{(i - 1) * days // n + 1}")] if days > 1 else []
                say(f"recording run {i}/{n}{f' ({busy} busy loops)' if busy else ''}: "
                    f"python -m pytest {' '.join(SUITE + cache)} --edgeopt-json=...")
                proc = subprocess.run([sys.executable, "-m", "pytest", *SUITE, *cache, f"--edgeopt-json={out}", *extra],
                                      cwd=ROOT, capture_output=True, text=True)
                if not out.exists():
                    raise SystemExit(f"run {i} wrote no JSON (exit {proc.returncode}):\n{proc.stdout[-2000:]}"
                                     f"{proc.stderr[-2000:]}")
                doc = json.loads(out.read_text())
                if not any(t.get("measurement") for t in doc["measurements"]):
                    raise SystemExit(f"run {i} measured nothing (exit {proc.returncode}):\n{proc.stdout[-2000:]}"
                                     f"{proc.stderr[-2000:]}")
                doc["recording"] = {"busy_loops": busy, "day": (i - 1) * days // n + 1 if days > 1 else None}
                docs.append(doc)
    finally:
        stop(loops)
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


def inject(runs: list[dict[str, Any]], sigma: float, seed: int) -> list[dict[str, Any]]:
    """Copies of ``runs`` with extra between-run noise: each measurement of each run scaled
    by ``exp(N(0, sigma))`` (the gate's definition of between-run noise: the sd of log p50
    between unchanged runs), on top of the noise the recording had."""
    if sigma <= 0:
        return runs
    rng = np.random.default_rng(seed)
    out = []
    for run in runs:
        ms = {}
        for k, m in run["measurements"].items():
            f = float(np.exp(rng.normal(0.0, sigma)))
            ms[k] = {**m, "p50_us": m["p50_us"] * f, "blocks_us": [x * f for x in m["blocks_us"]]}
        out.append({**run, "measurements": ms})
    return out


def replay(data: dict[str, Any], tol: float, slowdown: float, alpha: float, *, extra_noise: float = 0.0,
           seed: int = 0, simple_tests: bool = True) -> dict[str, Any]:
    """Every ordered pair of distinct runs, unchanged and slowed; ``extra_noise``: see :func:`inject`."""
    runs = inject(data["runs"], extra_noise, seed)
    if len(runs) < 3:
        raise SystemExit(f"need at least 3 recorded runs, have {len(runs)}: run with --record")
    docs = [as_doc(r) for r in runs]
    slowed = [as_doc(r, slowdown) for r in runs]
    tolerance = [f"latency:{tol:g}%"]
    fa = det = n = 0
    pairs_with_fa = 0
    sources: Counter[str] = Counter()
    noises = []
    detectable: list[float] = []
    simple = {"within-run only (noise 0)": [0, 0], "block Mann-Whitney U + ratio > tolerance": [0, 0],
              f"fixed screen ratio > {1 + tol / 200:g} (before issue 16)": [0, 0]}
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
        # confirm_latency's adaptive screen: A/B for every row whose interval reaches the tolerance
        screened[0] += len(ab_candidates(same))
        screened[1] += len(ab_candidates(slow))
        fixed = simple[f"fixed screen ratio > {1 + tol / 200:g} (before issue 16)"]
        fixed[0] += sum(r.latency is not None and r.latency.ratio > 1 + tol / 200 for r in same.rows)
        fixed[1] += sum(r.latency is not None and r.latency.ratio > 1 + tol / 200 for r in slow.rows)
        detectable += [r.detectable for r in same.rows if r.detectable is not None]
        fa += len(same.regressions)
        det += len(slow.regressions)
        pairs_with_fa += bool(same.regressions)
        for r in same.regressions:
            sources[f"run {j + 1} {r.variant}"] += 1
        if not simple_tests:
            continue
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
    if not simple_tests:
        simple = {k: v for k, v in simple.items() if k.startswith("fixed")}
    return {"comparisons": n, "false_alarms": fa, "detected": det, "pairs": len(pairs),
            "pairs_with_false_alarm": pairs_with_fa, "sources": sources, "noise": noises, "simple": simple,
            "screened": screened, "detectable": detectable}


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


def ab_live(models: list[Path], trials: int, tol: float, slowdown: float, alpha: float, rounds: int,
            max_rounds: int = 0) -> dict[str, Any]:
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
    used = [0, 0]  # rounds the unchanged and the slowed A/Bs took
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

            seq = {"extend_to": max_rounds, "tolerance": t} if max_rounds else {}
            same = ab_latency(lambda: measure(wins_a), lambda: measure(wins_b), rounds=rounds, alpha=alpha, **seq)
            it_a, it_b = iter(wins_a), iter(wins_b)

            def replayed(it: Any) -> Any:  # the same windows; fresh ones when the slowed A/B needs more
                return lambda: next(it, None) or target.latency(path, window).stats.samples_us

            base_w, cur_w = replayed(it_a), replayed(it_b)
            slow = ab_latency(base_w, lambda: np.asarray(cur_w()) * slowdown, rounds=rounds, alpha=alpha, **seq)
            used[0] += int(same.noise_source.split()[-2])
            used[1] += int(slow.noise_source.split()[-2])
            fa += same.p_value < alpha and latency_exceeds(t, same)
            det += slow.p_value < alpha and latency_exceeds(t, slow)
    target.close()
    return {"trials": n, "false_alarms": fa, "detected": det, "models": len(models),
            "mean_rounds": (used[0] / max(n, 1), used[1] / max(n, 1))}


def _fast_bootstrap() -> None:
    """Memoize the bootstrap standard error per run measurement (the replay compares each
    run with every other, so each series is bootstrapped dozens of times; the result is
    deterministic and scale-free, so the slowed copies share it)."""
    from pytest_edgeopt.runs import noise

    original = noise._log_median_se
    memo: dict[tuple[bytes, int], float] = {}

    def cached(blocks: np.ndarray, seed: int) -> float:
        key = (np.round(blocks / np.median(blocks), 9).tobytes(), seed)
        if key not in memo:
            memo[key] = original(blocks, seed)
        return memo[key]

    noise._log_median_se = cached  # type: ignore[assignment]


def _rate(k: float, n: int) -> str:
    return f"{100 * k / n:.2f}%" if n else "-"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--record", action="store_true", help="run the example suite --runs times and add the runs")
    ap.add_argument("--fresh", action="store_true", help="with --record: replace the recorded runs")
    ap.add_argument("--runs", type=int, default=8, help="runs to record (default 8)")
    ap.add_argument("--busy", type=int, default=0, metavar="N",
                    help="keep N CPU busy loops running while recording and during the live A/B trials "
                         "(a loaded runner)")
    ap.add_argument("--days", type=int, default=1, metavar="N",
                    help="with --record: split the runs over N fresh variant cache directories (N 'days' of an "
                         "ephemeral runner that rebuilds its models)")
    ap.add_argument("--add", nargs="+", type=Path, default=[], metavar="JSON", help="add --edgeopt-json files as runs")
    ap.add_argument("--data", type=Path, default=None,
                    help=f"recorded runs to add to and replay (default: {DATA.relative_to(ROOT)} and "
                         f"{NOISY.relative_to(ROOT)})")
    ap.add_argument("--extra-noise", default="0,10,15,20", metavar="PCT,PCT",
                    help="between-run noise levels (%%) injected on top of each data set's own (default 0,10,15,20)")
    ap.add_argument("--tolerance", type=float, default=5.0, help="latency tolerance in %% (default 5)")
    ap.add_argument("--slowdown", type=float, default=1.10, help="factor of the slowed copies (default 1.10)")
    ap.add_argument("--alpha", type=float, default=0.01, help="significance level (default 0.01)")
    ap.add_argument("--no-ab", action="store_true", help="skip the live A/B re-measurement trials")
    ap.add_argument("--ab-trials", type=int, default=100, help="A/B trials per model file (default 100)")
    ap.add_argument("--ab-models", type=int, default=3, help="model files for the A/B trials (default 3)")
    ap.add_argument("--ab-rounds", type=int, default=12, help="rounds per A/B re-measurement (default 12)")
    ap.add_argument("--ab-max-rounds", type=int, default=AB_MAX_ROUNDS,
                    help=f"rounds an unsettled A/B goes on to, as the plugin's (default {AB_MAX_ROUNDS}; 0: fixed "
                         "--ab-rounds)")
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments for --record (after --)")
    args = ap.parse_args(argv)

    paths = [args.data] if args.data else [p for p in (DATA, NOISY) if p.exists()] or [DATA]
    if args.record or args.add:
        data = load_data(paths[0])
        if args.record and args.fresh:
            data["runs"] = []
        if args.add:
            add_docs(data, [json.loads(p.read_text()) for p in args.add], paths[0])
        if args.record:
            add_docs(data, record(args.runs, args.pytest_args, busy=args.busy, days=args.days), paths[0])
    _fast_bootstrap()
    levels = [float(x) for x in args.extra_noise.split(",") if x.strip()]
    results = []  # (label, estimated noise median, result)
    for path in paths:
        data = load_data(path)
        if not data["runs"]:
            raise SystemExit(f"no recorded runs in {path}: run with --record")
        rec = [r.get("recording") for r in data["runs"]]
        busy = Counter(r.get("busy_loops") for r in rec if r)
        days = len({r.get("day") for r in rec if r and r.get("day")})
        how = ("; recorded under load: " + ", ".join(f"{n} runs with {b} CPU busy loop(s)" for b, n in sorted(busy.items()))
               + (f"; {days} fresh variant caches ('days') among them" if days > 1 else "")) if busy else ""
        print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {len(data['runs'])} runs of "
              f"examples/digits on {data['machine'].get('cpu_model')} ({data['machine'].get('cores')} cores), "
              f"{len(data['runs'][0]['measurements'])} measurements per run{how}")
        for level in levels:
            say(f"replaying {path.name} with {level:g}% extra noise")
            res = replay(data, args.tolerance, args.slowdown, args.alpha, extra_noise=level / 100, seed=int(level),
                         simple_tests=level == 0)
            noise = [x for x in res["noise"] if x is not None]
            label = f"{path.stem}{f' +{level:g}%' if level else ''}"
            results.append((label, float(np.median(noise)), res))
            if level == 0:
                n = res["comparisons"]
                print(f"  two-run test alone (latency:{args.tolerance:g}%, p < {args.alpha:g}, noise from the other "
                      f"runs {100 * float(np.median(noise)):.1f}%, range {100 * min(noise):.1f}-{100 * max(noise):.1f}%): "
                      f"{res['false_alarms']} false alarms in {n} = {_rate(res['false_alarms'], n)} (95% upper bound "
                      f"{100 * _upper(res['false_alarms'], n):.2f}%); detection of +{100 * (args.slowdown - 1):.0f}% "
                      f"{_rate(res['detected'], n)}; run pairs with a false alarm {res['pairs_with_false_alarm']} of "
                      f"{res['pairs']}")
                if res["sources"]:
                    print("  its false alarms came from: "
                          + ", ".join(f"{k} x{v}" for k, v in res["sources"].most_common(6)))
                for name, (f, d) in res["simple"].items():
                    what = "nominated for A/B" if name.startswith("fixed") else "false alarms / detection"
                    print(f"  for comparison, {name}: {what} {_rate(f, n)} of unchanged, {_rate(d, n)} of slowed")
    ab = None
    if not args.no_ab:
        models = ab_models(args.ab_models)
        if not models:
            print("A/B: no model files in .edgeopt/cache (run the example suite or --record first)")
        else:
            loops = busy_loops(args.busy)
            try:
                ab = ab_live(models, args.ab_trials, args.tolerance, args.slowdown, args.alpha, args.ab_rounds,
                             args.ab_max_rounds)
            finally:
                stop(loops)
            m = ab["trials"]
            seq = (f", going on to {args.ab_max_rounds} while unsettled: {ab['mean_rounds'][0]:.1f} rounds on average "
                   f"unchanged, {ab['mean_rounds'][1]:.1f} slowed" if args.ab_max_rounds else "")
            print(f"A/B re-measurement in one session ({args.ab_rounds} rounds of ~20 ms windows{seq}; sign test), {m} live "
                  f"trials on {ab['models']} model files{f' with {args.busy} CPU busy loop(s)' if args.busy else ''}: "
                  f"false alarms {ab['false_alarms']} = {_rate(ab['false_alarms'], m)} (95% upper bound "
                  f"{100 * _upper(ab['false_alarms'], m):.2f}%), detection {_rate(ab['detected'], m)}")
    ok = True
    print(f"full gate per noise level: adaptive screen (A/B for every row whose two-run interval reaches "
          f"+{args.tolerance:g}%), then the A/B decides"
          + ("" if ab else " (A/B rates unknown: --no-ab; the screen's share is shown)"))
    header = ("data (+ injected noise)", "noise", "detects >=", "screened unchanged", "screened slowed",
              "gate false alarms", "gate detection", "targets")
    table = [header]
    for label, noise, res in results:
        n = res["comparisons"]
        s_same, s_slow = res["screened"][0] / n, res["screened"][1] / n
        mde = float(np.median(res["detectable"])) if res["detectable"] else float("nan")
        if ab:
            g_fa = s_same * ab["false_alarms"] / ab["trials"]
            g_det = s_slow * ab["detected"] / ab["trials"]
            met = g_fa <= 0.01 and g_det >= 0.95
            ok = ok and (met or noise > 0.20)
            cells = (f"{100 * g_fa:.2f}%", f"{100 * g_det:.1f}%", "MET" if met else "NOT MET")
        else:
            cells = ("?", "?", "?")
        table.append((label, f"{100 * noise:.1f}%", f"{100 * mde:.0f}%", f"{100 * s_same:.1f}%", f"{100 * s_slow:.1f}%",
                      *cells))
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for row in table:
        print("  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
    print("gate false alarms = screened unchanged x A/B false-alarm rate; gate detection = screened slowed x A/B "
          "detection rate (a row the screen passes cannot be a two-run regression: its interval stays below the "
          "tolerance); 'detects >=' is the median two-run minimum detectable effect")
    return 0 if ok and ab else 1


if __name__ == "__main__":
    sys.exit(main())
