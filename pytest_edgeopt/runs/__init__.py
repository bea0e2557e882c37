"""Runs: what a session leaves behind and what later sessions read. ``record.py`` is the
typed saved-run schema (``RunRecord``); ``store.py`` keeps runs on disk; ``gate.py``
compares two runs and gates on regressions; ``frame.py`` turns runs into pandas tables;
``recommend.py`` picks a variant per target; ``terminal.py`` and ``html.py`` render;
``outputs.py`` is what a session writes at its end; ``cli.py`` is the ``edgeopt`` command."""
