"""A phone that misbehaves between two items of a run, through pytest end to end: the
emulated device of test_android_plugin.py drops its connection once, or dies; a plugin
object passed to the in-process run acts on it after the first item."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest
from test_android_plugin import adb_server, phone, project, standin  # noqa: F401 (shared fixtures)

TWO_VARIANTS = """
    import pytest
    @pytest.mark.edgeopt_variants("int8", "float16")
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


def run(project: pytest.Pytester, adb_server, standin: Path, *args: str, plugins=()) -> pytest.RunResult:
    return project.runpytest("-p", "no:cacheprovider", "-v", f"--edgeopt-adb={adb_server.address}",
                             f"--edgeopt-benchmark-model={standin}", "--edgeopt-step-timeout=5", *args,
                             plugins=list(plugins))


def run_dirs(phone) -> list[Path]:
    return sorted(phone.host_path("/data/local/tmp").glob("edgeopt-*"))


def test_a_dropped_connection_is_reconnected_and_the_step_retried(project: pytest.Pytester, adb_server, phone,
                                                                  standin: Path) -> None:
    project.makepyfile(test_phone=TWO_VARIANTS)
    accepted = phone.accepted

    def drop() -> None:
        phone.faults.drop_during_shell = True

    result = run(project, adb_server, standin, plugins=[AfterFirstItem(drop)])
    result.assert_outcomes(passed=2)
    assert not phone.faults.drop_during_shell  # the fault fired...
    assert phone.accepted > accepted  # ...and the transport was connected again
    assert run_dirs(phone) == []


def test_a_device_that_dies_mid_run_fails_the_next_item_and_is_swept_next_session(
        project: pytest.Pytester, adb_server, phone, standin: Path) -> None:
    project.makepyfile(test_phone=TWO_VARIANTS)
    out = project.path / "r.json"
    port = phone.port
    try:
        result = run(project, adb_server, standin, f"--edgeopt-json={out}", plugins=[AfterFirstItem(phone.stop)])
    finally:
        phone.start(port=port)
        adb_server.connect(phone.address)  # disconnect, connect, poll for "device"
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*test_phone[[]int8-android_cpu-*[]] PASSED*",
        "*test_phone[[]float16-android_cpu-*[]] FAILED*",
        f"*digits-cnn float16 on android_cpu: android_cpu on {phone.address}: the device went offline during "
        "step 'push model *' (*) and did not come back within 5 s (adb server*",
        "*edgeopt summary*",
    ])
    text = result.stdout.str()
    assert "Traceback" not in text and "adbutils" not in text
    records = {r["variant"]: r for r in json.loads(out.read_text())["measurements"]}
    assert records["int8"]["outcome"] == "passed" and records["int8"]["measurement"]["latency"]
    assert records["float16"]["outcome"] == "failed" and records["float16"]["measurement"] is None
    (left,) = run_dirs(phone)  # the dead run could not clean up

    project.makepyfile(test_phone="""
        import pytest
        @pytest.mark.edgeopt_variants("fp32")
        @pytest.mark.android_cpu
        def test_phone(measurement):
            pass
    """)
    run(project, adb_server, standin).assert_outcomes(passed=1)
    assert run_dirs(phone) == []  # the abandoned one swept, this session's removed at its end
