"""The Keras 3 backend (implements ``stages.backends.base.Backend``), on the TensorFlow engine here.

Builds the shared architecture as a ``keras.Sequential`` of Keras' own layers, trains it with
``Model.fit`` and a Keras optimizer in the shared per-epoch batch order, and saves ``.keras``
archives normalised so identical weights give identical bytes. Loads only with Keras'
``safe_mode``.

Keras runs on one engine per process (``KERAS_BACKEND``, read when Keras is imported). This module
is the framework ``keras``: the TensorFlow engine, fed by a ``tf.data`` pipeline as TensorFlow's
guide writes one. ``keras_jax.py`` and ``keras_torch.py`` are this same code on the JAX and
PyTorch engines (each names its engine, then imports this module), fed by a
``keras.utils.PyDataset``, the engine-neutral input of Keras' training guide. Only Keras and its
engine are imported here, except that Keras' own ``keras.utils.set_random_seed`` also imports
TensorFlow, where it is installed, to seed it. The tuning level's process switch (oneDNN) is set
before the import by ``stages.backends.load``.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before the import: it reads this once
# The engine: TensorFlow, unless keras_jax.py or keras_torch.py named another before importing this
# module (stages.backends.load clears the caller's KERAS_BACKEND first: a shell cannot swap it).
ENGINE = os.environ.setdefault("KERAS_BACKEND", "tensorflow")
from stages.common.errors import native_noise_filtered  # noqa: E402

# TensorFlow prints native start-up lines while it is imported, before its log level applies
# (errors.native_noise_filtered). Keras imports it on every engine where it is installed: on
# TensorFlow at once, on JAX and PyTorch in keras.utils.set_random_seed; so it is imported here,
# with those lines filtered, once for the process.
with native_noise_filtered():
    import keras
    if importlib.util.find_spec("tensorflow") is not None:
        import tensorflow  # noqa: F401 - imported for its start-up lines, as said above

from stages.backends.base import (  # noqa: E402
    EpochCallback,
    EpochRecord,
    Model,
    NoExportRoute,
    StepCallback,
    StepRecord,
    check_finite,
    check_finite_weights,
    epoch_order,
    interactive,
)
from stages.common import atomic  # noqa: E402
from stages.common.architecture import BATCH_NORM_DECAY, BATCH_NORM_EPSILON, ArchitectureSpec  # noqa: E402
from stages.common.errors import StageError  # noqa: E402
from stages.common.params import TrainParams  # noqa: E402
from stages.common.prepared import Split  # noqa: E402
from stages.common.runtime import configure_threads, op_determinism  # noqa: E402

if ENGINE == "tensorflow":
    import tensorflow as tf

MODEL_FILE = "model.keras"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
VALIDATION_BATCH = 1000
# Adam's epsilon as PyTorch sets it (Keras' own default is 1e-7): a recipe value, passed through
# Keras' public `epsilon` argument.
ADAM_EPSILON = 1e-8

DESCRIPTION = (
    "Keras 3 on TensorFlow: a `keras.Sequential` of Keras' own layers, trained by `Model.fit` (Keras' "
    "default traced `tf.function` step; `jit_compile` left at Keras' `auto`, which Keras turns off on a "
    "CPU-only machine) with a `keras.optimizers` optimizer, over a `tf.data` pipeline with default options. "
    "Stock inference is `Model.predict` for many images and a plain `model(x)` call for one batch, as "
    "Keras' API docs advise; the tuned level adds TensorFlow's oneDNN kernels and a traced inference call.")
SWITCHES = {
    "onednn": "TensorFlow's oneDNN CPU kernels (`TF_ENABLE_ONEDNN_OPTS=1`), which TensorFlow turns on by itself "
              "only on x86 CPUs with AVX-512 VNNI and newer (https://www.tensorflow.org/install/pip; "
              "https://github.com/tensorflow/tensorflow/releases/tag/v2.9.0)",
    "traced_inference": "inference through one `tf.function`, as TensorFlow's guide recommends for repeated "
                        "small calls (https://www.tensorflow.org/guide/function)",
}
# Not a switch: XLA for the train step (`jit_compile=True`, Keras' docs' way to compile it for speed) made
# the steady step 3.3x slower on this CPU (80.3 against 24.4 ms, docs/fairness.md), so tuned leaves it out.
TUNED: tuple[str, ...] = ("onednn", "traced_inference")
SEMANTICS = {
    "moving_variance": "biased",  # keras.layers.BatchNormalization updates with the batch's plain variance
    "adam_epsilon": "uncorrected",  # Keras adds epsilon to sqrt(v), its bias correction folded into the rate
    "sgd_momentum": "weight_units",  # keras.optimizers.SGD: v = m v - lr g; w += v
    "sgd_weight_decay": "decoupled",  # Keras' optimizers decay the weights themselves
    "gelu": "exact",  # keras.activations.gelu(approximate=False), Keras' default
}


def environment() -> dict[str, str]:
    """TensorFlow's and Keras' versions and build, the kernels and devices in use."""
    build = tf.sysconfig.get_build_info()
    return {
        "tensorflow": tf.__version__, "keras": keras.__version__, "keras_engine": keras.backend.backend(),
        "numpy": np.__version__,
        "tensorflow_build": ", ".join(f"{key}={build[key]}" for key in sorted(build)
                                      if key in ("is_cuda_build", "is_rocm_build", "cuda_version", "cudnn_version")),
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "TensorFlow's default for this CPU"),
        "devices": ", ".join(device.device_type for device in tf.config.list_physical_devices()),
    }


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
                         "installed? pip install 'tensorflow[and-cuda]'); set it to auto or cpu")
    if settings.device == "cpu" and gpus:
        tf.config.set_visible_devices([], "GPU")
    keras.utils.set_random_seed(seed)
    device = "cuda" if gpus and settings.device != "cpu" else "cpu"
    if op_determinism(device):  # the GPU only: the CPU reruns bitwise without it (runtime.op_determinism)
        tf.config.experimental.enable_op_determinism()
    return device


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


def layer_kinds(model: Model) -> list[str]:
    """The built model's layers in the spec's vocabulary (for parity tests)."""
    names = {keras.layers.Conv2D: "conv", keras.layers.BatchNormalization: "batch_norm",
             keras.layers.Activation: "activation",
             keras.layers.MaxPooling2D: "max_pool", keras.layers.Dropout: "dropout", keras.layers.Flatten: "flatten",
             keras.layers.Dense: "dense"}
    return [names[type(layer)] for layer in model.layers]


def count_parameters(model: Model) -> int:
    model = model.model if isinstance(model, TracedInference) else model
    return int(sum(np.prod(weight.shape) for weight in model.trainable_weights))


def get_weights(model: Model) -> list[np.ndarray]:
    """All weights in the canonical layout (Keras' own: kernels (kh, kw, in, out) and (in, out))."""
    return [np.asarray(weight) for weight in model.get_weights()]


def set_weights(model: Model, weights: Sequence[np.ndarray]) -> None:
    model.set_weights(weights)


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


def batch_norm_constants(model: Model) -> list[tuple[float, float]]:
    """Keras' ``momentum`` is the share of the running statistic kept: the decay itself."""
    return [(float(layer.momentum), float(layer.epsilon)) for layer in model.layers
            if isinstance(layer, keras.layers.BatchNormalization)]


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


def logits(model: Model, images: np.ndarray) -> np.ndarray:
    """Raw outputs for NHWC images, in inference mode."""
    return keras.ops.convert_to_numpy(model(np.asarray(images, dtype=np.float32), training=False))


@dataclass(frozen=True)
class TracedInference:
    """A Keras model with its inference call traced once as a ``tf.function`` (``traced_inference``)."""

    model: Any
    call: Any  # batch -> logits


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


# Keras' ONNX route on JAX is jax2onnx; 0.12.5 is the newest that installs beside Flax's Orbax, and
# the graph it writes for this model is one ONNX Runtime refuses (tests/keras_jax checks it still is).
NO_ONNX_ROUTE_ON_JAX = ("Keras' Model.export(format=\"onnx\") on JAX converts with jax2onnx, and 0.12.5, the newest "
                        "that installs beside Flax's Orbax, writes a MaxPool node that ONNX Runtime refuses "
                        "(\"Unsupported pooling size\")")


def export(model: Model, spec: ArchitectureSpec, path: Path) -> None:
    """The ONNX graph of ``model``'s ``call()``, by Keras' own ``Model.export(format="onnx")`` (its
    engine's route: tf2onnx on TensorFlow, ``torch.onnx.export`` on PyTorch); the batch stays free.
    On JAX, ``NoExportRoute`` (``NO_ONNX_ROUTE_ON_JAX``)."""
    if keras.backend.backend() == "jax":
        raise NoExportRoute(NO_ONNX_ROUTE_ON_JAX)
    keras_export(model, spec, path)


def keras_export(model: Model, spec: ArchitectureSpec, path: Path) -> None:
    """Keras' ``Model.export(format="onnx")``, on whichever engine, with a free batch dimension."""
    signature = keras.InputSpec(shape=(None, *spec.input_shape), dtype="float32", name="images")
    model.export(str(path), format="onnx", verbose=False, input_signature=[signature])


def save_model(model: Model, path: Path) -> None:
    """Save as ``.keras``, normalised so identical weights give identical bytes (see below)."""
    with tempfile.TemporaryDirectory() as scratch:
        saved = Path(scratch) / MODEL_FILE
        model.save(saved)
        atomic.write_bytes(path, _normalised_keras_archive(saved.read_bytes()))


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
    # Keras reports any file that is not a zip as "File not found": say what the file is instead.
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as handle:
            start = handle.read(8)
        found = ("it is empty" if not start else "it is an HDF5 file, Keras 2's .h5 format" if start == HDF5_MAGIC
                 else "it is a zip archive cut short" if start.startswith(b"PK\x03\x04")
                 else f"it starts with {start!r}")
        raise StageError(f"{path}: not a Keras archive ({found}; a .keras file is a zip archive); rerun the "
                         "training stage (dvc repro train)")
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # noqa: BLE001 - Keras raises many types for a corrupt file
        raise StageError(f"{path}: not a loadable Keras model ({type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else ''})") from None
    if count_parameters(model) != spec.parameters:
        raise StageError(f"{path}: has {count_parameters(model)} parameters; its architecture.json says "
                         f"{spec.parameters}")
    return model

