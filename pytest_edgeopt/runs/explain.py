"""Why a measurement changed between two runs, from their profiles
(:class:`~pytest_edgeopt.profile.Profile`: per-op times and op placement).

- :func:`op_changes`: the ops whose time grew (or shrank) most, matched by node index:
  ``#3 CONV_2D 0.12 -> 0.31 ms``. A latency regression's message names the top 3.
- :func:`placement_change`: ops that fell off the accelerator (or came back), delegated
  node counts and partitions. A placement regression is a gate finding like any other:
  more ops off the accelerator than ``placement:N ops`` allows (``placement:0ops`` whenever
  the gate has a tolerance; a warning in compare-only mode), reported even when latency did
  not move.
- :func:`judge_profiles`: both, plus the "suspiciously faster" check of an accelerator
  target (``android_gpu``, ``edgetpu``, or a row whose placement names a delegate that is not
  the CPU's): a variant significantly faster than the baseline beyond :data:`FASTER_WARNING`
  is a warning, and a regression beyond ``faster:X%`` when that tolerance is given (a changed
  delegate or skipped work looks like a speed-up).

Plain Python, no TensorFlow.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_edgeopt.labels import where
from pytest_edgeopt.profile import OpTime, Placement, Profile
from pytest_edgeopt.runs.findings import Regression, ms_text
from pytest_edgeopt.runs.noise import LatencyChange
from pytest_edgeopt.runs.tolerance import Tolerance

#: Ops a message names.
TOP_OPS = 3
#: Targets that run on an accelerator (a row with a non-CPU delegate in its placement is one too).
ACCELERATOR_TARGETS = ("android_gpu", "edgetpu")
#: Delegates that run on the CPU (their rows are not accelerator rows).
CPU_DELEGATES = ("xnnpack", "cpu")
#: Without a ``faster:`` tolerance, an accelerator row significantly faster than this (0.10 =
#: 10% below the baseline p50) is a warning.
FASTER_WARNING = 0.10
#: The placement tolerance when the gate has tolerances but none for placement.
DEFAULT_PLACEMENT = Tolerance("placement", 0.0, "ops")


# -- per-op time ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class OpChange:
    """One op's time per inference in both runs, in ms (``None``: not in that run's
    profile). ``op``: its type now (``before_op`` when the node at that index had another
    type in the baseline)."""

    index: int
    op: str
    before_ms: float | None
    after_ms: float | None
    before_op: str | None = None

    @property
    def delta_ms(self) -> float:
        return (self.after_ms or 0.0) - (self.before_ms or 0.0)

    @property
    def text(self) -> str:
        """``#3 CONV_2D 0.12 -> 0.31 ms``; ``(new)`` / ``(gone)`` for an op in one run only."""
        name = f"#{self.index} " if self.index >= 0 else ""
        name += f"{self.before_op} -> {self.op}" if self.before_op and self.before_op != self.op else self.op
        if self.before_ms is None:
            return f"{name} {ms_text(self.after_ms or 0.0)} (new)"
        if self.after_ms is None:
            return f"{name} {ms_text(self.before_ms)} (gone)"
        return f"{name} {ms_text(self.before_ms)} -> {ms_text(self.after_ms)}"

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "op": self.op, "before_ms": self.before_ms, "after_ms": self.after_ms,
                "before_op": self.before_op, "delta_ms": self.delta_ms}


def op_changes(before: Profile | None, after: Profile | None, *, grown: bool = True,
               top: int = TOP_OPS) -> tuple[OpChange, ...]:
    """The ``top`` ops whose time per inference grew most (``grown=False``: shrank most),
    largest change first, only those that changed that way. Ops are matched by node index
    (``-1`` indices, a tool that gives only types, by type and order). Empty unless both
    profiles have per-op times."""
    if before is None or after is None or not before.ops or not after.ops:
        return ()

    def keyed(ops: Sequence[OpTime]) -> dict[tuple[int, str], OpTime]:
        seen: Counter[str] = Counter()
        out: dict[tuple[int, str], OpTime] = {}
        for o in ops:
            if o.index >= 0:
                out[(o.index, "")] = o
            else:
                out[(-1, f"{o.op}#{seen[o.op]}")] = o
                seen[o.op] += 1
        return out

    b, a = keyed(before.ops), keyed(after.ops)
    changes = []
    for k in set(b) | set(a):
        ob, oa = b.get(k), a.get(k)
        cur = oa or ob
        assert cur is not None  # k is a key of one of them
        changes.append(OpChange(cur.index, cur.op, ob.avg_ms if ob else None, oa.avg_ms if oa else None,
                                before_op=ob.op if ob and oa and ob.op != oa.op else None))
    sign = 1.0 if grown else -1.0
    picked = sorted((c for c in changes if sign * c.delta_ms > 0), key=lambda c: (-sign * c.delta_ms, c.index))
    return tuple(picked[:top])


def ops_text(changes: Sequence[OpChange], grown: bool = True) -> str:
    """``ops that grew most: #3 CONV_2D 0.12 -> 0.31 ms, ...`` (``""`` for none)."""
    if not changes:
        return ""
    return f"ops that {'grew' if grown else 'shrank'} most: " + ", ".join(c.text for c in changes)


# -- placement ------------------------------------------------------------------------------------
def _op_name(index: int, op: str) -> str:
    return f"#{index} {op}" if index >= 0 else op


@dataclass(frozen=True, slots=True)
class PlacementChange:
    """The placement of one measurement in both runs (it differs)."""

    before: Placement
    after: Placement

    @property
    def off_before(self) -> int:
        """Ops off the accelerator in the baseline."""
        return self.before.total_nodes - self.before.delegated_nodes

    @property
    def off_after(self) -> int:
        return self.after.total_nodes - self.after.delegated_nodes

    @property
    def fell_back(self) -> tuple[tuple[int, str], ...]:
        """Ops on the CPU now that were not in the baseline's fallback list."""
        left = Counter(self.before.fallback)
        out = []
        for f in self.after.fallback:
            if left[f]:
                left[f] -= 1
            else:
                out.append(f)
        return tuple(out)

    @property
    def came_back(self) -> tuple[tuple[int, str], ...]:
        """Ops of the baseline's fallback list that now run on the accelerator."""
        return PlacementChange(self.after, self.before).fell_back

    @property
    def lost(self) -> int:
        """How many more ops are off the accelerator: the larger of the count's growth and
        the ops newly in the fallback list (0 when placement only improved)."""
        return max(self.off_after - self.off_before, len(self.fell_back), 0)

    @property
    def worse(self) -> bool:
        return self.lost > 0 or self.after.partitions > self.before.partitions

    @property
    def text(self) -> str:
        """``placement changed: 10 of 12 ops on gpu (was 12 of 12), 2 partitions (was 1);
        fell back to the CPU: #4 RESHAPE, #7 SOFTMAX``."""
        b, a = self.before, self.after
        on = a.delegate or b.delegate or "the accelerator"
        parts = [f"{a.delegated_nodes} of {a.total_nodes} ops on {on} (was {b.delegated_nodes} of {b.total_nodes})"]
        if a.partitions != b.partitions:
            parts.append(f"{a.partitions} partition{'s' if a.partitions != 1 else ''} (was {b.partitions})")
        if a.delegate != b.delegate:
            parts.append(f"delegate {b.delegate or 'none'} -> {a.delegate or 'none'}")
        text = "placement changed: " + ", ".join(parts)
        if self.fell_back:
            text += "; fell back to the CPU: " + ", ".join(_op_name(*f) for f in self.fell_back)
        if self.came_back:
            text += "; back on the accelerator: " + ", ".join(_op_name(*f) for f in self.came_back)
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"before": self.before.to_dict(), "after": self.after.to_dict(), "lost": self.lost,
                "fell_back": [list(f) for f in self.fell_back], "came_back": [list(f) for f in self.came_back],
                "text": self.text}


def placement_change(before: Profile | None, after: Profile | None) -> PlacementChange | None:
    """The placement change of one measurement, ``None`` when either run has no placement
    or both are the same."""
    if before is None or after is None or before.placement is None or after.placement is None:
        return None
    if before.placement == after.placement:
        return None
    return PlacementChange(before.placement, after.placement)


def is_accelerator(target: str, *profiles: Profile | None) -> bool:
    """Whether a row ran on an accelerator: an accelerator target, or a placement whose
    delegate does not run on the CPU."""
    if target in ACCELERATOR_TARGETS:
        return True
    return any(p is not None and p.placement is not None and p.placement.delegate not in (None, *CPU_DELEGATES)
               for p in profiles)


# -- the gate's use -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ProfileVerdict:
    """What the profiles of one compared row say: ``grown`` ops (top 3, for a latency
    regression's message), ``placement`` (when it changed), and the findings: ``regressions``
    (placement beyond its tolerance, faster beyond ``faster:``) and ``warnings``."""

    grown: tuple[OpChange, ...] = ()
    placement: PlacementChange | None = None
    regressions: tuple[Regression, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def latency_detail(self) -> str | None:
        """What a latency regression's message adds: the ops that grew most, and the
        placement change."""
        parts = [t for t in (ops_text(self.grown), self.placement.text if self.placement else "") if t]
        return "; ".join(parts) or None


def judge_profiles(key: tuple[str, str, str, str], before: Profile | None, after: Profile | None,
                   latency: LatencyChange | None, tolerances: Mapping[str, Tolerance], *,
                   judged: bool) -> ProfileVerdict:
    """The profile findings of one compared row ``key`` (model, variant, target, device).

    ``latency``: the row's two-run latency change (``judged``: not skipped as unchanged).
    Placement: beyond ``tolerances["placement"]`` (or :data:`DEFAULT_PLACEMENT` when there
    are other tolerances) it is a regression; any other change is a warning. Faster: on an
    accelerator row whose interval lies below 1 (significantly faster), beyond
    ``tolerances["faster"]`` it is a regression; without that tolerance, beyond
    :data:`FASTER_WARNING` it is a warning."""
    model, variant, target, device = key
    head = f"{model} {variant} on {where(target, device)}"
    regressions: list[Regression] = []
    warnings: list[str] = []
    placement = placement_change(before, after)
    if placement is not None:
        tol = tolerances.get("placement") or (DEFAULT_PLACEMENT if tolerances else None)
        moved = f"; latency {latency.cell()}" if latency is not None else ""
        if tol is not None and placement.worse and tol.exceeded(0, placement.lost):
            regressions.append(Regression(*key, metric="placement", baseline=placement.off_before,
                                          current=placement.off_after, change=placement.lost, tolerance=str(tol),
                                          detail=placement.text + moved))
        else:
            warnings.append(f"{head}: {placement.text}{moved}")
    if latency is not None and judged and is_accelerator(target, before, after) and latency.interval[1] < 1.0:
        faster = tolerances.get("faster")
        shrunk = ops_text(op_changes(before, after, grown=False), grown=False)
        detail = "; ".join(t for t in (shrunk, placement.text if placement else "") if t) or None
        if faster is not None:
            if faster.exceeded(latency.baseline_p50_ms, latency.current_p50_ms):
                regressions.append(Regression(*key, metric="faster", baseline=latency.baseline_p50_ms,
                                              current=latency.current_p50_ms, change=latency.change,
                                              tolerance=str(faster), interval=latency.interval,
                                              evidence="two runs", detail=detail))
        elif latency.ratio < 1.0 - FASTER_WARNING:
            warnings.append(f"{head} got suspiciously faster on an accelerator: p50 {ms_text(latency.baseline_p50_ms)}"
                            f" -> {ms_text(latency.current_p50_ms)} ({100 * latency.change:+.1f}%, interval "
                            f"{100 * (latency.interval[0] - 1):+.1f}%..{100 * (latency.interval[1] - 1):+.1f}%): "
                            "a changed delegate or skipped work? (--edgeopt-compare-fail=faster:X% fails on it)"
                            + (f"; {detail}" if detail else ""))
    return ProfileVerdict(grown=op_changes(before, after), placement=placement, regressions=tuple(regressions),
                          warnings=tuple(warnings))
