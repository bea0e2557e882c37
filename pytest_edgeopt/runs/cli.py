"""``edgeopt``: saved runs outside a test run.

    edgeopt list [--storage DIR]
    edgeopt compare A B [--fail EXPR ...] [--alpha P] [--noise SIGMA]
    edgeopt report RUN --html out.html [--history N]
    edgeopt export RUN --csv out.csv | --parquet out.parquet
    edgeopt cache stats [--cache DIR|URL]
    edgeopt cache prune --older-than 30d [--keep-runs N] [--cache DIR|URL] [--storage DIR|URL]

A run is ``last``, a run number (``7``), a name (the newest run saved under it), or the path
of a saved run or ``--edgeopt-json`` file. ``--storage`` defaults to ``$EDGEOPT_STORAGE`` or
``.edgeopt/runs``; a URL (``s3://bucket/runs``) is read through a local mirror. Results go to stdout, progress lines to stderr. Exit status: 0 done,
1 regressions found by ``compare --fail``, 2 usage error or missing/unreadable run.
Never imports pytest or tensorflow.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_edgeopt.labels import where
from pytest_edgeopt.options import tolerance_arg
from pytest_edgeopt.runs.record import RunRecord
from pytest_edgeopt.runs.store import DEFAULT_STORAGE, RunNotFound, StoreWarning

if TYPE_CHECKING:  # pragma: no cover
    from pytest_edgeopt.runs.gate import Comparison

EXIT_OK, EXIT_REGRESSION, EXIT_USAGE = 0, 1, 2


class _Progress:
    """Progress lines on stderr, only once work has taken more than ``after_s`` seconds
    (quick commands stay quiet); ``--quiet`` silences them."""

    def __init__(self, quiet: bool, after_s: float = 0.5) -> None:
        self.quiet = quiet
        self.start = time.monotonic()
        self.after_s = after_s

    def __call__(self, message: str) -> None:
        if not self.quiet and time.monotonic() - self.start >= self.after_s:
            print(f"edgeopt: {message}", file=sys.stderr, flush=True)


def _parser() -> argparse.ArgumentParser:
    from pytest_edgeopt.runs.noise import ALPHA, DEFAULT_NOISE

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--storage", default=None, metavar="DIR|URL",
                        help=f"saved runs: a directory or a URL such as s3://bucket/runs "
                             f"(default: $EDGEOPT_STORAGE or {DEFAULT_STORAGE})")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    ap = argparse.ArgumentParser(prog="edgeopt", description="Saved pytest-edgeopt runs: list, compare, report, recommend, export.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("list", parents=[common], help="list saved runs")
    c = sub.add_parser("compare", parents=[common], help="compare run B with baseline run A")
    c.add_argument("baseline", metavar="A", help="baseline run: last, a number, a name or a file")
    c.add_argument("current", metavar="B", help="run to judge: last, a number, a name or a file")
    c.add_argument("--fail", action="append", type=tolerance_arg, default=[], metavar="EXPR",
                   help="tolerance that fails the comparison (repeatable): latency:5%%, latency:0.2ms, size:1%%, "
                        "compressed_size:1%%, accuracy:0.5pt")
    c.add_argument("--alpha", type=float, default=None, help=f"significance level of the latency test (default {ALPHA:g})")
    c.add_argument("--noise", type=float, default=None, metavar="SIGMA",
                   help="between-run noise of log p50 (default: estimated from saved runs of the machine, "
                        f"else {DEFAULT_NOISE:g})")
    c.add_argument("--all", action="store_true", help="print every measurement's changes, not only the summary")
    r = sub.add_parser("report", parents=[common], help="write an HTML report of a run")
    r.add_argument("run", metavar="RUN")
    r.add_argument("--html", type=Path, required=True, metavar="PATH", help="the HTML file to write")
    r.add_argument("--history", type=int, default=10, metavar="N",
                   help="earlier saved runs to show trends from (default 10; 0 for none)")
    rec = sub.add_parser("recommend", parents=[common], help="which variant to ship, per model and target, from a run")
    rec.add_argument("run", metavar="RUN", nargs="?", default="last", help="the run (default: last)")
    cache = sub.add_parser("cache", help="a variant cache (local directory or shared URL): stats, prune")
    cache_sub = cache.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--cache", default=None, metavar="DIR|URL",
                       help="the cache (default: $EDGEOPT_CACHE_DIR or .edgeopt/cache)")
    cache_sub.add_parser("stats", parents=[where, common], help="entries, bytes, oldest and newest")
    pr = cache_sub.add_parser("prune", parents=[where, common], help="remove old entries no recent run used")
    pr.add_argument("--older-than", required=True, metavar="AGE", help="entries stored longer ago than this: 30d, 12h")
    pr.add_argument("--keep-runs", type=int, default=0, metavar="N",
                    help="keep the entries the last N saved runs (in --storage) measured, however old")
    pr.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    e = sub.add_parser("export", parents=[common], help="export a run's measurements as a table")
    e.add_argument("run", metavar="RUN")
    out = e.add_mutually_exclusive_group(required=True)
    out.add_argument("--csv", type=Path, metavar="PATH")
    out.add_argument("--parquet", type=Path, metavar="PATH", help="needs pyarrow")
    return ap


def _storage(args: argparse.Namespace) -> Path:
    """The saved runs' directory: ``--storage``, ``$EDGEOPT_STORAGE`` or the default; a URL
    is pulled into its local mirror first (:mod:`pytest_edgeopt.storage.history`)."""
    value = args.storage or os.environ.get("EDGEOPT_STORAGE") or str(DEFAULT_STORAGE)
    if "://" not in value:
        return Path(value)
    if getattr(args, "_mirror", None) is None:
        from pytest_edgeopt.storage.history import local_storage

        args._mirror = local_storage(value)
    return args._mirror  # type: ignore[no-any-return]


def _load(storage: Path, ref: str, progress: Callable[[str], None]) -> RunRecord:
    from pytest_edgeopt.runs.store import load_run, resolve_run

    progress(f"loading {resolve_run(storage, ref).name}")
    return RunRecord.from_dict(load_run(storage, ref))


def cmd_list(args: argparse.Namespace, progress: _Progress) -> int:
    from pytest_edgeopt.runs.store import list_runs

    storage = _storage(args)
    runs = list_runs(storage, progress=progress)
    if not runs:
        print(f"no saved runs in {storage}")
        return EXIT_OK
    header = ("run", "name", "saved (UTC)", "commit", "items", "passed", "failed", "skipped")
    rows = [(str(r.number), r.name or "", r.time.strftime("%Y-%m-%d %H:%M:%S"),
             (r.commit or "")[:10] + ("+dirty" if r.dirty else ""),
             *(str(r.totals.get(k, "")) for k in ("items", "passed", "failed", "skipped"))) for r in runs]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    for row in (header, *rows):
        print("  ".join(c.rjust(w) if i in (0, 4, 5, 6, 7) else c.ljust(w)
                        for i, (c, w) in enumerate(zip(row, widths))).rstrip())
    return EXIT_OK


def cmd_compare(args: argparse.Namespace, progress: _Progress) -> int:
    from pytest_edgeopt.runs.gate import compare_runs, run_label
    from pytest_edgeopt.runs.noise import ALPHA, estimate_noise
    from pytest_edgeopt.runs.store import noise_history, resolve_run

    storage = _storage(args)
    base = _load(storage, args.baseline, progress)
    cur = _load(storage, args.current, progress)
    history = None
    if args.noise is None:
        history = noise_history(storage, cur, before=cur.number) if storage.is_dir() else []
        progress(f"latency noise from {len(history)} comparable saved runs"
                 + ("" if estimate_noise(history) is not None else " (too few: using the default)"))
    comparison = compare_runs(base, cur, args.fail, alpha=args.alpha or ALPHA, noise=args.noise, history=history,
                              baseline_label=run_label(base, f"baseline {resolve_run(storage, args.baseline)}"),
                              current_label=run_label(cur, f"{resolve_run(storage, args.current)}"))
    print(f"{comparison.current_label} vs {comparison.baseline_label}")
    if args.all or not args.fail:
        _print_rows(comparison)
    for line in comparison.lines():
        print(line)
    return EXIT_REGRESSION if comparison.failed else EXIT_OK


def _signed_pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:+.2f}%"


def _print_rows(comparison: Comparison) -> None:
    header = ("model", "variant", "where", "latency", "size", "gzip size", "accuracy")
    rows = []
    for r in comparison.rows:
        acc = "" if r.accuracy_change is None else f"{r.accuracy_change:+.2f} pt"
        rows.append((r.model, r.variant, where(r.target, r.device), r.cell, _signed_pct(r.size_change), _signed_pct(r.compressed_size_change), acc))
    if not rows:
        return
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    for row in (header, *rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


def cmd_report(args: argparse.Namespace, progress: _Progress) -> int:
    try:
        from pytest_edgeopt.runs.html import write_html
    except ImportError as exc:
        print(f"edgeopt report: the HTML report is not available ({exc}); this pytest-edgeopt has no "
              "pytest_edgeopt.runs.html or its dependencies (matplotlib) are missing", file=sys.stderr)
        return EXIT_USAGE
    from pytest_edgeopt.runs.store import load_run_docs

    storage = _storage(args)
    doc = _load(storage, args.run, progress)
    history: list[dict[str, Any]] = []
    if args.history > 0 and storage.is_dir():
        history = load_run_docs(storage, progress=progress, before=doc.number, limit=args.history)
    progress(f"writing {args.html}")
    try:
        write_html(args.html, doc, history or None)
    except ImportError as exc:
        print(f"edgeopt report: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {args.html}")
    return EXIT_OK


def cmd_export(args: argparse.Namespace, progress: _Progress) -> int:
    from pytest_edgeopt.runs.frame import ExportError, export

    doc = _load(_storage(args), args.run, progress)
    path = args.csv or args.parquet
    progress(f"writing {path}")
    try:
        export(doc, path)
    except (ExportError, ValueError) as exc:
        print(f"edgeopt export: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {path}")
    return EXIT_OK


def cmd_recommend(args: argparse.Namespace, progress: _Progress) -> int:
    from pytest_edgeopt.runs.recommend import recommendation_lines

    doc = _load(_storage(args), args.run, progress)
    lines = recommendation_lines(t.to_dict() for t in doc.measurements)
    print("\n".join(lines) if lines else "no measurements in this run")
    return EXIT_OK


def _parts_note(args: argparse.Namespace) -> str:
    """For a run of a sharded job that is not assembled yet: which parts are missing."""
    ref = next((getattr(args, a) for a in ("run", "current", "baseline") if getattr(args, a, None)), None)
    if not ref:
        return ""
    from pytest_edgeopt.storage.location import open_store
    from pytest_edgeopt.storage.shards import describe_parts

    run_id = ref.removeprefix("run-")
    try:
        note = describe_parts(open_store(args.storage or os.environ.get("EDGEOPT_STORAGE") or str(DEFAULT_STORAGE)),
                              run_id)
    except (OSError, ValueError):
        return ""
    return f"; {note}" if note else ""


def _utc(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M", time.gmtime(t))


def cmd_cache(args: argparse.Namespace, progress: _Progress) -> int:
    from pytest_edgeopt.storage import maintenance
    from pytest_edgeopt.storage.location import open_store, redact

    location = args.cache or os.environ.get("EDGEOPT_CACHE_DIR") or str(Path(".edgeopt") / "cache")
    store = open_store(location)
    shown = redact(location) if "://" in location else location
    if args.cache_command == "stats":
        st = maintenance.stats(store)
        print(f"{shown}: {st.entries} entries, {st.size_bytes / 1e6:.2f} MB; stored {_utc(st.oldest)} .. "
              f"{_utc(st.newest)} UTC; {st.unpublished} unpublished objects ({st.unpublished_bytes / 1e6:.2f} MB)")
        return EXIT_OK
    try:
        older = maintenance.parse_age(args.older_than)
    except ValueError as exc:
        print(f"edgeopt cache prune: --older-than: {exc}", file=sys.stderr)
        return EXIT_USAGE
    keep: set[str] = set()
    if args.keep_runs > 0:
        from pytest_edgeopt.runs.store import load_run_docs

        keep = maintenance.keys_of_runs(load_run_docs(_storage(args), progress=progress, limit=args.keep_runs))
    done = maintenance.prune(store, older, keep, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    print(f"{shown}: {verb} {done.removed} entries ({done.removed_bytes / 1e6:.2f} MB) and {done.orphans} "
          f"unpublished objects; kept {done.kept_for_runs} old entries the last {args.keep_runs} runs used")
    return EXIT_OK


COMMANDS = {"cache": cmd_cache, "list": cmd_list, "compare": cmd_compare, "report": cmd_report, "recommend": cmd_recommend,
            "export": cmd_export}


def main(argv: Sequence[str] | None = None) -> int:
    """The console script; returns the exit status (see the module docstring)."""
    args = _parser().parse_args(argv)
    progress = _Progress(args.quiet)

    def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        print(f"edgeopt: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always", StoreWarning)
        warnings.showwarning = show
        try:
            return COMMANDS[args.command](args, progress)
        except RunNotFound as exc:
            print(f"edgeopt {args.command}: {exc}{_parts_note(args)}", file=sys.stderr)
            return EXIT_USAGE
        except OSError as exc:  # the store cannot be reached (StoreUnavailable among them)
            print(f"edgeopt {args.command}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except ValueError as exc:  # an unreadable run named explicitly
            print(f"edgeopt {args.command}: {exc}", file=sys.stderr)
            return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
