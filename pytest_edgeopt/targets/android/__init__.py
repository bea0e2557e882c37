"""Android phones over adb: the GPU delegate and the CPU through TFLite's benchmark_model.
``server.py`` reaches the adb server, ``benchmark_output.py`` parses benchmark_model's
output, ``target.py`` pushes, runs and pulls."""
