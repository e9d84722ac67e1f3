"""The fields of every JSON file a stage writes, defined once for the writer and all readers.

``save(record, path)`` writes a record atomically; ``load(cls, path, rerun)`` reads one back and
checks it field by field with the validator params.yaml is checked with (``fields.build``): a
missing, unknown or mistyped field is a one-line ``StageError`` naming the file, the field, what
was expected and the command that rewrites the file. A field with a default may be left out of a
file (files written before it existed still read).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from stages.common import atomic
from stages.common.failures import StageError
from stages.common.fields import Rules, build

ACCURACY_THRESHOLDS = (0.98, 0.99)  # validation accuracies whose time to reach is recorded


@dataclass(frozen=True)
class TrainingSummary:
    """``dvclive/<framework>/<seed>/metrics.json``: one training run, final epoch and totals."""

    epochs: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    best_val_accuracy: float
    train_seconds: float  # optimisation and per-epoch validation
    images_per_second: float  # training images per second of optimisation
    parameters: int
    seconds_to_val_accuracy_98: float | None  # None: never reached
    seconds_to_val_accuracy_99: float | None
    # Optional: files without them still read. load_per_core_1m: the 1-minute load average per core,
    # recorded by earlier versions only (it counted the stage's own threads; the timing stage's busy
    # check replaced it); timing_spread: (max - min) / median of the epochs' seconds.
    load_per_core_1m: float | None = None
    timing_spread: float | None = None


@dataclass(frozen=True)
class RunInfo:
    """``models/<framework>/<seed>/run.json``: how the model was trained and must be fed."""

    framework: str
    seed: int
    device: str  # cpu | cuda
    init: str  # shared | framework (replicates.init)
    input_scale: float  # evaluation multiplies inputs by this, as training did
    tuning: str  # stock | tuned: how the framework ran (docs/fairness.md)
    switches: dict[str, str]  # the backend's tuned switches that were on -> what each does (empty for stock)
    description: str  # the backend's DESCRIPTION: how it trains and infers
    semantics: dict[str, str]  # the backend's SEMANTICS: its convention per recipe point
    environment: dict[str, str]  # framework versions and build, CPU, threads (stages/common/runtime.py)


@dataclass(frozen=True)
class TestMetrics:
    """``eval/<framework>/<seed>/metrics.json``: one trained model on the test split."""

    __test__ = False  # not a pytest test class

    test_images: int
    test_accuracy: float
    test_loss: float
    macro_precision: float
    macro_recall: float
    macro_f1: float
    throughput_images_per_second: float  # evaluate.throughput_repeats passes' images over their total time
    throughput_images_per_second_min: float
    throughput_images_per_second_max: float
    latency_ms_median: float  # one image per call
    latency_ms_p95: float
    tuning: str  # stock | tuned: how inference ran
    switches: list[str]  # the backend's tuned switches that were on (empty for stock)
    environment: dict[str, str]  # framework versions and build, CPU, threads, as evaluated
    parameters: int
    model_bytes: int
    # As TrainingSummary's: load_per_core_1m (earlier versions only), and timing_spread:
    # (max - min) / median of the timed throughput passes.
    load_per_core_1m: float | None = None
    timing_spread: float | None = None


@dataclass(frozen=True)
class OnnxMetrics:
    """``eval/<arm>/<seed>/onnx.json``: the replicate's ONNX export on ONNX Runtime (stages/export).

    ``route`` names the exporter; without a working route (``error`` says why) every figure is None."""

    route: str
    error: str | None
    onnx_bytes: int | None
    test_images: int
    # Against the framework's own probabilities (eval/<arm>/<seed>/predictions.npy):
    max_abs_probability_difference: float | None
    same_class_share: float | None  # share of test images with the same predicted class
    different_class_images: int | None
    test_accuracy: float | None  # on ONNX Runtime
    # ONNX Runtime's inference, timed as evaluate times the framework's:
    throughput_images_per_second: float | None
    throughput_images_per_second_min: float | None
    throughput_images_per_second_max: float | None
    latency_ms_median: float | None
    latency_ms_p95: float | None
    session: dict[str, str]  # ONNX Runtime's version, provider and the session options set
    timing_spread: float | None = None


@dataclass(frozen=True)
class PerClass:
    """``eval/<framework>/<seed>/per_class.json``: per-class scores and the confusion matrix."""

    class_names: list[str]
    precision: list[float]
    recall: list[float]
    f1: list[float]
    support: list[int]
    confusion: list[list[int]]  # confusion[actual][predicted]


Record = TypeVar("Record")


def to_dict(record: Any) -> dict[str, Any]:
    return dataclasses.asdict(record)


def save(record: Any, path: str | Path) -> None:
    atomic.write_json(path, to_dict(record))


def from_dict(cls: type[Record], raw: Any, source: str) -> Record:
    """Build ``cls`` from a parsed mapping; ``ValueError``, one line naming ``source`` and every bad field."""
    optional = frozenset((cls.__name__, item.name) for item in dataclasses.fields(cls)  # type: ignore[arg-type]
                         if item.default is not dataclasses.MISSING or item.default_factory is not dataclasses.MISSING)
    problems: list[str] = []
    record = build(cls, raw, "", problems, Rules(optional=optional))
    if problems:
        raise ValueError(f"{source}: {'; '.join(problems)}")
    return record


def load(cls: type[Record], path: str | Path, rerun: str) -> Record:
    """Read a record written by ``save``; ``StageError`` naming ``path`` and ``rerun`` otherwise."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StageError(f"{path}: missing; run `{rerun}`") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise StageError(f"{path}: not readable JSON ({error}); run `{rerun}`") from None
    try:
        return from_dict(cls, raw, str(path))
    except ValueError as error:
        raise StageError(f"{error}; run `{rerun}`") from None
