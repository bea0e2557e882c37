"""``edgeopt cache stats`` and ``edgeopt cache prune``: what a variant cache holds, and
removing what nobody needs, for a local cache directory or a shared one (a URL).

An entry's age is the time since it was stored (its ``meta.json``): entries are immutable, and
hits do not write. ``prune`` removes entries older than ``--older-than`` except those the last
``--keep-runs`` saved runs measured (their ``model_key``: what the gate's A/B re-measurement
reads), and, in a shared cache, data objects no ``meta.json`` names (left by killed uploads or
by the loser of a race) once they are as old. ``meta.json`` goes first, so a reader never
sees an entry without its payload.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pytest_edgeopt.storage.location import ObjectInfo, Store

_AGE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(value: str) -> float:
    """``30d``, ``12h``, ``90m``, ``2w``, ``45s`` -> seconds (ValueError otherwise)."""
    m = _AGE_RE.match(value)
    if not m:
        raise ValueError(f"{value!r} is not an age: use a number and s, m, h, d or w (e.g. 30d)")
    return float(m[1]) * _UNITS[m[2]]


@dataclass(slots=True)
class EntryFiles:
    """One cache entry's objects: ``meta`` (``None``: none, an unpublished entry) and the rest."""

    key: str
    meta: ObjectInfo | None = None
    others: list[ObjectInfo] = field(default_factory=list)

    @property
    def size_bytes(self) -> int:
        return sum(o.size_bytes for o in self.others) + (self.meta.size_bytes if self.meta else 0)

    @property
    def stored(self) -> float:
        return self.meta.modified if self.meta else max((o.modified for o in self.others), default=0.0)


def entries(store: Store) -> dict[str, EntryFiles]:
    """Every entry under ``variants/`` by key (local layout or the shared one)."""
    out: dict[str, EntryFiles] = {}
    for info in store.list("variants"):
        parts = info.key.split("/")
        if len(parts) < 4 or parts[0] != "variants":
            continue
        entry = out.setdefault(parts[2], EntryFiles(parts[2]))
        if len(parts) == 4 and parts[3] == "meta.json":
            entry.meta = info
        else:
            entry.others.append(info)
    return out


@dataclass(frozen=True, slots=True)
class CacheStats:
    """``entries`` (published), their ``size_bytes``, the ``oldest`` and ``newest`` store
    times (seconds since the epoch, ``None`` when empty), and ``unpublished`` objects
    (payloads without an entry) and their bytes."""

    entries: int
    size_bytes: int
    oldest: float | None
    newest: float | None
    unpublished: int
    unpublished_bytes: int


def stats(store: Store) -> CacheStats:
    found = entries(store)
    published = [e for e in found.values() if e.meta is not None]
    orphans = [o for e in found.values() for o in _orphans(store, e)]
    times = [e.stored for e in published]
    return CacheStats(len(published), sum(e.size_bytes for e in published), min(times, default=None),
                      max(times, default=None), len(orphans), sum(o.size_bytes for o in orphans))


def _orphans(store: Store, entry: EntryFiles) -> list[ObjectInfo]:
    """Data objects of a shared entry its ``meta.json`` does not name (all of them without one)."""
    data = [o for o in entry.others if "/data/" in o.key]
    if entry.meta is None:
        return list(entry.others)
    if not data:
        return []
    try:
        named = json.loads(store.read(entry.meta.key) or b"{}").get("sha256")
    except ValueError:
        return []
    return [o for o in data if o.key.rsplit("/", 1)[-1] != named]


@dataclass(frozen=True, slots=True)
class PruneResult:
    """What :func:`prune` removed (or would remove, ``dry_run``): entries and their bytes,
    orphan objects, and the entries kept because a recent run used them."""

    removed: int
    removed_bytes: int
    orphans: int
    kept_for_runs: int


def prune(store: Store, older_than_s: float, keep: Iterable[str] = (), now: float | None = None,
          dry_run: bool = False) -> PruneResult:
    """Remove entries stored more than ``older_than_s`` seconds ago unless their key is in ``keep``."""
    now = time.time() if now is None else now
    keep = set(keep)
    removed = removed_bytes = orphans = kept = 0
    for entry in entries(store).values():
        old = now - entry.stored > older_than_s
        if not old:
            continue
        if entry.meta is not None and entry.key in keep:
            kept += 1
            for o in _orphans(store, entry):
                orphans += 1
                if not dry_run:
                    store.delete(o.key)
            continue
        if entry.meta is None:
            orphans += len(entry.others)
        else:
            removed += 1
            removed_bytes += entry.size_bytes
        if not dry_run:
            for o in ([entry.meta] if entry.meta else []) + entry.others:  # meta.json first
                store.delete(o.key)
    return PruneResult(removed, removed_bytes, orphans, kept)


def keys_of_runs(docs: Iterable[dict[str, Any]]) -> set[str]:
    """The variant cache keys the runs measured (``model_key`` of each measurement)."""
    out = set()
    for doc in docs:
        for m in doc.get("measurements") or []:
            key = m.get("model_key") if isinstance(m, dict) else None
            if key:
                out.add(str(key))
    return out
