"""One plain sentence per compared metric of a pair of arms, claiming only what the tests support.

Quality only: speed verdicts come from the timing stage's sittings (``speed.py``). Every p-value
a verdict rests on is Holm-adjusted over one family: every pair of the report, each quality
metric's paired test and TOST (``arms.adjust``). Each sentence says one of three things:

- **different**, with the direction: the paired test across seeds, Holm-adjusted, is below 5%;
- **equivalent** within the metric's margin (``report.equivalence``): the TOST the verdict rests
  on, Holm-adjusted, is below 5%. For the quality metrics that TOST is on the bootstrap over seeds
  *and* test images, and its 90% interval must lie inside the margin: the claim is about the
  frameworks, not this test set. For speeds it is the t-based TOST across seeds;
- **inconclusive**: neither; the sentence says what would settle it: the seeds the verdict within
  reach needs (a range, as the seed-to-seed spread is itself uncertain) and, for the quality
  metrics, what the test set's size rules out. Where only the interval across seeds fits inside
  the margin, it says so in plain words: "equivalent across seeds on this test set; the test set
  cannot resolve differences below X", which is not the verdict "equivalent".

The sign-flip test holds the trained models fixed: it is a test of these models on this test
set, shown in the pair's table and kept out of every verdict.
"""

from __future__ import annotations

import math

from stages.report import power
from stages.report.arms import MetricComparison, PairResult
from stages.report.compare import Comparison
from stages.report.measures import METRICS, Metric, p_text, percent

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


def seeds_text(metric: Metric, item: MetricComparison) -> str:
    """The seeds the verdict within reach needs, with the range from the spread's uncertainty."""
    needed = item.seeds
    if needed is None:
        return ""

    def count(value: int | None) -> str:
        return f"more than {power.MAX_SEEDS:,}" if value is None else f"{value:,}"
    verdict = "show equivalence" if needed.verdict == "equivalence" else "detect the difference"
    return (f"about {count(needed.seeds)} seeds ({count(needed.low)} to {count(needed.high)} over the 95% interval "
            f"of the seed-to-seed spread) would {verdict} with {100 * power.TARGET_POWER:.0f}% power if the true "
            f"{'ratio' if metric.compare == 'ratio' else 'difference'} is the one estimated")


def resolution(item: MetricComparison) -> float | None:
    """What the test set alone cannot resolve: half of the 90% interval its sampling leaves."""
    return None if item.test_error is None else power.resolution(item.test_error)


def settle(metric: Metric, item: MetricComparison, test_images: int) -> str:
    """What would settle an inconclusive comparison."""
    parts = []
    if item.detectable is not None:
        detectable = (f"{math.exp(item.detectable):.3f}x" if metric.compare == "ratio"
                      else difference_text(metric, item.detectable, signed=False))
        parts.append(f"with these seeds only a difference of {detectable} or more is detected at "
                     f"{100 * power.TARGET_POWER:.0f}% power")
    if seeds := seeds_text(metric, item):
        parts.append(seeds)
    estimate = abs(item.paired.estimate)
    floor = resolution(item)
    if item.seeds is not None and item.seeds.verdict == "equivalence" and floor is not None \
            and estimate + floor >= item.margin:
        parts.append(f"but with {test_images:,} test images no number of seeds shows equivalence within "
                     f"{margin_text(metric, item)}: the test set cannot resolve differences below "
                     f"{difference_text(metric, floor, signed=False)}, so settling it needs a larger test set")
    elif item.seeds is not None and item.seeds.verdict == "difference" and item.floor is not None \
            and item.floor.detectable > estimate:
        parts.append(f"but with {test_images:,} test images no number of seeds detects less than "
                     f"{difference_text(metric, item.floor.detectable, signed=False)} (the test set's floor): "
                     "settling it needs a larger test set")
    return "; ".join(parts) if parts else "more seeds would"


def test_set_text(metric: Metric, item: MetricComparison) -> str:
    if item.resampled is None:
        return ""
    interval = item.resampled
    return (f"; 95% interval over seeds and test images together "
            f"{difference_text(metric, interval.low)} to {difference_text(metric, interval.high)}")


def equivalence_text(metric: Metric, item: MetricComparison) -> str:
    """The TOST an "equivalent" verdict rests on, with its interval where it has one."""
    adjusted = f"Holm-adjusted {p_text(item.tost_holm_p)}"
    if item.equivalence is None:
        return f"TOST p = {p_text(item.verdict_tost_p)}, {adjusted}"
    interval = item.equivalence.interval
    return (f"90% interval over seeds and test images {difference_text(metric, interval.low)} to "
            f"{difference_text(metric, interval.high)}, TOST p = {p_text(item.equivalence.p_value)}, {adjusted}")


def equivalent(item: MetricComparison) -> bool:
    """The verdict "equivalent": the TOST it rests on, Holm-adjusted, below the level, and for the
    quality metrics the 90% interval over seeds and test images inside the margin."""
    if item.tost_holm_p is None or item.tost_holm_p >= LEVEL:
        return False
    return item.equivalence is None or item.equivalence.inside


def difference_sentence(metric: Metric, pair: PairResult, n: int, test_images: int = 0) -> str:
    first, second = pair.first_label, pair.second_label
    item = pair.metrics[metric.key]
    result = item.paired
    estimate = difference_text(metric, result.estimate)
    if result.ci is None:
        return (f"{metric.noun.capitalize()}, {first} minus {second}: {estimate} from one seed; an interval "
                "over training randomness needs at least two seeds.")
    interval = f"95% CI {difference_text(metric, result.ci.low)} to {difference_text(metric, result.ci.high)}"
    detail = (f"{estimate}, {interval} across {_seeds(n)}, paired t-test p = {p_text(result.p_value)} "
              f"(Holm-adjusted {p_text(item.holm_p)}){test_set_text(metric, item)}")
    word = verdict(metric, item)
    if word == "different":
        better = (result.estimate > 0) == metric.higher_is_better
        winner, loser = (first, second) if better else (second, first)
        text = f"Different: {winner} has the better {metric.noun} than {loser} ({first} minus {second}: {detail})."
        if equivalent(item):
            text += (f" The difference lies inside the {margin_text(metric, item)} margin "
                     f"({equivalence_text(metric, item)}): real but negligible.")
        if item.resampled is not None and item.resampled.low <= 0 <= item.resampled.high:
            text += " Counting the sampling of the test images too, the interval includes 0: the test set cannot " \
                    "tell the difference from chance."
        return text
    if word == "equivalent":
        return (f"Equivalent: {first} and {second} do not differ in {metric.noun} by more than "
                f"{margin_text(metric, item)} ({equivalence_text(metric, item)}; {detail}).")
    seeds_only = "" if item.tost is None else f"TOST across seeds p = {p_text(item.tost.p_value)}; "
    floor = resolution(item)
    if item.tost is not None and item.tost.equivalent and item.equivalence is not None and floor is not None:
        return (f"Inconclusive for {metric.noun}: equivalent across seeds on this test set; the test set cannot "
                f"resolve differences below {difference_text(metric, floor, signed=False)}, and over seeds and "
                f"test images together equivalence within {margin_text(metric, item)} is not shown "
                f"({equivalence_text(metric, item)}; {seeds_only}{detail}); {settle(metric, item, test_images)}.")
    return (f"Inconclusive for {metric.noun}: not shown different, nor equivalent within {margin_text(metric, item)} "
            f"({equivalence_text(metric, item)}; {seeds_only}{detail}); {settle(metric, item, test_images)}.")


def verdict(metric: Metric, item: MetricComparison, noise: float | None = None) -> str:
    """The word a sentence opens with (one of ``VERDICTS``); ``noise``: as in ``ratio_sentence``."""
    if item.paired.ci is None:
        return "one seed"
    if metric.compare == "ratio" and noise is not None and abs(math.log(item.paired.estimate)) < math.log1p(noise):
        return "no winner"
    if item.holm_p is not None and item.holm_p < LEVEL:
        return "different"
    if equivalent(item):
        return "equivalent"
    return "inconclusive"


def judged(comparison: Comparison) -> list[tuple[Metric, float | None]]:
    """The metrics that get a sentence (and a verdict), each with the timing noise it is judged against."""
    return [(metric, None) for metric in METRICS if metric.compare == "difference"]  # speed: speed.py


def verdicts(comparison: Comparison) -> dict[str, dict[str, str]]:
    """``reports/verdicts.json``: per pair (``keras_vs_torch``), metric key -> its sentence's verdict word."""
    return {f"{pair.first}_vs_{pair.second}": {metric.key: verdict(metric, pair.metrics[metric.key], noise)
                                              for metric, noise in judged(comparison)}
            for pair in comparison.pairs}


def sentences(comparison: Comparison, pair: PairResult) -> list[str]:
    return [difference_sentence(metric, pair, len(pair.seeds), comparison.test_images)
            for metric, _ in judged(comparison)]
