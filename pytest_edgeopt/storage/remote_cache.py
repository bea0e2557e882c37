"""The variant cache shared through a store (S3, GCS, a shared directory): read-through, with
the local cache as its mirror.

Layout under the store's root (``s3://bucket/prefix``)::

    variants/ab/KEY/meta.json       the entry: payload name, sha256, size, recipe (published last)
    variants/ab/KEY/data/SHA256     the payload's bytes, named by their hash

An entry is written once. The payload is uploaded first, under its own hash; ``meta.json`` is
then *created* (S3 ``If-None-Match: *``, ``os.link`` in a directory): that is the publish.
A reader goes by ``meta.json`` only, so an upload killed half-way leaves no visible entry (at
most an unreferenced data object, which ``edgeopt cache prune`` removes). Two runners that
build the same key at once both upload; one creates ``meta.json``, the other finds it there
and drops its own data object: one valid entry either way. A fetched payload whose hash or
size differs from ``meta.json`` (corrupt, truncated) is ignored, rebuilt locally and the
entry replaced.

Any failure to reach the store (network down, server gone, credentials refused) turns the
remote cache off for the rest of the run with one progress line: variants are then built and
cached locally as without a remote cache, and no test fails for it.

Uploads leave the build's critical path: :meth:`RemoteCache.publish_later` hands the finished
payload (its bytes in memory, complete) to one background thread, which uploads entries in
order while the run goes on; :meth:`RemoteCache.flush` (at the end of the session) waits for
them, at most :data:`FLUSH_TIMEOUT_S`. An upload that fails goes the way a failed
:meth:`RemoteCache.publish` goes (read-only or offline, one progress line); one left unfinished
at the deadline publishes nothing (its ``meta.json`` is written last). Progress lines from the
thread are said on the caller's thread (the terminal is not the thread's to write).

Opening the store leaves it too: :meth:`RemoteCache.at` takes the
:class:`~pytest_edgeopt.storage.opening.StoreOpening` the session started at its start-up
(importing s3fs, one warm-up request, on a background thread); the first lookup waits only
for what is left of it (``stats.open_wait_s``), and a failure to open turns the remote cache
off like any other failure to reach the store.
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from pytest_edgeopt.storage.location import Store, StoreUnavailable, redact
from pytest_edgeopt.storage.opening import StoreOpening, take

META = "meta.json"

#: Seconds the end of a session waits for background uploads before leaving them unpublished.
FLUSH_TIMEOUT_S = 120.0


def entry_prefix(key: str) -> str:
    return f"variants/{key[:2]}/{key}"


@dataclass(slots=True)
class TransferStats:
    """What the remote cache did this run: entries found there (``hits``), entries uploaded
    (``uploaded``), corrupt entries replaced (``repaired``), bytes downloaded and uploaded,
    why it was turned off (``offline``, ``None`` while it works) or stopped uploading (``read_only``)."""

    hits: int = 0
    uploaded: int = 0
    repaired: int = 0
    bytes_down: int = 0
    bytes_up: int = 0
    offline: str | None = None
    #: Why uploads stopped while reads go on (read-only credentials), ``None`` while they work.
    read_only: str | None = None
    #: Seconds the end of the session waited for background uploads (:meth:`RemoteCache.flush`).
    flush_wait_s: float = 0.0
    #: Background uploads still unfinished when the flush gave up (not published).
    abandoned: int = 0
    #: Seconds the first use of the store waited for it to open (0 when the session's
    #: start-up had opened it in time, see :mod:`pytest_edgeopt.storage.opening`).
    open_wait_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The counters as a plain dict (they travel from xdist workers to the controller)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def add(self, other: Mapping[str, Any]) -> None:
        """Sum another process's counters (:meth:`to_dict`) into these; its ``offline`` and
        ``read_only`` reasons are kept when these have none."""
        for name in ("hits", "uploaded", "repaired", "bytes_down", "bytes_up", "abandoned"):
            setattr(self, name, getattr(self, name) + int(other.get(name) or 0))
        self.flush_wait_s = max(self.flush_wait_s, float(other.get("flush_wait_s") or 0.0))
        self.open_wait_s = max(self.open_wait_s, float(other.get("open_wait_s") or 0.0))
        self.offline = self.offline or other.get("offline")
        self.read_only = self.read_only or other.get("read_only")


class _Uploader:
    """One daemon thread running jobs in order; :meth:`wait` bounds how long a caller waits
    for the queue to drain (a daemon thread never holds the interpreter's exit)."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._cond = threading.Condition()
        self._pending = 0
        self.thread: threading.Thread | None = None

    def submit(self, job: Callable[[], None]) -> None:
        with self._cond:
            self._pending += 1
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="edgeopt-upload", daemon=True)
                self.thread.start()
        self._jobs.put(job)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                job()
            finally:
                with self._cond:
                    self._pending -= 1
                    self._cond.notify_all()

    def wait(self, timeout_s: float) -> int:
        """Wait until every job ran, at most ``timeout_s`` seconds; the jobs still pending."""
        with self._cond:
            self._cond.wait_for(lambda: self._pending == 0, timeout_s)
            return self._pending


class RemoteCache:
    """Entries of the variant cache in ``store`` (open, or being opened in the background);
    ``progress`` gets a line when an entry is fetched, found corrupt, or the store becomes
    unreachable."""

    def __init__(self, store: Store | StoreOpening, progress: Callable[[str], None] = lambda msg: None) -> None:
        #: The background opening the store comes from (``None``: given open).
        self.opening = store if isinstance(store, StoreOpening) else None
        self._store = None if isinstance(store, StoreOpening) else store
        self._url = store.url
        self._open_lock = threading.Lock()
        self.progress = progress
        self.stats = TransferStats()
        self._corrupt: set[str] = set()
        self._published: set[str] = set()
        self._uploader = _Uploader()
        self._said: queue.SimpleQueue[str] = queue.SimpleQueue()  # lines from the upload thread

    def _say(self, message: str) -> None:
        """Give ``progress`` a line: now on the caller's thread, later from the upload thread."""
        if threading.current_thread() is self._uploader.thread:
            self._said.put(message)
            return
        self.say_pending()
        self.progress(message)

    def say_pending(self) -> None:
        """Say the lines the upload thread left (called on the session's thread)."""
        while True:
            try:
                message = self._said.get_nowait()
            except queue.Empty:
                return
            self.progress(message)

    @classmethod
    def at(cls, url: str, progress: Callable[[str], None] = lambda msg: None) -> RemoteCache:
        """The remote cache at ``url``, its store opened in the background (the opening the
        session's start-up began, see :func:`~pytest_edgeopt.storage.opening.take`)."""
        return cls(take(url), progress)

    @property
    def store(self) -> Store:
        """The open store; the first call waits for the background opening (the seconds go
        to ``stats.open_wait_s``) and raises StoreUnavailable when it failed."""
        if self._store is not None:
            return self._store
        assert self.opening is not None
        with self._open_lock:  # the session's thread and the upload thread may both ask first
            if self._store is None:
                start = time.perf_counter()
                try:
                    self.opening.wait()
                finally:
                    self.stats.open_wait_s += time.perf_counter() - start
                self._store = self.opening.result()
        return self._store

    @property
    def url(self) -> str:
        """The store's URL without credentials or query string (safe to print)."""
        return redact(self._url)

    @property
    def online(self) -> bool:
        return self.stats.offline is None

    def _offline(self, exc: BaseException) -> None:
        if self.stats.offline is None:
            self.stats.offline = str(exc) or type(exc).__name__
            self._say(f"remote cache {self.url} unreachable ({self.stats.offline}); "
                          "building and caching locally for the rest of the run")

    def _refused(self, exc: BaseException) -> None:
        """An upload failed: with read-only credentials (the store still answers) reads go
        on without uploads; when the store does not answer, it is off altogether."""
        try:
            next(iter(self.store.list("variants/00/")), None)  # one cheap request: can we still read?
        except Exception:
            self._offline(exc)
            return
        self.stats.read_only = str(exc) or type(exc).__name__
        self._say(f"remote cache {self.url}: uploads refused ({self.stats.read_only}); "
                      "reading from it, caching new builds locally only")

    def fetch(self, key: str, payload: str) -> tuple[bytes, dict[str, Any]] | None:
        """The payload bytes and metadata of the remote entry ``key``, checked against its
        hash; ``None`` when absent, corrupt (remembered: the next :meth:`publish` replaces
        it) or the store is unreachable."""
        self.say_pending()
        if not self.online:
            return None
        prefix = entry_prefix(key)
        try:
            raw = self.store.read(f"{prefix}/{META}")
            if raw is None:
                return None
            self.stats.bytes_down += len(raw)
            try:
                meta = json.loads(raw)
                sha, size = meta["sha256"], meta["size_bytes"]
            except (ValueError, KeyError, TypeError):
                self._corrupted(key, "unreadable meta.json")
                return None
            if meta.get("payload", payload) != payload:
                return None
            data = self.store.read(f"{prefix}/data/{sha}")
        except (StoreUnavailable, OSError) as exc:
            self._offline(exc)
            return None
        if data is None:
            self._corrupted(key, "its data object is missing")
            return None
        self.stats.bytes_down += len(data)
        if len(data) != size or hashlib.sha256(data).hexdigest() != sha:
            self._corrupted(key, f"{len(data)} bytes whose sha256 is not the {size} bytes meta.json names")
            return None
        self.stats.hits += 1
        return data, meta

    def _corrupted(self, key: str, why: str) -> None:
        self._corrupt.add(key)
        self._say(f"remote cache entry {key[:12]} is corrupt ({why}): building it again")

    def publish(self, key: str, data: bytes, meta: Mapping[str, Any], payload: str) -> bool:
        """Upload the entry ``key`` (once per process): the payload, then ``meta.json``
        created only if absent (replaced when the remote entry was found corrupt). ``True``
        when this call published it; ``False`` when another runner had, or the store is
        unreachable."""
        if not self.online or self.stats.read_only is not None or key in self._published:
            return False
        self._published.add(key)
        sha = hashlib.sha256(data).hexdigest()
        full = {**meta, "payload": payload, "sha256": sha, "size_bytes": len(data)}
        blob = json.dumps(full, sort_keys=True, default=str).encode()
        prefix = entry_prefix(key)
        try:
            self.store.write(f"{prefix}/data/{sha}", data)
            self.stats.bytes_up += len(data)
            if key in self._corrupt:
                self.store.write(f"{prefix}/{META}", blob)
                self.stats.repaired += 1
            elif not self.store.create(f"{prefix}/{META}", blob):
                # Another runner published first: its entry stands; ours is dropped unless it
                # is the same bytes (then the data object is the one its meta.json names).
                theirs = self.store.read(f"{prefix}/{META}")
                if theirs is None or json.loads(theirs).get("sha256") != sha:
                    self.store.delete(f"{prefix}/data/{sha}")
                return False
        except (StoreUnavailable, OSError, ValueError) as exc:
            self._refused(exc)
            return False
        self.stats.bytes_up += len(blob)
        self.stats.uploaded += 1
        return True

    def publish_later(self, key: str, data: bytes, meta: Mapping[str, Any], payload: str) -> None:
        """:meth:`publish` on the upload thread: returns at once; :meth:`flush` waits for it.
        ``data`` is the complete payload (the thread uploads it, then creates ``meta.json``)."""
        self.say_pending()
        if not self.online or self.stats.read_only is not None or key in self._published:
            return

        def job() -> None:
            try:
                self.publish(key, data, meta, payload)
            except Exception as exc:  # never let the thread die silently: count the store as gone
                self._offline(exc)

        self._uploader.submit(job)

    def flush(self, timeout_s: float = FLUSH_TIMEOUT_S) -> int:
        """Wait for the background uploads, at most ``timeout_s`` seconds (added to
        ``stats.flush_wait_s``); the uploads left unfinished (not published, counted in
        ``stats.abandoned``, with one progress line)."""
        start = time.perf_counter()
        left = self._uploader.wait(timeout_s)
        self.stats.flush_wait_s += time.perf_counter() - start
        self.say_pending()
        if left:
            self.stats.abandoned += left
            self.progress(f"remote cache {self.url}: {left} upload(s) unfinished after {timeout_s:.0f} s; "
                          "left unpublished (cached locally; another runner builds them)")
        return left


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def summary_line(url: str, s: TransferStats, hits_local: int, built: int) -> str:
    """The run's one line about the shared cache at ``url`` (redacted), in cache entries (the
    variants and each model's fidelity check): ``s`` the remote cache's counters (summed over
    xdist workers), ``hits_local`` and ``built`` the local cache's."""
    line = (f"edgeopt: remote cache {url}: {hits_local} hits local, {s.hits} hits remote, "
            f"{built} built, {s.uploaded} uploaded; bytes moved {_mb(s.bytes_down)} down, {_mb(s.bytes_up)} up")
    if s.open_wait_s >= 0.05:
        line += f"; waited {s.open_wait_s:.1f} s for the store to open"
    if s.flush_wait_s >= 0.05:
        line += f"; waited {s.flush_wait_s:.1f} s for uploads at the end"
    if s.abandoned:
        line += f"; {s.abandoned} uploads unfinished (not published)"
    if s.repaired:
        line += f"; {s.repaired} corrupt entries replaced"
    if s.read_only:
        line += f"; READ-ONLY: {s.read_only}"
    if s.offline:
        line += f"; OFFLINE since: {s.offline} (built locally)"
    return line
