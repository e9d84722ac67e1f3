"""The comparison of two labelled arms, whatever they are (two frameworks, or one framework's
tuned and stock runs): each arm maps seed -> replicate, and the comparison pairs them on the
seeds both have.

Per compared metric (``measures.METRICS``): the paired difference or ratio across seeds, TOST
against the metric's equivalence margin across seeds, the minimum detectable difference at 80%
power with the seeds run and the seeds the verdict within reach needs (a range: the seed-to-seed
spread is itself uncertain); for the quality metrics also the interval over seeds and test images
(two-level bootstrap), TOST on that same bootstrap (what an "equivalent" verdict rests on), the
test set's own standard error and floor, and the sign-flip test of these trained models on this
test set. Per seed: McNemar and the number of images whose predicted classes differ. Plus time to
the target validation accuracy.

``adjust`` Holm-adjusts one family over every pair of the report: each quality metric's paired
test and TOST (the one its verdict rests on). Speeds over seeds are described here, never judged:
speed verdicts come from the timing stage's sittings (``speed.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from stages.common.params import ReportParams
from stages.report import power, resampling, stats, time_to_accuracy
from stages.report.inputs import Replicate
from stages.report.measures import Metric

PER_IMAGE = ("test_accuracy", "test_loss")  # metrics that are a mean over test images
RESAMPLED = ("test_accuracy", "test_loss", "macro_f1")


@dataclass(frozen=True)
class Arm:
    name: str  # key in outputs, e.g. "keras"
    label: str  # in sentences and tables, e.g. "Keras"
    replicates: Mapping[int, Replicate]  # seed -> replicate


@dataclass(frozen=True)
class MetricComparison:
    paired: stats.Paired
    holm_p: float | None  # the paired test's p, Holm-adjusted over the report's family (``adjust``)
    margin: float  # equivalence margin on the tested scale (log ratio for ratios)
    tost: stats.Tost | None  # across seeds (t)
    detectable: float | None  # minimum detectable difference at 80% power, tested scale
    seeds: power.SeedsForVerdict | None  # the seeds the verdict within reach needs
    resampled: stats.Interval | None  # 95%, over seeds and test images (quality metrics)
    equivalence: resampling.Equivalence | None  # TOST over seeds and test images (quality metrics)
    tost_holm_p: float | None  # ``verdict_tost_p``, Holm-adjusted over the report's family
    sign_flip_p: float | None  # these trained models on this test set (per-image metrics)
    floor: power.Floor | None  # what the test set's size lets any number of seeds detect (per-image metrics)
    test_error: float | None  # the test set's standard error of the seed-averaged difference (quality)

    @property
    def verdict_tost_p(self) -> float | None:
        """The TOST an "equivalent" verdict rests on: over seeds and test images for the quality
        metrics, over seeds for the speeds (timed on this machine, no test set involved)."""
        if self.equivalence is not None:
            return self.equivalence.p_value
        return None if self.tost is None else self.tost.p_value


@dataclass(frozen=True)
class PairResult:
    first: str
    second: str
    first_label: str
    second_label: str
    seeds: tuple[int, ...]
    metrics: dict[str, MetricComparison]  # by metric key
    mcnemar: list[stats.McNemar]  # one per seed
    disagreements: list[int]  # test images with different predicted classes, per seed
    time_to_target: time_to_accuracy.TimeToTarget
    time_to_target_holm_p: float | None  # None: time to accuracy is described here, judged from the sittings

    @property
    def paired(self) -> dict[str, stats.Paired]:
        return {key: item.paired for key, item in self.metrics.items()}


def margin(metric: Metric, settings: ReportParams) -> float:
    """The equivalence margin of ``metric`` on its tested scale."""
    margins = settings.equivalence
    if metric.compare == "ratio":
        return math.log(margins.speed_ratio)
    return {"test_accuracy": margins.accuracy_pp / 100, "test_loss": margins.test_loss,
            "macro_f1": margins.macro_f1}[metric.key]


def _metric(metric: Metric, a: list[float], b: list[float], settings: ReportParams,
            images: tuple[resampling.ArmImages, resampling.ArmImages], labels: np.ndarray,
            resamples: int) -> MetricComparison:
    paired = stats.paired_difference(a, b) if metric.compare == "difference" else stats.paired_ratio(a, b)
    tested = np.asarray(a, np.float64) - np.asarray(b, np.float64) if metric.compare == "difference" \
        else np.log(a) - np.log(b)
    limit = margin(metric, settings)
    n = len(a)
    sd = float(np.std(tested, ddof=1)) if n >= 2 else None
    if sd is not None and sd <= 1e-12 * max(1.0, abs(float(np.mean(tested)))):
        sd = 0.0  # identical to rounding, as stats.paired_difference treats them
    resampled = equivalence = sign_flip = floor = error = None
    if metric.key in RESAMPLED:
        distribution = resampling.two_level_distribution(metric.key, *images, labels, resamples)
        resampled = resampling.percentile_interval(distribution)
        equivalence = resampling.equivalence(distribution, limit) if n >= 2 else None  # no verdict from one seed
        if metric.key in PER_IMAGE:
            sign_flip = resampling.sign_flip(metric.key, *images, labels)
            floor = power.test_set_floor(resampling.per_image(metric.key, images[0], labels),
                                         resampling.per_image(metric.key, images[1], labels))
            error = floor.standard_error
        else:
            error = resampling.test_set_error(metric.key, *images, labels)
    return MetricComparison(
        paired, None, limit, stats.tost(tested.tolist(), limit),
        None if sd is None else power.minimum_detectable(sd, n),
        None if sd is None else power.seeds_for_verdict(float(np.mean(tested)), sd, n, limit),
        resampled, equivalence, None, sign_flip, floor, error)


def compare_arms(first: Arm, second: Arm, seeds: Sequence[int], labels: np.ndarray, settings: ReportParams,
                 metrics: Sequence[Metric], resamples: int = resampling.RESAMPLES) -> PairResult:
    """``first`` against ``second`` on ``seeds`` (each must be in both arms); the Holm-adjusted
    p-values are left for ``adjust``, over every pair of the report."""
    missing = [seed for seed in seeds if seed not in first.replicates or seed not in second.replicates]
    if missing or not seeds:
        raise ValueError(f"{first.name} vs {second.name}: seeds {missing or list(seeds)} not in both arms")
    a_items = [first.replicates[seed] for seed in seeds]
    b_items = [second.replicates[seed] for seed in seeds]
    labels = np.asarray(labels, np.int64)
    images = (resampling.arm_images([r.probabilities for r in a_items], labels),
              resampling.arm_images([r.probabilities for r in b_items], labels))
    compared = {metric.key: _metric(metric, [metric.value(r) for r in a_items], [metric.value(r) for r in b_items],
                                    settings, images, labels, resamples) for metric in metrics}
    target = settings.target_val_accuracy
    ttt = time_to_accuracy.compare(
        [time_to_accuracy.reached(r.curves["val/accuracy"], r.curves["epoch_seconds"], target) for r in a_items],
        [time_to_accuracy.reached(r.curves["val/accuracy"], r.curves["epoch_seconds"], target) for r in b_items],
        target)
    return PairResult(
        first.name, second.name, first.label, second.label, tuple(seeds), compared,
        [stats.mcnemar(a.predicted == labels, b.predicted == labels) for a, b in zip(a_items, b_items)],
        [int(np.sum(a.predicted != b.predicted)) for a, b in zip(a_items, b_items)],
        ttt, None)


def tests_per_pair(metrics: Sequence[Metric]) -> int:
    """Tests each pair adds to the family: a paired test and a TOST per quality metric (the speed
    verdicts come from the timing stage's sittings, ``speed.py``, not from tests over seeds)."""
    return 2 * sum(metric.compare == "difference" for metric in metrics)


def _quality(pair: PairResult) -> list[str]:
    return [key for key in pair.metrics if key in RESAMPLED]


def family(pairs: Sequence[PairResult]) -> list[float | None]:
    """Every raw p-value the report states a verdict on, pair by pair: the paired tests of every
    quality metric, then their TOSTs (``MetricComparison.verdict_tost_p``)."""
    raw: list[float | None] = []
    for pair in pairs:
        raw += [pair.metrics[key].paired.p_value for key in _quality(pair)]
        raw += [pair.metrics[key].verdict_tost_p for key in _quality(pair)]
    return raw


def adjust(pairs: Sequence[PairResult]) -> list[PairResult]:
    """The pairs with their quality p-values Holm-adjusted as one family (``family``)."""
    adjusted = iter(stats.holm(family(pairs)))
    result = []
    for pair in pairs:
        keys = _quality(pair)
        tests = {key: next(adjusted) for key in keys}
        tosts = {key: next(adjusted) for key in keys}
        metrics = {key: replace(item, holm_p=tests.get(key), tost_holm_p=tosts.get(key))
                   for key, item in pair.metrics.items()}
        result.append(replace(pair, metrics=metrics))
    return result
