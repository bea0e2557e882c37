"""How a target and device are named in every table, message and key: one formatter, so the
terminal table, the HTML report, the gate and budget failures always agree."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_EMPTY: Mapping[str, Any] = {}


def where(target: str | None, device: str | None = None) -> str:
    """The ``target/device`` label of tables and messages: ``cpu`` (the host needs no
    device), ``android_gpu/SERIAL``; ``-`` when there is no target."""
    name = target or "-"
    return name if device in (None, "", "host") else f"{name}/{device}"


def device_label(device: Mapping[str, Any] | str | None) -> str:
    """A device's name in keys and tables: its ``label``, else its ``id``, else ``host``."""
    if isinstance(device, str):
        return device
    device = device or _EMPTY
    return str(device.get("label") or device.get("id") or "host")
