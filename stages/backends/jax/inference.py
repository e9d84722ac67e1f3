"""The JAX/Flax backend's inference: the evaluation view of a model and its prediction call, the
tutorial's ``nnx.jit`` step (stock) or plain ``jax.jit`` over the split state (tuned)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stages.backends.base import Model
from stages.backends.jax.network import Inference, module_of


def eval_view(model):
    """``model`` in evaluation mode (dropout off, batch norm on its running statistics): the
    model itself if it already is, else an ``nnx.view`` sharing its weights."""
    layers = model.layers
    if all(getattr(layer, "deterministic", True) and getattr(layer, "use_running_average", True)
           for layer in layers):
        return model
    return nnx.view(model, deterministic=True, use_running_average=True, raise_if_not_found=False)


@nnx.jit
def _stock_probabilities(model, images, scale):
    return jax.nn.softmax(model(images * scale), axis=-1)


def _functional_probabilities(model):
    graphdef, state = nnx.split(model)

    @jax.jit
    def functional_probabilities(state, images, scale):
        return jax.nn.softmax(nnx.merge(graphdef, state)(images * scale), axis=-1)

    return functools.partial(functional_probabilities, state)


def for_inference(model: Model, switches: tuple[str, ...]) -> Model:
    """``model``'s evaluation view with the prediction call of its level: the tutorial's ``nnx.jit``
    prediction step (stock) or plain ``jax.jit`` over the split state (``functional_inference``)."""
    view = eval_view(module_of(model))
    if "functional_inference" in switches:
        return Inference(view, _functional_probabilities(view))
    return Inference(view, functools.partial(_stock_probabilities, view))


def predict(model: Model, images: np.ndarray, batch_size: int, input_scale: float = 1.0) -> np.ndarray:
    """Class probabilities (float32, N x classes) for NHWC images, batch by batch."""
    inference = model if isinstance(model, Inference) else for_inference(model, ())
    scale = np.float32(input_scale)
    outputs = [inference.probabilities(jnp.asarray(images[start:start + batch_size], dtype=jnp.float32), scale)
               for start in range(0, images.shape[0], batch_size)]
    return np.concatenate([np.asarray(output) for output in outputs]).astype(np.float32)
