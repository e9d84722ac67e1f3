"""One plain sentence per compared metric of a pair of arms, claiming only what the tests support.

Each says one of three things:

- **different**, with the direction: the paired test across seeds, Holm-adjusted within the
  pair's family of metrics, is below 5%;
- **equivalent** within the metric's margin (``report.equivalence``): both one-sided tests
  (TOST) reject a difference as large as the margin at 5%;
- **inconclusive**: neither; the sentence says what would settle it (the seeds that would
  detect the margin at 80% power, and, for accuracy and loss, whether the test set's size
  already rules that out).

Quality sentences add the interval that covers the test set too; speed sentences say when the
machine was busy while timing.
"""

from __future__ import annotations

import math

from stages.report import power
from stages.report.arms import Contention, MetricComparison, PairResult
from stages.report.compare import METRICS, Comparison, Metric, percent
from stages.report.time_to_accuracy import sentence as time_to_target_sentence

LEVEL = 0.05
# What each sentence concludes, in reports/verdicts.json (the reproduction compares them: stages/reproduce)
VERDICTS = ("different", "equivalent", "inconclusive", "no winner", "one seed")


def _seeds(n: int) -> str:
    return f"{n} seed{'s' if n != 1 else ''}"


def scale(metric: Metric) -> tuple[float, str, int]:
    """Display scale, unit and digits of a difference of ``metric``."""
    return (100.0, " pp", 2) if metric.text is percent else (1.0, "", 4)


def difference_text(metric: Metric, value: float, signed: bool = True) -> str:
    factor, unit, digits = scale(metric)
    return f"{factor * value:{'+' if signed else ''}.{digits}f}{unit}"


def margin_text(metric: Metric, item: MetricComparison) -> str:
    if metric.compare == "ratio":
        ratio = math.exp(item.margin)
        return f"{1 / ratio:.3f}-{ratio:.3f}x"
    return f"±{difference_text(metric, item.margin, signed=False)}"


def _p(value: float | None) -> str:
    return "-" if value is None else f"{value:.2g}"


def settle(metric: Metric, item: MetricComparison, test_images: int) -> str:
    """What would settle an inconclusive comparison."""
    parts = []
    if item.detectable is not None:
        detectable = (f"{math.exp(item.detectable):.3f}x" if metric.compare == "ratio"
                      else difference_text(metric, item.detectable, signed=False))
        parts.append(f"with these seeds only a difference of {detectable} or more is detected at "
                     f"{100 * power.TARGET_POWER:.0f}% power")
    if item.seeds_for_margin is not None:
        parts.append(f"about {item.seeds_for_margin} seeds would detect a difference the size of the margin")
    if item.floor is not None and item.floor.detectable > item.margin:
        parts.append(f"but with {test_images:,} test images no number of seeds detects less than "
                     f"{difference_text(metric, item.floor.detectable, signed=False)} (the test set's floor): "
                     "settling it needs a larger test set")
    return "; ".join(parts) if parts else "more seeds would"


def test_set_text(metric: Metric, item: MetricComparison) -> str:
    if item.resampled is None:
        return ""
    interval = item.resampled
    text = (f"; over seeds and test images together "
            f"{difference_text(metric, interval.low)} to {difference_text(metric, interval.high)}")
    return text + ("" if item.sign_flip_p is None else f", sign-flip test p = {_p(item.sign_flip_p)}")


def difference_sentence(metric: Metric, pair: PairResult, n: int, test_images: int = 0) -> str:
    first, second = pair.first_label, pair.second_label
    item = pair.metrics[metric.key]
    result = item.paired
    estimate = difference_text(metric, result.estimate)
    if result.ci is None:
        return (f"{metric.noun.capitalize()}, {first} minus {second}: {estimate} from one seed; an interval "
                "over training randomness needs at least two seeds.")
    interval = f"95% CI {difference_text(metric, result.ci.low)} to {difference_text(metric, result.ci.high)}"
    detail = (f"{estimate}, {interval} across {_seeds(n)}, paired t-test p = {_p(result.p_value)} "
              f"(Holm-adjusted {_p(item.holm_p)}){test_set_text(metric, item)}")
    tost = "" if item.tost is None else f"TOST p = {_p(item.tost.p_value)}"
    word = verdict(metric, item)
    if word == "different":
        better = (result.estimate > 0) == metric.higher_is_better
        winner, loser = (first, second) if better else (second, first)
        text = f"Different: {winner} has the better {metric.noun} than {loser} ({first} minus {second}: {detail})."
        if item.tost is not None and item.tost.equivalent:
            text += f" The difference lies inside the {margin_text(metric, item)} margin ({tost}): real but negligible."
        if item.resampled is not None and item.resampled.low <= 0 <= item.resampled.high:
            text += " Counting the sampling of the test images too, the interval includes 0: the test set cannot " \
                    "tell the difference from chance."
        return text
    if word == "equivalent":
        return (f"Equivalent: {first} and {second} do not differ in {metric.noun} by more than "
                f"{margin_text(metric, item)} ({tost}; {detail}).")
    return (f"Inconclusive for {metric.noun}: not shown different, nor equivalent within {margin_text(metric, item)} "
            f"({tost}; {detail}); {settle(metric, item, test_images)}.")


def contention_text(load: Contention) -> str:
    if load.busy == 0:
        return ""
    parts = []
    if load.worst_load is not None:
        parts.append(f"1-minute load up to {load.worst_load:.1f} per core")
    if load.worst_spread is not None:
        parts.append(f"timed repeats spread up to {100 * load.worst_spread:.0f}%")
    return (f" Warning: {load.busy} of {load.total} replicates were timed on a busy machine ({'; '.join(parts)}): "
            "the speed verdict may reflect the load, not the frameworks.")


def ratio_sentence(metric: Metric, pair: PairResult, n: int, noise: float | None = None) -> str:
    """A speed comparison; ``noise`` is the relative spread between repeated timings in one run."""
    first, second = pair.first_label, pair.second_label
    item = pair.metrics[metric.key]
    result = item.paired
    load = contention_text(pair.training_load if metric.key.startswith("train") else pair.evaluation_load)
    # "faster" factor of the first over the second, and its interval
    factor = result.estimate if metric.higher_is_better else 1 / result.estimate
    if result.ci is None:
        return (f"{metric.noun.capitalize()}: {first} {factor:.2f}x as fast as {second} from one seed, on this "
                f"machine; an interval over seeds needs at least two.{load}")
    ci = (result.ci.low, result.ci.high) if metric.higher_is_better else (1 / result.ci.high, 1 / result.ci.low)
    tests = f"paired t on log ratios p = {_p(result.p_value)}, Holm-adjusted {_p(item.holm_p)}"
    detail = f"95% CI {ci[0]:.2f}-{ci[1]:.2f}x across {_seeds(n)}, {tests}; one sitting on this machine"
    tost = "" if item.tost is None else f"TOST p = {_p(item.tost.p_value)}"
    word = verdict(metric, item, noise)
    if word == "no winner" and noise is not None:
        return (f"{metric.noun.capitalize()}: {first} {factor:.2f}x as fast as {second} ({detail}), which is "
                f"within the {100 * noise:.0f}% spread between repeated timings: no winner.{load}")
    if word == "different":
        winner, loser, times = (first, second, factor) if factor > 1 else (second, first, 1 / factor)
        low, high = (ci[0], ci[1]) if factor > 1 else (1 / ci[1], 1 / ci[0])
        return (f"Different: {winner} is {times:.2f}x as fast as {loser} in {metric.noun} (95% CI {low:.2f}-"
                f"{high:.2f}x across {_seeds(n)}, {tests}; one sitting on this machine).{load}")
    if word == "equivalent":
        return (f"Equivalent: {first} and {second} are within {margin_text(metric, item)} of each other in "
                f"{metric.noun} ({tost}; {first} {factor:.2f}x as fast, {detail}).{load}")
    return (f"Inconclusive for {metric.noun}: {first} {factor:.2f}x as fast as {second} ({detail}), not shown "
            f"different, nor equivalent within {margin_text(metric, item)} ({tost}); "
            f"{settle(metric, item, 0)}.{load}")


def verdict(metric: Metric, item: MetricComparison, noise: float | None = None) -> str:
    """The word a sentence opens with (one of ``VERDICTS``); ``noise``: as in ``ratio_sentence``."""
    if item.paired.ci is None:
        return "one seed"
    if metric.compare == "ratio" and noise is not None and abs(math.log(item.paired.estimate)) < math.log1p(noise):
        return "no winner"
    if item.holm_p is not None and item.holm_p < LEVEL:
        return "different"
    if item.tost is not None and item.tost.equivalent:
        return "equivalent"
    return "inconclusive"


def judged(comparison: Comparison) -> list[tuple[Metric, float | None]]:
    """The metrics that get a sentence (and a verdict), each with the timing noise it is judged against."""
    return [(metric, comparison.inference_noise if metric.key == "inference_images_per_second" else None)
            for metric in METRICS
            if metric.key != "train_images_per_second"]  # the training-time sentence says it: one per comparison


def verdicts(comparison: Comparison) -> dict[str, dict[str, str]]:
    """``reports/verdicts.json``: per pair (``keras_vs_torch``), metric key -> its sentence's verdict word."""
    return {f"{pair.first}_vs_{pair.second}": {metric.key: verdict(metric, pair.metrics[metric.key], noise)
                                              for metric, noise in judged(comparison)}
            for pair in comparison.pairs}


def sentences(comparison: Comparison, pair: PairResult) -> list[str]:
    lines = []
    for metric, noise in judged(comparison):
        if metric.compare == "difference":
            lines.append(difference_sentence(metric, pair, len(pair.seeds), comparison.test_images))
        else:
            lines.append(ratio_sentence(metric, pair, len(pair.seeds), noise))
    ttt = time_to_target_sentence(pair.time_to_target, pair.first_label, pair.second_label, len(pair.seeds))
    if pair.time_to_target.seconds is not None:
        ttt = ttt[:-1] + f"; Holm-adjusted p = {_p(pair.time_to_target_holm_p)}.{contention_text(pair.training_load)}"
    lines.append(ttt)
    return lines
