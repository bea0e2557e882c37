"""The summary's rows: one per (model, variant, target, device), the fp32 baseline included."""

from __future__ import annotations

from typing import Any

from pytest_edgeopt.runs.rows import merge
from pytest_edgeopt.runs.terminal import table_lines


def _obs(variant: str, top1: float) -> dict[str, Any]:
    return {"model": "m", "variant": variant, "target": "cpu", "device": {"kind": "host", "id": "host", "label": None},
            "size_bytes": 1000, "compressed_size_bytes": 900, "latency": {"p50_ms": 0.01},
            "accuracy": {"metric": "top1", "value": top1, "samples": 16}, "from_cache": True, "build_seconds": 1.0}


def _record(variant: str, top1: float, source: float) -> dict[str, Any]:
    derived = {"size_bytes": 800, "compressed_size_bytes": 700, "size_reduction": 0.2, "p50_ms": 0.01,
               "speedup": 1.0, "metric_name": "top1", "metric": top1, "accuracy_drop": 0.5 - top1,
               "source_metric": source, "source_accuracy_drop": source - top1, "from_cache": True,
               "build_seconds": 1.0}
    return {"model": "m", "variant": variant, "target": "cpu", "device": None, "test": f"t[{variant}]",
            "outcome": "passed", "measurement": {**_obs(variant, top1), "baseline": _obs("fp32", 0.5),
                                                 "derived": derived}}


def test_the_fp32_row_made_from_a_baseline_shows_its_drop_against_the_source_model() -> None:
    """The fp32 row of a run whose fp32 had no test of its own (or whose variant came first)
    is made from a variant's baseline: it showed a blank "vs source" cell."""
    rows = merge([_record("int8", 0.4, source=0.55)])
    base = next(r for r in rows if r["variant"] == "fp32")
    assert base["result"] == "base"
    assert abs(base["measurement"]["derived"]["source_accuracy_drop"] - 0.05) < 1e-9  # 0.55 - fp32's 0.5
    lines = table_lines([_record("int8", 0.4, source=0.55)])
    assert "vs source" in lines[0]
    fp32_line = next(line for line in lines if " fp32 " in line)
    assert "+0.0500" in fp32_line, fp32_line
