"""The example project's model: a small CNN for scikit-learn's 8x8 digits.

This is all a project writes to get every optimized variant built, cached and measured:
one session fixture returning a ModelUnderTest.
"""

import pytest

from fixtures.digits import digits_data, digits_model_path, representative_batches
from pytest_edgeopt import ModelUnderTest


@pytest.fixture(scope="session")
def edgeopt_model() -> ModelUnderTest:
    data = digits_data()
    return ModelUnderTest(
        name="digits-cnn",
        model=digits_model_path(),                  # a tf_keras .h5, trained once and cached
        representative_data=representative_batches(100),
        train_data=(data.x_train, data.y_train),    # for QAT, pruning and clustering fine-tuning
        eval_data=(data.x_eval, data.y_eval),       # 450 labelled samples
        metric="top1",
    )
