"""The ``edgeopt`` console script, run as a real subprocess."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest
from run_docs import changed, real_doc, slowed, with_metadata

from pytest_edgeopt.runs.store import save_run

T0 = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.timezone.utc)


def edgeopt(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest_edgeopt.runs.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    """Two saved runs: #1 main, and #2 pr whose float16 grew 2% and int8 got 50% slower."""
    base = with_metadata(real_doc())
    for r in base["measurements"]:
        r["measurement"]["model_path"] = None  # as if rebuilt: latency is judged
    cur = slowed(changed(base, "float16", size_bytes=lambda s: int(s * 1.02)), "int8", 1.5)
    runs = tmp_path / "runs"
    save_run(runs, base, "main", now=T0)
    save_run(runs, cur, "pr", now=T0 + dt.timedelta(hours=1))
    return runs


def test_list(storage: Path) -> None:
    res = edgeopt("list", "--storage", str(storage))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["run", "name", "saved", "(UTC)", "commit", "items", "passed", "failed", "skipped"]
    assert lines[1].split()[:4] == ["1", "main", "2026-11-23", "12:00:00"]
    assert lines[2].split()[1] == "pr"


def test_list_of_nothing(tmp_path: Path) -> None:
    res = edgeopt("list", "--storage", str(tmp_path))
    assert res.returncode == 0 and res.stdout.startswith("no saved runs in")


def test_compare_fails_on_regressions(storage: Path) -> None:
    res = edgeopt("compare", "main", "pr", "--storage", str(storage), "--fail", "latency:5%", "--fail", "size:1%",
                  "--noise", "0.02")
    assert res.returncode == 1, res.stdout + res.stderr
    out = res.stdout
    assert out.startswith("#2 pr (2026-11-23 13:00 UTC, aaaaaaa) vs #1 main (2026-11-23 12:00 UTC, aaaaaaa)")
    assert "REGRESSION digits-cnn int8 on cpu: latency p50" in out and "+50.0%" in out
    assert "REGRESSION digits-cnn float16 on cpu: size" in out and "+2.00%" in out
    assert out.rstrip().endswith("2 regressions")


def test_compare_passes_within_tolerance(storage: Path) -> None:
    res = edgeopt("compare", "1", "2", "--storage", str(storage), "--fail", "latency:60%", "--fail", "size:3%")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "no regression" in res.stdout


def test_compare_without_tolerances_shows_the_changes(storage: Path) -> None:
    res = edgeopt("compare", "main", "last", "--storage", str(storage))
    assert res.returncode == 0
    int8 = next(line for line in res.stdout.splitlines() if line.startswith("digits-cnn  int8 "))
    assert "+50.0% (p" in int8


def test_compare_a_json_file(storage: Path, tmp_path: Path) -> None:
    plain = tmp_path / "edgeopt-results.json"
    plain.write_text(json.dumps(real_doc()))
    res = edgeopt("compare", "main", str(plain), "--storage", str(storage), "--fail", "size:1%")
    assert res.returncode == 0, res.stderr
    assert "this run has no machine and package metadata" in res.stdout


def test_a_missing_run_is_a_usage_error(storage: Path) -> None:
    res = edgeopt("compare", "main", "nightly", "--storage", str(storage))
    assert res.returncode == 2
    assert "no saved run 'nightly'" in res.stderr and "#1 main, #2 pr" in res.stderr


def test_a_malformed_tolerance_is_a_usage_error(storage: Path) -> None:
    res = edgeopt("compare", "main", "pr", "--storage", str(storage), "--fail", "latency:5")
    assert res.returncode == 2
    assert "latency takes the unit % or ms or us" in res.stderr and "accuracy:0.5pt" in res.stderr


def test_export_csv(storage: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    res = edgeopt("export", "pr", "--csv", str(out), "--storage", str(storage))
    assert res.returncode == 0, res.stderr
    header, *rows = out.read_text().splitlines()
    assert header.startswith("run,run_name,time,commit") and len(rows) == 6 and rows[0].startswith("2,pr,")


def test_export_to_a_bad_suffix(storage: Path, tmp_path: Path) -> None:
    res = edgeopt("export", "pr", "--csv", str(tmp_path / "out.txt"), "--storage", str(storage))
    assert res.returncode == 2 and "use a .csv or .parquet file name" in res.stderr


def test_report_html(storage: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "out.html"
    res = edgeopt("report", "last", "--html", str(out), "--storage", str(storage))
    assert res.returncode == 0, res.stderr
    assert out.read_text().lstrip().lower().startswith("<!doctype html")


def test_report_without_the_html_module(storage: Path, tmp_path: Path) -> None:
    code = ("import sys; sys.modules['pytest_edgeopt.runs.html'] = None; "
            "from pytest_edgeopt.runs.cli import main; "
            f"sys.exit(main(['report', 'last', '--html', {str(tmp_path / 'x.html')!r}, '--storage', {str(storage)!r}]))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "the HTML report is not available" in res.stderr


def test_the_cli_imports_neither_pytest_nor_tensorflow(storage: Path) -> None:
    code = ("import sys; from pytest_edgeopt.runs.cli import main; "
            f"rc = main(['compare', 'main', 'pr', '--storage', {str(storage)!r}, '-q']); "
            "print(sorted(m for m in ('pytest', '_pytest', 'tensorflow') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.stdout.splitlines()[-1] == "[]", res.stdout + res.stderr


def test_recommend_prints_the_variant_to_ship(storage: Path) -> None:
    res = edgeopt("recommend", "last", "--storage", str(storage))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert " on cpu: " in lines[0] and "met every budget" in lines[0]
    assert any(line.strip().startswith("smallest file:") for line in lines)
    assert any(line.strip().startswith("fastest:") for line in lines)


def test_compare_help_states_the_defaults_the_gate_uses(capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_edgeopt.runs.cli import main
    from pytest_edgeopt.runs.noise import ALPHA, DEFAULT_NOISE

    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"else {DEFAULT_NOISE:g})" in text and f"(default {ALPHA:g})" in text
