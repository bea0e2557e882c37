"""Budgets: what a variant must achieve, checked against a Measurement.

``measurement.check(max_accuracy_drop=0.01)`` and ``@pytest.mark.edgeopt_budget(...)``
take the same keywords (:data:`RULES`). A miss raises :class:`BudgetExceeded`, an
``AssertionError`` whose message lists every budget missed with the measured value, the
budget, the fp32 baseline, the variant and the target::

    int8 on cpu: accuracy drop 0.031 > 0.010 (fp32 0.982 -> int8 0.951 on 450 samples)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from pytest_edgeopt.measurement import Measurement


class BudgetError(ValueError):
    """A budget is malformed (unknown keyword, nonsensical value) or cannot be judged
    for this measurement (an accuracy budget without eval data)."""


class BudgetExceeded(AssertionError):
    """One or more budgets were missed; ``violations`` holds them."""

    def __init__(self, violations: list[Violation]):
        self.violations = violations
        super().__init__("\n".join(v.message for v in violations))


@dataclass(frozen=True, slots=True)
class Violation:
    keyword: str
    measured: float
    budget: float
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"keyword": self.keyword, "measured": self.measured, "budget": self.budget, "message": self.message}


def _fmt_bytes(n: float) -> str:
    return f"{int(n):,} B"


@dataclass(frozen=True, slots=True)
class Rule:
    """One budget keyword: ``bound`` is ``"min"`` or ``"max"``; ``measure`` reads the
    measured value; ``validate`` checks the budget value; ``explain`` writes the
    parenthesis with the baseline."""

    keyword: str
    bound: str
    what: str
    measure: Callable[[Measurement, Mapping[str, Any]], float | None]
    validate: Callable[[Any], str | None]
    explain: Callable[[Measurement, Mapping[str, Any]], str]
    fmt: Callable[[float], str] = lambda v: f"{v:.3f}"
    needs_accuracy: bool = False


def _fraction(v: Any) -> str | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0.0 <= v <= 1.0):
        return "a fraction between 0 and 1"
    return None


def _positive(v: Any) -> str | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
        return "a positive number"
    return None


def _drop(v: Any) -> str | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
        return "a non-negative number (the allowed fall of the metric below fp32's)"
    return None


def _metric_value(v: Any) -> str | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return "a number (the metric's minimum)"
    return None


def _bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else "True or False"


def _delegation(m: Measurement, b: Mapping[str, Any]) -> float:
    if m.delegation is None:
        raise BudgetError(f"{m.variant} on {m.where}: require_full_delegation applies to the android_gpu target, "
                          "which reports GPU delegation; this target reports none")
    # 1.0 when fully delegated; a budget of True (1.0) is missed by anything less.
    return 1.0 if m.delegation == "full" or not b["require_full_delegation"] else 0.0


def _delegation_explain(m: Measurement, b: Mapping[str, Any]) -> str:
    kernels = m.observation.extras.get("delegate_kernels")
    how = {"partial": f"the graph is partially delegated ({kernels} delegate kernels)",
           "none": "the GPU delegate executes none of the graph"}
    return how.get(m.delegation or "", f"delegation is {m.delegation!r}")


def _edgetpu_fraction(m: Measurement, b: Mapping[str, Any]) -> float:
    f = m.edgetpu_op_fraction
    if f is None:
        raise BudgetError(f"{m.variant} on {m.where}: min_edgetpu_op_fraction needs the variant's .tflite")
    return f


def _edgetpu_explain(m: Measurement, b: Mapping[str, Any]) -> str:
    analysis = m.observation.extras.get("edgetpu_analysis")
    if analysis and analysis.get("summary"):
        return str(analysis["summary"])
    if m.model_path is None:
        return "no analysis"
    from pytest_edgeopt.targets.edgetpu.compat import analyze

    report = analyze(m.model_path)
    return "; ".join([report.summary, *report.reasons[:3]])


def _need(m: Measurement, keyword: str, value: float | None, what: str) -> float:
    """``value``, or a :class:`BudgetError` saying this target does not measure ``what``."""
    if value is None:
        raise BudgetError(f"{m.variant} on {m.where}: {keyword} needs {what}, which target {m.target} did not "
                          "measure (see docs/profiling.md for what each target reports)")
    return float(value)


def _profile_value(m: Measurement, which: str) -> float | None:
    """A lifecycle or profile figure of an observation: ``init_ms``, ``first_inference_ms``,
    ``peak_memory_mb``, ``edgetpu_offchip_bytes``, ``partitions``, ``delegated_fraction``."""
    return _figure(m.observation, which)


def _figure(o: Any, which: str) -> float | None:
    if which in ("init_ms", "first_inference_ms"):
        v = getattr(o, which)
        return None if v is None else float(v)
    prof = o.profile
    if prof is None:
        return None
    if which in ("partitions", "delegated_fraction"):
        if prof.placement is None:
            return None
        return float(getattr(prof.placement, which))
    v = getattr(prof, which)
    return None if v is None else float(v)


#: keyword -> (figure, what it needs, unit formatter)
_PROFILE_BUDGETS: dict[str, tuple[str, str, Callable[[float], str]]] = {
    "max_init_ms": ("init_ms", "the model's load/init time", lambda v: f"{v:.4g} ms"),
    "max_first_inference_ms": ("first_inference_ms", "the first inference's time", lambda v: f"{v:.4g} ms"),
    "max_peak_memory_mb": ("peak_memory_mb", "the peak memory of loading and running", lambda v: f"{v:.4g} MiB"),
    "max_edgetpu_offchip_bytes": ("edgetpu_offchip_bytes", "the Edge TPU compiler's off-chip parameter memory",
                                  _fmt_bytes),
    "max_delegate_partitions": ("partitions", "the op placement (delegate partitions)", lambda v: f"{v:g}"),
    "min_delegated_op_fraction": ("delegated_fraction", "the op placement (ops on the delegate)",
                                  lambda v: f"{v:.3f}"),
}


def _profile_measure(keyword: str) -> Callable[[Measurement, Mapping[str, Any]], float]:
    which, what, _ = _PROFILE_BUDGETS[keyword]
    return lambda m, b: _need(m, keyword, _profile_value(m, which), what)


def _placement_text(m: Measurement) -> str:
    prof = m.observation.profile
    pl = prof.placement if prof else None
    if pl is None:
        return ""
    text = (f"{pl.delegated_nodes} of {pl.total_nodes} ops on {pl.delegate or 'the delegate'}, "
            f"{pl.partitions} partition{'s' if pl.partitions != 1 else ''}")
    if pl.fallback:
        shown = ", ".join(f"{op} #{i}" if i >= 0 else op for i, op in pl.fallback[:5])
        more = f" and {len(pl.fallback) - 5} more" if len(pl.fallback) > 5 else ""
        text += f"; on the CPU: {shown}{more}"
    return text


def _profile_explain(keyword: str) -> Callable[[Measurement, Mapping[str, Any]], str]:
    which, _, fmt = _PROFILE_BUDGETS[keyword]

    def explain(m: Measurement, b: Mapping[str, Any]) -> str:
        parts = []
        if which in ("partitions", "delegated_fraction"):
            parts.append(_placement_text(m))
        base = _figure(m.baseline, which)
        if base is not None:
            parts.append(f"{_base(m)} {fmt(base)}")
        prof = m.observation.profile
        if which == "peak_memory_mb" and prof is not None and prof.memory_source:
            parts.append(f"measured as {prof.memory_source}")
        if which == "edgetpu_offchip_bytes" and prof is not None and prof.edgetpu_onchip_bytes is not None:
            parts.append(f"on-chip {_fmt_bytes(prof.edgetpu_onchip_bytes)}")
        return "; ".join(p for p in parts if p) or "no baseline figure"

    return explain


def _count(v: Any) -> str | None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        return "a whole number >= 1"
    return None


def _bytes_budget(v: Any) -> str | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
        return "a non-negative number of bytes"
    return None


def _pct(m: Measurement, b: Mapping[str, Any]) -> float:
    return float(b.get("latency_percentile", 50))


def _base(m: Measurement) -> str:
    """``fp32`` (the baseline's variant), or ``fp32 on cpu`` when the baseline ran on another target."""
    name = m.baseline.variant or "fp32"
    return name if m.baseline.target == m.target else f"{name} on {m.baseline.target}"


def _acc_explain(m: Measurement, b: Mapping[str, Any]) -> str:
    base, this = m.baseline.accuracy, m.observation.accuracy
    assert base is not None and this is not None
    return f"{_base(m)} {base.value:.3f} -> {m.variant} {this.value:.3f} on {this.samples} samples"


RULES: dict[str, Rule] = {
    r.keyword: r
    for r in (
        Rule("min_size_reduction", "min", "size reduction",
             lambda m, b: m.size_reduction, _fraction,
             lambda m, b: f"fp32 {_fmt_bytes(m.baseline.size_bytes)} -> {m.variant} {_fmt_bytes(m.size_bytes)}"),
        Rule("min_compressed_size_reduction", "min", "compressed size reduction",
             lambda m, b: m.compressed_size_reduction, _fraction,
             lambda m, b: (f"gzip-9: fp32 {_fmt_bytes(m.baseline.compressed_size_bytes)} -> "
                           f"{m.variant} {_fmt_bytes(m.compressed_size_bytes)}")),
        Rule("max_size_bytes", "max", "size",
             lambda m, b: float(m.size_bytes), _positive,
             lambda m, b: f"fp32 {_fmt_bytes(m.baseline.size_bytes)}", fmt=_fmt_bytes),
        Rule("max_latency_ms", "max", "latency",
             lambda m, b: m.latency.percentile_ms(_pct(m, b)), _positive,
             lambda m, b: (f"p{_pct(m, b):g} of {m.latency.count} samples, cv {m.latency.cv:.2f}; "
                           f"{_base(m)} p{_pct(m, b):g} {m.baseline.latency.percentile_ms(_pct(m, b)):.4g} ms"),
             fmt=lambda v: f"{v:.4g} ms"),
        Rule("min_speedup", "min", "speedup",
             lambda m, b: m.speedup, _positive,
             lambda m, b: (f"{_base(m)} p50 {m.baseline.latency.p50_ms:.4g} ms -> {m.variant} p50 "
                           f"{m.latency.p50_ms:.4g} ms"), fmt=lambda v: f"{v:.2f}x"),
        Rule("max_accuracy_drop", "max", "accuracy drop",
             lambda m, b: m.accuracy_drop, _drop, _acc_explain, needs_accuracy=True),
        Rule("min_accuracy", "min", "accuracy",
             lambda m, b: m.metric, _metric_value, _acc_explain, needs_accuracy=True),
        Rule("require_full_delegation", "min", "GPU delegation",
             _delegation, _bool, _delegation_explain,
             fmt=lambda v: "full" if v >= 1.0 else "not full"),
        Rule("min_edgetpu_op_fraction", "min", "Edge TPU op fraction",
             _edgetpu_fraction, _fraction, _edgetpu_explain),
        Rule("max_init_ms", "max", "init time", _profile_measure("max_init_ms"), _positive,
             _profile_explain("max_init_ms"), fmt=_PROFILE_BUDGETS["max_init_ms"][2]),
        Rule("max_first_inference_ms", "max", "first inference", _profile_measure("max_first_inference_ms"),
             _positive, _profile_explain("max_first_inference_ms"), fmt=_PROFILE_BUDGETS["max_first_inference_ms"][2]),
        Rule("max_peak_memory_mb", "max", "peak memory", _profile_measure("max_peak_memory_mb"), _positive,
             _profile_explain("max_peak_memory_mb"), fmt=_PROFILE_BUDGETS["max_peak_memory_mb"][2]),
        Rule("max_edgetpu_offchip_bytes", "max", "Edge TPU off-chip parameter memory",
             _profile_measure("max_edgetpu_offchip_bytes"), _bytes_budget,
             _profile_explain("max_edgetpu_offchip_bytes"), fmt=_fmt_bytes),
        Rule("max_delegate_partitions", "max", "delegate partitions", _profile_measure("max_delegate_partitions"),
             _count, _profile_explain("max_delegate_partitions"), fmt=lambda v: f"{v:g}"),
        Rule("min_delegated_op_fraction", "min", "delegated op fraction",
             _profile_measure("min_delegated_op_fraction"), _fraction,
             _profile_explain("min_delegated_op_fraction")),
    )
}

#: Keywords that modify other budgets rather than being budgets themselves.
MODIFIERS: dict[str, Callable[[Any], str | None]] = {
    "latency_percentile": lambda v: None
    if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 100
    else "a percentile between 0 (exclusive) and 100",
}


def validate(budgets: Mapping[str, Any], where: str = "budget") -> dict[str, Any]:
    """Check keywords and values; return them. Raises BudgetError naming the problem."""
    if not budgets:
        raise BudgetError(f"{where}: no budget given; use keywords {', '.join(RULES)}")
    for key, value in budgets.items():
        if key in MODIFIERS:
            problem = MODIFIERS[key](value)
        elif key in RULES:
            problem = RULES[key].validate(value)
        else:
            raise BudgetError(f"{where}: unknown budget keyword {key!r}; known: {', '.join([*RULES, *MODIFIERS])}")
        if problem:
            raise BudgetError(f"{where}: {key}={value!r} must be {problem}")
    if set(budgets) <= set(MODIFIERS):
        raise BudgetError(f"{where}: {', '.join(budgets)} alone sets no budget")
    return dict(budgets)


def violations(m: Measurement, budgets: Mapping[str, Any]) -> list[Violation]:
    """Every budget ``m`` misses (empty when all are met)."""
    budgets = validate(budgets, f"{m.variant} on {m.where}")
    found: list[Violation] = []
    for key, budget in budgets.items():
        rule = RULES.get(key)
        if rule is None:
            continue
        if rule.needs_accuracy and (m.observation.accuracy is None or m.baseline.accuracy is None):
            raise BudgetError(
                f"{m.variant} on {m.where}: {key} needs an accuracy, but the model has no eval data; "
                "set ModelUnderTest(eval_data=(x, y))"
            )
        value = rule.measure(m, budgets)
        assert value is not None  # only accuracy rules read None, and they were checked above
        missed = value < budget if rule.bound == "min" else value > budget
        if missed:
            sign = "<" if rule.bound == "min" else ">"
            what = f"latency p{_pct(m, budgets):g}" if key == "max_latency_ms" else rule.what
            if rule.needs_accuracy and key == "min_accuracy":
                what = m.metric_name or what
            if key == "require_full_delegation":
                text = f"{m.variant} on {m.where}: full GPU delegation required, but {rule.explain(m, budgets)}"
            else:
                text = (f"{m.variant} on {m.where}: {what} {rule.fmt(value)} {sign} {rule.fmt(float(budget))} "
                        f"({rule.explain(m, budgets)})")
            found.append(Violation(key, value, float(budget), text))
    return found
