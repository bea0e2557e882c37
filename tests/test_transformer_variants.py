"""The training-based variants of a model with MultiHeadAttention (issue 11, the zoo's
``transformer_block``).

tfmot's ``strip_clustering`` hands back a MultiHeadAttention whose weights come in another
order (the four kernels, then the four biases) than a new layer of the same config has
(kernel, bias per projection): a flat ``get_weights()`` of the stripped model does not fit
a copy of it, so copying it (``clone_keras_model``, tfmot's own ``quantize_apply``) and
reloading its weights from the cache failed, and ``cqat_int8`` / ``pcqat_int8`` with them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_edgeopt.model import ModelUnderTest
from pytest_edgeopt.variants.registry import VARIANTS, BuildContext, resolve_options


@pytest.fixture(scope="module")
def transformer() -> ModelUnderTest:
    from fixtures.zoo import zoo_model_under_test

    mut: ModelUnderTest = zoo_model_under_test("transformer_block")
    return mut


def context(mut: ModelUnderTest, name: str, workdir: Path, memo: dict[Any, Any]) -> BuildContext:
    return BuildContext(mut=mut, spec=VARIANTS[name], options=resolve_options(mut), workdir=workdir,
                        progress=lambda line: None, fp32=lambda: b"", memo=memo)


def test_the_clustered_transformer_copies_and_reloads_with_its_weights(transformer: ModelUnderTest,
                                                                      tmp_path: Path) -> None:
    from pytest_edgeopt.variants import tfenv
    from pytest_edgeopt.variants.tfmot import clustered_model

    clustered = clustered_model(context(transformer, "clustered", tmp_path, {}))
    kernel = next(w for w in clustered.get_layer("mha").weights if "query/kernel" in w.name)
    assert len(np.unique(kernel.numpy())) <= 16  # clustered indeed
    x = np.asarray(transformer.representative_data[0])  # type: ignore[index]
    # a copy (what cqat/pcqat wrap, and what tfmot's quantize_apply makes) has the same weights
    copy = tfenv.clone_keras_model(clustered)
    np.testing.assert_array_equal(copy(x).numpy(), clustered(x).numpy())
    # the flat weights (what the cache stores) fit a fresh copy of the user's model
    fresh = tfenv.clone_keras_model(tfenv.keras_original(transformer.source))
    fresh.set_weights(clustered.get_weights())
    np.testing.assert_array_equal(fresh(x).numpy(), clustered(x).numpy())


@pytest.mark.slow  # ~30 s; the fast twin is the test above
def test_cqat_int8_of_the_transformer_builds_and_runs(transformer: ModelUnderTest,
                                                                       tmp_path: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    ctx = context(transformer, "cqat_int8", tmp_path, {})
    data = ctx.spec.build_function()(ctx)
    it = Interpreter(model_content=data)
    details = it.get_tensor_details()
    assert any(np.dtype(d["dtype"]) == np.int8 for d in details)
    # tfmot has no QuantizeConfig for these: partial QAT, noted; the Dense layers are quantized
    assert ctx.notes["float_layers"] == ["ln_1", "ln_2", "mha"]
    it.allocate_tensors()
    x = np.asarray(transformer.representative_data[0], np.float32)  # type: ignore[index]
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    out = it.get_tensor(it.get_output_details()[0]["index"])
    assert np.all(np.isfinite(out)) and abs(float(out.sum()) - 1.0) < 0.05
