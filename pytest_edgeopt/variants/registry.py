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
    # Measuring, not building (in no recipe): whether the model carries state across calls (a
    # stateful RNN, evaluated as one sequence; None: decide from the model), and the fp32
    # conversion-fidelity tolerance (None: default, False: off; see pytest_edgeopt.fidelity).
    "stateful": None,
    "fidelity": None,
}

#: Knobs left out of a recipe while they have their default value, so that adding them kept
#: the cache keys (and saved recipes) of every variant built before.
_OMITTED_WHEN_DEFAULT = frozenset({"float_nodes"})

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

    def build_function(self) -> Callable[[BuildContext], bytes]:
        module, func = self.builder.split(":")
        function: Callable[[BuildContext], bytes] = getattr(importlib.import_module(module, __package__), func)
        return function


_ALL = frozenset({"keras", "keras3", "saved_model", "tflite"})
_CONVERTIBLE = frozenset({"keras", "keras3", "saved_model"})
_KERAS2 = frozenset({"keras", "saved_model"})  # saved_model only when it is a Keras SavedModel
_REP = ("representative_data",)
_CAL = ("calibration_samples",)
_SEL = _CAL + ("float_nodes",)


def _v(name: str, family: str, summary: str, kinds: frozenset[str], builder: str, **kw: Any) -> VariantSpec:
    return VariantSpec(name, family, summary, kinds, builder, **kw)


VARIANTS: dict[str, VariantSpec] = {
    s.name: s
    for s in (
        _v("fp32", "baseline", "unoptimized float32 conversion (the baseline)", _ALL, ".ptq:build_fp32"),
        _v("float16", "ptq", "float16 weights", _CONVERTIBLE, ".ptq:build_float16"),
        _v("dynamic_range", "ptq", "int8 weights, float activations", _CONVERTIBLE, ".ptq:build_dynamic_range"),
        _v("int8", "ptq", "full integer, float input/output", _CONVERTIBLE, ".ptq:build_int8", needs=_REP, knobs=_SEL),
        _v("int8_full", "ptq", "integer-only ops, int8 input/output", _CONVERTIBLE, ".ptq:build_int8_full", needs=_REP, knobs=_SEL),
        _v("int16x8", "ptq", "int16 activations, int8 weights", _CONVERTIBLE, ".ptq:build_int16x8", needs=_REP, knobs=_CAL),
        _v("qat_int8", "tfmot", "quantization-aware training, int8", _KERAS2, ".tfmot:build_qat_int8",
           needs=("train_data",), knobs=_TRAIN, trains=True, phases=1),
        _v("pruned", "tfmot", "magnitude pruning, float32", _KERAS2, ".tfmot:build_pruned",
           needs=("train_data",), knobs=("sparsity",) + _TRAIN, trains=True, phases=1),
        _v("pruned_int8", "tfmot", "magnitude pruning, then int8 PTQ", _KERAS2, ".tfmot:build_pruned_int8",
           needs=("train_data",) + _REP, knobs=("sparsity",) + _TRAIN + _CAL, trains=True, phases=1),
        _v("clustered", "tfmot", "weight clustering, float32", _KERAS2, ".tfmot:build_clustered",
           needs=("train_data",), knobs=("clusters",) + _TRAIN, trains=True, phases=1),
        _v("clustered_int8", "tfmot", "weight clustering, then int8 PTQ", _KERAS2, ".tfmot:build_clustered_int8",
           needs=("train_data",) + _REP, knobs=("clusters",) + _TRAIN + _CAL, trains=True, phases=1),
        _v("pqat_int8", "tfmot", "pruning-preserving QAT, int8", _KERAS2, ".tfmot:build_pqat_int8",
           needs=("train_data",), knobs=("sparsity",) + _TRAIN, trains=True, phases=2),
        _v("cqat_int8", "tfmot", "cluster-preserving QAT, int8", _KERAS2, ".tfmot:build_cqat_int8",
           needs=("train_data",), knobs=("clusters",) + _TRAIN, trains=True, phases=2),
        _v("pcqat_int8", "tfmot", "sparsity- and cluster-preserving QAT, int8", _KERAS2, ".tfmot:build_pcqat_int8",
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
        if key == "float_nodes" and not (
            isinstance(value, (tuple, list)) and all(isinstance(n, str) and n for n in value)
        ):
            raise ValueError(f"{where}: float_nodes must be a tuple or list of node names (strings), "
                             f"got {value!r}")


def resolve_options(mut: ModelUnderTest, test_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Defaults, then the model's options, then the test's."""
    opts = dict(DEFAULT_OPTIONS)
    opts.update(mut.options or {})
    opts.update(test_options or {})
    return opts


def recipe(spec: VariantSpec, options: Mapping[str, Any]) -> dict[str, Any]:
    """Every setting that produces this variant (goes into the cache key and the results).

    ``float_nodes`` appears only when set, as a sorted list (JSON-stable, order-free).
    """
    rec: dict[str, Any] = {"variant": spec.name, "family": spec.family, "builder": spec.builder}
    for k in spec.knobs:
        value = options[k]
        if k in _OMITTED_WHEN_DEFAULT and not value:
            continue
        rec[k] = sorted(set(value)) if k == "float_nodes" else value
    return rec


def unavailable_reason(spec: VariantSpec, mut: ModelUnderTest) -> str | None:
    """Why ``spec`` cannot be built for ``mut`` (a skip reason), or ``None``.

    Decided from the model's kind and which data fields are set, without tensorflow.
    """
    src = mut.source
    if src.kind not in spec.kinds:
        if src.kind == "tflite":
            return (f"{spec.name} needs a Keras model or SavedModel; a .tflite input gets only fp32 and the "
                    "aeq_* variants (AI Edge Quantizer)")
        if src.kind == "keras3":
            return (f"{spec.name} fine-tunes with tfmot, which needs a tf_keras (Keras 2) model; this is a "
                    "Keras 3 model. Build it with `import tf_keras as keras` (or save it as .h5) to get the "
                    "training-based variants; the post-training ones still run")
        return f"{spec.name} cannot be built from a {src.kind} model"
    if spec.trains and not src.trainable:
        return (f"{spec.name} fine-tunes Keras layers, but {src.description} has none (a plain SavedModel); "
                "pass the Keras model or a .keras/.h5 file")
    for need in spec.needs:
        if getattr(mut, need) is None:
            return f"{spec.name} needs ModelUnderTest({need}=...), which {mut.name!r} does not set"
    return None


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
