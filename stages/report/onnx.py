"""The report's ONNX Runtime column (issue 33, docs/onnx.md): each framework's trained replicates,
exported to ONNX by the framework's own route (stages/export), run on one neutral runtime.

Per arm, over its seeds: how closely the export computes what the framework computes (the largest
absolute difference in class probabilities, the share of test images with the same predicted class,
accuracy on ONNX Runtime), ONNX Runtime's inference (throughput at ``evaluate.batch_size``, single-image
latency, on the log scale as every speed in the report), and ONNX Runtime against the framework's own
inference, seed by seed: ``stats.paired_ratio``, the report's geometric-mean ratio with its t interval
on the log ratios. A framework without a route keeps its row, which says "no route" and why.

The section is descriptive: its ratios carry intervals, and no verdict or Holm-adjusted p-value rests
on them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from stages import backends
from stages.common.schemas import OnnxMetrics
from stages.report import stats
from stages.report.inputs import Replicate
from stages.report.measures import fixed, percent

HEADING = "## ONNX Runtime"
TUNED_HEADING = "### ONNX Runtime, tuned arms"
NO_ROUTE = "no route"

Table = Callable[[Sequence[str], Sequence[Sequence[str]], Sequence[str]], str]
SpreadCell = Callable[[stats.Spread, Any], str]


@dataclass(frozen=True)
class Exported:
    """One arm's exports over its seeds; ``no_route`` (the exporter's reason) where there is none."""

    arm: str
    label: str
    route: str
    seeds: tuple[int, ...]
    no_route: str | None
    max_abs_probability_difference: float | None = None  # the largest over every seed
    same_class: stats.Spread | None = None  # share of test images classed as by the framework
    different_class_images: int | None = None  # summed over seeds
    test_images: int = 0
    accuracy: stats.Spread | None = None  # on ONNX Runtime
    throughput: stats.Spread | None = None  # images/s at evaluate.batch_size, log scale
    latency: stats.Spread | None = None  # ms, one image, median, log scale
    throughput_ratio: stats.Paired | None = None  # ONNX Runtime / the framework's own inference
    latency_ratio: stats.Paired | None = None


def summarise(arm: str, replicates: Sequence[Replicate], exports: Sequence[OnnxMetrics]) -> Exported:
    """One arm: ``replicates`` and ``exports`` of the same seeds, in the same order."""
    seeds = tuple(replicate.seed for replicate in replicates)
    framework = replicates[0].framework
    label = backends.label(framework) + ("" if arm == framework else f" ({arm.removeprefix(framework + '-')})")
    route = exports[0].route
    failed = [(seed, export.error) for seed, export in zip(seeds, exports) if export.error is not None]
    if failed:
        reasons = list(dict.fromkeys(reason for _, reason in failed))
        where = "" if len(failed) == len(seeds) else f" (seed {', '.join(str(seed) for seed, _ in failed)})"
        return Exported(arm, label, route, seeds, "; ".join(reasons) + where)

    def figures(name: str) -> list[float]:
        return [float(getattr(export, name)) for export in exports]

    return Exported(
        arm, label, route, seeds, None,
        max_abs_probability_difference=max(figures("max_abs_probability_difference")),
        same_class=stats.over_seeds(figures("same_class_share")),
        different_class_images=int(sum(figures("different_class_images"))),
        test_images=exports[0].test_images,
        accuracy=stats.over_seeds(figures("test_accuracy")),
        throughput=stats.over_seeds_log(figures("throughput_images_per_second")),
        latency=stats.over_seeds_log(figures("latency_ms_median")),
        throughput_ratio=stats.paired_ratio(figures("throughput_images_per_second"),
                                            [r.evaluation.throughput_images_per_second for r in replicates]),
        latency_ratio=stats.paired_ratio(figures("latency_ms_median"),
                                         [r.evaluation.latency_ms_median for r in replicates]))


def summarise_all(results: dict[str, list[Replicate]], exports: dict[str, list[OnnxMetrics]]) -> list[Exported]:
    """Every arm of ``results`` (one tuning level), in its order."""
    return [summarise(arm, items, exports[arm]) for arm, items in results.items()]


def ratio_cell(paired: stats.Paired | None) -> str:
    if paired is None:
        return NO_ROUTE
    if paired.ci is None:
        return f"{paired.estimate:.3f}x (needs 2+ seeds for an interval)"
    return f"{paired.estimate:.3f}x [{paired.ci.low:.3f}x, {paired.ci.high:.3f}x]"


def route_cell(item: Exported) -> str:
    name = f"`{item.route}`"
    return name if item.no_route is None else f"{NO_ROUTE}: {item.no_route}"


def agreement_cell(item: Exported) -> str:
    if item.same_class is None or item.different_class_images is None:
        return NO_ROUTE
    total = item.test_images * len(item.seeds)
    differ = item.different_class_images
    return (f"{percent(item.same_class.mean)} ({differ:,} of {total:,} image-seeds differ"
            f"{'' if len(item.seeds) == 1 else f', {len(item.seeds)} seeds'})")


def table_rows(items: Sequence[Exported], spread_cell: SpreadCell) -> list[list[str]]:
    def spread(value: stats.Spread | None, text: Callable[[float], str]) -> str:
        return NO_ROUTE if value is None else spread_cell(value, text)

    def largest(item: Exported) -> str:
        value = item.max_abs_probability_difference
        return NO_ROUTE if value is None else f"{value:.2g}"

    return [
        ["Export route", *(route_cell(item) for item in items)],
        ["Largest probability difference vs the framework", *(largest(item) for item in items)],
        ["Same predicted class as the framework", *(agreement_cell(item) for item in items)],
        ["Test accuracy on ONNX Runtime", *(spread(item.accuracy, percent) for item in items)],
        ["ONNX Runtime inference throughput (images/s)", *(spread(item.throughput, fixed(0)) for item in items)],
        ["ONNX Runtime latency, one image, median (ms)", *(spread(item.latency, fixed(3)) for item in items)],
        ["Inference throughput, ONNX Runtime / framework", *(ratio_cell(item.throughput_ratio) for item in items)],
        ["Latency, ONNX Runtime / framework", *(ratio_cell(item.latency_ratio) for item in items)],
    ]


def section(stock: Sequence[Exported], tuned: Sequence[Exported], batch_size: int, table: Table,
            spread_cell: SpreadCell) -> list[str]:
    """The report's ONNX Runtime section: one table for the stock arms, one for the tuned arms."""
    if not stock:
        return []
    seeds = len(stock[0].seeds)
    lines = [HEADING, "",
             "Each trained replicate exported to ONNX by its framework's own route and run on ONNX Runtime (CPU, "
             "ONNX Runtime's default options, the framework's threads), over the whole test set "
             "(docs/onnx.md in the project). *Largest probability difference*: the largest absolute "
             "difference in class probabilities from the framework's own predictions, over every image and seed; "
             "*same predicted class*: mean share over seeds. ONNX Runtime's throughput (batch size "
             f"{batch_size}) and latency are timed as the framework's own inference is, on the log scale: geometric "
             f"mean ×/÷ geometric standard deviation [95% CI over {seeds} seed(s)]. *ONNX Runtime / framework*: "
             "per seed, ONNX Runtime's figure over the framework's own inference of the same trained model, as a "
             "geometric mean over seeds [95% CI: t interval on the log ratios, training randomness across seeds, "
             "timings of one sitting]: a throughput ratio above 1 and a latency ratio below 1 mean ONNX Runtime "
             "is faster. Descriptive: no verdict or Holm-adjusted p-value rests on it.", "",
             _table(stock, table, spread_cell), ""]
    if tuned:
        lines += [TUNED_HEADING, "",
                  "The tuned arms' exports, on the same ONNX Runtime defaults (ONNX Runtime has no tuned switch "
                  "here, docs/onnx.md), against each tuned arm's own inference:", "",
                  _table(tuned, table, spread_cell), ""]
    return lines


def _table(items: Sequence[Exported], table: Table, spread_cell: SpreadCell) -> str:
    return table(["", *(item.label for item in items)], table_rows(items, spread_cell),
                 ["left"] + ["right"] * len(items))


def _rounded(value: float) -> float:
    return float(f"{value:.6g}")


def summary_metrics(items: Sequence[Exported]) -> dict[str, float]:
    """Flat numbers for reports/metrics.json, ``onnx.<arm>.<figure>`` (the report passes the stock arms,
    the primary comparison); an arm without a route has none."""
    flat: dict[str, float] = {}
    for item in items:
        if (item.no_route is not None or item.same_class is None or item.accuracy is None or item.throughput is None
                or item.latency is None):
            continue
        prefix = f"onnx.{item.arm}."
        flat[prefix + "max_abs_probability_difference"] = _rounded(item.max_abs_probability_difference or 0.0)
        flat[prefix + "same_class_share"] = _rounded(item.same_class.mean)
        flat[prefix + "test_accuracy"] = _rounded(item.accuracy.mean)
        flat[prefix + "throughput_images_per_second"] = _rounded(item.throughput.mean)
        flat[prefix + "latency_ms"] = _rounded(item.latency.mean)
        for key, paired in (("throughput_ratio", item.throughput_ratio), ("latency_ratio", item.latency_ratio)):
            if paired is None:
                continue
            flat[prefix + key] = _rounded(paired.estimate)
            if paired.ci is not None:
                flat[prefix + key + "_ci_low"] = _rounded(paired.ci.low)
                flat[prefix + key + "_ci_high"] = _rounded(paired.ci.high)
    return flat
