"""The TensorFlow/Keras backend (implements ``stages.backends.base.Backend``).

Builds the shared architecture as a ``keras.Sequential``, trains it with ``Model.fit`` over an
in-graph ``tf.data`` pipeline in the shared per-epoch batch order, and saves ``.keras`` archives
normalised so identical weights give identical bytes. Loads only with Keras' ``safe_mode``.
Only TensorFlow/Keras is imported here, never PyTorch.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before the import: it reads this once
# TensorFlow turns its oneDNN CPU kernels on by default only on some Intel CPUs (AVX-512 VNNI and
# newer); elsewhere it runs Eigen kernels. TensorFlow's CPU guide recommends oneDNN, and it is on
# here on every machine, so one machine's reruns never depend on the caller's environment.
os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1"
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.python.framework import config as tf_config  # noqa: E402 - disable_op_determinism is not public

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
from stages.common import atomic
from stages.common.architecture import BATCH_NORM_DECAY, BATCH_NORM_EPSILON, ArchitectureSpec
from stages.common.errors import StageError
from stages.common.params import TrainParams
from stages.common.prepared import Split
from stages.common.runtime import configure_threads

MODEL_FILE = "model.keras"
VALIDATION_BATCH = 1000
# Adam's epsilon as PyTorch sets it (Keras' own default is 1e-7).
ADAM_EPSILON = 1e-8


def configure(settings: TrainParams, seed: int) -> str:
    """Threads, seeds, determinism and device; return the device used ('cpu' or 'cuda')."""
    configure_threads(settings.threads)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(settings.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # already initialised in this process (tests): the first setting stays
    gpus = tf.config.list_physical_devices("GPU")
    if settings.device == "cuda" and not gpus:
        raise StageError("train.device is 'cuda' but TensorFlow sees no GPU (is a CUDA build of TensorFlow "
                         "installed? pip install 'tensorflow[and-cuda]')")
    if settings.device == "cpu" and gpus:
        tf.config.set_visible_devices([], "GPU")
    keras.utils.set_random_seed(seed)
    if settings.execution == "compiled":
        # XLA has no deterministic max-pool gradient, so TensorFlow refuses to train this model
        # with XLA under op determinism (and Keras then quietly drops XLA): compiled training
        # runs without it (README, "Execution modes"). Set both ways: the state is per process.
        tf_config.disable_op_determinism()
    else:
        tf.config.experimental.enable_op_determinism()
    return "cuda" if gpus and settings.device != "cpu" else "cpu"


class FusedBatchNormalization(keras.layers.BatchNormalization):
    """Keras' ``BatchNormalization``, trained with TensorFlow's fused kernel on NHWC maps.

    Keras 3 normalises with separate ops (moments, subtract, scale; each differentiated on its
    own), where tf.keras 2 ran TensorFlow's fused kernel (``FusedBatchNormV3``, oneDNN on CPU)
    for 4-D channels-last input: 2.8x faster forward and backward here (BENCHMARKS.md).
    Same weights and config; in training the moving variance follows the batch variance the
    kernel returns, which has Bessel's correction (as in tf.keras 2 and PyTorch). Other cases
    (inference, masks, renorm, other layouts) run Keras' own code. ``save_model`` writes it as a
    plain ``BatchNormalization``, so archives load without this class.
    """

    def call(self, inputs, training=None, mask=None):
        if (not (training and self.trainable) or mask is not None or len(inputs.shape) != 4
                or self.axis not in (-1, 3) or self.renorm or self.synchronized or not (self.scale and self.center)
                or inputs.dtype != tf.float32):
            return super().call(inputs, training=training, mask=mask)
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, self.gamma, self.beta, epsilon=self.epsilon, data_format="NHWC", is_training=True)
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return outputs


def build_model(spec: ArchitectureSpec) -> Model:
    """The spec's layers as a ``keras.Sequential`` taking NHWC float32 images, giving logits."""
    layers = keras.layers
    model_layers: list = [keras.Input(shape=spec.input_shape)]
    for layer in spec.layers:
        config = layer.config
        if layer.kind == "conv":
            model_layers.append(layers.Conv2D(config["filters"], config["kernel_size"], padding=config["padding"],
                                              use_bias=config["bias"]))
        elif layer.kind == "batch_norm":
            model_layers.append(FusedBatchNormalization(momentum=BATCH_NORM_DECAY, epsilon=BATCH_NORM_EPSILON))
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


def layer_kinds(model: Model) -> list[str]:
    """The built model's layers in the spec's vocabulary (for parity tests)."""
    names = {keras.layers.Conv2D: "conv", keras.layers.BatchNormalization: "batch_norm",
             FusedBatchNormalization: "batch_norm", keras.layers.Activation: "activation",
             keras.layers.MaxPooling2D: "max_pool", keras.layers.Dropout: "dropout", keras.layers.Flatten: "flatten",
             keras.layers.Dense: "dense"}
    return [names[type(layer)] for layer in model.layers]


def count_parameters(model: Model) -> int:
    return int(sum(np.prod(weight.shape) for weight in model.trainable_weights))


def get_weights(model: Model) -> list[np.ndarray]:
    """All weights in the canonical layout (Keras' own: kernels (kh, kw, in, out) and (in, out))."""
    return [np.asarray(weight) for weight in model.get_weights()]


def set_weights(model: Model, weights: Sequence[np.ndarray]) -> None:
    model.set_weights(weights)


class FusedAdam(keras.optimizers.Adam):
    """Keras' ``Adam``, updating each dense variable with TensorFlow's fused kernel (``ResourceApplyAdam``).

    Keras 3 updates each variable with a dozen separate ops; tf.keras 2 ran this one kernel,
    which computes the same formula (Keras' epsilon outside the square root, its bias
    correction folded into the rate). Sparse gradients and AMSGrad run Keras' own code.
    """

    def update_step(self, gradient, variable, learning_rate):
        if self.amsgrad or isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        index = self._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=self._momentums[index].handle, v=self._velocities[index].handle,
            beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step), lr=tf.cast(learning_rate, dtype),
            beta1=beta_1, beta2=beta_2, epsilon=tf.cast(self.epsilon, dtype), grad=tf.cast(gradient, dtype))


class FusedAdamW(FusedAdam, keras.optimizers.AdamW):
    """Keras' ``AdamW`` (its decoupled weight decay unchanged) with ``FusedAdam``'s update."""


class FusedSGD(keras.optimizers.SGD):
    """Keras' ``SGD``, updating each dense variable with TensorFlow's fused kernel, as tf.keras 2
    did: ``ResourceApplyKerasMomentum`` (Keras' velocity in weight units, Nesterov or not), or
    ``ResourceApplyGradientDescent`` without momentum. Sparse gradients run Keras' own code."""

    def update_step(self, gradient, variable, learning_rate):
        if isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        rate, gradient = tf.cast(learning_rate, dtype), tf.cast(gradient, dtype)
        if self.momentum == 0:
            tf.raw_ops.ResourceApplyGradientDescent(var=variable.handle, alpha=rate, delta=gradient)
            return
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=variable.handle, accum=self.momentums[self._get_variable_index(variable)].handle, lr=rate,
            grad=gradient, momentum=tf.cast(self.momentum, dtype), use_nesterov=self.nesterov)


def _optimizer(settings: TrainParams, schedule):
    decay = settings.weight_decay or None
    if settings.optimizer == "sgd":
        return FusedSGD(learning_rate=schedule, momentum=settings.momentum, weight_decay=decay)
    optimizer_class = FusedAdamW if settings.optimizer == "adamw" else FusedAdam
    return optimizer_class(learning_rate=schedule, epsilon=ADAM_EPSILON, weight_decay=decay or 0.0)


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


def _training_dataset(images, targets, orders: list[np.ndarray], batch_size: int, scale: float):
    """Every epoch's batches, each epoch in its own seeded order, gathered in-graph.

    One dataset for the whole run (fit() with steps_per_epoch keeps iterating it across
    epochs), so batches never pass through Python (a ``keras.utils.PyDataset``'s generator
    thread competes with TensorFlow's compute threads; BENCHMARKS.md, "Input pipelines").
    Without tf.data's autotuning: nothing here is tuned (a sequential map, a fixed prefetch),
    and its model thread, which the iterator joins when fit() drops it, kept the stage waiting
    up to 40 s after the last epoch (BENCHMARKS.md).
    """

    def gather(rows):
        batch = tf.gather(images, rows)
        return (batch * scale if scale != 1.0 else batch), tf.gather(targets, rows)

    epochs = [tf.data.Dataset.from_tensor_slices(order).batch(batch_size) for order in orders]
    dataset = epochs[0]
    for epoch in epochs[1:]:
        dataset = dataset.concatenate(epoch)
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.map(gather).prefetch(2).with_options(options)


def compile_trainer(model: Model, settings: TrainParams, learning_rates: np.ndarray, seed: int,
                    background: float = 0.0):
    """The compiled Keras model that ``fit`` trains: augmentation (if enabled) then ``model``.

    A wrapper, not ``model`` itself, is compiled: the saved model then carries no optimizer
    state (a PyTorch state_dict carries none either, so file sizes compare like for like).
    ``settings.execution`` picks Keras' default traced graph or XLA (``jit_compile``); Keras'
    own default, ``"auto"``, turns XLA off on CPU-only machines, so the choice is made here.
    """
    augmentation = [_augmentation(settings, background, seed)] if settings.augment.enabled else []
    trainer = keras.Sequential([keras.Input(shape=model.input_shape[1:]), *augmentation, model])
    trainer.compile(
        optimizer=_optimizer(settings, TableSchedule(learning_rates)),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=settings.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        jit_compile=settings.execution == "compiled",
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

    class EpochCallback(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = self.validation_started = time.perf_counter()
            self.epoch = epoch + 1

        def on_train_batch_begin(self, batch, logs=None):
            # The rate the optimizer is about to apply (its schedule at its own step counter);
            # read per step only when someone listens, otherwise once per epoch, for the record.
            if on_step_end is not None or batch == steps_per_epoch - 1:
                self.learning_rate = float(trainer.optimizer.learning_rate)

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

    images = tf.constant(np.asarray(train.images))
    targets = tf.constant(np.eye(num_classes, dtype=np.float32)[train.labels])
    dataset = _training_dataset(images, targets, orders, settings.batch_size, float(settings.input_scale))
    trainer.fit(dataset, epochs=settings.epochs, steps_per_epoch=steps_per_epoch,
                validation_data=(val_images, val_targets), validation_batch_size=VALIDATION_BATCH,
                callbacks=[EpochCallback()], verbose=1 if interactive() else 0, shuffle=False)


def logits(model: Model, images: np.ndarray) -> np.ndarray:
    """Raw outputs for NHWC images, in inference mode."""
    return np.asarray(model(np.asarray(images, dtype=np.float32), training=False))


def for_inference(model: Model, execution: str) -> Model:
    """``model`` with its inference function traced as a graph, with XLA when ``compiled``."""
    model._comparison_call = tf.function(lambda batch: model(batch, training=False), reduce_retracing=True,
                                         jit_compile=execution == "compiled")
    return model


def predict(model: Model, images: np.ndarray, batch_size: int, input_scale: float = 1.0) -> np.ndarray:
    """Class probabilities (float32, N x classes) for NHWC images, batch by batch."""
    call = _inference_call(model)
    outputs = []
    for start in range(0, images.shape[0], batch_size):
        batch = np.asarray(images[start:start + batch_size], dtype=np.float32) * np.float32(input_scale)
        outputs.append(np.asarray(keras.ops.softmax(call(batch))))
    return np.concatenate(outputs).astype(np.float32)


def _inference_call(model):
    """The traced inference function (per-call eager overhead would dominate batch-1 latency)."""
    if not hasattr(model, "_comparison_call"):
        for_inference(model, "standard")
    return model._comparison_call


def save_model(model: Model, path: Path) -> None:
    """Save as ``.keras``, normalised so identical weights give identical bytes (see below)."""
    with tempfile.TemporaryDirectory() as scratch:
        saved = Path(scratch) / MODEL_FILE
        _with_keras_batch_norm(model).save(saved)
        atomic.write_bytes(path, _normalised_keras_archive(saved.read_bytes()))


def _with_keras_batch_norm(model: Model) -> Model:
    """``model`` with Keras' own ``BatchNormalization`` in place of the fused one, same weights."""
    if not any(isinstance(layer, FusedBatchNormalization) for layer in model.layers):
        return model

    def clone(layer):
        if not isinstance(layer, FusedBatchNormalization):
            return type(layer).from_config(layer.get_config())
        config = layer.get_config()
        config["name"] = config["name"].removeprefix("fused_")  # the name Keras gives its own layer
        return keras.layers.BatchNormalization.from_config(config)

    plain = keras.models.clone_model(model, clone_function=clone)
    plain.set_weights(model.get_weights())
    return plain


def _normalised_keras_archive(data: bytes) -> bytes:
    """Rewrite a .keras zip with fixed timestamps and no save date.

    Keras stamps the save time into metadata.json and the zip entries, and writes Python object
    ids (``shared_object_id``) into config.json, so two saves of the same weights in two
    processes differ byte for byte; DVC would then see a new output on every identical rerun.
    """
    source = zipfile.ZipFile(io.BytesIO(data))
    output = io.BytesIO()
    with zipfile.ZipFile(output, "w", compression=zipfile.ZIP_DEFLATED) as target:
        for name in sorted(source.namelist()):
            content = source.read(name)
            if name == "metadata.json":
                metadata = json.loads(content)
                metadata["date_saved"] = "1980-01-01@00:00:00"
                content = json.dumps(metadata, sort_keys=True).encode()
            elif name == "config.json":
                content = json.dumps(_renumber_shared_objects(json.loads(content), {})).encode()
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            target.writestr(info, content)
    return output.getvalue()


def _renumber_shared_objects(node, numbers: dict):
    """Replace process-specific object ids by 1, 2, ... in order of appearance (same id, same number)."""
    if isinstance(node, dict):
        return {key: (numbers.setdefault(value, len(numbers) + 1) if key == "shared_object_id"
                      else _renumber_shared_objects(value, numbers)) for key, value in node.items()}
    if isinstance(node, list):
        return [_renumber_shared_objects(item, numbers) for item in node]
    return node


def load_model(path: Path, spec: ArchitectureSpec) -> Model:
    """Load a ``.keras`` file with Keras' safe mode (no arbitrary code from the file)."""
    if not path.is_file():
        raise StageError(f"{path}: missing; run the training stage first (dvc repro train)")
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # noqa: BLE001 - Keras raises many types for a corrupt file
        raise StageError(f"{path}: not a loadable Keras model ({type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else ''})") from None
    if count_parameters(model) != spec.parameters:
        raise StageError(f"{path}: has {count_parameters(model)} parameters; its architecture.json says "
                         f"{spec.parameters}")
    return model

