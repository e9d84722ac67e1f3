"""The JAX/Flax backend's network: the shared architecture as an ``nnx.Sequential`` of Flax's own
layers and JAX functions (NHWC, kernels already in the canonical layout), its weights, and
``Inference``, the model with the prediction call ``for_inference`` gave it."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stages.backends.base import Model
from stages.common.architecture import BATCH_NORM_DECAY, BATCH_NORM_EPSILON, ArchitectureSpec

ACTIVATIONS: dict[str, Any] = {"relu": nnx.relu, "gelu": functools.partial(nnx.gelu, approximate=False),
                               "tanh": nnx.tanh, "sigmoid": nnx.sigmoid}
# (N, H, W, C) -> (N, H * W * C): JAX's own reshape, in channels-last order (the canonical one).
FLATTEN = functools.partial(jax.lax.collapse, start_dimension=1)


def build_model(spec: ArchitectureSpec, seed: int) -> Model:
    """The spec's layers as an ``nnx.Sequential`` taking NHWC float32 images, giving logits; the
    initial weights drawn from ``jax.random.key(seed)``."""
    rngs = nnx.Rngs(params=jax.random.key(seed))
    glorot = nnx.initializers.glorot_uniform()  # Keras' default, the recipe's; Flax's own is LeCun normal
    layers: list[Any] = []
    channels = spec.input_shape[2]
    features = 0
    for layer in spec.layers:
        config = layer.config
        if layer.kind == "conv":
            layers.append(nnx.Conv(channels, config["filters"], (config["kernel_size"],) * 2,
                                   padding=config["padding"].upper(), use_bias=config["bias"], kernel_init=glorot,
                                   rngs=rngs))
            channels = config["filters"]
        elif layer.kind == "batch_norm":
            layers.append(nnx.BatchNorm(channels, momentum=BATCH_NORM_DECAY, epsilon=BATCH_NORM_EPSILON, rngs=rngs))
        elif layer.kind == "activation":
            layers.append(ACTIVATIONS[config["name"]])
        elif layer.kind == "max_pool":
            pool = (config["pool"],) * 2
            layers.append(functools.partial(nnx.max_pool, window_shape=pool, strides=pool))
        elif layer.kind == "dropout":
            layers.append(nnx.Dropout(config["rate"]))
        elif layer.kind == "flatten":
            layers.append(FLATTEN)
            features = layer.output_shape[0]
        elif layer.kind == "dense":
            layers.append(nnx.Linear(features, config["units"], kernel_init=glorot, rngs=rngs))
            features = config["units"]
        else:
            raise ValueError(f"unknown layer kind {layer.kind!r}")
    return nnx.Sequential(*layers)


@dataclass
class Inference:
    """A model ready for ``predict``: its evaluation view and the prediction call of its level."""

    model: Any
    probabilities: Any  # (images, scale) -> class probabilities on the device


def module_of(model):
    return model.model if isinstance(model, Inference) else model


def count_parameters(model: Model) -> int:
    return int(sum(leaf.size for leaf in jax.tree.leaves(nnx.state(module_of(model), nnx.Param))))


def _variables(model) -> list:
    """Every weight ``nnx.Variable`` in the canonical order."""
    variables: list = []
    for layer in module_of(model).layers:
        if isinstance(layer, (nnx.Conv, nnx.Linear)):
            variables += [layer.kernel] + ([layer.bias] if layer.bias is not None else [])
        elif isinstance(layer, nnx.BatchNorm):
            variables += [layer.scale, layer.bias, layer.mean, layer.var]
    return variables


def get_weights(model: Model) -> list[np.ndarray]:
    """All weights in the canonical layout (Flax's own: kernels (kh, kw, in, out) and (in, out);
    batch norm scale, bias, running mean, running variance)."""
    return [np.array(variable[...]) for variable in _variables(model)]


def set_weights(model: Model, weights: Sequence[np.ndarray]) -> None:
    variables = _variables(model)
    if len(weights) != len(variables):
        raise ValueError(f"expected {len(variables)} weight arrays, got {len(weights)}")
    for variable, weight in zip(variables, weights):
        if tuple(weight.shape) != tuple(variable[...].shape):
            raise ValueError(f"weight of shape {weight.shape} does not fit {tuple(variable[...].shape)}")
        variable[...] = jnp.asarray(weight, dtype=jnp.float32)


def batch_norm_constants(model: Model) -> list[tuple[float, float]]:
    """Flax's ``momentum`` is the share of the running statistic kept: the decay itself."""
    return [(float(layer.momentum), float(layer.epsilon)) for layer in module_of(model).layers
            if isinstance(layer, nnx.BatchNorm)]
