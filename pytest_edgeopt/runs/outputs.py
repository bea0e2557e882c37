"""What a session leaves behind: the saved run, the regression gate against a baseline run,
the CSV export and the HTML report. Plain Python; the plugin calls :func:`prepare` at
start-up (so a bad expression or a missing baseline is a usage error before anything runs)
and :func:`finish` at the end."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # pragma: no cover
    from pytest_edgeopt.session import EdgeoptSession


@dataclass(frozen=True, slots=True)
class OutputSettings:
    """Paths are absolute. ``compare`` is a saved-run reference (``last``, a name, a
    number, a path) or ``None``; ``tolerances`` are ``--edgeopt-compare-fail`` expressions."""

    storage: Path
    save: str | None = None
    autosave: bool = False
    csv: Path | None = None
    html: Path | None = None
    compare: str | None = None
    tolerances: tuple[str, ...] = ()

    @property
    def saving(self) -> bool:
        return bool(self.save or self.autosave)


@dataclass(frozen=True, slots=True)
class Gate:
    """The baseline run file (resolved before this session saves, so ``last`` means the
    previous run) and the parsed tolerances."""

    baseline: Path
    tolerances: tuple[Any, ...]


def prepare(settings: OutputSettings) -> Gate | None:
    """Validate the gate's settings. Raises ValueError with the reason (a malformed
    tolerance, a missing baseline run)."""
    if settings.compare is None:
        if settings.tolerances:
            raise ValueError("--edgeopt-compare-fail needs --edgeopt-compare[=NAME|last] to pick the baseline run")
        return None
    from pytest_edgeopt.runs.store import RunNotFound, resolve_run
    from pytest_edgeopt.runs.tolerance import parse_tolerances

    tolerances = tuple(parse_tolerances(settings.tolerances).values())
    try:
        baseline = resolve_run(settings.storage, settings.compare)
    except RunNotFound as exc:
        raise ValueError(f"--edgeopt-compare={settings.compare}: {exc}") from None
    return Gate(baseline, tolerances)


@dataclass(frozen=True, slots=True)
class Finished:
    """What :func:`finish` did: the comparison (or None), the saved run's path, the CSV's."""

    comparison: Any | None
    saved: Path | None
    csv: Path | None


def _remeasure(edge: EdgeoptSession) -> Callable[[Any], Any]:
    """A/B windows for a compared row: both model files timed on the row's target."""

    def remeasure(row: Any) -> Any:
        paths = [row.baseline_model_path, row.current_model_path]
        if not all(p and Path(p).exists() for p in paths):
            return None
        target = edge.find_target(row.target, row.device)
        if target is None:
            return None
        short = replace(edge.settings.latency, min_time_s=0.02, warmup=5)
        return tuple((lambda p=Path(p): target.latency(p, short).stats.samples_us) for p in paths)

    return remeasure


def finish(doc: dict[str, Any], settings: OutputSettings, gate: Gate | None, edge: EdgeoptSession,
           root: Path, progress: Callable[[str], None]) -> Finished:
    """Compare with the baseline (A/B re-measuring suspects while the targets are still open),
    then save the run and export it. Adds ``metadata`` and ``comparison`` to ``doc``."""
    from pytest_edgeopt.runs.store import run_metadata

    doc["metadata"] = run_metadata(root)
    comparison = None
    if gate is not None:
        from pytest_edgeopt.runs.abtest import confirm_latency
        from pytest_edgeopt.runs.gate import compare_runs
        from pytest_edgeopt.runs.store import load_run, noise_history

        progress(f"comparing with {gate.baseline.name}")
        comparison = compare_runs(load_run(settings.storage, gate.baseline), doc, gate.tolerances,
                                  history=noise_history(settings.storage, doc))
        comparison = confirm_latency(comparison, _remeasure(edge), progress=progress)
        doc["comparison"] = comparison.to_dict()
    saved = None
    if settings.saving:
        from pytest_edgeopt.runs.store import save_run

        saved = save_run(settings.storage, doc, settings.save, root=root)
    csv = None
    if settings.csv is not None:
        from pytest_edgeopt.runs.frame import export

        csv = export(doc, settings.csv)
    return Finished(comparison, saved, csv)


def history(settings: OutputSettings, limit: int = 20) -> list[dict[str, Any]] | None:
    """Earlier saved runs for the HTML report's trends (None when there are none)."""
    if not settings.storage.exists():
        return None
    from pytest_edgeopt.runs.store import load_run_docs

    docs = load_run_docs(settings.storage, limit=limit)
    return docs or None
