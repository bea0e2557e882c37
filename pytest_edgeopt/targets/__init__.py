"""Where variants run. ``base.py`` is the Target protocol, its typed results and the
exceptions that map to skip / fail; ``cpu.py`` is the host CPU (LiteRT interpreter);
``android/`` (adb and TFLite's benchmark_model) and ``edgetpu/`` (the Coral runtime and
compiler) are subpackages that register themselves through the plugin's hooks."""
