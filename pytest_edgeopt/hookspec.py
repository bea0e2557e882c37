"""Hooks other plugins (and a farm's conftest.py) implement to extend pytest-edgeopt.

The built-in targets (cpu, android_gpu, android_cpu, edgetpu) are provided through these
same hooks, with ``trylast=True``, so a conftest implementation wins.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # pragma: no cover
    from pytest_edgeopt.targets.base import Device, Discovery, Target


@pytest.hookspec(firstresult=True)
def pytest_edgeopt_discover(config: pytest.Config, target: str) -> "Discovery | None":
    """Return the devices ``target`` (e.g. ``"android_gpu"``) can run on, or None to let the
    next plugin answer.

    Called once per target name per session, at collection. A Discovery with no devices
    and a ``missing`` reason makes that target's items skip with the reason (or fail
    under ``--edgeopt-require``). Example, a lab with a fixed phone::

        def pytest_edgeopt_discover(config, target):
            if target == "android_gpu":
                return Discovery((Device("android", "R58M123", label="pixel8"),))
    """


@pytest.hookspec(firstresult=True)
def pytest_edgeopt_make_target(config: pytest.Config, name: str, device: "Device") -> "Target | None":
    """Return a Target that runs models as ``name`` on ``device``, or None to let the next
    plugin try. Called once per (name, device) per session, the first time an item needs it.
    Raise ``TargetUnavailable`` with a reason when the device cannot be used. Example::

        def pytest_edgeopt_make_target(config, name, device):
            if name == "cpu" and device.id == "big-cores":
                return CpuTarget(name, device, threads=4)
    """
