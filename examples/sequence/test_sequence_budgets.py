"""Every variant of a stacked-LSTM model with a custom layer: each is measured, or skips or
fails saying why (the README's "Sequence models" section shows this run)."""

import pytest


@pytest.mark.cpu
def test_every_variant_keeps_the_source_models_accuracy(measurement):
    measurement.check(max_accuracy_drop=0.1)
