"""The worker pool (pytest_edgeopt.workers): real spawned processes, real signals."""

from __future__ import annotations

import os
import pickle
import time
from pathlib import Path

import pytest

from pytest_edgeopt.model import ModelError
from pytest_edgeopt.targets.base import TargetError
from pytest_edgeopt.variants.registry import VariantBuildError, VariantUnavailable
from pytest_edgeopt.workers.pool import (
    BuildCrashed,
    Crash,
    MeasureCrashed,
    WorkerCrashed,
    WorkerPool,
    activity,
    stderr_tail,
)
from pytest_edgeopt.workers.portable import NotPortable
from tests.worker_helpers import Die, Echo, Hang, Modules, Raise, Talk, TalkSlowly


@pytest.fixture
def pool():
    lines: list[str] = []
    p = WorkerPool(lines.append)
    p.lines = lines  # type: ignore[attr-defined]
    yield p
    p.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_nothing_starts_until_the_first_call(pool: WorkerPool) -> None:
    assert pool.started == 0 and pool.worker is None


def test_a_worker_is_reused_across_calls(pool: WorkerPool) -> None:
    (a, pid1), (b, pid2) = pool.call(Echo(1), timeout_s=60), pool.call(Echo([2, 3]), timeout_s=60)
    assert (a, b) == (1, [2, 3])
    assert pid1 == pid2 != os.getpid()
    assert pool.started == 1


def test_progress_lines_reach_the_parent_while_the_call_runs(pool: WorkerPool) -> None:
    assert pool.call(Talk(("epoch 1/2", "epoch 2/2")), timeout_s=60) == 2
    assert pool.lines == ["epoch 1/2", "epoch 2/2"]  # type: ignore[attr-defined]


def test_a_worker_killed_by_a_signal_is_a_typed_crash_and_is_replaced(pool: WorkerPool) -> None:
    _, first = pool.call(Echo(0), timeout_s=60)
    with pytest.raises(MeasureCrashed) as info:
        pool.call(Die("invoke", "free(): invalid next size (normal)"), timeout_s=60, crashed=MeasureCrashed,
                  label="digits-cnn int8 on cpu")
    crash = info.value.crash
    assert (crash.signal, crash.stage, crash.timeout_s, crash.label) == ("SIGABRT", "invoke", None, "digits-cnn int8 on cpu")
    assert crash.stderr_tail[-1] == "free(): invalid next size (normal)"
    message = str(info.value)
    assert message.startswith("the worker process died by SIGABRT during invoke (LiteRT/TensorFlow native crash); "
                              "last stderr: free(): invalid next size (normal); the worker was replaced; remedy: ")
    assert isinstance(info.value, TargetError) and isinstance(info.value, WorkerCrashed)
    assert not alive(first)
    value, second = pool.call(Echo("again"), timeout_s=60)
    assert value == "again" and second != first and pool.started == 2


def test_a_crash_while_building_is_a_variant_build_error(pool: WorkerPool) -> None:
    with pytest.raises(BuildCrashed) as info:
        pool.call(Die("convert", "Segmentation fault in MLIR", "SIGSEGV"), timeout_s=60, crashed=BuildCrashed)
    assert isinstance(info.value, VariantBuildError)
    assert "died by SIGSEGV during convert" in str(info.value)
    assert "tensorflow/tensorflow/issues" in str(info.value)


def test_sigkill_names_the_out_of_memory_killer(pool: WorkerPool) -> None:
    with pytest.raises(WorkerCrashed) as info:
        pool.call(Die("convert", "", "SIGKILL"), timeout_s=60)
    assert info.value.crash.signal == "SIGKILL"
    assert "out-of-memory killer" in str(info.value) and "native crash" not in str(info.value)


def test_a_hung_worker_is_killed_at_the_timeout_and_replaced(pool: WorkerPool) -> None:
    _, first = pool.call(Echo(0), timeout_s=60)
    start = time.monotonic()
    with pytest.raises(WorkerCrashed) as info:
        pool.call(Hang("invoke"), timeout_s=1.5)
    assert 1.4 < time.monotonic() - start < 15
    assert info.value.crash.timeout_s == 1.5 and info.value.crash.stage == "invoke"
    assert "ran past its 1.5 s timeout and was killed during invoke" in str(info.value)
    assert not alive(first)
    assert pool.call(Echo(1), timeout_s=60)[1] != first


@pytest.mark.parametrize("exc", [VariantBuildError("int8: the converter said no"), VariantUnavailable("no data"),
                                 ModelError("bad model"), TargetError("cannot load")])
def test_exceptions_raised_in_the_worker_come_back_as_the_same_type(pool: WorkerPool, exc: Exception) -> None:
    with pytest.raises(type(exc)) as info:
        pool.call(Raise(exc), timeout_s=60)
    assert str(info.value) == str(exc) and type(info.value) is type(exc)
    assert pool.started == 1 and pool.worker is not None  # an exception is not a crash


def test_an_unexpected_exception_carries_the_worker_traceback(pool: WorkerPool) -> None:
    with pytest.raises(ZeroDivisionError) as info:
        pool.call(Raise(ZeroDivisionError("boom")), timeout_s=60)
    assert any("worker process" in note for note in getattr(info.value, "__notes__", []))


def test_keyboard_interrupt_kills_the_worker_and_propagates() -> None:
    def interrupt(line: str) -> None:
        raise KeyboardInterrupt

    pool = WorkerPool(interrupt)
    try:
        _, pid = pool.call(Echo(0), timeout_s=60)
        with pytest.raises(KeyboardInterrupt):
            pool.call(TalkSlowly(30), timeout_s=60)
        assert not alive(pid) and pool.worker is None
    finally:
        pool.close()


def test_a_request_that_does_not_pickle_is_not_portable(pool: WorkerPool) -> None:
    with pytest.raises(NotPortable):
        pool.call(Echo(lambda: 1), timeout_s=60)
    assert pool.call(Echo(2), timeout_s=60)[0] == 2


def test_the_session_activity_labels_the_crash(pool: WorkerPool) -> None:
    token = activity.set("m pruned")
    try:
        with pytest.raises(WorkerCrashed) as info:
            pool.call(Die("convert", "x"), timeout_s=60)
    finally:
        activity.reset(token)
    assert info.value.crash.label == "m pruned"


def test_a_fresh_worker_imports_no_tensorflow(pool: WorkerPool) -> None:
    assert pool.call(Modules(("tensorflow", "tf_keras", "pytest_edgeopt.workers.stage")), timeout_s=60) == [
        "pytest_edgeopt.workers.stage"]


def test_close_stops_the_worker_and_removes_its_log(pool: WorkerPool) -> None:
    _, pid = pool.call(Echo(0), timeout_s=60)
    log = pool.worker.log_path  # type: ignore[union-attr]
    pool.close()
    assert not alive(pid) and not log.exists()


def test_stderr_tail_keeps_the_last_non_blank_lines(tmp_path: Path) -> None:
    log = tmp_path / "w.log"
    log.write_text("a\n\nb\nINFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n" + "x" * 500 + "\n\n")
    assert stderr_tail(log, 2, width=20) == ("b", "x" * 17 + "...")
    assert stderr_tail(tmp_path / "missing") == ()


def test_stderr_tail_leaves_out_tensorflows_start_up_noise(tmp_path: Path) -> None:
    # what every worker prints at start-up, quoted instead of the cause before (the zoo's int16x8 abort)
    log = tmp_path / "w.log"
    log.write_text(
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
        "I0000 00:00:1796603600.579968   25752 cudart_stub.cc:31] Could not find cuda drivers on your machine, "
        "GPU will not be used.\n"
        "E0000 00:00:1796603619.735386   25752 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error\n"
        "F0000 00:00:1796603620.1   25752 subgraph.cc:1120] Check failed: tensor->dims != nullptr\n")
    assert stderr_tail(log) == ("F0000 00:00:1796603620.1   25752 subgraph.cc:1120] Check failed: tensor->dims != nullptr",)


def test_crash_without_a_signal_reports_the_exit_code() -> None:
    crash = Crash("m fp32", None, None, 3, None, ())
    assert crash.describe() == ("the worker process exited with code 3 before it started the request; "
                                "the worker was replaced")
    assert pickle.loads(pickle.dumps(BuildCrashed(crash))).crash == crash


# -- the builder through a worker: real TensorFlow builds ----------------------------------------
from pytest_edgeopt.model import ModelUnderTest  # noqa: E402
from pytest_edgeopt.variants.builder import Builder  # noqa: E402
from pytest_edgeopt.variants.cache import VariantCache, key_of  # noqa: E402
from pytest_edgeopt.variants.registry import resolve_options  # noqa: E402


def test_a_cache_miss_is_built_in_the_worker_with_the_parents_key(tmp_path: Path, digits_model_path: Path) -> None:
    from fixtures.digits import representative_batches

    mut = ModelUnderTest("digits", digits_model_path, representative_data=representative_batches(10),
                         options={"calibration_samples": 10})
    lines: list[str] = []
    pool = WorkerPool(lines.append)
    try:
        builder = Builder(VariantCache(tmp_path), lines.append, pool)
        int8 = builder.build(mut, "int8")
        assert pool.started == 1
        assert int8.key == key_of(builder.material(mut, "int8", resolve_options(mut)))
        assert not int8.from_cache and int8.path.is_file() and int8.size_bytes == int8.path.stat().st_size
        # the fp32 the int8 build started from was built in the worker too, and is counted here
        assert builder.built == 2 and builder.hits == 0
        fp32 = builder.build(mut, "fp32")
        assert not fp32.from_cache and builder.built == 2
        assert lines[:2] == ["building digits int8 (full integer, float input/output)",
                             "building digits fp32 (unoptimized float32 conversion (the baseline))"]
        worker_modules = pool.call(Modules(("tensorflow",)), timeout_s=60)
        assert worker_modules == ["tensorflow"]
    finally:
        pool.close()
    warm_pool = WorkerPool()
    try:
        warm = Builder(VariantCache(tmp_path), workers=warm_pool)
        again = warm.build(mut, "int8")
        assert again.from_cache and again.key == int8.key
        assert warm_pool.started == 0  # a warm build starts no worker
    finally:
        warm_pool.close()


def test_an_in_memory_model_is_pickled_to_the_worker(tmp_path: Path, tensorflow_loaded: None) -> None:
    import tf_keras as keras

    model = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(3)])
    mut = ModelUnderTest("tiny", model)
    pool = WorkerPool()
    try:
        built = Builder(VariantCache(tmp_path), workers=pool).build(mut, "fp32")
        assert pool.started == 1 and not built.from_cache
    finally:
        pool.close()
    in_process = Builder(VariantCache(tmp_path)).build(ModelUnderTest("tiny", model), "fp32")
    assert in_process.from_cache and in_process.key == built.key


def test_a_model_that_cannot_be_sent_is_built_in_process_said_once(tmp_path: Path, digits_model_path: Path,
                                                                   tensorflow_loaded: None) -> None:
    mut = ModelUnderTest("digits", digits_model_path, options={"loss": lambda y, p: 0.0})
    lines: list[str] = []
    pool = WorkerPool()
    try:
        builder = Builder(VariantCache(tmp_path), lines.append, pool)
        assert not builder.build(mut, "fp32").from_cache
        assert not builder.build(mut, "float16").from_cache
    finally:
        pool.close()
    in_process = [ln for ln in lines if "cannot be sent to a worker" in ln]
    assert len(in_process) == 1 and in_process[0].startswith("building digits in this process: ")


def test_cpu_measurements_in_the_worker_match_in_process(tmp_path: Path, digits: object) -> None:
    import numpy as np

    from fixtures.models import float_tflite
    from pytest_edgeopt.targets.base import LatencySettings
    from pytest_edgeopt.targets.cpu import CpuTarget

    model = float_tflite()
    x = np.asarray(digits.x_eval, dtype=np.float32)  # type: ignore[attr-defined]
    pool = WorkerPool()
    try:
        remote = CpuTarget(workers=pool)
        outputs = remote.predict(model, x)
        lat = remote.latency(model, LatencySettings(warmup=2, min_samples=30, min_time_s=0.0))
        assert pool.started == 1
    finally:
        pool.close()
    local = CpuTarget().predict(model, x)
    assert len(outputs) == len(local) == 1
    np.testing.assert_array_equal(outputs[0], local[0])
    assert len(lat.stats.samples_us) >= 30 and lat.extras["op_resolver"] == "AUTO"


def test_a_cpu_crash_names_the_stage_it_happened_in(monkeypatch: pytest.MonkeyPatch) -> None:
    from fixtures.models import float_tflite
    from pytest_edgeopt.targets.base import LatencySettings
    from pytest_edgeopt.targets.cpu import CpuTarget
    from pytest_edgeopt.workers.serve import SELFTEST_ENV

    monkeypatch.setenv(SELFTEST_ENV, "teardown:SIGSEGV:m int8 on cpu")
    pool = WorkerPool()
    try:
        target = CpuTarget(workers=pool)
        token = activity.set("m int8 on cpu")
        try:
            with pytest.raises(MeasureCrashed) as info:
                target.latency(float_tflite(), LatencySettings(warmup=0, min_samples=5, min_time_s=0.0))
        finally:
            activity.reset(token)
        assert (info.value.crash.stage, info.value.crash.signal) == ("teardown", "SIGSEGV")
        # another label: the self-test leaves it alone, and a new worker serves it
        lat = target.latency(float_tflite(), LatencySettings(warmup=0, min_samples=5, min_time_s=0.0))
        assert len(lat.stats.samples_us) >= 5 and pool.started == 2
    finally:
        pool.close()
