"""Checks on what goes into device commands, and small facts about host files and exits.

Serials, device paths and CPU masks are validated before they reach a shell command, a
protocol string, a message or a file name (:func:`validate_serial`,
:func:`validate_remote_path`, :func:`validate_affinity_mask`); :func:`describe_exit`
names the signal behind a shell's ``128+N`` exit code; :func:`elf_machine` and
:data:`ELF_ABIS` tell which Android ABIs can run a host binary.

Plain Python (no pytest, no adbutils, no NumPy): the plugin's option converters import it.
"""

from __future__ import annotations

import hashlib
import re
import signal
import struct
from pathlib import Path

__all__ = [
    "ELF_ABIS",
    "ELF_NAMES",
    "REMOTE_ROOT",
    "describe_exit",
    "elf_machine",
    "sanitize_label",
    "sha256_file",
    "signal_name",
    "validate_affinity_mask",
    "validate_remote_path",
    "validate_serial",
]

#: Where everything goes on the device (the only world-writable place adb shell has).
REMOTE_ROOT = "/data/local/tmp"

_SERIAL_RE = re.compile(r"^[A-Za-z0-9._:\[\]-]{1,128}$")
_PATH_PART_RE = re.compile(r"^[A-Za-z0-9._-]+$")
_MASK_RE = re.compile(r"^(?:0[xX])?[0-9a-fA-F]{1,16}$")

#: ELF e_machine -> the Android ABIs that run it.
ELF_ABIS: dict[int, tuple[str, ...]] = {183: ("arm64-v8a",), 40: ("armeabi-v7a", "armeabi"), 62: ("x86_64",), 3: ("x86",), 243: ("riscv64",)}
#: ELF e_machine -> the architecture's name, for messages.
ELF_NAMES: dict[int, str] = {183: "aarch64", 40: "arm", 62: "x86-64", 3: "x86", 243: "riscv"}


def validate_serial(serial: str) -> str:
    """An adb serial made only of ``[A-Za-z0-9._:[]-]`` (USB serials, ``emulator-5554``,
    ``HOST:PORT``, ``[V6]:PORT``); ``ValueError`` otherwise (it goes into shell-free
    protocol strings, but also into messages and file names)."""
    if not isinstance(serial, str) or not _SERIAL_RE.match(serial):
        raise ValueError(f"invalid adb serial {serial!r} (allowed: letters, digits, . _ : - [ ])")
    return serial


def validate_remote_path(path: str, root: str = REMOTE_ROOT) -> str:
    """A device path strictly under ``root`` whose components are ``[A-Za-z0-9._-]+``
    (no ``.``/``..``, no spaces or shell characters); ``ValueError`` otherwise."""
    if not isinstance(path, str) or not path.startswith(root + "/"):
        raise ValueError(f"device path {path!r} is not under {root}/")
    parts = path[len(root) + 1 :].split("/")
    for part in parts:
        if part in ("", ".", "..") or not _PATH_PART_RE.match(part):
            raise ValueError(f"invalid device path {path!r} (component {part!r})")
    return path


def validate_affinity_mask(mask: str) -> str:
    """A ``taskset`` CPU mask in hex (``f0``, ``0xF0``); ``ValueError`` otherwise."""
    if not isinstance(mask, str) or not _MASK_RE.match(mask) or int(mask, 16) == 0:
        raise ValueError(f"invalid CPU affinity mask {mask!r} (expected a non-zero hex mask such as f0)")
    return mask


def sanitize_label(serial: str) -> str:
    """A test-id and file-name friendly form of a serial (``127.0.0.1:5555`` -> ``127.0.0.1_5555``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", serial).strip("_") or "android"


def signal_name(returncode: int) -> str | None:
    """``SIGSEGV`` for 139 (a shell's 128+N), ``None`` when it is not a signal exit."""
    n = returncode - 128 if returncode > 128 else -returncode if returncode < 0 else 0
    try:
        return signal.Signals(n).name if n > 0 else None
    except ValueError:
        return None


def describe_exit(returncode: int) -> str:
    """``exit code 139 (SIGSEGV)``, or ``exit code 1`` when no signal is behind it."""
    sig = signal_name(returncode)
    return f"exit code {returncode} ({sig})" if sig else f"exit code {returncode}"


def elf_machine(path: Path) -> int | None:
    """ELF ``e_machine`` of a file, ``None`` if it is not an ELF file (a script, say)."""
    try:
        with open(path, "rb") as f:
            head = f.read(20)
    except OSError:
        return None
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    return int(struct.unpack("<H" if head[5] == 1 else ">H", head[18:20])[0])


def sha256_file(path: Path) -> str:
    """The SHA-256 of a host file, hex (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
