"""The post-training variants share one SavedModel export per Keras model
(:mod:`pytest_edgeopt.variants.keras_export`), and that changes none of their bytes.

A small residual CNN (a ``.h5`` file) is built as four post-training variants through a
``Builder`` in this process, then converted again with bare ``TFLiteConverter`` scripts
with the same settings and calibration samples: every pair must be byte-identical, and the
model must have been exported once, not six times.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_edgeopt.model import ModelUnderTest
from pytest_edgeopt.variants import keras_export
from pytest_edgeopt.variants.builder import Builder
from pytest_edgeopt.variants.cache import VariantCache

#: One of each recipe family: plain, weights only, calibrated with int8 I/O, 16x8 (the other two,
#: float16 and int8, differ from these only in converter flags, which the export does not see).
PTQ = ("fp32", "dynamic_range", "int8_full", "int16x8")
SAMPLES = 8


def small_model_path(directory: Path) -> Path:
    """A 12x12x3 residual CNN with batch norm and a depthwise conv (MobileNet's ops), as .h5."""
    from pytest_edgeopt.variants.tfenv import import_keras, native_output_captured, quiet_warnings

    keras = import_keras()
    keras.utils.set_random_seed(0)
    inp = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(8, 3, padding="same")(inp)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU(6.0)(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = keras.layers.Add()([x, keras.layers.ReLU(6.0)(y)])
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(4, activation="softmax")(x)
    model = keras.Model(inp, out)
    path = directory / "small.h5"
    with native_output_captured(), quiet_warnings():
        model.save(path)
    return path


def bare(tf: Any, model: Any, variant: str, samples: list[np.ndarray]) -> bytes:
    """TensorFlow's post-training quantization guide, written out (no plugin code)."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if variant != "fp32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if variant in ("int8", "int8_full", "int16x8"):
        converter.representative_dataset = lambda: ([s] for s in samples)
    if variant == "int8_full":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    elif variant == "int16x8":
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    return bytes(converter.convert())


def test_ptq_variants_share_one_export_and_keep_their_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_edgeopt.variants.tfenv import import_keras, import_tf, native_output_captured, quiet_warnings

    tf, keras = import_tf(), import_keras()
    path = small_model_path(tmp_path)
    samples = [np.random.default_rng(i).random((1, 12, 12, 3), dtype=np.float32) for i in range(SAMPLES)]
    from tensorflow.lite.python import lite

    saves: list[str] = []  # every SavedModel export the converter makes (TF 2.21: lite._save.save)
    real_save = lite._save.save
    monkeypatch.setattr(lite._save, "save", lambda obj, path, *a, **k: saves.append(path) or real_save(obj, path, *a, **k))

    builder = Builder(VariantCache(tmp_path / "cache"))
    mut = ModelUnderTest(name="small", model=path, representative_data=samples,
                         options={"calibration_samples": SAMPLES})
    shared = {v: builder.build(mut, v).read_bytes() for v in PTQ}

    assert len(saves) == 1, f"the model was saved as a SavedModel {len(saves)} times for {len(PTQ)} variants"
    assert len(keras_export.exports(builder._memo)) == 1
    with native_output_captured(), quiet_warnings():
        model = keras.models.load_model(str(path))
        unshared = {v: bare(tf, model, v, samples) for v in PTQ}
    differ = [f"{v} ({len(shared[v]):,} vs {len(unshared[v]):,} B)" for v in PTQ if shared[v] != unshared[v]]
    assert not differ, f"bytes changed by the shared export: {', '.join(differ)}"


def test_an_export_is_kept_per_model_and_the_oldest_removed(tmp_path: Path) -> None:
    from pytest_edgeopt.variants.tfenv import import_keras, import_tf

    tf, keras = import_tf(), import_keras()
    memo: dict[Any, Any] = {}
    models = [keras.Sequential([keras.Input((4,)), keras.layers.Dense(i + 1)]) for i in range(keras_export.KEEP + 1)]
    made = [keras_export.share_export(tf.lite.TFLiteConverter.from_keras_model(m), memo, i)
            for i, m in enumerate(models)]
    assert all(e is not None for e in made)
    directories = [e.directory for e in made if e is not None]
    assert list(keras_export.exports(memo)) == list(range(1, keras_export.KEEP + 1))
    del made
    import gc

    gc.collect()
    assert not directories[0].exists(), "the evicted export's SavedModel directory is left behind"
    assert all(d.exists() for d in directories[1:])
    again = keras_export.share_export(tf.lite.TFLiteConverter.from_keras_model(models[-1]), memo, keras_export.KEEP)
    assert again is keras_export.exports(memo)[keras_export.KEEP]
