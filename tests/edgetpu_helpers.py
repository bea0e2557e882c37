"""Loading the Edge TPU test helpers in tests/edgetpu_stub/ (a stand-in compiler, a tiny CNN's
variants), which are scripts rather than an importable package."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

STUB_DIR = Path(__file__).resolve().parent / "edgetpu_stub"


def load_edgetpu_stub(name: str) -> ModuleType:
    """tests/edgetpu_stub/NAME.py as a module (fake_edgetpu_compiler, tiny_cnn)."""
    spec = importlib.util.spec_from_file_location(f"edgetpu_stub_{name}", STUB_DIR / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
