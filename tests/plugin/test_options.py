"""Options, ini values, markers and usage errors, through pytest itself (pytester)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

CONFTEST_TFLITE_FREE = """
import pytest
from pytest_edgeopt import ModelUnderTest

@pytest.fixture(scope="session")
def edgeopt_model(tmp_path_factory):
    return ModelUnderTest(name="m", model="{model}")
"""


def test_help_documents_every_option(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    for opt in ("--edgeopt-targets", "--edgeopt-variants", "--edgeopt-require", "--edgeopt-threads",
                "--edgeopt-warmup", "--edgeopt-min-samples", "--edgeopt-min-time", "--edgeopt-cache-dir",
                "--edgeopt-json", "--edgeopt-rebuild"):
        result.stdout.fnmatch_lines([f"*{opt}*"])
    result.stdout.fnmatch_lines(["*edge model optimization budgets*", "*edgeopt_targets (string)*"])


def test_markers_are_listed(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    for name in ("cpu", "android_gpu", "android_cpu", "edgetpu", "edgeopt_variants", "edgeopt_budget",
                 "edgeopt_options"):
        result.stdout.fnmatch_lines([f"@pytest.mark.{name}*"])


def test_unknown_target_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--edgeopt-targets=tpu9")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown target 'tpu9'*choose from cpu, android_gpu*"])


def test_unknown_variant_option_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--edgeopt-variants=int8,int4")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown variant 'int4'*"])


def test_bad_ini_value_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nedgeopt_threads = zero\n")
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*edgeopt_threads*'zero' is not a whole number*"])


def test_misspelt_budget_keyword_is_a_usage_error_at_collection(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest
        @pytest.mark.edgeopt_budget(max_acuracy_drop=0.01)
        def test_b(measurement):
            pass
    """)
    result = pytester.runpytest("--co")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown budget keyword 'max_acuracy_drop'*"])


def test_nonsensical_budget_value_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest
        @pytest.mark.edgeopt_budget(min_size_reduction=1.7)
        def test_b(measurement):
            pass
    """)
    result = pytester.runpytest("--co")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*min_size_reduction=1.7 must be a fraction between 0 and 1*"])


def test_misspelt_variant_in_marker_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest
        @pytest.mark.edgeopt_variants("int8", "flaot16")
        def test_b(optimized_model):
            pass
    """)
    result = pytester.runpytest("--co")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown variant 'flaot16'*"])


def test_unknown_option_knob_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest
        @pytest.mark.edgeopt_options(sparcity=0.5)
        def test_b(optimized_model):
            pass
    """)
    result = pytester.runpytest("--co")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown option 'sparcity'*"])


def test_ids_show_variant_and_target(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest
        @pytest.mark.edgeopt_variants("int8", "float16")
        @pytest.mark.cpu
        def test_budgets(measurement):
            pass

        @pytest.mark.edgeopt_variants("fp32", "pruned")
        def test_built(optimized_model):
            pass

        def test_plain():
            pass
    """)
    result = pytester.runpytest("--co", "-q")
    result.stdout.fnmatch_lines([
        "*test_budgets[[]int8-cpu[]]",
        "*test_budgets[[]float16-cpu[]]",
        "*test_built[[]fp32[]]",
        "*test_built[[]pruned[]]",
        "*test_plain",
    ])


def test_default_parametrizes_every_variant(pytester: pytest.Pytester) -> None:
    from pytest_edgeopt.variants.registry import VARIANTS

    pytester.makepyfile("def test_all(measurement): pass")
    result = pytester.runpytest("--co", "-q")
    result.stdout.fnmatch_lines([f"*test_all[[]{v}-cpu[]]" for v in VARIANTS])
    result.stdout.fnmatch_lines([f"{len(VARIANTS)} tests collected*"])


def test_variants_option_filters(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_all(measurement): pass")
    result = pytester.runpytest("--co", "-q", "--edgeopt-variants=fp32,int8")
    result.stdout.fnmatch_lines(["*test_all[[]fp32-cpu[]]", "*test_all[[]int8-cpu[]]", "2 tests collected*"])


def test_targets_option_restricts_marked_targets(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest
        @pytest.mark.edgeopt_variants("int8")
        @pytest.mark.cpu
        @pytest.mark.edgetpu
        def test_t(measurement):
            pass
    """)
    result = pytester.runpytest("--co", "-q", "--edgeopt-targets=cpu")
    result.stdout.fnmatch_lines(["*test_t[[]int8-cpu[]]", "1 test collected*"])


def test_missing_edgeopt_model_fixture_says_how_to_define_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest
        @pytest.mark.edgeopt_variants("fp32")
        def test_b(optimized_model):
            pass
    """)
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*no edgeopt_model fixture is defined. Define one in conftest.py*",
                                 "*def edgeopt_model():*"])
    result.stdout.no_fnmatch_line("*Traceback*")


def test_wrong_edgeopt_model_type_is_explained(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("""
        import pytest
        @pytest.fixture(scope="session")
        def edgeopt_model():
            return "model.tflite"
    """)
    pytester.makepyfile("""
        import pytest
        @pytest.mark.edgeopt_variants("fp32")
        def test_b(optimized_model):
            pass
    """)
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*edgeopt_model fixture returned str; return a pytest_edgeopt.ModelUnderTest*"])


def test_unknown_model_file_kind_is_explained(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("""
        import pytest
        from pytest_edgeopt import ModelUnderTest
        @pytest.fixture(scope="session")
        def edgeopt_model(tmp_path_factory):
            p = tmp_path_factory.mktemp("m") / "model.onnx"
            p.write_bytes(b"onnx")
            return ModelUnderTest(name="m", model=p)
    """)
    pytester.makepyfile("""
        import pytest
        @pytest.mark.edgeopt_variants("fp32")
        def test_b(optimized_model):
            pass
    """)
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*cannot tell what kind of model model.onnx is: use a .keras/.h5 file*"])


def test_missing_device_skips_naming_what_is_missing_and_require_fails(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("""
        import pytest
        from pytest_edgeopt import ModelUnderTest
        from pytest_edgeopt.targets.base import Discovery

        def pytest_edgeopt_discover(config, target):
            if target == "edgetpu":
                return Discovery((), missing="no Edge TPU attached (test)")

        @pytest.fixture(scope="session")
        def edgeopt_model():
            raise AssertionError("not reached: the item skips before the model is needed")
    """)
    pytester.makepyfile("""
        import pytest
        @pytest.mark.edgeopt_variants("int8_full")
        @pytest.mark.edgetpu
        def test_t(measurement):
            pass
    """)
    result = pytester.runpytest("-rs", "-v")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*test_t[[]int8_full-edgetpu[]]*", "*edgetpu: no Edge TPU attached (test)*"])
    result = pytester.runpytest("--edgeopt-require=edgetpu")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*edgetpu: no Edge TPU attached (test) (required by --edgeopt-require)*"])


def test_loading_the_plugin_imports_no_tensorflow() -> None:
    code = ("import sys, pytest_edgeopt.plugin, pytest_edgeopt; "
            "bad = [m for m in ('tensorflow', 'tf_keras', 'tensorflow_model_optimization', 'litert_quantizer') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_run_without_edgeopt_items_loads_only_the_plugins_and_the_names(pytester: pytest.Pytester) -> None:
    """Every pytest run of a project with the plugin installed pays for its start-up:
    no numpy, no builder, no session unless an item needs them."""
    pytester.makepyfile(test_plain="def test_a():\n    pass\n")
    code = ("import json, sys, pytest; code = pytest.main(['-q', '-p', 'no:cacheprovider']); "
            "print('MODULES=' + json.dumps(sorted(m for m in sys.modules "
            "if m.startswith('pytest_edgeopt') or m in ('numpy', 'pandas', 'tensorflow')))); sys.exit(code)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=pytester.path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("MODULES="))
    assert json.loads(line.removeprefix("MODULES=")) == [
        "pytest_edgeopt", "pytest_edgeopt.hookspec", "pytest_edgeopt.names", "pytest_edgeopt.options", "pytest_edgeopt.outcomes",
        "pytest_edgeopt.plugin", "pytest_edgeopt.plugin_session", "pytest_edgeopt.targets",
        "pytest_edgeopt.targets.android", "pytest_edgeopt.targets.android.plugin", "pytest_edgeopt.targets.cpu_plugin",
        "pytest_edgeopt.targets.edgetpu", "pytest_edgeopt.targets.edgetpu.plugin"]


ORDER_TEST = """
    import os, pytest

    @pytest.mark.edgeopt_variants("fp32", "float16", "pruned", "pcqat_int8", "cqat_int8", "int8")
    def test_v(edgeopt_case):
        with open("order.txt", "a") as f:
            f.write(edgeopt_case.variant + "\\n")

    def test_plain():
        with open("order.txt", "a") as f:
            f.write("plain\\n")
"""


@pytest.mark.parametrize(("args", "expected"), [
    (("-n", "1"), ["pcqat_int8", "cqat_int8", "pruned", "fp32", "float16", "int8", "plain"]),
    (("-n", "1", "--dist", "loadfile"), ["fp32", "float16", "pruned", "pcqat_int8", "cqat_int8", "int8", "plain"]),
    ((), ["fp32", "float16", "pruned", "pcqat_int8", "cqat_int8", "int8", "plain"]),
], ids=["xdist-load", "xdist-loadfile", "serial"])
def test_xdist_load_hands_out_the_longest_builds_first(pytester: pytest.Pytester, args: tuple[str, ...],
                                                        expected: list[str]) -> None:
    pytest.importorskip("xdist")
    pytester.makepyfile(test_order=ORDER_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", *args)
    result.assert_outcomes(passed=7)
    assert (pytester.path / "order.txt").read_text().split() == expected


def test_unknown_target_in_ini_is_a_usage_error_naming_it(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nedgeopt_require = cpu,tpu9\n")
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ini edgeopt_require = 'cpu,tpu9': unknown target 'tpu9'; choose from cpu, *"])


def test_target_plugins_load_without_the_core(pytester: pytest.Pytester) -> None:
    """The built-in targets' hooks are optional: ``-p no:edgeopt`` (no hookspecs) still runs."""
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("-p", "no:edgeopt")
    result.assert_outcomes(passed=1)


def test_a_conftest_target_is_a_marker_and_a_valid_target_name(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("""
        from pytest_edgeopt.names import TargetSpec

        def pytest_edgeopt_targets(config):
            return [TargetSpec("npu", "run on the lab's NPU (test)", device_kind="npu")]
    """)
    pytester.makepyfile("""
        import pytest
        @pytest.mark.edgeopt_variants("int8")
        @pytest.mark.npu
        def test_t(measurement):
            pass
    """)
    result = pytester.runpytest("--co", "-q", "--edgeopt-targets=npu")
    result.stdout.fnmatch_lines(["*test_t[[]int8-npu[]]", "1 test collected*"])
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.npu: run on the lab's NPU (test)"])
    result = pytester.runpytest("-rs")  # nothing discovers its devices: the item skips saying so
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*npu: no plugin discovers 'npu' devices*"])


def test_every_ini_twin_is_converted_like_its_option(pytester: pytest.Pytester) -> None:
    """One resolver for every option: a bad ini tolerance is a usage error naming the ini key."""
    pytester.makeini("[pytest]\nedgeopt_compare_fail = latency:5\n")
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ini edgeopt_compare_fail = [[]'latency:5'[]]: tolerance 'latency:5'*"])
