"""The comparison: per arm (framework), each metric over seeds; per pair of arms, the paired
comparison of ``arms.compare_arms`` (differences for quality, ratios for speed, McNemar per seed,
equivalence, power, time to accuracy), its p-values Holm-adjusted as one family over every pair
(``arms.adjust``). The sentences are in ``conclusions.py``.

What is compared is ``measures.METRICS``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stages import backends
from stages.common.params import ReportParams
from stages.report import resampling, stats
from stages.report.arms import Arm, PairResult, adjust, compare_arms, family, tests_per_pair
from stages.report.inputs import Replicate
from stages.report.measures import METRIC, METRICS, Metric


@dataclass(frozen=True)
class Comparison:
    frameworks: list[str]  # arm names, in order
    labels: dict[str, str]  # arm name -> label in sentences and tables
    seeds: list[int]
    test_images: int
    spreads: dict[str, dict[str, stats.Spread]]  # arm -> metric key -> over seeds (log scale for ratios)
    wilson: dict[str, list[stats.Interval]]  # arm -> per seed, test accuracy
    pairs: list[PairResult]
    inference_noise: float  # median relative spread (max - min) / median of repeated inference passes
    settings: ReportParams
    family: int  # p-values in the report's one Holm family (``arms.family``)
    resamples: int  # of each seeds-and-test-images bootstrap

    @property
    def n(self) -> int:
        return len(self.seeds)


def inference_noise(results: dict[str, list[Replicate]]) -> float:
    spreads = [(r.evaluation.throughput_images_per_second_max - r.evaluation.throughput_images_per_second_min)
               / r.evaluation.throughput_images_per_second for items in results.values() for r in items]
    return float(np.median(spreads))


def spread(metric: Metric, values: Sequence[float]) -> stats.Spread:
    """Quality metrics: arithmetic mean and t interval; times, throughputs, latencies: log scale."""
    return stats.over_seeds(values) if metric.compare == "difference" else stats.over_seeds_log(values)


def build_arm(name: str, items: Sequence[Replicate]) -> Arm:
    return Arm(name, backends.label(name), {replicate.seed: replicate for replicate in items})


def compare(results: dict[str, list[Replicate]], labels: np.ndarray, settings: ReportParams) -> Comparison:
    """Every arm over seeds, and every pair of arms on their common seeds."""
    frameworks = list(results)
    seeds = [replicate.seed for replicate in results[frameworks[0]]]
    spreads = {framework: {metric.key: spread(metric, [metric.value(r) for r in items]) for metric in METRICS}
               for framework, items in results.items()}
    count = int(labels.shape[0])
    wilson = {framework: [stats.wilson(int(round(r.evaluation.test_accuracy * count)), count) for r in items]
              for framework, items in results.items()}
    arms = {framework: build_arm(framework, items) for framework, items in results.items()}
    combinations = list(itertools.combinations(frameworks, 2))
    resamples = resampling.resamples_for(len(combinations) * tests_per_pair(METRICS))
    pairs = []
    for first, second in combinations:
        common = [seed for seed in seeds if seed in arms[second].replicates]
        pairs.append(compare_arms(arms[first], arms[second], common, labels, settings, METRICS, resamples))
    size = sum(p is not None for p in family(pairs))
    return Comparison(frameworks, {name: item.label for name, item in arms.items()}, seeds, count, spreads, wilson,
                      adjust(pairs), inference_noise(results), settings, size, resamples)


# --------------------------------------------------------------------------------------------
# reports/metrics.json: numeric, one level per framework and per pair
# --------------------------------------------------------------------------------------------
def _rounded(value: float) -> float:
    return float(f"{value:.6g}")


def summary_metrics(comparison: Comparison) -> dict[str, Any]:
    """Few columns, numbers only: the size of the report's Holm family; per framework the mean test
    accuracy with the half-width of its 95% CI over seeds, and the geometric-mean training time
    with its (log-scale) 95% CI; per pair the accuracy difference (pp) with its CI half-width over
    seeds, paired-test p (raw and Holm-adjusted), its 90% interval over seeds and test images (pp)
    with the TOST p on that evidence (raw and Holm-adjusted), the same TOST p for test loss and
    macro F1, and the training-time ratio with its CI. Intervals over seeds need 2+ seeds."""
    summary: dict[str, Any] = {"seeds": comparison.n, "holm_family": comparison.family}
    for framework in comparison.frameworks:
        quality, seconds = (comparison.spreads[framework][key] for key in ("test_accuracy", "train_seconds"))
        entry: dict[str, float] = {"test_accuracy": _rounded(quality.mean)}
        if quality.ci is not None:
            entry["test_accuracy_ci95"] = _rounded(quality.ci.high - quality.mean)
        entry["train_seconds"] = _rounded(seconds.mean)
        if seconds.ci is not None:
            entry["train_seconds_ci_low"] = _rounded(seconds.ci.low)
            entry["train_seconds_ci_high"] = _rounded(seconds.ci.high)
        summary[framework] = entry
    for pair in comparison.pairs:
        accuracy, time = pair.metrics["test_accuracy"], pair.paired["train_seconds"]
        entry = {"accuracy_diff_pp": _rounded(100 * accuracy.paired.estimate)}
        if accuracy.paired.ci is not None and accuracy.paired.p_value is not None:
            entry["accuracy_diff_pp_ci95"] = _rounded(100 * (accuracy.paired.ci.high - accuracy.paired.estimate))
            entry["accuracy_diff_p"] = _rounded(accuracy.paired.p_value)
        if accuracy.holm_p is not None:
            entry["accuracy_diff_p_holm"] = _rounded(accuracy.holm_p)
        if accuracy.equivalence is not None:
            entry["accuracy_ci90_seeds_test_low_pp"] = _rounded(100 * accuracy.equivalence.interval.low)
            entry["accuracy_ci90_seeds_test_high_pp"] = _rounded(100 * accuracy.equivalence.interval.high)
            entry["accuracy_tost_p"] = _rounded(accuracy.equivalence.p_value)
        if accuracy.tost_holm_p is not None:
            entry["accuracy_tost_p_holm"] = _rounded(accuracy.tost_holm_p)
        for key in ("test_loss", "macro_f1"):
            if (equivalence := pair.metrics[key].equivalence) is not None:
                entry[f"{key}_tost_p"] = _rounded(equivalence.p_value)
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
