"""pytest-edgeopt: build every optimized TFLite/LiteRT variant of a model, measure it on
the host CPU, Android devices and Edge TPUs, and assert size, latency and accuracy budgets."""

from .model import ModelUnderTest

__all__ = ["ModelUnderTest"]
