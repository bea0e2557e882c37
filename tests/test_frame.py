"""Saved runs as a typed DataFrame, and session exports."""

from __future__ import annotations

import datetime as dt
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from run_docs import measurement, real_doc, with_metadata

from pytest_edgeopt.runs import frame
from pytest_edgeopt.runs.frame import COLUMNS, ExportError, export, frame_of, load_runs
from pytest_edgeopt.runs.store import save_run


def test_one_document_has_typed_columns() -> None:
    doc = real_doc()
    df = frame_of(doc)
    assert list(df.columns) == list(COLUMNS)
    assert {c: str(t) for c, t in df.dtypes.items()} == COLUMNS
    assert len(df) == len(doc["measurements"])
    assert df["run"].isna().all()  # not a saved run
    assert df["time"].iloc[0] == pd.Timestamp(doc["created"])


def test_figures_come_from_the_raw_samples() -> None:
    doc = real_doc()
    df = frame_of(doc).set_index("variant")
    m = measurement(doc, "int8")
    samples = np.asarray(m["latency"]["samples_us"])
    base = np.asarray(m["baseline"]["latency"]["samples_us"])
    assert df.loc["int8", "samples"] == len(samples)
    assert df.loc["int8", "p50_ms"] == pytest.approx(np.percentile(samples, 50) / 1000)
    assert df.loc["int8", "speedup"] == pytest.approx(np.median(base) / np.median(samples))
    assert df.loc["int8", "size_reduction"] == pytest.approx(1 - m["size_bytes"] / m["baseline"]["size_bytes"])
    assert df.loc["int8", "metric_name"] == "top1" and df.loc["int8", "eval_samples"] == 450
    assert df.loc["int8", "drop"] == pytest.approx(m["baseline"]["accuracy"]["value"] - m["accuracy"]["value"])
    assert bool(df.loc["int8", "passed"]) and bool(df.loc["int8", "budgets_passed"])


def test_unmeasured_items_get_empty_measurement_columns() -> None:
    doc = real_doc()
    doc["measurements"].append({"test": "t::x[int4-cpu]", "outcome": "skipped", "model": "digits-cnn",
                                "variant": "int4", "target": "cpu", "device": "host", "reason": "no",
                                "measurement": None})
    row = frame_of(doc).iloc[-1]
    assert row["outcome"] == "skipped" and pd.isna(row["passed"]) and pd.isna(row["p50_ms"])


def test_load_runs_reads_every_saved_run(tmp_path: Path) -> None:
    t0 = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.timezone.utc)
    doc = with_metadata(real_doc())
    save_run(tmp_path, doc, "main", now=t0)
    save_run(tmp_path, doc, now=t0 + dt.timedelta(hours=1))
    df = load_runs(tmp_path)
    assert df["run"].tolist() == [1] * 6 + [2] * 6
    assert df["run_name"].iloc[0] == "main" and pd.isna(df["run_name"].iloc[-1])
    assert df["time"].iloc[-1] == pd.Timestamp(t0 + dt.timedelta(hours=1))
    assert df["commit"].iloc[0] == "a" * 40 and not df["dirty"].iloc[0]
    assert df.groupby("run")["p50_ms"].median().notna().all()


def test_no_runs_give_an_empty_frame(tmp_path: Path) -> None:
    df = load_runs(tmp_path / "none")
    assert df.empty and list(df.columns) == list(COLUMNS)


def test_csv_export(tmp_path: Path) -> None:
    out = export(real_doc(), tmp_path / "session.csv")
    back = pd.read_csv(out)
    assert list(back.columns) == list(COLUMNS) and len(back) == 6
    assert set(back["variant"]) == {"fp32", "float16", "dynamic_range", "int8", "qat_int8", "pruned"}


def test_parquet_without_pyarrow_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(frame.importlib.util, "find_spec", lambda name: None if name == "pyarrow" else real(name))
    with pytest.raises(ExportError, match=r"Parquet needs pyarrow \(pip install pyarrow\)"):
        export(real_doc(), tmp_path / "session.parquet")
    assert not (tmp_path / "session.parquet").exists()


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is None, reason="pyarrow is not installed")
def test_parquet_export(tmp_path: Path) -> None:
    back = pd.read_parquet(export(real_doc(), tmp_path / "session.parquet"))
    assert len(back) == 6


def test_other_suffixes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="use a .csv or .parquet file name"):
        export(real_doc(), tmp_path / "session.xlsx")
