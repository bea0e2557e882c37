"""What a session leaves behind: the saved run, the regression gate against a baseline run,
the CSV export and the HTML report. Plain Python; the plugin calls :func:`prepare` at
start-up (so a bad expression or a missing baseline is a usage error before anything runs)
and :func:`finish` at the end."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from pytest_edgeopt.runs.gate import RowComparison
    from pytest_edgeopt.session import EdgeoptSession
    from pytest_edgeopt.variants.cache import VariantCache

#: Finds a model file by its variant cache key (``None``: not there). The local variant cache
#: is one (:func:`cache_locator`); a shared remote store can be another.
ModelLocator = Callable[[str], "Path | None"]


@dataclass(frozen=True, slots=True)
class OutputSettings:
    """Paths are absolute. ``compare`` is a saved-run reference (``last``, a name, a
    number, a path) or ``None``; ``tolerances`` are ``--edgeopt-compare-fail`` expressions;
    ``ab_budget_s``: seconds the gate's A/B re-measurements may take (``None``: no limit)."""

    storage: Path
    save: str | None = None
    autosave: bool = False
    csv: Path | None = None
    html: Path | None = None
    compare: str | None = None
    tolerances: tuple[str, ...] = ()
    ab_budget_s: float | None = None
    #: The shared history (an ``--edgeopt-storage`` URL); ``storage`` is then its local mirror.
    remote: str | None = None
    #: Shard ``(i, n)`` of a run split across CI jobs and the run id its parts share.
    shard: tuple[int, int] | None = None
    run_id: str | None = None

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
    if settings.remote is not None:
        from pytest_edgeopt.storage.location import StoreUnavailable, redact

        try:
            _remote_history(settings).pull()
        except (StoreUnavailable, OSError) as exc:
            if settings.compare is not None:
                raise ValueError(f"--edgeopt-compare: the saved runs in {redact(settings.remote)} cannot be read "
                                 f"({exc})") from None
    if settings.shard is not None and not settings.run_id:
        raise ValueError("--edgeopt-shard needs the id the shards of the run share: --edgeopt-run-id=ID, or "
                         "$EDGEOPT_RUN_ID / $GITHUB_RUN_ID / $CI_PIPELINE_ID")
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
        raise ValueError(f"--edgeopt-compare={settings.compare}: {exc}{_parts_note(settings)}") from None
    return Gate(baseline, tolerances)


@dataclass(frozen=True, slots=True)
class Finished:
    """What :func:`finish` did: the comparison (or None), the saved run's path, the CSV's."""

    comparison: Any | None
    saved: Path | str | None
    csv: Path | None


def cache_locator(cache: VariantCache) -> ModelLocator:
    """Model files by key from a variant cache (intact entries only)."""

    def locate(key: str) -> Path | None:
        entry = cache.lookup(key)
        return entry.path if entry is not None else None

    return locate


def model_file(path: str | None, key: str | None, locators: Sequence[ModelLocator]) -> Path | None:
    """A run's model file: its recorded ``path`` when it still exists (and, when a ``key`` is
    recorded, lies in that key's cache entry), else the first locator's file for ``key``."""
    if path and Path(path).exists() and (key is None or Path(path).parent.name == key):
        return Path(path)
    for locate in locators if key else ():
        found = locate(key)  # type: ignore[arg-type]
        if found is not None:
            return found
    return None


def _remeasure(edge: EdgeoptSession, locators: Sequence[ModelLocator]) -> Callable[[RowComparison], Any]:
    """A/B windows for a compared row: both model files timed on the row's target, or why not."""

    def remeasure(row: RowComparison) -> Any:
        base = model_file(row.baseline_model_path, row.baseline_model_key, locators)
        if base is None:
            return ("the baseline's model file is not in the variant cache" if row.baseline_model_key else
                    "the baseline's model file is gone and the baseline run recorded no cache key")
        cur = model_file(row.current_model_path, row.current_model_key, locators)
        if cur is None:
            return "this run's model file is gone"
        target = edge.find_target(row.target, row.device)
        if target is None:
            return f"no {row.target} device {row.device} in this session"
        short = replace(edge.settings.latency, min_time_s=0.02, warmup=5)
        return tuple((lambda p=p: target.latency(p, short).stats.samples_us) for p in (base, cur))

    return remeasure


def junit_properties(comparison: Any) -> list[tuple[str, str]]:
    """The gate's verdict as JUnit XML suite properties (``--junitxml``): ``edgeopt_gate``
    (``passed``/``failed``), ``edgeopt_gate_cannot_judge`` when the tolerance cannot be
    judged, and per judged latency row ``edgeopt_latency_change[KEY]``,
    ``edgeopt_latency_detectable[KEY]`` (minimum detectable effect, a fraction) and
    ``edgeopt_latency_evidence[KEY]``, KEY being ``model/variant/target/device``."""
    out = [("edgeopt_gate", "failed" if comparison.failed else "passed")]
    if comparison.cannot_judge:
        out.append(("edgeopt_gate_cannot_judge", comparison.cannot_judge))
    for r in comparison.rows:
        if r.detectable is None:
            continue
        key = "/".join(r.key)
        out += [(f"edgeopt_latency_change[{key}]", f"{r.latency.change:.4f}"),
                (f"edgeopt_latency_detectable[{key}]", f"{r.detectable:.4f}"),
                (f"edgeopt_latency_evidence[{key}]", str(r.evidence))]
    return out


def finish(doc: dict[str, Any], settings: OutputSettings, gate: Gate | None, edge: EdgeoptSession,
           root: Path, progress: Callable[[str], None],
           properties: Callable[[str, str], None] | None = None) -> Finished:
    """Compare with the baseline (A/B re-measuring suspects while the targets are still open),
    then save the run and export it. Adds ``metadata`` and ``comparison`` to ``doc``;
    ``properties`` receives :func:`junit_properties` (the JUnit XML report's suite properties)."""
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
        # With a shared cache (--edgeopt-cache-dir=s3://...) the lookup reaches it too: a baseline
        # built on another runner is downloaded for the A/B re-measurement.
        locators = [cache_locator(edge.builder.cache)]
        comparison = confirm_latency(comparison, _remeasure(edge, locators), budget_s=settings.ab_budget_s,
                                     progress=progress)
        doc["comparison"] = comparison.to_dict()
        if properties is not None:
            for name, value in junit_properties(comparison):
                properties(name, value)
    saved: Path | str | None = None
    if settings.shard is not None:
        from pytest_edgeopt.storage.shards import save_part

        saved = save_part(settings, doc, root, progress)
    elif settings.saving:
        saved = _save(settings, doc, root, progress)
    csv = None
    if settings.csv is not None:
        from pytest_edgeopt.runs.frame import export

        csv = export(doc, settings.csv)
    return Finished(comparison, saved, csv)


def _parts_note(settings: OutputSettings) -> str:
    """For a baseline that is a sharded run not assembled yet: which of its parts are missing."""
    from pytest_edgeopt.storage.shards import describe_parts, parts_store

    try:
        note = describe_parts(parts_store(settings), str(settings.compare).removeprefix("run-"))
    except (OSError, ValueError):
        return ""
    return f"; {note}" if note else ""


def _remote_history(settings: OutputSettings, progress: Callable[[str], None] = lambda msg: None) -> Any:
    from pytest_edgeopt.storage.history import RemoteHistory

    assert settings.remote is not None
    return RemoteHistory(settings.remote, settings.storage, progress)


def _save(settings: OutputSettings, doc: dict[str, Any], root: Path, progress: Callable[[str], None],
          name: str | None = None) -> Path | str:
    """Save the run in the storage directory, or in the shared history (falling back to the
    local ``.edgeopt/runs`` with a progress line when the store cannot be reached)."""
    from pytest_edgeopt.runs.store import DEFAULT_STORAGE, save_run

    name = name or settings.save
    if settings.remote is None:
        return save_run(settings.storage, doc, name, root=root)
    from pytest_edgeopt.storage.location import StoreUnavailable, redact

    try:
        return str(_remote_history(settings, progress).save(doc, name, root=root))
    except (StoreUnavailable, OSError) as exc:
        progress(f"cannot save the run in {redact(settings.remote)} ({exc}): saving it in {DEFAULT_STORAGE}")
        return save_run(root / DEFAULT_STORAGE, doc, name, root=root)


def history(settings: OutputSettings, limit: int = 20) -> list[dict[str, Any]] | None:
    """Earlier saved runs for the HTML report's trends (None when there are none)."""
    if not settings.storage.exists():
        return None
    from pytest_edgeopt.runs.store import load_run_docs

    docs = load_run_docs(settings.storage, limit=limit)
    return docs or None
