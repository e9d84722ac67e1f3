"""The report's inputs: every replicate's outputs, read through the shared schemas and checked
against each other. Every problem is a one-line ``StageError`` naming the file and the stage
that rewrites it."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.common import npfile, paths, schemas
from stages.common.errors import StageError
from stages.common.schemas import OnnxMetrics, PerClass, RunInfo, TestMetrics, TrainingSummary

# dvclive's plots/metrics/<name>.tsv; epoch_seconds: each epoch's training seconds, validation included
CURVES = ("train/loss", "val/loss", "train/accuracy", "val/accuracy", "epoch_seconds")


@dataclass(frozen=True)
class Curve:
    """One per-epoch series from dvclive: epochs (1-based) and their values."""

    epochs: np.ndarray  # int64
    values: np.ndarray  # float64


@dataclass(frozen=True)
class Replicate:
    """Everything the earlier stages wrote about one framework and seed, validated."""

    framework: str
    seed: int
    run: RunInfo  # run.tuning: stock | tuned
    training: TrainingSummary
    evaluation: TestMetrics
    per_class: PerClass
    curves: dict[str, Curve]
    probabilities: np.ndarray  # float32, (test images, classes)

    @property
    def predicted(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)


def read_curve(path: Path, rerun: str) -> Curve:
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
    except FileNotFoundError:
        raise StageError(f"{path}: missing; run `{rerun}`") from None
    name = path.stem
    try:
        epochs = np.array([int(row["step"]) for row in rows], dtype=np.int64)
        values = np.array([float(row[name]) for row in rows], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        raise StageError(f"{path}: expected tab-separated columns step and {name}; run `{rerun}`") from None
    if not rows or not np.all(np.isfinite(values)):
        raise StageError(f"{path}: expected at least one finite value per epoch; run `{rerun}`")
    return Curve(epochs, values)


def read_probabilities(path: Path, count: int, num_classes: int, rerun: str) -> np.ndarray:
    try:
        npfile.check(path, f"run `{rerun}`")
        probabilities = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise StageError(f"{path}: missing; run `{rerun}`") from None
    except (OSError, ValueError) as error:
        raise StageError(f"{path}: not a numpy array file ({error}); run `{rerun}`") from None
    if probabilities.shape != (count, num_classes) or probabilities.dtype != np.float32:
        raise StageError(f"{path}: expected float32 of shape ({count}, {num_classes}), got "
                         f"{probabilities.dtype} {probabilities.shape}; run `{rerun}`")
    return probabilities


def load_replicate(framework: str, seed: int, labels: np.ndarray, class_names: Sequence[str],
                   tuning: str = "stock") -> Replicate:
    rerun_train = f"dvc repro {paths.stage('train', framework, seed, tuning)}"
    rerun_eval = f"dvc repro {paths.stage('evaluate', framework, seed, tuning)}"
    logs, evaluation = paths.logs_dir(framework, seed, tuning), paths.eval_dir(framework, seed, tuning)
    result = Replicate(
        framework=framework, seed=seed,
        run=schemas.load(RunInfo, paths.model_dir(framework, seed, tuning) / paths.RUN_FILE, rerun_train),
        training=schemas.load(TrainingSummary, logs / paths.METRICS_FILE, rerun_train),
        evaluation=schemas.load(TestMetrics, evaluation / paths.METRICS_FILE, rerun_eval),
        per_class=schemas.load(PerClass, evaluation / paths.PER_CLASS_FILE, rerun_eval),
        curves={name: read_curve(logs / "plots" / "metrics" / f"{name}.tsv", rerun_train) for name in CURVES},
        probabilities=read_probabilities(evaluation / paths.PREDICTIONS_FILE, labels.shape[0], len(class_names),
                                         rerun_eval))
    check_consistency(result, labels, class_names, evaluation, rerun_eval)
    if result.run.tuning != tuning or result.evaluation.tuning != tuning:
        raise StageError(f"{paths.model_dir(framework, seed, tuning) / paths.RUN_FILE}: trained {result.run.tuning}, "
                         f"evaluated {result.evaluation.tuning}, expected {tuning}; run `{rerun_train}` and "
                         f"`{rerun_eval}`")
    return result


def check_consistency(result: Replicate, labels: np.ndarray, class_names: Sequence[str], folder: Path,
                      rerun: str) -> None:
    """The evaluation files must describe the current test split and agree with each other."""
    if result.evaluation.test_images != labels.shape[0]:
        raise StageError(f"{folder / paths.METRICS_FILE}: {result.evaluation.test_images} test images, but "
                         f"{paths.PREPARED} holds {labels.shape[0]}; run `{rerun}`")
    if list(result.per_class.class_names) != list(class_names):
        raise StageError(f"{folder / paths.PER_CLASS_FILE}: class names differ from {paths.PREPARED}; run `{rerun}`")
    accuracy = float(np.mean(result.predicted == labels))
    if abs(accuracy - result.evaluation.test_accuracy) > 1e-9:
        raise StageError(f"{folder / paths.PREDICTIONS_FILE}: predictions give accuracy {accuracy:.6f}, "
                         f"metrics.json says {result.evaluation.test_accuracy:.6f}; run `{rerun}`")
    if (result.run.framework, result.run.seed) != (result.framework, result.seed):
        raise StageError(f"{paths.model_dir(result.framework, result.seed) / paths.RUN_FILE}: describes "
                         f"{result.run.framework} seed {result.run.seed}; run "
                         f"`dvc repro train@{paths.replicate(result.framework, result.seed)}`")


def load_all(frameworks: Sequence[str], seeds: Sequence[int], labels: np.ndarray,
             class_names: Sequence[str], tuning: str = "stock") -> dict[str, list[Replicate]]:
    """Every replicate of one tuning level, by arm (``paths.arm_name``), in ``seeds`` order."""
    return {paths.arm_name(framework, tuning): [load_replicate(framework, seed, labels, class_names, tuning)
                                           for seed in seeds] for framework in frameworks}


ONNX_FIGURES = ("max_abs_probability_difference", "same_class_share", "different_class_images", "test_accuracy",
                "throughput_images_per_second", "latency_ms_median")


def load_export(framework: str, seed: int, test_images: int, tuning: str = "stock") -> OnnxMetrics:
    """``eval/<arm>/<seed>/onnx.json`` of the export stage (stages/export), checked against the test
    split: a file without a route must say why, one with a route must hold every figure."""
    rerun = f"dvc repro {paths.stage('export', framework, seed, tuning)}"
    path = paths.eval_dir(framework, seed, tuning) / paths.ONNX_METRICS_FILE
    record = schemas.load(OnnxMetrics, path, rerun)
    if record.test_images != test_images:
        raise StageError(f"{path}: {record.test_images} test images, but {paths.PREPARED} holds {test_images}; "
                         f"run `{rerun}`")
    missing = [name for name in ONNX_FIGURES if getattr(record, name) is None]
    if record.error is None and missing:
        raise StageError(f"{path}: expected every figure of a working export, {', '.join(missing)} missing; "
                         f"run `{rerun}`")
    return record


def load_exports(frameworks: Sequence[str], seeds: Sequence[int], test_images: int,
                 tuning: str = "stock") -> dict[str, list[OnnxMetrics]]:
    """Every replicate's export on ONNX Runtime of one tuning level, by arm, in ``seeds`` order."""
    return {paths.arm_name(framework, tuning): [load_export(framework, seed, test_images, tuning) for seed in seeds]
            for framework in frameworks}
