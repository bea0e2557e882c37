"""Baseline gates: compare this run's measurements with a saved run's.

Measurements are matched by (model, variant, target, device) and recipe. Tolerances are
written ``METRIC:AMOUNT UNIT`` (:mod:`pytest_edgeopt.runs.tolerance`); a metric without a
tolerance is compared and shown but never fails the gate.

Sizes and accuracy are compared exactly. Accuracy only when both runs scored the same
metric on the same number of eval samples; otherwise the comparison is refused and the
reason is given (:class:`Refusal`).

Latency is judged from the raw samples of both runs by the two-run test of
:mod:`pytest_edgeopt.runs.noise` (block medians, bootstrap, a between-run noise term). Where
the two model files still exist and both runs used the same packages and settings,
:func:`pytest_edgeopt.runs.abtest.confirm_latency` settles the verdicts by an A/B
re-measurement in the current session: every judged row whose two-run interval reaches the
tolerance, likeliest regressions first, within an optional time budget. A row whose
baseline model file cannot be found (recorded per measurement by its cache key,
``model_key``) says "latency judged on two runs only".

Each latency row carries its minimum detectable effect (``LatencyChange.detectable``): the
smallest slow-down its evidence calls significant at the gate's level. When that exceeds
the latency tolerance the comparison warns that the tolerance cannot be judged here
(:func:`judge_sensitivity`); a ``latency:5%,strict`` tolerance fails the gate instead.

A variant whose model file is byte-identical to the baseline's, timed by the same package
versions with the same settings on a device with the same software (its record's details)
and the same op placement, is not judged: nothing under test changed, so its difference is
the machine's (``judge_identical=True`` judges it anyway).

When the runs recorded profiles (:mod:`pytest_edgeopt.runs.explain`), a latency regression
names the ops whose time grew most, an op that fell off the accelerator is a placement
regression (``placement:N ops``, ``placement:0ops`` by default once the gate has a tolerance),
and an accelerator row that got significantly faster warns (fails beyond ``faster:X%``).

Both runs are read as :class:`~pytest_edgeopt.runs.record.RunRecord`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from pytest_edgeopt.labels import where
from pytest_edgeopt.runs.explain import OpChange, PlacementChange, ProfileVerdict, judge_profiles, placement_change
from pytest_edgeopt.runs.findings import Refusal, Regression
from pytest_edgeopt.runs.noise import (
    ALPHA,
    DEFAULT_NOISE,
    LatencyChange,
    estimate_noise,
    latency_change,
    latency_exceeds,
)
from pytest_edgeopt.runs.record import ObservationRecord, RunRecord
from pytest_edgeopt.runs.tolerance import Tolerance, parse_tolerances

__all__ = ["Comparison", "Observed", "Refusal", "Regression", "RowComparison", "compare_runs", "judge_sensitivity",
           "key_text", "observations", "p50s_of", "run_label"]

#: A measurement's identity across runs: (model, variant, target, device label).
Key = tuple[str, str, str, str]
#: Device details that say how a device was reached, not what software it runs.
_CONNECTION_DETAILS = frozenset({"adb_server", "serial", "transport", "inventory"})


# -- matching -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Observed:
    """One measured (model, variant, target, device) of a run: its ``observation``, the
    variant file (``model_path``, when recorded) and the ``test`` that measured it with its
    ``outcome`` (both ``None`` for an fp32 baseline only embedded in other measurements), and
    the variant cache key of the timed file (``model_key``, when recorded)."""

    observation: ObservationRecord
    model_path: str | None = None
    test: str | None = None
    outcome: str | None = None
    model_key: str | None = None


def observations(doc: RunRecord | Mapping[str, Any]) -> dict[Key, Observed]:
    """Each measured (model, variant, target, device) of a run, once: the first
    measurement of it, plus the fp32 baselines the measurements embed when no test
    measured fp32 itself."""
    out: dict[Key, Observed] = {}
    embedded: dict[Key, Observed] = {}
    for rec in RunRecord.of(doc).measurements:
        m = rec.measurement
        if m is None:
            continue
        out.setdefault(m.key, Observed(m.observation, m.model_path, rec.test, rec.outcome, rec.model_key))
        if m.baseline is not None:
            embedded.setdefault(m.baseline.key, Observed(m.baseline))
    for key, b in embedded.items():
        out.setdefault(key, b)
    return out


def key_text(key: Key) -> str:
    """``model/variant/target/device``: a key as one string (JSON-friendly)."""
    return "/".join(key)


def p50s_of(doc: RunRecord | Mapping[str, Any]) -> dict[str, float]:
    """Measurement key (see :func:`key_text`) -> p50 latency in ms, for noise estimates."""
    return {key_text(k): float(np.median(o.observation.samples_us)) / 1000.0
            for k, o in observations(doc).items() if o.observation.samples_us}


def _model_identity(obs: Observed) -> str | None:
    """The variant file's identity: its sha256 when recorded, else its content-addressed
    cache key (the directory of ``model_path``)."""
    o = obs.observation
    for k in ("model_sha256", "sha256"):
        if o.unknown.get(k):
            return str(o.unknown[k])
        if o.extras.get(k):
            return str(o.extras[k])
    if obs.model_path:
        key = Path(obs.model_path).parent.name
        if re.fullmatch(r"[0-9a-f]{64}", key):
            return key
    return None


# -- results ------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class RowComparison:
    """One measurement in both runs. ``status``: ``compared``; ``new`` (not in the
    baseline); ``missing`` (not in this run); ``recipe changed`` (not compared).
    Changes: ``latency`` (a :class:`LatencyChange`, or ``None``), sizes relative
    (0.01 = 1% larger), ``accuracy_change`` in points (current - baseline, x100).
    ``same_model``: the variant file is byte-identical to the baseline's (``None``: unknown).
    ``evidence``: what the latency verdict rests on (``two runs``, ``A/B in this session, N
    rounds``, ``latency judged on two runs only: ...`` when the A/B could not be made, or
    ``not confirmed: ...`` when the A/B budget ran out); ``None`` when not judged.
    From the runs' profiles (:mod:`pytest_edgeopt.runs.explain`): ``ops_grown``, the ops whose
    time grew most, and ``placement``, when the op placement changed."""

    model: str
    variant: str
    target: str
    device: str
    status: str
    latency: LatencyChange | None = None
    latency_note: str | None = None
    size_change: float | None = None
    compressed_size_change: float | None = None
    accuracy_change: float | None = None
    same_model: bool | None = None
    regressed: tuple[str, ...] = ()
    #: The variant files of both runs (for an A/B re-measurement), when recorded.
    baseline_model_path: str | None = None
    current_model_path: str | None = None
    #: Their variant cache keys, when recorded (the file is looked up by key when its path is gone).
    baseline_model_key: str | None = None
    current_model_key: str | None = None
    evidence: str | None = None
    ops_grown: tuple[OpChange, ...] = ()
    placement: PlacementChange | None = None

    @property
    def latency_detail(self) -> str | None:
        """What a latency regression's message adds: the ops that grew most and the placement change."""
        return ProfileVerdict(grown=self.ops_grown, placement=self.placement).latency_detail

    @property
    def judged(self) -> bool:
        """Judged on latency: compared, with samples in both runs, and not skipped as unchanged."""
        return self.status == "compared" and self.latency is not None and self.latency_note is None

    @property
    def detectable(self) -> float | None:
        """Minimum detectable effect of the latency verdict (0.14 = 14%), ``None`` when not judged."""
        return self.latency.detectable if self.judged and self.latency is not None else None

    @property
    def detectable_cell(self) -> str:
        """The ``detects >=`` column: ``14%``, empty when not judged."""
        d = self.detectable
        return "" if d is None else f"{100 * d:.0f}%" if d >= 0.1 else f"{100 * d:.1f}%"

    @property
    def key(self) -> Key:
        return (self.model, self.variant, self.target, self.device)

    @property
    def cell(self) -> str:
        """The comparison column of the terminal table: ``+3.1% (p=0.002)``, ``new``..."""
        if self.status != "compared":
            return self.status
        if self.latency is None:
            return self.latency_note or ""
        text = self.latency.cell()
        if self.latency_note:  # not judged
            text = text[:-1] + "; same model)"
        elif self.evidence and self.evidence.startswith(("latency judged on two runs only", "not confirmed")):
            text = text[:-1] + ("; two runs only)" if self.evidence.startswith("latency") else "; unconfirmed)")
        return text + (" REGRESSED" if self.regressed else "")

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "variant": self.variant, "target": self.target, "device": self.device,
                "status": self.status, "latency": self.latency.to_dict() if self.latency else None,
                "latency_note": self.latency_note, "size_change": self.size_change,
                "compressed_size_change": self.compressed_size_change, "accuracy_change": self.accuracy_change,
                "same_model": self.same_model, "regressed": list(self.regressed), "cell": self.cell,
                "detectable": self.detectable, "evidence": self.evidence,
                "baseline_model_path": self.baseline_model_path, "current_model_path": self.current_model_path,
                "baseline_model_key": self.baseline_model_key, "current_model_key": self.current_model_key,
                "ops_grown": [o.to_dict() for o in self.ops_grown],
                "placement_change": self.placement.to_dict() if self.placement else None}


@dataclass(frozen=True, slots=True)
class Comparison:
    """This run against a baseline run: per-measurement ``rows``, the ``regressions``
    (the gate fails when there is one), ``refusals`` (metrics not compared, with the
    reason) and ``warnings`` (different machine, package versions, dirty checkout...)."""

    baseline_label: str
    current_label: str
    tolerances: tuple[Tolerance, ...]
    rows: tuple[RowComparison, ...]
    regressions: tuple[Regression, ...]
    refusals: tuple[Refusal, ...] = ()
    warnings: tuple[str, ...] = ()
    alpha: float = ALPHA
    noise: float = DEFAULT_NOISE
    noise_source: str = "default"
    #: Both runs used the same package versions and latency settings (an A/B re-measurement
    #: of the two model files then isolates the model's part of a change).
    same_runtime: bool = False
    #: ``latency:5% cannot be judged here: this run detects >= 14% (noise 18%)`` when the
    #: latency rows' minimum detectable effect exceeds the tolerance (:func:`judge_sensitivity`).
    cannot_judge: str | None = None

    @property
    def latency_tolerance(self) -> Tolerance | None:
        return next((t for t in self.tolerances if t.metric == "latency"), None)

    @property
    def strict_failure(self) -> bool:
        """The latency tolerance is ``strict`` and cannot be judged with this run's noise."""
        tol = self.latency_tolerance
        return self.cannot_judge is not None and tol is not None and tol.strict

    @property
    def failed(self) -> bool:
        return bool(self.regressions) or self.strict_failure

    def row(self, model: str, variant: str, target: str, device: str | None = None) -> RowComparison | None:
        for r in self.rows:
            if r.key == (model, variant, target, device or "host"):
                return r
        return None

    def cell(self, model: str, variant: str, target: str, device: str | None = None) -> str:
        """The comparison column for a row of the terminal table ("" when not compared)."""
        r = self.row(model, variant, target, device)
        return r.cell if r else ""

    def detectable_cell(self, model: str, variant: str, target: str, device: str | None = None) -> str:
        """The ``detects >=`` column for a row of the terminal table ("" when not judged)."""
        r = self.row(model, variant, target, device)
        return r.detectable_cell if r else ""

    def lines(self) -> list[str]:
        """A readable report: header, regressions, refusals, warnings, and a count."""
        tol = ", ".join(map(str, self.tolerances)) or "none (compare only)"
        out = [f"compared with {self.baseline_label}: tolerances {tol}; latency test one-sided p < {self.alpha:g}, "
               f"between-run noise {100 * self.noise:.1f}% ({self.noise_source})"]
        out += [f"REGRESSION {r.message}" for r in self.regressions]
        if self.cannot_judge:
            out.append(f"{'FAILED (strict)' if self.strict_failure else 'warning'}: {self.cannot_judge}")
        out += [f"refused: {r.message}" for r in self.refusals]
        out += [f"warning: {w}" for w in self.warnings]
        compared = sum(r.status == "compared" for r in self.rows)
        other = {s: sum(r.status == s for r in self.rows) for s in ("new", "missing", "recipe changed")}
        extra = "".join(f", {n} {s}" for s, n in other.items() if n)
        out.append(f"{compared} measurements compared{extra}; "
                   + (f"{len(self.regressions)} regression{'s' if len(self.regressions) != 1 else ''}"
                      if self.regressions else "no regression")
                   + ("; failed: the latency tolerance cannot be judged" if self.strict_failure else ""))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline_label, "current": self.current_label,
                "tolerances": [str(t) for t in self.tolerances], "alpha": self.alpha, "noise": self.noise,
                "noise_source": self.noise_source, "failed": self.failed, "cannot_judge": self.cannot_judge,
                "regressions": [r.to_dict() for r in self.regressions],
                "refusals": [{"message": r.message, "metric": r.metric, "reason": r.reason} for r in self.refusals],
                "warnings": list(self.warnings), "rows": [r.to_dict() for r in self.rows]}


# -- the comparison -----------------------------------------------------------------------------
def run_label(doc: RunRecord | Mapping[str, Any], default: str = "this run") -> str:
    """``#7 main (2026-11-23 18:45 UTC, e998fe0, dirty)`` for a saved run, else ``default``
    with the document's creation time."""
    rec = RunRecord.of(doc)
    commit, dirty = rec.commit, rec.dirty
    when = str(rec.time or "")[:16].replace("T", " ")
    facts = [f for f in (when and f"{when} UTC", commit and commit[:7], dirty and "dirty") if f]
    if rec.number is not None:
        name = f"#{rec.number}" + (f" {rec.name}" if rec.name else "")
    else:
        name = default
    return f"{name} ({', '.join(facts)})" if facts else name


def _environment_warnings(base: RunRecord, cur: RunRecord) -> list[str]:
    out = []
    bm, cm = base.metadata, cur.metadata
    for m, which in ((bm, "the baseline"), (cm, "this run")):
        if not m:
            out.append(f"{which} has no machine and package metadata (not a saved run): "
                       "cannot check that both ran on the same machine with the same packages")
    if bm and cm:
        fields = ("cpu_model", "cores", "arch", "os")
        b, c = bm.machine or {}, cm.machine or {}
        diff = [f"{f} {b.get(f)!r} vs {c.get(f)!r}" for f in fields if b.get(f) != c.get(f)]
        if diff:
            out.append(f"different machine ({'; '.join(diff)}): latency differences may be the machine's")
        bp = {"python": bm.python, **(bm.packages or {})}
        cp = {"python": cm.python, **(cm.packages or {})}
        pdiff = [f"{k} {bp.get(k)} -> {cp.get(k)}" for k in sorted(set(bp) | set(cp)) if bp.get(k) != cp.get(k)]
        if pdiff:
            out.append(f"different package versions: {', '.join(pdiff)}")
        for m, which in ((bm, "the baseline"), (cm, "this run")):
            if m.git and m.git.dirty:
                out.append(f"{which} was made from a checkout with uncommitted changes")
    else:
        # Plain --edgeopt-json documents still carry the environment.
        be, ce = base.environment, cur.environment
        if be and ce and (be.get("packages") != ce.get("packages") or be.get("python") != ce.get("python")):
            out.append("different package versions (see the documents' environment)")
    bl, cl = base.latency_settings or {}, cur.latency_settings or {}
    ldiff = [f"{k} {bl.get(k)} vs {cl.get(k)}" for k in sorted(set(bl) | set(cl)) if bl.get(k) != cl.get(k)]
    if bl and cl and ldiff:
        out.append(f"different latency settings ({', '.join(ldiff)}): latencies are not like for like")
    return out


def _device_software(o: ObservationRecord) -> dict[str, Any]:
    """What a row's device record says about its software (OS release, SDK, model...)."""
    return {k: v for k, v in o.device.details.items() if k not in _CONNECTION_DETAILS}


def _same_runtime(base: RunRecord, cur: RunRecord) -> bool:
    bm, cm = base.metadata, cur.metadata
    if not bm or not cm:
        return False
    return (bm.packages == cm.packages and bm.python == cm.python
            and base.settings.get("latency") == cur.settings.get("latency"))


def compare_runs(baseline: RunRecord | Mapping[str, Any], current: RunRecord | Mapping[str, Any],
                 tolerances: Iterable[str | Tolerance] = (), *, alpha: float = ALPHA,
                 noise: float | None = None, history: Sequence[Mapping[str, float]] | None = None,
                 judge_identical: bool = False, baseline_label: str | None = None,
                 current_label: str | None = None) -> Comparison:
    """Compare ``current`` with ``baseline`` (run records or documents: saved runs or ``--edgeopt-json``).

    ``tolerances``: strings or :class:`Tolerance` (``ValueError`` for malformed ones).
    ``noise``: the between-run noise of log p50; when ``None`` it is estimated from
    ``history`` (p50s of earlier runs of this machine, oldest first, see :func:`p50s_of`)
    or :data:`~pytest_edgeopt.runs.noise.DEFAULT_NOISE`.
    """
    base_run, cur_run = RunRecord.of(baseline), RunRecord.of(current)
    tols = parse_tolerances(tolerances)
    source = "given"
    if noise is None:
        estimated = estimate_noise(history or [])
        if estimated is not None:
            noise, source = estimated, f"estimated from {len(history or [])} earlier runs"
        else:
            noise, source = DEFAULT_NOISE, "default; save 3+ runs on this machine to estimate it"
    warnings = _environment_warnings(base_run, cur_run)
    same_runtime = _same_runtime(base_run, cur_run)
    base_obs, cur_obs = observations(base_run), observations(cur_run)
    rows: list[RowComparison] = []
    regressions: list[Regression] = []
    refusals: list[Refusal] = []
    few: list[str] = []
    for key in sorted(set(base_obs) | set(cur_obs)):
        model, variant, target, device = key
        bo, co = base_obs.get(key), cur_obs.get(key)
        if bo is None or co is None:
            rows.append(RowComparison(*key, status="new" if bo is None else "missing"))
            continue
        b, c = bo.observation, co.observation
        if b.recipe != c.recipe:
            rows.append(RowComparison(*key, status="recipe changed"))
            refusals.append(Refusal(*key, "all", f"the variant's recipe changed ({_recipe_diff(b.recipe, c.recipe)})"))
            continue
        regressed: list[str] = []
        lat: LatencyChange | None = None
        judged = False

        def check(metric: str, b_val: float, c_val: float, change: float, **test: Any) -> None:
            t = tols.get(metric)
            significant = test.pop("significant", True)
            if t is None:
                return
            exceeded = latency_exceeds(t, lat) if metric == "latency" and lat is not None else t.exceeded(b_val, c_val)
            if exceeded and significant:
                regressed.append(metric)
                regressions.append(Regression(*key, metric=metric, baseline=b_val, current=c_val, change=change,
                                              tolerance=str(t), **test))

        # sizes: exact; one a run file lacks (hand-made, older) is not measured, not compared
        sizes: dict[str, float | None] = {}
        for metric, b_n, c_n in (("size", b.size_bytes, c.size_bytes),
                                 ("compressed_size", b.compressed_size_bytes, c.compressed_size_bytes)):
            sizes[metric] = None
            if b_n and c_n:
                sizes[metric] = change = float(c_n) / float(b_n) - 1.0
                check(metric, float(b_n), float(c_n), change)
            elif metric in tols:
                runs = " and ".join(r for r, n in (("the baseline", b_n), ("this run", c_n)) if not n)
                refusals.append(Refusal(*key, metric, f"{metric.replace('_', ' ')} not measured in {runs}"))
        size_change, csize_change = sizes["size"], sizes["compressed_size"]
        # accuracy: exact, on the same eval data only
        acc_change = None
        ba, ca = b.accuracy, c.accuracy
        if ba and ca:
            if ba.metric != ca.metric:
                refusals.append(Refusal(*key, "accuracy", f"the metric changed ({ba.metric} -> {ca.metric})"))
            elif ba.samples != ca.samples:
                refusals.append(Refusal(*key, "accuracy", f"different eval data ({ba.samples} vs "
                                        f"{ca.samples} samples)"))
            else:
                acc_change = 100.0 * (float(ca.value or 0.0) - float(ba.value or 0.0))
                check("accuracy", float(ba.value or 0.0), float(ca.value or 0.0), acc_change)
        elif (ba or ca) and "accuracy" in tols:
            refusals.append(Refusal(*key, "accuracy", "only one run has an accuracy (eval data given in one run only)"))
        # latency: statistics on the raw samples
        ident_b, ident_c = _model_identity(bo), _model_identity(co)
        same_model = (ident_b == ident_c) if ident_b and ident_c else None
        note = None
        bs, cs = b.samples_us, c.samples_us
        if bs and cs:
            lat = latency_change(bs, cs, noise=noise, alpha=alpha, noise_source=source)
            judged = True
            # The device's software (an OS update) and the op placement (a changed delegate) are
            # part of the runtime too: a row where either changed is judged.
            if (same_model and same_runtime and not judge_identical and _device_software(b) == _device_software(c)
                    and placement_change(b.profile, c.profile) is None):
                judged, note = False, "same model file and runtime as the baseline: not judged"
            elif min(len(bs), len(cs)) < 5:
                few.append(f"{model} {variant} on {where(target, device)} ({len(bs)} and {len(cs)} samples)")
        profiles = judge_profiles(key, b.profile, c.profile, lat, tols, judged=judged)
        if lat is not None and judged and "latency" in tols:
            check("latency", lat.baseline_p50_ms, lat.current_p50_ms, lat.change, significant=lat.p_value < alpha,
                  p_value=lat.p_value, interval=lat.interval, evidence="two runs", detail=profiles.latency_detail)
        regressions += profiles.regressions
        regressed += [g.metric for g in profiles.regressions]
        warnings += profiles.warnings
        rows.append(RowComparison(*key, status="compared", latency=lat, latency_note=note, size_change=size_change,
                                  compressed_size_change=csize_change, accuracy_change=acc_change,
                                  same_model=same_model, regressed=tuple(regressed),
                                  baseline_model_path=bo.model_path, current_model_path=co.model_path,
                                  baseline_model_key=bo.model_key, current_model_key=co.model_key,
                                  evidence="two runs" if lat is not None and note is None else None,
                                  ops_grown=profiles.grown, placement=profiles.placement))
    missing = [r for r in rows if r.status == "missing"]
    if missing:
        names = ", ".join(f"{r.variant} on {where(r.target, r.device)}" for r in missing[:8])
        warnings.append(f"{len(missing)} measurement(s) of the baseline are not in this run: {names}"
                        + (" ..." if len(missing) > 8 else ""))
    if few:
        warnings.append("latency judged on very few samples (each sample counts as one block): " + "; ".join(few[:5]))
    return judge_sensitivity(Comparison(
        baseline_label=baseline_label or run_label(base_run, "the baseline"),
        current_label=current_label or run_label(cur_run, "this run"),
        tolerances=tuple(tols.values()), rows=tuple(rows), regressions=tuple(regressions),
        refusals=tuple(refusals), warnings=tuple(warnings), alpha=alpha, noise=noise, noise_source=source,
        same_runtime=same_runtime,
    ))


def _undecided(tol: Tolerance, row: RowComparison) -> bool:
    """A judged row whose evidence neither found a regression nor ruled one out (its interval
    reaches the tolerance), and whose minimum detectable effect exceeds the tolerance."""
    d = row.detectable
    if d is None or row.latency is None or "latency" in row.regressed or not row.latency.reaches(tol):
        return False
    if tol.unit == "%":
        return d > tol.amount / 100.0
    base = row.latency.baseline_p50_ms
    return tol.exceeded(base, base * (1.0 + d))


def judge_sensitivity(comparison: Comparison) -> Comparison:
    """``comparison`` with :attr:`Comparison.cannot_judge` set from its judged latency rows:
    when one or more rows are undecided (neither called a regression nor ruled one out: the
    interval reaches the tolerance) with a minimum detectable effect above the latency
    tolerance, ``latency:5% cannot be judged here: this run detects >= 14% (noise 18%)``
    (the largest such effect, the between-run noise used), naming the rows. A row whose
    interval stays below the tolerance was judged (a regression of that size is ruled out),
    however large its detectable effect. Recomputed after an A/B re-measurement replaces a
    row's evidence (the A/B's detectable effect is its own)."""
    tol = comparison.latency_tolerance
    message = None
    if tol is not None:
        judged = [r for r in comparison.rows if r.detectable is not None]
        blind = [r for r in judged if _undecided(tol, r)]
        if blind:
            worst = max(r.detectable or 0.0 for r in blind)
            names = ", ".join(f"{r.variant} on {where(r.target, r.device)}" for r in blind[:6])
            message = (f"{tol} cannot be judged here: this run detects >= {100 * worst:.0f}% "
                       f"(noise {100 * comparison.noise:.3g}%) on {len(blind)} of {len(judged)} latency rows "
                       f"({names}{' ...' if len(blind) > 6 else ''}); detectable effects are in the JSON's "
                       "comparison rows")
    return replace(comparison, cannot_judge=message)


def _recipe_diff(b: Mapping[str, Any], c: Mapping[str, Any]) -> str:
    keys = sorted(set(b) | set(c))
    parts = [f"{k}: {b.get(k)!r} -> {c.get(k)!r}" for k in keys if b.get(k) != c.get(k)]
    return "; ".join(parts[:4]) + (" ..." if len(parts) > 4 else "")
