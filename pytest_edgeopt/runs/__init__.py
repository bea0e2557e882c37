"""Runs: what a session leaves behind and what later sessions read.

``record.py`` is the typed saved-run schema (``RunRecord``, ``SCHEMA_VERSION``, the
``target/device`` label); ``rows.py`` merges session records into table rows and totals;
``writer.py`` makes the run document; ``store.py`` keeps runs on disk; ``gate.py`` compares
two runs and gates on regressions (``tolerance.py`` the tolerances, ``noise.py`` the
latency test, ``abtest.py`` the A/B re-measurement); ``frame.py`` turns runs into pandas
tables; ``recommend.py`` picks a variant per target; ``terminal.py`` and ``html.py``
(with ``charts.py``) render; ``recorder.py`` collects a session's records; ``outputs.py`` is
what a session writes at its end; ``cli.py`` is the ``edgeopt`` command."""
