"""The repository's own test setup.

Being at the repository root, this file puts the root on ``sys.path`` (pytest's default
"prepend" import mode), so tests and examples import ``fixtures`` and ``devices``.
Shared fixtures live here; none of them imports tensorflow until a test needs it.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's digits split: x_train, y_train, x_eval (450), y_eval."""
    from fixtures.digits import digits_data

    return digits_data()


@pytest.fixture(scope="session")
def digits_model_path():
    """A trained tf_keras digits CNN (.h5), built once and cached under fixtures/build."""
    from fixtures.digits import digits_model_path as path

    return path()


@pytest.fixture(scope="session")
def tensorflow_loaded() -> None:
    """Import tensorflow and the optimization libraries once in this process.

    In-process pytester runs restore ``sys.modules`` afterwards, so a module first imported
    inside a run would be imported again by the next run, and tensorflow aborts the process
    when imported twice. Tests that build variants through pytester request this first.
    """
    from pytest_edgeopt.variants.tfenv import import_keras, import_tf, import_tfmot

    import_tf()
    import_keras()
    import_tfmot()
    import ai_edge_quantizer.quantizer  # noqa: F401
