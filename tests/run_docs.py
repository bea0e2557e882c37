"""Run documents for the store/compare/frame/CLI tests: a real ``--edgeopt-json`` document
of the example suite (tests/data/digits_run.json: 6 items, samples thinned to 64), and
copies of it with chosen changes."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

DATA = Path(__file__).parent / "data" / "digits_run.json"


def real_doc() -> dict[str, Any]:
    return json.loads(DATA.read_text())


def measurement(doc: dict[str, Any], variant: str) -> dict[str, Any]:
    return next(r["measurement"] for r in doc["measurements"] if r["variant"] == variant)


def changed(doc: dict[str, Any], variant: str, **fields: Any) -> dict[str, Any]:
    """A copy of ``doc`` with ``fields`` of ``variant``'s measurement replaced; a callable
    value is applied to the old value."""
    out = copy.deepcopy(doc)
    m = measurement(out, variant)
    for k, v in fields.items():
        m[k] = v(m[k]) if callable(v) else v
    return out


def slowed(doc: dict[str, Any], variant: str, factor: float) -> dict[str, Any]:
    return changed(doc, variant, latency=lambda lat: {**lat, "samples_us": [x * factor for x in lat["samples_us"]]})


def with_samples(doc: dict[str, Any], make: Callable[[str], np.ndarray]) -> dict[str, Any]:
    """A copy whose every latency series (variants and embedded baselines) is ``make(variant)``."""
    out = copy.deepcopy(doc)
    for r in out["measurements"]:
        m = r["measurement"]
        for o in (m, m["baseline"]):
            o["latency"] = {"samples_us": [float(x) for x in make(o["variant"])]}
    return out


def with_metadata(doc: dict[str, Any], **machine: Any) -> dict[str, Any]:
    """A copy with saved-run metadata (as :func:`pytest_edgeopt.runs.store.run_metadata` makes)."""
    out = copy.deepcopy(doc)
    out["metadata"] = {
        "git": {"commit": "a" * 40, "branch": "main", "dirty": False},
        "machine": {"cpu_model": "Test CPU", "cores": 2, "arch": "x86_64", "os": "Linux", "hostname": "ci", **machine},
        "python": "3.11.7",
        "packages": {"tensorflow": "2.21.0", "ai-edge-litert": "2.3.0"},
    }
    return out
