"""Test-only adb helpers; the server itself is :class:`devices.adb_server.AdbServer`.

The tests run the adb that adbutils' wheel bundles, and the system's where there is one.
See ``shared/notes/FACTS.md``, "Android over adb".
"""

from __future__ import annotations

import shutil
from pathlib import Path

import adbutils

from devices.adb_server import bundled_adb as _wheel_bundled_adb
from devices.adb_server import free_port

__all__ = ["bundled_adb", "free_port", "system_adb"]


def bundled_adb() -> str:
    """The adb binary adbutils' wheel bundles (adb 36).

    Not ``adbutils.adb_path()``, nor :class:`~devices.adb_server.AdbServer`'s default: both
    prefer an ``adb`` on PATH (Debian's is 29.0.6), and these tests should run the same adb
    everywhere.
    """
    return _wheel_bundled_adb() or adbutils.adb_path()


def system_adb() -> str | None:
    """An ``adb`` on PATH that is not the bundled one, if any."""
    found = shutil.which("adb")
    if found and Path(found).resolve() != Path(bundled_adb()).resolve():
        return found
    return None
