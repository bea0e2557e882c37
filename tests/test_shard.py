"""``--edgeopt-shard=I/N``: one run split across CI jobs. The split (devices round-robin,
variants by a stable hash) is the same in every job; the parts land under one run id in the
shared store and are read as one run once all are there. The end-to-end test runs N=2 pytest
processes at once against a real S3-compatible server (moto) on 127.0.0.1."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_edgeopt.farm.inventory import device_shards, load_inventory
from pytest_edgeopt.runs import cli
from pytest_edgeopt.storage.location import DirectoryStore, open_store
from pytest_edgeopt.storage.shards import describe_parts, merge_parts, parse_shard, part_key, stable_shard
from tests.s3_server import S3Server

ROOT = Path(__file__).resolve().parents[1]


def test_shard_values_are_checked() -> None:
    assert (parse_shard("2/4").index, parse_shard("2/4").count) == (2, 4)
    for bad in ("0/2", "3/2", "2", "a/b"):
        with pytest.raises(ValueError):
            parse_shard(bad)


def test_devices_go_round_robin_and_variants_by_a_stable_hash(tmp_path: Path) -> None:
    farm = tmp_path / "farm.toml"
    farm.write_text('[android.p1]\nserial = "A"\n[android.p2]\nserial = "B"\n[android.p3]\nserial = "C"\n'
                    '[edgetpu.usb0]\ndevice = "usb:0"\n')
    shards = device_shards(load_inventory(farm), 2)
    assert shards == {"android:p1": 1, "android:p2": 2, "android:p3": 1, "edgetpu:usb0": 2}
    # The same in another process (no per-process hash seed): what every CI job relies on.
    code = "from pytest_edgeopt.storage.shards import stable_shard as s; print([s(v, 3) for v in ('fp32', 'int8', 'qat_int8')])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                         env={**os.environ, "PYTHONHASHSEED": "123"}).stdout
    assert out.strip() == str([stable_shard(v, 3) for v in ("fp32", "int8", "qat_int8")])


def test_missing_parts_are_named_and_parts_merge_into_one_run(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path)
    assert describe_parts(store, "77") is None
    store.write(part_key("77", 1, 3), b"x")
    store.write(part_key("77", 3, 3), b"x")
    assert describe_parts(store, "77") == ("run 77: parts 1, 3 of 3 saved; missing 2 (their jobs have not saved "
                                           "yet, or failed)")
    a = {"schema": 1, "created": "2026-12-07T00:00:02", "totals": {"items": 2, "passed": 2}, "measurements": [{"m": 1}],
         "metadata": {"shard": {"index": 1}, "host": {"node": "a"}}}
    b = {"schema": 1, "created": "2026-12-07T00:00:01", "totals": {"items": 1, "passed": 0}, "measurements": [{"m": 2}],
         "metadata": {"shard": {"index": 2}, "host": {"node": "b"}}}
    merged = merge_parts([a, b])
    assert merged["totals"] == {"items": 3, "passed": 2} and merged["measurements"] == [{"m": 1}, {"m": 2}]
    assert [p["host"]["node"] for p in merged["metadata"]["shard"]["parts"]] == ["a", "b"]
    assert merged["created"] == "2026-12-07T00:00:01"


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with S3Server() as server:
        yield server


CONFTEST = """
import os, pytest
from fixtures.digits import digits_data
from pytest_edgeopt import ModelUnderTest

@pytest.fixture(scope="session")
def edgeopt_model():
    d = digits_data()
    return ModelUnderTest(name="digits-cnn", model=os.environ["EDGEOPT_TEST_MODEL"], eval_data=(d.x_eval, d.y_eval))
"""

TEST = """
import pytest

@pytest.mark.edgeopt_variants("fp32", "float16")
def test_v(measurement):
    assert measurement.size_bytes > 1000
"""


@pytest.mark.slow  # two pytest processes that build and measure (~2 min on a loaded 2-core machine)
def test_two_shards_write_one_run_to_s3(s3: S3Server, tmp_path: Path, digits_model_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    projects = [tmp_path / f"job{i}" for i in (1, 2)]  # two CI jobs: nothing on disk in common
    for project in projects:
        project.mkdir()
        (project / "conftest.py").write_text(CONFTEST)
        (project / "test_sharded.py").write_text(TEST)
        (project / "pytest.ini").write_text("[pytest]\n")
    runs, cache = s3.url("shard-runs"), s3.url("shard-cache")
    env = {**os.environ, **s3.env, "EDGEOPT_TEST_MODEL": str(digits_model_path), "EDGEOPT_RUN_ID": "4242",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    common = ["-p", "no:cacheprovider", "-q", f"--edgeopt-storage={runs}", f"--edgeopt-cache-dir={cache}",
              "--edgeopt-min-samples=5", "--edgeopt-min-time=0", "--edgeopt-warmup=1"]
    jobs = [subprocess.Popen([sys.executable, "-m", "pytest", *common, f"--edgeopt-shard={i}/2"], cwd=projects[i - 1],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in (1, 2)]
    outs = [job.communicate(timeout=600)[0] for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], "\n\n".join(outs)
    # Each job ran its share: fp32 on one, float16 on the other (stable_shard of the variant).
    assert all(re.search(r"^1 passed, 1 deselected", out, re.M) for out in outs), outs
    assert sum("assembled as s3://edgeopt-test/shard-runs/0001_run-4242_" in out for out in outs) == 1, outs
    assert sum("parts 1 of 2 saved; missing 2" in out or "parts 2 of 2 saved; missing 1" in out
               for out in outs) == 1, outs

    for k, v in s3.env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(tmp_path)
    from pytest_edgeopt import load_runs

    frame = load_runs(runs)
    assert sorted(frame["variant"]) == ["float16", "fp32"]
    assert describe_parts(open_store(runs), "4242") == "run 4242: all 2 parts saved"
    assert cli.main(["list", "--storage", runs]) == 0
    assert cli.main(["report", "run-4242", "--storage", runs, "--html", str(tmp_path / "r.html"), "--history", "0"]) == 0
    doc = json.loads(gzip.decompress(s3.client().get_object(
        Bucket=s3.bucket, Key=f"shard-runs/{part_key('4242', 2, 2)}")["Body"].read()))
    assert doc["metadata"]["shard"] == {"index": 2, "count": 2, "run_id": "4242"}
    assert doc["metadata"]["host"]["machine_class"]


def test_the_gate_names_the_missing_parts_of_a_baseline_not_assembled_yet(tmp_path: Path) -> None:
    from pytest_edgeopt.runs.outputs import OutputSettings, prepare

    DirectoryStore(tmp_path).write(part_key("4243", 2, 2), b"part")
    with pytest.raises(ValueError, match=r"--edgeopt-compare=run-4243: no saved run .*; run 4243: parts 2 of 2 "
                                         r"saved; missing 1"):
        prepare(OutputSettings(storage=tmp_path, compare="run-4243"))
    with pytest.raises(ValueError, match="--edgeopt-shard needs the id"):
        prepare(OutputSettings(storage=tmp_path, shard=(1, 2)))
