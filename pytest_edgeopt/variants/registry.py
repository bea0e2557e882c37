"""The variant names, what each needs, the knobs in its recipe, and who builds it.

Importing this module is cheap: builders are named as ``"module:function"`` and
imported only when a variant has to be built (they import tensorflow).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_edgeopt.names import VARIANT_NAMES

if TYPE_CHECKING:  # pragma: no cover
    from pytest_edgeopt.model import ModelUnderTest
    from pytest_edgeopt.variants.cache import VariantCache

#: Knobs and their defaults. A model's ``options`` and a test's
#: ``@pytest.mark.edgeopt_options(...)`` override them; only the knobs a variant lists
#: go into its recipe (and so into its cache key).
DEFAULT_OPTIONS: dict[str, Any] = {
    "calibration_samples": 100,  # representative samples (not batches) used to calibrate
    "sparsity": 0.8,  # final fraction of zero weights for pruning
    "clusters": 16,  # number of weight clusters per layer
    "finetune_epochs": 2,  # epochs of fine-tuning for QAT / pruning / clustering
    "learning_rate": 1e-3,  # Adam learning rate for fine-tuning (Keras' default, as in the tfmot guides)
    "batch_size": 32,  # fine-tuning batch size
    "loss": None,  # Keras loss for fine-tuning; None: the model's compiled loss, else inferred from labels
    "seed": 0,  # seed for fine-tuning and cluster initialisation
    # Nodes int8/int8_full keep in float (selective quantization), named as the quantization
    # debugger names them (pytest_edgeopt.variants.quant_debug's report suggests them). int16x8 cannot:
    # TF 2.21 quantizes it with a calibrator that has no denylist. In a recipe only when set.
    "float_nodes": (),
    # float_nodes="auto": as few nodes in float as keep top-1 within this fraction of fp32's
    # on the calibration samples (pytest_edgeopt.variants.float_nodes.convert_auto). In a
    # recipe only with float_nodes="auto".
    "float_nodes_max_drop": 0.01,
    # Measuring, not building (in no recipe): whether the model carries state across calls (a
    # stateful RNN, evaluated as one sequence; None: decide from the model), and the fp32
    # conversion-fidelity tolerance (None: default, False: off; see pytest_edgeopt.fidelity).
    "stateful": None,
    "fidelity": None,
}

#: Knobs left out of a recipe while they have their default value, so that adding them kept
#: the cache keys (and saved recipes) of every variant built before.
_OMITTED_WHEN_DEFAULT = frozenset({"float_nodes"})
#: Knobs in a recipe only when float_nodes is "auto".
_AUTO_ONLY = frozenset({"float_nodes_max_drop"})

_TRAIN = ("finetune_epochs", "learning_rate", "batch_size", "loss", "seed")


class VariantUnavailable(Exception):
    """This variant cannot be built for this model; the message says why (-> a skip): the
    tool that refuses it, the op or layer, and where it is in the model.

    ``details``: the tool's full error text (tracebacks, MLIR diagnostics), for the saved
    run; ``""`` when the message says it all. It survives pickling (worker processes).
    """

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


class VariantBuildError(Exception):
    """Building the variant failed (-> a fail); the message names the root cause (the
    exception's type and last meaningful line, the layer or op) and the remedy, without a
    deep tensorflow traceback.

    ``details``: the tool's full error text, for the saved run (``""``: none beyond the
    message). It survives pickling (worker processes).
    """

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


@dataclass(frozen=True, slots=True)
class VariantSpec:
    """One named variant.

    ``kinds``: the model kinds it can be built from (:data:`pytest_edgeopt.model.KINDS`);
    ``needs``: ``ModelUnderTest`` fields it requires; ``trains``: it fine-tunes Keras layers;
    ``knobs``: the options that shape it; ``builder``: ``"module:function"`` taking a
    :class:`BuildContext` and returning the ``.tflite`` bytes; ``phases``: the fine-tuning
    phases a cold build runs (pruning, clustering, QAT: each ``finetune_epochs`` of
    training), its rough build cost, by which pytest-xdist runs hand out the costliest
    builds first.
    """

    name: str
    family: str
    summary: str
    kinds: frozenset[str]
    builder: str
    needs: tuple[str, ...] = ()
    knobs: tuple[str, ...] = ()
    trains: bool = False
    phases: int = 0
    #: For a ``.tflite`` source: the builder (``"module:function"``) and the AI Edge Quantizer
    #: recipe it applies to the float model (the converter needs a TensorFlow model).
    tflite_builder: str = ""
    tflite_recipe: str = ""

    def build_function(self) -> Callable[[BuildContext], bytes]:
        """The builder; it picks :attr:`tflite_builder` for a ``.tflite`` source, and a
        fine-tuning builder goes through :mod:`~pytest_edgeopt.variants.keras_bridge` (a
        Keras 3 model is fine-tuned as its tf_keras twin, proved equivalent first)."""
        function = _load(self.builder)
        if self.tflite_builder:
            converter, quantizer = function, _load(self.tflite_builder)

            def by_kind(ctx: BuildContext) -> bytes:
                return (quantizer if ctx.mut.source.kind == "tflite" else converter)(ctx)

            return by_kind
        if self.trains:
            from pytest_edgeopt.variants.keras_bridge import bridged

            return bridged(function)
        return function


def _load(target: str) -> Callable[[BuildContext], bytes]:
    module, func = target.split(":")
    function: Callable[[BuildContext], bytes] = getattr(importlib.import_module(module, __package__), func)
    return function


_ALL = frozenset({"keras", "keras3", "saved_model", "tflite"})
_CONVERTIBLE = frozenset({"keras", "keras3", "saved_model"})
#: Fine-tunable kinds: a Keras 3 model through its tf_keras twin, a SavedModel only when it is a
#: Keras SavedModel (:mod:`pytest_edgeopt.variants.keras_bridge`).
_FINETUNABLE = frozenset({"keras", "keras3", "saved_model"})
_REP = ("representative_data",)
_CAL = ("calibration_samples",)
_SEL = _CAL + ("float_nodes", "float_nodes_max_drop")


def _v(name: str, family: str, summary: str, kinds: frozenset[str], builder: str, **kw: Any) -> VariantSpec:
    return VariantSpec(name, family, summary, kinds, builder, **kw)


VARIANTS: dict[str, VariantSpec] = {
    s.name: s
    for s in (
        _v("fp32", "baseline", "unoptimized float32 conversion (the baseline)", _ALL, ".ptq:build_fp32"),
        _v("float16", "ptq", "float16 weights", _ALL, ".ptq:build_float16",
           tflite_builder=".tflite_quant:build_float16", tflite_recipe="weight_only_wf16_afp32"),
        _v("dynamic_range", "ptq", "int8 weights, float activations", _ALL, ".ptq:build_dynamic_range",
           tflite_builder=".tflite_quant:build_dynamic_range", tflite_recipe="dynamic_wi8_afp32"),
        _v("int8", "ptq", "full integer, float input/output", _ALL, ".ptq:build_int8",
           tflite_builder=".tflite_quant:build_int8", tflite_recipe="static_wi8_ai8 (float I/O)", needs=_REP, knobs=_SEL),
        _v("int8_full", "ptq", "integer-only ops, int8 input/output", _ALL, ".ptq:build_int8_full",
           tflite_builder=".tflite_quant:build_int8_full", tflite_recipe="static_wi8_ai8", needs=_REP, knobs=_SEL),
        _v("int16x8", "ptq", "int16 activations, int8 weights", _ALL, ".ptq:build_int16x8",
           tflite_builder=".tflite_quant:build_int16x8", tflite_recipe="static_wi8_ai16 (float I/O)", needs=_REP, knobs=_CAL),
        _v("qat_int8", "tfmot", "quantization-aware training, int8", _FINETUNABLE, ".tfmot:build_qat_int8",
           needs=("train_data",), knobs=_TRAIN, trains=True, phases=1),
        _v("pruned", "tfmot", "magnitude pruning, float32", _FINETUNABLE, ".tfmot:build_pruned",
           needs=("train_data",), knobs=("sparsity",) + _TRAIN, trains=True, phases=1),
        _v("pruned_int8", "tfmot", "magnitude pruning, then int8 PTQ", _FINETUNABLE, ".tfmot:build_pruned_int8",
           needs=("train_data",) + _REP, knobs=("sparsity",) + _TRAIN + _CAL, trains=True, phases=1),
        _v("clustered", "tfmot", "weight clustering, float32", _FINETUNABLE, ".tfmot:build_clustered",
           needs=("train_data",), knobs=("clusters",) + _TRAIN, trains=True, phases=1),
        _v("clustered_int8", "tfmot", "weight clustering, then int8 PTQ", _FINETUNABLE, ".tfmot:build_clustered_int8",
           needs=("train_data",) + _REP, knobs=("clusters",) + _TRAIN + _CAL, trains=True, phases=1),
        _v("pqat_int8", "tfmot", "pruning-preserving QAT, int8", _FINETUNABLE, ".tfmot:build_pqat_int8",
           needs=("train_data",), knobs=("sparsity",) + _TRAIN, trains=True, phases=2),
        _v("cqat_int8", "tfmot", "cluster-preserving QAT, int8", _FINETUNABLE, ".tfmot:build_cqat_int8",
           needs=("train_data",), knobs=("clusters",) + _TRAIN, trains=True, phases=2),
        _v("pcqat_int8", "tfmot", "sparsity- and cluster-preserving QAT, int8", _FINETUNABLE, ".tfmot:build_pcqat_int8",
           needs=("train_data",), knobs=("sparsity", "clusters") + _TRAIN, trains=True, phases=3),
        _v("aeq_dynamic_wi8", "aeq", "AI Edge Quantizer: dynamic, int8 weights", _ALL, ".aeq:build_dynamic_wi8"),
        _v("aeq_weight_only_wi8", "aeq", "AI Edge Quantizer: int8 weights only", _ALL, ".aeq:build_weight_only_wi8"),
        _v("aeq_static_a8w8", "aeq", "AI Edge Quantizer: static int8 activations and weights", _ALL,
           ".aeq:build_static_a8w8", needs=_REP, knobs=_CAL),
        _v("aeq_dynamic_wi4", "aeq", "AI Edge Quantizer: dynamic, int4 weights", _ALL, ".aeq:build_dynamic_wi4"),
    )
}
if tuple(VARIANTS) != VARIANT_NAMES:  # the plugin offers and checks names from names.py
    raise RuntimeError(f"pytest_edgeopt.names.VARIANT_NAMES {VARIANT_NAMES} differs from the registry {tuple(VARIANTS)}")

BASELINE = "fp32"


def unknown_variants(names: list[str] | tuple[str, ...]) -> list[str]:
    return [n for n in names if n not in VARIANTS]


def check_options(options: Mapping[str, Any], where: str) -> None:
    """Raise ValueError naming an unknown knob or a nonsensical value."""
    for key, value in options.items():
        if key not in DEFAULT_OPTIONS:
            raise ValueError(f"{where}: unknown option {key!r}; known options: {', '.join(DEFAULT_OPTIONS)}")
        if key == "sparsity" and not (isinstance(value, (int, float)) and 0.0 < value < 1.0):
            raise ValueError(f"{where}: sparsity must be a fraction between 0 and 1 (exclusive), got {value!r}")
        if key in ("clusters", "finetune_epochs", "batch_size", "calibration_samples") and not (
            isinstance(value, int) and not isinstance(value, bool) and value >= 1
        ):
            raise ValueError(f"{where}: {key} must be a positive integer, got {value!r}")
        if key == "learning_rate" and not (isinstance(value, (int, float)) and value > 0):
            raise ValueError(f"{where}: learning_rate must be positive, got {value!r}")
        if key == "float_nodes" and value != "auto" and not (
            isinstance(value, (tuple, list)) and all(isinstance(n, str) and n for n in value)
        ):
            raise ValueError(f"{where}: float_nodes must be a tuple or list of node names (strings), "
                             f"or \"auto\", got {value!r}")
        if key == "float_nodes_max_drop" and not (
            isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value < 1.0
        ):
            raise ValueError(f"{where}: float_nodes_max_drop must be a fraction in [0, 1), got {value!r}")


def resolve_options(mut: ModelUnderTest, test_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Defaults, then the model's options, then the test's."""
    opts = dict(DEFAULT_OPTIONS)
    opts.update(mut.options or {})
    opts.update(test_options or {})
    return opts


def recipe(spec: VariantSpec, options: Mapping[str, Any], kind: str | None = None) -> dict[str, Any]:
    """Every setting that produces this variant (goes into the cache key and the results).

    ``float_nodes`` appears only when set, as a sorted list (JSON-stable, order-free) or
    ``"auto"`` (then with ``float_nodes_max_drop``). Built
    from a ``.tflite`` (``kind``), a post-training variant records the tool and the AI Edge
    Quantizer recipe it was made with.
    """
    rec: dict[str, Any] = {"variant": spec.name, "family": spec.family, "builder": spec.builder}
    if kind == "tflite" and spec.tflite_builder:
        rec.update(builder=spec.tflite_builder, tool="litert_quantizer", aeq_recipe=spec.tflite_recipe)
    for k in spec.knobs:
        value = options[k]
        if k in _OMITTED_WHEN_DEFAULT and not value:
            continue
        if k in _AUTO_ONLY and options.get("float_nodes") != "auto":
            continue
        rec[k] = sorted(set(value)) if k == "float_nodes" and value != "auto" else value
    return rec


def unavailable_reason(spec: VariantSpec, mut: ModelUnderTest) -> str | None:
    """Why ``spec`` cannot be built for ``mut`` (a skip reason), or ``None``.

    Decided from the model's kind and which data fields are set, without tensorflow.
    """
    src = mut.source
    reason = kind_reason(spec, src.kind, src.trainable)
    if reason:
        return reason.replace("{model}", src.description)
    for need in spec.needs:
        if getattr(mut, need) is None:
            return f"{spec.name} needs ModelUnderTest({need}=...), which {mut.name!r} does not set"
    return None


def kind_reason(spec: VariantSpec, kind: str, trainable: bool = True) -> str | None:
    """Why ``spec`` cannot be built from a model of ``kind`` (``trainable``: it has Keras
    layers), or ``None``; ``{model}`` stands for the model's description."""
    if kind not in spec.kinds:
        if kind == "tflite":
            return (f"{spec.name} fine-tunes Keras layers, and a .tflite has none: pass the Keras model, a "
                    ".keras/.h5 file or a Keras SavedModel to get the training-based variants")
        return f"{spec.name} cannot be built from a {kind} model"
    if spec.trains and not trainable:
        return (f"{spec.name} fine-tunes Keras layers, but {{model}} has none (a plain SavedModel); "
                "pass the Keras model or a .keras/.h5 file")
    return None


#: The rows of the model-inputs table: label, kind, whether it has Keras layers.
INPUT_KINDS = (
    ("tf_keras model, `.h5`, Keras 2 `.keras`", "keras", True),
    ("Keras 3 model or `.keras`", "keras3", True),
    ("Keras 2 SavedModel (`keras_metadata.pb`)", "saved_model", True),
    ("plain SavedModel", "saved_model", False),
    ("float `.tflite`", "tflite", False),
)
#: How each family is built, by input kind where it differs.
_HOW = {
    "baseline": {"tflite": "the file itself", "": "TFLiteConverter"},
    "ptq": {"tflite": "AI Edge Quantizer recipes", "": "TFLiteConverter"},
    "tfmot": {"keras3": "tfmot on a tf_keras twin (outputs checked)",
              "saved_model": "tfmot on the tf_keras load (outputs checked)", "": "tfmot"},
    "aeq": {"": "AI Edge Quantizer on the fp32 .tflite"},
}


def input_support_table() -> str:
    """The README's "Model inputs" table (Markdown): input kind x variant family, each cell
    the tool that builds the family or why it cannot be built. Generated from :data:`VARIANTS`."""
    families = list(dict.fromkeys(spec.family for spec in VARIANTS.values()))
    lines = ["| input | " + " | ".join(f"{f} ({', '.join(n for n, s in VARIANTS.items() if s.family == f)})"
                                        for f in families) + " |",
             "|---" * (len(families) + 1) + "|"]
    for label, kind, trainable in INPUT_KINDS:
        cells = []
        for family in families:
            reasons = [kind_reason(spec, kind, trainable) for spec in VARIANTS.values() if spec.family == family]
            refused = next((r for r in reasons if r), None)
            if refused:
                cells.append("no: " + refused.split(" ", 1)[1].replace("{model}", "it"))
            else:
                how = _HOW[family]
                cells.append("yes: " + how.get(kind, how[""]))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@dataclass
class BuildContext:
    """What a builder gets.

    ``mut``: the model and its data; ``options``: the resolved knobs; ``workdir``: a
    scratch directory the builder may use; ``progress(message)``: report progress (one
    line per epoch) so long builds never look hung; ``fp32``: returns the fp32 ``.tflite``
    bytes (built or cached through the same store), for builders that start from it;
    ``memo``: per-process store of intermediates shared between builds (a pruned Keras
    model for both ``pruned`` and ``pruned_int8``), keyed by the builder; ``cache``: the
    store the variant goes to, where a builder also keeps such intermediates for other
    processes (pytest-xdist workers, later runs) to reuse; ``None``: the memo only;
    ``notes``: what the builder found out and chose while building (a conversion path,
    layers left float or dense, a loss twin), for the caller to add to the variant's
    recipe and keep with its cache entry. Notes follow from the recipe and the model, so
    they are not part of the cache key.
    """

    mut: ModelUnderTest
    spec: VariantSpec
    options: Mapping[str, Any]
    workdir: Path
    progress: Callable[[str], None]
    fp32: Callable[[], bytes]
    memo: dict[Any, Any] = field(default_factory=dict)
    cache: VariantCache | None = None
    notes: dict[str, Any] = field(default_factory=dict)
