"""A toy framework, in plain numpy: the framework-free reference packaged as a backend.

It implements ``stages.backends.base.Backend`` on ``tests.reference_trainer.Reference`` (every
layer of the shared architecture, forward and backward written out in float64; weights kept as
float32 in the canonical layout) with the shared batch order and learning-rate table, Adam/AdamW
and SGD under the ``SEMANTICS`` below, label smoothing, inverted dropout, and augmentation by one
bilinear resampling (``scipy.ndimage.map_coordinates``). It is never registered in
stages/common/frameworks.py: a test run registers it with its one registry line,
``pytest --extra-framework numpy=tests.numpy_backend:NumPy`` (tests/e2e/test_third_backend.py),
to show that a framework needs one module and that every suite parametrised over the registry
runs on it.

``NUMPY_BACKEND_DEVIATION`` (environment) makes it train with one recipe point changed while it
still declares the ``SEMANTICS`` below, as a backend that deviates silently would:
``approximate_gelu``, ``pytorch_momentum`` or ``biased_variance``. The equivalence suite must then
fail (tests/e2e/test_third_backend.py checks that it does).
"""

from __future__ import annotations

import io
import math
import os
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from stages.backends.base import (
    EpochCallback,
    EpochRecord,
    Model,
    NoExportRoute,
    StepCallback,
    StepRecord,
    batch_indices,
    check_finite,
    check_finite_weights,
)
from stages.common import atomic
from stages.common.architecture import ArchitectureSpec, canonical_layout, initial_weights
from stages.common.errors import StageError
from stages.common.params import TrainParams
from stages.common.prepared import Split
from tests.reference_trainer import Reference, cross_entropy, optimizer_step

MODEL_FILE = "model.npz"
DESCRIPTION = ("NumPy (a toy framework for the tests): the framework-free reference of the equivalence suite, "
               "float64 forward and backward passes written out by hand, run as a backend. numpy has no speed "
               "switches, so the tuned level is the stock one.")
SWITCHES: dict[str, str] = {}
TUNED: tuple[str, ...] = ()
SEMANTICS = {"moving_variance": "unbiased", "adam_epsilon": "corrected", "sgd_momentum": "weight_units",
             "sgd_weight_decay": "decoupled", "gelu": "exact"}
# A silent deviation for the equivalence suite to catch: the convention trained instead of the declared one.
DEVIATIONS = {"approximate_gelu": ("gelu", "tanh"), "pytorch_momentum": ("sgd_momentum", "gradient_units"),
              "biased_variance": ("moving_variance", "biased")}


def _trained_conventions() -> dict[str, str]:
    deviation = os.environ.get("NUMPY_BACKEND_DEVIATION", "")
    if not deviation:
        return dict(SEMANTICS)
    if deviation not in DEVIATIONS:
        raise StageError(f"NUMPY_BACKEND_DEVIATION is {deviation!r}; expected one of {', '.join(DEVIATIONS)}")
    point, convention = DEVIATIONS[deviation]
    return {**SEMANTICS, point: convention}


@dataclass
class NumpyModel:
    spec: ArchitectureSpec
    reference: Reference  # the weights (float64) and the conventions it trains with


def environment() -> dict[str, str]:
    import scipy

    return {"numpy": np.__version__, "scipy": scipy.__version__}


def configure(settings: TrainParams, seed: int) -> str:
    if settings.device == "cuda":
        raise StageError("train.device is 'cuda' but the numpy backend runs on the CPU only; set it to auto or cpu")
    return "cpu"


def build_model(spec: ArchitectureSpec, seed: int) -> Model:
    """The spec's layers with weights drawn as ``stages/init.py`` draws them, for ``seed``."""
    weights = initial_weights(spec, np.random.default_rng(seed))
    return NumpyModel(spec, Reference(spec, weights, _trained_conventions()))


def count_parameters(model: Model) -> int:
    trainable = model.reference.trainable
    return int(sum(model.reference.weights[index].size for index in trainable))


def get_weights(model: Model) -> list[np.ndarray]:
    return [weight.astype(np.float32) for weight in model.reference.weights]


def set_weights(model: Model, weights: Sequence[np.ndarray]) -> None:
    expected = [shape for shape, _ in canonical_layout(model.spec)]
    if [tuple(np.shape(weight)) for weight in weights] != expected:
        raise ValueError(f"expected weights of shapes {expected}, got {[np.shape(weight) for weight in weights]}")
    model.reference.weights = [np.asarray(weight, dtype=np.float32).astype(np.float64) for weight in weights]


def augment(images: np.ndarray, settings: TrainParams, background: float, seed: int) -> np.ndarray:
    return _augment(np.asarray(images, np.float64), settings, background, np.random.default_rng(seed)).astype(
        np.float32)


def _augment(images: np.ndarray, settings: TrainParams, background: float,
             draws: np.random.Generator) -> np.ndarray:
    """Each image rotated about its centre by up to ``max_rotation_deg`` and shifted by up to
    ``max_shift`` of its size, as one bilinear resampling; uncovered pixels are ``background``."""
    count, height, width, channels = images.shape
    uniform = draws.uniform(-1.0, 1.0, size=(3, count))
    angles = uniform[0] * math.radians(settings.augment.max_rotation_deg)
    shift = settings.augment.max_shift
    shifts_x, shifts_y = uniform[1] * shift * width, uniform[2] * shift * height
    rows, columns = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij")
    centre_y, centre_x = (height - 1) / 2, (width - 1) / 2
    output = np.empty_like(images)
    for index in range(count):
        # Output pixel p (centred) shows input pixel R^-1 (p - shift).
        x, y = columns - centre_x - shifts_x[index], rows - centre_y - shifts_y[index]
        cos, sin = math.cos(angles[index]), math.sin(angles[index])
        source = np.stack([-sin * x + cos * y + centre_y, cos * x + sin * y + centre_x])
        for channel in range(channels):
            output[index, :, :, channel] = ndimage.map_coordinates(images[index, :, :, channel], source, order=1,
                                                                   mode="constant", cval=background)
    return output


def batch_norm_constants(model: Model) -> list[tuple[float, float]]:
    return [(float(layer.config["decay"]), float(layer.config["epsilon"])) for layer in model.spec.layers
            if layer.kind == "batch_norm"]


def fit(model: Model, train: Split, val: Split, settings: TrainParams, learning_rates: np.ndarray, seed: int,
        on_epoch_end: EpochCallback, background: float = 0.0, on_step_end: StepCallback | None = None) -> None:
    reference = model.reference
    order, draws = np.random.default_rng(seed), np.random.default_rng([seed, 1])  # batches; dropout, augmentation
    count = train.labels.shape[0]
    classes = model.spec.num_classes
    targets = np.eye(classes)[train.labels] * (1 - settings.label_smoothing) + settings.label_smoothing / classes
    optimizer: dict = {}  # its moments; the rate it applies at each step is the table's
    step, rate = 0, float("nan")
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for epoch in range(1, settings.epochs + 1):
            started = time.perf_counter()
            loss_sum, correct, seen = 0.0, 0, 0
            for batch, rows in enumerate(batch_indices(count, settings.batch_size, order), start=1):
                images = np.asarray(train.images[rows], np.float64) * settings.input_scale
                if settings.augment.enabled:
                    images = _augment(images, settings, background, draws)
                logits, caches = reference.forward(images, training=True, draws=draws)
                loss, upstream = cross_entropy(logits, targets[rows])
                check_finite(loss, epoch, batch)
                rate = float(learning_rates[step])
                step += 1
                optimizer_step(reference, reference.backward(upstream, caches), optimizer, settings, rate, step)
                correct += int(np.sum(logits.argmax(axis=1) == train.labels[rows]))
                loss_sum, seen = loss_sum + loss * len(rows), seen + len(rows)
                if on_step_end is not None:
                    on_step_end(StepRecord(epoch, batch, rows, rate, loss_sum / seen))
            check_finite_weights(all(np.isfinite(weight).all() for weight in reference.weights), epoch)
            trained = time.perf_counter()
            val_loss, val_accuracy = _evaluate(model, val, settings.input_scale)
            on_epoch_end(EpochRecord(epoch, loss_sum / count, correct / count, val_loss, val_accuracy,
                                     rate, trained - started, time.perf_counter() - started))


def _evaluate(model: Model, split: Split, scale: float) -> tuple[float, float]:
    probabilities = predict(model, np.asarray(split.images), 256, scale)
    labels = split.labels.astype(np.int64)
    loss = float(-np.mean(np.log(probabilities[np.arange(labels.shape[0]), labels].astype(np.float64) + 1e-12)))
    return loss, float(np.mean(probabilities.argmax(axis=1) == labels))


def for_inference(model: Model, switches: tuple[str, ...]) -> Model:
    return model  # numpy has no compiler: both levels run the same code


def predict(model: Model, images: np.ndarray, batch_size: int, input_scale: float = 1.0) -> np.ndarray:
    outputs = []
    for start in range(0, images.shape[0], batch_size):
        batch = np.asarray(images[start:start + batch_size], np.float64) * input_scale
        raw = model.reference.forward(batch, training=False)[0]
        exp = np.exp(raw - raw.max(axis=1, keepdims=True))
        outputs.append(exp / exp.sum(axis=1, keepdims=True))
    return np.concatenate(outputs).astype(np.float32)


def export(model: Model, spec: ArchitectureSpec, path: Path) -> None:
    """A toy has no exporter of its own: writing its graph by hand with ``onnx.helper`` would test
    that code, not a framework's route, so its row says so."""
    raise NoExportRoute("the toy numpy framework has no ONNX exporter of its own")


def save_model(model: Model, path: Path) -> None:
    """The canonical weights as an npz archive (fixed zip timestamps: same weights, same bytes)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index, weight in enumerate(get_weights(model)):
            with archive.open(f"w{index}.npy", "w") as handle:
                np.lib.format.write_array(handle, weight, allow_pickle=False)
    atomic.write_bytes(path, buffer.getvalue())


def load_model(path: Path, spec: ArchitectureSpec) -> Model:
    if not path.is_file():
        raise StageError(f"{path}: missing; run the training stage first (dvc repro train)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            weights = [archive[f"w{index}"] for index in range(len(archive.files))]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        raise StageError(f"{path}: not a numpy-backend model ({error})") from None
    model = build_model(spec, 0)
    try:
        set_weights(model, weights)
    except ValueError:
        raise StageError(f"{path}: weights do not fit the architecture in architecture.json") from None
    return model
