"""The trainer contract and Keras' own checks (tests/keras_contract.py) for Keras on TensorFlow, in
a TensorFlow-only process, and what only this engine has: oneDNN and the traced inference call."""

import numpy as np
import pytest

from tests.keras_contract import *  # noqa: F403 - the contract and every Keras engine's checks

FRAMEWORK = "keras"


def test_the_tuned_level_turns_onednn_on_before_tensorflow_starts_whatever_the_shell_says():
    """Read back from TensorFlow's own start-up log: with the caller's TF_ENABLE_ONEDNN_OPTS=0,
    loading the backend at the tuned level still starts TensorFlow with its oneDNN kernels."""
    import os
    import subprocess
    import sys

    from tests.support import PROJECT_ROOT

    probe = "from stages import backends; backends.load('keras', 'tuned')"
    environment = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPP_MIN_LOG_LEVEL": "0"}
    result = subprocess.run([sys.executable, "-c", probe], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            timeout=300, env=environment)
    assert result.returncode == 0, result.stderr
    assert "oneDNN custom operations are on" in result.stderr


def test_a_tuned_run_without_the_onednn_switch_leaves_onednn_to_tensorflow():
    """``--switches traced_inference`` (one switch alone, as bench/fair_bench.py measures it):
    TensorFlow starts with no TF_ENABLE_ONEDNN_OPTS in its environment, whatever the shell set,
    so its own default for the CPU holds (as at the stock level)."""
    import os
    import subprocess
    import sys

    from tests.support import PROJECT_ROOT

    probe = ("import os; from stages import backends; backends.load('keras', 'tuned', ('traced_inference',)); "
             "import tensorflow; print(os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset'))")
    environment = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "1"}
    result = subprocess.run([sys.executable, "-c", probe], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            timeout=300, env=environment)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["unset"]


@pytest.mark.parametrize("switches", [(), ("traced_inference",)], ids=["stock", "traced"])
def test_inference_is_keras_own_call_or_one_traced_function(backend, switches, monkeypatch):
    """Stock: Model.predict for many images and a plain model(x) call for one batch, as Keras' API
    docs advise; ``traced_inference``: every batch through one tf.function (read back: its
    concrete graphs); same probabilities either way."""
    import keras

    from tests.trainer_contract import fit_small, make_split, small_settings

    model, _ = fit_small(backend, small_settings(epochs=1), train=make_split(64, 1), val=make_split(10, 2))
    predicted = []
    real = keras.Model.predict
    monkeypatch.setattr(keras.Model, "predict",
                        lambda self, *args, **kwargs: (predicted.append(len(args[0])), real(self, *args, **kwargs))[1])
    ready = backend.for_inference(model, switches)
    images = make_split(30, 5).images
    many, one = backend.predict(ready, images, batch_size=10), backend.predict(ready, images[:1], batch_size=1)
    if switches:
        assert predicted == [] and ready.call.experimental_get_tracing_count() >= 1
    else:
        assert predicted == [30] and not isinstance(ready, backend.TracedInference)
    plain = backend.predict(backend.for_inference(model, ()), images, batch_size=10)
    np.testing.assert_allclose(many, plain, atol=1e-6)
    np.testing.assert_allclose(one, plain[:1], atol=1e-6)


@pytest.mark.parametrize("tuning", ["stock", "tuned"])
def test_neither_level_compiles_the_train_step_with_xla(backend, tuning):
    """Read back from Keras: the compiled trainer's ``jit_compile`` is Keras' ``auto`` (off on this
    CPU-only machine) at both levels: XLA made the step 3.3x slower here (docs/fairness.md)."""
    import numpy as np

    from stages.common.architecture import build_spec
    from tests.trainer_contract import SMALL, make_params, small_settings

    settings = small_settings(epochs=1, tuning=tuning, switches=backend.TUNED if tuning == "tuned" else ())
    model = backend.build_model(build_spec(make_params(SMALL).model, (28, 28, 1), 10), 0)
    trainer = backend.compile_trainer(model, settings, np.full(4, 1e-3), seed=1)
    assert trainer.jit_compile is False
