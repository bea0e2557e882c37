"""Device-side tools: an emulated Android device for the real adb server, a
``benchmark_model`` stand-in that runs on it, and a private adb server to attach it to
(``devices.adb_server.AdbServer``, imported from there). See ``devices/README.md``."""

from .benchmark_model_standin import write_standin
from .emulated_device import EmulatedDevice, Faults

__all__ = ["EmulatedDevice", "Faults", "write_standin"]
