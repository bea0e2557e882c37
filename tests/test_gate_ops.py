"""Regressions explained by op: the gate names the ops whose time grew, a placement change
(an op fell off the accelerator) is a finding even when latency did not move, and an
accelerator row that got suspiciously faster warns (fails with ``faster:X%``). Unit tests on
the example suite's real run document with profiles attached in code, and one through the
``edgeopt compare`` command on saved run files."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from run_docs import changed, measurement, real_doc, slowed, with_metadata

from pytest_edgeopt.profile import OpTime, Placement, Profile
from pytest_edgeopt.runs.abtest import confirm_latency
from pytest_edgeopt.runs.explain import op_changes, placement_change
from pytest_edgeopt.runs.gate import compare_runs
from pytest_edgeopt.runs.tolerance import Tolerance, parse_tolerance

#: The digits CNN's ops as a profile would list them (index, type, ms per inference).
OPS = ((0, "CONV_2D", 0.0012), (1, "MAX_POOL_2D", 0.0003), (2, "CONV_2D", 0.0020), (3, "RESHAPE", 0.0001),
       (4, "FULLY_CONNECTED", 0.0008), (5, "SOFTMAX", 0.0002))


def _profile(scale: dict[int, float] | None = None, fallback: tuple[int, ...] = (), partitions: int = 1,
             delegate: str | None = "gpu") -> dict[str, Any]:
    """A profile of the CNN: op ``i``'s time times ``scale[i]``; ops in ``fallback`` on the CPU."""
    scale = scale or {}
    ops = tuple(OpTime(i, op, ms * scale.get(i, 1.0), on="cpu" if i in fallback else "gpu") for i, op, ms in OPS)
    placement = Placement(total_nodes=len(OPS), delegated_nodes=len(OPS) - len(fallback), partitions=partitions,
                          delegate=delegate, fallback=tuple((i, OPS[i][1]) for i in fallback))
    return Profile(ops=tuple(sorted(ops, key=lambda o: -o.avg_ms)), ops_source="benchmark_model op profiling",
                   placement=placement).to_dict()


def _on(doc: dict[str, Any], target: str, variant: str = "int8", profile: dict[str, Any] | None = None) -> dict[str, Any]:
    """``doc`` with ``variant`` measured on ``target`` (with ``profile``)."""
    return changed(doc, variant, target=target, **({"profile": profile} if profile is not None else {}))


# -- per-op changes -----------------------------------------------------------------------------
def test_op_changes_are_matched_by_index_largest_growth_first() -> None:
    before = Profile.from_dict(_profile())
    after = Profile.from_dict(_profile({2: 3.0, 4: 2.0, 0: 1.5, 5: 1.1, 1: 0.5}))
    grown = op_changes(before, after)
    assert [(c.index, c.op) for c in grown] == [(2, "CONV_2D"), (4, "FULLY_CONNECTED"), (0, "CONV_2D")]
    assert grown[0].before_ms == pytest.approx(0.0020) and grown[0].after_ms == pytest.approx(0.0060)
    assert grown[0].text == "#2 CONV_2D 2 us -> 6 us"
    assert [c.index for c in op_changes(before, after, grown=False)] == [1]
    assert op_changes(before, Profile()) == () and op_changes(None, after) == ()


def test_an_op_in_one_run_only_is_new_or_gone() -> None:
    before = Profile(ops=(OpTime(0, "CONV_2D", 1.0),))
    after = Profile(ops=(OpTime(0, "DEPTHWISE_CONV_2D", 1.5), OpTime(1, "ADD", 0.2)))
    texts = [c.text for c in op_changes(before, after)]
    assert texts == ["#0 CONV_2D -> DEPTHWISE_CONV_2D 1 ms -> 1.5 ms", "#1 ADD 0.2 ms (new)"]
    assert [c.text for c in op_changes(after, before, grown=False)] == [
        "#0 DEPTHWISE_CONV_2D -> CONV_2D 1.5 ms -> 1 ms", "#1 ADD 0.2 ms (gone)"]


def test_a_latency_regression_names_the_ops_that_grew_most() -> None:
    doc = _on(real_doc(), "android_gpu", profile=_profile())
    slow = _on(slowed(doc, "int8", 1.5), "android_gpu", profile=_profile({2: 4.0, 4: 2.0, 5: 1.5}))
    c = compare_runs(doc, slow, ["latency:5%"])
    (r,) = c.regressions
    assert r.metric == "latency"
    assert r.detail == "ops that grew most: #2 CONV_2D 2 us -> 8 us, #4 FULLY_CONNECTED 0.8 us -> 1.6 us, #5 SOFTMAX 0.2 us -> 0.3 us"
    line = next(x for x in c.lines() if x.startswith("REGRESSION"))
    assert "exceeds latency:5%; ops that grew most: #2 CONV_2D 2 us -> 8 us" in line
    row = c.row("digits-cnn", "int8", "android_gpu")
    assert row is not None and [o["index"] for o in row.to_dict()["ops_grown"]] == [2, 4, 5]


def test_without_profiles_the_message_is_as_before() -> None:
    c = compare_runs(real_doc(), slowed(real_doc(), "int8", 1.5), ["latency:5%"])
    (r,) = c.regressions
    assert r.detail is None and "ops that grew" not in r.message and r.message.endswith("exceeds latency:5%")


def test_an_ab_confirmed_regression_keeps_its_explanation() -> None:
    doc = with_metadata(_on(real_doc(), "android_gpu", profile=_profile()))
    for r in doc["measurements"]:
        r["measurement"]["model_path"] = None  # rows are judged
    slow = _on(slowed(doc, "int8", 1.5), "android_gpu", profile=_profile({3: 20.0}))
    c = compare_runs(doc, slow, ["latency:5%"])

    def remeasure(row: Any) -> Any:
        if row.variant != "int8":
            return "not this row"
        return (lambda: [100.0 + i % 3 for i in range(50)]), (lambda: [150.0 + i % 3 for i in range(50)])

    confirmed = confirm_latency(c, remeasure)
    (r,) = [g for g in confirmed.regressions if g.metric == "latency"]
    assert r.evidence and r.evidence.startswith("A/B") and r.detail and "#3 RESHAPE 0.1 us -> 2 us" in r.detail


# -- placement ----------------------------------------------------------------------------------
def test_an_op_that_fell_off_the_accelerator_is_a_regression_even_at_the_same_latency() -> None:
    doc = _on(real_doc(), "android_gpu", profile=_profile())
    fell = _on(doc, "android_gpu", profile=_profile(fallback=(3, 5), partitions=2))
    c = compare_runs(doc, fell, ["latency:5%"])
    assert c.failed and [r.metric for r in c.regressions] == ["placement"]
    msg = c.regressions[0].message
    assert msg.startswith("digits-cnn int8 on android_gpu: placement 2 more op(s) off the accelerator exceeds placement:0ops")
    assert "4 of 6 ops on gpu (was 6 of 6), 2 partitions (was 1)" in msg
    assert "fell back to the CPU: #3 RESHAPE, #5 SOFTMAX" in msg and "latency +0.0%" in msg
    assert c.row("digits-cnn", "int8", "android_gpu").regressed == ("placement",)  # type: ignore[union-attr]


def test_a_placement_tolerance_allows_that_many_ops() -> None:
    doc = _on(real_doc(), "android_gpu", profile=_profile())
    fell = _on(doc, "android_gpu", profile=_profile(fallback=(3,)))
    lenient = compare_runs(doc, fell, ["latency:5%", "placement:1ops"])
    assert not lenient.failed
    assert any("placement changed" in w and "fell back to the CPU: #3 RESHAPE" in w for w in lenient.warnings)
    assert compare_runs(doc, _on(doc, "android_gpu", profile=_profile(fallback=(3, 4))),
                        ["placement:1ops"]).failed


def test_compare_only_reports_a_placement_change_as_a_warning() -> None:
    doc = _on(real_doc(), "android_gpu", profile=_profile())
    c = compare_runs(doc, _on(doc, "android_gpu", profile=_profile(fallback=(3,))))
    assert not c.failed
    assert any(line.startswith("warning: digits-cnn int8 on android_gpu: placement changed") for line in c.lines())


def test_ops_back_on_the_accelerator_are_not_a_regression() -> None:
    doc = _on(real_doc(), "android_gpu", profile=_profile(fallback=(3,)))
    c = compare_runs(doc, _on(doc, "android_gpu", profile=_profile()), ["latency:5%"])
    assert not c.failed and any("back on the accelerator: #3 RESHAPE" in w for w in c.warnings)
    pc = placement_change(Profile.from_dict(_profile(fallback=(3,))), Profile.from_dict(_profile()))
    assert pc is not None and pc.lost == 0 and not pc.worse and pc.came_back == ((3, "RESHAPE"),)
    assert placement_change(Profile.from_dict(_profile()), Profile.from_dict(_profile())) is None


def test_a_latency_regression_with_a_fallback_says_both() -> None:
    doc = _on(real_doc(), "android_gpu", profile=_profile())
    slow = _on(slowed(doc, "int8", 1.5), "android_gpu", profile=_profile({3: 30.0}, fallback=(3,)))
    c = compare_runs(doc, slow, ["latency:5%"])
    assert sorted(r.metric for r in c.regressions) == ["latency", "placement"]
    lat = next(r for r in c.regressions if r.metric == "latency")
    assert "#3 RESHAPE 0.1 us -> 3 us" in lat.message and "fell back to the CPU: #3 RESHAPE" in lat.message


# -- suspiciously faster ------------------------------------------------------------------------
def test_an_accelerator_row_much_faster_warns_by_default() -> None:
    doc = _on(real_doc(), "android_gpu", profile=_profile())
    fast = _on(slowed(doc, "int8", 0.6), "android_gpu", profile=_profile({2: 0.1}))
    c = compare_runs(doc, fast, ["latency:5%"])
    assert not c.failed
    (w,) = [w for w in c.warnings if "suspiciously faster" in w]
    assert w.startswith("digits-cnn int8 on android_gpu got suspiciously faster on an accelerator: p50 ")
    assert "(-40.0%" in w and "faster:X%" in w and "ops that shrank most: #2 CONV_2D 2 us -> 0.2 us" in w


def test_faster_beyond_the_tolerance_fails() -> None:
    doc = _on(real_doc(), "android_gpu", profile=_profile())
    fast = _on(slowed(doc, "int8", 0.6), "android_gpu")
    c = compare_runs(doc, fast, ["latency:5%", "faster:20%"])
    assert c.failed and [r.metric for r in c.regressions] == ["faster"]
    assert "faster than faster:20% allows on an accelerator" in c.regressions[0].message
    assert not compare_runs(doc, fast, ["faster:50%"]).failed


def test_faster_on_the_cpu_or_within_the_noise_is_not_flagged() -> None:
    doc = real_doc()
    c = compare_runs(doc, slowed(doc, "int8", 0.6), ["faster:20%"])
    assert not c.failed and not any("faster" in w for w in c.warnings)
    gpu = _on(doc, "android_gpu")
    assert not compare_runs(gpu, _on(slowed(doc, "int8", 0.97), "android_gpu"), ["faster:1%"]).failed
    # a CPU target whose placement names an accelerator delegate counts as one
    edge = _on(doc, "cpu", profile=_profile(delegate="edgetpu"))
    assert compare_runs(edge, _on(slowed(edge, "int8", 0.6), "cpu"), ["faster:20%"]).failed


def test_faster_and_placement_tolerances_parse() -> None:
    assert parse_tolerance("faster:20%") == Tolerance("faster", 20.0, "%")
    assert parse_tolerance("placement:0ops") == Tolerance("placement", 0.0, "ops")
    assert parse_tolerance("faster:20%").exceeded(1.0, 0.79) and not parse_tolerance("faster:20%").exceeded(1.0, 0.81)
    for bad, why in (("faster:100%", "less than 100%"), ("faster:2ms", "takes the unit %"),
                     ("placement:1", "takes the unit ops")):
        with pytest.raises(ValueError, match=why):
            parse_tolerance(bad)


# -- through the edgeopt command, on saved run files ------------------------------------------------
def test_edgeopt_compare_names_the_planted_op_in_saved_runs(tmp_path: Path) -> None:
    """A planted 40 us delay in op #2 on the (saved) emulated phone: the command's REGRESSION
    line names it, and exits 1."""
    doc = _on(real_doc(), "android_gpu", profile=_profile())
    m = measurement(doc, "int8")
    planted = copy.deepcopy(doc)
    pm = measurement(planted, "int8")
    pm["latency"]["samples_us"] = [x + 40.0 for x in m["latency"]["samples_us"]]
    pm["profile"] = _profile({2: 21.0})
    base, cur = tmp_path / "base.json", tmp_path / "cur.json"
    base.write_text(json.dumps(doc))
    cur.write_text(json.dumps(planted))
    run = subprocess.run([sys.executable, "-m", "pytest_edgeopt.runs.cli", "compare", str(base), str(cur),
                          "--fail", "latency:5%", "--noise", "0.02", "-q"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "REGRESSION digits-cnn int8 on android_gpu: latency p50" in run.stdout
    assert "ops that grew most: #2 CONV_2D 2 us -> 42 us" in run.stdout


# -- a byte-identical model is judged when the device's software or placement changed -------------
def _identical_pair() -> tuple[dict[str, Any], dict[str, Any]]:
    """A saved-looking run and a copy with int8 2x slower: the same model files and runtime."""
    doc = with_metadata(_on(real_doc(), "android_gpu", profile=_profile()))
    return doc, _on(slowed(doc, "int8", 2.0), "android_gpu")


def test_the_same_model_on_the_same_runtime_is_not_judged() -> None:
    doc, slow = _identical_pair()
    c = compare_runs(doc, slow, ["latency:5%"])
    assert not c.failed and not c.row("digits-cnn", "int8", "android_gpu").judged  # type: ignore[union-attr]


def test_the_same_model_after_an_os_update_is_judged() -> None:
    doc, slow = _identical_pair()
    updated = changed(slow, "int8", device=lambda d: {**d, "details": {**d["details"], "release": "15"}})
    c = compare_runs(doc, updated, ["latency:5%"])
    assert [r.metric for r in c.regressions] == ["latency"]
    # how the device was reached is not its software
    moved = changed(slow, "int8", device=lambda d: {**d, "details": {**d["details"], "adb_server": "10.0.0.2:5037"}})
    assert not compare_runs(doc, moved, ["latency:5%"]).failed


def test_the_same_model_with_another_placement_is_judged() -> None:
    doc, slow = _identical_pair()
    c = compare_runs(doc, _on(slow, "android_gpu", profile=_profile({3: 40.0}, fallback=(3,))), ["latency:5%"])
    assert sorted(r.metric for r in c.regressions) == ["latency", "placement"]


def test_the_same_model_file_is_not_re_measured_ab() -> None:
    """An A/B of a file against itself cannot see an OS update: the two-run verdict stands."""
    doc, slow = _identical_pair()
    updated = changed(slow, "int8", device=lambda d: {**d, "details": {**d["details"], "release": "15"}})
    c = compare_runs(doc, updated, ["latency:5%"])
    asked: list[str] = []

    def remeasure(row: Any) -> Any:
        asked.append(row.variant)
        return "not here"

    confirmed = confirm_latency(c, remeasure)
    assert [r.metric for r in confirmed.regressions] == ["latency"] and "int8" not in asked
    row = confirmed.row("digits-cnn", "int8", "android_gpu")
    assert row is not None and row.evidence and "the same model file in both runs" in row.evidence


@pytest.mark.parametrize("field", ["size_bytes", "compressed_size_bytes"])
@pytest.mark.parametrize("how", ["absent", "null", "zero"])
def test_a_size_missing_from_a_run_file_is_not_measured_not_a_crash(field: str, how: str) -> None:
    # Hand-made or older run files may lack a size: the gate says so instead of dividing by zero.
    baseline = copy.deepcopy(real_doc())
    m = measurement(baseline, "int8")
    if how == "absent":
        del m[field]
    else:
        m[field] = None if how == "null" else 0
    metric = "size" if field == "size_bytes" else "compressed_size"
    c = compare_runs(baseline, real_doc(), [f"{metric}:0%"])
    row = next(r for r in c.rows if r.variant == "int8")
    assert row.status == "compared"
    assert (row.size_change if metric == "size" else row.compressed_size_change) is None
    other = row.compressed_size_change if metric == "size" else row.size_change
    assert other == 0.0  # the other size is still compared
    assert not c.regressions and not c.failed
    assert any(r.metric == metric and "not measured" in r.message and r.variant == "int8" for r in c.refusals)
