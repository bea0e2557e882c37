"""Which variant to ship, from hand-made records."""

from __future__ import annotations

from pytest_edgeopt.runs.recommend import recommend, recommendation_lines


def record(variant: str, outcome: str, size: int, gz: int, p50: float, metric: float, target: str = "cpu") -> dict:
    derived = {"size_bytes": size, "compressed_size_bytes": gz, "p50_ms": p50, "metric_name": "top1",
               "metric": metric, "accuracy_drop": 0.98 - metric, "size_reduction": 0, "speedup": 1,
               "from_cache": True, "build_seconds": 0}
    base = {"model": "m", "variant": "fp32", "target": target, "device": {"id": "host"}, "size_bytes": 100,
            "compressed_size_bytes": 90, "latency": {"p50_ms": 1.0}, "accuracy": {"metric": "top1", "value": 0.98},
            "from_cache": True, "recipe": {}}
    return {"test": f"t[{variant}]", "outcome": outcome, "model": "m", "variant": variant, "target": target,
            "device": "host", "measurement": {"variant": variant, "model": "m", "derived": derived, "baseline": base,
                                             "from_cache": True, "recipe": {}}}


def test_smallest_smallest_download_and_fastest_among_passing() -> None:
    recs = [
        record("float16", "passed", 50, 45, 0.9, 0.98),
        record("int8", "passed", 25, 22, 0.6, 0.975),
        record("pruned_int8", "passed", 25, 9, 0.7, 0.97),
        record("pcqat_int8", "failed", 24, 8, 0.6, 0.90),   # smallest of all, but missed a budget
        record("int16x8", "skipped", 0, 0, 0, 0),
    ]
    recs[-1]["measurement"] = None
    (rec,) = recommend(recs)
    assert [c.variant for c in rec.passing] == ["int8", "pruned_int8", "float16"]
    assert rec.smallest.variant == "int8"            # tie on size broken by latency
    assert rec.smallest_download.variant == "pruned_int8"
    assert rec.fastest.variant == "int8"
    assert rec.failing == ("pcqat_int8",)
    lines = recommendation_lines(recs)
    assert lines[0] == "m on cpu: 3 variant(s) met every budget: int8, pruned_int8, float16"
    assert "smallest download: pruned_int8 (25 B, gzip 9 B, p50 0.7 ms, top1 0.9700 (drop +0.0100))" in lines[2]


def test_nothing_passing_is_said_plainly() -> None:
    (rec,) = recommend([record("int8", "failed", 25, 22, 0.6, 0.5)])
    assert rec.smallest is None and rec.fastest is None
    assert rec.lines() == ["m on cpu: no variant met its budgets (1 failed)"]


def test_targets_are_recommended_separately() -> None:
    recs = [record("int8", "passed", 25, 22, 0.6, 0.97), record("float16", "passed", 50, 45, 0.2, 0.98, target="android_gpu")]
    out = {r.target: r.fastest.variant for r in recommend(recs)}
    assert out == {"cpu": "int8", "android_gpu": "float16"}
