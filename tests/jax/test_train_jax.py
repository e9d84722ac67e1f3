"""The trainer contract (tests/trainer_contract.py) for JAX/Flax, in a JAX-only process, and what
only this backend has: its levels read back from JAX and its recipe points."""

import numpy as np
import pytest

from stages.common.architecture import build_spec
from tests.trainer_contract import *  # noqa: F403 - the shared contract tests
from tests.trainer_contract import SMALL, TUTORIAL, make_params

FRAMEWORK = "jax"


PLAIN_FLAX = """
import json, sys
from functools import partial
import numpy as np, jax
from flax import nnx, serialization
spec = json.load(open("spec.json"))
rngs, layers, channels, features = nnx.Rngs(0), [], spec["input_shape"][2], 0
for layer in spec["layers"]:
    kind, config = layer["kind"], layer["config"]
    if kind == "conv":
        layers.append(nnx.Conv(channels, config["filters"], (config["kernel_size"],) * 2,
                               padding=config["padding"].upper(), use_bias=config["bias"], rngs=rngs))
        channels = config["filters"]
    elif kind == "batch_norm": layers.append(nnx.BatchNorm(channels, rngs=rngs))
    elif kind == "activation":
        layers.append({"relu": nnx.relu, "gelu": partial(nnx.gelu, approximate=False)}[config["name"]])
    elif kind == "max_pool":
        pool = (config["pool"],) * 2
        layers.append(partial(nnx.max_pool, window_shape=pool, strides=pool))
    elif kind == "dropout": layers.append(nnx.Dropout(config["rate"]))
    elif kind == "flatten": layers.append(lambda x: x.reshape(x.shape[0], -1)); features = layer["output_shape"][0]
    elif kind == "dense": layers.append(nnx.Linear(features, config["units"], rngs=rngs)); features = config["units"]
model = nnx.Sequential(*layers)
state = nnx.state(model)
nnx.replace_by_pure_dict(state, serialization.from_bytes(state.to_pure_dict(), open("model.msgpack", "rb").read()))
nnx.update(model, state)
model = nnx.view(model, deterministic=True, use_running_average=True)
np.save("plain.npy", np.asarray(jax.nn.softmax(model(np.load("images.npy")), axis=-1)))
print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] == "stages")))
"""


@pytest.mark.parametrize(("optimizer", "weight_decay", "expected"), [
    ("adamw", 1e-4, "adamw"), ("adam", 1e-4, "adamw"), ("adam", 0.0, "adam"), ("sgd", 1e-4, "sgd")])
def test_a_stock_replicate_trains_with_flaxs_own_classes_and_loads_without_the_project(
        backend, tmp_path, monkeypatch, optimizer, weight_decay, expected):
    """The stock level is Flax as its tutorial writes it: read back from the trained model and from
    the ``nnx.Optimizer`` that fit() built, every layer is one of Flax's or JAX's own public layers
    or functions, the optimizer an optax transformation with the recipe's values; and the saved
    msgpack loads into a model built with Flax alone, in an interpreter that never imports the
    project, giving the project's predictions."""
    import json
    import os
    import subprocess
    import sys
    from functools import partial

    import jax
    import optax
    from flax import nnx

    from tests.trainer_contract import fit_small, make_split, small_settings

    built = []
    real = nnx.Optimizer

    def recording(model, tx, **kwargs):  # the real nnx.Optimizer, remembering what fit() built
        built.append((tx, real(model, tx, **kwargs)))
        return built[-1][1]

    monkeypatch.setattr(nnx, "Optimizer", recording)
    settings = small_settings(epochs=1, optimizer=optimizer, weight_decay=weight_decay)
    model, _ = fit_small(backend, settings, train=make_split(64, 1), val=make_split(10, 2))
    monkeypatch.undo()

    public_modules = (nnx.Conv, nnx.BatchNorm, nnx.Dropout, nnx.Linear)
    public_functions = (nnx.relu, nnx.gelu, nnx.tanh, nnx.sigmoid, nnx.max_pool, jax.lax.collapse)
    for layer in model.layers:
        if isinstance(layer, nnx.Module):
            assert type(layer) in public_modules and type(layer).__module__.startswith("flax.nnx."), layer
        else:
            function = layer.func if isinstance(layer, partial) else layer
            assert any(function is public for public in public_functions), layer
    (tx, used), = built
    assert isinstance(used, real) and tx.update.__module__.startswith("optax.")
    hyperparams = used.opt_state.hyperparams
    assert "learning_rate" in hyperparams  # optax.inject_hyperparams: the rate each step applied
    inner = jax.tree.leaves(used.opt_state.inner_state, is_leaf=lambda node: type(node).__module__.startswith("optax"))
    state_types = {type(node).__name__ for node in inner if type(node).__module__.startswith("optax")}
    if expected == "sgd":
        assert "TraceState" in state_types and float(hyperparams["momentum"]) == pytest.approx(settings.momentum)
        assert float(hyperparams["weight_decay"]) == pytest.approx(weight_decay)
    else:
        assert "ScaleByAdamState" in state_types and float(hyperparams["eps"]) == pytest.approx(1e-8)
        assert ("weight_decay" in hyperparams) is (expected == "adamw")
        if expected == "adamw":
            assert float(hyperparams["weight_decay"]) == pytest.approx(weight_decay)
    assert "LD_PRELOAD" not in os.environ
    assert optax.__name__ == "optax"

    backend.save_model(model, tmp_path / "model.msgpack")
    images = make_split(8, 3).images
    np.save(tmp_path / "images.npy", images)
    (tmp_path / "spec.json").write_text(build_spec(make_params(SMALL).model, (28, 28, 1), 10).to_json())
    result = subprocess.run([sys.executable, "-c", PLAIN_FLAX], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, env={key: value for key, value in os.environ.items() if key != "PYTHONPATH"})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == []
    np.testing.assert_allclose(np.load(tmp_path / "plain.npy"), backend.predict(model, images, batch_size=8),
                               atol=1e-6)


def test_only_the_tuned_level_compiles_the_functional_steps(backend, caplog):
    """Read back from JAX's own compile log (``jax_log_compiles``): stock training and inference
    compile the ``nnx.jit`` steps, the tuned level the plain ``jax.jit`` steps over the split state."""
    import logging

    import jax

    from tests.trainer_contract import fit_small, make_split, small_settings

    def compiled(tuning, switches):
        jax.clear_caches()
        caplog.clear()
        with caplog.at_level(logging.WARNING), jax.log_compiles(True):
            model, _ = fit_small(backend, small_settings(epochs=1, tuning=tuning, switches=switches),
                                 train=make_split(32, 1), val=make_split(10, 2))
            backend.predict(backend.for_inference(model, switches), make_split(10, 3).images, batch_size=10)
        return " ".join(record.getMessage() for record in caplog.records)

    stock, tuned = compiled("stock", ()), compiled("tuned", backend.TUNED)
    assert "_train_step" in stock and "functional_train_step" not in stock
    assert "functional_train_step" in tuned and "functional_probabilities" in tuned
    assert "functional_probabilities" not in stock and "_stock_probabilities" in stock


def test_gelu_is_the_exact_one_not_jaxs_default_approximation(backend):
    """JAX's ``gelu`` defaults to the tanh approximation; the recipe's is exact (erf)."""
    from math import erf, sqrt

    gelu = build_spec(make_params({**SMALL, "activation": "gelu"}).model, (28, 28, 1), 10)
    model = backend.build_model(gelu, 0)
    activation = model.layers[[layer.kind for layer in gelu.layers].index("activation")]
    inputs = np.linspace(-3, 3, 13, dtype=np.float32)
    exact = np.array([value * 0.5 * (1 + erf(value / sqrt(2))) for value in inputs])
    np.testing.assert_allclose(np.asarray(activation(inputs)), exact, atol=1e-6)
    import jax

    assert np.abs(np.asarray(jax.nn.gelu(inputs)) - exact).max() > 1e-4  # the default would have differed


def test_sgd_keeps_keras_velocity_in_weight_units_and_decays_the_weights_decoupled():
    """Two steps of the backend's SGD under a changing rate, from optax's own update: the velocity
    is in weight units (v = m v - lr g; w += v) and the decay acts on the weights (w -= lr wd w),
    not through the momentum; optax.sgd's gradient-unit buffer would end elsewhere."""
    import dataclasses

    import jax.numpy as jnp
    import optax

    from stages.backends.jax.training import _optimizer
    from tests.trainer_contract import small_settings

    settings = dataclasses.replace(small_settings(), optimizer="sgd", momentum=0.9, weight_decay=0.1)
    rates = np.array([0.1, 0.01])
    transformation = _optimizer(settings, rates)
    weight, gradient = jnp.array([1.0]), jnp.array([0.5])
    state = transformation.init(weight)
    for _ in rates:
        updates, state = transformation.update(gradient, state, weight)
        weight = optax.apply_updates(weight, updates)

    w0, g, m, wd = 1.0, 0.5, 0.9, 0.1
    v1 = -0.1 * g
    w1 = w0 - 0.1 * wd * w0 + v1
    v2 = m * v1 - 0.01 * g
    w2 = w1 - 0.01 * wd * w1 + v2
    np.testing.assert_allclose(np.asarray(weight), [w2], rtol=1e-6)
    gradient_units = w1 - 0.01 * (m * g + g) - 0.01 * wd * w1
    assert abs(w2 - gradient_units) > 1e-4


def flax_kind(layer, backend) -> str:
    """A layer of the built ``nnx.Sequential`` in the spec's vocabulary: Flax's module classes, and
    the JAX functions the backend puts between them."""
    import functools

    from flax import nnx

    modules = {nnx.Conv: "conv", nnx.BatchNorm: "batch_norm", nnx.Dropout: "dropout", nnx.Linear: "dense"}
    if type(layer) in modules:
        return modules[type(layer)]
    if layer is backend.FLATTEN:
        return "flatten"
    if isinstance(layer, functools.partial) and layer.func is nnx.max_pool:
        return "max_pool"
    if any(layer is function for function in backend.ACTIVATIONS.values()):
        return "activation"
    raise ValueError(f"unknown layer {layer!r}")


@pytest.mark.parametrize("model_params", [None, TUTORIAL, SMALL], ids=["default", "tutorial", "small"])
def test_built_model_has_the_specs_layers_as_flaxs_own_modules(backend, model_params):
    spec = build_spec(make_params(model_params).model, (28, 28, 1), 10)
    layers = backend.build_model(spec, 0).layers
    assert [flax_kind(layer, backend) for layer in layers] == [layer.kind for layer in spec.layers]
