"""A real native crash, through pytest-edgeopt: the int8 stacked-LSTM model of FACTS.md
(Embedding(465,100) -> LSTM(128) -> LSTM(128) -> concat(embedding, both LSTMs) -> pooling
-> Dense) corrupts LiteRT's heap (``free(): invalid next size``, SIGABRT) in invoke or
teardown. Not reproduced at test size (Embedding(60,16)/LSTM(32)), so it lives here.

    python benchmarks/native_crash.py [--in-process]

Writes the model (random weights, batch 1, sequence 40) and a one-test project to a
temporary directory and runs ``pytest`` on it (variants fp32, int8 on cpu). Through a
worker (default) the int8 item fails with the signal, the stage and the stderr tail while
fp32 passes, and pytest exits 1; with ``--in-process`` (``EDGEOPT_IN_PROCESS=1``, the old
path) the pytest process itself dies (exit -6 / 134) with no summary.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import textwrap
from pathlib import Path

from sidebyside import header, python_env, run_child, say

MAKE_MODEL = """
import os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import numpy as np
import tf_keras as keras
inp = keras.Input(shape=(40,), batch_size=1)  # float ids: a CAST in front of the Embedding
emb = keras.layers.Embedding(465, 100)(inp)
a = keras.layers.LSTM(128, return_sequences=True)(emb)
b = keras.layers.LSTM(128, return_sequences=True)(a)
x = keras.layers.Concatenate()([emb, a, b])
x = keras.layers.GlobalAveragePooling1D()(x)
out = keras.layers.Dense(10, activation="softmax")(x)
model = keras.Model(inp, out)
model.compile(loss="sparse_categorical_crossentropy")
model.save(sys.argv[1])
"""

CONFTEST = """
import numpy as np
import pytest
from pytest_edgeopt import ModelUnderTest

@pytest.fixture(scope="session")
def edgeopt_model():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 465, size=(64, 40)).astype(np.float32)
    y = rng.integers(0, 10, size=64)
    return ModelUnderTest(name="lstm-stack", model={model!r}, eval_data=(x, y),
                          representative_data=[x[i:i + 1] for i in range(32)],
                          options={{"calibration_samples": 32}})
"""

TEST = """
import pytest

@pytest.mark.edgeopt_variants("fp32", "int8")
@pytest.mark.cpu
def test_runs(measurement):
    pass
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--in-process", action="store_true", help="build and measure in the pytest process (old path)")
    args = ap.parse_args()
    header("native crash: int8 stacked LSTM through pytest-edgeopt " + ("in-process" if args.in_process else
                                                                          "through a worker"))
    with tempfile.TemporaryDirectory(prefix="edgeopt-crash-") as tmp:
        project = Path(tmp)
        model = project / "lstm_stack.h5"
        say("building the model")
        run_child([sys.executable, "-c", MAKE_MODEL, str(model)], env=python_env())
        (project / "conftest.py").write_text(textwrap.dedent(CONFTEST.format(model=str(model))))
        (project / "test_lstm.py").write_text(textwrap.dedent(TEST))
        env = {**python_env(), "EDGEOPT_IN_PROCESS": "1" if args.in_process else "0"}
        say("running pytest")
        child = run_child([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rfE", "-q",
                           f"--edgeopt-cache-dir={project / 'cache'}", str(project)], cwd=project, env=env,
                          check=False)
        print(child.stdout[-6000:])
        if child.returncode < 0 or child.returncode > 4:
            print(f"stderr tail:\n{child.stderr[-1500:]}")
        print(f"exit code {child.returncode}")


if __name__ == "__main__":
    main()
