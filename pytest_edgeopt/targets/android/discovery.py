"""Which Android devices an adb server offers, and what they are (``getprop``).

Plain Python (no pytest).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from typing import Any

from adbutils import AdbError

from pytest_edgeopt.targets.android.link import DeviceLink
from pytest_edgeopt.targets.android.server import (
    AdbServerUnavailable,
    check_server,
    client_for,
    default_adb_address,
    is_tcp_serial,
)
from pytest_edgeopt.targets.android.validation import sanitize_label, validate_serial
from pytest_edgeopt.targets.base import Device, Discovery, TargetError

__all__ = ["DEVICE_PROPS", "discover_android", "read_props"]

#: getprop names read at discovery, by the key they get in Device.details.
DEVICE_PROPS = {
    "model": "ro.product.model",
    "product": "ro.product.name",
    "device": "ro.product.device",
    "manufacturer": "ro.product.manufacturer",
    "abi": "ro.product.cpu.abi",
    "abilist": "ro.product.cpu.abilist",
    "sdk": "ro.build.version.sdk",
    "release": "ro.build.version.release",
}


def read_props(link: DeviceLink, names: Sequence[str]) -> dict[str, str]:
    """``getprop`` of several properties in one shell command (``{}`` entries are ``""``)."""
    for n in names:
        if not re.match(r"^[A-Za-z0-9._-]+$", n):
            raise ValueError(f"invalid property name {n!r}")
    cmd = "; ".join(f"echo {shlex.quote(n)}=\"$(getprop {shlex.quote(n)})\"" for n in names)
    res = link.shell("read device properties", cmd, timeout=min(link.step_timeout_s, 30.0))
    props: dict[str, str] = {}
    for line in res.output.splitlines():
        key, sep, value = line.partition("=")
        if sep and key in names:
            props[key] = value.strip()
    return props


def discover_android(adb: str | None = None, serials: Sequence[str] = (), *, timeout_s: float = 30.0) -> Discovery:
    """The devices in state ``device`` on the adb server at ``adb`` (``HOST:PORT``;
    default :func:`~pytest_edgeopt.targets.android.server.default_adb_address`): all of them, or
    the given ``serials``.

    A given serial that is not listed, offline or unauthorized is named in
    ``Discovery.missing`` (the others are still returned). No server: no devices, and
    ``missing`` says how to start one. Each device's ``details`` carry its model,
    product, ABI, SDK level and the adb server address, read with ``getprop``.
    """
    address = adb or default_adb_address()
    try:
        client = client_for(address)
        check_server(client, timeout=min(5.0, timeout_s))
        listed = {info.serial: info.state for info in client.list()}
    except AdbServerUnavailable as e:
        return Discovery((), missing=str(e))
    except (AdbError, OSError, ValueError) as e:
        return Discovery((), missing=f"adb server at {address} failed to list devices: {e}")

    problems: list[str] = []
    wanted: list[str] = []
    for serial in serials or sorted(s for s, st in listed.items() if st == "device"):
        try:
            validate_serial(serial)
        except ValueError as e:
            problems.append(str(e))
            continue
        state = listed.get(serial)
        if state == "device":
            wanted.append(serial)
        elif state is None:
            attached = ", ".join(f"{s} ({st})" for s, st in sorted(listed.items())) or "none"
            hint = f"; `adb -P {client.port} connect {serial}` first" if is_tcp_serial(serial) else ""
            problems.append(f"device {serial} is not attached to the adb server at {address} (attached: {attached}){hint}")
        elif state == "unauthorized":
            problems.append(f"device {serial} is unauthorized: accept the USB debugging prompt on the phone")
        else:
            problems.append(f"device {serial} is {state} on the adb server at {address}")

    devices: list[Device] = []
    for serial in wanted:
        link = DeviceLink(client, serial, step_timeout_s=timeout_s, reconnect_timeout_s=min(10.0, timeout_s))
        try:
            props = read_props(link, list(DEVICE_PROPS.values()))
        except TargetError as e:
            problems.append(str(e))
            continue
        details: dict[str, Any] = {key: props.get(prop, "") for key, prop in DEVICE_PROPS.items()}
        details["serial"] = serial
        details["adb_server"] = address
        details["transport"] = "tcp" if is_tcp_serial(serial) else "usb"
        devices.append(Device(kind="android", id=serial, label=sanitize_label(serial), details=details))

    if not devices and not problems:
        others = ", ".join(f"{s} ({st})" for s, st in sorted(listed.items()))
        problems.append(
            f"no Android device in state 'device' on the adb server at {address}"
            + (f" (listed: {others})" if others else "")
            + ": plug one in with USB debugging on, or `adb connect HOST:PORT`"
        )
    return Discovery(tuple(devices), missing="; ".join(problems) or None)
