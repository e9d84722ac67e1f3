"""The report's figures. Each is one function of the ``Context`` returning a matplotlib Figure,
listed once in ``FIGURES`` (file name, function, caption): adding a figure is one function plus
one entry. Figures size themselves to the number of frameworks and pool over seeds."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from stages import backends
from stages.common.params import ReportParams
from stages.report.compare import Comparison
from stages.report.inputs import Replicate
from stages.report.measures import METRICS

# Colour-blind-safe, distinct for up to 8 frameworks (Okabe-Ito), in the order of params.yaml's frameworks.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")


@dataclass(frozen=True)
class Context:
    results: dict[str, list[Replicate]]
    comparison: Comparison
    images: np.ndarray  # test images as the model sees them (N, H, W, 1)
    labels: np.ndarray  # int64
    meta: dict[str, Any]
    settings: ReportParams

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    def colour(self, framework: str) -> str:
        return PALETTE[list(self.results).index(framework) % len(PALETTE)]

    def pooled_confusion(self, framework: str) -> np.ndarray:
        return np.sum([np.asarray(r.per_class.confusion, np.int64) for r in self.results[framework]], axis=0)


def new_figure(width: float, height: float, dpi: int) -> Figure:
    """A figure drawn by Agg alone: no pyplot, so no global state, nothing to close, no display needed."""
    figure = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def raw_pixels(images: np.ndarray, normalize: dict[str, Any]) -> np.ndarray:
    """Undo preprocess' normalisation: (N, H, W, 1) model inputs -> (N, H, W) pixels in 0..255."""
    pixels = np.asarray(images, dtype=np.float32)[..., 0] * np.float32(normalize["std"]) + np.float32(normalize["mean"])
    return np.clip(pixels, 0.0, 255.0)


def stroke_colourmap(pixels: np.ndarray) -> str:
    """Draw strokes dark on a light background whichever way the dataset stores them: the most
    common (background) value decides whether grey levels are inverted."""
    return "gray_r" if float(np.median(pixels)) < 128 else "gray"


def accuracy_axis_floor(percentages: np.ndarray) -> float:
    """Lower y limit (%) that shows the differences between high accuracies without hiding any bar."""
    lowest = float(np.min(percentages))
    if lowest < 50.0:
        return 0.0
    gap = 100.0 - lowest
    step = 1.0 if gap <= 10 else 5.0 if gap <= 25 else 10.0
    return max(0.0, math.floor((lowest - max(0.5 * gap, 0.5)) / step) * step)


# --------------------------------------------------------------------------------------------
def plot_metrics_over_seeds(context: Context) -> Figure:
    """Each compared metric: every seed as a point, the mean with its 95% CI as an error bar (for
    times, throughputs and latencies the geometric mean and the log-scale interval: never below 0)."""
    frameworks = list(context.results)
    columns = 4
    rows = math.ceil(len(METRICS) / columns)
    figure = new_figure(max(12.0, 1.1 * len(frameworks) * columns), 3.3 * rows + 0.6, context.settings.dpi)
    grid = figure.subplots(rows, columns, squeeze=False).ravel()
    for axes, metric in zip(grid, METRICS):
        scale = 100.0 if metric.key == "test_accuracy" else 1.0
        for index, framework in enumerate(frameworks):
            spread = context.comparison.spreads[framework][metric.key]
            values = scale * np.asarray(spread.values)
            offsets = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else np.zeros(1)
            axes.scatter(index + offsets, values, s=14, color=context.colour(framework), alpha=0.6, zorder=3)
            if spread.ci is not None:
                error = [[scale * (spread.mean - spread.ci.low)], [scale * (spread.ci.high - spread.mean)]]
                axes.errorbar([index + 0.3], [scale * spread.mean], yerr=error, fmt="o", color="black", capsize=4,
                              markersize=4, zorder=4)
            else:
                axes.plot([index + 0.3], [scale * spread.mean], "o", color="black", markersize=4)
        axes.set_xticks(range(len(frameworks)), labels=[backends.label(name) for name in frameworks])
        axes.set_xlim(-0.5, len(frameworks) - 0.3)
        axes.set_title(metric.label.replace("Test accuracy", "Test accuracy (%)"), fontsize=9)
        axes.grid(True, axis="y", alpha=0.3)
    for axes in grid[len(METRICS):]:
        axes.set_axis_off()
    interval = ("mean and 95% CI over seeds (black; speeds: geometric mean, log-scale CI)" if context.comparison.n > 1
                else "one seed: no interval")
    figure.suptitle(f"Every metric, {context.comparison.n} seed(s) per framework: one point per seed; {interval}")
    return figure


def plot_training_curves(context: Context) -> Figure:
    """Loss and accuracy per epoch: mean over seeds, a band from the lowest to the highest seed."""
    figure = new_figure(11, 4.4, context.settings.dpi)
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    losses = []
    for framework, items in context.results.items():
        colour = context.colour(framework)
        for split, style in (("train", "-"), ("val", "--")):
            label = f"{backends.label(framework)} {'train' if split == 'train' else 'validation'}"
            for axes, name, scale in ((loss_axes, "loss", 1.0), (accuracy_axes, "accuracy", 100.0)):
                curves = [r.curves[f"{split}/{name}"] for r in items]
                length = min(len(curve.values) for curve in curves)
                values = scale * np.array([curve.values[:length] for curve in curves])
                epochs = curves[0].epochs[:length]
                axes.plot(epochs, values.mean(axis=0), style, color=colour, marker="o", markersize=3,
                          label=label if name == "loss" else None)
                if len(curves) > 1:
                    axes.fill_between(epochs, values.min(axis=0), values.max(axis=0), color=colour, alpha=0.15)
                if name == "loss":
                    losses.extend(values.ravel().tolist())
    positive = [value for value in losses if value > 0]
    decades = math.log10(max(positive) / min(positive)) if positive else 0.0
    if decades >= 0.5:
        loss_axes.set_yscale("log")
        loss_axes.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0) if decades < 1.5 else (1.0,)))
        loss_axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _position: f"{value:g}"))
        loss_axes.yaxis.set_minor_formatter(NullFormatter())
    loss_axes.set_title("Cross-entropy loss")
    loss_axes.set_ylabel("loss (log scale)" if decades >= 0.5 else "loss")
    accuracy_axes.set_title("Accuracy")
    accuracy_axes.set_ylabel("accuracy (%)")
    for axes in (loss_axes, accuracy_axes):
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(True, which="major", alpha=0.3)
    band = "; band: lowest to highest seed" if context.comparison.n > 1 else ""
    figure.suptitle(f"Training curves, mean over {context.comparison.n} seed(s) (train solid, validation dashed)"
                    f"{band}")
    figure.legend(loc="outside lower center", ncol=4, frameon=False)
    return figure


def plot_confusion_matrices(context: Context) -> Figure:
    """Each framework's confusion matrix summed over seeds, on one logarithmic colour scale."""
    frameworks = list(context.results)
    matrices = {framework: context.pooled_confusion(framework) for framework in frameworks}
    class_names = context.class_names
    classes = len(class_names)
    norm = LogNorm(vmin=1, vmax=max(2, max(int(matrix.max()) for matrix in matrices.values())))
    colourmap = matplotlib.colormaps["viridis"].with_extremes(bad="white")
    font_size = 7 if classes <= 10 else 5 if classes <= 20 else 0
    long_names = max(len(name) for name in class_names) > 3
    side = max(4.5, 0.45 * classes + 1.5)
    figure = new_figure(len(frameworks) * side + 1.0, side + 0.6, context.settings.dpi)
    all_axes = np.atleast_1d(figure.subplots(1, len(frameworks), sharey=True))
    image: Any = None
    for axes, framework in zip(all_axes, frameworks):
        matrix = matrices[framework]
        image = axes.imshow(np.ma.masked_equal(matrix, 0), cmap=colourmap, norm=norm)
        if font_size:
            for (row, column), count in np.ndenumerate(matrix):
                if count:
                    axes.text(column, row, f"{count}", ha="center", va="center", fontsize=font_size,
                              color="black" if norm(count) > 0.6 else "white")
        axes.set_xticks(range(classes), labels=class_names, rotation=40 if long_names else 0,
                        ha="right" if long_names else "center", rotation_mode="anchor")
        axes.set_yticks(range(classes), labels=class_names)
        axes.set_xlabel("predicted class")
        correct = np.trace(matrix) / max(1, matrix.sum())
        axes.set_title(f"{backends.label(framework)}: {100 * correct:.2f}% correct")
    all_axes[0].set_ylabel("true class")
    colourbar = figure.colorbar(image, ax=all_axes, shrink=0.8, label="test images, all seeds (log scale)")
    colourbar.ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _position: f"{value:g}"))
    figure.suptitle(f"Confusion matrices summed over {context.comparison.n} seed(s) x "
                    f"{context.comparison.test_images:,} test images (blank cell = 0)")
    return figure


def plot_per_class_accuracy(context: Context) -> Figure:
    """Per-class recall, mean over seeds as bars, every seed as a point."""
    class_names = context.class_names
    frameworks = list(context.results)
    recalls = {framework: 100 * np.array([r.per_class.recall for r in items]) for framework, items
               in context.results.items()}
    floor = accuracy_axis_floor(np.concatenate([values.ravel() for values in recalls.values()]))
    figure = new_figure(max(9.0, 0.25 * len(frameworks) * len(class_names) + 3), 4.8, context.settings.dpi)
    axes = figure.subplots()
    width = 0.8 / len(frameworks)
    positions = np.arange(len(class_names))
    for index, framework in enumerate(frameworks):
        offset = (index - (len(frameworks) - 1) / 2) * width
        values = recalls[framework]
        axes.bar(positions + offset, values.mean(axis=0) - floor, width, bottom=floor,
                 color=context.colour(framework), label=backends.label(framework), alpha=0.85)
        for row in values:
            axes.scatter(positions + offset, row, s=6, color="black", zorder=3)
    long_names = max(len(name) for name in class_names) > 5
    axes.set_xticks(positions, labels=class_names, rotation=30 if long_names else 0,
                    ha="right" if long_names else "center", rotation_mode="anchor")
    axes.set_ylim(floor, 100 + 0.03 * (100 - floor))
    axes.set_ylabel("correctly classified (%)")
    axes.set_xlabel("true class")
    axes.grid(True, axis="y", alpha=0.3)
    axes.set_axisbelow(True)
    note = f"; y axis starts at {floor:g}%" if floor > 0 else ""
    axes.set_title(f"Per-class accuracy (recall): bars are the mean over seeds, dots single seeds{note}")
    figure.legend(loc="outside lower center", ncol=len(frameworks), frameon=False)
    return figure


def draw_image_grid(panel: Any, pixels: np.ndarray, titles: list[str], columns: int, empty_message: str,
                    colourmap: str) -> None:
    """Tiles of images with titles on ``panel`` (a figure or subfigure); a message when there are none."""
    if not titles:
        axes = panel.subplots()
        axes.set_axis_off()
        axes.text(0.5, 0.5, empty_message, ha="center", va="center", fontsize=10, transform=axes.transAxes)
        return
    rows = math.ceil(len(titles) / columns)
    grid = np.atleast_1d(panel.subplots(rows, columns, squeeze=False)).ravel()
    for axes, image, title in zip(grid, pixels, titles):
        axes.imshow(image, cmap=colourmap, vmin=0, vmax=255, interpolation="nearest")
        axes.set_title(title, fontsize=7)
    for axes in grid:
        axes.set_axis_off()


def _ranked(counts: np.ndarray, confidence: np.ndarray, limit: int) -> np.ndarray:
    """Indices with a non-zero count, most seeds first, then highest confidence; stable for ties."""
    candidates = np.flatnonzero(counts > 0)
    order = np.lexsort((-confidence[candidates], -counts[candidates]))
    return candidates[order][:limit]


def _grid_height(count: int, columns: int, tile: float, title: float) -> float:
    """Inches for a panel of ``count`` tiles in rows of ``columns`` (a message line when empty)."""
    return math.ceil(count / columns) * tile + title if count else 0.9


def plot_misclassified(context: Context) -> Figure:
    """Per framework, the test images it gets wrong in the most seeds."""
    limit, names, n = context.settings.misclassified, context.class_names, context.comparison.n
    columns = max(1, math.ceil(math.sqrt(limit))) if limit else 1
    pixels = raw_pixels(context.images, context.meta["normalize"])
    colourmap = stroke_colourmap(pixels)
    panels_data = []
    for framework, items in context.results.items():
        wrong = np.sum([r.predicted != context.labels for r in items], axis=0)
        mean = np.mean([r.probabilities for r in items], axis=0)
        predicted = mean.argmax(axis=1)
        chosen = _ranked(wrong, mean[np.arange(len(predicted)), predicted], limit)
        panels_data.append((framework, wrong, predicted, chosen))
    heights = [_grid_height(len(chosen), columns, 1.5, 0.7) for *_, chosen in panels_data]
    figure = new_figure(max(6.0, columns * 1.5 + 0.5), sum(heights), context.settings.dpi)
    panels = np.atleast_1d(figure.subfigures(len(panels_data), 1, height_ratios=heights))  # type: ignore[arg-type]
    for panel, (framework, wrong, predicted, chosen) in zip(panels, panels_data):
        titles = [f"true {names[context.labels[i]]}, pred {names[predicted[i]]}\nwrong in {wrong[i]}/{n} seeds"
                  for i in chosen]
        total = int(np.sum(wrong > 0))
        draw_image_grid(panel, pixels[chosen], titles, columns,
                        "no misclassified test images" if total == 0 else "none shown (report.misclassified is 0)",
                        colourmap)
        panel.suptitle(f"{backends.label(framework)}: {total:,} test images wrong in at least one seed",
                       color=context.colour(framework), fontweight="bold", fontsize=10)
    return figure


def answers_across_seeds(predicted: np.ndarray, names: list[str]) -> str:
    """One framework's answers on one image, seed by seed, e.g. "7, 7, 1" (counted beyond 6 seeds: "7 x5; 1 x4")."""
    if len(predicted) <= 6:
        return ", ".join(names[int(answer)] for answer in predicted)
    values, counts = np.unique(predicted, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    return "; ".join(f"{names[int(values[i])]} x{counts[i]}" for i in order)


def plot_disagreements(context: Context) -> Figure:
    """For every pair of frameworks, the test images on which they disagree in the most seeds, each
    labelled with both frameworks' answers in every seed (in the seeds' order), not a mean over seeds."""
    limit, names, n = context.settings.disagreements, context.class_names, context.comparison.n
    pixels = raw_pixels(context.images, context.meta["normalize"])
    colourmap = stroke_colourmap(pixels)
    columns = max(1, min(8, limit))
    panels_data = []
    for pair in context.comparison.pairs:
        first = [context.results[pair.first][context.comparison.seeds.index(seed)] for seed in pair.seeds]
        second = [context.results[pair.second][context.comparison.seeds.index(seed)] for seed in pair.seeds]
        differ = np.sum([a.predicted != b.predicted for a, b in zip(first, second)], axis=0)
        answers_first = np.array([r.predicted for r in first])  # (seeds, images)
        answers_second = np.array([r.predicted for r in second])
        rows = np.arange(answers_first.shape[1])
        confidence = (np.mean([r.probabilities[rows, r.predicted] for r in first], axis=0)
                      + np.mean([r.probabilities[rows, r.predicted] for r in second], axis=0))
        chosen = _ranked(differ, confidence, limit)
        panels_data.append((pair, differ, answers_first, answers_second, chosen))
    heights = [_grid_height(len(chosen), columns, 1.75, 0.8) for *_, chosen in panels_data] or [0.9]
    figure = new_figure(max(7.0, columns * 1.45), sum(heights), context.settings.dpi)
    panels = np.atleast_1d(figure.subfigures(len(heights), 1, height_ratios=heights))  # type: ignore[arg-type]
    if not panels_data:
        draw_image_grid(panels[0], pixels[:0], [], 1, "only one framework: nothing to compare", colourmap)
    for panel, (pair, differ, answers_first, answers_second, chosen) in zip(panels, panels_data):
        label_first, label_second = pair.first_label, pair.second_label
        titles = [f"true {names[context.labels[i]]} ({differ[i]}/{n} differ)\n"
                  f"{label_first}: {answers_across_seeds(answers_first[:, i], names)}\n"
                  f"{label_second}: {answers_across_seeds(answers_second[:, i], names)}" for i in chosen]
        total = int(np.sum(differ > 0))
        message = (f"{label_first} and {label_second} agree on every test image in every seed" if total == 0
                   else "none shown (report.disagreements is 0)")
        draw_image_grid(panel, pixels[chosen], titles, columns, message, colourmap)
        seeds = ", ".join(str(seed) for seed in pair.seeds)
        panel.suptitle(f"{label_first} vs {label_second}: {total:,} test images with different answers in at "
                       f"least one seed (most frequent first)\nunder each image: each framework's answer in "
                       f"seed {seeds}, in that order", fontsize=9)
    return figure


@dataclass(frozen=True)
class FigureSpec:
    file: str
    draw: Callable[[Context], Figure]
    caption: str


FIGURES = (
    FigureSpec("metrics_over_seeds.png", plot_metrics_over_seeds, "Every metric over seeds, with 95% CIs"),
    FigureSpec("training_curves.png", plot_training_curves, "Loss and accuracy per epoch, mean over seeds"),
    FigureSpec("confusion_matrices.png", plot_confusion_matrices, "Confusion matrices, pooled over seeds"),
    FigureSpec("per_class_accuracy.png", plot_per_class_accuracy, "Per-class accuracy"),
    FigureSpec("misclassified.png", plot_misclassified, "Test images misclassified in the most seeds"),
    FigureSpec("disagreements.png", plot_disagreements,
               "Test images on which frameworks disagree, with each framework's answer in every seed"),
)


def save_figure(figure: Figure, path: Any) -> None:
    # No metadata beyond the format's: the same inputs give the same bytes, so git diffs stay quiet.
    figure.savefig(path, format="png", metadata={"Software": None})
