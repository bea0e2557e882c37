"""One SavedModel export per Keras model, shared by all its post-training conversions.

``TFLiteConverter.from_keras_model(model).convert()`` starts by saving the Keras model as a
SavedModel in a temporary directory (tracing the call of every layer), loads it back (a
GraphDef and the restored object), runs the MLIR converter on that directory, then
calibrates and quantizes. Each of the six post-training variants (``fp32``, ``float16``,
``dynamic_range``, ``int8``, ``int8_full``, ``int16x8``) pays that export again, and on a
real model it is most of the time: on MobileNetV2 (96x96, ``weights=None``) one conversion
of 44-52 s (2026-12-06 23:48 UTC, 2 cores at load ~1) spent 23-36 s saving, 9-16 s loading
back, 3-5 s in MLIR and 4 s calibrating 100 samples (``benchmarks/ptq_shared_trace.py``
prints the same phases for both paths).

:func:`share_export` makes a ``from_keras_model`` converter reuse one export of its model,
made once per process by TensorFlow's own code (the converter's
``_convert_keras_to_saved_model``) and kept in the builder's memo, so the export is done
once per model and the converter's MLIR import, calibration and quantization run as
before: the ``.tflite`` bytes are the same as without sharing (``tests/test_ptq_shared.py``
checks it on every variant).

It relies on a private method of ``TFLiteKerasModelConverterV2`` (TF 2.21); when that is
missing, or the export fails (TensorFlow then converts through a frozen graph), the
converter is left alone and converts as usual.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import weakref
from collections import OrderedDict
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The memo entry that holds the exports (an OrderedDict by model, least recently used first).
MEMO_KEY = ("keras export",)
#: Exports kept per process; each holds its SavedModel directory (about the size of the
#: fp32 model) and the loaded graph: older ones are removed.
KEEP = 2


@dataclass(frozen=True)
class KerasExport:
    """A Keras model saved as a SavedModel once (in ``directory``, removed with this object)
    and loaded back, as ``TFLiteKerasModelConverterV2._convert_keras_to_saved_model`` leaves
    it on the converter; ``seconds``: the wall time that took."""

    directory: Path
    graph_def: Any
    input_tensors: list[Any]
    output_tensors: list[Any]
    trackable: Any
    tags: frozenset[str]
    exported_names: tuple[str, ...]
    seconds: float


def exports(memo: MutableMapping[Any, Any]) -> OrderedDict[Any, KerasExport | None]:
    """The exports this process keeps (``None``: the model cannot be exported)."""
    found = memo.get(MEMO_KEY)
    if found is None:
        found = memo[MEMO_KEY] = OrderedDict()
    return found


def share_export(converter: Any, memo: MutableMapping[Any, Any], key: Any) -> KerasExport | None:
    """Make ``converter`` (from ``tf.lite.TFLiteConverter.from_keras_model``) reuse the
    export of its Keras model kept in ``memo`` under ``key`` (the model's fingerprint),
    exporting it first when absent. Returns the export, or ``None`` when the converter
    converts on its own (another converter type, another TensorFlow, an export that fails).
    """
    if not callable(getattr(converter, "_convert_keras_to_saved_model", None)) or \
            getattr(converter, "_keras_model", None) is None:
        return None
    kept = exports(memo)
    if key in kept:
        kept.move_to_end(key)
        export = kept[key]
    else:
        export = kept[key] = _export(converter._keras_model)
        while len(kept) > KEEP:
            kept.popitem(last=False)  # its directory goes with the object (weakref.finalize)
    if export is None:
        return None
    converter._convert_keras_to_saved_model = _reuse(converter, export)
    return export


def _export(model: Any) -> KerasExport | None:
    """Save and load back ``model`` with TensorFlow's own code, in a directory of its own."""
    from pytest_edgeopt.variants.tfenv import import_tf, native_output_captured, quiet_warnings

    tf = import_tf()
    directory = Path(tempfile.mkdtemp(prefix="edgeopt-export-"))
    start = time.perf_counter()
    with native_output_captured(), quiet_warnings():
        try:
            exporter = tf.lite.TFLiteConverter.from_keras_model(model)
            graph_def, inputs, outputs = exporter._convert_keras_to_saved_model(str(directory))
        except Exception:  # the converter's own path will meet (and report) the same problem
            graph_def = None
    if graph_def is None or not exporter.saved_model_dir:
        shutil.rmtree(directory, ignore_errors=True)
        return None
    export = KerasExport(
        directory=directory, graph_def=graph_def, input_tensors=list(inputs), output_tensors=list(outputs),
        trackable=exporter._trackable_obj, tags=frozenset(exporter._saved_model_tags),
        exported_names=tuple(exporter._saved_model_exported_names or ()),
        seconds=time.perf_counter() - start)
    weakref.finalize(export, shutil.rmtree, str(directory), True)
    return export


def _reuse(converter: Any, export: KerasExport) -> Any:
    """A stand-in for the converter's ``_convert_keras_to_saved_model``: the state the
    original leaves on the converter, from ``export`` instead of a new save and load."""

    def convert_keras_to_saved_model(output_dir: str) -> tuple[Any, Any, Any]:
        converter.saved_model_dir = str(export.directory)
        converter._saved_model_tags = set(export.tags)
        converter._saved_model_exported_names = list(export.exported_names)
        converter._parse_saved_model_args(
            always_enable_saved_model_import=converter.experimental_lower_to_saved_model)
        if not converter.saved_model_dir:  # the settings ask for the frozen-graph path
            return None, None, None
        converter._trackable_obj = export.trackable
        return export.graph_def, export.input_tensors, export.output_tensors

    return convert_keras_to_saved_model
