"""What the command line and ini chose for a run (:class:`Settings`), validated at
start-up. Kept apart from :mod:`pytest_edgeopt.session` so the plugin can read its options
without importing the builder, the targets or numpy: every pytest run pays for start-up."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_edgeopt.farm.health import HealthPolicy
from pytest_edgeopt.farm.lease import DEFAULT_TIMEOUT_S
from pytest_edgeopt.targets.base import LatencySettings

if TYPE_CHECKING:  # pragma: no cover
    import pytest

    from pytest_edgeopt.options import Option


#: The local mirror of a shared cache (``--edgeopt-cache-dir=s3://...``) when not
#: ``.edgeopt/cache`` under the rootdir: e.g. a directory the CI caches between jobs.
CACHE_MIRROR_ENV = "EDGEOPT_CACHE_MIRROR"


@dataclass(frozen=True, slots=True)
class Settings:
    """What the command line and ini chose. ``targets`` is ``None`` when not given
    (unmarked tests then run on the default targets: the CPU); ``variants`` is ``None`` for
    every variant."""

    targets: tuple[str, ...] | None
    variants: tuple[str, ...] | None
    require: frozenset[str]
    cache_dir: Path
    rebuild: bool
    json_path: Path | None
    latency: LatencySettings
    #: Target-specific settings by option name without the ``edgeopt_`` prefix
    #: (``edgetpu``: device strings, ``edgetpu_library``, ``adb``, ``serial``...).
    target_options: dict[str, Any] = field(default_factory=dict)
    #: The device inventory file (``--edgeopt-farm``), when the run has one.
    farm: Path | None = None
    #: When a device is healthy enough to measure on (Android: temperature, battery).
    health: HealthPolicy = field(default_factory=HealthPolicy)
    #: Where device leases live (``None``: :func:`~pytest_edgeopt.farm.lease.default_lease_dir`),
    #: and how long a measurement waits for a device another process is using.
    lease_dir: Path | None = None
    lease_timeout_s: float = DEFAULT_TIMEOUT_S
    #: The shared variant cache (a URL given as ``--edgeopt-cache-dir``; ``cache_dir`` is then
    #: its local mirror), ``None`` for a local cache only.
    cache_url: str | None = None

    @classmethod
    def from_config(cls, config: pytest.Config, target_options: Iterable[Option] = ()) -> Settings:
        """The run's settings through :func:`pytest_edgeopt.options.resolve` (command line,
        else ini, else default); ``target_options`` are the targets' own options."""
        from pytest_edgeopt.options import CORE_OPTIONS, farm_path, resolve_all

        v = resolve_all(config, CORE_OPTIONS)
        cache, json_path, lease_dir = v["edgeopt_cache_dir"], v["edgeopt_json"], v["edgeopt_lease_dir"]
        cache_url = cache if cache and "://" in cache else None
        if cache_url:  # the shared cache's local mirror: $EDGEOPT_CACHE_MIRROR, else the default local cache
            cache = os.environ.get(CACHE_MIRROR_ENV) or None
        return cls(
            targets=v["edgeopt_targets"],
            variants=v["edgeopt_variants"],
            require=frozenset(v["edgeopt_require"]),
            cache_dir=(config.rootpath / cache) if cache else config.rootpath / ".edgeopt" / "cache",
            rebuild=bool(v["edgeopt_rebuild"]),
            json_path=Path(json_path) if json_path else None,
            latency=LatencySettings(
                warmup=v["edgeopt_warmup"], min_samples=v["edgeopt_min_samples"], min_time_s=v["edgeopt_min_time"],
                max_samples=v["edgeopt_max_samples"], threads=v["edgeopt_threads"],
            ),
            target_options=target_option_values(config, target_options),
            farm=farm_path(config),
            health=HealthPolicy(
                max_temperature_c=v["edgeopt_max_temperature"], max_thermal_status=v["edgeopt_max_thermal_status"],
                min_battery_pct=v["edgeopt_min_battery"], cooldown_s=v["edgeopt_cooldown"],
                poll_s=v["edgeopt_health_poll"], interval_s=v["edgeopt_health_interval"],
            ),
            lease_dir=config.rootpath / lease_dir if lease_dir else None,
            lease_timeout_s=v["edgeopt_lease_timeout"],
            cache_url=cache_url,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "targets": list(self.targets) if self.targets else None,
            "variants": list(self.variants) if self.variants else None,
            "require": sorted(self.require),
            "cache_dir": str(self.cache_dir),
            "cache_url": _shown(self.cache_url),
            "rebuild": self.rebuild,
            "latency": {
                "warmup": self.latency.warmup, "min_samples": self.latency.min_samples,
                "min_time_s": self.latency.min_time_s, "max_time_s": self.latency.max_time_s,
                "max_samples": self.latency.max_samples,
                "threads": self.latency.threads,
            },
            "target_options": dict(self.target_options),
            "farm": str(self.farm) if self.farm else None,
            "health": self.health.to_dict(),
            "lease_dir": str(self.lease_dir) if self.lease_dir else None,
            "lease_timeout_s": self.lease_timeout_s,
        }


def target_option_values(config: pytest.Config, table: Iterable[Option]) -> dict[str, Any]:
    """The targets' options resolved, by name without ``edgeopt_`` (``adb``, ``serial``...)."""
    from pytest_edgeopt.options import resolve

    return {opt.key: resolve(config, opt) for opt in table}


def _shown(url: str | None) -> str | None:
    """A URL as it may be written into results (no credentials, no query string)."""
    if url is None:
        return None
    from pytest_edgeopt.storage.location import redact

    return redact(url)
