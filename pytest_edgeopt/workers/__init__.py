"""The worker processes that run native code (TensorFlow conversion, the LiteRT interpreter).

A crash in native code (a heap corruption in LiteRT, the out-of-memory killer, a hang)
kills or stalls a worker, not the pytest process: it becomes a typed
:class:`~pytest_edgeopt.workers.pool.WorkerCrashed` naming the stage, the signal and the
last lines the worker wrote to stderr, and a new worker takes the next request (as
pytest-xdist replaces a crashed worker). Modules: :mod:`.pool` (the parent side),
:mod:`.serve` (the child's loop), :mod:`.requests` (what is sent), :mod:`.stage` (where
a request is, reported from inside the native-code paths).
"""
