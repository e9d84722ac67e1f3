"""Stage ``report``: figures and a Markdown report comparing the Keras and PyTorch runs.

Inputs (all written by earlier stages):

- ``params.yaml``: ``report:`` (how many images the grids show, figure resolution) and the
  sections that produced the results, quoted in the report.
- ``data/prepared/``: the test images and labels, ``meta.json`` (class names, normalisation).
- ``metrics/<framework>.json``: test accuracy, loss, macro scores, inference speed, model size.
- ``eval/<framework>/predictions.npy`` and ``per_class.json``: class probabilities per test
  image; per-class scores and the confusion matrix.
- ``dvclive/<framework>/metrics.json`` and ``plots/metrics/{train,val}/{loss,accuracy}.tsv``:
  the training summary and the per-epoch curves.

Outputs, in ``reports/`` (small, kept in git):

- ``training_curves.png``, ``confusion_matrices.png``, ``per_class_accuracy.png``,
  ``misclassified.png``, ``disagreements.png``, ``speed_and_size.png``.
- ``report.md``: the comparison table, the disagreements, the figures, a per-class table and
  the params that produced it all.
- ``summary.json``: every number of the comparison table, raw and as printed.

Every input is validated before anything is drawn; a problem the user can fix stops the stage
with one line naming the file. The folder is built aside and swapped in whole, so a failing run
leaves the previous ``reports/`` as it was. Only numpy and matplotlib (Agg, no display) are
used: no deep-learning framework is imported.

Run: ``python -m stages.report`` (or ``dvc repro report``).
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from stages.common import atomic, prepared
from stages.common.errors import StageError, run_stage
from stages.common.params import FRAMEWORKS, Params, ReportParams, as_dict, load_params

PREPARED_DIR = Path("data/prepared")
METRICS_DIR = Path("metrics")
EVAL_DIR = Path("eval")
LOGS_DIR = Path("dvclive")
REPORTS_DIR = Path("reports")

DISPLAY_NAMES = {"keras": "Keras", "torch": "PyTorch"}
DATASET_NAMES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}
# Blue and orange: distinguishable with the common colour-vision deficiencies, and neither is
# used for anything else in the figures.
COLOURS = {"keras": "#1f77b4", "torch": "#ff7f0e"}
IMAGE_COLOURMAP = "gray_r"  # dark ink on light paper prints and reads better than white on black

# The per-epoch curves drawn, as dvclive names them: plots/metrics/<name>.tsv.
CURVES = ("train/loss", "val/loss", "train/accuracy", "val/accuracy")

# Keys each input file must hold (more are allowed). Null is allowed only where listed.
EVALUATION_KEYS = ("test_images", "test_accuracy", "test_loss", "macro_precision", "macro_recall", "macro_f1",
                   "throughput_images_per_second", "latency_ms_median", "latency_ms_p95", "parameters",
                   "model_bytes")
TRAINING_KEYS = ("epochs", "train_seconds", "images_per_second", "parameters", "seconds_to_val_accuracy_98",
                 "seconds_to_val_accuracy_99")
TRAINING_NULLABLE = ("seconds_to_val_accuracy_98", "seconds_to_val_accuracy_99")
PER_CLASS_KEYS = ("class_names", "precision", "recall", "f1", "support", "confusion")

FIGURES = ("training_curves.png", "confusion_matrices.png", "per_class_accuracy.png", "misclassified.png",
           "disagreements.png", "speed_and_size.png")

log = logging.getLogger("report")


# --------------------------------------------------------------------------------------------
# Inputs: read and validate; every error names the file and what was expected
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Curve:
    """One per-epoch series from dvclive: epochs (1-based) and their values."""

    epochs: np.ndarray  # int64
    values: np.ndarray  # float64


@dataclass(frozen=True)
class FrameworkResults:
    """Everything the earlier stages wrote about one framework, validated."""

    framework: str  # "keras" | "torch"
    evaluation: dict[str, Any]  # metrics/<framework>.json
    per_class: dict[str, Any]  # eval/<framework>/per_class.json
    training: dict[str, Any]  # dvclive/<framework>/metrics.json
    curves: dict[str, Curve]  # keyed by CURVES
    probabilities: np.ndarray  # float32, (test images, classes)

    @property
    def display_name(self) -> str:
        return DISPLAY_NAMES.get(self.framework, self.framework)

    @property
    def colour(self) -> str:
        return COLOURS.get(self.framework, "#2ca02c")

    @property
    def predicted(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_json(path: Path, required: tuple[str, ...], rerun: str, nullable: tuple[str, ...] = (),
              numeric: bool = True) -> dict[str, Any]:
    """A JSON object holding ``required`` keys (finite numbers when ``numeric``)."""
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StageError(f"{path}: missing; run {rerun} first") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise StageError(f"{path}: not valid JSON ({error}); rerun {rerun}") from None
    if not isinstance(payload, dict):
        raise StageError(f"{path}: expected a JSON object, got {type(payload).__name__}; rerun {rerun}")
    missing = [key for key in required if key not in payload]
    if missing:
        raise StageError(f"{path}: missing keys {missing}; rerun {rerun}")
    if numeric:
        for key in required:
            value = payload[key]
            if not (_is_number(value) or (value is None and key in nullable)):
                raise StageError(f"{path}: {key} is {value!r}; expected a finite number")
    return payload


def read_curve(path: Path, rerun: str) -> Curve:
    """A dvclive metric TSV: a header row naming ``step`` and the metric, one row per epoch."""
    name = path.stem  # dvclive names the value column after the file: loss.tsv -> "loss"
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
    except FileNotFoundError:
        raise StageError(f"{path}: missing; run {rerun} first") from None
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise StageError(f"{path}: unreadable ({error}); rerun {rerun}") from None
    if not rows or "step" not in rows[0] or name not in rows[0]:
        raise StageError(f"{path}: expected a tab-separated header 'step<TAB>{name}' and at least one row")
    try:
        epochs = np.array([int(row["step"]) for row in rows], dtype=np.int64)
        values = np.array([float(row[name]) for row in rows], dtype=np.float64)
    except (TypeError, ValueError):
        raise StageError(f"{path}: expected an integer step and a number in every row") from None
    if not np.all(np.isfinite(values)):
        raise StageError(f"{path}: holds non-finite values")
    return Curve(epochs=epochs, values=values)


def read_probabilities(path: Path, count: int, num_classes: int, rerun: str) -> np.ndarray:
    """The evaluate stage's float32 probabilities: one row per test image, one column per class."""
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise StageError(f"{path}: missing; run {rerun} first") from None
    except (OSError, ValueError, EOFError) as error:
        raise StageError(f"{path}: not a valid .npy file ({error}); rerun {rerun}") from None
    if not isinstance(array, np.ndarray):  # an .npz archive loads as a mapping of arrays
        array.close()
        raise StageError(f"{path}: an .npz archive; expected a single .npy array; rerun {rerun}")
    if array.dtype != np.float32:
        raise StageError(f"{path}: dtype {array.dtype}; expected float32 probabilities")
    if array.shape != (count, num_classes):
        raise StageError(f"{path}: shape {array.shape}; expected ({count}, {num_classes}): one row per test image "
                         f"in {PREPARED_DIR}, one column per class; rerun {rerun}")
    if not np.all(np.isfinite(array)):
        raise StageError(f"{path}: holds non-finite probabilities; rerun {rerun}")
    return array


def check_consistency(results: FrameworkResults, labels: np.ndarray, class_names: list[str]) -> None:
    """Catch stale or mixed-up inputs: the files of one framework must describe the same test set."""
    framework, count = results.framework, labels.shape[0]
    metrics_path = METRICS_DIR / f"{framework}.json"
    per_class_path = EVAL_DIR / framework / "per_class.json"
    rerun = f"dvc repro evaluate@{framework}"
    if results.evaluation["test_images"] != count:
        raise StageError(f"{metrics_path}: test_images {results.evaluation['test_images']}; expected {count} "
                         f"from {PREPARED_DIR}; rerun {rerun}")
    # One image more or less right is 1/count of accuracy: anything closer is float rounding.
    accuracy = float(np.mean(results.predicted == labels)) if count else 0.0
    if abs(accuracy - results.evaluation["test_accuracy"]) >= 0.5 / max(count, 1):
        raise StageError(f"{metrics_path}: test_accuracy {results.evaluation['test_accuracy']} disagrees with "
                         f"{EVAL_DIR / framework / 'predictions.npy'} ({accuracy}); rerun {rerun}")
    per_class = results.per_class
    if list(per_class["class_names"]) != class_names:
        raise StageError(f"{per_class_path}: class_names {per_class['class_names']}; expected {class_names} "
                         f"from {PREPARED_DIR / prepared.META_FILE}; rerun {rerun}")
    classes = len(class_names)
    for key in ("precision", "recall", "f1", "support"):
        values = per_class[key]
        if not isinstance(values, list) or len(values) != classes or not all(map(_is_number, values)):
            raise StageError(f"{per_class_path}: {key} is not a list of {classes} numbers; rerun {rerun}")
    confusion = per_class["confusion"]
    if (not isinstance(confusion, list) or len(confusion) != classes
            or not all(isinstance(row, list) and len(row) == classes for row in confusion)
            or not all(isinstance(cell, int) and cell >= 0 for row in confusion for cell in row)):
        raise StageError(f"{per_class_path}: confusion is not a {classes}x{classes} matrix of counts; rerun {rerun}")
    if sum(map(sum, confusion)) != count:
        raise StageError(f"{per_class_path}: confusion counts {sum(map(sum, confusion))} images; expected {count} "
                         f"test images; rerun {rerun}")


def load_results(framework: str, labels: np.ndarray, class_names: list[str]) -> FrameworkResults:
    """Read and validate every file the earlier stages wrote for ``framework``."""
    evaluate = f"dvc repro evaluate@{framework}"
    train = f"dvc repro train@{framework}"
    logs = LOGS_DIR / framework
    results = FrameworkResults(
        framework=framework,
        evaluation=read_json(METRICS_DIR / f"{framework}.json", EVALUATION_KEYS, evaluate),
        per_class=read_json(EVAL_DIR / framework / "per_class.json", PER_CLASS_KEYS, evaluate, numeric=False),
        training=read_json(logs / "metrics.json", TRAINING_KEYS, train, nullable=TRAINING_NULLABLE),
        curves={name: read_curve(logs / "plots" / "metrics" / f"{name}.tsv", train) for name in CURVES},
        probabilities=read_probabilities(EVAL_DIR / framework / "predictions.npy", labels.shape[0],
                                         len(class_names), evaluate),
    )
    for path, payload in ((METRICS_DIR / f"{framework}.json", results.evaluation),
                          (logs / "metrics.json", results.training)):
        # A file copied between frameworks would otherwise pass every other check.
        if payload.get("framework", framework) != framework:
            raise StageError(f"{path}: framework is {payload['framework']!r}; expected {framework!r}")
    check_consistency(results, labels, class_names)
    return results


# --------------------------------------------------------------------------------------------
# Analysis: pure functions of arrays
# --------------------------------------------------------------------------------------------
def raw_pixels(images: np.ndarray, normalize: dict[str, Any]) -> np.ndarray:
    """Undo preprocess' normalisation: (N, H, W, 1) model inputs -> (N, H, W) pixels in 0..255."""
    pixels = np.asarray(images, dtype=np.float32)[..., 0] * np.float32(normalize["std"]) + np.float32(normalize["mean"])
    return np.clip(pixels, 0.0, 255.0)


def most_confident_mistakes(probabilities: np.ndarray, labels: np.ndarray, limit: int) -> np.ndarray:
    """Indices of up to ``limit`` misclassified images, highest confidence in the wrong answer first."""
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    confidence = probabilities[wrong, predicted[wrong]]
    # Stable sort on the negated confidence: ties keep test-set order, so the figure is reproducible.
    return wrong[np.argsort(-confidence, kind="stable")][:limit]


def disagreement_indices(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Indices of the test images on which two frameworks' predicted classes differ."""
    first, second = np.asarray(first), np.asarray(second)
    if first.shape != second.shape:
        raise ValueError(f"predictions of shapes {first.shape} and {second.shape} cannot be compared")
    return np.flatnonzero(first != second)


def most_confident_disagreements(first: np.ndarray, second: np.ndarray, limit: int) -> np.ndarray:
    """Up to ``limit`` disagreements, those where both frameworks are surest of their answers first."""
    predicted_first, predicted_second = first.argmax(axis=1), second.argmax(axis=1)
    indices = disagreement_indices(predicted_first, predicted_second)
    confidence = first[indices, predicted_first[indices]] + second[indices, predicted_second[indices]]
    return indices[np.argsort(-confidence, kind="stable")][:limit]


def disagreement_summary(labels: np.ndarray, first: np.ndarray, second: np.ndarray) -> dict[str, Any]:
    """How often two frameworks' predicted classes differ, and who was right when they did."""
    indices = disagreement_indices(first, second)
    count = int(labels.shape[0])
    return {
        "test_images": count,
        "count": int(indices.size),
        "agreement_rate": 1.0 - indices.size / count if count else 1.0,
        "first_right": int(np.sum(first[indices] == labels[indices])),
        "second_right": int(np.sum(second[indices] == labels[indices])),
        "neither_right": int(np.sum((first[indices] != labels[indices]) & (second[indices] != labels[indices]))),
    }


def accuracy_axis_floor(percentages: np.ndarray) -> float:
    """Lower y limit (%) that shows the differences between high accuracies without hiding any bar."""
    lowest = float(np.min(percentages))
    if lowest < 50.0:
        return 0.0
    gap = 100.0 - lowest
    step = 1.0 if gap <= 10 else 5.0 if gap <= 25 else 10.0
    # Half the gap again below the lowest bar, so the shortest bar stays clearly visible.
    return max(0.0, math.floor((lowest - max(0.5 * gap, 0.5)) / step) * step)


# --------------------------------------------------------------------------------------------
# The comparison table: one definition serves report.md, summary.json and the tests
# --------------------------------------------------------------------------------------------
def percent(value: float) -> str:
    return f"{100 * value:.2f}%"


def decimals(digits: int) -> Callable[[float], str]:
    return lambda value: f"{value:.{digits}f}"


def whole(value: float) -> str:
    return f"{value:,.0f}"


def seconds_or_not_reached(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.1f}"


def megabytes(value: float) -> str:
    return f"{value / 1e6:.2f}"


@dataclass(frozen=True)
class Quantity:
    key: str  # name in summary.json
    label: str  # row label in report.md, unit included
    source: str  # "evaluation" (metrics/<framework>.json) or "training" (dvclive/<framework>/metrics.json)
    field: str  # key in that file
    text: Callable[[Any], str]  # how the table prints the file's value


QUANTITIES = (
    Quantity("test_accuracy", "Test accuracy", "evaluation", "test_accuracy", percent),
    Quantity("test_loss", "Test loss (cross-entropy)", "evaluation", "test_loss", decimals(4)),
    Quantity("macro_f1", "Macro F1", "evaluation", "macro_f1", decimals(4)),
    Quantity("train_seconds", "Training time (s)", "training", "train_seconds", decimals(1)),
    Quantity("train_images_per_second", "Training throughput (images/s)", "training", "images_per_second", whole),
    Quantity("seconds_to_val_accuracy_98", "Time to 98% validation accuracy (s)", "training",
             "seconds_to_val_accuracy_98", seconds_or_not_reached),
    Quantity("seconds_to_val_accuracy_99", "Time to 99% validation accuracy (s)", "training",
             "seconds_to_val_accuracy_99", seconds_or_not_reached),
    Quantity("inference_images_per_second", "Inference throughput (images/s)", "evaluation",
             "throughput_images_per_second", whole),
    Quantity("latency_ms_median", "Latency, median (ms)", "evaluation", "latency_ms_median", decimals(2)),
    Quantity("latency_ms_p95", "Latency, 95th percentile (ms)", "evaluation", "latency_ms_p95", decimals(2)),
    Quantity("parameters", "Parameters", "evaluation", "parameters", whole),
    Quantity("model_bytes", "Model file size (MB)", "evaluation", "model_bytes", megabytes),
)


def comparison(results: dict[str, FrameworkResults]) -> list[dict[str, Any]]:
    """One row per quantity: its label, each framework's value as read and as printed."""
    rows = []
    for quantity in QUANTITIES:
        values = {framework: getattr(item, quantity.source)[quantity.field] for framework, item in results.items()}
        rows.append({"key": quantity.key, "label": quantity.label, "values": values,
                     "text": {framework: quantity.text(value) for framework, value in values.items()}})
    return rows


def summarize(results: dict[str, FrameworkResults], labels: np.ndarray, meta: dict[str, Any]) -> dict[str, Any]:
    """The content of summary.json: the comparison table and the disagreement counts."""
    (first, first_results), (second, second_results) = results.items()
    counts = disagreement_summary(labels, first_results.predicted, second_results.predicted)
    return {
        "dataset": meta.get("dataset"),
        "test_images": int(labels.shape[0]),
        "class_names": list(meta["class_names"]),
        "devices": {framework: item.training.get("device") for framework, item in results.items()},
        "comparison": comparison(results),
        "disagreements": {
            "test_images": counts["test_images"],
            "count": counts["count"],
            "agreement_rate": counts["agreement_rate"],
            f"{first}_right": counts["first_right"],
            f"{second}_right": counts["second_right"],
            "neither_right": counts["neither_right"],
        },
    }


# --------------------------------------------------------------------------------------------
# Figures: each function returns a matplotlib Figure, drawn from arrays and dicts only
# --------------------------------------------------------------------------------------------
def new_figure(width: float, height: float, dpi: int) -> Figure:
    """A figure drawn by Agg alone: no pyplot, so no global state, nothing to close, no display needed."""
    figure = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def decades_spanned(values: list[float]) -> float:
    positive = [value for value in values if value > 0]
    return math.log10(max(positive) / min(positive)) if positive else 0.0


def plain_log_ticks(axes, decades: float) -> None:
    """Label a log y axis with plain numbers (0.05, not 5x10^-2); fewer labels the more decades it spans."""
    mantissas = (1.0, 2.0, 3.0, 5.0) if decades < 1.5 else (1.0, 3.0) if decades < 3 else (1.0,)
    axes.yaxis.set_major_locator(LogLocator(base=10, subs=mantissas))
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _position: f"{value:g}"))
    axes.yaxis.set_minor_formatter(NullFormatter())


def plot_training_curves(results: dict[str, FrameworkResults], dpi: int) -> Figure:
    """Loss and accuracy per epoch: train solid, validation dashed, one colour per framework."""
    figure = new_figure(11, 4.4, dpi)
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    for item in results.values():
        for split, style in (("train", "-"), ("val", "--")):
            label = f"{item.display_name} {'train' if split == 'train' else 'validation'}"
            loss = item.curves[f"{split}/loss"]
            accuracy = item.curves[f"{split}/accuracy"]
            loss_axes.plot(loss.epochs, loss.values, style, color=item.colour, marker="o", markersize=4,
                           label=label)
            accuracy_axes.plot(accuracy.epochs, 100 * accuracy.values, style, color=item.colour, marker="o",
                               markersize=4)
    # Losses usually fall by an order of magnitude in the first epochs; a log scale keeps the
    # later, closer values apart. Over a narrow range it would leave the axis without labels.
    decades = decades_spanned([value for item in results.values() for split in ("train", "val")
                               for value in item.curves[f"{split}/loss"].values])
    if decades >= 0.5:
        loss_axes.set_yscale("log")
        plain_log_ticks(loss_axes, decades)
    loss_axes.set_title("Cross-entropy loss")
    loss_axes.set_ylabel("loss (log scale)" if decades >= 0.5 else "loss")
    accuracy_axes.set_title("Accuracy")
    accuracy_axes.set_ylabel("accuracy (%)")
    for axes in (loss_axes, accuracy_axes):
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(True, which="major", alpha=0.3)
    figure.suptitle("Training curves (train solid, validation dashed)")
    figure.legend(loc="outside lower center", ncol=4, frameon=False)
    return figure


def plot_confusion_matrices(results: dict[str, FrameworkResults], class_names: list[str], dpi: int) -> Figure:
    """Both confusion matrices side by side on one logarithmic colour scale, counts in the cells."""
    matrices = {framework: np.asarray(item.per_class["confusion"], dtype=np.int64)
                for framework, item in results.items()}
    largest = max(1, max(int(matrix.max()) for matrix in matrices.values()))
    classes = len(class_names)
    # Errors are 1..100 while correct counts are ~1000: on a linear scale every error looks alike.
    norm = LogNorm(vmin=1, vmax=max(largest, 2))
    colourmap = matplotlib.colormaps["viridis"].with_extremes(bad="white")  # zero cells stay blank
    font_size = 8 if classes <= 10 else 6 if classes <= 20 else 0
    long_names = max(len(name) for name in class_names) > 3  # "T-shirt/top" must slant, "7" need not
    side = max(5.5, 0.5 * classes + 1.5)
    figure = new_figure(2 * side + 1.0, side + 0.6, dpi)
    all_axes = figure.subplots(1, len(matrices), sharey=True)
    image = None
    for axes, (framework, matrix) in zip(np.atleast_1d(all_axes), matrices.items()):
        item = results[framework]
        image = axes.imshow(np.ma.masked_equal(matrix, 0), cmap=colourmap, norm=norm)
        if font_size:
            for (row, column), count in np.ndenumerate(matrix):
                if count:
                    # Dark text on the bright end of viridis, white on the dark end.
                    bright = norm(count) > 0.6
                    axes.text(column, row, f"{count}", ha="center", va="center", fontsize=font_size,
                              color="black" if bright else "white")
        axes.set_xticks(range(classes), labels=class_names, rotation=40 if long_names else 0,
                        ha="right" if long_names else "center", rotation_mode="anchor")
        axes.set_yticks(range(classes), labels=class_names)
        axes.set_xlabel("predicted class")
        axes.set_title(f"{item.display_name}: {percent(item.evaluation['test_accuracy'])} correct")
    np.atleast_1d(all_axes)[0].set_ylabel("true class")
    colourbar = figure.colorbar(image, ax=all_axes, shrink=0.8, label="test images (log scale)")
    colourbar.ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _position: f"{value:g}"))
    figure.suptitle(f"Confusion matrices on {int(next(iter(matrices.values())).sum()):,} test images "
                    "(blank cell = 0)")
    return figure


def plot_per_class_accuracy(results: dict[str, FrameworkResults], class_names: list[str], dpi: int) -> Figure:
    """Per-class accuracy (recall) as grouped bars, on an axis zoomed to where the bars differ."""
    classes = len(class_names)
    recalls = {framework: 100 * np.asarray(item.per_class["recall"], dtype=np.float64)
               for framework, item in results.items()}
    floor = accuracy_axis_floor(np.concatenate(list(recalls.values())))
    figure = new_figure(max(9.0, 0.9 * classes + 2), 4.8, dpi)
    axes = figure.subplots()
    width = 0.8 / len(results)
    positions = np.arange(classes)
    for index, (framework, item) in enumerate(results.items()):
        offset = (index - (len(results) - 1) / 2) * width
        axes.bar(positions + offset, recalls[framework] - floor, width, bottom=floor, color=item.colour,
                 label=item.display_name)
        overall = 100 * item.evaluation["test_accuracy"]
        axes.axhline(overall, color=item.colour, linestyle="--", linewidth=1,
                     label=f"{item.display_name} overall ({overall:.2f}%)")
    long_names = max(len(name) for name in class_names) > 5
    axes.set_xticks(positions, labels=class_names, rotation=30 if long_names else 0,
                    ha="right" if long_names else "center", rotation_mode="anchor")
    axes.set_ylim(floor, 100 + 0.03 * (100 - floor))
    axes.set_ylabel("correctly classified (%)")
    axes.set_xlabel("true class")
    axes.grid(True, axis="y", alpha=0.3)
    axes.set_axisbelow(True)
    note = f"; y axis starts at {floor:g}%" if floor > 0 else ""
    axes.set_title(f"Per-class accuracy (recall) on the test set{note}")
    handles, names = axes.get_legend_handles_labels()
    order = sorted(range(len(names)), key=lambda index: "overall" in names[index])  # bars first, stable
    figure.legend([handles[index] for index in order], [names[index] for index in order],
                  loc="outside lower center", ncol=len(names), frameon=False)
    return figure


def draw_image_grid(panel, pixels: np.ndarray, titles: list[str], columns: int, empty_message: str,
                    font_size: float = 8) -> None:
    """Tiles of images with titles on ``panel`` (a figure or subfigure); a message when there are none."""
    if not len(titles):
        axes = panel.subplots()
        axes.set_axis_off()
        axes.text(0.5, 0.5, empty_message, ha="center", va="center", fontsize=11, wrap=True,
                  transform=axes.transAxes)
        return
    rows = math.ceil(len(titles) / columns)
    grid = np.atleast_1d(panel.subplots(rows, columns, squeeze=False)).ravel()
    for axes, image, title in zip(grid, pixels, titles):
        axes.imshow(image, cmap=IMAGE_COLOURMAP, vmin=0, vmax=255, interpolation="nearest")
        axes.set_title(title, fontsize=font_size)
    for axes in grid:
        axes.set_axis_off()


def plot_misclassified(results: dict[str, FrameworkResults], images: np.ndarray, normalize: dict[str, Any],
                       labels: np.ndarray, class_names: list[str], limit: int, dpi: int) -> Figure:
    """Per framework, its most confident mistakes: the true class, its answer and its confidence."""
    chosen_of = {framework: most_confident_mistakes(item.probabilities, labels, limit)
                 for framework, item in results.items()}
    columns = max(1, math.ceil(math.sqrt(limit)))  # a square grid when every slot is used
    rows = math.ceil(max(len(chosen) for chosen in chosen_of.values()) / columns)
    # 1.6 inches a tile: "pred Ankle boot (p=0.96)" at 7.5 points fits without touching its neighbour.
    figure = new_figure(max(8.0, len(results) * columns * 1.6 + 0.5), max(2.5, rows * 1.6 + 0.7), dpi)
    panels = np.atleast_1d(figure.subfigures(1, len(results), wspace=0.04))
    for panel, (framework, item) in zip(panels, results.items()):
        predicted = item.predicted
        total = int(np.sum(predicted != labels))
        chosen = chosen_of[framework]
        titles = [f"true {class_names[labels[index]]}\npred {class_names[predicted[index]]} "
                  f"(p={item.probabilities[index, predicted[index]]:.2f})" for index in chosen]
        if total == 0:
            message = "no misclassified test images"
        else:
            message = f"{total:,} misclassified; none shown (report.misclassified is 0)"
        draw_image_grid(panel, raw_pixels(images[chosen], normalize), titles, columns, message, font_size=7.5)
        shown = f"the {len(chosen)} most confident of " if 0 < len(chosen) < total else ""
        panel.suptitle(f"{item.display_name}: {shown}{total:,} mistakes", color=item.colour, fontweight="bold")
    return figure


def plot_disagreements(results: dict[str, FrameworkResults], images: np.ndarray, normalize: dict[str, Any],
                       labels: np.ndarray, class_names: list[str], limit: int, dpi: int) -> Figure:
    """Test images on which the frameworks' answers differ, with each answer and its confidence."""
    (first, second) = results.values()
    total = disagreement_indices(first.predicted, second.predicted).size
    chosen = most_confident_disagreements(first.probabilities, second.probabilities, limit)
    columns = max(1, min(8, len(chosen)))
    rows = math.ceil(len(chosen) / columns)
    width = max(7.0, columns * 1.55)
    # Height from the tile size (images keep their aspect ratio) plus three title lines per row,
    # so few wide tiles never push their titles into the figure title.
    tile = min(width / columns, 2.2)
    figure = new_figure(width, max(2.5, rows * (tile + 0.6) + 0.5), dpi)
    titles = []
    for index in chosen:
        lines = [f"true {class_names[labels[index]]}"]
        for item in (first, second):
            guess = int(item.predicted[index])
            lines.append(f"{item.display_name}: {class_names[guess]} ({item.probabilities[index, guess]:.2f})")
        titles.append("\n".join(lines))
    if total == 0:
        message = f"The two frameworks agree on all {labels.shape[0]:,} test images."
    else:
        message = f"{total:,} disagreements; none shown (report.disagreements is 0)"
    draw_image_grid(figure, raw_pixels(images[chosen], normalize), titles, columns, message, font_size=7.5)
    shown = f"the {len(chosen)} most confident of " if 0 < len(chosen) < total else ""
    figure.suptitle(f"Test images on which {first.display_name} and {second.display_name} disagree: "
                    f"{shown}{total:,}")
    return figure


def plot_speed_and_size(results: dict[str, FrameworkResults], evaluate_batch_size: int, dpi: int) -> Figure:
    """One small bar panel per speed or size quantity, the value written on each bar as the table prints it."""
    # (title, unit, values of one framework, how the value is printed); latency has two bars per framework.
    panels = (
        ("Training time", "seconds", lambda item: [item.training["train_seconds"]], decimals(1)),
        ("Training throughput", "images / second", lambda item: [item.training["images_per_second"]], whole),
        (f"Inference throughput (batch {evaluate_batch_size})", "images / second",
         lambda item: [item.evaluation["throughput_images_per_second"]], whole),
        ("Latency, one image at a time", "milliseconds",
         lambda item: [item.evaluation["latency_ms_median"], item.evaluation["latency_ms_p95"]], decimals(2)),
        ("Parameters", "count", lambda item: [item.evaluation["parameters"]], whole),
        ("Model file size", "MB (million bytes)", lambda item: [item.evaluation["model_bytes"] / 1e6], decimals(2)),
    )
    figure = new_figure(12, 7, dpi)
    grid = figure.subplots(2, 3).ravel()
    items = list(results.values())
    for axes, (title, unit, values_of, text) in zip(grid, panels):
        groups = len(values_of(items[0]))
        tallest = max(max(values_of(item)) for item in items)
        for index, item in enumerate(items):
            values = values_of(item)
            if groups == 1:  # one bar per framework, named on the x axis
                positions, width = np.array([index]), 0.6
            else:  # one group per statistic, a bar per framework in it
                width = 0.8 / len(items)
                positions = np.arange(groups) + (index - (len(items) - 1) / 2) * width
            bars = axes.bar(positions, values, width, color=item.colour, label=item.display_name)
            axes.bar_label(bars, labels=[text(value) for value in values], padding=2, fontsize=9)
        if groups == 1:
            axes.set_xticks(range(len(items)), labels=[item.display_name for item in items])
        else:
            axes.set_xticks(range(groups), labels=["median", "95th percentile"])
            axes.legend(frameon=False, loc="upper left")
        axes.set_ylim(0, 1.18 * tallest if tallest > 0 else 1)  # room for the labels above the bars
        axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _position: f"{value:,.10g}"))
        axes.set_title(title, fontsize=10)
        axes.set_ylabel(unit)
        axes.grid(True, axis="y", alpha=0.3)
        axes.set_axisbelow(True)
    figure.suptitle("Speed and size (training: the training stage; inference and size: the evaluate stage)")
    return figure


def make_figures(results: dict[str, FrameworkResults], images: np.ndarray, labels: np.ndarray,
                 meta: dict[str, Any], settings: ReportParams, evaluate_batch_size: int) -> dict[str, Figure]:
    """Every figure of the report, keyed by file name."""
    class_names = list(meta["class_names"])
    labels = np.asarray(labels, dtype=np.int64)
    dpi = settings.dpi
    return {
        "training_curves.png": plot_training_curves(results, dpi),
        "confusion_matrices.png": plot_confusion_matrices(results, class_names, dpi),
        "per_class_accuracy.png": plot_per_class_accuracy(results, class_names, dpi),
        "misclassified.png": plot_misclassified(results, images, meta["normalize"], labels, class_names,
                                                settings.misclassified, dpi),
        "disagreements.png": plot_disagreements(results, images, meta["normalize"], labels, class_names,
                                                settings.disagreements, dpi),
        "speed_and_size.png": plot_speed_and_size(results, evaluate_batch_size, dpi),
    }


# --------------------------------------------------------------------------------------------
# report.md
# --------------------------------------------------------------------------------------------
def markdown_cell(text: Any) -> str:
    return str(text).replace("|", "\\|")


def markdown_table(header: list[str], rows: list[list[str]], align: list[str]) -> str:
    lines = ["| " + " | ".join(markdown_cell(cell) for cell in header) + " |",
             "|" + "|".join({"left": ":---", "right": "---:"}[side] for side in align) + "|"]
    lines += ["| " + " | ".join(markdown_cell(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def params_used(params: Params) -> dict[str, Any]:
    """The params that produced the report's numbers (the report stage's own are left out)."""
    return {
        "seed": params.seed,
        "data": {"dataset": params.data.dataset},
        "preprocess": as_dict(params.preprocess),
        "model": as_dict(params.model),
        "train": as_dict(params.train),
        "keras": as_dict(params.keras),
        "torch": as_dict(params.torch),
        "evaluate": as_dict(params.evaluate),
    }


def times(count: int) -> str:
    return f"{count:,} time{'' if count == 1 else 's'}"


def render_markdown(summary: dict[str, Any], results: dict[str, FrameworkResults], params_block: dict[str, Any],
                    evaluate_batch_size: int) -> str:
    """The whole report.md, every number taken from ``summary`` or the input files."""
    names = {framework: item.display_name for framework, item in results.items()}
    frameworks = list(results)
    first, second = frameworks
    class_names = summary["class_names"]
    dataset = DATASET_NAMES.get(summary["dataset"], summary["dataset"] or "custom data")
    devices = ", ".join(f"{names[framework]} `{summary['devices'][framework]}`" for framework in frameworks)
    epochs = ", ".join(f"{names[framework]} {results[framework].training['epochs']}" for framework in frameworks)
    disagreements = summary["disagreements"]
    lines = [
        f"# {' vs '.join(names.values())} on {dataset}",
        "",
        f"Dataset: **{dataset}**, {summary['test_images']:,} test images in {len(class_names)} classes. "
        f"Device: {devices}. Epochs: {epochs}.",
        "",
        "## Comparison",
        "",
        markdown_table(["", *names.values()],
                       [[row["label"], *(row["text"][framework] for framework in frameworks)]
                        for row in summary["comparison"]],
                       ["left"] + ["right"] * len(frameworks)),
        "",
        f"Training time includes validation after each epoch; throughput counts optimisation only. "
        f"Inference throughput is measured at batch size {evaluate_batch_size}, latency one image at a time. "
        "Sizes in MB are 10^6 bytes.",
        "",
        "## Where the frameworks disagree",
        "",
        f"The predicted classes differ on **{disagreements['count']:,}** of {disagreements['test_images']:,} "
        f"test images: agreement rate {percent(disagreements['agreement_rate'])}. On those, "
        f"{names[first]} is right {times(disagreements[f'{first}_right'])}, {names[second]} "
        f"{times(disagreements[f'{second}_right'])}, and neither {times(disagreements['neither_right'])}.",
        "",
        "![Test images on which the frameworks disagree](disagreements.png)",
        "",
        "## Training",
        "",
        "![Loss and accuracy per epoch, both frameworks](training_curves.png)",
        "",
        "## Errors",
        "",
        "![Confusion matrices](confusion_matrices.png)",
        "",
        "![Per-class accuracy](per_class_accuracy.png)",
        "",
        "![Most confident misclassified test images](misclassified.png)",
        "",
        "## Speed and size",
        "",
        "![Training and inference speed, parameters and model size](speed_and_size.png)",
        "",
        "## Per class",
        "",
    ]
    header = ["Class", "Test images"]
    for framework in frameworks:
        header += [f"{names[framework]} precision", f"{names[framework]} recall", f"{names[framework]} F1"]
    rows = []
    support = results[first].per_class["support"]
    for index, name in enumerate(class_names):
        row = [name, f"{int(support[index]):,}"]
        for framework in frameworks:
            per_class = results[framework].per_class
            row += [percent(per_class["precision"][index]), percent(per_class["recall"][index]),
                    f"{per_class['f1'][index]:.4f}"]
        rows.append(row)
    lines += [markdown_table(header, rows, ["left", "right"] + ["right"] * 3 * len(frameworks)), ""]
    lines += [
        "## Parameters",
        "",
        "The `params.yaml` values that produced these results:",
        "",
        "```yaml",
        yaml.safe_dump(params_block, sort_keys=False, default_flow_style=False).rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Stage
# --------------------------------------------------------------------------------------------
def save_figure(figure: Figure, path: Path) -> None:
    # No metadata beyond the format's: the same inputs give the same bytes, so git diffs stay quiet.
    figure.savefig(path, format="png", metadata={"Software": None})


def main() -> None:
    params = load_params()
    data = prepared.load_prepared(PREPARED_DIR, splits=("test",))
    test = data.splits["test"]
    labels = np.asarray(test.labels, dtype=np.int64)
    results = {framework: load_results(framework, labels, data.class_names) for framework in FRAMEWORKS}
    summary = summarize(results, labels, data.meta)
    figures = make_figures(results, test.images, labels, data.meta, params.report, params.evaluate.batch_size)
    markdown = render_markdown(summary, results, params_used(params), params.evaluate.batch_size)
    with atomic.atomic_directory(REPORTS_DIR) as temporary:
        for name, figure in figures.items():
            save_figure(figure, temporary / name)
        (temporary / "report.md").write_text(markdown, encoding="utf-8")
        (temporary / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    disagreements = summary["disagreements"]
    log.info("wrote %s: %d figures, report.md, summary.json; %s; frameworks disagree on %d of %d test images",
             REPORTS_DIR, len(figures), ", ".join(f"{item.display_name} {percent(item.evaluation['test_accuracy'])}"
                                                  for item in results.values()),
             disagreements["count"], disagreements["test_images"])


if __name__ == "__main__":
    run_stage(main, "report")
