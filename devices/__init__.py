"""Device-side tools: an emulated Android device for the real adb server, and a
``benchmark_model`` stand-in that runs on it. See ``devices/README.md``."""

from .benchmark_model_standin import write_standin
from .emulated_device import EmulatedDevice, Faults

__all__ = ["EmulatedDevice", "Faults", "write_standin"]
