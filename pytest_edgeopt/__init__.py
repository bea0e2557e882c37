"""pytest-edgeopt: build every optimized TFLite/LiteRT variant of a model, measure it on
the host CPU, Android devices and Edge TPUs, and assert size, latency and accuracy budgets.

The names below are imported on first use, so ``import pytest_edgeopt`` (which every pytest
run does through the plugin) stays light: no pandas, no tensorflow.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "ModelUnderTest": ".model",
    "Measurement": ".measurement",
    "BudgetExceeded": ".budgets.rules",
    "BudgetError": ".budgets.rules",
    "BuiltVariant": ".variants.builder",
    "LatencyStats": ".results",
    "Observation": ".results",
    "VARIANTS": ".variants.registry",
    "load_runs": ".runs.frame",
    "recommend": ".runs.recommend",
    "analyze_edgetpu": (".targets.edgetpu.compat", "analyze"),
    "edgetpu_op_fraction": ".targets.edgetpu.compat",
    # For plugins that add a target (the pytest_edgeopt_targets hook) and its options.
    "TargetSpec": ".names",
    "Option": ".options",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    spec = _LAZY.get(name)
    if spec is None:
        raise AttributeError(f"module 'pytest_edgeopt' has no attribute {name!r}")
    module, attr = spec if isinstance(spec, tuple) else (spec, name)
    # Not cached in globals(): the module in sys.modules is the one to use (pytest's
    # in-process test runs drop and re-import modules, and classes must stay the same).
    return getattr(importlib.import_module(module, __name__), attr)
