"""A third framework backend, in plain numpy, for the extensibility test (tests/e2e/test_third_backend.py).

It implements ``stages.backends.base.Backend`` for one family of the shared architecture, the
classic tutorial's: one conv layer (valid padding, with bias) -> ReLU -> max-pool -> flatten ->
dense logits, trained for real by mini-batch gradient descent on the shared learning-rate table
and batch order. Anything else is refused with a ``StageError``.
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stages.backends.base import (
    EpochCallback,
    EpochRecord,
    Model,
    StepCallback,
    StepRecord,
    batch_indices,
    check_finite,
)
from stages.common import atomic
from stages.common.architecture import ArchitectureSpec, initial_weights
from stages.common.errors import StageError
from stages.common.params import TrainParams
from stages.common.prepared import Split

MODEL_FILE = "model.npz"
DESCRIPTION = ("NumPy: the tutorial architecture family trained by plain mini-batch gradient descent; the tuned "
               "level changes nothing (numpy has no switches), so it measures the project's own overhead.")
SWITCHES = {"float32_matmul": "numpy's float32 matrix products (https://numpy.org/doc/stable/reference/routines.linalg.html)"}
TUNED: tuple[str, ...] = ("float32_matmul",)
SEMANTICS = {"moving_variance": "unbiased", "adam_epsilon": "corrected", "sgd_momentum": "weight_units",
             "sgd_weight_decay": "decoupled", "gelu": "exact"}
SUPPORTED = ["conv", "activation", "max_pool", "flatten", "dense"]


def environment() -> dict[str, str]:
    return {"numpy": np.__version__}
_state: dict[str, Any] = {"seed": 0}


def configure(settings: TrainParams, seed: int) -> str:
    _state["seed"] = seed
    return "cpu"


def build_model(spec: ArchitectureSpec) -> Model:
    kinds = [layer.kind for layer in spec.layers]
    conv = spec.layers[0]
    if kinds != SUPPORTED or conv.config["padding"] != "valid" or not conv.config["bias"]:
        raise StageError(f"the numpy backend builds only {' -> '.join(SUPPORTED)} (valid padding), not {kinds}")
    model = {"kernel_size": conv.config["kernel_size"], "pool": spec.layers[2].config["pool"]}
    set_weights(model, initial_weights(spec, np.random.default_rng(_state["seed"])))
    return model


def layer_kinds(model: Model) -> list[str]:
    return list(SUPPORTED)


def count_parameters(model: Model) -> int:
    return int(sum(weight.size for weight in get_weights(model)))


def get_weights(model: Model) -> list[np.ndarray]:
    return [model["conv_kernel"], model["conv_bias"], model["dense_kernel"], model["dense_bias"]]


def set_weights(model: Model, weights: Sequence[np.ndarray]) -> None:
    names = ("conv_kernel", "conv_bias", "dense_kernel", "dense_bias")
    if len(weights) != len(names):
        raise ValueError(f"expected {len(names)} weight arrays, got {len(weights)}")
    for name, weight in zip(names, weights):
        model[name] = np.array(weight, dtype=np.float32)


def _forward(model: Model, images: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    k, pool = model["kernel_size"], model["pool"]
    windows = np.lib.stride_tricks.sliding_window_view(images, (k, k), axis=(1, 2))  # N, Ho, Wo, C, k, k
    patches = windows.transpose(0, 1, 2, 4, 5, 3).reshape(*windows.shape[:3], -1)  # N, Ho, Wo, k*k*C
    kernel = model["conv_kernel"].reshape(-1, model["conv_kernel"].shape[-1])
    active = np.maximum(patches @ kernel + model["conv_bias"], 0.0)
    n, height, width, filters = active.shape
    cropped = active[:, : height // pool * pool, : width // pool * pool]
    blocks = cropped.reshape(n, height // pool, pool, width // pool, pool, filters)
    pooled = blocks.max(axis=(2, 4))
    features = pooled.reshape(n, -1)
    logits = features @ model["dense_kernel"] + model["dense_bias"]
    return logits, {"patches": patches, "active": active, "blocks": blocks, "pooled": pooled, "features": features}


def _step(model: Model, images: np.ndarray, labels: np.ndarray, rate: float) -> float:
    logits, cache = _forward(model, images)
    shifted = logits - logits.max(axis=1, keepdims=True)
    probabilities = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    count = labels.shape[0]
    loss = float(-np.mean(np.log(probabilities[np.arange(count), labels] + 1e-12)))
    grad_logits = probabilities
    grad_logits[np.arange(count), labels] -= 1.0
    grad_logits /= count
    grad_dense = cache["features"].T @ grad_logits
    grad_pooled = (grad_logits @ model["dense_kernel"].T).reshape(cache["pooled"].shape)
    blocks, pooled = cache["blocks"], cache["pooled"]
    mask = blocks == pooled[:, :, None, :, None, :]
    grad_blocks = mask * grad_pooled[:, :, None, :, None, :] / np.maximum(mask.sum(axis=(2, 4), keepdims=True), 1)
    grad_active = np.zeros_like(cache["active"])
    n, height, width, filters = cache["active"].shape
    pool = model["pool"]
    grad_active[:, : height // pool * pool, : width // pool * pool] = grad_blocks.reshape(
        n, height // pool * pool, width // pool * pool, filters)
    grad_active *= cache["active"] > 0
    patches = cache["patches"].reshape(-1, cache["patches"].shape[-1])
    grad_kernel = patches.T @ grad_active.reshape(-1, filters)
    model["conv_kernel"] -= rate * grad_kernel.reshape(model["conv_kernel"].shape).astype(np.float32)
    model["conv_bias"] -= rate * grad_active.sum(axis=(0, 1, 2)).astype(np.float32)
    model["dense_kernel"] -= rate * grad_dense.astype(np.float32)
    model["dense_bias"] -= rate * grad_logits.sum(axis=0).astype(np.float32)
    return loss


def _evaluate(model: Model, split: Split, scale: float) -> tuple[float, float]:
    probabilities = predict(model, np.asarray(split.images), 256, scale)
    labels = split.labels.astype(np.int64)
    loss = float(-np.mean(np.log(probabilities[np.arange(labels.shape[0]), labels] + 1e-12)))
    return loss, float(np.mean(probabilities.argmax(axis=1) == labels))


def fit(model: Model, train: Split, val: Split, settings: TrainParams, learning_rates: np.ndarray, seed: int,
        on_epoch_end: EpochCallback, background: float = 0.0, on_step_end: StepCallback | None = None) -> None:
    generator = np.random.default_rng(seed)
    step = 0
    for epoch in range(1, settings.epochs + 1):
        started = time.perf_counter()
        loss_sum, correct = 0.0, 0
        for batch, rows in enumerate(batch_indices(train.labels.shape[0], settings.batch_size, generator), start=1):
            rows = np.sort(rows)
            images = np.asarray(train.images[rows], dtype=np.float32) * np.float32(settings.input_scale)
            labels = train.labels[rows].astype(np.int64)
            correct += int(np.sum(logits(model, images).argmax(axis=1) == labels))
            loss = _step(model, images, labels, float(learning_rates[step]))
            check_finite(loss, epoch, step)
            loss_sum += loss * labels.shape[0]
            step += 1
            if on_step_end is not None:
                seen = sum(min(settings.batch_size, train.labels.shape[0] - i * settings.batch_size)
                           for i in range(batch))
                on_step_end(StepRecord(epoch, batch, rows, float(learning_rates[step - 1]), loss_sum / seen))
        trained = time.perf_counter()
        val_loss, val_accuracy = _evaluate(model, val, settings.input_scale)
        on_epoch_end(EpochRecord(epoch, loss_sum / train.labels.shape[0], correct / train.labels.shape[0], val_loss,
                                 val_accuracy, float(learning_rates[step - 1]), trained - started,
                                 time.perf_counter() - started))


def logits(model: Model, images: np.ndarray) -> np.ndarray:
    return _forward(model, np.asarray(images, dtype=np.float32))[0]


def for_inference(model: Model, switches: tuple[str, ...]) -> Model:
    return model  # numpy has no compiler: both levels run the same code


def predict(model: Model, images: np.ndarray, batch_size: int, input_scale: float = 1.0) -> np.ndarray:
    outputs = []
    for start in range(0, images.shape[0], batch_size):
        batch = np.asarray(images[start:start + batch_size], dtype=np.float32) * np.float32(input_scale)
        raw = logits(model, batch)
        exp = np.exp(raw - raw.max(axis=1, keepdims=True))
        outputs.append(exp / exp.sum(axis=1, keepdims=True))
    return np.concatenate(outputs).astype(np.float32)


def save_model(model: Model, path: Path) -> None:
    buffer = io.BytesIO()
    arrays: dict[str, Any] = {f"w{index}": weight for index, weight in enumerate(get_weights(model))}
    np.savez(buffer, **arrays)
    atomic.write_bytes(path, buffer.getvalue())


def load_model(path: Path, spec: ArchitectureSpec) -> Model:
    if not path.is_file():
        raise StageError(f"{path}: missing; run the training stage first (dvc repro train)")
    model = build_model(spec)
    try:
        with np.load(path, allow_pickle=False) as archive:
            weights = [archive[f"w{index}"] for index in range(4)]
    except (OSError, ValueError, KeyError) as error:
        raise StageError(f"{path}: not a numpy-backend model ({error})") from None
    if [weight.shape for weight in weights] != [weight.shape for weight in get_weights(model)]:
        raise StageError(f"{path}: weights do not fit the architecture in architecture.json")
    set_weights(model, weights)
    return model
