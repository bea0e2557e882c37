"""The records of a session as they arrive, and the ``--edgeopt-json`` file kept current.

A record is a plain dict on the wire: it is made on the process that ran the item
(:func:`record_for_report`) and travels to the xdist controller with the report, where
:class:`Recorder` collects it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Prefixes dropped from a failure's message in a record's ``reason``.
_FAILURE_PREFIXES = ("pytest_edgeopt.budgets.rules.BudgetExceeded: ", "Failed: ")


def outcome_reason(outcome: str, longrepr: Any) -> str | None:
    """Why an item skipped or failed, from its report's ``outcome`` and ``longrepr``
    (``None`` for a pass)."""
    if outcome == "skipped" and isinstance(longrepr, tuple):
        return str(longrepr[2]).removeprefix("Skipped: ")
    if outcome == "failed":
        crash = getattr(longrepr, "reprcrash", None)
        reason = crash.message if crash is not None else str(longrepr)
        for prefix in _FAILURE_PREFIXES:
            reason = reason.removeprefix(prefix)
        return reason
    return None


def record_for_report(record: dict[str, Any], *, test: str, outcome: str, longrepr: Any,
                      build_wall_s: float, measurement: dict[str, Any] | None) -> dict[str, Any]:
    """The item's record as it goes out with its report: what the fixtures noted
    (variant, target, device, model, built), the outcome and its reason, the wall time the
    builder spent on the item in seconds, and the measurement (``Measurement.to_dict()``)."""
    return {**record, "test": test, "outcome": outcome, "reason": outcome_reason(outcome, longrepr),
            "build_wall_s": build_wall_s, "measurement": measurement}


class Recorder:
    """Collects the records that reach this process's reports, and keeps the JSON file at
    ``json_path`` (absolute; ``None``: no file, e.g. on an xdist worker) current while the
    session runs, each write atomic, so a killed run keeps what it measured. ``settings``
    gives the run's settings as a dict, for the document."""

    def __init__(self, json_path: Path | None, settings: Callable[[], dict[str, Any]]) -> None:
        self.json_path = json_path
        self.records: list[dict[str, Any]] = []
        self._settings = settings
        self._saved_at = 0.0
        self._save_cost = 0.0

    def add(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        # Every record is saved as it arrives; past a few hundred, rewriting the whole file
        # each time grows quadratically, so then at most a tenth of the run goes to saving.
        if len(self.records) <= 300 or time.monotonic() - self._saved_at >= 10 * self._save_cost:
            self.save()

    def document(self) -> dict[str, Any]:
        """The session so far as one run document."""
        from pytest_edgeopt.runs.writer import document

        return document(self.records, self._settings())

    def save(self, doc: dict[str, Any] | None = None) -> None:
        """Write the JSON (when asked for): ``doc``, or the session so far."""
        if self.json_path is None:
            return
        from pytest_edgeopt.runs.writer import write_json

        start = time.monotonic()
        write_json(self.json_path, doc if doc is not None else self.document())
        self._saved_at = time.monotonic()
        self._save_cost = self._saved_at - start
