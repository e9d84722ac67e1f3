"""The Keras backend's network: the shared architecture as a ``keras.Sequential`` of Keras' own
layers (NHWC, weights already in the canonical layout), and its inference, stock or traced."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stages.backends.base import Model
from stages.backends.keras.engine import ENGINE, keras
from stages.common.architecture import BATCH_NORM_DECAY, BATCH_NORM_EPSILON, ArchitectureSpec

if ENGINE == "tensorflow":
    import tensorflow as tf


def build_model(spec: ArchitectureSpec, seed: int) -> Model:
    """The spec's layers as a ``keras.Sequential`` taking NHWC float32 images, giving logits; the
    initial weights drawn from Keras' global generator, which ``configure`` seeded with ``seed``."""
    layers = keras.layers
    model_layers: list = [keras.Input(shape=spec.input_shape)]
    for layer in spec.layers:
        config = layer.config
        if layer.kind == "conv":
            model_layers.append(layers.Conv2D(config["filters"], config["kernel_size"], padding=config["padding"],
                                              use_bias=config["bias"]))
        elif layer.kind == "batch_norm":
            model_layers.append(layers.BatchNormalization(momentum=BATCH_NORM_DECAY, epsilon=BATCH_NORM_EPSILON))
        elif layer.kind == "activation":
            model_layers.append(layers.Activation(config["name"]))
        elif layer.kind == "max_pool":
            model_layers.append(layers.MaxPooling2D(config["pool"]))
        elif layer.kind == "dropout":
            model_layers.append(layers.Dropout(config["rate"]))
        elif layer.kind == "flatten":
            model_layers.append(layers.Flatten())  # channels-last: (H, W, C) order
        elif layer.kind == "dense":
            model_layers.append(layers.Dense(config["units"]))
        else:
            raise ValueError(f"unknown layer kind {layer.kind!r}")
    return keras.Sequential(model_layers, name="comparison_net")


@dataclass(frozen=True)
class TracedInference:
    """A Keras model with its inference call traced once as a ``tf.function`` (``traced_inference``)."""

    model: Any
    call: Any  # batch -> logits


def count_parameters(model: Model) -> int:
    model = model.model if isinstance(model, TracedInference) else model
    return int(sum(np.prod(weight.shape) for weight in model.trainable_weights))


def get_weights(model: Model) -> list[np.ndarray]:
    """All weights in the canonical layout (Keras' own: kernels (kh, kw, in, out) and (in, out))."""
    return [np.asarray(weight) for weight in model.get_weights()]


def set_weights(model: Model, weights: Sequence[np.ndarray]) -> None:
    model.set_weights(weights)


def batch_norm_constants(model: Model) -> list[tuple[float, float]]:
    """Keras' ``momentum`` is the share of the running statistic kept: the decay itself."""
    return [(float(layer.momentum), float(layer.epsilon)) for layer in model.layers
            if isinstance(layer, keras.layers.BatchNormalization)]


def for_inference(model: Model, switches: tuple[str, ...]) -> Model:
    """``model`` as stock inference calls it, or a ``TracedInference`` of it (``traced_inference``)."""
    model = model.model if isinstance(model, TracedInference) else model
    if "traced_inference" in switches:
        return TracedInference(model, tf.function(lambda batch: model(batch, training=False), reduce_retracing=True))
    return model


def predict(model: Model, images: np.ndarray, batch_size: int, input_scale: float = 1.0) -> np.ndarray:
    """Class probabilities (float32, N x classes) for NHWC images, batch by batch.

    Stock: ``Model.predict`` for more images than one batch, and a plain ``model(x)`` call for
    one batch, as Keras' API docs advise for small inputs; ``traced_inference``: the traced call.
    """
    images = np.asarray(images, dtype=np.float32)
    traced = model.call if isinstance(model, TracedInference) else None
    model = model.model if isinstance(model, TracedInference) else model
    if traced is None and images.shape[0] > batch_size:
        logits = model.predict(images * np.float32(input_scale), batch_size=batch_size, verbose=0)
        return keras.ops.convert_to_numpy(keras.ops.softmax(logits)).astype(np.float32)
    call = traced if traced is not None else (lambda batch: model(batch, training=False))
    outputs = []
    for start in range(0, images.shape[0], batch_size):
        batch = images[start:start + batch_size] * np.float32(input_scale)
        outputs.append(keras.ops.convert_to_numpy(keras.ops.softmax(call(batch))))
    return np.concatenate(outputs).astype(np.float32)
