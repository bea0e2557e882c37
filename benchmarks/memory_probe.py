"""A pytest plugin for benchmarks/memory.py: after each test's teardown, collect garbage and
record the process's resident memory and what is still alive that holds a model.

Loaded with ``-p memory_probe`` (``benchmarks/`` on ``PYTHONPATH``); writes its records as
JSON to ``$EDGEOPT_MEMPROBE_OUT`` at the end of the session. Counted per test: LiteRT
interpreters (``ai_edge_litert`` and ``tf.lite``), TFLite converters, and Keras models
(tf_keras and Keras 3), with the referrer types of any interpreter still alive.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from pathlib import Path

import pytest

RECORDS: list[dict] = []


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _classes() -> dict[str, tuple[type, ...]]:
    found: dict[str, list[type]] = {"interpreters": [], "converters": [], "keras_models": [], "tf_variables": []}
    mods = sys.modules
    if "ai_edge_litert.interpreter" in mods:
        found["interpreters"].append(mods["ai_edge_litert.interpreter"].Interpreter)
    if "tensorflow.lite.python.interpreter" in mods:
        found["interpreters"].append(mods["tensorflow.lite.python.interpreter"].Interpreter)
    if "tensorflow.lite.python.lite" in mods:
        found["converters"].append(mods["tensorflow.lite.python.lite"].TFLiteConverterBase)
    if "tensorflow.python.ops.resource_variable_ops" in mods:
        found["tf_variables"].append(mods["tensorflow.python.ops.resource_variable_ops"].BaseResourceVariable)
    if "tf_keras" in mods:
        found["keras_models"].append(mods["tf_keras"].Model)
    if "keras" in mods and hasattr(mods["keras"], "Model"):
        found["keras_models"].append(mods["keras"].Model)
    return {k: tuple(v) for k, v in found.items()}


def census() -> dict[str, object]:
    gc.collect()
    classes = _classes()
    counts = {k: 0 for k in classes}
    held: list[str] = []
    variable_bytes = 0
    for obj in gc.get_objects():
        for kind, types in classes.items():
            if types and isinstance(obj, types):
                counts[kind] += 1
                if kind == "tf_variables":
                    try:
                        variable_bytes += obj.shape.num_elements() * obj.dtype.size
                    except Exception:
                        pass
                if kind == "interpreters":
                    held.extend(sorted({type(r).__name__ for r in gc.get_referrers(obj)} - {"list", "frame"}))
    return {**counts, "interpreter_referrers": held, "variable_mib": variable_bytes / 2**20,
            "rss_after_trim_mib": _trimmed_rss()}


def _trimmed_rss() -> float:
    """RSS after glibc's malloc_trim(0): what is still in use, not just kept by the allocator."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return float("nan")
    return rss_mib()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    result = yield
    t0 = time.perf_counter()
    record = {"test": item.nodeid, "rss_mib": rss_mib(), **census()}
    record["census_s"] = round(time.perf_counter() - t0, 3)
    RECORDS.append(record)
    return result


def pytest_sessionfinish(session: pytest.Session) -> None:
    out = os.environ.get("EDGEOPT_MEMPROBE_OUT")
    if out:
        Path(out).write_text(json.dumps({"records": RECORDS, "final_rss_mib": rss_mib()}))
