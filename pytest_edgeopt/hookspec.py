"""Hooks other plugins (and a farm's conftest.py) implement to extend pytest-edgeopt.

The built-in targets (cpu, android_gpu, android_cpu, edgetpu) are plugins of their own
(``targets/cpu_plugin.py``, ``targets/android/plugin.py``, ``targets/edgetpu/plugin.py``,
pytest11 entry points) that implement these same hooks, with ``trylast=True``, so a conftest
implementation wins. The core names no target.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # pragma: no cover
    from pytest_edgeopt.names import TargetSpec
    from pytest_edgeopt.targets.base import Device, Discovery, Target


@pytest.hookspec
def pytest_edgeopt_targets(config: pytest.Config) -> list[TargetSpec] | None:
    """Declare the targets this plugin provides: each name becomes a marker (with the
    spec's description) and a valid value of ``--edgeopt-targets``, ``--edgeopt-require``
    and a budget file's ``targets``. Called once, at configure; every plugin's list counts
    (in the order the plugins were registered). Example, a target of one's own::

        def pytest_edgeopt_targets(config):
            return [TargetSpec("cpu_big", "run on the big cores (4 threads)", device_kind="host")]

    Its items are then discovered and measured through :func:`pytest_edgeopt_discover`
    and :func:`pytest_edgeopt_make_target`. Options the target reads are declared with
    :func:`pytest_edgeopt.options.add_options` in the plugin's ``pytest_addoption`` and
    listed in ``TargetSpec.options`` (they then appear in ``Settings.target_options``).
    """


@pytest.hookspec(firstresult=True)
def pytest_edgeopt_discover(config: pytest.Config, target: str) -> Discovery | None:
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
def pytest_edgeopt_make_target(config: pytest.Config, name: str, device: Device) -> Target | None:
    """Return a Target that runs models as ``name`` on ``device``, or None to let the next
    plugin try. Called once per (name, device) per session, the first time an item needs it.
    Raise ``TargetUnavailable`` with a reason when the device cannot be used. Example::

        def pytest_edgeopt_make_target(config, name, device):
            if name == "cpu" and device.id == "big-cores":
                return CpuTarget(name, device, threads=4)
    """
