"""Saved runs as a pandas DataFrame, and session exports (CSV, or Parquet with pyarrow).

One row per measured test item per run (skipped and built-only items get a row too, with
empty measurement columns). Columns, with their pandas dtypes:

=========================  ==========================  ==========================================
column                     dtype                       meaning
=========================  ==========================  ==========================================
run                        Int64                       the saved run's counter (NA: not saved)
run_name                   string                      its name
time                       datetime64[ns, UTC]         when the run was saved (or created)
commit                     string                      git commit of the checkout
dirty                      boolean                     uncommitted changes in the checkout
test, outcome              string                      node id; passed, failed or skipped
model, variant             string
target, device             string                      ``cpu``, ``host``; ``android_gpu``, serial
size_bytes                 Int64                       the variant's ``.tflite``
compressed_size_bytes      Int64                       gzip-9 of it
size_reduction             Float64                     1 - size / fp32 size
compressed_size_reduction  Float64
samples                    Int64                       latency samples
p50_ms, p90_ms, mean_ms,   Float64                     latency statistics of the raw samples
min_ms, stdev_ms, cv
speedup                    Float64                     fp32 p50 / variant p50
baseline_p50_ms            Float64                     fp32 p50 on the same target
metric_name                string                      ``top1``...
metric                     Float64                     the accuracy metric
eval_samples               Int64                       eval samples it was scored on
drop                       Float64                     fp32 metric - variant metric
passed                     boolean                     the test passed (NA when skipped)
budgets_passed             boolean                     every budget check passed (NA: none)
=========================  ==========================  ==========================================
"""

from __future__ import annotations

import importlib.util
import io
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pytest_edgeopt.atomic import atomic_write_bytes
from pytest_edgeopt.runs.record import ObservationRecord, RunRecord, TestRecord
from pytest_edgeopt.runs.store import load_run_docs

#: Column -> pandas dtype, in order.
COLUMNS: dict[str, str] = {
    "run": "Int64", "run_name": "string", "time": "datetime64[ns, UTC]", "commit": "string", "dirty": "boolean",
    "test": "string", "outcome": "string", "model": "string", "variant": "string", "target": "string",
    "device": "string", "size_bytes": "Int64", "compressed_size_bytes": "Int64", "size_reduction": "Float64",
    "compressed_size_reduction": "Float64", "samples": "Int64", "p50_ms": "Float64", "p90_ms": "Float64",
    "mean_ms": "Float64", "min_ms": "Float64", "stdev_ms": "Float64", "cv": "Float64", "speedup": "Float64",
    "baseline_p50_ms": "Float64", "metric_name": "string", "metric": "Float64", "eval_samples": "Int64",
    "drop": "Float64", "passed": "boolean", "budgets_passed": "boolean",
}


def _latency(obs: ObservationRecord) -> dict[str, Any]:
    """Latency statistics recomputed from the raw samples (never trusted from the summary)."""
    samples = obs.samples_us
    if not samples:
        return {}
    x = np.asarray(samples, dtype=float)
    mean = float(x.mean())
    stdev = float(x.std(ddof=1)) if x.size > 1 else 0.0
    return {"samples": int(x.size), "p50_ms": float(np.percentile(x, 50)) / 1000, "p90_ms": float(np.percentile(x, 90)) / 1000,
            "mean_ms": mean / 1000, "min_ms": float(x.min()) / 1000, "stdev_ms": stdev / 1000,
            "cv": stdev / mean if mean > 0 else np.nan}


def _row(run: Mapping[str, Any], rec: TestRecord) -> dict[str, Any]:
    m = rec.measurement
    built = rec.built or {}
    outcome = rec.outcome
    obs = m.observation if m else None
    row: dict[str, Any] = {
        **run, "test": rec.test, "outcome": outcome, "model": rec.model or (obs.model if obs else None),
        "variant": rec.variant, "target": rec.target, "device": rec.device,
        "size_bytes": obs.size_bytes if obs else built.get("size_bytes"),
        "compressed_size_bytes": obs.compressed_size_bytes if obs else built.get("compressed_size_bytes"),
        "passed": None if outcome == "skipped" else outcome == "passed",
        "budgets_passed": m.budgets_passed if m else None,
    }
    if m is not None and obs is not None:
        base = m.baseline or obs
        lat, blat = _latency(obs), _latency(base)
        row.update(lat)
        row["baseline_p50_ms"] = blat.get("p50_ms")
        if lat.get("p50_ms") and blat.get("p50_ms"):
            row["speedup"] = blat["p50_ms"] / lat["p50_ms"]
        if base.size_bytes:
            row["size_reduction"] = 1 - (obs.size_bytes or 0) / base.size_bytes
        if base.compressed_size_bytes:
            row["compressed_size_reduction"] = 1 - (obs.compressed_size_bytes or 0) / base.compressed_size_bytes
        acc, bacc = obs.accuracy, base.accuracy
        if acc:
            row.update(metric_name=acc.metric, metric=acc.value, eval_samples=acc.samples)
            if bacc and bacc.metric == acc.metric and bacc.value is not None and acc.value is not None:
                row["drop"] = bacc.value - acc.value
    return row


def _run_fields(doc: RunRecord) -> dict[str, Any]:
    return {"run": doc.number, "run_name": doc.name, "time": doc.time, "commit": doc.commit, "dirty": doc.dirty}


def _typed(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    for col, dtype in COLUMNS.items():
        if dtype.startswith("datetime"):
            df[col] = pd.to_datetime(df[col], utc=True, errors="coerce").astype(dtype)
        else:
            df[col] = df[col].astype(object).where(df[col].notna(), None).astype(dtype)
    return df


def frame_of(doc: RunRecord | Mapping[str, Any]) -> pd.DataFrame:
    """One run (a saved run or an ``--edgeopt-json`` document, or its record) as a typed DataFrame."""
    return frame_of_docs([doc])


def frame_of_docs(docs: Iterable[RunRecord | Mapping[str, Any]]) -> pd.DataFrame:
    """Runs (records or documents) as one typed DataFrame, in the order given."""
    rows = []
    for doc in docs:
        record = RunRecord.of(doc)
        run = _run_fields(record)
        rows += [_row(run, rec) for rec in record.measurements]
    return _typed(rows)


def load_runs(storage: str | Path, progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Every readable saved run in ``storage`` (e.g. ``.edgeopt/runs``, or a URL such as
    ``s3://bucket/runs``: see :mod:`pytest_edgeopt.storage.history`) as one typed
    DataFrame, one row per measurement per run, oldest run first (see the module's table).
    Unreadable files are skipped with a :class:`~pytest_edgeopt.runs.store.StoreWarning`; an
    empty or missing directory gives an empty frame with the same columns."""
    return frame_of_docs(load_run_docs(storage if isinstance(storage, str) else Path(storage), progress=progress))


class ExportError(RuntimeError):
    """The export cannot be written in the format asked for (the message says what to do)."""


def export(doc: RunRecord | Mapping[str, Any], path: str | Path) -> Path:
    """Write :func:`frame_of` ``doc`` to ``path``, atomically: Parquet for a ``.parquet``
    suffix (needs pyarrow, else :class:`ExportError`), CSV for ``.csv`` (``ValueError`` for
    any other suffix). Raw samples are not exported (the saved run keeps them)."""
    path = Path(path)
    df = frame_of(doc)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        if importlib.util.find_spec("pyarrow") is None:
            raise ExportError(f"cannot write {path}: Parquet needs pyarrow (pip install pyarrow); "
                              "or export to a .csv file")
        buf = io.BytesIO()
        df.to_parquet(buf, engine="pyarrow", index=False)
        atomic_write_bytes(path, buf.getvalue())
    elif suffix == ".csv":
        atomic_write_bytes(path, df.to_csv(index=False).encode("utf-8"))
    else:
        raise ValueError(f"cannot export to {path}: use a .csv or .parquet file name")
    return path
