"""Parse the console output of TFLite/LiteRT's ``benchmark_model`` tool.

The formats are the ones printed by ``tflite/tools/benchmark/benchmark_model.cc``
(``BenchmarkModel::Run`` and ``BenchmarkLoggingListener``), ``benchmark_tflite_model.cc``
(delegation outcome) and ``Stat::OutputToStream`` / ``StatWithPercentiles::OutputToStream``
in ``xla/tsl/util/stats_calculator.h``, across old and new builds:

- ``count=0`` (no runs) · ``count=1 curr=X`` · ``count=N curr=X(all same)`` ·
  ``count=N first=X curr=X min=X max=X avg=X std=X``, each optionally followed by
  ``p5=X median=X p95=X`` (newer builds). ``avg`` is a C++ ``double`` streamed with the
  default precision, so it can be ``1.24027e+06``.
- Lines may carry a ``INFO: `` prefix (console builds) or none (old builds), and other
  log lines (delegate creation, parameters, op profiling tables) are interleaved.

With ``--enable_op_profiling=true`` the tool also prints (``ProfileSummaryDefaultFormatter::
HandleOutput`` in ``tflite/profiling/profile_summary_formatter.cc``, tables by
``StatsCalculator`` in ``stats_calculator.cc``) ``Profiling Info for Benchmark
Initialization:`` and ``Operator-wise Profiling Info for Regular Benchmark Runs:``, each
followed by ``====... Run Order ====...`` and ``Top by Computation Time`` tables of
tab-separated columns ``[node type] [first] [avg ms] [%] [cdf%] [mem KB] [times called]
[Name]``, where the name is ``[output tensor names]:NODE_INDEX`` (``profile_summarizer.cc``);
:func:`parse_op_profile` reads the run-order table of the regular runs. The delegate's
``Replacing N out of M node(s) with delegate (NAME) node, yielding K partitions for the
whole graph.`` (older builds: ``Replacing N node(s) with delegate (NAME) node, yielding K
partitions.``) is read into :class:`DelegateReplacement`, the GPU delegate's ``Following
operations are not supported by GPU delegate:`` list into ``unsupported``.

The first stats line belongs to the warm-up runs, the second to the timed runs (the tool
prints ``Running benchmark for at least ...`` before each). Output without the timed-run
stats (a crash, a truncated log, another tool) raises :class:`BenchmarkOutputError`
quoting the tail of the text, never a silent zero. Plain Python: no pytest, no device.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

#: How much of the raw output an error message (and :attr:`BenchmarkOutput.tail`) quotes.
TAIL_LINES = 15
TAIL_CHARS = 2000

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?nan|[-+]?inf"

# A stats line: `count=` must start the message (after an optional log prefix); the op
# profiler's "Timings (microseconds): count=..." and "Memory (bytes): count=..." lines
# are summaries of other things and are excluded below.
_STATS = re.compile(r"(?:^|\s|:)count=(?P<count>\d+)(?P<rest>(?:\s+(?:first|curr|p5)=.*)?)$")
_NOT_RUN_STATS = ("Timings (", "Memory (", "(microseconds)", "(bytes)")
_KV = re.compile(r"(?P<key>first|curr|min|max|avg|std|p5|median|p95)=(?P<value>" + _NUM + r")")
_ALL_SAME = re.compile(r"curr=(?:" + _NUM + r")\s*\(all same\)")

_MODEL_SIZE = re.compile(r"The input model file size \(MB\):\s*(?P<v>" + _NUM + ")")
_INIT = re.compile(r"Initialized session in\s*(?P<v>" + _NUM + r")\s*ms")
_TIMINGS = re.compile(
    r"Inference timings in us:\s*Init:\s*(?P<init>" + _NUM + r"),\s*"
    r"First inference:\s*(?P<first>" + _NUM + r"),\s*"
    r"Warmup \(avg\):\s*(?P<warmup>" + _NUM + r"),\s*"
    r"Inference \(avg\):\s*(?P<inference>" + _NUM + ")"
)
_MEMORY = re.compile(
    r"(?:Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\):\s*"
    r"init=(?P<init>" + _NUM + r")\s+overall=(?P<overall>" + _NUM + ")"
)
_PEAK = re.compile(r"Overall peak memory footprint \(MB\) via periodic monitoring:\s*(?P<v>" + _NUM + ")")
_FULL = re.compile(
    r"Explicitly applied (?P<name>\S+) delegate, and the model graph will be completely executed by the delegate"
)
_PARTIAL = re.compile(
    r"Explicitly applied (?P<name>\S+) delegate, and the model graph will be partially executed by "
    r"the delegate w/ (?P<n>\d+) delegate kernels"
)
_NONE = re.compile(
    r"Though (?P<name>\S+) delegate is explicitly applied, the model graph will not be executed by the delegate"
)
_ERROR = re.compile(r"^(?:ERROR|E)\b[:/ ]|\bERROR: |Aborted|Check failed|FATAL")
_REPLACING = re.compile(
    r"Replacing (?P<n>\d+)(?: out of (?P<m>\d+))? node\(s\) with delegate \((?P<name>[^)]*)\) node, "
    r"yielding (?P<k>\d+) partitions"
)
_UNSUPPORTED_HEAD = "Following operations are not supported by"
_UNSUPPORTED_OP = re.compile(r"^(?:(?:INFO|ERROR|WARN|WARNING): )?(?P<op>[A-Z][A-Za-z0-9_/ ]*?): (?P<why>.+)$")
_RUN_PROFILE_HEAD = "Operator-wise Profiling Info for Regular Benchmark Runs:"
_INIT_PROFILE_HEAD = "Profiling Info for Benchmark Initialization:"
_TABLE_HEAD = re.compile(r"^=+ (?P<title>.+?) =+$")
_NODE_INDEX = re.compile(r":(?P<index>\d+)$")


class BenchmarkOutputError(ValueError):
    """``benchmark_model`` output that has no timed-run statistics (or is malformed).

    ``tail`` holds the last lines of the text, which the message quotes.
    """

    def __init__(self, reason: str, text: str) -> None:
        self.reason = reason
        self.tail = output_tail(text)
        super().__init__(f"{reason}; benchmark_model output ended with:\n{self.tail or '<no output>'}")


def output_tail(text: str, lines: int = TAIL_LINES, chars: int = TAIL_CHARS) -> str:
    """The last ``lines`` non-empty lines of ``text``, at most ``chars`` characters."""
    kept = [ln.rstrip() for ln in text.splitlines() if ln.strip()][-lines:]
    tail = "\n".join(kept)
    return tail[-chars:]


@dataclass(frozen=True, slots=True)
class RunStats:
    """One ``count=... first=... curr=...`` line, in microseconds.

    For ``count=1`` and ``curr=X(all same)`` lines the tool prints only ``curr``; then
    ``first``, ``min``, ``max`` and ``avg`` all equal it, ``std`` is 0 and ``all_same``
    is true. ``p5``/``median``/``p95`` are ``None`` for builds that do not print them.
    """

    count: int
    first_us: float
    curr_us: float
    min_us: float
    max_us: float
    avg_us: float
    std_us: float
    p5_us: float | None = None
    median_us: float | None = None
    p95_us: float | None = None
    all_same: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Delegation:
    """Outcome names of a delegate application (strings, so they go into JSON as-is)."""

    FULL = "full"
    PARTIAL = "partial"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class DelegateOutcome:
    """One ``Explicitly applied X delegate ...`` / ``Though X delegate ...`` line.

    ``outcome`` is ``full``, ``partial`` or ``none``; ``kernels`` is the number of
    delegate kernels the graph was split into (1 for ``full``, 0 for ``none``).
    """

    delegate: str
    outcome: str
    kernels: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class DelegateReplacement:
    """One ``Replacing N out of M node(s) with delegate (NAME) node, yielding K partitions``
    line: ``replaced`` nodes of ``total`` (``None`` in older builds' wording) went to the
    delegate ``name`` (``TfLiteGpuDelegateV2``, ``TfLiteXNNPackDelegate``); ``partitions``
    is the graph's node subsets after it (delegate kernels and the CPU runs between them)."""

    name: str
    replaced: int
    total: int | None
    partitions: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "replaced": self.replaced, "total": self.total, "partitions": self.partitions}


@dataclass(frozen=True, slots=True)
class OpRow:
    """One row of the ``Run Order`` table: node ``index`` (from the name's ``:N``, ``-1``
    if absent), ``op`` type (``CONV_2D``, ``TfLiteGpuDelegateV2``...), ``first_ms`` and
    ``avg_ms`` per inference, its share ``percent`` of the run, ``name`` as printed."""

    index: int
    op: str
    first_ms: float
    avg_ms: float
    percent: float
    name: str


def parse_op_profile(text: str) -> tuple[OpRow, ...]:
    """The ``Run Order`` table of the regular runs' operator-wise profile (primary graph,
    the first table after the heading), in run order; ``()`` when the output has none."""
    lines = text.splitlines()
    try:
        start = next(i for i, ln in enumerate(lines) if _RUN_PROFILE_HEAD in ln)
    except StopIteration:
        return ()
    rows: list[OpRow] = []
    in_table = False
    for raw in lines[start + 1:]:
        line = raw.strip()
        head = _TABLE_HEAD.match(line)
        if head:
            if in_table:
                break
            in_table = head.group("title") == "Run Order"
            continue
        if _INIT_PROFILE_HEAD in line:
            break
        if not in_table or not line or line.startswith("[node type]"):
            if in_table and rows and not line:
                break
            continue
        cols = [c.strip() for c in raw.split("\t") if c.strip()]
        if len(cols) < 8:
            continue
        try:
            first, avg, pct = float(cols[1]), float(cols[2]), float(cols[3].rstrip("%"))
        except ValueError:
            continue
        name = "\t".join(cols[7:])
        m = _NODE_INDEX.search(name)
        rows.append(OpRow(int(m.group("index")) if m else -1, cols[0], first, avg, pct, name))
    return tuple(rows)


@dataclass(frozen=True, slots=True)
class BenchmarkOutput:
    """Everything ``benchmark_model`` reported about one run of the tool.

    Sizes in MB (10**6 bytes for the model size, MiB for memory, as the tool prints
    them), times in the unit their name says. ``None`` means the line was absent (an
    older build, memory reporting unsupported, no delegate applied). ``delegation`` and
    ``delegate_kernels`` summarise the first delegate applied explicitly (the only one
    for ``--use_gpu=true`` or ``--use_xnnpack=true`` runs); ``delegates`` lists all of
    them. ``errors`` are the ``ERROR:`` lines; ``tail`` the last lines of the text.
    """

    inference: RunStats
    warmup: RunStats | None = None
    model_size_mb: float | None = None
    init_ms: float | None = None
    init_us: float | None = None
    first_inference_us: float | None = None
    warmup_avg_us: float | None = None
    inference_avg_us: float | None = None
    memory_init_mb: float | None = None
    memory_overall_mb: float | None = None
    peak_memory_mb: float | None = None
    delegates: tuple[DelegateOutcome, ...] = ()
    errors: tuple[str, ...] = ()
    tail: str = ""
    replacements: tuple[DelegateReplacement, ...] = ()
    unsupported: tuple[tuple[str, str], ...] = ()
    ops: tuple[OpRow, ...] = ()

    @property
    def delegation(self) -> str | None:
        return self.delegates[0].outcome if self.delegates else None

    @property
    def delegate_kernels(self) -> int | None:
        return self.delegates[0].kernels if self.delegates else None

    def delegate(self, name: str) -> DelegateOutcome | None:
        """The outcome for the delegate called ``name`` (``GPU``, ``XNNPACK``...), if applied."""
        for d in self.delegates:
            if d.delegate.lower() == name.lower():
                return d
        return None

    def to_dict(self) -> dict[str, Any]:
        """The parsed numbers (not the raw tail), JSON-serialisable."""
        return {
            "model_size_mb": self.model_size_mb,
            "init_ms": self.init_ms,
            "init_us": self.init_us,
            "first_inference_us": self.first_inference_us,
            "warmup_avg_us": self.warmup_avg_us,
            "inference_avg_us": self.inference_avg_us,
            "memory_init_mb": self.memory_init_mb,
            "memory_overall_mb": self.memory_overall_mb,
            "peak_memory_mb": self.peak_memory_mb,
            "warmup": self.warmup.to_dict() if self.warmup else None,
            "inference": self.inference.to_dict(),
            "delegation": self.delegation,
            "delegate_kernels": self.delegate_kernels,
            "delegates": [d.to_dict() for d in self.delegates],
            "replacements": [r.to_dict() for r in self.replacements],
            "unsupported": [list(u) for u in self.unsupported],
        }


def _num(s: str) -> float:
    return float(s)


def _parse_stats(count: int, rest: str, line: str, text: str) -> RunStats | None:
    """Fields of one stats line; ``None`` for ``count=0``."""
    values = {m.group("key"): _num(m.group("value")) for m in _KV.finditer(rest)}
    pct = (values.get("p5"), values.get("median"), values.get("p95"))
    if count == 0:
        return None
    if "curr" not in values:
        raise BenchmarkOutputError(f"malformed statistics line {line.strip()!r} (no curr=)", text)
    all_same = bool(_ALL_SAME.search(rest)) or (count == 1 and "first" not in values)
    if all_same:
        v = values["curr"]
        return RunStats(count, v, v, v, v, v, 0.0, *pct, all_same=True)
    missing = [k for k in ("first", "min", "max", "avg", "std") if k not in values]
    if missing:
        raise BenchmarkOutputError(
            f"malformed statistics line {line.strip()!r} (missing {', '.join(missing)})", text
        )
    return RunStats(
        count,
        values["first"],
        values["curr"],
        values["min"],
        values["max"],
        values["avg"],
        values["std"],
        *pct,
        all_same=values["min"] == values["max"],
    )


def parse_benchmark_output(text: str) -> BenchmarkOutput:
    """Parse ``benchmark_model``'s stdout+stderr (any order of interleaved log lines).

    Raises :class:`BenchmarkOutputError` (quoting the output's tail) when there is no
    statistics line for the timed runs, when it says ``count=0``, or when a stats line
    is malformed.
    """
    stats: list[tuple[RunStats | None, str]] = []
    found: dict[str, Any] = {}
    delegates: list[DelegateOutcome] = []
    errors: list[str] = []
    replacements: list[DelegateReplacement] = []
    unsupported: list[tuple[str, str]] = []
    in_unsupported = False

    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if _UNSUPPORTED_HEAD in line:
            in_unsupported = True
            if _ERROR.search(line):
                errors.append(line)
            continue
        if in_unsupported:
            op = _UNSUPPORTED_OP.match(line)
            if op and "operations will run on" not in line:
                unsupported.append((op.group("op"), op.group("why")))
                continue
            in_unsupported = False
        if m := _REPLACING.search(line):
            replacements.append(DelegateReplacement(
                m.group("name"), int(m.group("n")), int(m.group("m")) if m.group("m") else None,
                int(m.group("k"))))
            continue
        m = _STATS.search(line)
        if m and "=" not in line[: m.start()] and not any(tag in line[: m.start() + 1] for tag in _NOT_RUN_STATS):
            stats.append((_parse_stats(int(m.group("count")), m.group("rest"), line, text), line))
            continue
        if m := _TIMINGS.search(line):
            found["init_us"] = _num(m.group("init"))
            found["first_inference_us"] = _num(m.group("first"))
            found["warmup_avg_us"] = _num(m.group("warmup"))
            found["inference_avg_us"] = _num(m.group("inference"))
        elif m := _MODEL_SIZE.search(line):
            found["model_size_mb"] = _num(m.group("v"))
        elif m := _INIT.search(line):
            found["init_ms"] = _num(m.group("v"))
        elif m := _MEMORY.search(line):
            found["memory_init_mb"] = _num(m.group("init"))
            found["memory_overall_mb"] = _num(m.group("overall"))
        elif m := _PEAK.search(line):
            found["peak_memory_mb"] = _num(m.group("v"))
        elif m := _FULL.search(line):
            delegates.append(DelegateOutcome(m.group("name"), Delegation.FULL, 1))
        elif m := _PARTIAL.search(line):
            delegates.append(DelegateOutcome(m.group("name"), Delegation.PARTIAL, int(m.group("n"))))
        elif m := _NONE.search(line):
            delegates.append(DelegateOutcome(m.group("name"), Delegation.NONE, 0))
        elif _ERROR.search(line):
            errors.append(line)

    if not stats:
        raise BenchmarkOutputError("no benchmark statistics (count=...) in the output", text)
    if len(stats) < 2:
        raise BenchmarkOutputError(
            "only the warm-up statistics are in the output, not the timed runs' (truncated or crashed?)", text
        )
    warmup, _ = stats[0]
    inference, line = stats[1]
    if inference is None:
        raise BenchmarkOutputError(f"the timed runs ran 0 times ({line!r})", text)
    if not math.isfinite(inference.avg_us):
        raise BenchmarkOutputError(f"non-finite average in {line!r}", text)

    return BenchmarkOutput(
        inference=inference,
        warmup=warmup,
        delegates=tuple(delegates),
        errors=tuple(errors),
        tail=output_tail(text),
        replacements=tuple(replacements),
        unsupported=tuple(unsupported),
        ops=parse_op_profile(text),
        **found,
    )
