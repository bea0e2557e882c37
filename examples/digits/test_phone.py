"""Budgets on an Android phone: the GPU delegate and the phone's CPU, through TFLite's
benchmark_model over adb. Without a phone these skip, naming what is missing.

No phone at hand? The repository's emulated one runs the same path on this host:

    python -m devices start
    pytest examples/digits $(python -m devices flags)
    python -m devices stop
"""

import pytest


# The int8 model on the phone: as accurate as on the host, and a quarter of fp32's size.
@pytest.mark.edgeopt_variants("int8")
@pytest.mark.android_cpu
@pytest.mark.android_gpu
def test_int8_on_the_phone(measurement):
    measurement.check(min_size_reduction=0.65, max_accuracy_drop=0.01)


# float16 is the GPU delegate's own format: every op of the CNN must run on the GPU.
@pytest.mark.edgeopt_variants("float16")
@pytest.mark.edgeopt_budget(require_full_delegation=True, max_accuracy_drop=0.01)
@pytest.mark.android_gpu
def test_float16_runs_entirely_on_the_gpu(measurement):
    pass
