"""The saved-run schema as types: :class:`RunRecord` and the records it holds.

A run document (what ``--edgeopt-json`` writes, what a saved run holds, what the HTML report,
the gate, the frame and the CLI read) is::

    schema          SCHEMA_VERSION (an int)
    run             saved runs only: RunSummary (number, name, saved time, commit, totals, p50s)
    metadata        saved runs (and sessions that compared): RunMetadata (git, machine, versions)
    devices         saved runs only: each (target, device) measured on, with its conditions
    created         UTC ISO time the document was written
    settings        the session's settings (``latency`` among them)
    environment     Python, platform and package versions of the session
    totals          counts over the session (see :func:`pytest_edgeopt.runs.rows.totals`)
    recommendations which variant to ship (:class:`pytest_edgeopt.runs.recommend.Recommendation`)
    measurements    one TestRecord per test item
    comparison      sessions that compared: the gate's verdict

Every type has one ``to_dict``/``from_dict``. ``from_dict`` is tolerant: a missing key is
``None`` (hand-made and older documents lack some), a key this version does not know is
kept in ``unknown`` and written back, so ``from_dict(d).to_dict() == d`` for every document
this package writes. Values are kept as written (never recomputed), so a round trip changes
nothing. A document of a newer schema is refused with :class:`SchemaError`.

The ``target/device`` label every table and message uses is :func:`where`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from pytest_edgeopt.labels import where
from pytest_edgeopt.profile import Profile

#: Version of the run document (``--edgeopt-json``, saved runs). Documents of versions
#: ``OLDEST_SCHEMA..SCHEMA_VERSION`` are read.
SCHEMA_VERSION = 1
#: The oldest version this package reads (version 1 is the first one ever written; its early
#: files lack ``recommendations`` and ``model_path``, which read as empty).
OLDEST_SCHEMA = 1

_EMPTY: Mapping[str, Any] = {}


class SchemaError(ValueError):
    """The document's ``schema`` is missing, not an int, or newer than this package reads."""


def check_schema(schema: Any) -> int:
    """``schema`` if this package reads it, else :class:`SchemaError` saying what to do."""
    if not isinstance(schema, int) or isinstance(schema, bool) or schema > SCHEMA_VERSION:
        raise SchemaError(f"schema {schema!r} is not one this pytest-edgeopt reads (<= {SCHEMA_VERSION}); "
                          "upgrade pytest-edgeopt")
    if schema < OLDEST_SCHEMA:
        raise SchemaError(f"schema {schema!r} is older than this pytest-edgeopt reads (>= {OLDEST_SCHEMA})")
    return schema


# -- labels -----------------------------------------------------------------------------------------
# -- helpers ----------------------------------------------------------------------------------------
_T = TypeVar("_T")


def _known(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls) if f.name != "unknown")


def _unknown(cls: type, d: Mapping[str, Any], also: Iterable[str] = ()) -> dict[str, Any]:
    known = set(_known(cls)) | set(also)
    return {k: v for k, v in d.items() if k not in known}


def _opt(make: Any, value: Any) -> Any:
    return None if value is None else make(value)


def _emit(values: Mapping[str, Any], present: frozenset[str] | None, unknown: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` limited to the keys the source dict had (all of them for a record made in
    code, ``present=None``), then the keys this version does not know."""
    return {**{k: v for k, v in values.items() if present is None or k in present}, **unknown}


# -- one observation --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """Where it ran: ``kind`` (host, android, edgetpu), ``id`` (serial...), ``label``
    (what tables show) and ``details`` (identity: model, ABI, ...)."""

    kind: str | None = None
    id: str | None = None
    label: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    unknown: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """``label``, else ``id``, else ``host`` (see :func:`device_label`)."""
        return self.label or self.id or "host"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "id": self.id, "label": self.label, "details": dict(self.details),
                **self.unknown}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DeviceRecord:
        return cls(d.get("kind"), d.get("id"), d.get("label"), dict(d.get("details") or {}), _unknown(cls, d))


@dataclass(frozen=True, slots=True)
class LatencyRecord:
    """Raw steady-state samples in microseconds, and the statistics written with them
    (milliseconds; ``None`` when a document carries the samples only)."""

    samples_us: tuple[float, ...] = ()
    count: int | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    mean_ms: float | None = None
    stdev_ms: float | None = None
    cv: float | None = None
    min_ms: float | None = None
    unknown: Mapping[str, Any] = field(default_factory=dict)

    _STATS = ("count", "p50_ms", "p90_ms", "mean_ms", "stdev_ms", "cv", "min_ms")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"samples_us": list(self.samples_us)} if self.samples_us else {}
        out.update({k: getattr(self, k) for k in self._STATS if getattr(self, k) is not None})
        return {**out, **self.unknown}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LatencyRecord:
        return cls(tuple(d.get("samples_us") or ()), count=d.get("count"), p50_ms=d.get("p50_ms"),
                   p90_ms=d.get("p90_ms"), mean_ms=d.get("mean_ms"), stdev_ms=d.get("stdev_ms"), cv=d.get("cv"),
                   min_ms=d.get("min_ms"), unknown=_unknown(cls, d))


@dataclass(frozen=True, slots=True)
class AccuracyRecord:
    """The model's ``metric`` (higher is better), its ``value``, on how many eval ``samples``."""

    metric: str | None = None
    value: float | None = None
    samples: int | None = None
    unknown: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "value": self.value, "samples": self.samples, **self.unknown}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AccuracyRecord:
        return cls(d.get("metric"), d.get("value"), d.get("samples"), _unknown(cls, d))


#: Keys of an observation's dict (see :class:`ObservationRecord`), in the order written.
_OBSERVATION_KEYS = ("model", "variant", "target", "device", "size_bytes", "compressed_size_bytes", "latency",
                     "accuracy", "init_ms", "first_inference_ms", "build_seconds", "from_cache", "recipe", "extras",
                     "profile")


@dataclass(frozen=True, slots=True)
class ObservationRecord:
    """One variant on one target (:class:`pytest_edgeopt.results.Observation` as saved):
    sizes in bytes (gzip -9 for ``compressed_size_bytes``), times in ms (``build_seconds``
    in s), the build ``recipe``, and ``extras``: open-ended per-target figures (delegation,
    memory, conditions, Edge TPU analysis)."""

    model: str | None = None
    variant: str | None = None
    target: str | None = None
    device: DeviceRecord = field(default_factory=DeviceRecord)
    size_bytes: int | None = None
    compressed_size_bytes: int | None = None
    latency: LatencyRecord | None = None
    accuracy: AccuracyRecord | None = None
    init_ms: float | None = None
    first_inference_ms: float | None = None
    build_seconds: float | None = None
    from_cache: bool | None = None
    recipe: Mapping[str, Any] = field(default_factory=dict)
    extras: Mapping[str, Any] = field(default_factory=dict)
    #: Warm-up, memory, placement and per-op figures (:class:`pytest_edgeopt.profile.Profile`).
    profile: Profile | None = None
    unknown: Mapping[str, Any] = field(default_factory=dict)
    #: Keys the source dict had (``None``: all), so a hand-made or partial dict round-trips.
    present: frozenset[str] | None = None

    @property
    def device_name(self) -> str:
        return self.device.name

    @property
    def key(self) -> tuple[str, str, str, str]:
        """(model, variant, target, device): how runs are matched."""
        return (str(self.model), str(self.variant), str(self.target), self.device.name)

    @property
    def samples_us(self) -> tuple[float, ...]:
        return self.latency.samples_us if self.latency else ()

    def to_dict(self) -> dict[str, Any]:
        values = {"model": self.model, "variant": self.variant, "target": self.target,
                  "device": self.device.to_dict(), "size_bytes": self.size_bytes,
                  "compressed_size_bytes": self.compressed_size_bytes,
                  "latency": _opt(LatencyRecord.to_dict, self.latency),
                  "accuracy": _opt(AccuracyRecord.to_dict, self.accuracy), "init_ms": self.init_ms,
                  "first_inference_ms": self.first_inference_ms, "build_seconds": self.build_seconds,
                  "from_cache": self.from_cache, "recipe": dict(self.recipe), "extras": dict(self.extras),
                  "profile": _opt(Profile.to_dict, self.profile)}
        return _emit(values, self.present, self.unknown)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], also: Iterable[str] = ()) -> ObservationRecord:
        dev = d.get("device")
        return cls(
            model=d.get("model"), variant=d.get("variant"), target=d.get("target"),
            device=DeviceRecord(label=dev) if isinstance(dev, str) else DeviceRecord.from_dict(dev or _EMPTY),
            size_bytes=d.get("size_bytes"), compressed_size_bytes=d.get("compressed_size_bytes"),
            latency=_opt(LatencyRecord.from_dict, d.get("latency")),
            accuracy=_opt(AccuracyRecord.from_dict, d.get("accuracy")),
            init_ms=d.get("init_ms"), first_inference_ms=d.get("first_inference_ms"),
            build_seconds=d.get("build_seconds"), from_cache=d.get("from_cache"),
            recipe=dict(d.get("recipe") or {}), extras=dict(d.get("extras") or {}),
            profile=_opt(Profile.from_dict, d.get("profile")),
            unknown={k: v for k, v in d.items() if k not in _OBSERVATION_KEYS and k not in set(also)},
            present=None if all(k in d for k in _OBSERVATION_KEYS) else frozenset(d),
        )


# -- one measurement: the variant against fp32 -----------------------------------------------------------
@dataclass(frozen=True, slots=True)
class BudgetOutcomeRecord:
    """One budget check: the ``budgets`` asked for, the ``violations`` (each with measured
    value, budget and message), and whether it ``passed``."""

    budgets: Mapping[str, Any] = field(default_factory=dict)
    violations: tuple[Mapping[str, Any], ...] = ()
    passed: bool | None = None
    unknown: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"budgets": dict(self.budgets), "violations": [dict(v) for v in self.violations],
                "passed": self.passed, **self.unknown}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BudgetOutcomeRecord:
        return cls(dict(d.get("budgets") or {}), tuple(d.get("violations") or ()), d.get("passed"),
                   _unknown(cls, d))


_MEASUREMENT_KEYS = ("baseline", "derived", "budget_checks", "model_path")


@dataclass(frozen=True, slots=True)
class MeasurementRecord:
    """A variant's observation and fp32's on the same target
    (:class:`pytest_edgeopt.measurement.Measurement` as saved): ``derived`` holds the flat
    figures tables show (``size_reduction``, ``speedup``, ``accuracy_drop``, ``p50_ms``...),
    ``budget_checks`` the budget outcomes, ``model_path`` the variant's ``.tflite``."""

    observation: ObservationRecord
    baseline: ObservationRecord | None = None
    derived: Mapping[str, Any] | None = None
    budget_checks: tuple[BudgetOutcomeRecord, ...] = ()
    model_path: str | None = None
    #: Keys of :data:`_MEASUREMENT_KEYS` the source dict had (older files lack ``model_path``).
    present: frozenset[str] = frozenset(_MEASUREMENT_KEYS)

    # The observation's fields, for readers that do not care which half holds them.
    @property
    def model(self) -> str | None:
        return self.observation.model

    @property
    def variant(self) -> str | None:
        return self.observation.variant

    @property
    def target(self) -> str | None:
        return self.observation.target

    @property
    def device(self) -> DeviceRecord:
        return self.observation.device

    @property
    def key(self) -> tuple[str, str, str, str]:
        return self.observation.key

    @property
    def budgets_passed(self) -> bool | None:
        """Every budget check passed (``None``: none was made)."""
        return all(c.passed for c in self.budget_checks) if self.budget_checks else None

    def to_dict(self) -> dict[str, Any]:
        values = {"baseline": _opt(ObservationRecord.to_dict, self.baseline),
                  "derived": None if self.derived is None else dict(self.derived),
                  "budget_checks": [c.to_dict() for c in self.budget_checks], "model_path": self.model_path}
        return {**self.observation.to_dict(), **{k: v for k, v in values.items() if k in self.present}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MeasurementRecord:
        return cls(
            observation=ObservationRecord.from_dict(d, also=_MEASUREMENT_KEYS),
            baseline=_opt(ObservationRecord.from_dict, d.get("baseline")),
            derived=None if d.get("derived") is None else dict(d["derived"]),
            budget_checks=tuple(BudgetOutcomeRecord.from_dict(c) for c in d.get("budget_checks") or ()),
            model_path=d.get("model_path"),
            present=frozenset(k for k in _MEASUREMENT_KEYS if k in d),
        )


# -- one test item ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TestRecord:
    """One test item of the session: node id ``test``, ``outcome`` (passed, failed,
    skipped), ``model``, ``variant``, ``target``, ``device`` (label), ``reason`` (skip or
    failure text), ``build_wall_s`` (build phase wall time, s), ``built`` (sizes and recipe
    of the variant when it was built), ``measurement`` (``None`` when nothing was measured) and
    ``model_key``: the variant cache key of the model file it built and timed
    (:attr:`pytest_edgeopt.variants.builder.BuiltVariant.key`; ``None`` in older files), by
    which a later session finds that file for an A/B re-measurement."""

    __test__ = False  # not a pytest test class

    test: str | None = None
    outcome: str | None = None
    model: str | None = None
    variant: str | None = None
    target: str | None = None
    device: str | None = None
    reason: str | None = None
    build_wall_s: float | None = None
    built: Mapping[str, Any] | None = None
    measurement: MeasurementRecord | None = None
    model_key: str | None = None
    unknown: Mapping[str, Any] = field(default_factory=dict)
    present: frozenset[str] | None = None

    _KEYS = ("variant", "target", "device", "model", "built", "test", "outcome", "reason", "build_wall_s",
             "measurement", "model_key")

    @property
    def where(self) -> str:
        return where(self.target, self.device)

    def to_dict(self) -> dict[str, Any]:
        values = {"variant": self.variant, "target": self.target, "device": self.device, "model": self.model,
                  "built": None if self.built is None else dict(self.built), "test": self.test,
                  "outcome": self.outcome, "reason": self.reason, "build_wall_s": self.build_wall_s,
                  "measurement": _opt(MeasurementRecord.to_dict, self.measurement), "model_key": self.model_key}
        return _emit(values, self.present, self.unknown)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TestRecord:
        return cls(
            test=d.get("test"), outcome=d.get("outcome"), model=d.get("model"), variant=d.get("variant"),
            target=d.get("target"), device=d.get("device"), reason=d.get("reason"),
            build_wall_s=d.get("build_wall_s"), built=None if d.get("built") is None else dict(d["built"]),
            measurement=_opt(MeasurementRecord.from_dict, d.get("measurement")), model_key=d.get("model_key"),
            unknown={k: v for k, v in d.items() if k not in cls._KEYS},
            present=frozenset(k for k in cls._KEYS if k in d),
        )


# -- the run ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class GitState:
    """The checkout a run was made from (``None``: unknown)."""

    commit: str | None = None
    branch: str | None = None
    dirty: bool | None = None
    unknown: Mapping[str, Any] = field(default_factory=dict)
    present: frozenset[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return _emit({"commit": self.commit, "branch": self.branch, "dirty": self.dirty}, self.present, self.unknown)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GitState:
        return cls(d.get("commit"), d.get("branch"), d.get("dirty"), _unknown(cls, d, ("present",)), frozenset(d))


@dataclass(frozen=True, slots=True)
class RunMetadata:
    """Where a run was made (:func:`pytest_edgeopt.runs.store.run_metadata`): ``git``, the
    ``machine`` (CPU model, cores, OS, load...), ``python`` and ``packages`` versions; the
    ``host`` (``node`` name and ``machine_class``: what runs must share for one's latency noise
    to tell about another's, :func:`pytest_edgeopt.storage.shards.host_identity`), the CI
    ``runner`` ids (``runner``, ``job``, ``run``) and, for a run split across CI jobs, its
    ``shard`` (``index``, ``count``, ``run_id``)."""

    git: GitState | None = None
    machine: Mapping[str, Any] | None = None
    python: str | None = None
    packages: Mapping[str, str | None] | None = None
    unknown: Mapping[str, Any] = field(default_factory=dict)
    present: frozenset[str] | None = None
    host: Mapping[str, Any] | None = None
    runner: Mapping[str, Any] | None = None
    shard: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        values = {"git": _opt(GitState.to_dict, self.git), "machine": _opt(dict, self.machine),
                  "python": self.python, "packages": _opt(dict, self.packages)}
        # Added after schema 1's first files: written when known, so older documents round-trip.
        values.update({k: dict(v) for k, v in (("host", self.host), ("runner", self.runner), ("shard", self.shard))
                       if v is not None})
        return _emit(values, self.present, self.unknown)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunMetadata:
        return cls(_opt(GitState.from_dict, d.get("git")), _opt(dict, d.get("machine")), d.get("python"),
                   _opt(dict, d.get("packages")), _unknown(cls, d, ("present",)), frozenset(d),
                   _opt(dict, d.get("host")), _opt(dict, d.get("runner")), _opt(dict, d.get("shard")))


@dataclass(frozen=True, slots=True)
class RunSummary:
    """The ``run`` head of a saved run (:func:`pytest_edgeopt.runs.store.save_run`): its
    counter ``number``, ``name``, ``saved`` (UTC ISO time), git ``commit`` and ``dirty``,
    ``totals``, the ``latency_settings`` and ``p50_ms`` per measurement key (for noise
    estimates without reading the samples)."""

    number: int | None = None
    name: str | None = None
    saved: str | None = None
    commit: str | None = None
    dirty: bool | None = None
    totals: Mapping[str, Any] = field(default_factory=dict)
    latency_settings: Mapping[str, Any] | None = None
    p50_ms: Mapping[str, float] = field(default_factory=dict)
    unknown: Mapping[str, Any] = field(default_factory=dict)
    present: frozenset[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        values = {"number": self.number, "name": self.name, "saved": self.saved, "commit": self.commit,
                  "dirty": self.dirty, "totals": dict(self.totals), "latency_settings": _opt(dict, self.latency_settings),
                  "p50_ms": dict(self.p50_ms)}
        return _emit(values, self.present, self.unknown)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunSummary:
        known = _known(cls)
        return cls(d.get("number"), d.get("name"), d.get("saved"), d.get("commit"), d.get("dirty"),
                   dict(d.get("totals") or {}), _opt(dict, d.get("latency_settings")), dict(d.get("p50_ms") or {}),
                   _unknown(cls, d, ("present",)), frozenset(k for k in known if k in d))


_ALWAYS = frozenset(("schema", "created", "settings", "environment", "totals", "measurements"))
_RUN_KEYS = ("schema", "run", "metadata", "devices", "created", "settings", "environment", "totals",
             "recommendations", "measurements", "comparison")


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A run document (see the module docstring). ``settings``, ``environment``, ``totals``,
    ``recommendations``, ``devices`` and ``comparison`` stay mappings: each is made and read
    by one module (its docstring says what it holds)."""

    measurements: tuple[TestRecord, ...] = ()
    schema: int = SCHEMA_VERSION
    created: str | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    environment: Mapping[str, Any] = field(default_factory=dict)
    totals: Mapping[str, Any] = field(default_factory=dict)
    recommendations: tuple[Mapping[str, Any], ...] | None = None
    run: RunSummary | None = None
    metadata: RunMetadata | None = None
    devices: tuple[Mapping[str, Any], ...] | None = None
    comparison: Mapping[str, Any] | None = None
    unknown: Mapping[str, Any] = field(default_factory=dict)
    present: frozenset[str] | None = None

    # -- facts about the run, wherever the document keeps them --------------------------------------
    @property
    def number(self) -> int | None:
        """The saved run's counter (``None``: not a saved run)."""
        return self.run.number if self.run else None

    @property
    def name(self) -> str | None:
        return self.run.name if self.run else None

    @property
    def git(self) -> GitState:
        return (self.metadata.git if self.metadata else None) or GitState()

    @property
    def commit(self) -> str | None:
        """Git commit: the ``run`` head's, else the metadata's."""
        if self.run and self.run.commit:
            return self.run.commit
        return self.git.commit

    @property
    def dirty(self) -> bool | None:
        """Uncommitted changes in the checkout: the ``run`` head's, else the metadata's."""
        if self.run and self.run.dirty is not None:
            return self.run.dirty
        return self.git.dirty

    @property
    def time(self) -> str | None:
        """When the run was saved, else when its document was written (UTC ISO)."""
        return (self.run.saved if self.run else None) or self.created

    @property
    def latency_settings(self) -> Mapping[str, Any] | None:
        latency = self.settings.get("latency")
        return latency if isinstance(latency, Mapping) else None

    def measured(self) -> list[MeasurementRecord]:
        """The measurements of the test items that measured something, in document order."""
        return [t.measurement for t in self.measurements if t.measurement is not None]

    # -- dicts ----------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready document; a saved run's ``schema``, ``run`` and ``metadata`` come
        first (listings parse only the head of the file)."""
        values: dict[str, Any] = {
            "schema": self.schema, "run": _opt(RunSummary.to_dict, self.run),
            "metadata": _opt(RunMetadata.to_dict, self.metadata),
            "devices": None if self.devices is None else [dict(d) for d in self.devices],
            "created": self.created, "settings": dict(self.settings), "environment": dict(self.environment),
            "totals": dict(self.totals),
            "recommendations": None if self.recommendations is None else [dict(r) for r in self.recommendations],
            "measurements": [t.to_dict() for t in self.measurements], "comparison": _opt(dict, self.comparison)}
        # What the source had, and what is set (a record made or completed in code).
        keep = (self.present or _ALWAYS) | {k for k in _RUN_KEYS if values[k] is not None}
        return {**{k: v for k, v in values.items() if k in keep}, **self.unknown}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunRecord:
        """The document ``d``; :class:`SchemaError` for a schema this package does not read,
        ``ValueError`` when it is not a run document (no ``measurements`` list)."""
        if not isinstance(d, Mapping) or not isinstance(d.get("measurements"), list):
            raise ValueError("not an edgeopt run (no 'measurements' list)")
        recs = d.get("recommendations")
        devices = d.get("devices")
        return cls(
            measurements=tuple(TestRecord.from_dict(t) for t in d["measurements"]),
            schema=check_schema(d.get("schema")), created=d.get("created"), settings=dict(d.get("settings") or {}),
            environment=dict(d.get("environment") or {}), totals=dict(d.get("totals") or {}),
            recommendations=None if recs is None else tuple(recs),
            run=_opt(RunSummary.from_dict, d.get("run")), metadata=_opt(RunMetadata.from_dict, d.get("metadata")),
            devices=None if devices is None else tuple(devices), comparison=_opt(dict, d.get("comparison")),
            unknown={k: v for k, v in d.items() if k not in _RUN_KEYS},
            present=frozenset(k for k in _RUN_KEYS if k in d),
        )

    @classmethod
    def of(cls, doc: RunRecord | Mapping[str, Any]) -> RunRecord:
        """``doc`` as a record (a record is returned as is)."""
        return doc if isinstance(doc, RunRecord) else cls.from_dict(doc)
