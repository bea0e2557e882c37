"""One run split across N CI jobs (``--edgeopt-shard=I/N``, a GitHub Actions matrix or GitLab
``parallel``), saved as parts under one run id and read back as one run.

Splitting: the inventory's devices go round-robin to the shards in inventory order
(:func:`pytest_edgeopt.farm.inventory.device_shards`), so each job drives its own phones and
Edge TPUs; every other item (host CPU, build-only) goes by a stable hash of its variant, so a
variant is built by one job (the others find it in the shared cache). The split depends only
on the collected items, the inventory and N: every job computes the same one.

Parts: shard I saves ``parts/RUN_ID/III-of-NNN.json.gz`` in the run storage (the directory or
the ``--edgeopt-storage`` URL). The job that finds all N parts there *creates*
``parts/RUN_ID/assembled`` (one job wins even when two finish together) and saves the
merged run as an ordinary saved run, named by ``--edgeopt-save`` or ``run-RUN_ID``: the gate,
``edgeopt report`` and ``load_runs()`` then read it as any other run. Until then
:func:`describe_parts` says which parts are missing.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_edgeopt.storage.location import DirectoryStore, Store, open_store

if TYPE_CHECKING:  # pragma: no cover
    from pytest_edgeopt.runs.outputs import OutputSettings

_RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: Environment variables a run id is taken from, in order (one per CI pipeline run).
RUN_ID_VARIABLES = ("EDGEOPT_RUN_ID", "GITHUB_RUN_ID", "CI_PIPELINE_ID")
PARTS = "parts"
ASSEMBLED = "assembled"


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard ``index`` (1-based) of ``count``."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(value: str) -> Shard:
    """``I/N`` -> :class:`Shard`; ValueError unless 1 <= I <= N."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", value)
    if not m:
        raise ValueError(f"{value!r} is not a shard: use I/N, e.g. 1/2 (shard 1 of 2)")
    index, count = int(m[1]), int(m[2])
    if not 1 <= index <= count:
        raise ValueError(f"shard {value!r}: I must be between 1 and N")
    return Shard(index, count)


def validate_run_id(value: str) -> str:
    if not _RUN_ID_RE.match(value):
        raise ValueError(f"invalid run id {value!r}: use 1-64 letters, digits, '.', '_' or '-'")
    return value


def run_id_from_env() -> str | None:
    """The run id CI gives every job of a pipeline run (see :data:`RUN_ID_VARIABLES`)."""
    for name in RUN_ID_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value:
            attempt = os.environ.get("GITHUB_RUN_ATTEMPT", "").strip() if name == "GITHUB_RUN_ID" else ""
            value = f"{value}.{attempt}" if attempt and attempt != "1" else value
            return re.sub(r"[^A-Za-z0-9._-]", "-", value)[:64].lstrip("._-") or None
    return None


def stable_shard(key: str, count: int) -> int:
    """The 1-based shard of ``key``: the same in every process and on every machine."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:12], 16) % count + 1


def item_shard(variant: str | None, device_group: str | None, device_shards: Mapping[str, int], nodeid: str,
               count: int) -> int:
    """The shard an item belongs to: its device's (an inventory device), else its variant's,
    else its node id's."""
    if device_group is not None:
        return device_shards.get(device_group) or stable_shard(device_group, count)
    return stable_shard(variant if variant is not None else nodeid, count)


def select(items: Sequence[Any], shard: Shard, inventory: Any, device_targets: Mapping[str, str]) -> tuple[list[Any], list[Any]]:
    """``items`` (pytest items) split into this shard's and the others' (see the module docstring)."""
    from pytest_edgeopt.farm.inventory import device_group, device_shards

    shards = device_shards(inventory, shard.count) if inventory is not None else {}
    mine: list[Any] = []
    others: list[Any] = []
    for item in items:
        case = getattr(getattr(item, "callspec", None), "params", {}).get("edgeopt_case")
        group = device_group(item.nodeid, inventory, device_targets) if inventory is not None else None
        variant = getattr(case, "variant", None)
        which = item_shard(variant, group, shards, item.nodeid, shard.count)
        (mine if which == shard.index else others).append(item)
    return mine, others


# -- parts --------------------------------------------------------------------------------------
def part_key(run_id: str, index: int, count: int) -> str:
    return f"{PARTS}/{run_id}/{index:03d}-of-{count:03d}.json.gz"


def parts_store(settings: OutputSettings) -> Store:
    """Where the parts of sharded runs are: the shared history's store, or the runs directory."""
    return open_store(settings.remote) if settings.remote else DirectoryStore(settings.storage)


def parts_present(store: Store, run_id: str) -> tuple[int | None, set[int]]:
    """The part count the parts of ``run_id`` name (``None``: no part yet) and the indexes there."""
    count, found = None, set()
    for info in store.list(f"{PARTS}/{run_id}/"):
        m = re.fullmatch(r"(\d+)-of-(\d+)\.json\.gz", info.key.rsplit("/", 1)[-1])
        if m:
            found.add(int(m[1]))
            count = int(m[2])
    return count, found


def describe_parts(store: Store, run_id: str) -> str | None:
    """``run X: parts 1, 3 of 4 saved; missing 2, 4`` (``None``: no part of ``run_id``)."""
    count, found = parts_present(store, run_id)
    if count is None:
        return None
    missing = sorted(set(range(1, count + 1)) - found)
    if not missing:
        return f"run {run_id}: all {count} parts saved"
    return (f"run {run_id}: parts {', '.join(map(str, sorted(found)))} of {count} saved; "
            f"missing {', '.join(map(str, missing))} (their jobs have not saved yet, or failed)")


def merge_parts(docs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One run document from the parts' documents (in shard order): measurements one after
    the other, totals added up, the first part's settings, environment and metadata, with
    each part's host and runner under ``metadata.shard.parts``."""
    first = docs[0]
    totals: dict[str, Any] = {}
    for d in docs:
        for k, v in (d.get("totals") or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                totals[k] = totals.get(k, 0) + v
            else:
                totals.setdefault(k, v)
    meta = dict(first.get("metadata") or {})
    shard = dict(meta.get("shard") or {})
    shard["parts"] = [{"index": (d.get("metadata") or {}).get("shard", {}).get("index"),
                       "host": (d.get("metadata") or {}).get("host"),
                       "runner": (d.get("metadata") or {}).get("runner")} for d in docs]
    meta["shard"] = shard
    out = {k: v for k, v in first.items() if k not in ("run", "devices", "comparison")}
    out.update(measurements=[m for d in docs for m in d.get("measurements") or []], totals=totals, metadata=meta,
               created=min(str(d.get("created")) for d in docs))
    return out


def save_part(settings: OutputSettings, doc: dict[str, Any], root: Path, progress: Callable[[str], None]) -> str:
    """Save this job's part of the run; when it completes the run, save the merged run.
    Returns where the part (or the merged run) went."""
    from pytest_edgeopt.runs.outputs import _save

    assert settings.shard is not None and settings.run_id is not None
    index, count = settings.shard
    run_id = settings.run_id
    doc.setdefault("metadata", {})["shard"] = {"index": index, "count": count, "run_id": run_id}
    store = parts_store(settings)
    text = json.dumps(doc, separators=(",", ":"), default=str, allow_nan=True)
    store.write(part_key(run_id, index, count), gzip.compress(text.encode(), compresslevel=1, mtime=0))
    n, found = parts_present(store, run_id)
    where = f"part {index}/{count} of run {run_id}"
    if n != count or found != set(range(1, count + 1)):
        progress(describe_parts(store, run_id) or where)
        return f"{settings.remote or settings.storage}/{part_key(run_id, index, count)} ({where})"
    if not store.create(f"{PARTS}/{run_id}/{ASSEMBLED}", str(index).encode()):
        return f"{where}; another job assembled the run"
    docs = []
    for i in range(1, count + 1):
        data = store.read(part_key(run_id, i, count))
        if data is None:
            raise OSError(f"part {i}/{count} of run {run_id} vanished while assembling it")
        docs.append(json.loads(gzip.decompress(data)))
    merged = merge_parts(docs)
    name = settings.save or (f"run-{run_id}" if not re.match(r"^[A-Za-z]", run_id) else run_id)
    saved = _save(settings, merged, root, progress, name=name)
    progress(f"all {count} parts of run {run_id} are saved: assembled as {saved}")
    return str(saved)
