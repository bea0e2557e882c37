"""What a phone says about its own condition: battery level, temperature and charging
from ``dumpsys battery``, the thermal status from ``dumpsys thermalservice``.

Plain Python (no pytest).
"""

from __future__ import annotations

import re
from typing import Any

from adbutils import AdbError

from pytest_edgeopt.targets.android.link import DeviceLink
from pytest_edgeopt.targets.android.server import device_state
from pytest_edgeopt.targets.base import TargetError

__all__ = ["parse_dumpsys_battery", "read_device_conditions"]

_THERMAL_MARK = "__edgeopt_thermal__"


def read_device_conditions(link: DeviceLink) -> dict[str, Any]:
    """``state`` (``device``), battery level (%), temperature (deg C) and charging status
    from ``dumpsys battery``, ``thermal_status`` (0-6) from ``dumpsys thermalservice``
    where the device has it (Android 10+), in one shell command; ``{"state": ...,
    "error": ...}`` when the device does not answer (the error names the step)."""
    command = f"dumpsys battery; echo {_THERMAL_MARK}; dumpsys thermalservice 2>/dev/null"
    try:
        res = link.shell("read device conditions", command, timeout=min(link.step_timeout_s, 20.0))
    except TargetError as e:
        try:
            state = device_state(link.client, link.serial) or "not attached"
        except (AdbError, OSError):
            state = "unknown"
        return {"state": state, "error": str(e)}
    battery, _, thermal = res.output.partition(_THERMAL_MARK)
    out: dict[str, Any] = {"state": "device", **parse_dumpsys_battery(battery)}
    m = re.search(r"^\s*Thermal Status:\s*(\d+)\s*$", thermal, re.MULTILINE)
    if m:
        out["thermal_status"] = int(m.group(1))
    return out


def parse_dumpsys_battery(text: str) -> dict[str, Any]:
    """``dumpsys battery`` -> ``battery_level`` (%), ``battery_temperature_c``,
    ``battery_status`` (Android's BATTERY_STATUS_* number), ``powered`` (AC/USB/wireless)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition(":")
        if sep:
            values[key.strip().lower()] = value.strip()
    out: dict[str, Any] = {}
    if values.get("level", "").lstrip("-").isdigit():
        out["battery_level"] = int(values["level"])
    if values.get("temperature", "").lstrip("-").isdigit():
        out["battery_temperature_c"] = int(values["temperature"]) / 10.0
    if values.get("status", "").isdigit():
        out["battery_status"] = int(values["status"])
    powered = [k.split()[0] for k in ("ac powered", "usb powered", "wireless powered") if values.get(k) == "true"]
    if any(k in values for k in ("ac powered", "usb powered")):
        out["powered"] = ",".join(powered) or "no"
    return out
