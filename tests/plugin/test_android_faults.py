"""A phone that misbehaves between two items of a run, through pytest end to end: the
emulated device of test_android_plugin.py drops its connection once, or dies; a plugin
object passed to the in-process run acts on it after the first item. The model has no
eval data (latency only): fewer benchmark_model runs, the same faults."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from test_android_plugin import project  # noqa: F401  (a fixture: the same pytester project)

LATENCY_ONLY = """
import pytest
from fixtures.digits import representative_batches
from pytest_edgeopt import ModelUnderTest

@pytest.fixture(scope="session")
def edgeopt_model():
    return ModelUnderTest(name="digits-cnn", model={model!r}, representative_data=representative_batches(50))
"""

TWO_VARIANTS = """
    import pytest
    @pytest.mark.edgeopt_variants("fp32", "int8")
    @pytest.mark.android_cpu
    def test_phone(measurement):
        pass
"""


class AfterFirstItem:
    """Runs ``act`` once, when the first item of the inner run is torn down."""

    def __init__(self, act: Callable[[], None]) -> None:
        self.act: Callable[[], None] | None = act

    def pytest_runtest_teardown(self, item: pytest.Item) -> None:
        act, self.act = self.act, None
        if act is not None:
            act()


@pytest.fixture
def latency_project(project: pytest.Pytester, digits_model_path: Path) -> pytest.Pytester:
    project.makeconftest(LATENCY_ONLY.format(model=str(digits_model_path)))
    return project


def run(project: pytest.Pytester, adb_server, standin: Path, *args: str, plugins=()) -> pytest.RunResult:
    return project.runpytest("-p", "no:cacheprovider", "-v", f"--edgeopt-adb={adb_server.address}",
                             f"--edgeopt-benchmark-model={standin}", "--edgeopt-step-timeout=5", *args,
                             plugins=list(plugins))


def run_dirs(phone) -> list[Path]:
    return sorted(phone.host_path("/data/local/tmp").glob("edgeopt-*"))


def test_a_dropped_connection_is_reconnected_and_the_step_retried(
        latency_project: pytest.Pytester, adb_server, phone, standin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_edgeopt.targets.android.link import DeviceLink

    latency_project.makepyfile(test_phone=TWO_VARIANTS)
    reconnected: list[str] = []
    real = DeviceLink.reconnect

    def reconnect(link: DeviceLink, step: str, cause: BaseException | None = None) -> None:
        reconnected.append(step)
        real(link, step, cause)

    monkeypatch.setattr(DeviceLink, "reconnect", reconnect)

    def drop() -> None:
        phone.faults.drop_during_shell = True

    result = run(latency_project, adb_server, standin, plugins=[AfterFirstItem(drop)])
    result.assert_outcomes(passed=2)
    assert not phone.faults.drop_during_shell  # the fault fired, in a benchmark run of int8: retried once
    assert len(reconnected) == 1 and reconnected[0].startswith("benchmark "), reconnected
    assert run_dirs(phone) == []


def test_a_device_that_dies_mid_run_fails_the_next_item_and_is_swept_next_session(
        latency_project: pytest.Pytester, adb_server, phone, standin: Path) -> None:
    latency_project.makepyfile(test_phone=TWO_VARIANTS)
    out = latency_project.path / "r.json"
    port = phone.port
    try:
        result = run(latency_project, adb_server, standin, f"--edgeopt-json={out}",
                     plugins=[AfterFirstItem(phone.stop)])
    finally:
        phone.start(port=port)
        adb_server.connect(phone.address)  # disconnect, connect, poll for "device"
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    # The plugin fails the item in its `measurement` fixture: an error at setup.
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines([
        "*test_phone[[]fp32-android_cpu-*[]] PASSED*",
        "*test_phone[[]int8-android_cpu-*[]] ERROR*",
        f"*digits-cnn int8 on android_cpu: android_cpu on {phone.address}: the device went offline during "
        "step 'push model *' (*) and did not come back within 5 s (adb server*",
        "*edgeopt summary*",
    ])
    text = result.stdout.str()
    assert "Traceback" not in text and "adbutils" not in text
    records = {r["variant"]: r for r in json.loads(out.read_text())["measurements"]}
    assert records["fp32"]["outcome"] == "passed" and records["fp32"]["measurement"]["latency"]
    assert records["int8"]["outcome"] == "failed" and records["int8"]["measurement"] is None
    (left,) = run_dirs(phone)  # the dead run could not clean up, and said so
    result.stdout.fnmatch_lines([f"*could not remove /data/local/tmp/{left.name} (the next session that uses the "
                                 "device removes it): *still unreachable*"])

    latency_project.makepyfile(test_phone=TWO_VARIANTS.replace('"fp32", "int8"', '"fp32"'))
    run(latency_project, adb_server, standin).assert_outcomes(passed=1)
    assert run_dirs(phone) == []  # the abandoned one swept, this session's removed at its end
