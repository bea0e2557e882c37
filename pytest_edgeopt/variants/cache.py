"""Content-addressed store of built variants.

An entry is keyed by the sha256 of everything that determines the bytes: the model's
fingerprint, the full recipe, fingerprints of the data the build used, and the versions
of the tools (see :func:`key_of`). Layout::

    ROOT/variants/ab/abcdef.../model.tflite   the flatbuffer
    ROOT/variants/ab/abcdef.../meta.json      sha256, size, recipe, build time (written last)
    ROOT/locks/abcdef....lock                 cross-process lock (pytest-xdist workers)

An intermediate several variants start from (the fine-tuned pruned model of ``pruned``,
``pruned_int8`` and ``pqat_int8``) is an entry of the same kind whose payload has another
name (``weights.npz`` instead of ``model.tflite``, see :data:`TFLITE`): its builder picks
the name, and the same name is used to look it up.

Writes go to a temporary file in the entry's directory and are moved into place with
``os.replace``; ``meta.json`` is written last and names the model's sha256, so an entry
whose model is missing, truncated or altered is detected and rebuilt.

With a ``remote`` (:class:`~pytest_edgeopt.storage.remote_cache.RemoteCache`, from a URL given
as ``--edgeopt-cache-dir``), this local store is its mirror: a local miss is looked up there
(and copied here), and what is built here is published there, uploaded in the background
while the run goes on (:meth:`VariantCache.flush` at the end of the session waits for it).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_edgeopt.atomic import atomic_write_bytes, atomic_write_json

if TYPE_CHECKING:
    from filelock import FileLock

    from pytest_edgeopt.storage.remote_cache import RemoteCache

#: Bump when the layout or the meaning of a key changes.
CACHE_FORMAT = 1

#: The payload file name of a variant entry.
TFLITE = "model.tflite"

def key_of(material: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of ``material`` (sorted keys; values JSON lacks, such as
    a Keras loss object given as the ``loss`` knob, by :func:`stable_form`)."""
    blob = json.dumps({"format": CACHE_FORMAT, **material}, sort_keys=True, default=stable_form).encode()
    return hashlib.sha256(blob).hexdigest()


def stable_form(value: Any) -> Any:
    """What stands for ``value`` in a cache key: the same in every process for equal values.
    An object with ``get_config()`` (a Keras loss) is its class and config, a function or
    class its qualified name; anything else its ``str()`` without memory addresses (which
    differ every run, so a key holding one would never be found again)."""
    get_config = getattr(value, "get_config", None)
    if callable(get_config) and not isinstance(value, type):
        try:
            return {"class": f"{type(value).__module__}.{type(value).__qualname__}", "config": get_config()}
        except Exception:  # a config that needs arguments or fails: fall back to the name
            pass
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', None)}.{value.__qualname__}"
    return re.sub(r" at 0x[0-9a-fA-F]+", "", str(value))


@dataclass(frozen=True, slots=True)
class Entry:
    """A stored entry: ``path`` of the payload (a variant's ``.tflite``), its ``meta`` (sha256,
    size_bytes, build_seconds, material), and whether this lookup found it already built."""

    key: str
    path: Path
    meta: Mapping[str, Any]
    hit: bool
    #: Found in the remote cache (and copied into the local one) by this lookup.
    remote: bool = False


class VariantCache:
    """The store. ``rebuild=True`` ignores existing entries (and overwrites them);
    ``remote``: the shared cache this one mirrors (``None``: local only)."""

    def __init__(self, root: Path, rebuild: bool = False, remote: RemoteCache | None = None) -> None:
        self.root = Path(root)
        self.rebuild = rebuild
        self.remote = remote
        self._created = time.time()
        #: Entries this process found in the local store, and built (here or in a worker).
        self.hits_local = 0
        self.built = 0

    def _dir(self, key: str) -> Path:
        return self.root / "variants" / key[:2] / key

    def lock(self, key: str) -> FileLock:
        from filelock import FileLock  # only a build takes the lock: a warm run never imports it

        (self.root / "locks").mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.root / "locks" / f"{key}.lock"))

    def lookup(self, key: str, payload: str = TFLITE) -> Entry | None:
        """The intact entry for ``key`` whose payload file is named ``payload``, or ``None``
        (missing, incomplete or corrupt); with a remote cache, a local miss is fetched from it
        (unless rebuilding)."""
        entry = self.local(key, payload)
        if entry is not None:
            self.hits_local += 1
            return entry
        if self.remote is None or self.rebuild:
            return None
        fetched = self.remote.fetch(key, payload)
        if fetched is None:
            return None
        data, meta = fetched
        stored = self.store(key, data, {k: v for k, v in meta.items() if k not in ("payload", "stored_at")}, payload)
        return replace(stored, hit=True, remote=True)

    def local(self, key: str, payload: str = TFLITE) -> Entry | None:
        """The intact local entry for ``key`` (the remote cache is not asked)."""
        d = self._dir(key)
        try:
            meta = json.loads((d / "meta.json").read_text())
            data = (d / payload).read_bytes()
        except (OSError, ValueError):
            return None
        if meta.get("sha256") != hashlib.sha256(data).hexdigest() or meta.get("size_bytes") != len(data):
            return None
        return Entry(key, d / payload, meta, hit=True)

    def store(self, key: str, data: bytes, meta: Mapping[str, Any], payload: str = TFLITE) -> Entry:
        d = self._dir(key)
        d.mkdir(parents=True, exist_ok=True)
        full = {**meta, "sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data), "stored_at": time.time()}
        # meta.json last: it names the payload's hash, so a torn write is seen as corrupt.
        (d / "meta.json").unlink(missing_ok=True)
        atomic_write_bytes(d / payload, data)
        atomic_write_json(d / "meta.json", full)
        return Entry(key, d / payload, full, hit=False)

    def get_or_build(self, key: str, build: Callable[[], tuple[bytes, Mapping[str, Any]]],
                     payload: str = TFLITE) -> Entry:
        """The entry for ``key``; built (once across processes) when absent or corrupt.

        ``build`` returns the bytes and extra metadata; its build time is recorded. The
        bytes are stored in a file named ``payload``.
        """
        if not self.rebuild:
            entry = self.lookup(key, payload)
            if entry is not None:
                return entry
        with self.lock(key):
            # Another worker may have built it while we waited for the lock.
            entry = self.lookup(key, payload)
            if entry is not None and (not self.rebuild or self._fresh(entry)):
                return entry
            start = time.perf_counter()
            data, meta = build()
            entry = self.store(key, data, {**meta, "build_seconds": time.perf_counter() - start}, payload)
        self.publish(entry, data)
        return entry

    def publish(self, entry: Entry, data: bytes | None = None) -> None:
        """Count ``entry`` as built (here, or by a worker into this store) and hand it to the
        remote cache, if there is one, to upload in the background (:meth:`flush` waits for
        the uploads); a failure turns the remote cache off, it never raises."""
        if entry.hit:
            return
        self.built += 1
        if self.remote is None:
            return
        try:
            payload = data if data is not None else entry.path.read_bytes()
        except OSError:
            return
        meta = {k: v for k, v in entry.meta.items() if k not in ("sha256", "size_bytes", "stored_at")}
        self.remote.publish_later(entry.key, payload, meta, entry.path.name)

    def flush(self) -> None:
        """Wait (bounded) for the remote cache's background uploads: at the end of a session."""
        if self.remote is not None:
            self.remote.flush()

    def _fresh(self, entry: Entry) -> bool:
        # With --edgeopt-rebuild, an entry stored since this cache was opened was built by a
        # sibling pytest-xdist worker of the same session: use it instead of building twice.
        return float(entry.meta.get("stored_at", 0)) >= self._created

    def clear(self) -> None:
        shutil.rmtree(self.root / "variants", ignore_errors=True)

