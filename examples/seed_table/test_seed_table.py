"""Budgets from the launch post's table: fp32 within 6% of the published size, 8-bit
(dynamic range and int8) within 12%, float16 about half of fp32."""

import pytest

#: What the launch post (and TensorFlow's model optimization guide) reports, in MB (10**6 bytes):
#: the fp32 .tflite and the 8-bit post-training quantized .tflite.
PUBLISHED_MB = {"mobilenet_v1": (16.9, 4.3), "mobilenet_v2": (14.0, 3.6)}


def published_bytes(model: str, column: int) -> float:
    return PUBLISHED_MB[model][column] * 1e6


@pytest.mark.edgeopt_variants("fp32")
@pytest.mark.cpu
def test_fp32_is_the_published_size(edgeopt_model, measurement):
    expected = published_bytes(measurement.model, 0)
    assert abs(measurement.size_bytes / expected - 1) <= 0.06, (
        f"{measurement.model} fp32: {measurement.size_bytes / 1e6:.2f} MB, published {expected / 1e6:.1f} MB")


@pytest.mark.edgeopt_variants("dynamic_range", "int8")
@pytest.mark.cpu
def test_8bit_is_the_published_size(edgeopt_model, measurement):
    expected = published_bytes(measurement.model, 1)
    measurement.check(max_size_bytes=expected * 1.12)
    assert measurement.size_bytes >= expected * 0.88, (
        f"{measurement.model} {measurement.variant}: {measurement.size_bytes / 1e6:.2f} MB, "
        f"published {expected / 1e6:.1f} MB")


@pytest.mark.edgeopt_variants("float16")
@pytest.mark.cpu
def test_float16_is_about_half(edgeopt_model, measurement):
    measurement.check(min_size_reduction=0.45)
    assert measurement.size_reduction <= 0.55
