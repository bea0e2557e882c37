"""Sequence models measured as they are meant to run (issue 18).

``UNIDIRECTIONAL_SEQUENCE_LSTM`` keeps its state in variable tensors that persist across
``invoke()`` (FACTS, "Recurrent models"): independent eval samples need a reset before
each, a stateful RNN needs none (it is evaluated as one sequence), and the fp32
``.tflite`` is checked against the source model before any variant is judged
(:mod:`pytest_edgeopt.fidelity`). In-process sessions (no worker): these tests are about
the numbers, tests/test_workers.py about the processes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_edgeopt import ModelUnderTest
from pytest_edgeopt.fidelity import Fidelity, FidelityError, Tolerance, first_divergent, output_difference
from pytest_edgeopt.session import EdgeoptSession
from pytest_edgeopt.settings import Settings
from pytest_edgeopt.targets.base import LatencySettings
from pytest_edgeopt.targets.cpu import CpuTarget, run_predict

STEPS = 6  #: short sequences: the state a previous sample left has not decayed yet
FAST = LatencySettings(warmup=1, min_samples=3, min_time_s=0.0, max_time_s=1.0)


def session(cache: Path) -> EdgeoptSession:
    settings = Settings(targets=None, variants=None, require=frozenset(), cache_dir=cache, rebuild=False,
                        json_path=None, latency=FAST)
    return EdgeoptSession(settings, lambda name, device: CpuTarget(name, device), in_process=True)


def keras() -> Any:
    from fixtures.cache import legacy_tf_keras

    return legacy_tf_keras()[1]


def batch1_tflite(model: Any, shape: tuple[int, ...], dtype: str = "float32") -> bytes:
    """The Keras LSTM fusion codelab's recipe: a batch-1 concrete function."""
    from fixtures.cache import legacy_tf_keras

    tf = legacy_tf_keras()[0]
    concrete = tf.function(lambda x: model(x)).get_concrete_function(tf.TensorSpec([1, *shape], dtype))
    return bytes(tf.lite.TFLiteConverter.from_concrete_functions([concrete], model).convert())


def lstm32(seed: int = 0) -> Any:
    k = keras()
    k.utils.set_random_seed(seed)
    inp = k.Input((STEPS, 4), name="x")
    h = k.layers.Dense(6, name="pre")(inp)
    h = k.layers.LSTM(32, name="lstm")(h)
    return k.Model(inp, k.layers.Dense(5, name="logits")(h))


@pytest.fixture(scope="module")
def lstm_case(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path, np.ndarray]:
    model = lstm32()
    path = tmp_path_factory.mktemp("lstm") / "lstm32.tflite"
    path.write_bytes(batch1_tflite(model, (STEPS, 4)))
    x = np.random.default_rng(0).normal(size=(8, STEPS, 4)).astype(np.float32) * 2
    return model, path, x


def test_lstm_samples_are_independent_state_is_reset_before_each(lstm_case: tuple[Any, Path, np.ndarray]) -> None:
    # Without resets (what the evaluator did): far from Keras, and the same input invoked
    # twice differs (FACTS: max |d| 0.44 on a random LSTM(32) over 40 steps).
    model, path, x = lstm_case
    keras_out = model.predict(x, verbose=0)
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    stale = []
    for sample in x:
        it.set_tensor(it.get_input_details()[0]["index"], sample[None])
        it.invoke()
        stale.append(it.get_tensor(it.get_output_details()[0]["index"])[0].copy())
    assert np.abs(np.array(stale) - keras_out).max() > 0.05
    (tflite_out,) = run_predict(path, x)
    assert np.abs(tflite_out - keras_out).max() < 1e-4
    (again,) = run_predict(path, np.concatenate([x[:1], x[:1]]))
    assert np.array_equal(again[0], again[1])


def test_sequence_mode_carries_state_between_samples(lstm_case: tuple[Any, Path, np.ndarray]) -> None:
    model, path, x = lstm_case
    (independent,) = run_predict(path, np.concatenate([x[:1], x[:1]]))
    (carried,) = run_predict(path, np.concatenate([x[:1], x[:1]]), sequence=True)
    assert np.array_equal(carried[0], independent[0])  # one reset before the first sample
    assert np.abs(carried[1] - independent[1]).max() > 0.05  # the second starts from the first's state


def test_output_difference_and_tolerance() -> None:
    diff, span = output_difference([np.array([[0.0, 1.0], [0.5, 0.5]])], [np.array([[0.0, 0.9], [0.5, 0.5]])])
    assert diff == pytest.approx(0.1) and span == 1.0
    fid = Fidelity("top1", 0.542, 0.115, 0.99, 1.0, 16, "keras", first_divergent_op="UNIDIRECTIONAL_SEQUENCE_LSTM",
                   first_divergent_layer="lstm_1")
    assert Fidelity.from_dict(fid.to_dict()) == fid
    assert fid.problems(Tolerance()) == ["metric", "max_diff"]
    assert fid.problems(Tolerance(enabled=False)) == []
    with pytest.raises(FidelityError, match=r"fp32 conversion differs from the source model: top1 0\.115 vs 0\.542, "
                                            r"max \|d\| 0\.99 .*first divergent op UNIDIRECTIONAL_SEQUENCE_LSTM "
                                            r"\(layer 'lstm_1'\)"):
        fid.check(Tolerance())
    assert Tolerance.from_option({"metric_abs": 0.05}) == Tolerance(0.05, 0.01)
    with pytest.raises(ValueError, match="unknown key"):
        Tolerance.from_option({"max_d": 1})


def test_float32_rounding_on_near_constant_outputs_is_not_a_divergence() -> None:
    # EfficientNetB0 with random weights: every output ~0.1, range 3.7e-7, max |d| 3e-8 (float32
    # rounding): relative to that range it is 8%, yet no conversion can do better
    rounding = Fidelity("top1", 0.1, 0.1, 2.98e-08, 3.73e-07, 32, "keras")
    assert rounding.problems(Tolerance()) == []
    real = Fidelity("top1", 0.1, 0.1, 3e-05, 3.73e-07, 32, "keras")
    assert real.problems(Tolerance()) == ["max_diff"]


def test_first_divergent_op_names_the_lstm_whose_weights_differ(lstm_case: tuple[Any, Path, np.ndarray]) -> None:
    model, _, x = lstm_case
    other = lstm32()
    weights = other.get_layer("lstm").get_weights()
    other.get_layer("lstm").set_weights([w[::-1].copy() for w in weights])
    assert first_divergent(model, batch1_tflite(other, (STEPS, 4)), x[:4], 0.01) == (
        "UNIDIRECTIONAL_SEQUENCE_LSTM", "lstm")
    assert first_divergent(model, batch1_tflite(model, (STEPS, 4)), x[:4], 0.01) is None


# -- through the session: fp32 measured at the source model's accuracy ------------------------


@pytest.fixture(scope="module")
def char_data() -> Any:
    from fixtures.sequence import sequence_data

    return sequence_data()


@pytest.mark.slow  # bigger model or matrix; its fast twin runs by default
def test_stacked_lstm_keras_fp32_measures_at_the_source_accuracy(tmp_path: Path, char_data: Any) -> None:
    from fixtures.sequence import stacked_lstm_model

    model = stacked_lstm_model()
    mut = ModelUnderTest("char-keras", model, eval_data=(char_data.x_eval, char_data.y_eval))
    edge = session(tmp_path)
    try:
        built = edge.build(mut, "fp32")
        m = edge.measure(mut, built, edge.target("cpu", CpuTarget().device))
    finally:
        edge.close()
    keras_top1 = float(np.mean(np.argmax(model.predict(char_data.x_eval, verbose=0), -1) == char_data.y_eval))
    assert m.fidelity is not None and m.fidelity.max_abs_diff < 1e-4
    assert m.metric == pytest.approx(keras_top1) == pytest.approx(m.source_metric)
    assert built.recipe["conversion"] == "concrete_function_batch1"  # the builder's note, in the recipe
    d = m.to_dict()
    assert d["derived"]["source_metric"] == pytest.approx(keras_top1)
    assert d["fidelity"]["max_abs_diff"] < 1e-4 and d["fidelity"]["source_kind"] == "keras"


@pytest.mark.slow  # bigger model or matrix; its fast twin runs by default
def test_stacked_lstm_batch1_saved_model_fp32_measures_at_the_source_accuracy(tmp_path: Path, char_data: Any) -> None:
    from fixtures.sequence import stacked_lstm_model, stacked_lstm_saved_model

    path = stacked_lstm_saved_model()
    mut = ModelUnderTest("char-sm", path, eval_data=(char_data.x_eval, char_data.y_eval))
    edge = session(tmp_path)
    try:
        m = edge.measure(mut, edge.build(mut, "fp32"), edge.target("cpu", CpuTarget().device))
    finally:
        edge.close()
    keras_top1 = float(np.mean(np.argmax(stacked_lstm_model().predict(char_data.x_eval, verbose=0), -1)
                               == char_data.y_eval))  # the same seeded weights
    assert m.fidelity is not None and m.fidelity.source_kind == "saved_model"
    assert m.fidelity.max_abs_diff < 1e-4
    assert m.metric == pytest.approx(keras_top1) == pytest.approx(m.source_metric)


def test_a_stateful_rnn_is_evaluated_as_a_sequence(tmp_path: Path) -> None:
    k = keras()
    k.utils.set_random_seed(0)
    model = k.Sequential([k.layers.LSTM(8, stateful=True, batch_input_shape=(1, 5, 3), name="lstm"),
                          k.layers.Dense(4, name="out")])
    x = np.random.default_rng(1).random((12, 5, 3), dtype=np.float32)
    model.reset_states()
    y = model.predict(x, batch_size=1, verbose=0)  # the sequence's own outputs: neg_mse 0 when carried
    model.reset_states()
    mut = ModelUnderTest("stateful", model, eval_data=(x, y), metric="neg_mse")
    edge = session(tmp_path)
    try:
        m = edge.measure(mut, edge.build(mut, "fp32"), edge.target("cpu", CpuTarget().device))
    finally:
        edge.close()
    assert m.extras["evaluation"] == "sequence"
    assert m.fidelity is not None and m.fidelity.stateful
    assert m.metric == pytest.approx(0.0, abs=1e-8)


def test_a_conversion_that_differs_from_the_source_fails_naming_the_op(tmp_path: Path) -> None:
    # A deliberately wrong fp32: the cache entry of the model's fp32 holds the conversion of
    # a twin whose LSTM weights differ (the same names, ops and shapes).
    model = lstm32()
    twin = lstm32()
    twin.get_layer("lstm").set_weights([w[::-1].copy() for w in twin.get_layer("lstm").get_weights()])
    x = np.random.default_rng(0).random((16, STEPS, 4), dtype=np.float32)
    y = np.argmax(model.predict(x, verbose=0), -1)
    mut = ModelUnderTest("diverges", model, eval_data=(x, y))
    edge = session(tmp_path)
    try:
        built = edge.build(mut, "fp32")
        entry = edge.builder.cache.lookup(built.key)
        assert entry is not None
        edge.builder.cache.store(built.key, batch1_tflite(twin, (STEPS, 4)), {k: v for k, v in entry.meta.items()
                                                                          if k not in ("sha256", "size_bytes")})
        cpu = edge.target("cpu", CpuTarget().device)
        with pytest.raises(FidelityError, match=r"fp32 conversion differs from the source model: top1 [0-9.]+ vs "
                                                r"1\.000, max \|d\| .*first divergent op "
                                                r"UNIDIRECTIONAL_SEQUENCE_LSTM \(layer 'lstm'\)"):
            edge.measure(mut, built, cpu)
        with pytest.raises(FidelityError):  # every later test of the model: the same failure
            edge.measure(mut, built, cpu)
    finally:
        edge.close()
    # A knob turns the check off (the figures stay in the cache; judged again each session).
    loose = ModelUnderTest("diverges", model, eval_data=(x, y), options={"fidelity": False})
    edge = session(tmp_path)
    try:
        m = edge.measure(loose, edge.build(loose, "fp32"), edge.target("cpu", CpuTarget().device))
        assert m.fidelity is None and m.metric is not None and m.metric < 1.0
    finally:
        edge.close()
