"""The JAX/Flax backend's training: one ``nnx.jit`` train step (``nnx.value_and_grad``, then
``nnx.Optimizer.update`` with an optax transformation), or its functional form (tuned), over the
training split copied to the device once, in the shared per-epoch order; augmentation by one
resampling on the device."""

from __future__ import annotations

import functools
import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from stages.backends.base import (
    EpochCallback,
    EpochRecord,
    Model,
    StepCallback,
    StepRecord,
    batch_indices,
    check_finite,
    check_finite_weights,
)
from stages.backends.jax.inference import predict
from stages.common.params import TrainParams
from stages.common.prepared import Split
from stages.common.runtime import derive_seed

VALIDATION_BATCH = 1000
ADAM_EPSILON = 1e-8  # optax's default, passed explicitly: the recipe's value
CHECK_EVERY = 50  # steps between loss checks (each waits for the device)


def _sgd(learning_rate, momentum, weight_decay):
    """Keras' SGD from optax's own transformations: v = m v - lr g and w -= lr wd w, then w += v."""
    return optax.chain(optax.scale_by_learning_rate(learning_rate), optax.trace(decay=momentum),
                       optax.add_decayed_weights(-learning_rate * weight_decay))


def _optimizer(settings: TrainParams, learning_rates: np.ndarray):
    """The recipe's optimizer, its rate the shared table indexed by optax's own step count."""
    table = jnp.asarray(np.asarray(learning_rates, dtype=np.float32))
    last = len(learning_rates) - 1

    def schedule(count):
        return table[jnp.minimum(count, last)]

    rate, decay = schedule, settings.weight_decay
    if settings.optimizer == "sgd":
        return optax.inject_hyperparams(_sgd)(learning_rate=rate, momentum=settings.momentum, weight_decay=decay)
    if settings.optimizer == "adamw" or decay:
        return optax.inject_hyperparams(optax.adamw)(learning_rate=rate, eps=ADAM_EPSILON, weight_decay=decay)
    return optax.inject_hyperparams(optax.adam)(learning_rate=rate, eps=ADAM_EPSILON)


def augment_batch(images, key, max_shift: float, max_rotation_deg: float, background: float):
    """Each NHWC image rotated about its centre by up to ``max_rotation_deg`` and shifted by up to
    ``max_shift`` of its size, as one bilinear resampling (``jax.scipy.ndimage.map_coordinates``,
    Keras' interpolation), uncovered pixels filled with ``background``; one draw per image."""
    count, height, width, _ = images.shape
    uniform = jax.random.uniform(key, (3, count), minval=-1.0, maxval=1.0)
    angles = uniform[0] * math.radians(max_rotation_deg)
    shifts_x, shifts_y = uniform[1] * max_shift * width, uniform[2] * max_shift * height
    rows, columns = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32), jnp.arange(width, dtype=jnp.float32),
                                 indexing="ij")
    centre_y, centre_x = (height - 1) / 2, (width - 1) / 2

    def one(image, angle, shift_x, shift_y):
        # Output pixel p (centred) shows input pixel R^-1 (p - shift).
        x, y = columns - centre_x - shift_x, rows - centre_y - shift_y
        cos, sin = jnp.cos(angle), jnp.sin(angle)
        source = [-sin * x + cos * y + centre_y, cos * x + sin * y + centre_x]
        resample = functools.partial(jax.scipy.ndimage.map_coordinates, coordinates=source, order=1,
                                     mode="constant", cval=background)
        return jax.vmap(resample, in_axes=2, out_axes=2)(image)

    return jax.vmap(one)(images, angles, shifts_x, shifts_y)


def augment(images: np.ndarray, settings: TrainParams, background: float, seed: int) -> np.ndarray:
    augmentation = settings.augment
    return np.asarray(augment_batch(jnp.asarray(images, jnp.float32), jax.random.key(seed), augmentation.max_shift,
                                    augmentation.max_rotation_deg, background))


def _loss(model, images, labels, smoothing: float, rngs):
    logits = model(images, rngs=rngs)
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), smoothing)
    return optax.softmax_cross_entropy(logits, targets).mean(), logits


def _train_step(model, optimizer, rngs, images_all, labels_all, rows, smoothing: float, augment: tuple | None):
    """One optimizer step on the batch ``rows``: its loss, correct count and the rate it applied."""
    images, labels = images_all[rows], labels_all[rows]
    if augment is not None:
        images = augment_batch(images, rngs.augment(), *augment)
    (loss, logits), grads = nnx.value_and_grad(_loss, has_aux=True)(model, images, labels, smoothing, rngs)
    optimizer.update(model, grads)
    correct = jnp.sum(jnp.argmax(logits, axis=-1) == labels)
    return loss, correct, optimizer.opt_state.hyperparams["learning_rate"]


_STATIC = ("smoothing", "augment")
_stock_step = nnx.jit(_train_step, static_argnames=_STATIC)


def _functional_step(model, optimizer, rngs):
    """The train step as the performance guide's functional loop: split once, plain ``jax.jit``."""
    graphdef, state = nnx.split((model, optimizer, rngs))

    @functools.partial(jax.jit, static_argnums=(4, 5))  # smoothing, augment
    def functional_train_step(state, images_all, labels_all, rows, smoothing, augment):
        model, optimizer, rngs = nnx.merge(graphdef, state)
        outputs = _train_step(model, optimizer, rngs, images_all, labels_all, rows, smoothing, augment)
        return outputs, nnx.state((model, optimizer, rngs))

    def run(images_all, labels_all, rows, smoothing, augment):
        nonlocal state
        outputs, state = functional_train_step(state, images_all, labels_all, rows, smoothing, augment)
        return outputs

    def finish() -> None:
        nnx.update((model, optimizer, rngs), state)

    return run, finish


def _evaluate_split(model, split: Split, smoothing: float, scale: float) -> tuple[float, float]:
    probabilities = predict(model, split.images, VALIDATION_BATCH, scale)
    count = split.labels.shape[0]
    targets = np.eye(probabilities.shape[1], dtype=np.float64)[split.labels]
    targets = targets * (1 - smoothing) + smoothing / probabilities.shape[1]
    loss = float(-np.sum(targets * np.log(np.maximum(probabilities.astype(np.float64), 1e-30))) / count)
    return loss, float(np.mean(probabilities.argmax(axis=1) == split.labels))


def fit(model: Model, train: Split, val: Split, settings: TrainParams, learning_rates: np.ndarray, seed: int,
        on_epoch_end: EpochCallback, background: float = 0.0, on_step_end: StepCallback | None = None) -> None:
    """Train ``model`` in place; call ``on_epoch_end(EpochRecord)`` after each epoch's validation
    (and ``on_step_end(StepRecord)`` after each optimizer step, if given)."""
    train_view = nnx.view(model, deterministic=False, use_running_average=False, raise_if_not_found=False)
    eval_view = nnx.view(model, deterministic=True, use_running_average=True, raise_if_not_found=False)
    optimizer = nnx.Optimizer(train_view, _optimizer(settings, learning_rates), wrt=nnx.Param)
    rngs = nnx.Rngs(dropout=jax.random.key(seed), augment=jax.random.key(derive_seed(seed, "augment")))
    augment = settings.augment
    static = {"smoothing": float(settings.label_smoothing),
              "augment": (float(augment.max_shift), float(augment.max_rotation_deg), float(background))
              if augment.enabled else None}
    if "functional_training" in settings.switches:
        step, finish = _functional_step(train_view, optimizer, rngs)
    else:
        step, finish = functools.partial(_stock_step, train_view, optimizer, rngs), (lambda: None)
    images_all = jax.device_put(np.asarray(train.images, dtype=np.float32) * np.float32(settings.input_scale))
    labels_all = jax.device_put(train.labels.astype(np.int32))
    generator = np.random.default_rng(seed)
    count = train.labels.shape[0]
    for epoch in range(1, settings.epochs + 1):
        started = time.perf_counter()
        batches = [np.sort(rows) for rows in batch_indices(count, settings.batch_size, generator)]
        losses, corrects, sizes = [], [], []
        rate: Any = None
        for number, rows in enumerate(batches, start=1):
            loss, correct, rate = step(images_all, labels_all, rows.astype(np.int32), **static)
            losses.append(loss)
            corrects.append(correct)
            sizes.append(rows.shape[0])
            if on_step_end is not None:
                _check_losses(losses, epoch, number)
                seen = sum(sizes)
                on_step_end(StepRecord(epoch=epoch, batch=number, rows=rows, learning_rate=float(rate),
                                       loss=float(np.dot(np.asarray(jnp.stack(losses), np.float64), sizes) / seen)))
            elif number % CHECK_EVERY == 0:
                _check_losses(losses, epoch, number)
        finish()
        values = _check_losses(losses, epoch, len(batches))
        total_loss = float(np.dot(values.astype(np.float64), sizes) / count)
        check_finite(total_loss, epoch, len(batches))
        check_finite_weights(all(bool(jnp.isfinite(leaf).all()) for leaf in jax.tree.leaves(nnx.state(model))),
                             epoch)
        validation_started = time.perf_counter()
        val_loss, val_accuracy = _evaluate_split(eval_view, val, settings.label_smoothing, settings.input_scale)
        on_epoch_end(EpochRecord(
            epoch=epoch, train_loss=total_loss, train_accuracy=int(jnp.sum(jnp.stack(corrects))) / count,
            val_loss=val_loss, val_accuracy=val_accuracy, learning_rate=float(rate),
            train_seconds=validation_started - started, seconds=time.perf_counter() - started))


def _check_losses(losses: list, epoch: int, upto: int) -> np.ndarray:
    """The epoch's step losses so far (waits for the device); raises at the first non-finite one."""
    values = np.asarray(jnp.stack(losses))
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        check_finite(float(values[bad[0]]), epoch, int(bad[0]) + 1)
    return values
