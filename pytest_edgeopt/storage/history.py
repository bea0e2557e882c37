"""Saved runs kept in a store (``--edgeopt-storage s3://bucket/runs``), read through a local
mirror.

The store holds the same files a storage directory does (``NNNN_NAME_TIME.json.gz``, see
:mod:`pytest_edgeopt.runs.store`), and ``claims/NNNN``: the counter a run took. Saving
*creates* the claim first (create-only: two CI jobs saving at once get distinct numbers),
writes the run into the mirror, then uploads the file whole (a reader sees it entirely or not
at all). Reading pulls the files the mirror lacks (saved runs never change) and drops the
ones the store no longer has; everything else (``list``, ``compare``, the gate, noise
estimates, ``load_runs()``) reads the mirror with the functions of the storage directory.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_edgeopt.storage.location import Store, is_url, mirror_dir, open_store, redact

if TYPE_CHECKING:  # pragma: no cover
    from pytest_edgeopt.runs.record import RunRecord

#: Where mirrors of remote run histories live (under the rootdir, or the working directory).
MIRRORS = Path(".edgeopt") / "remote-runs"
CLAIMS = "claims"
_RUN_FILE = re.compile(r"^(?P<number>\d{4,})_.*\.json\.gz$")
_MAX_CLAIMS = 50


class RemoteHistory:
    """The saved runs at ``url``, mirrored in ``mirror``."""

    def __init__(self, url: str, mirror: Path, progress: Callable[[str], None] = lambda msg: None,
                 store: Store | None = None) -> None:
        self.url = url
        self.mirror = Path(mirror)
        self.progress = progress
        self.store = store if store is not None else open_store(url)

    @classmethod
    def at(cls, url: str, base: Path, progress: Callable[[str], None] = lambda msg: None) -> RemoteHistory:
        """The history at ``url`` with its mirror under ``base``/.edgeopt/remote-runs."""
        return cls(url, mirror_dir(Path(base) / MIRRORS, url), progress)

    def _numbers(self) -> tuple[set[int], dict[str, int]]:
        claimed: set[int] = set()
        files: dict[str, int] = {}
        for info in self.store.list():
            name = info.key.rsplit("/", 1)[-1]
            if info.key.startswith(f"{CLAIMS}/") and name.isdigit():
                claimed.add(int(name))
            elif "/" not in info.key and (m := _RUN_FILE.match(name)):
                files[name] = int(m["number"])
        return claimed | set(files.values()), files

    def pull(self) -> Path:
        """Bring the mirror up to date with the store; return the mirror directory.
        Raises :class:`~pytest_edgeopt.storage.location.StoreUnavailable`."""
        _, files = self._numbers()
        self.mirror.mkdir(parents=True, exist_ok=True)
        have = {p.name for p in self.mirror.iterdir() if _RUN_FILE.match(p.name)}
        missing = sorted(set(files) - have)
        for i, name in enumerate(missing, 1):
            self.progress(f"fetching saved run {name} from {redact(self.url)} ({i}/{len(missing)})")
            data = self.store.read(name)
            if data is not None:
                from pytest_edgeopt.atomic import atomic_write_bytes

                atomic_write_bytes(self.mirror / name, data)
        for name in have - set(files):  # a run pruned from the store, or a save that never got there
            (self.mirror / name).unlink(missing_ok=True)
        return self.mirror

    def save(self, doc: RunRecord | Mapping[str, Any], name: str | None = None, *, root: Path | None = None) -> str:
        """Save ``doc`` as the next run in the store (see the module docstring); return the
        saved object's URL (without credentials)."""
        from pytest_edgeopt.runs.store import save_run, validate_name

        if name is not None:
            validate_name(name)
        number = None
        for _ in range(_MAX_CLAIMS):
            taken, _files = self._numbers()
            candidate = max(taken, default=0) + 1
            if self.store.create(f"{CLAIMS}/{candidate:04d}", str(os.getpid()).encode()):
                number = candidate
                break
        if number is None:
            raise OSError(f"could not claim a run number in {redact(self.url)} after {_MAX_CLAIMS} tries")
        path = save_run(self.mirror, doc, name, root=root, number=number)
        self.store.write(path.name, path.read_bytes())
        return f"{redact(self.url).rstrip('/')}/{path.name}"


def local_storage(storage: str | os.PathLike[str], base: Path | None = None,
                  progress: Callable[[str], None] = lambda msg: None) -> Path:
    """A directory of saved runs for ``storage``: itself when it is a directory, else the
    mirror of the remote history (pulled now) under ``base`` (default: the working directory)."""
    text = str(storage)
    if not is_url(text):
        return Path(text)
    history = RemoteHistory.at(text, base or Path.cwd(), progress)
    return history.pull()
