"""Device health: is a phone cool and charged enough to measure on, and in what state was it.

A target that can report its device's conditions has a ``device_conditions()`` method
(:meth:`pytest_edgeopt.targets.android.target.AndroidTarget.device_conditions`: ``state``,
``battery_level`` %, ``battery_temperature_c``, ``thermal_status`` (Android's
``THERMAL_STATUS_*``, 0 none ... 6 shutdown) from ``dumpsys battery`` and ``dumpsys
thermalservice``; ``{"error": ...}`` when the device does not answer).

:class:`HealthMonitor` reads them before a device's first measurement, and again before a
later one when the last reading is older than ``interval_s``. A device outside the
:class:`HealthPolicy` (too hot, thermally throttled, battery too low) is read again every
``poll_s`` seconds until it is back within it, for at most ``cooldown_s``; then it is
:class:`DeviceUnhealthy` (the item skips with the reason, or fails when its target is
required), and later checks of it do not wait again. A device that does not answer is a
:class:`~pytest_edgeopt.targets.base.TargetError` naming the step. The conditions go into
the measurement (``extras["conditions"]``, with ``waited_s``).

Plain Python (no pytest).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pytest_edgeopt.targets.base import Target, TargetError, TargetUnavailable

#: Android's PowerManager.THERMAL_STATUS_* names, by level.
THERMAL_STATUS = ("none", "light", "moderate", "severe", "critical", "emergency", "shutdown")


class DeviceUnhealthy(TargetUnavailable):
    """The device stayed outside the health policy for the whole cool-down wait."""


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    """Limits a device must be within to be measured on: battery temperature at most
    ``max_temperature_c`` (deg C), thermal status at most ``max_thermal_status`` (1:
    light; throttling starts at 2, moderate), battery at least ``min_battery_pct`` (%).
    Out of them, wait up to ``cooldown_s`` seconds, reading every ``poll_s``; a healthy
    reading is trusted for ``interval_s`` seconds (0: read before every measurement)."""

    max_temperature_c: float = 40.0
    max_thermal_status: int = 1
    min_battery_pct: int = 20
    cooldown_s: float = 300.0
    poll_s: float = 10.0
    interval_s: float = 30.0

    def problems(self, conditions: Mapping[str, Any]) -> list[str]:
        """What is out of limits in ``conditions`` (empty: healthy). Readings a device
        does not give are not judged."""
        out = []
        temp = conditions.get("battery_temperature_c")
        if temp is not None and temp > self.max_temperature_c:
            out.append(f"too hot: battery {temp:g} C > {self.max_temperature_c:g} C")
        status = conditions.get("thermal_status")
        if status is not None and status > self.max_thermal_status:
            name = THERMAL_STATUS[status] if 0 <= status < len(THERMAL_STATUS) else str(status)
            out.append(f"thermal status {status} ({name}) > {self.max_thermal_status}")
        level = conditions.get("battery_level")
        if level is not None and level < self.min_battery_pct:
            out.append(f"battery too low: {level}% < {self.min_battery_pct}%")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"max_temperature_c": self.max_temperature_c, "max_thermal_status": self.max_thermal_status,
                "min_battery_pct": self.min_battery_pct, "cooldown_s": self.cooldown_s, "poll_s": self.poll_s,
                "interval_s": self.interval_s}


def describe(conditions: Mapping[str, Any]) -> str:
    """``battery 81%, 33.5 C, thermal status 0``: a reading in words."""
    parts = []
    if conditions.get("battery_level") is not None:
        parts.append(f"battery {conditions['battery_level']}%")
    if conditions.get("battery_temperature_c") is not None:
        parts.append(f"{conditions['battery_temperature_c']:g} C")
    if conditions.get("thermal_status") is not None:
        parts.append(f"thermal status {conditions['thermal_status']}")
    if conditions.get("waited_s"):
        parts.append(f"after waiting {conditions['waited_s']:g} s")
    return ", ".join(parts) or "no readings"


class HealthMonitor:
    """Checks devices against a policy (one monitor per process; see the module docstring).
    ``clock`` and ``sleep`` are replaceable for tests."""

    def __init__(self, policy: HealthPolicy, progress: Callable[[str], None] = lambda msg: None, *,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.policy = policy
        self.progress = progress
        self.clock = clock
        self.sleep = sleep
        self._healthy_at: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}
        self._gave_up: set[tuple[str, str]] = set()

    def check(self, target: Target) -> dict[str, Any] | None:
        """The device's conditions once it is healthy (``None`` when the target reports
        none). Raises :class:`DeviceUnhealthy` or ``TargetError`` (see the module docstring)."""
        read = getattr(target, "device_conditions", None)
        if read is None:
            return None
        device = target.device
        key = (str(device.details.get("adb_server") or device.kind), device.id)
        name = device.label or device.id
        policy = self.policy
        start = self.clock()
        last = self._healthy_at.get(key)
        if last is not None and start - last[0] < policy.interval_s:
            return {**last[1], "waited_s": 0.0, "read_s_ago": round(start - last[0], 1)}
        said = False
        while True:
            conditions = dict(read())
            if conditions.get("error"):
                self._healthy_at.pop(key, None)
                raise TargetError(f"{name}: health check: {conditions['error']}")
            problems = policy.problems(conditions)
            waited = self.clock() - start if said else 0.0
            if not problems:
                conditions["waited_s"] = round(waited, 1)
                self._healthy_at[key] = (self.clock(), conditions)
                self._gave_up.discard(key)
                return conditions
            self._healthy_at.pop(key, None)
            if key in self._gave_up or waited >= policy.cooldown_s:
                when = "still, after an earlier wait" if key in self._gave_up else f"after waiting {waited:.1f} s"
                self._gave_up.add(key)
                raise DeviceUnhealthy(f"{name} is not healthy: {'; '.join(problems)} {when} "
                                      f"(cool-down limit {policy.cooldown_s:g} s, --edgeopt-cooldown)")
            if not said:
                self.progress(f"{name}: {'; '.join(problems)}: waiting up to {policy.cooldown_s:g} s")
                said = True
            self.sleep(max(0.0, min(policy.poll_s, policy.cooldown_s - waited)))
