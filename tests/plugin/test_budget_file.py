"""Budgets declared in edgeopt.toml / [tool.edgeopt]: collected into the same items and
results as the Python example; a malformed file is a collection error naming key and line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pytest_edgeopt.budgets.file import BudgetFileError, parse

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def project(pytester: pytest.Pytester, tensorflow_loaded: None, digits_model_path: Path,
            tmp_path_factory: pytest.TempPathFactory) -> pytest.Pytester:
    cache = tmp_path_factory.getbasetemp() / "edgeopt-variant-cache"  # one content-addressed cache for every digits run of the session
    pytester.makeini(f"[pytest]\nedgeopt_cache_dir = {cache}\nedgeopt_min_samples = 20\nedgeopt_min_time = 0.02\n")
    return pytester


def run(p: pytest.Pytester, target: str, out: str) -> tuple[pytest.RunResult, dict]:
    result = p.runpytest(target, "-p", "no:cacheprovider", f"--edgeopt-json={p.path / out}")
    return result, json.loads((p.path / out).read_text())


def test_toml_example_gives_the_same_items_and_results_as_the_python_one(project: pytest.Pytester) -> None:
    # test_phone.py (the Android tests, skipped without a phone) has no TOML twin
    shutil.copytree(EXAMPLES / "digits", project.path / "py", ignore=shutil.ignore_patterns("test_phone.py"))
    shutil.copytree(EXAMPLES / "digits_toml", project.path / "toml")
    py_result, py = run(project, "py", "py.json")
    toml_result, toml = run(project, "toml", "toml.json")
    py_result.assert_outcomes(passed=18)
    toml_result.assert_outcomes(passed=18)

    def items(doc: dict) -> dict[str, dict]:
        return {r["test"].split("::")[1]: r for r in doc["measurements"]}

    a, b = items(py), items(toml)
    assert sorted(a) == sorted(b)  # same test names and ids: test_x[variant-target]
    for name in a:
        ma, mb = a[name]["measurement"], b[name]["measurement"]
        assert a[name]["outcome"] == b[name]["outcome"] == "passed"
        assert ma["size_bytes"] == mb["size_bytes"] and ma["recipe"] == mb["recipe"]
        assert ma["accuracy"] == mb["accuracy"]
        assert ma["budget_checks"][0]["budgets"] == mb["budget_checks"][0]["budgets"]


def test_defaults_and_overrides_merge_per_variant_and_target(project: pytest.Pytester, digits_model_path: Path) -> None:
    project.makefile(".toml", edgeopt=f"""
        [model]
        name = "digits"
        model = "{digits_model_path}"
        eval_data = "fixtures.digits:eval_data"
        representative_data = "fixtures.digits:representative_batches"

        [defaults]
        budgets = {{ max_accuracy_drop = 0.02 }}

        [tests.test_sizes]
        variants = ["float16", "int8"]
        budgets = {{ min_size_reduction = 0.4 }}

        [tests.test_sizes.overrides]
        int8 = {{ min_size_reduction = 0.99 }}
    """)
    result, doc = run(project, "edgeopt.toml", "r.json")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*int8 on cpu: size reduction 0.7* < 0.990*"])
    budgets = {r["variant"]: r["measurement"]["budget_checks"][0]["budgets"] for r in doc["measurements"]}
    assert budgets == {"float16": {"max_accuracy_drop": 0.02, "min_size_reduction": 0.4},
                       "int8": {"max_accuracy_drop": 0.02, "min_size_reduction": 0.99}}


def test_pyproject_tool_table_is_collected(project: pytest.Pytester, digits_model_path: Path) -> None:
    project.makefile(".toml", pyproject=f"""
        [project]
        name = "users-model"

        [tool.edgeopt.model]
        name = "digits"
        model = "{digits_model_path}"

        [tool.edgeopt.defaults]
        variants = ["float16"]
        budgets = {{ min_size_reduction = 0.4 }}
    """)
    result = project.runpytest("pyproject.toml", "-p", "no:cacheprovider", "-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*pyproject.toml::test_budgets[[]float16-cpu[]] PASSED*"])


MODEL = '[model]\nname = "m"\nmodel = "m.h5"\n'


@pytest.mark.parametrize(("text", "message"), [
    (MODEL + '\n[tests.t]\nvariants = ["int8"]\nbudgets = { max_acuracy_drop = 0.01 }\n',
     r"edgeopt.toml:7: tests.t.budgets: unknown budget keyword 'max_acuracy_drop'"),
    (MODEL + '\n[tests.t]\nvariants = ["int4"]\nbudgets = { min_size_reduction = 0.5 }\n',
     r"edgeopt.toml:6: tests.t.variants: unknown name 'int4'"),
    (MODEL + '\n[tests.t]\nvariants = ["int8"]\nbudget = { min_size_reduction = 0.5 }\n',
     r"edgeopt.toml:7: tests.t.budget: unknown key"),
    (MODEL + '\n[tests.t]\nbudgets = { min_size_reduction = 1.5 }\n',
     r"edgeopt.toml:6: tests.t.budgets: .*min_size_reduction=1.5 must be a fraction"),
    (MODEL + 'metric = "f1"\n[defaults]\nbudgets = { min_size_reduction = 0.5 }\n',
     r"edgeopt.toml:4: model.metric: unknown metric 'f1'"),
    ('[model]\nname = "m"\n\n[defaults]\nbudgets = { min_size_reduction = 0.5 }\n',
     r"edgeopt.toml:1: model: model.model is required"),
    (MODEL + '[defaults\n', r"edgeopt.toml: not valid TOML: .*line 4"),
    (MODEL + '\n[tests.t]\nvariants = ["int8"]\nbudgets = { min_size_reduction = 0.5 }\n[tests.t.overrides]\ngpu = { max_latency_ms = 1 }\n',
     r"edgeopt.toml:9: tests.t.overrides.gpu: an override key is a variant, a target"),
])
def test_malformed_file_names_key_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "edgeopt.toml"
    path.write_text(text)
    with pytest.raises(BudgetFileError, match=message):
        parse(path, targets=("cpu", "android_gpu", "android_cpu", "edgetpu"), default_targets=("cpu",))


def test_malformed_file_is_a_collection_error(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", edgeopt=MODEL + '\n[tests.t]\nvariants = ["int8"]\nbudgets = { max_acuracy_drop = 0.01 }\n')
    result = pytester.runpytest("edgeopt.toml")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*ERROR collecting edgeopt.toml*",
                                 "*edgeopt.toml:7: tests.t.budgets: unknown budget keyword 'max_acuracy_drop'*"])
    result.stdout.no_fnmatch_line("*Traceback*")


def test_unimportable_loader_is_explained(project: pytest.Pytester) -> None:
    project.makefile(".toml", edgeopt='[model]\nname = "m"\nmodel = "m.h5"\neval_data = "nowhere.data:evaluation"\n'
                                      '[defaults]\nvariants = ["fp32"]\nbudgets = { min_accuracy = 0.5 }\n')
    result = project.runpytest("edgeopt.toml", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*model.eval_data = 'nowhere.data:evaluation': cannot import it (No module named 'nowhere')*"])
