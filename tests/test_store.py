"""Saved runs: names, numbering, lookup, metadata, and surviving interrupted or corrupt writes."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from run_docs import real_doc, with_metadata

from pytest_edgeopt.runs import store
from pytest_edgeopt.runs.store import RunNotFound, StoreWarning, list_runs, load_run, save_run

T0 = dt.datetime(2026, 11, 23, 18, 45, 12, tzinfo=dt.timezone.utc)
META = with_metadata(real_doc())["metadata"]


def _save(storage: Path, name: str | None = None, minutes: int = 0, doc: dict | None = None) -> Path:
    return save_run(storage, doc or {**real_doc(), "metadata": META}, name, now=T0 + dt.timedelta(minutes=minutes))


def test_files_are_numbered_and_sortable(tmp_path: Path) -> None:
    a = _save(tmp_path, "main")
    b = _save(tmp_path, minutes=1)
    c = _save(tmp_path, "pr-12_x.y", minutes=2)
    assert [p.name for p in (a, b, c)] == ["0001_main_20261123T184512Z.json.gz", "0002_20261123T184612Z.json.gz",
                                          "0003_pr-12_x.y_20261123T184712Z.json.gz"]
    runs = list_runs(tmp_path)
    assert [(r.number, r.name, r.label) for r in runs] == [(1, "main", "#1 main"), (2, None, "#2"),
                                                           (3, "pr-12_x.y", "#3 pr-12_x.y")]
    assert runs[0].time == T0 and runs[0].commit == "a" * 40 and runs[0].dirty is False
    assert runs[0].totals["items"] == 6


@pytest.mark.parametrize("name, why", [
    ("bad name", "letters, digits"), ("", "letters, digits"), ("-x", "starting with a letter"), ("a/b", "letters"),
    ("x" * 65, "1-64"), ("42", "all digits"), ("last", "reserved"),
])
def test_bad_names_are_refused_before_writing(tmp_path: Path, name: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        save_run(tmp_path, real_doc(), name)
    assert not list(tmp_path.glob("*.json.gz"))


def test_a_saved_run_keeps_everything(tmp_path: Path) -> None:
    doc = real_doc()
    path = _save(tmp_path, "main", doc={**doc, "metadata": META})
    loaded = load_run(tmp_path, "main")
    assert list(loaded)[:4] == ["schema", "run", "metadata", "devices"]
    assert loaded["measurements"] == doc["measurements"]  # raw samples and budget outcomes included
    assert loaded["run"]["number"] == 1 and loaded["run"]["name"] == "main"
    assert loaded["run"]["p50_ms"]["digits-cnn/int8/cpu/host"] > 0
    assert loaded["devices"] == [{"target": "cpu", "kind": "host", "id": "host", "label": None, "details": {},
                                  "conditions": {"threads": 1, "op_resolver": "AUTO"}}]
    assert gzip.decompress(path.read_bytes()).startswith(b'{"schema":1,"run":{')


def test_metadata_is_added_when_missing(tmp_path: Path) -> None:
    loaded = store.read_run(save_run(tmp_path, real_doc(), root=Path(__file__).parent))
    meta = loaded["metadata"]
    assert meta["machine"]["cores"] == os.cpu_count() and meta["machine"]["cpu_model"]
    assert meta["packages"]["numpy"] and meta["python"] == sys.version.split()[0]
    assert set(meta["git"]) == {"commit", "branch", "dirty"}


def test_git_state_of_a_checkout_and_of_no_checkout(tmp_path: Path) -> None:
    here = store.git_state(Path(__file__).parent)
    if here["commit"] is not None:  # the repository's own checkout
        assert re.fullmatch(r"[0-9a-f]{40}", here["commit"]) and isinstance(here["dirty"], bool)
    assert store.git_state(tmp_path) == {"commit": None, "branch": None, "dirty": None}


def test_git_missing_is_tolerated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no git on PATH
    assert store.git_state(tmp_path)["commit"] is None


def test_lookup_by_last_number_name_and_path(tmp_path: Path) -> None:
    _save(tmp_path, "main")
    _save(tmp_path, "pr", minutes=1)
    third = _save(tmp_path, "main", minutes=2)
    assert load_run(tmp_path, "last")["run"]["number"] == 3
    assert load_run(tmp_path, "main")["run"]["number"] == 3  # the newest of that name
    assert load_run(tmp_path, "2")["run"]["name"] == "pr"
    assert load_run(tmp_path, "0001")["run"]["number"] == 1
    assert load_run(tmp_path, third)["run"]["number"] == 3
    assert load_run(tmp_path, third.name)["run"]["number"] == 3
    plain = tmp_path / "edgeopt-results.json"
    plain.write_text(json.dumps(real_doc()))
    assert load_run(tmp_path, str(plain))["measurements"] == real_doc()["measurements"]


def test_a_missing_run_names_what_exists(tmp_path: Path) -> None:
    with pytest.raises(RunNotFound, match="no runs are saved there yet"):
        load_run(tmp_path / "nothing", "last")
    _save(tmp_path, "main")
    _save(tmp_path, minutes=1)
    with pytest.raises(RunNotFound, match=r"no saved run 'nightly' in .*: saved runs: #1 main, #2; names: main"):
        load_run(tmp_path, "nightly")
    with pytest.raises(RunNotFound, match="no saved run '9'"):
        load_run(tmp_path, "9")
    with pytest.raises(RunNotFound, match="no run file"):
        load_run(tmp_path, "gone.json")
    assert isinstance(RunNotFound("x"), LookupError)


def test_corrupt_files_are_skipped_with_a_warning(tmp_path: Path) -> None:
    _save(tmp_path, "main")
    good = _save(tmp_path, "main", minutes=1)
    truncated = tmp_path / "0003_main_20261123T184712Z.json.gz"
    truncated.write_bytes(good.read_bytes()[:-100])
    (tmp_path / "0004_20261123T184812Z.json.gz").write_bytes(b"not gzip at all")
    (tmp_path / "0005_20261123T184912Z.json.gz").write_bytes(gzip.compress(b'{"schema": 99, "measurements": []}'))
    (tmp_path / "notes.txt").write_text("ignored")
    with pytest.warns(StoreWarning) as caught:
        runs = list_runs(tmp_path)
    assert [r.number for r in runs] == [1, 2]
    text = " ".join(str(w.message) for w in caught)
    assert "0003_main" in text and "0004_" in text and "schema 99" in text
    with pytest.warns(StoreWarning, match="0003_main"):
        assert load_run(tmp_path, "main")["run"]["number"] == 2  # falls back past the broken newest
    with pytest.raises(ValueError, match="cannot read run .*0004"):
        load_run(tmp_path, "4")
    # Numbering continues after the highest file, readable or not.
    assert _save(tmp_path, minutes=9).name.startswith("0006_")


def test_an_interrupted_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _save(tmp_path, "main")

    def killed(src: str, dst: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        _save(tmp_path, "next", minutes=1)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == ["0001_main_20261123T184512Z.json.gz"]
    assert not list(tmp_path.glob(".*.tmp"))
    assert [r.number for r in list_runs(tmp_path)] == [1]


def test_a_process_killed_mid_write_leaves_earlier_runs_intact(tmp_path: Path) -> None:
    _save(tmp_path, "main")
    script = textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from pytest_edgeopt.runs import store
        from run_docs import real_doc
        real_replace = os.replace
        def slow_replace(src, dst):
            print("writing", flush=True)
            time.sleep(30)
            real_replace(src, dst)
        os.replace = slow_replace
        store.save_run({str(tmp_path)!r}, real_doc(), "killed")
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"  # the data is written, not yet in place
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert [r.name for r in list_runs(tmp_path)] == ["main"]
    visible = [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")]
    assert visible == ["0001_main_20261123T184512Z.json.gz"]
    assert len(list(tmp_path.glob(".*.tmp"))) == 1  # the killed writer's, hidden
    assert _save(tmp_path, "after", minutes=1).name.startswith("0002_after_")  # the lock was released
    assert not list(tmp_path.glob(".*.tmp"))  # and the orphan removed


def test_concurrent_saves_get_distinct_numbers(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from pytest_edgeopt.runs import store
        from run_docs import real_doc
        doc = real_doc()
        doc["metadata"] = {{"git": {{}}}}
        print(store.save_run({str(tmp_path)!r}, doc).name)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) for _ in range(3)]
    names = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert sorted(n[:4] for n in names) == ["0001", "0002", "0003"]


def test_noise_history_takes_runs_of_the_same_machine_and_packages(tmp_path: Path) -> None:
    like = {**real_doc(), "metadata": META}
    _save(tmp_path, doc=like)
    _save(tmp_path, doc={**like, "metadata": with_metadata(real_doc(), cpu_model="Other")["metadata"]}, minutes=1)
    _save(tmp_path, doc=like, minutes=2)
    other_tf = json.loads(json.dumps(META))
    other_tf["packages"]["tensorflow"] = "2.22.0"
    _save(tmp_path, doc={**like, "metadata": other_tf}, minutes=3)
    history = store.noise_history(tmp_path, like)
    assert len(history) == 2 and "digits-cnn/fp32/cpu/host" in history[0]
    assert len(store.noise_history(tmp_path, like, before=3)) == 1
    assert store.noise_history(tmp_path, real_doc()) == []  # nothing to match without metadata


def test_listing_is_quick_enough(tmp_path: Path) -> None:
    for i in range(5):
        _save(tmp_path, minutes=i)
    start = time.perf_counter()
    assert len(list_runs(tmp_path)) == 5
    assert time.perf_counter() - start < 2.0
