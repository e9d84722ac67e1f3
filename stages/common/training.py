"""The framework-neutral part of the two training stages.

``run_training(framework, backend)`` is the whole ``main()`` of ``stages/train_keras.py`` and
``stages/train_torch.py``: load and validate params, fix threads, load the prepared train and
validation splits, expand the architecture spec, let the framework ``backend`` build and fit the
model, then write every output atomically, and only after training finished with finite losses:

- ``models/<framework>/model.<ext>`` and ``models/<framework>/architecture.json``
- ``dvclive/<framework>/``: per-epoch metrics logged with dvclive (``plots/metrics/...tsv``) and
  the training summary ``metrics.json`` (final metrics, seconds, images/second, parameters,
  seconds to reach each validation-accuracy threshold).

A backend module provides: ``MODEL_FILE``, ``configure(settings, seed) -> device``,
``build_model(spec)``, ``count_parameters(model)``, ``fit(model, train, val, settings,
learning_rates, seed, on_epoch_end) -> None`` (raising ``NonFiniteLoss``) and
``save_model(model, path)``.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from stages.common import atomic, prepared
from stages.common.architecture import build_spec
from stages.common.errors import StageError
from stages.common.params import TrainParams, effective_train, load_params
from stages.common.runtime import configure_threads, seed_python_and_numpy
from stages.common.schedules import learning_rates

PREPARED_DIR = Path("data/prepared")
MODELS_DIR = Path("models")
LOGS_DIR = Path("dvclive")
ARCHITECTURE_FILE = "architecture.json"
INFERENCE_FILE = "inference.json"  # what evaluation must do to inputs (train.input_scale)
ACCURACY_THRESHOLDS = (0.98, 0.99)

log = logging.getLogger("train")


class NonFiniteLoss(StageError):
    """The training loss became NaN or infinite."""


@dataclass(frozen=True)
class EpochRecord:
    epoch: int  # 1-based
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    learning_rate: float  # at the epoch's last step
    train_seconds: float  # optimisation only
    seconds: float  # optimisation and validation


def check_finite(loss: float, epoch: int, batch: int) -> None:
    if not math.isfinite(loss):
        raise NonFiniteLoss(f"training loss became {loss} at epoch {epoch}, batch {batch}; no model or metrics "
                            "were written. Lower train.learning_rate or check the inputs (preprocess.normalize)")


def check_finite_weights(all_finite: bool, epoch: int) -> None:
    """Catch divergence that the loss hides (TensorFlow's ReLU maps NaN to 0, so a model whose
    weights are NaN can still report a finite loss)."""
    if not all_finite:
        raise NonFiniteLoss(f"weights became NaN or infinite during epoch {epoch}; no model or metrics were "
                            "written. Lower train.learning_rate or check the inputs (preprocess.normalize)")


class EpochLog:
    """Collects epoch records and writes one log line per epoch, with units."""

    def __init__(self, framework: str, epochs: int, train_images: int) -> None:
        self.framework, self.epochs, self.train_images = framework, epochs, train_images
        self.records: list[EpochRecord] = []

    def __call__(self, record: EpochRecord) -> None:
        for name in ("train_loss", "val_loss"):
            check_finite(getattr(record, name), record.epoch, -1)
        self.records.append(record)
        log.info("%s epoch %d/%d: train loss %.4f acc %.2f%% | val loss %.4f acc %.2f%% | lr %.2e | "
                 "%.1f s (%.0f images/s)", self.framework, record.epoch, self.epochs, record.train_loss,
                 100 * record.train_accuracy, record.val_loss, 100 * record.val_accuracy, record.learning_rate,
                 record.seconds, self.train_images / max(record.train_seconds, 1e-9))


def summarize(records: list[EpochRecord], framework: str, device: str, parameters: int,
              train_images: int) -> dict:
    """The training summary: final metrics, time, throughput, time to accuracy thresholds."""
    final = records[-1]
    train_seconds = sum(record.train_seconds for record in records)
    total_seconds = sum(record.seconds for record in records)
    summary = {
        "framework": framework,
        "device": device,
        "epochs": len(records),
        "train_loss": final.train_loss,
        "train_accuracy": final.train_accuracy,
        "val_loss": final.val_loss,
        "val_accuracy": final.val_accuracy,
        "best_val_accuracy": max(record.val_accuracy for record in records),
        "train_seconds": round(total_seconds, 3),
        "images_per_second": round(train_images * len(records) / max(train_seconds, 1e-9), 1),
        "parameters": parameters,
    }
    elapsed = 0.0
    for threshold in ACCURACY_THRESHOLDS:
        summary[f"seconds_to_val_accuracy_{round(threshold * 100)}"] = None
    for record in records:
        elapsed += record.seconds
        for threshold in ACCURACY_THRESHOLDS:
            key = f"seconds_to_val_accuracy_{round(threshold * 100)}"
            if summary[key] is None and record.val_accuracy >= threshold:
                summary[key] = round(elapsed, 3)
    return summary


def write_logs(folder: Path, records: list[EpochRecord], summary: dict) -> None:
    """dvclive logs (one TSV per metric, step = epoch) and the summary, swapped in at once."""
    from dvclive import Live

    with atomic.atomic_directory(folder) as temporary:
        live = Live(dir=str(temporary), save_dvc_exp=False, dvcyaml=None, report=None)
        for record in records:
            live.step = record.epoch
            values = asdict(record)
            for name in ("loss", "accuracy"):
                live.log_metric(f"train/{name}", values[f"train_{name}"])
                live.log_metric(f"val/{name}", values[f"val_{name}"])
            live.log_metric("learning_rate", record.learning_rate)
            live.log_metric("epoch_seconds", record.seconds)
        # The summary replaces dvclive's copy of the last epoch's values: `summary` already has
        # them (train_loss, val_accuracy, ...), and one name per number keeps `dvc metrics` readable.
        live.summary.clear()
        live.summary.update(summary)
        live.make_summary()


def save_outputs(framework: str, backend: ModuleType, model: object, spec_json: str, input_scale: float) -> None:
    with atomic.atomic_directory(MODELS_DIR / framework) as temporary:
        backend.save_model(model, temporary / backend.MODEL_FILE)
        (temporary / ARCHITECTURE_FILE).write_text(spec_json, encoding="utf-8")
        (temporary / INFERENCE_FILE).write_text(json.dumps({"input_scale": input_scale}) + "\n", encoding="utf-8")


def train_model(framework: str, backend: ModuleType, train: prepared.Split, val: prepared.Split,
                spec, settings: TrainParams, seed: int, background: float = 0.0):
    """Build and fit a model; return (model, records, device). Pure: arrays and settings in."""
    device = backend.configure(settings, seed)
    model = backend.build_model(spec)
    steps_per_epoch = math.ceil(train.labels.shape[0] / settings.batch_size)
    epoch_log = EpochLog(framework, settings.epochs, train.labels.shape[0])
    backend.fit(model, train, val, settings, learning_rates(settings, steps_per_epoch), seed, epoch_log,
                background=background)
    return model, epoch_log.records, device


def background_value(meta: dict, settings: TrainParams) -> float:
    """The input value of a blank (0) pixel: what augmentation fills uncovered pixels with."""
    normalize = meta["normalize"]
    return float((0.0 - normalize["mean"]) / normalize["std"] * settings.input_scale)


def run_training(framework: str, backend: ModuleType) -> None:
    params = load_params()
    settings = effective_train(params, framework)
    configure_threads(settings.threads)
    seed_python_and_numpy(params.seed)
    data = prepared.load_prepared(PREPARED_DIR, splits=("train", "val"))
    spec = build_spec(params.model, data.image_shape, data.num_classes)
    train, val = data.splits["train"], data.splits["val"]
    log.info("%s: %d training and %d validation images, %d parameters, %d epochs of batch %d (%s, %s schedule)",
             framework, train.labels.shape[0], val.labels.shape[0], spec.parameters, settings.epochs,
             settings.batch_size, settings.optimizer, settings.schedule)
    model, records, device = train_model(framework, backend, train, val, spec, settings, params.seed,
                                         background_value(data.meta, settings))
    parameters = backend.count_parameters(model)
    if parameters != spec.parameters:
        raise RuntimeError(f"{framework} built {parameters} parameters; the spec says {spec.parameters}")
    summary = summarize(records, framework, device, parameters, train.labels.shape[0])
    save_outputs(framework, backend, model, spec.to_json(), settings.input_scale)
    write_logs(LOGS_DIR / framework, records, summary)
    log.info("%s: trained in %.1f s (%.0f images/s), final val accuracy %.2f%%; wrote %s and %s", framework,
             summary["train_seconds"], summary["images_per_second"], 100 * summary["val_accuracy"],
             MODELS_DIR / framework, LOGS_DIR / framework)


def interactive() -> bool:
    """Show per-batch progress bars only on a terminal, never in CI or DVC logs."""
    return sys.stderr.isatty()


def epoch_order(count: int, generator: np.random.Generator) -> np.ndarray:
    """The order in which an epoch visits the training images; both trainers draw it alike."""
    return generator.permutation(count)


def batch_indices(count: int, batch_size: int, generator: np.random.Generator) -> list[np.ndarray]:
    """An epoch's order cut into batches (the last one may be smaller)."""
    order = epoch_order(count, generator)
    return [order[start:start + batch_size] for start in range(0, count, batch_size)]
