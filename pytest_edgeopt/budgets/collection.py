"""Budget files collected like test modules: ``edgeopt.toml``, or a ``pyproject.toml`` with
``[tool.edgeopt]``, becomes a module of ordinary test functions (same fixtures, ids,
measurements and JSON as budgets written in Python): one per ``[tests.NAME]`` table, marked
with its variants and targets, checking the file's budgets on its ``measurement``."""

from __future__ import annotations

import types
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

from pytest_edgeopt.plugin_session import plugin_session

if TYPE_CHECKING:  # pragma: no cover
    from pytest_edgeopt.budgets.file import BudgetFile, BudgetTest
    from pytest_edgeopt.measurement import Measurement
    from pytest_edgeopt.model import ModelUnderTest


def is_budget_file(file_path: Path) -> bool:
    return file_path.name == "edgeopt.toml" or (
        file_path.name == "pyproject.toml" and b"[tool.edgeopt" in file_path.read_bytes())


class BudgetFileModule(pytest.Module):
    """A budget file collected like a test module; a malformed file is a collection error
    naming the key and its line."""

    def _getobj(self) -> types.ModuleType:
        from pytest_edgeopt.budgets.file import BudgetFileError, parse

        targets = plugin_session(self.config).targets
        try:
            parsed = parse(self.path, targets=targets.names, default_targets=targets.defaults)
        except BudgetFileError as exc:
            raise self.CollectError(str(exc)) from None
        if parsed is None:
            raise self.CollectError(f"{self.path}: no [tool.edgeopt] table")
        return budget_module(parsed, self.config.rootpath)


def budget_module(parsed: BudgetFile, root: Path) -> types.ModuleType:
    """A module holding the file's ``edgeopt_model`` fixture and its tests."""
    from pytest_edgeopt.budgets.file import BudgetFileError

    module = types.ModuleType(f"edgeopt_budgets_{abs(hash(str(parsed.path)))}")
    module.__file__ = str(parsed.path)

    @pytest.fixture(scope="session", name="edgeopt_model")
    def _model_from_file() -> ModelUnderTest:
        from pytest_edgeopt.model import ModelError

        try:
            return parsed.model_under_test(root)  # type: ignore[no-any-return]
        except (BudgetFileError, ModelError) as exc:
            _fail(f"{parsed.path}: {exc}")

    setattr(module, "edgeopt_model", _model_from_file)  # noqa: B010 (a module made at run time)
    for spec in parsed.tests:
        test = budget_test(spec)
        test = pytest.mark.edgeopt_variants(*spec.variants)(test)
        for target in spec.targets:
            test = getattr(pytest.mark, target)(test)
        setattr(module, spec.name, test)
    return module


def budget_test(spec: BudgetTest) -> Callable[[Measurement], None]:
    """A test function checking ``spec``'s budgets for the item's variant and target."""

    def test(measurement: Measurement) -> None:
        __tracebackhide__ = True
        measurement.check(**spec.budgets_for(measurement.variant, measurement.target))

    test.__name__ = test.__qualname__ = spec.name
    test.__doc__ = f"Budgets of {spec.name} from the budget file."
    return test


def _fail(message: str) -> NoReturn:
    __tracebackhide__ = True
    raise pytest.fail.Exception(message, pytrace=False) from None


def collect_file(file_path: Path, parent: pytest.Collector) -> Any:
    """``BudgetFileModule`` for a budget file, else ``None``."""
    if is_budget_file(file_path):
        return BudgetFileModule.from_parent(parent, path=file_path)
    return None
