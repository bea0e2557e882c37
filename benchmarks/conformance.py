"""Conformance zoo: every variant of real architectures, as a user's pytest run sees it.

    python benchmarks/conformance.py                      # the whole zoo, big models last
    python benchmarks/conformance.py --quick              # the hand-built patterns only
    python benchmarks/conformance.py --models lstm,gru --variants fp32,int8

For each zoo model (``fixtures/zoo.py``: ``tf_keras.applications`` with ``weights=None`` and
hand-built patterns, seeded synthetic data) it writes a tiny pytest project (a conftest
with the model's ``edgeopt_model`` and one test that asks for ``measurement`` on ``cpu``)
and runs pytest on it in a child process, so every cell is what a user gets: the plugin's
real build path (cache, worker processes) and a real measurement on the host CPU. Outcomes
come from JUnit XML (PASS, SKIP, FAIL in the call phase, ERROR in set-up or when the run
dies), sizes, build seconds and reasons from ``--edgeopt-json``.

It prints the model x variant matrix and every cell that did not pass, with its message,
and writes ``benchmarks/results/conformance.md`` (date, command, versions) and
``conformance.json``. Results of models run before are kept (``--fresh`` drops them), so a
long zoo can be run a few models at a time. The variant cache (``--cache-dir``) is kept
across runs too: a second run only measures again.

A cell is judged (``judge``): ERROR is never right (the harness or the machine failed, or
the plugin let an exception through); a message that stops at TensorFlow's
``in user code:`` line hides its cause.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fixtures.zoo import ZOO  # noqa: E402 (after the path set-up)
from pytest_edgeopt.names import VARIANT_NAMES  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
#: ``--quick``: the hand-built patterns (seconds each), not the applications.
QUICK_MODELS = tuple(n for n, e in ZOO.items() if not e.application)
#: Latency is not what this measures: a few timed invokes keep a cell cheap.
LATENCY_INI = {"edgeopt_warmup": "1", "edgeopt_min_samples": "3", "edgeopt_min_time": "0.01"}

CONFTEST = '''
import pytest

from fixtures.zoo import zoo_model_under_test


@pytest.fixture(scope="session")
def edgeopt_model():
    return zoo_model_under_test({name!r}, n_train={n_train}, n_eval={n_eval})
'''

TEST = '''
import math

import pytest


@pytest.mark.cpu
def test_variant_builds_and_runs(measurement):
    assert measurement.size_bytes > 0
    assert measurement.accuracy is None or math.isfinite(measurement.accuracy.value)
'''


@dataclass(frozen=True)
class Cell:
    """One model x variant: ``outcome`` PASS / SKIP / FAIL / ERROR, the ``message`` the user
    sees (empty for a pass), the ``.tflite`` size in bytes and its build time in seconds
    (``None`` when it was not built)."""

    model: str
    variant: str
    outcome: str
    message: str = ""
    size_bytes: int | None = None
    build_seconds: float | None = None
    from_cache: bool | None = None

    @property
    def short(self) -> str:
        if self.outcome == "PASS":
            return f"PASS {self.size_bytes / 1024:.0f}K" if self.size_bytes else "PASS"
        return self.outcome

    def problems(self) -> list[str]:
        """What is wrong with this cell by the outcome rules (empty: nothing)."""
        out = []
        if self.outcome == "ERROR":
            out.append("ERROR: a property of the model must be a SKIP or a FAIL")
        if "in user code:" in self.message:
            out.append("the message stops at 'in user code:' (the cause is cut off)")
        if self.outcome in ("SKIP", "FAIL", "ERROR") and len(self.message.strip()) < 20:
            out.append("the message is too short to say why")
        head, _, rest = self.message.partition(": ")
        if self.variant in head.split() and rest.startswith(f"{self.variant}:"):
            out.append("the message repeats its prefix")
        return out


def project(workdir: Path, models: list[str], n_train: int, n_eval: int, cache: Path) -> Path:
    """A pytest project with one directory per model (each conftest overrides
    ``edgeopt_model``), so one pytest run can take several models."""
    workdir.mkdir(parents=True, exist_ok=True)
    ini = "\n".join(f"{k} = {v}" for k, v in {**LATENCY_INI, "edgeopt_cache_dir": str(cache)}.items())
    (workdir / "pytest.ini").write_text(f"[pytest]\n{ini}\n")
    for name in models:
        d = workdir / name
        d.mkdir(exist_ok=True)
        (d / "__init__.py").write_text("")
        (d / "conftest.py").write_text(CONFTEST.format(name=name, n_train=n_train, n_eval=n_eval))
        (d / f"test_{name}.py").write_text(TEST)
    return workdir


def _junit(path: Path) -> dict[str, tuple[str, str]]:
    """test id -> (outcome, message) from a JUnit XML file."""
    out: dict[str, tuple[str, str]] = {}
    if not path.exists():
        return out
    for case in ET.parse(path).getroot().iter("testcase"):
        name = case.get("name", "")
        outcome, message = "PASS", ""
        for tag, label in (("error", "ERROR"), ("failure", "FAIL"), ("skipped", "SKIP")):
            el = case.find(tag)
            if el is not None:
                outcome, message = label, el.get("message") or (el.text or "")
                break
        out[f"{case.get('classname', '')}::{name}"] = (outcome, message)
    return out


def run_models(models: list[str], variants: list[str], *, workdir: Path, cache: Path, n_train: int = 64,
               n_eval: int = 32, timeout: float | None = None) -> tuple[list[Cell], str]:
    """Run pytest on the zoo ``models`` (one child process) for ``variants`` on ``cpu``:
    the cells, and the child's output (stdout + stderr, for a failed run)."""
    proj = project(workdir, models, n_train, n_eval, cache)
    xml, js = workdir / "junit.xml", workdir / "edgeopt.json"
    for p in (xml, js):
        p.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA", "-c", str(proj / "pytest.ini"),
           f"--rootdir={proj}", f"--junitxml={xml}", f"--edgeopt-json={js}", "--edgeopt-targets=cpu",
           "--edgeopt-variants=" + ",".join(variants), *[str(proj / m) for m in models]]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    try:
        child = subprocess.run(cmd, cwd=proj, env=env, capture_output=True, text=True, timeout=timeout)
        output = child.stdout + child.stderr
    except subprocess.TimeoutExpired as exc:  # its stdout/stderr are bytes even with text=True
        caught = b"".join(x if isinstance(x, bytes) else x.encode() for x in (exc.stdout, exc.stderr) if x)
        output = f"timed out after {timeout} s\n{caught.decode(errors='replace')}"
    junit = _junit(xml)
    records = json.loads(js.read_text())["measurements"] if js.exists() else []
    cells = []
    for model in models:
        by_variant = {r.get("variant"): r for r in records if r.get("model") == model
                      or str(r.get("test", "")).startswith(f"{model}/")}
        for variant in variants:
            rec = by_variant.get(variant, {})
            verdict = next((v for k, v in junit.items()
                            if k.startswith(f"{model}.test_{model}::") and f"[{variant}-cpu" in k), None)
            built = rec.get("built") or {}
            if verdict is None:
                tail = output.strip().splitlines()[-1:] or ["no output"]
                cells.append(Cell(model, variant, "ERROR", f"the pytest run did not report this item: {tail[0]}"))
                continue
            outcome, message = verdict
            reason = rec.get("reason") or message
            cells.append(Cell(model, variant, outcome, "" if outcome == "PASS" else reason.strip(),
                              built.get("size_bytes"), built.get("build_seconds"), built.get("from_cache")))
    return cells, output


# -- reporting -----------------------------------------------------------------------------------


def matrix(cells: list[Cell], variants: list[str]) -> list[list[str]]:
    """Rows of the model x variant matrix (first row: the header)."""
    models = list(dict.fromkeys(c.model for c in cells))
    index = {(c.model, c.variant): c for c in cells}
    rows = [["model", *variants]]
    for m in models:
        rows.append([m, *[index[(m, v)].short if (m, v) in index else "" for v in variants]])
    return rows


def markdown_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines)


def text_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def not_passed(cells: list[Cell]) -> list[str]:
    lines = []
    for c in cells:
        if c.outcome == "PASS":
            continue
        first = c.message.splitlines()[0] if c.message else ""
        flag = "".join(f"  [!] {p}" for p in c.problems())
        lines.append(f"- **{c.model} {c.variant}** {c.outcome}: {first}{flag}")
    return lines


def write_markdown(path: Path, results: dict[str, dict], note: str = "") -> None:
    """``benchmarks/results/conformance.md`` from every model's saved result (``note``: a
    line saying how the results were put together)."""
    results = dict(sorted(results.items(), key=lambda kv: list(ZOO).index(kv[0]) if kv[0] in ZOO else len(ZOO)))
    cells = [Cell(**c) for r in results.values() for c in r["cells"]]
    variants = [v for v in VARIANT_NAMES if any(c.variant == v for c in cells)]
    counts = {o: sum(c.outcome == o for c in cells) for o in ("PASS", "SKIP", "FAIL", "ERROR")}
    bad = [c for c in cells if c.problems()]
    versions = next(iter(results.values()), {}).get("versions", {})
    parts = [
        "# Conformance zoo: every variant of real architectures",
        "",
        "Written by `benchmarks/conformance.py` (see its docstring). Each model was run as a user's pytest run",
        "(`--edgeopt-targets=cpu`, one test asking for `measurement`), on random (seeded) weights and synthetic",
        "data: accuracy means nothing here, only whether each variant builds and runs, or says why not.",
        "A PASS cell shows the `.tflite` size in KiB. Each model's row comes from the run(s) named below.",
        *([note] if note else []),
        "",
        "| model | pattern | run (UTC) | command | wall s |",
        "|---|---|---|---|---|",
        *[f"| {m} | {ZOO[m].pattern if m in ZOO else ''} | {r['date']} | `{r['command']}` | {r['wall_s']:.0f} |"
          for m, r in results.items()],
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        "",
        f"Totals: {counts['PASS']} PASS, {counts['SKIP']} SKIP, {counts['FAIL']} FAIL, {counts['ERROR']} ERROR; "
        f"{len(bad)} cells break the outcome rules.",
        "",
        markdown_table(matrix(cells, variants)),
        "",
        "## Cells that did not pass",
        "",
        *not_passed(cells),
        "",
        "## Build seconds (cold build, as recorded with the cache entry)",
        "",
        markdown_table([["model", *variants]] + [
            [m, *[next((f"{c.build_seconds:.1f}" for c in cells if c.model == m and c.variant == v
                        and c.build_seconds is not None), "") for v in variants]]
            for m in results]),
        "",
    ]
    path.write_text("\n".join(parts))


def versions() -> dict[str, str]:
    import importlib.metadata as md

    found = {}
    for d in ("tensorflow", "tf-keras", "tensorflow-model-optimization", "ai-edge-litert", "ai-edge-quantizer",
              "litert-quantizer"):
        try:
            found[d] = md.version(d)
        except md.PackageNotFoundError:
            pass
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", help="comma-separated zoo models (default: all, big ones last)")
    ap.add_argument("--variants", help="comma-separated variants (default: all %d)" % len(VARIANT_NAMES))
    ap.add_argument("--quick", action="store_true", help="the hand-built patterns only: %s" % ", ".join(QUICK_MODELS))
    ap.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "edgeopt-conformance",
                    help="variant cache kept across runs (default ~/.cache/edgeopt-conformance)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp") / f"edgeopt-conformance-{os.getpid()}")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per model (default 3600)")
    ap.add_argument("--results", type=Path, default=RESULTS, help="where conformance.md/.json go")
    ap.add_argument("--fresh", action="store_true", help="forget the results of models not run now")
    ap.add_argument("--merge", type=Path, nargs="*", default=[],
                    help="conformance.json files of other runs to merge in (newer models replace older)")
    ap.add_argument("--report-only", action="store_true", help="run nothing: write conformance.md from the saved "
                    "results (and --merge files)")
    args = ap.parse_args(argv)
    models = args.models.split(",") if args.models else list(QUICK_MODELS if args.quick else ZOO)
    models.sort(key=lambda m: ZOO[m].big)
    unknown = [m for m in models if m not in ZOO]
    variants = args.variants.split(",") if args.variants else list(VARIANT_NAMES)
    if unknown or any(v not in VARIANT_NAMES for v in variants):
        ap.error(f"unknown models {unknown} or variants; models: {', '.join(ZOO)}")
    command = "python benchmarks/conformance.py " + " ".join(argv if argv is not None else sys.argv[1:])
    saved = args.results / "conformance.json"
    results: dict[str, dict] = {} if args.fresh or not saved.exists() else json.loads(saved.read_text())
    for other in args.merge:
        for model, result in json.loads(other.read_text()).items():
            cells = {c["variant"]: c for c in results.get(model, {}).get("cells", [])}
            cells.update({c["variant"]: c for c in result["cells"]})
            merged = {**result, "cells": [cells[v] for v in VARIANT_NAMES if v in cells]}
            if model in results:  # a re-run of some cells: both runs are named
                before = results[model]
                merged.update(date=f"{before['date']}, {result['date']}", wall_s=before["wall_s"] + result["wall_s"],
                              command=f"{before['command']}`, then `{result['command']}")
            results[model] = merged
    if args.report_only:
        args.results.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(results, indent=1) + "\n")
        write_markdown(args.results / "conformance.md", results,
                       f"Merged on {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC by `{command}`.")
        print((args.results / "conformance.md").read_text())
        return 0
    vers = versions()
    all_cells: list[Cell] = []
    for model in models:
        print(f"== {model} ({ZOO[model].pattern}): {len(variants)} variants", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        cells, output = run_models([model], variants, workdir=args.workdir / model, cache=args.cache_dir,
                                   timeout=args.timeout)
        wall = time.perf_counter() - t0
        if any(c.outcome == "ERROR" for c in cells):
            (args.workdir / model / "output.txt").write_text(output)
        all_cells += cells
        previous = {c["variant"]: c for c in results.get(model, {}).get("cells", [])}
        previous.update({c.variant: asdict(c) for c in cells})
        results[model] = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M"), "command": command,
                          "wall_s": wall, "versions": vers,
                          "cells": [previous[v] for v in VARIANT_NAMES if v in previous]}
        print(text_table(matrix(cells, variants)), file=sys.stderr, flush=True)
        print(f"   {wall:.0f} s", file=sys.stderr, flush=True)
        args.results.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(results, indent=1) + "\n")
        write_markdown(args.results / "conformance.md", results)
    print(text_table(matrix(all_cells, variants)))
    print()
    print("\n".join(textwrap.shorten(line, 400) for line in not_passed(all_cells)))
    bad = [c for c in all_cells if c.problems()]
    print(f"\n{len(bad)} cells break the outcome rules")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
