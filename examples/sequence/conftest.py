"""A sequence model as a user brings it: issue 18's character-level language model at test size
(Embedding -> two stacked LSTMs -> concatenation -> a custom attention layer -> softmax), with
random weights. ``EDGEOPT_SEQUENCE_SOURCE=saved_model`` gives it as a SavedModel with a batch-1
signature (what TensorFlow's LSTM codelab exports) instead of the tf_keras object.

    pytest examples/sequence                                    # the Keras object
    EDGEOPT_SEQUENCE_SOURCE=saved_model pytest examples/sequence
"""

import os

import pytest

from fixtures.sequence import sequence_data, stacked_lstm_model, stacked_lstm_saved_model
from pytest_edgeopt import ModelUnderTest


@pytest.fixture(scope="session")
def edgeopt_model() -> ModelUnderTest:
    data = sequence_data()
    saved = os.environ.get("EDGEOPT_SEQUENCE_SOURCE") == "saved_model"
    return ModelUnderTest(
        name="char-lstm" + ("-savedmodel" if saved else ""),
        model=stacked_lstm_saved_model() if saved else stacked_lstm_model,  # a path, or a callable
        representative_data=[x[None] for x in data.x_train[:32]],           # token ids, one sample a batch
        train_data=(data.x_train, data.y_train),
        eval_data=(data.x_eval, data.y_eval),
        options={"finetune_epochs": 1},
    )
