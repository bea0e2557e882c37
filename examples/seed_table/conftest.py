"""The seed table: the file sizes the TensorFlow Model Optimization Toolkit's launch post
reports for 8-bit post-training quantization, reproduced with ``weights=None`` models.

File size does not depend on the weights' values, so MobileNet-v1 (1.0, 224) and
MobileNet-v2 (1.0, 224) from ``tf_keras.applications`` with random (seeded) weights and
1000 classes give the published files' sizes without a download. Accuracy means nothing
here: there is no eval data, only sizes are judged.

    pytest examples/seed_table -p no:cacheprovider     # about 4-8 minutes on 2 cores

Both models go through one test module: ``edgeopt_model`` is parametrized by model (so each
test names it among its arguments: pytest parametrizes only the fixtures a test asks for).
"""

from __future__ import annotations

import numpy as np
import pytest

from pytest_edgeopt import ModelUnderTest

MODELS = ("mobilenet_v1", "mobilenet_v2")


def _make(name: str):
    def make():
        from pytest_edgeopt.variants.tfenv import import_keras

        keras = import_keras()
        keras.utils.set_random_seed(0)
        cls = keras.applications.MobileNet if name == "mobilenet_v1" else keras.applications.MobileNetV2
        return cls(input_shape=(224, 224, 3), alpha=1.0, weights=None, classes=1000)

    return make


@pytest.fixture(scope="module", params=MODELS)
def edgeopt_model(request: pytest.FixtureRequest) -> ModelUnderTest:
    rng = np.random.default_rng(0)
    return ModelUnderTest(
        name=request.param,
        model=_make(request.param),
        representative_data=[rng.random((1, 224, 224, 3), dtype=np.float32) * 2 - 1 for _ in range(8)],
        options={"calibration_samples": 8, "fidelity": False},
    )
