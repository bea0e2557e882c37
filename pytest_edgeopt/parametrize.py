"""Items parametrized by variant x target x device (:class:`Case`), their markers checked
at collection, and the costliest builds handed out first under pytest-xdist. (Which items
edgeopt parametrizes at all is checked in the plugin, so most runs never import this.)

Which targets exist is the run's :class:`~pytest_edgeopt.names.TargetRegistry` (what the
target plugins declared); which devices a target has, the ``discover`` callable given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from pytest_edgeopt.names import VARIANT_NAMES, TargetRegistry

if TYPE_CHECKING:  # pragma: no cover
    from pytest_edgeopt.settings import Settings
    from pytest_edgeopt.targets.base import Device, Discovery


@dataclass(frozen=True, slots=True)
class Case:
    """One parametrization: a variant, and (for measured items) a target and device.
    ``missing`` says why the target has no device (the item skips, or fails if required)."""

    variant: str
    target: str | None = None
    device: Device | None = None
    missing: str | None = None

    @property
    def id(self) -> str:
        parts = [self.variant]
        if self.target:
            parts.append(self.target)
        if self.device is not None and self.device.label:
            parts.append(self.device.label)
        return "-".join(parts)


_NO_CASE_LEFT = "no variant/target left after --edgeopt-variants/--edgeopt-targets"


def cases(metafunc: pytest.Metafunc, settings: Settings, targets: TargetRegistry,
          discover: Callable[[str], Discovery]) -> list[Case]:
    """The item's cases: its variants (marker, then ``--edgeopt-variants``), and for a
    measured or target-marked item, each target (markers, restricted by
    ``--edgeopt-targets``; default: ``--edgeopt-targets``, else the default targets) on each
    of its devices."""
    definition = metafunc.definition
    marker = definition.get_closest_marker("edgeopt_variants")
    variants = [v for v in (marker.args if marker and marker.args else VARIANT_NAMES) if v in VARIANT_NAMES]
    if settings.variants:
        variants = [v for v in variants if v in settings.variants]
    measured = "measurement" in metafunc.fixturenames or definition.get_closest_marker("edgeopt_budget")
    marked = [t for t in targets.names if definition.get_closest_marker(t)]
    if not (measured or marked):
        return [Case(v) for v in variants]
    chosen = marked or list(settings.targets or targets.defaults)
    if settings.targets and marked:
        chosen = [t for t in chosen if t in settings.targets]
    out = []
    for v in variants:
        for t in chosen:
            found = discover(t)
            if found.devices:  # an inventory device that is not there: its items skip with the reason
                out += [Case(v, t, d, d.details.get("unavailable")) for d in found.devices]
            else:
                out.append(Case(v, t, None, found.missing or f"no {t} device found"))
    return out


def parametrize(metafunc: pytest.Metafunc, found: list[Case]) -> None:
    """Parametrize ``edgeopt_case`` (indirectly) with ``found``; with none left, one
    visible, skipped item."""
    if not found:
        metafunc.parametrize("edgeopt_case", [pytest.param(None, marks=pytest.mark.skip(reason=_NO_CASE_LEFT))],
                             ids=["none"], indirect=True)
        return
    metafunc.parametrize("edgeopt_case", found, ids=[c.id for c in found], indirect=True)


def costliest_builds_first(items: list[pytest.Item]) -> None:
    """Under pytest-xdist's load distribution, hand out the items whose variants fine-tune
    longest first (VariantSpec.phases: pcqat_int8, then pqat_int8 and cqat_int8, then the
    single-phase ones), so no worker starts a long build while the others finish: the
    longest-first rule for balancing jobs over workers. Every worker sorts its collection
    the same way (the controller requires identical collections); the sort is stable, so
    the other items keep their order, and a serial run keeps the collection order."""
    from pytest_edgeopt.variants.registry import VARIANTS

    def phases(item: pytest.Item) -> int:
        case = getattr(getattr(item, "callspec", None), "params", {}).get("edgeopt_case")
        return VARIANTS[case.variant].phases if isinstance(case, Case) else 0

    items.sort(key=lambda item: -phases(item))


def check_markers(items: list[pytest.Item]) -> None:
    """Check marker arguments at collection: a typo is a usage error, not 50 failures."""
    from pytest_edgeopt.budgets.rules import BudgetError
    from pytest_edgeopt.budgets.rules import validate as validate_budgets
    from pytest_edgeopt.variants.registry import check_options

    problems: list[str] = []
    for item in items:
        for marker in item.iter_markers("edgeopt_variants"):
            unknown = [v for v in marker.args if v not in VARIANT_NAMES]
            if unknown or marker.kwargs:
                problems.append(f"{item.nodeid}: edgeopt_variants: unknown variant "
                                f"{', '.join(map(repr, unknown or marker.kwargs))}; known: {', '.join(VARIANT_NAMES)}")
        for marker in item.iter_markers("edgeopt_budget"):
            try:
                validate_budgets(marker.kwargs, "edgeopt_budget")
            except BudgetError as exc:
                problems.append(f"{item.nodeid}: {exc}")
            if marker.args:
                problems.append(f"{item.nodeid}: edgeopt_budget takes keywords only, got {marker.args!r}")
        for marker in item.iter_markers("edgeopt_options"):
            try:
                check_options(marker.kwargs, "edgeopt_options")
            except ValueError as exc:
                problems.append(f"{item.nodeid}: {exc}")
    if problems:
        raise pytest.UsageError("pytest-edgeopt: bad marker arguments:\n  " + "\n  ".join(dict.fromkeys(problems)))
