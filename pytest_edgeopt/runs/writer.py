"""The session as one run document: :func:`document` (what ``--edgeopt-json``, saved runs
and the HTML report hold; see :mod:`pytest_edgeopt.runs.record`) and :func:`write_json`."""

from __future__ import annotations

import copy
import datetime as _dt
import functools
import platform
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pytest_edgeopt.atomic import atomic_write_json
from pytest_edgeopt.runs.recommend import recommend
from pytest_edgeopt.runs.record import SCHEMA_VERSION, RunRecord, TestRecord
from pytest_edgeopt.runs.rows import sorted_records, totals
from pytest_edgeopt.versions import tool_versions


@functools.cache
def environment() -> dict[str, Any]:
    """Python, platform and package versions (recorded with every saved result)."""
    from importlib import metadata

    packages = dict(tool_versions())
    for dist in ("pytest", "pytest-edgeopt", "numpy"):
        try:
            packages[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            packages[dist] = None
    return {"python": sys.version.split()[0], "platform": platform.platform(), "machine": platform.machine(),
            "packages": packages}


def run_record(records: Iterable[Mapping[str, Any]], settings: Mapping[str, Any]) -> RunRecord:
    """The session's session records (see :mod:`pytest_edgeopt.runs.rows`) as a
    :class:`~pytest_edgeopt.runs.record.RunRecord`, created now."""
    records = list(records)
    return RunRecord(
        schema=SCHEMA_VERSION,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        settings=dict(settings),
        environment=copy.deepcopy(environment()),
        totals=totals(records),
        recommendations=tuple(r.to_dict() for r in recommend(records)),
        measurements=tuple(TestRecord.from_dict(r) for r in sorted_records(records)),
    )


def document(records: Iterable[Mapping[str, Any]], settings: Mapping[str, Any]) -> dict[str, Any]:
    """The session as one JSON-ready document (:func:`run_record` as a dict)."""
    return run_record(records, settings).to_dict()


def write_json(path: Path, doc: RunRecord | Mapping[str, Any]) -> None:
    """The document, atomically (readers never see a half-written file)."""
    atomic_write_json(Path(path), doc.to_dict() if isinstance(doc, RunRecord) else doc, compact=True)
