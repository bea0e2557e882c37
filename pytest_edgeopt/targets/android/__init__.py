"""Android phones over adb: the GPU delegate and the CPU through TFLite's benchmark_model.
``server.py`` reaches the adb server (address, a client that never starts one, reconnects),
``link.py`` is one device behind it (shell, push, pull with timeouts and retry-once),
``discovery.py`` lists the devices and reads their properties, ``validation.py`` checks
serials, device paths and CPU masks, ``commands.py`` builds benchmark_model's command lines,
``benchmark_output.py`` parses its output, ``rundir.py`` owns the per-session directory on
the device (and sweeps abandoned ones), ``health_readings.py`` reads battery and thermal
state, and ``target.py`` (:class:`~pytest_edgeopt.targets.android.target.AndroidTarget`)
pushes, runs and pulls."""
