"""The comparison: per framework, each metric over seeds; per pair of frameworks, paired
differences (quality), paired ratios (speed) and McNemar tests (predictions), with one plain
sentence each that claims only what the intervals support.

``METRICS`` is the one definition of what is compared; the Markdown table, the figures, the
top-level ``reports/metrics.json`` and the tests all read it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from stages import backends
from stages.report import stats
from stages.report.inputs import Replicate


def percent(value: float) -> str:
    return f"{100 * value:.2f}%"


def fixed(digits: int) -> Callable[[float], str]:
    return lambda value: f"{value:,.{digits}f}"


@dataclass(frozen=True)
class Metric:
    key: str  # name in reports/metrics.json
    label: str  # row label, unit included
    value: Callable[[Replicate], float]
    compare: Literal["difference", "ratio"]  # quality: A - B; speed: A / B
    higher_is_better: bool
    text: Callable[[float], str]
    noun: str  # in sentences: "test accuracy", "training time"


METRICS = (
    Metric("test_accuracy", "Test accuracy", lambda r: r.evaluation.test_accuracy, "difference", True, percent,
           "test accuracy"),
    Metric("test_loss", "Test loss (cross-entropy)", lambda r: r.evaluation.test_loss, "difference", False,
           fixed(4), "test loss"),
    Metric("macro_f1", "Macro F1", lambda r: r.evaluation.macro_f1, "difference", True, fixed(4), "macro F1"),
    Metric("train_seconds", "Training time (s)", lambda r: r.training.train_seconds, "ratio", False, fixed(1),
           "training time"),
    Metric("train_images_per_second", "Training throughput (images/s)", lambda r: r.training.images_per_second,
           "ratio", True, fixed(0), "training throughput"),
    Metric("inference_images_per_second", "Inference throughput (images/s)",
           lambda r: r.evaluation.throughput_images_per_second, "ratio", True, fixed(0), "inference throughput"),
    Metric("latency_ms", "Latency, one image, median (ms)", lambda r: r.evaluation.latency_ms_median, "ratio", False,
           fixed(3), "single-image latency"),
)
METRIC = {metric.key: metric for metric in METRICS}


@dataclass(frozen=True)
class PairResult:
    first: str
    second: str
    paired: dict[str, stats.Paired]  # by metric key
    mcnemar: list[stats.McNemar]  # one per seed
    disagreements: list[int]  # test images with different predicted classes, per seed


@dataclass(frozen=True)
class Comparison:
    frameworks: list[str]
    seeds: list[int]
    test_images: int
    spreads: dict[str, dict[str, stats.Spread]]  # framework -> metric key -> over seeds
    wilson: dict[str, list[stats.Interval]]  # framework -> per seed, test accuracy
    pairs: list[PairResult]
    inference_noise: float  # median relative spread (max - min) / median of repeated inference passes

    @property
    def n(self) -> int:
        return len(self.seeds)


def inference_noise(results: dict[str, list[Replicate]]) -> float:
    spreads = [(r.evaluation.throughput_images_per_second_max - r.evaluation.throughput_images_per_second_min)
               / r.evaluation.throughput_images_per_second for items in results.values() for r in items]
    return float(np.median(spreads))


def compare(results: dict[str, list[Replicate]], labels: np.ndarray) -> Comparison:
    frameworks = list(results)
    seeds = [replicate.seed for replicate in results[frameworks[0]]]
    spreads = {framework: {metric.key: stats.over_seeds([metric.value(r) for r in items]) for metric in METRICS}
               for framework, items in results.items()}
    count = int(labels.shape[0])
    wilson = {framework: [stats.wilson(int(round(r.evaluation.test_accuracy * count)), count) for r in items]
              for framework, items in results.items()}
    pairs = []
    for first, second in itertools.combinations(frameworks, 2):
        a_items, b_items = results[first], results[second]
        paired = {}
        for metric in METRICS:
            a, b = [metric.value(r) for r in a_items], [metric.value(r) for r in b_items]
            paired[metric.key] = (stats.paired_difference(a, b) if metric.compare == "difference"
                                  else stats.paired_ratio(a, b))
        pairs.append(PairResult(
            first, second, paired,
            [stats.mcnemar(a.predicted == labels, b.predicted == labels) for a, b in zip(a_items, b_items)],
            [int(np.sum(a.predicted != b.predicted)) for a, b in zip(a_items, b_items)]))
    return Comparison(frameworks, seeds, count, spreads, wilson, pairs, inference_noise(results))


# --------------------------------------------------------------------------------------------
# Sentences
# --------------------------------------------------------------------------------------------
def _seeds(n: int) -> str:
    return f"{n} seed{'s' if n != 1 else ''}"


def difference_sentence(metric: Metric, pair: PairResult, n: int) -> str:
    first, second = backends.label(pair.first), backends.label(pair.second)
    result = pair.paired[metric.key]
    scale, unit = (100.0, " pp") if metric.text is percent else (1.0, "")
    estimate = f"{scale * result.estimate:+.{2 if scale == 100 else 4}f}{unit}"
    if result.ci is None:
        return (f"{metric.noun.capitalize()}, {first} minus {second}: {estimate} from one seed; an interval "
                "over training randomness needs at least two seeds.")
    digits = 2 if scale == 100 else 4
    interval = f"95% CI {scale * result.ci.low:+.{digits}f} to {scale * result.ci.high:+.{digits}f}{unit}"
    detail = f"{estimate}, {interval} across {_seeds(n)}, paired t-test p = {result.p_value:.2g}"
    if not result.significant:
        return f"No significant difference in {metric.noun} between {first} and {second}: {detail}."
    better = (result.estimate > 0) == metric.higher_is_better
    winner, loser = (first, second) if better else (second, first)
    return f"{winner} has the better {metric.noun} than {loser} ({first} minus {second}: {detail})."


def ratio_sentence(metric: Metric, pair: PairResult, n: int, noise: float | None = None) -> str:
    """A speed comparison; ``noise`` is the relative spread between repeated timings in one run."""
    first, second = backends.label(pair.first), backends.label(pair.second)
    result = pair.paired[metric.key]
    # "faster" factor of the first framework over the second, and its interval
    factor = result.estimate if metric.higher_is_better else 1 / result.estimate
    ci = None if result.ci is None else (
        (result.ci.low, result.ci.high) if metric.higher_is_better else (1 / result.ci.high, 1 / result.ci.low))
    if ci is None:
        return (f"{metric.noun.capitalize()}: {first} {factor:.2f}x as fast as {second} from one seed, on this "
                "machine; an interval over seeds needs at least two.")
    detail = f"95% CI {ci[0]:.2f}-{ci[1]:.2f}x across {_seeds(n)}, on this machine"
    if noise is not None and abs(math.log(factor)) < math.log1p(noise):
        return (f"{metric.noun.capitalize()}: {first} {factor:.2f}x as fast as {second} ({detail}), which is "
                f"within the {100 * noise:.0f}% spread between repeated timings: no winner.")
    if not result.significant:
        return f"No significant difference in {metric.noun}: {first} {factor:.2f}x as fast as {second} ({detail})."
    winner, loser, times = (first, second, factor) if factor > 1 else (second, first, 1 / factor)
    low, high = (ci[0], ci[1]) if factor > 1 else (1 / ci[1], 1 / ci[0])
    return f"{winner} is {times:.2f}x as fast as {loser} in {metric.noun} (95% CI {low:.2f}-{high:.2f}x across " \
           f"{_seeds(n)}, on this machine)."


def test_set_caveat(pair: PairResult) -> str:
    """For a quality difference that is consistent across seeds: whether the test set can tell it.

    The across-seed interval covers training randomness only; each seed's McNemar test asks
    whether the two models' answers differ by more than the sampling of the test images explains.
    """
    if not pair.mcnemar or any(test.p_value < 0.05 for test in pair.mcnemar):
        return ""
    largest = max(test.only_first_right + test.only_second_right for test in pair.mcnemar)
    return (f" The difference is consistent across seeds but small: in no seed does the exact McNemar test find the "
            f"two models' answers different beyond test-set sampling (at most {largest} discordant test images, "
            f"every p >= 0.05).")


def sentences(comparison: Comparison, pair: PairResult) -> list[str]:
    lines = []
    for metric in METRICS:
        if metric.key == "train_images_per_second":
            continue  # the training-time sentence says it: one sentence per comparison
        if metric.compare == "difference":
            sentence = difference_sentence(metric, pair, comparison.n)
            if pair.paired[metric.key].significant and metric.key in ("test_accuracy", "macro_f1"):
                sentence += test_set_caveat(pair)
            lines.append(sentence)
        else:
            noise = comparison.inference_noise if metric.key == "inference_images_per_second" else None
            lines.append(ratio_sentence(metric, pair, comparison.n, noise))
    return lines


# --------------------------------------------------------------------------------------------
# reports/metrics.json: numeric, one level per framework and per pair
# --------------------------------------------------------------------------------------------
def _rounded(value: float) -> float:
    return float(f"{value:.6g}")


def summary_metrics(comparison: Comparison) -> dict[str, Any]:
    """Few columns, numbers only: per framework the mean test accuracy and training time with the
    half-width of their 95% CI over seeds; per pair the accuracy difference (pp) with its CI
    half-width and paired-test p, and the training-time ratio with its CI. Intervals need 2+ seeds."""
    summary: dict[str, Any] = {"seeds": comparison.n}
    for framework in comparison.frameworks:
        entry: dict[str, float] = {}
        for key, name in (("test_accuracy", "test_accuracy"), ("train_seconds", "train_seconds")):
            spread = comparison.spreads[framework][key]
            entry[name] = _rounded(spread.mean)
            if spread.ci is not None:
                entry[f"{name}_ci95"] = _rounded(spread.ci.high - spread.mean)
        summary[framework] = entry
    for pair in comparison.pairs:
        accuracy, time = pair.paired["test_accuracy"], pair.paired["train_seconds"]
        entry = {"accuracy_diff_pp": _rounded(100 * accuracy.estimate)}
        if accuracy.ci is not None and accuracy.p_value is not None:
            entry["accuracy_diff_pp_ci95"] = _rounded(100 * (accuracy.ci.high - accuracy.estimate))
            entry["accuracy_diff_p"] = _rounded(accuracy.p_value)
        entry["train_time_ratio"] = _rounded(time.estimate)
        if time.ci is not None:
            entry["train_time_ratio_ci_low"] = _rounded(time.ci.low)
            entry["train_time_ratio_ci_high"] = _rounded(time.ci.high)
        summary[f"{pair.first}_vs_{pair.second}"] = entry
    return summary


def per_seed_rows(comparison: Comparison, results: dict[str, list[Replicate]],
                  keys: Sequence[str]) -> list[list[str]]:
    """Rows ``framework, seed, values...`` for the per-seed table."""
    rows = []
    for framework, items in results.items():
        for replicate in items:
            rows.append([backends.label(framework), str(replicate.seed),
                         *(METRIC[key].text(METRIC[key].value(replicate)) for key in keys)])
    return rows
