"""Regressions explained by op, end to end on the emulated phone: a saved run, then a run with
a planted regression in the benchmark_model stand-in (``EDGEOPT_STANDIN_OP_DELAY_MS``: one
node slower; ``EDGEOPT_STANDIN_CPU_OPS``: one node forced off the GPU delegate), compared
with ``--edgeopt-compare``. The gate's message names the op."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_android_faults import LATENCY_ONLY
from test_android_plugin import project  # noqa: F401  (a fixture: the same pytester project)

ONE_VARIANT = """
    import pytest
    @pytest.mark.edgeopt_variants("fp32")
    @pytest.mark.android_gpu
    def test_phone(measurement):
        pass
"""


def run(project: pytest.Pytester, adb_server: Any, standin: Path, *args: str) -> pytest.RunResult:
    return project.runpytest("-p", "no:cacheprovider", f"--edgeopt-adb={adb_server.address}",
                             f"--edgeopt-benchmark-model={standin}", "--edgeopt-android-repeats=3",
                             f"--edgeopt-storage={project.path / 'runs'}", *args)


def saved_profile(project: pytest.Pytester, name: str) -> dict[str, Any]:
    import gzip

    (path,) = (project.path / "runs").glob(f"*_{name}_*.json.gz")
    doc = json.loads(gzip.decompress(path.read_bytes()))
    return doc["measurements"][0]["measurement"]["profile"]


@pytest.mark.slow  # three runs on the emulated phone, about 60-100 s on 2 cores
def test_the_gate_names_the_planted_slow_op_and_the_op_forced_off_the_gpu(
        project: pytest.Pytester, adb_server: Any, phone: Any, standin: Path, digits_model_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    project.makeconftest(LATENCY_ONLY.format(model=str(digits_model_path)))
    project.makepyfile(test_phone=ONE_VARIANT)
    run(project, adb_server, standin, "--edgeopt-save=base").assert_outcomes(passed=1)
    base = saved_profile(project, "base")
    assert base["placement"]["delegated_nodes"] == base["placement"]["total_nodes"] and base["ops"]
    # The phone gets an OS update (the same model file is judged only when the device's
    # software changed), after which node 0 is 2 ms slower per inference: the gate's latency
    # regression names the op that holds it (the GPU delegate's kernel: the tool times no finer).
    monkeypatch.setitem(phone.props, "ro.build.version.release", "15")
    monkeypatch.setitem(phone.shell_env, "EDGEOPT_STANDIN_OP_DELAY_MS", "0:2")
    slow = run(project, adb_server, standin, "--edgeopt-compare=base", "--edgeopt-compare-fail=latency:5%")
    print(slow.stdout.str())
    assert slow.ret == pytest.ExitCode.TESTS_FAILED
    slow.stdout.fnmatch_lines(["REGRESSION digits-cnn fp32 on android_gpu/*: latency p50 * exceeds latency:5%; "
                               "ops that grew most: #7 TfLiteGpuDelegateV2 * -> 2.* ms"])
    monkeypatch.delitem(phone.shell_env, "EDGEOPT_STANDIN_OP_DELAY_MS")
    # node 3 forced off the GPU delegate (latency within 50%): a placement regression naming it
    monkeypatch.setitem(phone.shell_env, "EDGEOPT_STANDIN_CPU_OPS", "3")
    fell = run(project, adb_server, standin, "--edgeopt-compare=base", "--edgeopt-compare-fail=latency:50%")
    print(fell.stdout.str())
    assert fell.ret == pytest.ExitCode.TESTS_FAILED
    fell.stdout.fnmatch_lines(["REGRESSION digits-cnn fp32 on android_gpu/*: placement * more op(s) off the "
                               "accelerator exceeds placement:0ops; placement changed: *fell back to the CPU: #3 *"])
