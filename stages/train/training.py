"""The framework-neutral part of training: what the train stage (``__main__.py``) does around a backend.

Pure functions over arrays and settings (``train_model``, ``summarize``), plus the writers of
the two output folders of a replicate:

- ``models/<framework>/<seed>/``: the model file, ``architecture.json`` and ``run.json``,
  swapped in as a whole only after training finished with finite losses;
- ``dvclive/<framework>/<seed>/``: one TSV per metric (dvclive), appended as each epoch ends
  (so progress shows while a run is going, in the folder's temporary), and the
  ``TrainingSummary`` as ``metrics.json`` at the end; swapped in as a whole when the run
  ends, as the model folder is (``atomic.atomic_directory``). A run that fails or is
  interrupted leaves the previous run's logs as they were, so no partial log is left behind
  looking like a finished one and nothing good is lost.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import asdict
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from stages.backends.base import Backend, EpochRecord, Model, check_finite
from stages.common import atomic, paths, prepared, schemas
from stages.common.architecture import ArchitectureSpec
from stages.common.params import TrainParams
from stages.common.runtime import relative_spread
from stages.common.schedules import learning_rates
from stages.common.schemas import ACCURACY_THRESHOLDS, RunInfo, TrainingSummary

log = logging.getLogger("train")


class EpochLog(AbstractContextManager["EpochLog"]):
    """Checks, logs and records each epoch; streams it to dvclive in ``folder`` if given.

    dvclive writes into the temporary of an ``atomic.atomic_directory`` write of ``folder``
    (``writing``), which replaces ``folder`` only when the ``with`` block ends without error."""

    def __init__(self, name: str, epochs: int, train_images: int, folder: Path | None = None) -> None:
        self.name, self.epochs, self.train_images, self.folder = name, epochs, train_images, folder
        self.records: list[EpochRecord] = []
        self.live: Any = None
        self.writing: Path | None = None  # the folder's temporary, while the run goes
        self._output = ExitStack()

    def __enter__(self) -> EpochLog:
        if self.folder is not None:
            from dvclive import Live

            with ExitStack() as output:  # closed again if dvclive fails to start
                self.writing = output.enter_context(atomic.atomic_directory(self.folder))
                self.live = Live(dir=str(self.writing), save_dvc_exp=False, dvcyaml=None, report=None)
                self._output = output.pop_all()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> bool | None:
        return self._output.__exit__(kind, error, traceback)

    def finish(self, summary: TrainingSummary) -> None:
        """Replace dvclive's running summary by the training summary (one name per number)."""
        assert self.writing is not None, "finish() needs a folder, inside the with block"
        schemas.save(summary, self.writing / paths.METRICS_FILE)

    def __call__(self, record: EpochRecord) -> None:
        for name in ("train_loss", "val_loss"):
            check_finite(getattr(record, name), record.epoch, -1)
        self.records.append(record)
        if self.live is not None:
            self.live.step = record.epoch
            values = asdict(record)
            for name in ("loss", "accuracy"):
                self.live.log_metric(f"train/{name}", values[f"train_{name}"])
                self.live.log_metric(f"val/{name}", values[f"val_{name}"])
            self.live.log_metric("learning_rate", record.learning_rate)
            self.live.log_metric("epoch_seconds", record.seconds)
            self.live.next_step()
        log.info("%s epoch %d/%d: train loss %.4f acc %.2f%% | val loss %.4f acc %.2f%% | lr %.2e | "
                 "%.1f s (%.0f images/s)", self.name, record.epoch, self.epochs, record.train_loss,
                 100 * record.train_accuracy, record.val_loss, 100 * record.val_accuracy, record.learning_rate,
                 record.seconds, self.train_images / max(record.train_seconds, 1e-9))


def summarize(records: Sequence[EpochRecord], parameters: int, train_images: int) -> TrainingSummary:
    """The training summary: final metrics, time, throughput, time to accuracy thresholds."""
    final = records[-1]
    optimisation_seconds = sum(record.train_seconds for record in records)
    reached: dict[float, float | None] = dict.fromkeys(ACCURACY_THRESHOLDS)
    elapsed = 0.0
    for record in records:
        elapsed += record.seconds
        for threshold in ACCURACY_THRESHOLDS:
            if reached[threshold] is None and record.val_accuracy >= threshold:
                reached[threshold] = round(elapsed, 3)
    return TrainingSummary(
        epochs=len(records), train_loss=final.train_loss, train_accuracy=final.train_accuracy,
        val_loss=final.val_loss, val_accuracy=final.val_accuracy,
        best_val_accuracy=max(record.val_accuracy for record in records),
        train_seconds=round(elapsed, 3),
        images_per_second=round(train_images * len(records) / max(optimisation_seconds, 1e-9), 1),
        parameters=parameters,
        seconds_to_val_accuracy_98=reached[0.98], seconds_to_val_accuracy_99=reached[0.99],
        timing_spread=relative_spread(record.train_seconds for record in records))


def background_value(meta: dict[str, Any], settings: TrainParams) -> float:
    """The input value of a blank (0) pixel: what augmentation fills uncovered pixels with."""
    normalize = meta["normalize"]
    return float((0.0 - normalize["mean"]) / normalize["std"] * settings.input_scale)


def train_model(backend: Backend, spec: ArchitectureSpec, train: prepared.Split, val: prepared.Split,
                settings: TrainParams, seed: int, epoch_log: EpochLog, initial: list[np.ndarray] | None = None,
                background: float = 0.0) -> Model:
    """Build a model (from ``initial`` weights if given) and fit it; return it. Arrays in, model out."""
    model = backend.build_model(spec, seed)
    if initial is not None:
        backend.set_weights(model, initial)
    parameters = backend.count_parameters(model)
    if parameters != spec.parameters:
        raise RuntimeError(f"the backend built {parameters} parameters; the spec says {spec.parameters}")
    steps_per_epoch = math.ceil(train.labels.shape[0] / settings.batch_size)
    backend.fit(model, train, val, settings, learning_rates(settings, steps_per_epoch), seed, epoch_log,
                background=background)
    return model


def save_model(backend: Backend, model: Model, spec: ArchitectureSpec, info: RunInfo, folder: Path) -> None:
    """Model file, architecture and run info, swapped in as one folder."""
    with atomic.atomic_directory(folder) as temporary:
        backend.save_model(model, temporary / backend.MODEL_FILE)
        (temporary / paths.ARCHITECTURE_FILE).write_text(spec.to_json(), encoding="utf-8")
        schemas.save(info, temporary / paths.RUN_FILE)
