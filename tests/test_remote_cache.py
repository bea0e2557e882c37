"""The variant cache shared through S3: a real S3-compatible server (moto's server mode, in a
subprocess on 127.0.0.1) and real processes. Two runners share built variants; a killed
upload leaves no visible entry; corrupt remote bytes are rebuilt; a server that stops
mid-run costs a warning, never a test."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_edgeopt.storage.location import FsspecStore, check_location, open_store, redact
from pytest_edgeopt.storage.remote_cache import RemoteCache, entry_prefix
from pytest_edgeopt.variants.cache import VariantCache
from tests.s3_server import S3Server

KEY = "ab" + "c" * 62


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with S3Server() as server:
        yield server


@pytest.fixture
def s3_env(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    for k, v in s3.env.items():
        monkeypatch.setenv(k, v)
    return s3


def _prefix(request: pytest.FixtureRequest) -> str:
    return request.node.name.replace("[", "_").replace("]", "")


def test_aws_endpoint_url_is_honoured_by_s3fs(s3_env: S3Server, request: pytest.FixtureRequest) -> None:
    # Nothing but the environment points s3fs at the server: AWS_ENDPOINT_URL is what a
    # MinIO or moto user sets, and the object must land on that server.
    store = open_store(s3_env.url(_prefix(request)))
    assert isinstance(store, FsspecStore)
    store.write("a/b", b"hello")
    body = s3_env.client().get_object(Bucket=s3_env.bucket, Key=f"{_prefix(request)}/a/b")["Body"].read()
    assert body == b"hello"
    assert store.create("a/b", b"other") is False and store.read("a/b") == b"hello"
    assert store.create("a/c", b"new") is True


def test_a_lookup_is_one_request_when_it_misses_and_two_when_it_hits(s3_env: S3Server,
                                                                     request: pytest.FixtureRequest) -> None:
    remote = RemoteCache.at(s3_env.url(_prefix(request)))
    store = remote.store
    assert isinstance(store, FsspecStore)
    remote.fetch("00" * 32, "model.tflite")  # the client's session is made on first use
    sent: list[str] = []
    store.fs.s3.meta.events.register("before-send", lambda request, **kw: sent.append(request.method))
    assert remote.fetch(KEY, "model.tflite") is None
    assert sent == ["GET"]  # not HEAD + LIST (s3fs's size check) before it
    assert remote.publish(KEY, b"TFL3" * 100, {}, "model.tflite")
    sent.clear()
    assert remote.fetch(KEY, "model.tflite") is not None and sent == ["GET", "GET"]  # meta.json, then the data


def test_a_url_without_its_backend_is_a_usage_error_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "s3fs" else real(name, *a))
    with pytest.raises(ValueError, match=r"pip install pytest-edgeopt\[s3\]"):
        check_location("s3://bucket/prefix")
    assert redact("s3://user:secret@bucket/p?X-Amz-Signature=abc") == "s3://bucket/p"


def test_a_second_runner_finds_what_the_first_built(s3_env: S3Server, tmp_path: Path,
                                                    request: pytest.FixtureRequest) -> None:
    url = s3_env.url(_prefix(request))
    first = VariantCache(tmp_path / "runner1", remote=RemoteCache.at(url))
    built = first.get_or_build(KEY, lambda: (b"TFL3" + b"x" * 1000, {"variant": "int8"}))
    first.flush()  # the upload ran in the background: the end of a session waits for it
    assert not built.hit and first.remote is not None and first.remote.stats.uploaded == 1
    assert s3_env.keys(f"{_prefix(request)}/{entry_prefix(KEY)}/meta.json")

    second = VariantCache(tmp_path / "runner2", remote=RemoteCache.at(url))
    found = second.get_or_build(KEY, lambda: pytest.fail("the second runner built again"))
    assert found.hit and found.remote and found.path.read_bytes() == b"TFL3" + b"x" * 1000
    assert found.meta["variant"] == "int8"
    assert second.remote is not None and second.remote.stats.hits == 1 and second.remote.stats.bytes_down > 1000
    # ...and now it is in runner 2's local mirror: no remote round trip the next time.
    assert second.local(KEY) is not None


@pytest.mark.parametrize("damage", ["truncate", "flip", "drop_data"])
def test_corrupt_remote_bytes_are_detected_and_rebuilt(s3_env: S3Server, tmp_path: Path, damage: str,
                                                       request: pytest.FixtureRequest) -> None:
    url, prefix = s3_env.url(_prefix(request)), _prefix(request)
    r1 = VariantCache(tmp_path / "r1", remote=RemoteCache.at(url))
    r1.get_or_build(KEY, lambda: (b"good-bytes" * 100, {}))
    r1.flush()
    client = s3_env.client()
    meta = json.loads(client.get_object(Bucket=s3_env.bucket, Key=f"{prefix}/{entry_prefix(KEY)}/meta.json")["Body"].read())
    data_key = f"{prefix}/{entry_prefix(KEY)}/data/{meta['sha256']}"
    if damage == "drop_data":
        client.delete_object(Bucket=s3_env.bucket, Key=data_key)
    else:
        body = b"good-bytes" * 50 if damage == "truncate" else b"X" + b"good-bytes" * 100
        client.put_object(Bucket=s3_env.bucket, Key=data_key, Body=body[: len(body) - (1 if damage == "flip" else 0)])

    notes: list[str] = []
    remote = RemoteCache.at(url, notes.append)
    cache = VariantCache(tmp_path / "r2", remote=remote)
    entry = cache.get_or_build(KEY, lambda: (b"good-bytes" * 100, {}))
    cache.flush()
    assert not entry.hit and entry.path.read_bytes() == b"good-bytes" * 100
    assert any("corrupt" in n for n in notes) and remote.stats.repaired == 1
    fetched = RemoteCache.at(url).fetch(KEY, "model.tflite")  # the entry was replaced: intact again
    assert fetched is not None and fetched[0] == b"good-bytes" * 100


KILLED_UPLOAD = """
import os, sys
from pytest_edgeopt.storage.remote_cache import RemoteCache
remote = RemoteCache.at(sys.argv[1])
print("uploading", flush=True)
remote.publish(sys.argv[2], os.urandom(48 * 2**20), {"variant": "int8"}, "model.tflite")
print("published", flush=True)
"""


def test_a_killed_upload_leaves_no_visible_entry(s3_env: S3Server, tmp_path: Path,
                                                 request: pytest.FixtureRequest) -> None:
    url = s3_env.url(_prefix(request))
    proc = subprocess.Popen([sys.executable, "-c", KILLED_UPLOAD, url, KEY], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, **s3_env.env})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "uploading"
    time.sleep(0.3)  # the 48 MB PUT is under way
    proc.kill()
    rest = proc.communicate()[0]
    assert proc.returncode == -9 and "published" not in rest, "the upload finished before it could be killed"
    assert not s3_env.keys(f"{_prefix(request)}/{entry_prefix(KEY)}/meta.json")
    assert RemoteCache.at(url).fetch(KEY, "model.tflite") is None

    cache = VariantCache(tmp_path / "next", remote=RemoteCache.at(url))
    assert not cache.get_or_build(KEY, lambda: (b"TFL3-rebuilt", {})).hit
    cache.flush()
    fetched = RemoteCache.at(url).fetch(KEY, "model.tflite")
    assert fetched is not None and fetched[0] == b"TFL3-rebuilt"


def _race(url: str, root: str, env: dict[str, str], barrier: object, tag: str) -> None:
    os.environ.update(env)
    cache = VariantCache(Path(root), remote=RemoteCache.at(url))

    def build() -> tuple[bytes, dict[str, str]]:
        barrier.wait(30)  # type: ignore[attr-defined]  # both runners are building now
        return f"TFL3 built by {tag}".encode() * 100, {"by": tag}

    cache.get_or_build(KEY, build)
    cache.flush()


def test_two_runners_building_the_same_key_end_with_one_valid_entry(s3_env: S3Server, tmp_path: Path,
                                                                    request: pytest.FixtureRequest) -> None:
    url = s3_env.url(_prefix(request))
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_race, args=(url, str(tmp_path / tag), s3_env.env, barrier, tag)) for tag in ("A", "B")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    fetched = RemoteCache.at(url).fetch(KEY, "model.tflite")
    assert fetched is not None
    data, meta = fetched
    assert data in (b"TFL3 built by A" * 100, b"TFL3 built by B" * 100) and meta["by"] in data.decode()
    # The loser dropped its data object: one entry, one payload.
    assert len(s3_env.keys(f"{_prefix(request)}/{entry_prefix(KEY)}/data/")) == 1


def test_a_server_that_stops_degrades_to_local_builds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = S3Server().start()
    for k, v in server.env.items():
        monkeypatch.setenv(k, v)
    notes: list[str] = []
    cache = VariantCache(tmp_path / "c", remote=RemoteCache.at(server.url("gone"), notes.append))
    assert not cache.get_or_build(KEY, lambda: (b"first", {})).hit
    cache.flush()
    server.stop()
    start = time.perf_counter()
    other = "de" + "f" * 62
    entry = cache.get_or_build(other, lambda: (b"second", {}))
    assert not entry.hit and entry.path.read_bytes() == b"second"
    cache.flush()  # the failed upload turns the remote cache off
    assert cache.remote is not None and cache.remote.stats.offline and cache.remote.stats.uploaded == 1
    assert any("unreachable" in n for n in notes)
    assert time.perf_counter() - start < 30


# -- through pytest: two runners, one remote cache ----------------------------------------------
CONFTEST = """
import os, pytest
from fixtures.digits import digits_data
from pytest_edgeopt import ModelUnderTest

@pytest.fixture(scope="session")
def edgeopt_model():
    d = digits_data()
    return ModelUnderTest(name="digits-cnn", model=os.environ["EDGEOPT_TEST_MODEL"], eval_data=(d.x_eval, d.y_eval))
"""

BUILD_ONLY = """
import os, signal, pytest

@pytest.mark.edgeopt_variants("fp32")
def test_1_first(optimized_model):
    assert optimized_model.size_bytes > 1000

def test_2_server_goes_away(request):
    pid = int(os.environ.get("EDGEOPT_TEST_KILL_PID", "0"))
    if pid:
        from pytest_edgeopt.plugin_session import plugin_session

        plugin_session(request.config).edge.builder.cache.flush()  # test 1's upload is done
        os.kill(pid, signal.SIGTERM)

@pytest.mark.edgeopt_variants("float16")
def test_3_then(optimized_model):
    assert optimized_model.size_bytes > 1000
"""


@pytest.fixture
def runner(pytester: pytest.Pytester, tensorflow_loaded: None, digits_model_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_shared=BUILD_ONLY)
    monkeypatch.setenv("EDGEOPT_TEST_MODEL", str(digits_model_path))
    return pytester


def test_two_runners_through_pytest_build_each_variant_once(runner: pytest.Pytester, s3_env: S3Server,
                                                            request: pytest.FixtureRequest) -> None:
    import shutil

    url, runs = s3_env.url(_prefix(request)), s3_env.url(f"{_prefix(request)}-runs")
    first = runner.runpytest("-p", "no:cacheprovider", f"--edgeopt-cache-dir={url}", f"--edgeopt-storage={runs}",
                             "--edgeopt-save=main")
    first.assert_outcomes(passed=3)
    first.stdout.fnmatch_lines([f"edgeopt: remote cache {url}: 0 hits local, 0 hits remote, 2 built, 2 uploaded;*",
                                f"edgeopt: run saved to {runs}/0001_main_*.json.gz"])
    shutil.rmtree(runner.path / ".edgeopt")  # a fresh runner: nothing on its disk
    second = runner.runpytest("-p", "no:cacheprovider", f"--edgeopt-cache-dir={url}", f"--edgeopt-storage={runs}",
                              "--edgeopt-compare=main", "--edgeopt-autosave")
    second.assert_outcomes(passed=3)
    second.stdout.fnmatch_lines([f"edgeopt: remote cache {url}: 0 hits local, 2 hits remote, 0 built, 0 uploaded;*",
                                 f"edgeopt: run saved to {runs}/0002_*.json.gz"])
    assert "building" not in second.stdout.str()


@pytest.mark.slow  # the default run has test_a_server_that_stops_degrades_to_local_builds
def test_the_server_stopping_mid_run_degrades_to_local_builds(runner: pytest.Pytester,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    server = S3Server().start()
    try:
        for k, v in server.env.items():
            monkeypatch.setenv(k, v)
        assert server.proc is not None
        monkeypatch.setenv("EDGEOPT_TEST_KILL_PID", str(server.proc.pid))
        result = runner.runpytest("-p", "no:cacheprovider", f"--edgeopt-cache-dir={server.url('midrun')}")
    finally:
        server.stop()
    result.assert_outcomes(passed=3)  # never a failed test
    result.stdout.fnmatch_lines(["*remote cache s3://edgeopt-test/midrun unreachable*building and caching locally*",
                                 "edgeopt: remote cache *: 0 hits local, 0 hits remote, 2 built, 1 uploaded;*OFFLINE*"])


# -- saved runs in S3 ------------------------------------------------------------------------------
def _doc(host: str, machine_class: str = "gha-4core") -> dict:
    from tests.run_docs import real_doc, with_metadata

    doc = with_metadata(real_doc(), hostname=host)
    doc["metadata"]["host"] = {"node": host, "machine_class": machine_class}
    return doc


def _save(url: str, mirror: str, doc: dict, name: str | None) -> None:
    from pytest_edgeopt.storage.history import RemoteHistory

    RemoteHistory(url, Path(mirror)).save(doc, name)


def test_runs_saved_at_once_by_two_runners_get_distinct_numbers(s3_env: S3Server, tmp_path: Path,
                                                                 request: pytest.FixtureRequest) -> None:
    url = s3_env.url(_prefix(request))
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_save_in_env, args=(url, str(tmp_path / f"m{i}"), s3_env.env, f"ci-{i}"))
             for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    files = [k.rsplit("/", 1)[-1] for k in s3_env.keys(f"{_prefix(request)}/0")]
    assert sorted(f[:4] for f in files) == ["0001", "0002", "0003"], files

    from pytest_edgeopt import load_runs
    from pytest_edgeopt.runs import cli

    monkey_cwd = tmp_path / "reader"
    monkey_cwd.mkdir()
    os.chdir(monkey_cwd)
    try:
        frame = load_runs(url)
        assert set(frame["run"]) == {1, 2, 3} and len(frame) == 3 * len(_doc("x")["measurements"])
        assert cli.main(["list", "--storage", url]) == 0
        assert cli.main(["compare", "1", "last", "--storage", url]) == 0
    finally:
        os.chdir(request.config.invocation_params.dir)


def _save_in_env(url: str, mirror: str, env: dict[str, str], name: str) -> None:
    os.environ.update(env)
    _save(url, mirror, _doc(name), name)


def test_noise_history_takes_runs_of_the_same_machine_class_whatever_their_host(tmp_path: Path) -> None:
    from pytest_edgeopt.runs.store import noise_history, save_run

    for i, host in enumerate(("runner-a1", "runner-b7", "runner-c3")):
        save_run(tmp_path, _doc(host), f"r{i}")
    save_run(tmp_path, _doc("desk", "laptop"), "desk")
    like = _doc("runner-z9")
    assert len(noise_history(tmp_path, like)) == 3  # the three CI runners; not the laptop


def test_cache_stats_and_prune_on_s3(s3_env: S3Server, tmp_path: Path, request: pytest.FixtureRequest,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_edgeopt.runs import cli
    from pytest_edgeopt.runs.store import save_run

    url = s3_env.url(_prefix(request))
    cache = VariantCache(tmp_path / "c", remote=RemoteCache.at(url))
    used, unused = "k" * 64, "u" * 64
    cache.get_or_build(used, lambda: (b"used" * 100, {}))
    cache.get_or_build(unused, lambda: (b"unused" * 100, {}))
    cache.flush()
    RemoteCache.at(url).store.write(f"{entry_prefix('o' * 64)}/data/deadbeef", b"killed upload")  # no meta.json
    runs = tmp_path / "runs"
    doc = _doc("ci")
    for m in doc["measurements"]:
        m["model_key"] = used
    save_run(runs, doc, "main")

    assert cli.main(["cache", "stats", "--cache", url]) == 0
    assert "2 entries" in capsys.readouterr().out
    assert cli.main(["cache", "prune", "--older-than", "0s", "--keep-runs", "1", "--cache", url,
                     "--storage", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "removed 1 entries" in out and "1 unpublished objects" in out and "kept 1" in out
    left = s3_env.keys(f"{_prefix(request)}/variants/")
    assert any(used in k for k in left) and not any(unused in k or "o" * 64 in k for k in left)
    assert cli.main(["cache", "prune", "--older-than", "30d", "--cache", str(tmp_path / "c")]) == 0
    assert "removed 0 entries" in capsys.readouterr().out  # the local mirror's entries are fresh


def test_refused_uploads_keep_reading(tmp_path: Path) -> None:
    # Read-only credentials (a fork's pull request): the store answers reads, refuses writes.
    from pytest_edgeopt.storage.location import DirectoryStore

    shared = tmp_path / "shared"
    main = VariantCache(tmp_path / "main", remote=RemoteCache(DirectoryStore(shared)))
    main.get_or_build(KEY, lambda: (b"from main", {}))
    main.flush()

    class ReadOnly(DirectoryStore):
        def write(self, key: str, data: bytes) -> None:
            raise PermissionError(f"AccessDenied: PutObject {key}")

    notes: list[str] = []
    remote = RemoteCache(ReadOnly(shared), notes.append)
    cache = VariantCache(tmp_path / "fork", remote=remote)
    assert not cache.get_or_build("ff" * 32, lambda: (b"fork build", {})).hit
    cache.flush()
    assert cache.get_or_build(KEY, lambda: pytest.fail("not read from the shared cache")).remote
    assert remote.stats.read_only and remote.online and any("uploads refused" in n for n in notes)


def test_a_url_whose_backend_is_missing_is_a_usage_error_at_start_up(pytester: pytest.Pytester) -> None:
    import importlib.util

    if importlib.util.find_spec("gcsfs") is not None:
        pytest.skip("gcsfs is installed here: gs:// URLs are usable")
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--edgeopt-cache-dir=gs://team-bucket/edgeopt")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "gs://team-bucket/edgeopt: gs:// needs gcsfs: pip install pytest-edgeopt[gcs]" in result.stderr.str()
    pytester.makeini("[pytest]\nedgeopt_storage = gs://team-bucket/runs\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--edgeopt-autosave")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "edgeopt_storage" in result.stderr.str() and "pip install pytest-edgeopt[gcs]" in result.stderr.str()


# -- uploads in the background --------------------------------------------------------------------
class _Held:
    """A directory store whose writes wait for ``release`` (a server that does not answer yet)."""

    def __init__(self) -> None:
        import threading

        self.release = threading.Event()
        self.writing = threading.Event()


def _held_store(root: Path, held: _Held) -> object:
    from pytest_edgeopt.storage.location import DirectoryStore

    class HeldStore(DirectoryStore):
        def write(self, key: str, data: bytes) -> None:
            held.writing.set()
            assert held.release.wait(60), "never released"
            super().write(key, data)

    return HeldStore(root)


def test_a_build_returns_before_its_upload_and_the_flush_publishes_it(tmp_path: Path) -> None:
    from pytest_edgeopt.storage.location import DirectoryStore

    held = _Held()
    shared = tmp_path / "shared"
    remote = RemoteCache(_held_store(shared, held))  # type: ignore[arg-type]
    cache = VariantCache(tmp_path / "runner1", remote=remote)
    start = time.perf_counter()
    entry = cache.get_or_build(KEY, lambda: (b"TFL3 bytes" * 100, {}))
    returned_s = time.perf_counter() - start
    assert not entry.hit and held.writing.wait(10), "the upload never started"
    # The build returned while its upload is held: nothing is published yet.
    assert remote.stats.uploaded == 0 and not (shared / entry_prefix(KEY) / "meta.json").exists()
    assert returned_s < 5
    held.release.set()
    assert cache.flush() is None and remote.stats.uploaded == 1 and remote.stats.abandoned == 0
    second = VariantCache(tmp_path / "runner2", remote=RemoteCache(DirectoryStore(shared)))
    assert second.get_or_build(KEY, lambda: pytest.fail("the second runner built again")).remote


def test_a_flush_that_times_out_publishes_nothing_and_says_so(tmp_path: Path) -> None:
    held = _Held()
    shared = tmp_path / "shared"
    notes: list[str] = []
    remote = RemoteCache(_held_store(shared, held), notes.append)  # type: ignore[arg-type]
    VariantCache(tmp_path / "c", remote=remote).get_or_build(KEY, lambda: (b"TFL3" * 10, {}))
    assert remote.flush(timeout_s=0.3) == 1 and remote.stats.abandoned == 1
    assert any("1 upload(s) unfinished" in n for n in notes)
    assert RemoteCache(open_store(str(shared))).fetch(KEY, "model.tflite") is None
    held.release.set()


XDIST_CONFTEST = """
import pytest
from pytest_edgeopt.plugin_session import plugin_session

@pytest.fixture
def shared_cache(request):
    return plugin_session(request.config).edge.builder.cache
"""

XDIST_TESTS = """
import pytest

@pytest.mark.parametrize("i", range(4))
def test_build(shared_cache, i):
    entry = shared_cache.get_or_build(f"{i:02d}" * 32, lambda: (b"TFL3 %d" % i * 100, {}))
    assert not entry.hit
"""


def test_under_xdist_one_summary_line_sums_the_workers(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makeconftest(XDIST_CONFTEST)
    pytester.makepyfile(test_x=XDIST_TESTS)
    url = (tmp_path / "shared").as_uri()
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", f"--edgeopt-cache-dir={url}")
    result.assert_outcomes(passed=4)
    lines = [ln for ln in result.stdout.lines if ln.startswith("edgeopt: remote cache")]
    assert len(lines) == 1, result.stdout.str()
    assert f"remote cache {url}: 0 hits local, 0 hits remote, 4 built, 4 uploaded;" in lines[0]
    assert len(list((tmp_path / "shared" / "variants").glob("*/*/meta.json"))) == 4


# -- opening the store in the background ----------------------------------------------------------
FIRST_LOOKUP = """
import sys, time
from pytest_edgeopt.plugin_session import plugin_session

def test_first_lookup(request):
    t0 = time.monotonic()
    remote = plugin_session(request.config).edge.builder.cache.remote
    assert remote is not None and remote.opening is not None
    assert remote.opening.started_at < t0, "the store's opening began with the first lookup, not the session"
    assert remote.opening.wait(60)  # the session had time: collection, fixtures, a model's import
    start = time.perf_counter()
    assert remote.fetch("ab" + "c" * 62, "model.tflite") is None
    lookup_s = time.perf_counter() - start
    print(f"OPEN_S={remote.opening.open_s:.3f} LOOKUP_S={lookup_s:.3f} WAIT_S={remote.stats.open_wait_s:.3f}")
    assert remote.online, remote.stats.offline
    assert remote.stats.open_wait_s < 0.05
    assert lookup_s < remote.opening.open_s / 3, "the first lookup paid for the opening or a cold client"
"""


def test_the_store_is_opened_at_session_start_and_the_first_lookup_does_not_pay_for_it(
        pytester: pytest.Pytester, s3_env: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        request: pytest.FixtureRequest) -> None:
    monkeypatch.setenv("EDGEOPT_CACHE_MIRROR", str(tmp_path / "mirror"))
    monkeypatch.setenv("EDGEOPT_IN_PROCESS", "1")
    pytester.makepyfile(test_x=FIRST_LOOKUP)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s",
                                           f"--edgeopt-cache-dir={s3_env.url(_prefix(request))}")
    result.assert_outcomes(passed=1)
    # The warm-up was one GET of an absent object: nothing was written to the bucket.
    assert s3_env.keys(_prefix(request)) == []


def test_a_store_that_cannot_be_opened_degrades_to_local_builds(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.s3_server import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    for k, v in S3Server().env.items():
        if k != "AWS_ENDPOINT_URL":
            monkeypatch.setenv(k, v)
    notes: list[str] = []
    remote = RemoteCache.at("s3://edgeopt-test/nowhere", notes.append)
    assert remote.opening is not None and remote.opening.wait(60)
    cache = VariantCache(tmp_path / "c", remote=remote)
    entry = cache.get_or_build(KEY, lambda: (b"local", {}))
    cache.flush()
    assert not entry.hit and entry.path.read_bytes() == b"local"
    assert remote.stats.offline and "warm-up failed: EndpointConnectionError" in remote.stats.offline
    assert [n for n in notes if "unreachable" in n] and remote.stats.uploaded == 0
