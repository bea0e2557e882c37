"""Profile figures of one variant on one target beyond steady-state latency.

What a target can say about a run besides its latency samples: the warm-up mean, the peak
memory of loading and running the variant, where its ops ran (placement on a delegate or an
accelerator and what fell back to the CPU), time per op, and the Edge TPU compiler's
parameter memory. Every field is optional: a target fills in what it can measure honestly
and leaves the rest ``None`` / empty. Plain Python, no TensorFlow.

Saved in the run document as ``observation["profile"]`` (:meth:`Profile.to_dict`); the
lifecycle times ``init_ms`` and ``first_inference_ms`` stay top-level observation fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class OpTime:
    """Time of one op (node) per inference.

    ``index``: node index in the primary subgraph; ``op``: op type (``CONV_2D``,
    ``TfLiteGpuDelegateV2`` for a delegate kernel); ``name``: node or output tensor name,
    ``""`` if the tool gives none; ``avg_ms``: mean milliseconds per inference; ``on``:
    where it ran (``"cpu"``, ``"gpu"``, ``"edgetpu"``, ``"delegate"``).
    """

    index: int
    op: str
    avg_ms: float
    name: str = ""
    on: str = "cpu"

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "op": self.op, "avg_ms": self.avg_ms, "name": self.name, "on": self.on}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> OpTime:
        return cls(index=int(d["index"]), op=str(d["op"]), avg_ms=float(d["avg_ms"]),
                   name=str(d.get("name") or ""), on=str(d.get("on") or "cpu"))


@dataclass(frozen=True, slots=True)
class Placement:
    """Where the model's ops ran on an accelerator target.

    ``total_nodes``: ops in the model; ``delegated_nodes``: ops the delegate (GPU) or the
    Edge TPU took; ``partitions``: delegate partitions (Edge TPU subgraphs); ``delegate``:
    its name (``"gpu"``, ``"edgetpu"``) or ``None``; ``fallback``: ``(node index, op type)``
    of every op that ran on the CPU instead (index ``-1`` where the tool gives only the type).
    """

    total_nodes: int
    delegated_nodes: int
    partitions: int
    delegate: str | None = None
    fallback: tuple[tuple[int, str], ...] = ()

    @property
    def delegated_fraction(self) -> float:
        """Share of ops on the accelerator, 0-1 (1.0 for an empty model)."""
        return self.delegated_nodes / self.total_nodes if self.total_nodes else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"total_nodes": self.total_nodes, "delegated_nodes": self.delegated_nodes,
                "partitions": self.partitions, "delegate": self.delegate,
                "fallback": [list(f) for f in self.fallback]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Placement:
        return cls(total_nodes=int(d["total_nodes"]), delegated_nodes=int(d["delegated_nodes"]),
                   partitions=int(d["partitions"]), delegate=d.get("delegate"),
                   fallback=tuple((int(i), str(op)) for i, op in d.get("fallback") or ()))


@dataclass(frozen=True, slots=True)
class Profile:
    """Everything but steady-state latency that one run measured.

    ``warmup_mean_ms``: mean of the warm-up invokes; ``peak_memory_mb``: peak memory of
    loading and running the variant in MiB, measured as ``memory_source`` says (e.g.
    ``"child rss"``, ``"benchmark_model peak footprint"``); ``placement``: see
    :class:`Placement`; ``ops``: per-op times, slowest first; ``ops_source``: the tool that
    timed them; ``edgetpu_onchip_bytes`` / ``edgetpu_offchip_bytes``: parameter memory the
    Edge TPU compiler placed on and off the chip.
    """

    warmup_mean_ms: float | None = None
    peak_memory_mb: float | None = None
    memory_source: str | None = None
    placement: Placement | None = None
    ops: tuple[OpTime, ...] = ()
    ops_source: str | None = None
    edgetpu_onchip_bytes: int | None = None
    edgetpu_offchip_bytes: int | None = None
    unknown: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"warmup_mean_ms": self.warmup_mean_ms, "peak_memory_mb": self.peak_memory_mb,
                "memory_source": self.memory_source,
                "placement": self.placement.to_dict() if self.placement else None,
                "ops": [o.to_dict() for o in self.ops], "ops_source": self.ops_source,
                "edgetpu_onchip_bytes": self.edgetpu_onchip_bytes,
                "edgetpu_offchip_bytes": self.edgetpu_offchip_bytes, **self.unknown}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Profile:
        known = {"warmup_mean_ms", "peak_memory_mb", "memory_source", "placement", "ops", "ops_source",
                 "edgetpu_onchip_bytes", "edgetpu_offchip_bytes"}
        placement = d.get("placement")
        return cls(warmup_mean_ms=d.get("warmup_mean_ms"), peak_memory_mb=d.get("peak_memory_mb"),
                   memory_source=d.get("memory_source"),
                   placement=Placement.from_dict(placement) if placement else None,
                   ops=tuple(OpTime.from_dict(o) for o in d.get("ops") or ()),
                   ops_source=d.get("ops_source"),
                   edgetpu_onchip_bytes=d.get("edgetpu_onchip_bytes"),
                   edgetpu_offchip_bytes=d.get("edgetpu_offchip_bytes"),
                   unknown={k: v for k, v in d.items() if k not in known})
