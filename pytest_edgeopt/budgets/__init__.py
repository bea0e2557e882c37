"""Budgets: what a measurement must meet. ``rules.py`` is the one table of budget keywords
(``Rule``) that ``Measurement.check()``, the ``edgeopt_budget`` marker and budget files all
read; ``file.py`` parses ``edgeopt.toml`` / ``[tool.edgeopt]``; ``collection.py`` turns a
parsed file into test items."""
