"""Where shared things live: a local directory or a URL (``s3://bucket/prefix``,
``gs://bucket/prefix``, ``file:///shared/dir``), as a :class:`Store` of immutable objects.

Credentials and the endpoint come the standard way of each backend; nothing here is
project-specific. For S3 that is the AWS environment variables and config files, including
``AWS_ENDPOINT_URL`` for an S3-compatible server (MinIO, moto): s3fs 2026.9 with aiobotocore
3.10 honours it (checked against moto's server, see tests/test_remote_cache.py).

A :class:`Store` is a flat key space of byte objects with the three operations a shared cache
needs: read, write whole (a reader sees the old object or the new one, never part of it), and
*create* (write only if absent: what publishing a cache entry or numbering a saved run needs
when two CI jobs race). S3 gives all three natively (a PUT is atomic; ``If-None-Match: *``
makes it create-only); a directory gets them from ``os.replace`` and ``os.link``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from pytest_edgeopt.atomic import atomic_write_bytes

_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")

#: The package each protocol needs, and the extra that installs it.
BACKENDS = {"s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3"), "gs": ("gcsfs", "gcs"), "gcs": ("gcsfs", "gcs")}

#: Seconds to wait for a connection / a read before the store counts as unreachable.
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0


class StoreUnavailable(OSError):
    """The store cannot be reached or refused an operation (network down, no credentials)."""


def is_url(value: str | os.PathLike[str]) -> bool:
    """Whether ``value`` is a URL (``scheme://...``) rather than a local path."""
    return bool(_URL_RE.match(str(value)))


def redact(url: str) -> str:
    """``url`` as it may be shown: without user, password and query string (where signed URLs
    and tokens would be)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def check_location(value: str) -> str:
    """``value`` if it names a usable location, else ``ValueError`` saying what to install
    or fix (the option converter of ``--edgeopt-cache-dir`` and ``--edgeopt-storage``)."""
    if not is_url(value):
        return value
    parts = urlsplit(value)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if not parts.path:
            raise ValueError(f"{value!r}: a file:// URL needs a path (file:///shared/edgeopt)")
        return value
    if not parts.netloc:
        raise ValueError(f"{redact(value)!r}: the URL names no bucket ({scheme}://BUCKET/PREFIX)")
    if importlib.util.find_spec("fsspec") is None:
        extra = BACKENDS.get(scheme, ("", "s3"))[1]
        raise ValueError(f"{redact(value)}: storage URLs need fsspec: pip install pytest-edgeopt[{extra}]")
    if scheme in BACKENDS:
        package, extra = BACKENDS[scheme]
        if importlib.util.find_spec(package) is None:
            raise ValueError(f"{redact(value)}: {scheme}:// needs {package}: pip install pytest-edgeopt[{extra}]")
    else:
        from fsspec.registry import known_implementations

        if scheme not in known_implementations:
            raise ValueError(f"{redact(value)}: fsspec knows no {scheme}:// filesystem")
    return value


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """An object of a store: its ``key`` (relative to the store's root), ``size_bytes`` and
    ``modified`` (seconds since the epoch)."""

    key: str
    size_bytes: int
    modified: float


class Store(Protocol):
    """A key space of immutable byte objects (keys use ``/``)."""

    url: str

    def read(self, key: str) -> bytes | None:
        """The object's bytes, ``None`` when absent. Raises StoreUnavailable."""

    def write(self, key: str, data: bytes) -> None:
        """Write the whole object (readers see the old one or the new one)."""

    def create(self, key: str, data: bytes) -> bool:
        """Write the object only if absent; ``False`` when it already exists."""

    def delete(self, key: str) -> None:
        """Remove the object (absent is fine)."""

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object under ``prefix`` (recursively)."""


class DirectoryStore:
    """A store in a local or shared directory (``file://`` URLs and plain paths)."""

    def __init__(self, root: Path, url: str | None = None) -> None:
        self.root = Path(root)
        self.url = url or self.root.resolve().as_uri()

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*key.split("/"))

    def read(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def write(self, key: str, data: bytes) -> None:
        atomic_write_bytes(self._path(key), data)

    def create(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
        atomic_write_bytes(tmp, data)
        try:
            os.link(tmp, path)  # fails when the object exists: the one atomic create-only on POSIX
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
        return True

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return
        for path in base.rglob("*"):
            if path.is_file() and not path.name.startswith("."):
                st = path.stat()
                yield ObjectInfo(path.relative_to(self.root).as_posix(), st.st_size, st.st_mtime)


class FsspecStore:
    """A store on an fsspec filesystem (S3 through s3fs, GCS through gcsfs). Every failure to
    reach it is raised as :class:`StoreUnavailable`."""

    def __init__(self, url: str) -> None:
        import fsspec

        parts = urlsplit(url)
        self.protocol = parts.scheme.lower()
        self.root = f"{parts.netloc}{parts.path}".rstrip("/")
        self.url = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
        self.fs: Any = fsspec.filesystem(self.protocol, skip_instance_cache=True, use_listings_cache=False,
                                         **_backend_options(self.protocol))
        if self.protocol in ("s3", "s3a"):
            self.fs.retries = 2  # s3fs's own retry loop (5 by default, with back-off) around botocore's

    def _p(self, key: str) -> str:
        return f"{self.root}/{key}" if key else self.root

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (FileNotFoundError, FileExistsError):
            raise
        except Exception as exc:  # botocore, aiohttp and OSError subclasses: the store is unreachable
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise StoreUnavailable(f"{what} failed: {type(exc).__name__}: {first[:160]}") from exc

    def read(self, key: str) -> bytes | None:
        # One GET: by default s3fs first asks an object's size (a HEAD and, for an absent key,
        # a LIST for a directory of that name), three requests where a cache miss needs one.
        single = {"max_concurrency": 1} if self.protocol in ("s3", "s3a") else {}
        try:
            return self._call(f"reading {key}", self.fs.cat_file, self._p(key), **single)  # type: ignore[no-any-return]
        except FileNotFoundError:
            return None

    def write(self, key: str, data: bytes) -> None:
        self._call(f"writing {key}", self.fs.pipe_file, self._p(key), data)

    def create(self, key: str, data: bytes) -> bool:
        try:
            self._call(f"creating {key}", self.fs.pipe_file, self._p(key), data, mode="create")
        except FileExistsError:
            return False
        return True

    def delete(self, key: str) -> None:
        try:
            self._call(f"deleting {key}", self.fs.rm_file, self._p(key))
        except FileNotFoundError:
            pass

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        try:
            found = self._call(f"listing {prefix or '/'}", self.fs.find, self._p(prefix), detail=True)
        except FileNotFoundError:
            return
        for name, info in sorted(found.items()):
            if info.get("type") != "file":
                continue
            modified = info.get("LastModified") or info.get("mtime") or info.get("updated")
            yield ObjectInfo(name[len(self.root) + 1:], int(info.get("size") or 0), _epoch(modified))


def _epoch(value: Any) -> float:
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        import datetime as dt

        try:
            return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    return 0.0


def _backend_options(protocol: str) -> dict[str, Any]:
    """Short timeouts and few retries: a store that is down must cost seconds, not minutes
    (the run then goes on without it). Credentials and endpoint are left to the backend."""
    if protocol in ("s3", "s3a"):
        return {"config_kwargs": {"connect_timeout": CONNECT_TIMEOUT_S, "read_timeout": READ_TIMEOUT_S,
                                                "retries": {"max_attempts": 2, "mode": "standard"}}}
    return {}


def open_store(location: str | os.PathLike[str]) -> Store:
    """The store at ``location``: a URL (checked with :func:`check_location`, ValueError when
    its backend is missing) or a local directory."""
    text = str(location)
    if not is_url(text):
        return DirectoryStore(Path(text))
    check_location(text)
    parts = urlsplit(text)
    if parts.scheme.lower() == "file":
        return DirectoryStore(Path(parts.path), url=text)
    return FsspecStore(text)


def mirror_dir(base: Path, url: str) -> Path:
    """The local directory that mirrors ``url`` under ``base`` (one per URL)."""
    import hashlib

    parts = urlsplit(url)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{parts.scheme}_{parts.netloc}{parts.path}").strip("_")[:60]
    return Path(base) / f"{slug}-{hashlib.sha256(redact(url).encode()).hexdigest()[:8]}"
