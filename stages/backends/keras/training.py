"""The Keras backend's training: ``Model.fit`` on a compiled wrapper (augmentation, then the
model) with a Keras optimizer whose rate reads the shared per-step table, over a ``tf.data``
pipeline on TensorFlow or a ``keras.utils.PyDataset`` on the other engines, in the shared
per-epoch order."""

from __future__ import annotations

import time

import numpy as np

from stages.backends.base import (
    EpochCallback,
    EpochRecord,
    Model,
    StepCallback,
    StepRecord,
    check_finite,
    check_finite_weights,
    epoch_order,
    interactive,
)
from stages.backends.keras.engine import ENGINE, keras
from stages.common.params import TrainParams
from stages.common.prepared import Split

if ENGINE == "tensorflow":
    import tensorflow as tf

VALIDATION_BATCH = 1000
# Adam's epsilon as PyTorch sets it (Keras' own default is 1e-7): a recipe value, passed through
# Keras' public `epsilon` argument.
ADAM_EPSILON = 1e-8


def _optimizer(settings: TrainParams, schedule):
    """Keras' own Adam, AdamW or SGD; the recipe's decay through their public ``weight_decay``
    (Keras applies it decoupled for every optimizer)."""
    decay = settings.weight_decay or None
    if settings.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=schedule, momentum=settings.momentum, weight_decay=decay)
    if settings.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate=schedule, epsilon=ADAM_EPSILON, weight_decay=decay or 0.0)
    return keras.optimizers.Adam(learning_rate=schedule, epsilon=ADAM_EPSILON, weight_decay=decay)


class TableSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A Keras schedule that reads the shared per-step table (see stages/common/schedules.py)."""

    def __init__(self, table: np.ndarray) -> None:
        self.table = keras.ops.convert_to_tensor(np.asarray(table, dtype=np.float32))
        self.last = len(table) - 1

    def __call__(self, step):
        index = keras.ops.minimum(keras.ops.cast(step, "int32"), self.last)
        return keras.ops.take(self.table, index)

    def get_config(self) -> dict:
        return {"table": []}


def _augmentation(settings: TrainParams, background: float, seed: int):
    augment = settings.augment
    return keras.Sequential([
        keras.layers.RandomRotation(augment.max_rotation_deg / 360.0, fill_mode="constant", fill_value=background,
                                    seed=seed),
        keras.layers.RandomTranslation(augment.max_shift, augment.max_shift, fill_mode="constant",
                                       fill_value=background, seed=seed + 1),
    ], name="augmentation")


def augment(images: np.ndarray, settings: TrainParams, background: float, seed: int) -> np.ndarray:
    """The augmentation layers fit() puts in front of the model, applied in training mode (their
    own seed generators: Keras' global one is untouched)."""
    return keras.ops.convert_to_numpy(_augmentation(settings, background, seed)(images, training=True))


def _training_dataset(images, targets, orders: list[np.ndarray], batch_size: int, scale: float):
    """Every epoch's batches, each epoch in its own seeded order, gathered in-graph.

    One dataset for the whole run (fit() with steps_per_epoch keeps iterating it across
    epochs), written as TensorFlow's tf.data guide writes an input pipeline (``map``, then
    ``prefetch(tf.data.AUTOTUNE)``, default options); only the batch order is the recipe's.
    """

    def gather(rows):
        batch = tf.gather(images, rows)
        return (batch * scale if scale != 1.0 else batch), tf.gather(targets, rows)

    epochs = [tf.data.Dataset.from_tensor_slices(order).batch(batch_size) for order in orders]
    dataset = epochs[0]
    for epoch in epochs[1:]:
        dataset = dataset.concatenate(epoch)
    return dataset.map(gather).prefetch(tf.data.AUTOTUNE)


class EpochBatches(keras.utils.PyDataset):
    """Every epoch's batches in the shared order, for the engines other than TensorFlow: a
    ``keras.utils.PyDataset`` (Keras' engine-neutral input), indexed across all epochs, since
    ``fit`` with ``steps_per_epoch`` keeps iterating one input across epochs (as with tf.data)."""

    def __init__(self, images: np.ndarray, targets: np.ndarray, orders: list[np.ndarray], batch_size: int,
                 scale: float) -> None:
        super().__init__()
        self.images, self.targets, self.scale = images, targets, np.float32(scale)
        self.batches = [order[start:start + batch_size] for order in orders
                        for start in range(0, len(order), batch_size)]

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int):
        rows = self.batches[index]
        batch = self.images[rows]
        return (batch * self.scale if self.scale != 1.0 else batch), self.targets[rows]


def compile_trainer(model: Model, settings: TrainParams, learning_rates: np.ndarray, seed: int,
                    background: float = 0.0):
    """The compiled Keras model that ``fit`` trains: augmentation (if enabled) then ``model``.

    A wrapper, not ``model`` itself, is compiled: the saved model then carries no optimizer
    state (a PyTorch state_dict carries none either, so file sizes compare like for like).
    ``jit_compile`` stays at Keras' default (``auto``, off on a CPU-only machine) at both levels.
    """
    augmentation = [_augmentation(settings, background, seed)] if settings.augment.enabled else []
    trainer = keras.Sequential([keras.Input(shape=model.input_shape[1:]), *augmentation, model])
    trainer.compile(
        optimizer=_optimizer(settings, TableSchedule(learning_rates)),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=settings.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    return trainer


def fit(model: Model, train: Split, val: Split, settings: TrainParams, learning_rates: np.ndarray, seed: int,
        on_epoch_end: EpochCallback, background: float = 0.0, on_step_end: StepCallback | None = None) -> None:
    """Train ``model`` in place; call ``on_epoch_end(EpochRecord)`` after each epoch's validation
    (and ``on_step_end(StepRecord)`` after each optimizer step, if given)."""
    num_classes = model.output_shape[-1]
    trainer = compile_trainer(model, settings, learning_rates, seed, background)
    val_images = np.asarray(val.images) * np.float32(settings.input_scale)
    val_targets = np.eye(num_classes, dtype=np.float32)[val.labels]
    steps_per_epoch = len(learning_rates) // settings.epochs
    generator = np.random.default_rng(seed)
    # The same per-epoch orders as the PyTorch trainer draws from the same seed.
    orders = [epoch_order(train.labels.shape[0], generator) for _ in range(settings.epochs)]

    class RecordEpochs(keras.callbacks.Callback):
        """Reports each epoch (and step) to the caller's callbacks, as ``fit``'s docstring says."""

        def on_epoch_begin(self, epoch, logs=None):
            self.started = self.validation_started = time.perf_counter()
            self.epoch = epoch + 1

        def on_train_batch_begin(self, batch, logs=None):
            # The rate the optimizer is about to apply (its schedule at its own step counter);
            # read per step only when someone listens, otherwise once per epoch, for the record.
            # Through `self.model`: on JAX, Keras keeps the state outside the model during an
            # epoch, and a callback's `model` property brings it back first.
            if on_step_end is not None or batch == steps_per_epoch - 1:
                self.learning_rate = float(self.model.optimizer.learning_rate)

        def on_train_batch_end(self, batch, logs=None):
            check_finite(float(logs["loss"]), self.epoch, batch + 1)
            if on_step_end is not None:
                rows = orders[self.epoch - 1][batch * settings.batch_size:(batch + 1) * settings.batch_size]
                on_step_end(StepRecord(epoch=self.epoch, batch=batch + 1, rows=rows,
                                       learning_rate=self.learning_rate, loss=float(logs["loss"])))

        def on_test_begin(self, logs=None):
            self.validation_started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            now = time.perf_counter()
            check_finite_weights(all(np.isfinite(weight).all() for weight in model.get_weights()), epoch + 1)
            on_epoch_end(EpochRecord(
                epoch=epoch + 1, train_loss=float(logs["loss"]), train_accuracy=float(logs["accuracy"]),
                val_loss=float(logs["val_loss"]), val_accuracy=float(logs["val_accuracy"]),
                learning_rate=self.learning_rate,
                train_seconds=self.validation_started - self.started, seconds=now - self.started))

    targets = np.eye(num_classes, dtype=np.float32)[train.labels]
    if ENGINE == "tensorflow":
        dataset = _training_dataset(tf.constant(np.asarray(train.images)), tf.constant(targets), orders,
                                    settings.batch_size, float(settings.input_scale))
    else:
        dataset = EpochBatches(np.asarray(train.images), targets, orders, settings.batch_size,
                               float(settings.input_scale))
    trainer.fit(dataset, epochs=settings.epochs, steps_per_epoch=steps_per_epoch,
                validation_data=(val_images, val_targets), validation_batch_size=VALIDATION_BATCH,
                callbacks=[RecordEpochs()], verbose=1 if interactive() else 0, shuffle=False)
