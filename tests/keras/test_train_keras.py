"""The trainer contract (tests/trainer_contract.py) for TensorFlow/Keras, in a Keras-only process,
and what only Keras has: its augmentation layers and its safe-mode loader against a real payload."""

import numpy as np
import pytest

from stages.common.architecture import build_spec
from stages.common.errors import StageError
from tests.trainer_contract import *  # noqa: F403 - the shared contract tests
from tests.trainer_contract import SMALL, make_params

FRAMEWORK = "keras"


def augment_images(images, settings, background, seed):
    """The augmentation fit() puts in front of the model, applied as in training."""
    from stages.backends.keras import _augmentation

    return np.asarray(_augmentation(settings, background, seed)(images, training=True))


def test_keras_archive_with_a_lambda_layer_is_refused_and_never_runs(tmp_path):
    import keras

    from stages.backends import keras as backend

    marker = tmp_path / "marker"
    # A Lambda layer's function is stored as bytecode: loading it without safe mode runs it.
    function = eval(f"lambda x: (open({str(marker)!r}, 'w').write('ran'), x)[1]")  # noqa: S307
    evil = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Lambda(function, output_shape=(28, 28, 1))])
    path = tmp_path / backend.MODEL_FILE
    evil.save(path)
    marker.unlink(missing_ok=True)  # saving may have traced it
    spec = build_spec(make_params(SMALL).model, (28, 28, 1), 10)

    with pytest.raises(StageError, match=rf"{path}: not a loadable Keras model .*(?i:lambda|safe)"):
        backend.load_model(path, spec)
    assert not marker.exists()

    # The payload is live: Keras' unsafe mode runs it.
    unsafe = keras.saving.load_model(path, compile=False, safe_mode=False)
    unsafe(np.zeros((1, 28, 28, 1), np.float32))
    assert marker.read_text() == "ran"


@pytest.mark.parametrize(("optimizer", "weight_decay", "expected"), [
    ("adamw", 1e-4, "AdamW"), ("adam", 1e-4, "Adam"), ("adam", 0.0, "Adam"), ("sgd", 1e-4, "SGD")])
def test_a_stock_replicate_trains_with_keras_own_classes_and_loads_without_the_project(
        backend, tmp_path, monkeypatch, optimizer, weight_decay, expected):
    """The stock level is Keras as its users write it: read back from Keras itself, every layer of
    the model that Model.fit trained and its optimizer are Keras' own classes with the recipe's
    values, XLA stays at Keras' default (off under op determinism); and the saved archive loads
    with Keras' safe mode in an interpreter that never imports the project, giving the project's
    predictions."""
    import json
    import os
    import subprocess
    import sys

    import keras

    from tests.trainer_contract import fit_small, make_split, small_settings

    trained = []
    fit = keras.Model.fit

    def recording_fit(self, *args, **kwargs):  # the real fit, remembering what it trained
        trained.append(self)
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", recording_fit)
    settings = small_settings(epochs=1, optimizer=optimizer, weight_decay=weight_decay)
    model, _ = fit_small(backend, settings, train=make_split(64, 1), val=make_split(10, 2))
    (trainer,) = trained
    layers, pending = [], list(trainer.layers)
    while pending:  # every layer, inside nested models too
        layer = pending.pop()
        layers.append(layer)
        pending += getattr(layer, "layers", [])
    assert model in layers and len(layers) > len(model.layers)
    assert all(type(layer).__module__.startswith("keras.") for layer in layers)
    assert type(trainer.optimizer) is getattr(keras.optimizers, expected)
    if expected != "SGD":
        assert trainer.optimizer.epsilon == backend.ADAM_EPSILON
    assert (trainer.optimizer.weight_decay or 0.0) == pytest.approx(weight_decay)
    assert trainer.jit_compile is False
    assert "LD_PRELOAD" not in os.environ

    backend.save_model(model, tmp_path / "model.keras")
    images = make_split(8, 3).images
    np.save(tmp_path / "images.npy", images)
    plain = """
import json, sys
import keras, numpy as np
model = keras.saving.load_model("model.keras", compile=False, safe_mode=True)
np.save("plain.npy", np.asarray(keras.ops.softmax(model(np.load("images.npy"), training=False))))
print(json.dumps([sorted({type(layer).__module__.split(".")[0] for layer in model.layers}),
                  sorted(name for name in sys.modules if name.split(".")[0] == "stages")]))
"""
    result = subprocess.run([sys.executable, "-c", plain], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, env={key: value for key, value in os.environ.items() if key != "PYTHONPATH"})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == [["keras"], []]
    np.testing.assert_allclose(np.load(tmp_path / "plain.npy"), backend.predict(model, images, batch_size=8),
                               atol=1e-6)


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
        assert predicted == [] and ready._comparison_call.experimental_get_tracing_count() >= 1
    else:
        assert predicted == [30] and not hasattr(ready, "_comparison_call")
    plain = backend.predict(backend.for_inference(model, ()), images, batch_size=10)
    np.testing.assert_allclose(many, plain, atol=1e-6)
    np.testing.assert_allclose(one, plain[:1], atol=1e-6)
