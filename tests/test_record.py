"""The typed run record: one to_dict/from_dict per type, round trips that change nothing,
older schema-1 files, newer schemas refused, and the one target/device label."""

from __future__ import annotations

import copy
import datetime as dt
import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from run_docs import real_doc, with_metadata

from pytest_edgeopt.labels import device_label, where
from pytest_edgeopt.runs.record import (
    SCHEMA_VERSION,
    MeasurementRecord,
    ObservationRecord,
    RunRecord,
    SchemaError,
    TestRecord,
    check_schema,
)
from pytest_edgeopt.runs.store import load_run, read_run, save_run
from pytest_edgeopt.runs.writer import document, run_record

DATA = Path(__file__).parent / "data"
#: An early schema-1 file: no ``recommendations``, no ``model_path``; Android measurements.
OLD = DATA / "edgeopt_example_run.json"


def old_doc() -> dict[str, Any]:
    return json.loads(OLD.read_text())


@pytest.mark.parametrize("doc", [real_doc(), old_doc()], ids=["digits_run", "edgeopt_example_run"])
def test_a_document_round_trips_unchanged(doc: dict[str, Any]) -> None:
    record = RunRecord.from_dict(copy.deepcopy(doc))
    assert record.to_dict() == doc
    # and through JSON text, as files hold it
    assert json.loads(json.dumps(record.to_dict(), sort_keys=True)) == doc


def test_an_older_schema_1_file_reads_with_its_gaps() -> None:
    record = RunRecord.from_dict(old_doc())
    assert record.schema == 1 and record.recommendations is None
    m = record.measured()[0]
    assert m.model_path is None and "model_path" not in m.to_dict()
    assert "recommendations" not in record.to_dict()
    assert {m.device.kind for m in record.measured()} == {"host", "android"}
    assert m.observation.samples_us and m.baseline is not None and m.baseline.variant == "fp32"
    assert m.budgets_passed is True


def test_the_typed_fields_are_the_documents() -> None:
    doc = real_doc()
    record = RunRecord.from_dict(doc)
    t, raw = record.measurements[0], doc["measurements"][0]
    assert isinstance(t, TestRecord) and isinstance(t.measurement, MeasurementRecord)
    assert (t.test, t.outcome, t.variant, t.target, t.device) == (raw["test"], raw["outcome"], raw["variant"],
                                                                   raw["target"], raw["device"])
    m = t.measurement
    assert m.observation.size_bytes == raw["measurement"]["size_bytes"]
    assert list(m.observation.samples_us) == raw["measurement"]["latency"]["samples_us"]
    assert m.observation.accuracy is not None and m.observation.accuracy.samples == 450
    assert m.key == ("digits-cnn", raw["variant"], "cpu", "host")
    assert record.latency_settings == doc["settings"]["latency"]
    assert record.number is None and record.time == doc["created"]


def test_unknown_keys_are_kept_at_every_level() -> None:
    doc = real_doc()
    doc["future_top"] = {"x": 1}
    doc["measurements"][0]["future_item"] = [1, 2]
    doc["measurements"][0]["measurement"]["model_sha256"] = "ab" * 32
    doc["measurements"][0]["measurement"]["latency"]["p99_ms"] = 1.5
    doc["measurements"][0]["measurement"]["device"]["battery"] = 0.9
    record = RunRecord.from_dict(doc)
    assert record.unknown["future_top"] == {"x": 1}
    assert record.measurements[0].measurement.observation.unknown == {"model_sha256": "ab" * 32}
    assert record.to_dict() == doc


def test_partial_hand_made_dicts_read_and_write_back() -> None:
    obs = {"model": "m", "variant": "fp32", "target": "cpu", "device": {"id": "host"}, "latency": {"p50_ms": 1.0}}
    o = ObservationRecord.from_dict(obs)
    assert o.size_bytes is None and o.latency is not None and o.latency.p50_ms == 1.0 and o.samples_us == ()
    assert o.device_name == "host"
    assert set(o.to_dict()) == set(obs)


@pytest.mark.parametrize("schema", [SCHEMA_VERSION + 1, "1", None, True])
def test_a_newer_or_malformed_schema_is_a_clear_error(schema: Any) -> None:
    doc = real_doc()
    doc["schema"] = schema
    with pytest.raises(SchemaError, match="upgrade pytest-edgeopt"):
        RunRecord.from_dict(doc)


def test_a_schema_older_than_the_first_is_refused() -> None:
    with pytest.raises(SchemaError, match="older"):
        check_schema(0)


def test_a_newer_saved_run_is_refused_by_name(tmp_path: Path) -> None:
    doc = real_doc()
    doc["schema"] = SCHEMA_VERSION + 1
    path = tmp_path / "future.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"future.json.*schema 2 .*upgrade pytest-edgeopt"):
        read_run(path)


def test_not_a_run_document() -> None:
    with pytest.raises(ValueError, match="no 'measurements' list"):
        RunRecord.from_dict({"schema": 1})


def test_the_writer_writes_the_records_unchanged() -> None:
    doc = real_doc()
    written = document(list(reversed(doc["measurements"])), doc["settings"])
    assert written["schema"] == SCHEMA_VERSION
    assert written["measurements"] == doc["measurements"]  # sorted back to table order, content as given
    assert written["totals"]["items"] == len(doc["measurements"])
    assert [r["model"] for r in written["recommendations"]] == ["digits-cnn"]
    assert RunRecord.from_dict(written).to_dict() == written
    assert run_record(doc["measurements"], doc["settings"]).to_dict()["measurements"] == doc["measurements"]


def test_a_saved_run_puts_its_head_first_and_reads_as_a_record(tmp_path: Path) -> None:
    doc = with_metadata(real_doc())
    path = save_run(tmp_path, RunRecord.from_dict(doc), "main", now=dt.datetime(2026, 11, 23, tzinfo=dt.timezone.utc))
    text = gzip.decompress(path.read_bytes()).decode()
    assert text.startswith('{"schema":1,"run":{"number":1,"name":"main"')
    record = RunRecord.from_dict(load_run(tmp_path, "main"))
    assert (record.number, record.name, record.commit, record.dirty) == (1, "main", "a" * 40, False)
    assert record.time == "2026-11-23T00:00:00+00:00"
    assert record.run is not None and record.run.p50_ms["digits-cnn/int8/cpu/host"] > 0
    assert [m.to_dict() for m in record.measurements] == doc["measurements"]


@pytest.mark.parametrize("target, device, label", [
    ("cpu", None, "cpu"), ("cpu", "host", "cpu"), ("cpu", "", "cpu"),
    ("android_gpu", "emulator-5554", "android_gpu/emulator-5554"), (None, None, "-"), (None, "x", "-/x"),
])
def test_the_target_device_label(target: str | None, device: str | None, label: str) -> None:
    assert where(target, device) == label


def test_a_devices_name() -> None:
    assert device_label({"id": "127.0.0.1:5555", "label": "pixel"}) == "pixel"
    assert device_label({"id": "127.0.0.1:5555", "label": None}) == "127.0.0.1:5555"
    assert device_label({}) == device_label(None) == "host"
    assert device_label("serial") == "serial"


def test_a_test_record_keeps_the_cache_key_of_its_model_file() -> None:
    rec = next(r for r in real_doc()["measurements"] if r.get("measurement"))
    assert "model_key" not in rec  # written before keys were recorded: reads as None, writes back as it was
    old = TestRecord.from_dict(rec)
    assert old.model_key is None and old.to_dict() == rec
    new = {**rec, "model_key": "ab" * 32}
    assert TestRecord.from_dict(new).model_key == "ab" * 32
    assert TestRecord.from_dict(new).to_dict() == new
