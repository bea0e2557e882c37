"""The names a user types: targets (markers, ``--edgeopt-targets``) and variants
(``edgeopt_variants``, ``--edgeopt-variants``).

Only names, so the plugin can offer and check them at start-up without importing the
variant registry or the targets (every pytest run of a project with the plugin installed
pays for what the plugin imports). :mod:`pytest_edgeopt.variants.registry` refuses to load
when its variants differ from :data:`VARIANT_NAMES`.

Targets are not listed here: each target plugin declares its own through the
``pytest_edgeopt_targets`` hook (a :class:`TargetSpec`), and the run's
:class:`TargetRegistry` holds what they declared.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from pytest_edgeopt.options import Option

#: Every variant, in the order items are parametrized and reports list them.
VARIANT_NAMES: tuple[str, ...] = (
    "fp32", "float16", "dynamic_range", "int8", "int8_full", "int16x8",
    "qat_int8", "pruned", "pruned_int8", "clustered", "clustered_int8", "pqat_int8", "cqat_int8", "pcqat_int8",
    "aeq_dynamic_wi8", "aeq_weight_only_wi8", "aeq_static_a8w8", "aeq_dynamic_wi4",
)


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """A target a plugin provides: its ``name`` (also its marker), the marker's
    description, the ``device_kind`` its devices share (targets of one kind run on the same
    farm devices: both Android targets of a phone), whether unmarked items run on it when
    ``--edgeopt-targets`` is not given (``default``), and the options it reads (resolved
    into ``Settings.target_options`` by their name without ``edgeopt_``)."""

    name: str
    marker: str
    device_kind: str
    default: bool = False
    options: tuple[Option, ...] = ()

    @property
    def marker_line(self) -> str:
        """The ``markers`` ini line that registers the marker."""
        return f"{self.name}: {self.marker}"


class TargetRegistry:
    """The targets of a run: the default ones first, then the others in the order the
    plugins declared them (the built-in ones: cpu, android_gpu, android_cpu, edgetpu). A
    name declared twice keeps its first spec."""

    def __init__(self, specs: Iterable[TargetSpec] = ()) -> None:
        self._specs: dict[str, TargetSpec] = {}
        for spec in sorted(specs, key=lambda s: not s.default):  # stable: declaration order otherwise
            self._specs.setdefault(spec.name, spec)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[TargetSpec]:
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)

    def __getitem__(self, name: str) -> TargetSpec:
        return self._specs[name]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._specs)

    @property
    def defaults(self) -> tuple[str, ...]:
        """Where unmarked items run when the run names no targets."""
        return tuple(name for name, spec in self._specs.items() if spec.default)

    def device_kinds(self) -> dict[str, str]:
        """Target name -> device kind."""
        return {name: spec.device_kind for name, spec in self._specs.items()}

    def options(self) -> tuple[Option, ...]:
        """Every target option, once (targets of one plugin share theirs)."""
        seen: dict[str, Option] = {}
        for spec in self._specs.values():
            for opt in spec.options:
                seen.setdefault(opt.dest, opt)
        return tuple(seen.values())
