"""Budgets declared in a file: ``edgeopt.toml``, or ``[tool.edgeopt]`` in ``pyproject.toml``.

The file names the model, its data, and tests of budgets; pytest collects it into the
same items a Python test file would give (same ids, measurements, JSON and reports)::

    [model]
    name = "digits-cnn"
    model = "fixtures.digits:digits_model_path"  # a path (relative to this file) or module:callable
    representative_data = "fixtures.digits:representative_batches"
    train_data = "fixtures.digits:train_data"    # module:attribute; called when callable
    eval_data = "fixtures.digits:eval_data"
    metric = "top1"
    options = { finetune_epochs = 2 }              # variant knobs

    [defaults]                                     # for every test below
    targets = ["cpu"]
    budgets = { max_accuracy_drop = 0.01 }

    [tests.test_float16_halves_the_model]
    variants = ["float16"]
    budgets = { min_size_reduction = 0.45 }

    [tests.test_float16_halves_the_model.overrides]  # by variant, target, or "variant@target"
    "float16@android_gpu" = { max_latency_ms = 5 }

Budgets merge in this order, later winning per keyword: ``defaults.budgets``, the test's
``budgets``, then its overrides for the target, the variant, and ``variant@target``.
Without a ``[tests]`` table the file is one test, ``test_budgets``, over
``defaults.variants`` (every variant) and ``defaults.targets``.

A malformed file raises :class:`BudgetFileError` naming the key and its line.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from pytest_edgeopt.budgets.rules import BudgetError, validate
from pytest_edgeopt.model import METRICS
from pytest_edgeopt.variants.registry import VARIANTS, check_options

MODEL_KEYS = ("name", "model", "representative_data", "train_data", "eval_data", "metric", "options")
TEST_KEYS = ("variants", "targets", "budgets", "overrides")
_TEST_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class BudgetFileError(ValueError):
    """The budget file is malformed; the message names the file, the line and the key."""


@dataclass(frozen=True, slots=True)
class BudgetTest:
    """One test of the file: its name, variants, targets and budgets per (variant, target)."""

    name: str
    variants: tuple[str, ...]
    targets: tuple[str, ...]
    budgets: Mapping[str, Any]
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def budgets_for(self, variant: str, target: str) -> dict[str, Any]:
        merged = dict(self.budgets)
        for key in (target, variant, f"{variant}@{target}"):
            merged.update(self.overrides.get(key, {}))
        return merged


@dataclass(frozen=True, slots=True)
class BudgetFile:
    """A parsed budget file: where it is, the ``[model]`` table, and its tests."""

    path: Path
    model: Mapping[str, Any]
    tests: tuple[BudgetTest, ...]

    def model_under_test(self, root: Path | None = None) -> Any:
        """The ModelUnderTest the file describes (imports the referenced loaders)."""
        from pytest_edgeopt.model import ModelUnderTest

        m = self.model
        base = self.path.parent
        if root is not None and str(root) not in sys.path:
            sys.path.insert(0, str(root))
        model = m["model"]
        model = _resolve(model, base, "model.model") if ":" in model else base / model
        kwargs = {k: _resolve(m[k], base, f"model.{k}") for k in ("representative_data", "train_data", "eval_data")
                  if k in m}
        return ModelUnderTest(name=m["name"], model=model, metric=m.get("metric", "top1"),
                              options=dict(m.get("options", {})), **kwargs)


def _resolve(ref: str, base: Path, key: str) -> Any:
    """``module:attribute`` -> the attribute, called when callable; a ModelError-like message when not found."""
    module, _, attr = ref.partition(":")
    if str(base) not in sys.path:
        sys.path.insert(0, str(base))
    try:
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise BudgetFileError(f"{key} = {ref!r}: cannot import it ({exc})") from None
    return obj() if callable(obj) else obj


def _line_of(text: str, table: str, key: str | None = None) -> int | None:
    """The 1-based line of ``key`` in ``[table]`` (or of the table header), best effort."""
    current = ""
    header_line = None
    parts = table.split(".") if table else []
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        m = re.match(r"^\[\s*([^\[\]]+?)\s*\]$", s)
        if m:
            current = ".".join(p.strip().strip('"') for p in m.group(1).split("."))
            if current == table:
                header_line = n
            continue
        if key is None:
            continue
        km = re.match(r'^\s*"?([^"=]+?)"?\s*=', line)
        if km and km.group(1).strip() == key:
            if current == table:
                return n
            # dotted/inline forms: [tests] test.budgets = ...; or [parent] child = { ... }
            if parts and current == ".".join(parts[:-1]) and key == parts[-1]:
                return n
    if key is not None and parts:
        parent_line = _line_of(text, ".".join(parts[:-1]), parts[-1]) if len(parts) > 1 else None
        if parent_line:
            return parent_line
    return header_line


class _Reader:
    def __init__(self, path: Path, text: str, prefix: str) -> None:
        self.path, self.text, self.prefix = path, text, prefix

    def fail(self, table: str, key: str | None, message: str) -> BudgetFileError:
        full = ".".join(p for p in (self.prefix, table) if p)
        line = _line_of(self.text, full, key)
        where = f"{self.path}:{line}" if line else str(self.path)
        what = ".".join(p for p in (table, key) if p)
        return BudgetFileError(f"{where}: {what}: {message}")

    def names(self, value: Any, known: tuple[str, ...] | list[str], table: str, key: str) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise self.fail(table, key, "must be a non-empty list of names")
        for v in value:
            if v not in known:
                raise self.fail(table, key, f"unknown name {v!r}; known: {', '.join(known)}")
        return tuple(value)

    def budgets(self, value: Any, table: str, key: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(table, key, "must be a table of budget keywords")
        try:
            validate(value, ".".join((table, key))) if value else None
        except BudgetError as exc:
            raise self.fail(table, key, str(exc).split(": ", 1)[-1]) from None
        return dict(value)


def parse(path: Path, text: str | None = None, *, targets: Sequence[str],
          default_targets: Sequence[str]) -> BudgetFile | None:
    """Parse ``edgeopt.toml`` (or the ``[tool.edgeopt]`` table of ``pyproject.toml``).

    ``targets`` are the names a ``targets`` key may use (the run's declared targets),
    ``default_targets`` where tests run when no ``targets`` key says. Returns ``None`` for
    a ``pyproject.toml`` without ``[tool.edgeopt]``.
    """
    known_targets = list(targets)
    path = Path(path)
    text = path.read_text() if text is None else text
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BudgetFileError(f"{path}: not valid TOML: {exc}") from None
    prefix = ""
    if path.name == "pyproject.toml":
        doc = doc.get("tool", {}).get("edgeopt")
        if doc is None:
            return None
        prefix = "tool.edgeopt"
    r = _Reader(path, text, prefix)
    for key in doc:
        if key not in ("model", "defaults", "tests"):
            raise r.fail("", key, "unknown table; use [model], [defaults] and [tests.NAME]")
    model = doc.get("model")
    if not isinstance(model, dict):
        raise r.fail("model", None, "a [model] table is required (name, model, and the data loaders)")
    for key in model:
        if key not in MODEL_KEYS:
            raise r.fail("model", key, f"unknown key; known: {', '.join(MODEL_KEYS)}")
    for key in ("name", "model"):
        if not isinstance(model.get(key), str) or not model[key]:
            raise r.fail("model", key if key in model else None, f"model.{key} is required (a string)")
    for key in ("representative_data", "train_data", "eval_data"):
        if key in model and (not isinstance(model[key], str) or ":" not in model[key]):
            raise r.fail("model", key, "must be an import path 'package.module:attribute'")
    if "metric" in model and model["metric"] not in METRICS:
        raise r.fail("model", "metric", f"unknown metric {model['metric']!r}; use one of {', '.join(METRICS)}")
    if "options" in model:
        if not isinstance(model["options"], dict):
            raise r.fail("model", "options", "must be a table of variant knobs")
        try:
            check_options(model["options"], "model.options")
        except ValueError as exc:
            raise r.fail("model", "options", str(exc).split(": ", 1)[-1]) from None

    defaults = doc.get("defaults", {})
    if not isinstance(defaults, dict):
        raise r.fail("", "defaults", "must be a table")
    for key in defaults:
        if key not in ("variants", "targets", "budgets"):
            raise r.fail("defaults", key, "unknown key; known: variants, targets, budgets")
    d_variants = r.names(defaults["variants"], list(VARIANTS), "defaults", "variants") if "variants" in defaults else tuple(VARIANTS)
    d_targets = r.names(defaults["targets"], known_targets, "defaults", "targets") if "targets" in defaults \
        else tuple(default_targets)
    d_budgets = r.budgets(defaults["budgets"], "defaults", "budgets") if "budgets" in defaults else {}

    tests_table = doc.get("tests")
    if tests_table is None:
        if not d_budgets:
            raise r.fail("defaults", "budgets", "no [tests.NAME] tables and no defaults.budgets: nothing to check")
        tests: tuple[BudgetTest, ...] = (BudgetTest("test_budgets", d_variants, d_targets, d_budgets),)
    else:
        if not isinstance(tests_table, dict) or not tests_table:
            raise r.fail("", "tests", "must hold one table per test: [tests.test_name]")
        tests_list = []
        for name, t in tests_table.items():
            table = f"tests.{name}"
            if not _TEST_NAME.match(name):
                raise r.fail("tests", name, "a test name must be a Python identifier")
            if not isinstance(t, dict):
                raise r.fail("tests", name, "must be a table")
            for key in t:
                if key not in TEST_KEYS:
                    raise r.fail(table, key, f"unknown key; known: {', '.join(TEST_KEYS)}")
            variants = r.names(t["variants"], list(VARIANTS), table, "variants") if "variants" in t else d_variants
            targets = r.names(t["targets"], known_targets, table, "targets") if "targets" in t else d_targets
            budgets = {**d_budgets, **(r.budgets(t["budgets"], table, "budgets") if "budgets" in t else {})}
            overrides: dict[str, dict[str, Any]] = {}
            for key, value in (t.get("overrides") or {}).items():
                variant, _, target = key.partition("@")
                known_v = variant in VARIANTS
                if target:
                    ok = known_v and target in known_targets
                else:
                    ok = known_v or variant in known_targets
                if not ok:
                    raise r.fail(f"{table}.overrides", key,
                                 "an override key is a variant, a target or 'variant@target' it names")
                overrides[key] = r.budgets(value, f"{table}.overrides", key)
            if not budgets and not overrides:
                raise r.fail(table, None, "the test sets no budget (budgets = {...} or defaults.budgets)")
            for v in variants:  # every combination must be a valid budget set
                for tg in targets:
                    merged = {**budgets, **{k: x for key in (tg, v, f"{v}@{tg}") for k, x in overrides.get(key, {}).items()}}
                    try:
                        validate(merged, f"{table} for {v} on {tg}")
                    except BudgetError as exc:
                        raise r.fail(table, "budgets", str(exc)) from None
            tests_list.append(BudgetTest(name, variants, targets, budgets, overrides))
        tests = tuple(tests_list)
    return BudgetFile(path, dict(model), tests)
