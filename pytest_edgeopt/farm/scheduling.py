"""Handing out pytest-xdist work by device: with a device inventory and ``-n N`` (no
``--dist``), all items of one device (both Android targets of a phone) go to one worker, so
each device is measured by one worker at a time, its fp32 baseline once, and N workers keep
N devices busy without queueing for each other's leases. Items of the host CPU are handed
out one by one. (``--dist loadgroup`` would do this with ``xdist_group`` marks, but it
relies on rewriting node ids, which pytest 9.2 ignores: pytest-xdist #1386.)"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from pytest_edgeopt.farm.inventory import Inventory


def schedules_by_device(option: Any, has_farm: bool) -> bool:
    """Whether the run leaves the distribution mode to us: ``-n N`` given, ``--dist`` not
    (read before pytest-xdist turns ``-n N`` into ``--dist load``), and a device inventory.
    ``option`` is pytest's parsed command line (``config.option``)."""
    return bool(getattr(option, "numprocesses", None) and getattr(option, "dist", None) == "no"
                and not getattr(option, "distload", False) and has_farm)


def device_scheduler(config: Any, log: Any, farm: Inventory, device_targets: Mapping[str, str]) -> Any:
    """A pytest-xdist scheduler that keeps each inventory device's items on one worker;
    ``device_targets`` maps target names to the device kind they run on."""
    from xdist.scheduler import LoadScopeScheduling

    from pytest_edgeopt.farm.inventory import device_group

    class DeviceScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return device_group(nodeid, farm, device_targets) or nodeid

    return DeviceScheduling(config, log)
