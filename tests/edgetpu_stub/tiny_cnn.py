"""Build the .tflite variants the Edge TPU tests analyse and run.

Run as a script (``python tiny_cnn.py OUT_DIR``) so that tensorflow is imported in a
child process only, and only when the cached models are missing: the test process
itself stays tensorflow-free. ``ensure_models(cache_dir)`` is the entry point for the
tests; it keys the cache on this file's text and the versions of tensorflow, so an
edited recipe or an upgraded converter rebuilds the models.

The model: a tiny CNN on digits-shaped 8x8x1 input (Conv2D -> MaxPool -> Flatten ->
Dense -> Dense -> Softmax), untrained (compatibility and equality checks do not need
accuracy), with fixed seeds. Variants:

- ``fp32``, ``float16``, ``dynamic_range``: float activations (not for the Edge TPU);
- ``int8_full``: DEFAULT + representative dataset + TFLITE_BUILTINS_INT8, int8 I/O;
- ``int8_float_io``: DEFAULT + representative dataset, float input/output (the converter
  adds QUANTIZE/DEQUANTIZE at the edges);
- ``int16x8``: 16-bit activations, 8-bit weights;
- ``leaky_int8``: ``int8_full`` recipe on a CNN with a LeakyReLU after the convolution
  (LEAKY_RELU is not an Edge TPU op);
- ``dyn_reshape_int8``: ``int8_full`` recipe on a model whose Keras Reshape has a None
  batch, so the converter computes the shape at run time (SHAPE, STRIDED_SLICE, PACK).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from filelock import FileLock

VARIANTS = (
    "fp32",
    "float16",
    "dynamic_range",
    "int8_full",
    "int8_float_io",
    "int16x8",
    "leaky_int8",
    "dyn_reshape_int8",
)


def cache_key() -> str:
    h = hashlib.sha256(Path(__file__).read_bytes())
    for dist in ("tensorflow", "tf-keras"):
        h.update(f"{dist}={importlib.metadata.version(dist)}".encode())
    return h.hexdigest()[:12]


def ensure_models(cache_root: Path) -> dict[str, Path]:
    """Paths of every variant, built in a subprocess on a cache miss (about 15 s)."""
    final = cache_root / f"tiny-cnn-{cache_key()}"
    if not (final / "done.json").exists():
        cache_root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(cache_root / ".tiny-cnn.lock")):
            if not (final / "done.json").exists():
                tmp = Path(tempfile.mkdtemp(prefix=".tiny-cnn-", dir=cache_root))
                env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
                proc = subprocess.run(
                    [sys.executable, __file__, str(tmp)],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=600,
                )
                if proc.returncode != 0:
                    raise RuntimeError(f"building the tiny CNN variants failed:\n{proc.stderr[-4000:]}")
                if final.exists():  # a stale partial entry
                    import shutil

                    shutil.rmtree(final)
                os.replace(tmp, final)
    return {name: final / f"{name}.tflite" for name in VARIANTS}


def _build(out_dir: Path) -> None:  # pragma: no cover - runs in the child process
    import numpy as np
    import tensorflow as tf
    import tf_keras as keras

    tf.random.set_seed(0)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)

    def cnn(leaky: bool = False) -> keras.Model:
        layers = [
            keras.layers.Input((8, 8, 1), name="x"),
            keras.layers.Conv2D(8, 3, padding="same", activation=None if leaky else "relu"),
        ]
        if leaky:
            layers.append(keras.layers.LeakyReLU(0.1))
        layers += [
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(10),
            keras.layers.Softmax(),
        ]
        return keras.Sequential(layers)

    def dyn_reshape() -> keras.Model:
        # Reshape with a None batch: the converter computes the new shape at run time
        # (SHAPE -> STRIDED_SLICE -> PACK), the pattern behind the compiler's
        # "dynamic-sized tensors" error.
        return keras.Sequential(
            [
                keras.layers.Input((16,), name="v"),
                keras.layers.Dense(16),
                keras.layers.Reshape((4, 4, 1)),
                keras.layers.Conv2D(2, 3, padding="same"),
                keras.layers.Flatten(),
                keras.layers.Dense(4),
            ]
        )

    def rep(shape):
        data = rng.random((64, *shape), dtype=np.float32)

        def gen():
            for i in range(len(data)):
                yield [data[i : i + 1]]

        return gen

    def convert(model, kind: str) -> bytes:
        c = tf.lite.TFLiteConverter.from_keras_model(model)
        shape = tuple(model.input_shape[1:])
        if kind == "float16":
            c.optimizations = [tf.lite.Optimize.DEFAULT]
            c.target_spec.supported_types = [tf.float16]
        elif kind == "dynamic_range":
            c.optimizations = [tf.lite.Optimize.DEFAULT]
        elif kind == "int8_full":
            c.optimizations = [tf.lite.Optimize.DEFAULT]
            c.representative_dataset = rep(shape)
            c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            c.inference_input_type = tf.int8
            c.inference_output_type = tf.int8
        elif kind == "int8_float_io":
            c.optimizations = [tf.lite.Optimize.DEFAULT]
            c.representative_dataset = rep(shape)
        elif kind == "int16x8":
            c.optimizations = [tf.lite.Optimize.DEFAULT]
            c.representative_dataset = rep(shape)
            c.target_spec.supported_ops = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
            ]
        return bytes(c.convert())

    base = cnn()
    built = {k: convert(base, k) for k in ("fp32", "float16", "dynamic_range", "int8_full", "int8_float_io", "int16x8")}
    built["leaky_int8"] = convert(cnn(leaky=True), "int8_full")
    built["dyn_reshape_int8"] = convert(dyn_reshape(), "int8_full")
    for name, data in built.items():
        (out_dir / f"{name}.tflite").write_bytes(data)
    (out_dir / "done.json").write_text(json.dumps({"key": cache_key(), "variants": sorted(built)}))


if __name__ == "__main__":  # pragma: no cover
    _build(Path(sys.argv[1]))
