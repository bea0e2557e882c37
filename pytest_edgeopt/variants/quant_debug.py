"""Why accuracy was lost: which layers a post-training int8 variant quantized badly.

``layer_errors(mut, "int8", options)`` quantizes the model the way the variant does, runs
it on eval inputs next to the fp32 model, and ranks the quantized nodes by the error each
adds. It names the nodes to keep in float (selective quantization) and measures what that
gives, so a failed accuracy budget can say where the accuracy went and what to try::

    report = layer_errors(mut, "int8", test_options)
    "\\n".join(report.message_lines(3))       # for the failure message
    report.to_dict()                          # every row, for the JSON

How, by variant:

- ``int8``, ``int8_full``: TensorFlow Lite's quantization debugger
  (``tf.lite.experimental.QuantizationDebugger``) calibrates through the same converter
  settings as the variant and builds its debug model: the MLIR quantizer's model (the one
  ``convert()`` returns) with a float copy of every quantized op fed the *same* dequantized
  input, and a ``NumericVerify`` op comparing the two. So each node's error is its own,
  not what it inherited. The debug model is run here with the LiteRT interpreter
  (``experimental_preserve_all_tensors``, whole batches) rather than with ``debugger.run()``,
  which invokes one sample at a time on the deprecated ``tf.lite.Interpreter`` and sees
  only the differences, not the float signal they are to be compared with. The suggested
  nodes are what ``QuantizationDebugOptions(denylisted_nodes=...)`` takes, the mechanism
  the ``float_nodes`` option uses.
- ``int16x8``: TF 2.21 quantizes it with its older calibrator, which has no debug mode and
  no denylist. Its tensors keep the fp32 model's names, so each op's output is compared
  with the fp32 model's, and a node's error is how much it *adds* to what its inputs
  already carried. No nodes can be kept in float, so there is no suggestion.

The error a node is ranked by is its output's channel noise-to-signal ratio: per channel
(last axis), RMS of (dequantized - float) over the standard deviation of the fp32 model's
value of that tensor on the same inputs, capped at 1, averaged over the channels that vary
(0 = exact, 1 = the channel's signal is gone). Per channel, because the next layer may
weigh every channel equally whatever its range: one channel with a huge range takes the
whole per-tensor int8 scale, and the other channels are lost while TensorFlow's guide
metric (RMSE / scale, ~0.29 for plain rounding) still looks normal. That metric and the
debugger's own (mean error, max |error|, MSE, scale, zero point) are in every row too.

The suggestion: the worst nodes (at most :data:`SUGGEST_MAX`) whose error reaches
:data:`SUGGEST_ERROR`, each with the nodes that consume its output (up to the first op that
rescales): a float producer alone would have its output requantized, with the same range,
for an int8 consumer. A node already in the suggestion as a consumer is not expanded again.
The report quantizes the model with it and measures the metric, so the message can say
what it recovers; applying it is ``@pytest.mark.edgeopt_options(float_nodes=(...))``.
``float_nodes="auto"`` chooses the nodes while building, by the same per-node error
(:func:`pytest_edgeopt.variants.float_nodes.convert_auto`); a node that crashes at invoke or
produces NaN/inf is named, and its repair measured, by :mod:`pytest_edgeopt.variants.float_nodes`.

Plain Python: tensorflow is imported inside the functions only.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pytest_edgeopt.model import ModelError, ModelUnderTest, score
from pytest_edgeopt.variants.debug_graph import (
    LOST_CHANNEL,  # noqa: F401 (re-exported: rows count channels past it as lost)
    DebugGraph,
    DirectGraph,
    QuantDebugError,
    TensorStats,
    channel_nsr,
    debug_interpreter,
    dequantize,
    lockstep,
)
from pytest_edgeopt.variants.registry import (
    VARIANTS,
    BuildContext,
    VariantBuildError,
    VariantUnavailable,
    check_options,
    resolve_options,
    unavailable_reason,
)

#: Variants analysed, and how (see the module docstring).
METHODS = {"int8": "numeric_verify", "int8_full": "numeric_verify", "int16x8": "direct"}
#: A node whose error (channel noise-to-signal, 0..1) reaches this is suggested for float.
SUGGEST_ERROR = 0.1
#: At most this many of the worst nodes are suggested (each with the consumers it needs).
SUGGEST_MAX = 3
#: Eval samples compared at most.
DEFAULT_MAX_SAMPLES = 256
#: Seconds the comparison runs may take; past it no further chunk of samples is started.
DEFAULT_MAX_SECONDS = 30.0


class QuantDebugUnsupported(QuantDebugError):
    """The analysis does not apply to this variant; the message says why."""


def unsupported_reason(variant: str) -> str | None:
    """Why :func:`layer_errors` cannot analyse ``variant``, or ``None`` when it can."""
    if variant in METHODS:
        return None
    spec = VARIANTS.get(variant)
    if spec is None:
        return f"unknown variant {variant!r}"
    supported = ", ".join(METHODS)
    if variant == "fp32":
        why = "it is the float baseline: nothing is quantized"
    elif variant in ("float16", "dynamic_range") or variant in ("aeq_dynamic_wi8", "aeq_weight_only_wi8",
                                                                  "aeq_dynamic_wi4"):
        why = (f"it quantizes weights only ({spec.summary}), and the per-layer comparison needs "
               "quantized activations")
    elif spec.family == "tfmot":
        why = (f"it is made by fine-tuning ({spec.summary}), not by TFLiteConverter's post-training "
               "quantizer the debugger instruments")
    elif spec.family == "aeq":
        why = (f"it is quantized by AI Edge Quantizer ({spec.summary}), not by TFLiteConverter's "
               "quantizer the debugger instruments")
    else:
        why = spec.summary
    return f"per-layer quantization error is available for {supported} only; not for {variant}: {why}"


# -- results ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LayerError:
    """One quantized node and the error on its output.

    ``node``: the name ``float_nodes`` takes (the debugger's ``tensor_name``); ``layer``: a
    short label (the Keras layer path of the fused ops); ``op``: the TFLite op type;
    ``error``: channel noise-to-signal (0..1), what rows are ranked by (for ``int16x8``:
    what this node adds to its inputs' ``accumulated_error``); ``lost_channels`` of
    ``channels`` reach :data:`~pytest_edgeopt.variants.debug_graph.LOST_CHANNEL`; ``rmse_over_scale`` and ``range`` (the
    integer range times the scale) as in TensorFlow's debugger guide; the debugger's
    default metrics over every element of every sample (float units; ``num_elements`` per
    sample); ``keep_float``: the
    nodes to keep in float to take this output out of quantization (the node, and its
    consumers up to the first op that rescales).
    """

    node: str
    layer: str
    op: str
    error: float
    lost_channels: int
    channels: int
    rmse_over_scale: float
    range: float
    num_elements: int
    mean_error: float
    stddev: float
    max_abs_error: float
    mean_squared_error: float
    scale: float
    zero_point: int
    keep_float: tuple[str, ...] = ()
    accumulated_error: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {name: getattr(self, name) for name in self.__slots__}
        d["keep_float"] = list(self.keep_float)
        return d


@dataclass(frozen=True, slots=True)
class QuantDebugReport:
    """Per-node quantization error of one variant of one model, worst first.

    ``method``: ``numeric_verify`` (quantization debugger) or ``direct`` (see the module
    docstring); ``samples``: eval inputs used; ``seconds``: wall time of the analysis;
    ``suggestion``: nodes to keep in float (``float_nodes``), already-kept ones included;
    ``metric``, ``fp32_metric``, ``quantized_metric``, ``suggested_metric``: the model's
    metric on those samples (LiteRT interpreter, reference kernels) when labels were given;
    ``output_error``/``suggested_output_error``: channel noise-to-signal of the first
    output against fp32's; ``note``: a caveat to show with the rows.
    """

    model: str
    variant: str
    method: str
    samples: int
    seconds: float
    rows: tuple[LayerError, ...]
    suggestion: tuple[str, ...] = ()
    float_nodes: tuple[str, ...] = ()
    note: str = ""
    metric: str | None = None
    fp32_metric: float | None = None
    quantized_metric: float | None = None
    suggested_metric: float | None = None
    output_error: float | None = None
    suggested_output_error: float | None = None

    def worst(self, n: int = 3) -> tuple[LayerError, ...]:
        return self.rows[:n]

    @property
    def marker(self) -> str | None:
        """The marker that applies the suggestion, or ``None`` when there is none."""
        if not self.suggestion:
            return None
        return f"@pytest.mark.edgeopt_options(float_nodes={tuple(self.suggestion)!r})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "variant": self.variant, "method": self.method, "samples": self.samples,
            "seconds": round(self.seconds, 3), "metric": self.metric, "fp32_metric": self.fp32_metric,
            "quantized_metric": self.quantized_metric, "suggested_metric": self.suggested_metric,
            "output_error": self.output_error, "suggested_output_error": self.suggested_output_error,
            "float_nodes": list(self.float_nodes), "suggestion": list(self.suggestion),
            "marker": self.marker, "note": self.note, "rows": [r.to_dict() for r in self.rows],
        }

    def message_lines(self, n: int = 3) -> list[str]:
        """Lines for a failure message: the ``n`` worst nodes with their error, and the
        suggestion with what it measured here and the marker that applies it."""
        tool = ("TFLite quantization debugger" if self.method == "numeric_verify"
                else "int16x8 tensors vs fp32's")
        lines = [f"why {self.variant} lost accuracy ({tool}, {self.samples} eval samples): worst layers by "
                 "channel noise/signal (0 exact, 1 signal lost):"]
        for r in self.worst(n):
            lines.append(f"  {r.layer} ({r.op}): {r.error:.2f}, {r.lost_channels}/{r.channels} channels lost, "
                         f"RMSE/scale {r.rmse_over_scale:.2f}")
        if self.suggestion:
            labels = ", ".join(dict.fromkeys(layer_label(s) for s in self.suggestion))
            gain = ""
            if self.suggested_metric is not None and self.quantized_metric is not None:
                gain = (f": {self.metric} {self.suggested_metric:.4f} instead of {self.quantized_metric:.4f}"
                        + (f" (fp32 {self.fp32_metric:.4f})" if self.fp32_metric is not None else "")
                        + " on these samples")
            lines.append(f"keep {labels} in float (selective quantization){gain}; measure it with")
            lines.append(f"  {self.marker}")
        elif self.rows and self.method == "numeric_verify":
            lines.append(f"no layer stands out (worst {self.rows[0].error:.2f} < {SUGGEST_ERROR}): the loss is "
                         "spread over the model; try int16x8, quantization-aware training (qat_int8) or more "
                         "calibration_samples")
        if self.note:
            lines.append(self.note)
        return lines


def layer_label(node: str) -> str:
    """A short label for a node: the common Keras layer path of its fused op names
    (``m/dense/MatMul;m/dense/Relu`` -> ``m/dense``), else the name itself."""
    parts = [p for p in node.split(";") if p]
    if not parts:
        return node
    paths = [p.split("/") for p in parts]
    common: list[str] = []
    for pieces in zip(*paths):
        if len(set(pieces)) != 1:
            break
        common.append(pieces[0])
    if len(parts) == 1 or len(common) == len(paths[0]):
        common = paths[0][:-1] if len(paths[0]) > 1 else paths[0]
    return "/".join(common) or node


# -- the analysis ------------------------------------------------------------------------


def layer_errors(mut: ModelUnderTest, variant_name: str, options: Mapping[str, Any] | None = None,
                 eval_x: np.ndarray | None = None, *, labels: np.ndarray | None = None,
                 max_samples: int = DEFAULT_MAX_SAMPLES, max_seconds: float = DEFAULT_MAX_SECONDS,
                 fp32: bytes | None = None, measure_suggestion: bool = True) -> QuantDebugReport:
    """Per-node quantization error of ``variant_name`` of ``mut``, worst first.

    ``options``: the test's knobs (as ``@pytest.mark.edgeopt_options``), merged over the
    model's; the variant is quantized with them (calibration samples, ``float_nodes``).
    ``eval_x``: float inputs (default: ``mut``'s eval data, with its labels); at most
    ``max_samples`` are used, fewer when running them on the reference kernels would take
    more than ``max_seconds`` (the report's ``samples`` says how many). ``labels`` (or
    ``mut``'s when ``eval_x`` is not given) let the report give the metric of fp32, the
    variant and the suggestion. ``fp32``: the fp32 ``.tflite`` bytes when at hand (else
    converted here). ``measure_suggestion=False`` skips quantizing and running the model
    the suggestion gives (about 0.2 s for the digits CNN).

    About 2.5 s for the digits CNN on 256 samples once tensorflow is imported (two
    conversions with calibration; 1 s less when ``fp32`` is given).
    Raises :class:`QuantDebugUnsupported` for a variant it does not apply to, and
    :class:`QuantDebugError` when the model cannot be quantized or run.
    """
    reason = unsupported_reason(variant_name)
    if reason:
        raise QuantDebugUnsupported(reason)
    spec = VARIANTS[variant_name]
    missing = unavailable_reason(spec, mut)
    if missing:
        raise QuantDebugUnsupported(missing)
    try:
        check_options(options or {}, "options")
    except ValueError as exc:
        raise QuantDebugError(str(exc)) from None
    if eval_x is None:
        xy = mut.eval_arrays
        if xy is None:
            raise QuantDebugError(f"{mut.name!r} has no eval_data and no eval inputs were given")
        eval_x, labels = xy
    if isinstance(eval_x, (list, dict)):
        raise QuantDebugUnsupported(
            f"the model has {len(eval_x)} inputs ({', '.join(eval_x) if isinstance(eval_x, dict) else 'a list'}); "
            "the quantization debugger takes one input: compare the variants with the plugin's measurements instead")
    x = np.asarray(eval_x, dtype=np.float32)[:max_samples]
    y = None if labels is None else np.asarray(labels)[:max_samples]
    if len(x) == 0:
        raise QuantDebugError("no eval inputs to compare the float and quantized models on")
    start = time.perf_counter()
    resolved = resolve_options(mut, options)
    with tempfile.TemporaryDirectory(prefix="edgeopt-quant-debug-") as tmp:
        fp32_bytes: list[bytes] = [fp32] if fp32 is not None else []
        ctx = BuildContext(mut=mut, spec=spec, options=resolved, workdir=Path(tmp),
                           progress=lambda message: None, fp32=lambda: _fp32(ctx, fp32_bytes))
        try:
            run = _Budget(x, y, max_seconds)
            if METHODS[variant_name] == "numeric_verify":
                report = _numeric_verify(ctx, run, measure_suggestion)
            else:
                report = _direct(ctx, run)
        except (VariantBuildError, VariantUnavailable, ModelError) as exc:
            raise QuantDebugError(f"{variant_name} of {mut.name!r}: {exc}") from None
    seconds = time.perf_counter() - start
    return QuantDebugReport(**{**report, "model": mut.name, "variant": variant_name, "samples": run.used,
                               "seconds": seconds})


class _Budget:
    """The eval samples and the time the comparison runs may take."""

    def __init__(self, x: np.ndarray, y: np.ndarray | None, max_seconds: float) -> None:
        self.x, self.y, self.max_seconds = x, y, max_seconds
        self.used = len(x)
        self._fixed = False

    def run(self, models: Sequence[bytes], visit: Callable[[list[Any], int], None] | None) -> list[list[np.ndarray]]:
        """The first call runs within the time budget and fixes the samples later calls use."""
        deadline = None if self._fixed else time.perf_counter() + self.max_seconds
        outputs, self.used = lockstep(models, self.x[:self.used], visit, deadline)
        self._fixed = True
        return outputs

    @property
    def labels(self) -> np.ndarray | None:
        return None if self.y is None else self.y[:self.used]


def _fp32(ctx: BuildContext, cache: list[bytes]) -> bytes:
    if not cache:
        from pytest_edgeopt.variants.ptq import build_fp32

        cache.append(build_fp32(ctx))
    return cache[0]


def _numeric_verify(ctx: BuildContext, run: _Budget, measure: bool) -> dict[str, Any]:
    from pytest_edgeopt.variants import ptq
    from pytest_edgeopt.variants.tfenv import import_tf, native_output_captured, quiet_warnings, root_cause

    mode = ctx.spec.name
    kept = ptq.normalize_float_nodes(ctx.options.get("float_nodes"))
    converter = ptq.configure_converter(ctx, mode)
    debugger = ptq.quantization_debugger(converter, mode, mode, float_nodes=kept)
    debug = ptq.debug_model(debugger)
    fp32 = ctx.fp32()

    graph = DebugGraph(debug)
    if not graph.nodes:
        raise QuantDebugError(f"{mode}: the debug model has no quantized nodes to compare")
    # The signal a node's error is measured against: the fp32 model's value of the same
    # tensor (same name: the converter names it after the same fused ops) on the same inputs;
    # the debug model's float copy only when fp32 has no such tensor. The float copy is fed
    # the quantized upstream, so after a badly quantized layer it carries little signal.
    fp32_index = {d["name"]: d["index"] for d in debug_interpreter(fp32, preserve=False).get_tensor_details()}
    errors = {n.name: TensorStats() for n in graph.nodes}
    reference = {n.name: TensorStats() for n in graph.nodes}
    clean: dict[str, TensorStats] = {}

    def visit(interpreters: list[Any], count: int) -> None:
        dbg_it, fp_it = interpreters
        for node in graph.nodes:
            q = dequantize(dbg_it.get_tensor(node.q_index)[:count], node.scale, node.zero_point)
            f = dbg_it.get_tensor(node.f_index)[:count].astype(np.float32)
            errors[node.name].add(q - f)
            reference[node.name].add(f)
            i = fp32_index.get(node.name)
            if i is not None:
                value = fp_it.get_tensor(i)[:count]
                if value.shape == f.shape:
                    clean.setdefault(node.name, TensorStats()).add(value)

    outputs = run.run([debug, fp32], visit)
    rows = []
    for node in graph.nodes:
        signal = clean.get(node.name)
        if signal is None or signal.n != reference[node.name].n:
            signal = reference[node.name]
        rows.append(_row(node.name, node.op, errors[node.name], signal, node.scale, node.zero_point, node.bits,
                         run.used, graph.keep_float(node)))
    rows.sort(key=lambda r: -r.error)  # stable: graph order among equals

    result: dict[str, Any] = {"method": "numeric_verify", "rows": tuple(rows), "float_nodes": kept}
    result.update(_scores(ctx, outputs[1], outputs[0], run.labels))
    suggestion: list[str] = []
    for r in rows[:SUGGEST_MAX]:
        # A node already kept as a consumer of a worse one is not expanded again: its own
        # error was (mostly) the range it was handed.
        if r.error >= SUGGEST_ERROR and r.node not in suggestion:
            suggestion.extend(n for n in r.keep_float if n not in suggestion)
    if not suggestion:
        return result
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    chosen = tuple(sorted(set(kept) | set(suggestion), key=lambda n: (order.get(n, -1), n)))
    result["suggestion"] = chosen
    if mode == "int8_full":
        result["note"] = ("int8_full with float_nodes keeps int8 input and output, but those nodes run in float "
                          "(DEQUANTIZE/QUANTIZE around them): the model is no longer integer-only, and an "
                          "integer-only accelerator (Edge TPU) runs them on the CPU or rejects the model")
    if measure:
        tf = import_tf()
        with native_output_captured() as out, quiet_warnings():
            try:
                debugger.options = tf.lite.experimental.QuantizationDebugOptions(
                    denylisted_nodes=list(chosen), fully_quantize=(mode == "int8_full"))
                selective = bytes(debugger.get_nondebug_quantized_model())
            except Exception as exc:
                error: Exception | None = exc
            else:
                error = None
        if error is not None:
            raise QuantDebugError(f"{mode}: quantizing with the suggested float_nodes failed: "
                                  f"{root_cause(error)}\n{out.tail(6)}")
        sel_outputs = run.run([selective], None)[0]
        scored = _scores(ctx, outputs[1], sel_outputs, run.labels)
        result["suggested_metric"] = scored["quantized_metric"]
        result["suggested_output_error"] = scored["output_error"]
    return result


def _direct(ctx: BuildContext, run: _Budget) -> dict[str, Any]:
    from pytest_edgeopt.variants import ptq
    from pytest_edgeopt.variants.tfenv import run_converter

    quantized = run_converter(ptq.configure_converter(ctx, ctx.spec.name), ctx.spec.name)
    fp32 = ctx.fp32()
    graph = DirectGraph(quantized, fp32)
    if not graph.nodes:
        raise QuantDebugError(f"{ctx.spec.name}: no quantized tensor of the model matches a tensor of the fp32 model")
    errors = {n.name: TensorStats() for n in graph.nodes}
    signal = {n.name: TensorStats() for n in graph.nodes}

    def visit(interpreters: list[Any], count: int) -> None:
        q_it, fp_it = interpreters
        for node in graph.nodes:
            q = dequantize(q_it.get_tensor(node.q_index)[:count], node.scale, node.zero_point)
            f = fp_it.get_tensor(node.f_index)[:count].astype(np.float32)
            errors[node.name].add(q - f)
            signal[node.name].add(f)

    outputs = run.run([quantized, fp32], visit)
    accumulated = {n.name: channel_nsr(errors[n.name], signal[n.name])[0] for n in graph.nodes}
    rows = []
    for node in graph.nodes:
        before = max((accumulated[i] for i in node.inputs if i in accumulated), default=0.0)
        row = _row(node.name, node.op, errors[node.name], signal[node.name], node.scale, node.zero_point,
                   node.bits, run.used, ())
        rows.append(_replace(row, error=max(0.0, accumulated[node.name] - before),
                             accumulated_error=accumulated[node.name]))
    rows.sort(key=lambda r: -r.error)
    result: dict[str, Any] = {
        "method": "direct", "rows": tuple(rows),
        "note": ("int16x8 cannot keep layers in float: TF 2.21 quantizes it with a calibrator that has no "
                 "denylist (float_nodes works for int8 and int8_full)"),
    }
    result.update(_scores(ctx, outputs[1], outputs[0], run.labels))
    return result


def _replace(row: LayerError, **changes: Any) -> LayerError:
    return LayerError(**{**{name: getattr(row, name) for name in row.__slots__}, **changes})


def _scores(ctx: BuildContext, fp32_outputs: list[np.ndarray], outputs: list[np.ndarray],
            y: np.ndarray | None) -> dict[str, Any]:
    nsr, _, _ = channel_nsr(TensorStats.of(outputs[0] - fp32_outputs[0]), TensorStats.of(fp32_outputs[0]))
    result: dict[str, Any] = {"output_error": nsr}
    if y is not None:
        result["metric"] = ctx.mut.metric_name
        result["fp32_metric"] = score(ctx.mut.metric, fp32_outputs, y)
        result["quantized_metric"] = score(ctx.mut.metric, outputs, y)
    else:
        result["quantized_metric"] = None
    return result


def _row(name: str, op: str, err: TensorStats, sig: TensorStats, scale: float, zero_point: int, bits: int,
         samples: int, keep_float: tuple[str, ...]) -> LayerError:
    error, lost, channels = channel_nsr(err, sig)
    n = err.n * err.channels
    total = float(err.sum.sum()) if err.sum is not None else 0.0
    sq = float(err.sq.sum()) if err.sq is not None else 0.0
    mse = sq / n if n else 0.0
    mean = total / n if n else 0.0
    return LayerError(
        node=name, layer=layer_label(name), op=op, error=error, lost_channels=lost, channels=channels,
        rmse_over_scale=float(np.sqrt(mse) / scale) if scale else float("nan"),
        range=float(scale * (2 ** bits - 1)), num_elements=n // max(samples, 1),
        mean_error=mean, stddev=float(np.sqrt(max(mse - mean * mean, 0.0))), max_abs_error=err.max_abs,
        mean_squared_error=mse, scale=float(scale), zero_point=int(zero_point), keep_float=keep_float,
    )
