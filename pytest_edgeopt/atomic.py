"""Atomic file writes: a reader (or an interrupted run) sees the old file or the whole new
one, never a partial write. Every result, cache entry and history file goes through here."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_json(path: Path, obj: Any, compact: bool = False) -> None:
    """JSON written atomically; ``compact`` drops the indentation (results with raw samples)."""
    text = json.dumps(obj, sort_keys=True, default=str, **({"separators": (",", ":")} if compact else {"indent": 2}))
    atomic_write_bytes(path, (text + "\n").encode())
