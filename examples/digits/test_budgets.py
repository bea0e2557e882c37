"""Budgets for every optimized variant of the digits CNN on the host CPU.

Run:  pytest examples/digits --edgeopt-json=edgeopt-results.json
"""

import pytest


# Post-training float16: half the size, no accuracy lost.
@pytest.mark.edgeopt_variants("float16")
@pytest.mark.cpu
def test_float16_halves_the_model(measurement):
    measurement.check(min_size_reduction=0.45, max_accuracy_drop=0.01)


# Integer variants: about a quarter of the fp32 file, within a point of its accuracy.
@pytest.mark.edgeopt_variants(
    "dynamic_range", "int8", "int8_full", "int16x8", "qat_int8",
    "aeq_dynamic_wi8", "aeq_weight_only_wi8", "aeq_static_a8w8",
)
@pytest.mark.cpu
def test_integer_variants_are_a_quarter_of_fp32(measurement):
    measurement.check(min_size_reduction=0.65, max_accuracy_drop=0.01)


# int4 weights: smaller still.
@pytest.mark.edgeopt_variants("aeq_dynamic_wi4")
@pytest.mark.cpu
def test_int4_weights_are_smaller_still(measurement):
    measurement.check(min_size_reduction=0.75, max_accuracy_drop=0.02)


# Pruning and clustering keep the file size but shrink the download (gzip).
@pytest.mark.edgeopt_variants("pruned", "clustered")
@pytest.mark.cpu
def test_sparse_and_clustered_weights_compress(measurement):
    assert measurement.size_reduction < 0.05  # same flatbuffer size as fp32
    measurement.check(min_compressed_size_reduction=0.55, max_accuracy_drop=0.05)


# ...and combined with int8 they are the smallest downloads.
@pytest.mark.edgeopt_variants("pruned_int8", "clustered_int8", "pqat_int8", "cqat_int8", "pcqat_int8")
@pytest.mark.edgeopt_budget(min_size_reduction=0.65, min_compressed_size_reduction=0.75, max_accuracy_drop=0.05)
@pytest.mark.cpu
def test_compressed_integer_variants(measurement):
    pass


# The baseline itself: accurate, and fast enough for this tiny model on any host.
@pytest.mark.edgeopt_variants("fp32")
@pytest.mark.edgeopt_budget(min_accuracy=0.95, max_latency_ms=5)
@pytest.mark.cpu
def test_fp32_baseline(measurement):
    pass
