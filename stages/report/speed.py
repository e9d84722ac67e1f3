"""Speed verdicts from the sittings of the ``timing`` stage (``timing/sittings.json``).

A speed claim generalises over rounds and sittings, not over seeds (the seeds change the weights,
not the speed). Per pair of stock arms and speed metric:

- each round pairs the two arms' figures (the same round: the same stretch of the machine's
  time), giving a log ratio; a sitting's ratio is the mean over its rounds, with a t-interval
  over them, and its own word: beyond the margin (``report.equivalence.speed_ratio``), inside
  it, or neither;
- across sittings (those ``record.pooled`` allows: same CPU, recipe and versions) the ratio is the
  geometric mean of the sittings' ratios, printed with their spread (largest / smallest);
- "different" only where at least two sittings are each different on the same side and the
  difference exceeds what the sittings vary by: their range, widened by the spread on both sides,
  lies beyond the margin. "Equivalent" where every sitting is equivalent and that widened range
  lies inside the margin. Otherwise "inconclusive", saying what would settle it. One sitting
  cannot show how much sittings vary, so it never carries a verdict of its own.

Every sitting's interval is at the 95% level Bonferroni-corrected over the speed verdicts the report
states (pairs x metrics). Contention: per framework, the steady step's slowdown with the standard spinner
holding one core, paired within each round, with its t-interval over the rounds of every pooled
sitting. Time to accuracy: the steps to the target validation accuracy (from the training logs,
at their resolution: whole epochs) x the steady step time + start-up.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

from stages import backends
from stages.common import paths
from stages.report.stats import Interval
from stages.timing import record

LEVEL = 0.05


@dataclass(frozen=True)
class SpeedMetric:
    key: str  # in the sittings record and reports/verdicts.json
    noun: str
    higher_is_better: bool


SPEED_METRICS = (SpeedMetric("step_seconds", "training step time", False),
                 SpeedMetric("startup_seconds", "start-up and compilation", False),
                 SpeedMetric("inference_images_per_second", "inference throughput", True),
                 SpeedMetric("latency_ms", "single-image latency", False))


@dataclass(frozen=True)
class SittingRatio:
    estimate: float  # mean log ratio over the sitting's paired rounds
    rounds: int
    interval: Interval | None  # None with fewer than two rounds
    word: str  # the sitting's own: different | equivalent | inconclusive


@dataclass(frozen=True)
class SpeedVerdict:
    first: str
    second: str
    metric: SpeedMetric
    sittings: list[SittingRatio]
    estimate: float  # mean of the sittings' log ratios
    spread: float  # largest minus smallest sitting log ratio (0 for one sitting)
    word: str  # different | equivalent | inconclusive | no data
    settle: str  # what would settle an inconclusive verdict


def t_interval(values: Sequence[float], confidence: float) -> Interval | None:
    """The t-interval of the mean of ``values`` (scipy); None for fewer than two values."""
    if len(values) < 2:
        return None
    array = np.asarray(values, np.float64)
    if float(np.ptp(array)) <= 1e-12 * max(1.0, float(np.abs(array).max())):
        return Interval(float(array.mean()), float(array.mean()))  # no spread: the mean itself
    low, high = scipy_stats.ttest_1samp(array, 0.0).confidence_interval(confidence)
    return Interval(float(low), float(high))


def side(interval: Interval | None, margin: float) -> int:
    """+1 where the interval lies above the margin, -1 below it, 0 inside, None-safe (0)."""
    if interval is None:
        return 0
    return 1 if interval.low > margin else -1 if interval.high < -margin else 0


def inside(interval: Interval | None, margin: float) -> bool:
    return interval is not None and -margin < interval.low and interval.high < margin


def sitting_ratio(sitting: dict[str, Any], first: str, second: str, key: str, confidence: float,
                  margin: float) -> SittingRatio | None:
    logs = [math.log(round_["arms"][first][key] / round_["arms"][second][key]) for round_ in sitting["rounds"]
            if first in round_["arms"] and second in round_["arms"]]
    if not logs:
        return None
    interval = t_interval(logs, confidence)
    word = "different" if side(interval, margin) else "equivalent" if inside(interval, margin) else "inconclusive"
    return SittingRatio(float(np.mean(logs)), len(logs), interval, word)


def judge(first: str, second: str, metric: SpeedMetric, sittings: Sequence[dict[str, Any]], margin: float,
          family: int) -> SpeedVerdict:
    """The verdict of ``first`` / ``second`` in ``metric`` over ``sittings``; ``margin`` on the log
    scale; ``family``: the speed verdicts stated, for the Bonferroni-corrected level."""
    confidence = 1 - LEVEL / max(family, 1)
    ratios = [ratio for sitting in sittings if (ratio := sitting_ratio(sitting, first, second, metric.key,
                                                                         confidence, margin)) is not None]
    if not ratios:
        return SpeedVerdict(first, second, metric, [], math.nan, 0.0, "no data",
                            "the timing stage has no round in which both ran")
    estimates = [ratio.estimate for ratio in ratios]
    spread = max(estimates) - min(estimates)
    # the sittings' range, widened on both sides by how much they vary: where a next sitting may land
    widened = Interval(min(estimates) - spread, max(estimates) + spread)
    words = {ratio.word for ratio in ratios}
    sides = {side(ratio.interval, margin) for ratio in ratios}
    word, settle = "inconclusive", ""
    if len(ratios) < 2:
        settle = (f"one sitting ({ratios[0].word} on its own) cannot show how much sittings vary: a second, at least "
                  "ten minutes later (`dvc repro -s -f timing`), would")
    elif any(ratio.interval is None for ratio in ratios):
        settle = "a sitting with two rounds or more would give an interval over rounds"
    elif words == {"different"} and len(sides) == 1 and side(widened, margin):
        word = "different"
    elif words == {"equivalent"} and inside(widened, margin):
        word = "equivalent"
    elif words == {"inconclusive"}:
        settle = ("no sitting's interval over its rounds clears the margin or lies inside it: more rounds per sitting "
                  "(`timing.rounds`) would narrow them")
    elif len(words) > 1 or len(sides) > 1:
        settle = (f"the {len(ratios)} sittings disagree ({', '.join(ratio.word for ratio in ratios)}): more sittings, "
                  "at least ten minutes apart (`dvc repro -s -f timing`), or more rounds per sitting, would show which "
                  "holds")
    else:
        settle = (f"every sitting is {ratios[0].word}, but they vary by {_x(spread)}, as much as the distance to the "
                  "margin: more sittings (`dvc repro -s -f timing`) would show whether that spread is typical")
    return SpeedVerdict(first, second, metric, ratios, float(np.mean(estimates)), spread, word, settle)


def stock_pairs(frameworks: Sequence[str]) -> list[tuple[str, str]]:
    return [(a, b) for index, a in enumerate(frameworks) for b in frameworks[index + 1:]]


def verdicts(frameworks: Sequence[str], sittings: Sequence[dict[str, Any]], speed_ratio: float) -> list[SpeedVerdict]:
    """Every stock pair's verdict in every speed metric, over the pooled ``sittings``."""
    pairs = stock_pairs(frameworks)
    family = len(pairs) * len(SPEED_METRICS)
    return [judge(a, b, metric, sittings, math.log(speed_ratio), family)
            for a, b in pairs for metric in SPEED_METRICS]


def _x(log_ratio: float) -> str:
    return f"{math.exp(log_ratio):.2f}x"


def sentence(item: SpeedVerdict, speed_ratio: float) -> str:
    """The verdict as the report states it, each ratio with its between-sitting spread."""
    first, second, metric = backends.label(item.first), backends.label(item.second), item.metric
    if item.word == "no data":
        return f"No data for {metric.noun}: {item.settle}."
    # "as fast as": the first's advantage factor, >1 where the first is faster
    sign = 1 if metric.higher_is_better else -1
    faster = sign * item.estimate
    winner, loser = (first, second) if faster >= 0 else (second, first)
    per = [sign * ratio.estimate * (1 if faster >= 0 else -1) for ratio in item.sittings]
    rounds = sorted({ratio.rounds for ratio in item.sittings})
    detail = (f"{len(item.sittings)} sitting(s) of {'/'.join(map(str, rounds))} paired rounds; per sitting "
              + ", ".join(f"{_x(value)} {ratio.word}" for value, ratio in zip(per, item.sittings))
              + f"; between-sitting spread {_x(item.spread)}")
    margin = f"{1 / speed_ratio:.3f}-{speed_ratio:.3f}x"
    text = f"{winner} is {_x(abs(faster))} as fast as {loser} in {metric.noun} ({detail})"
    if item.word == "different":
        return (f"Different: {text}; every sitting lies beyond the {margin} margin, by more than the sittings vary "
                "by.")
    if item.word == "equivalent":
        return f"Equivalent: {text}; every sitting lies within the {margin} margin, by more than the sittings vary by."
    return f"Inconclusive for {metric.noun}: {text}; not beyond, nor within, the {margin} margin: {item.settle}."


@dataclass(frozen=True)
class Slowdown:
    framework: str
    estimate: float  # mean log slowdown over rounds
    interval: Interval | None  # 95%, over rounds
    rounds: int


def contention(frameworks: Sequence[str], sittings: Sequence[dict[str, Any]]) -> list[Slowdown]:
    """Per framework (stock), its steady step's slowdown with one core taken, paired within each round."""
    found = []
    for framework in frameworks:
        logs = [math.log(arm["contended"]["step_seconds"] / arm["step_seconds"])
                for sitting in sittings for round_ in sitting["rounds"]
                if (arm := round_["arms"].get(framework)) is not None and arm.get("contended")]
        if logs:
            found.append(Slowdown(framework, float(np.mean(logs)), t_interval(logs, 1 - LEVEL), len(logs)))
    return found


def arm_figure(sittings: Sequence[dict[str, Any]], arm: str, key: str) -> float | None:
    """The geometric mean over sittings of each sitting's geometric mean over rounds."""
    means = [float(np.mean([math.log(r["arms"][arm][key]) for r in sitting["rounds"] if arm in r["arms"]]))
             for sitting in sittings if any(arm in r["arms"] for r in sitting["rounds"])]
    return math.exp(float(np.mean(means))) if means else None


def time_to_accuracy(epochs_to_target: Sequence[int | None], train_images: int, batch_size: int,
                     step_seconds: float, startup_seconds: float) -> float | None:
    """Steps to the target (the median over seeds of the first epoch reaching it, whole epochs:
    the logs' resolution) x the steady step time + start-up; None where a seed never reached it."""
    if not epochs_to_target or any(epoch is None for epoch in epochs_to_target):
        return None
    epochs = float(np.median([float(epoch) for epoch in epochs_to_target if epoch is not None]))
    return epochs * math.ceil(train_images / batch_size) * step_seconds + startup_seconds


def busy_text(sittings: Sequence[dict[str, Any]]) -> str:
    repeated = sum(int(sitting.get("repeated", 0)) for sitting in sittings)
    dropped = sum(int(sitting.get("dropped", 0)) for sitting in sittings)
    limit = sittings[-1].get("busy_cores") if sittings else None
    if not repeated and not dropped:
        return (f"The busy check (other processes' CPU time over each timed window, above {limit} cores) found no "
                "contaminated window.")
    return (f"The busy check found other processes using more than {limit} cores while an arm was timed: "
            f"{repeated} arm(s) rerun, {dropped} dropped from their round.")


def arms_of(frameworks: Sequence[str]) -> list[str]:
    return [paths.arm_name(framework, level) for framework in frameworks for level in ("stock", "tuned")]


def epoch_reached(curve: Sequence[float], target: float) -> int | None:
    """The first epoch (1-based) whose validation accuracy reaches ``target``; None if none does."""
    return next((index + 1 for index, value in enumerate(curve) if value >= target), None)


def section(frameworks: Sequence[str], pooled: Sequence[dict[str, Any]], recorded: int, speed_ratio: float,
            epochs_to_target: dict[str, list[int | None]], train_images: int, batch_sizes: dict[str, int],
            target: float, table: Any) -> list[str]:
    """The report's speed section: verdicts per pair, each arm's figures, contention, time to accuracy."""
    lines = ["## Speed (the timing stage's sittings)", ""]
    if not pooled:
        return lines + ["No sitting of the timing stage is recorded (`timing/sittings.json`): `dvc repro timing`.", ""]
    newest = pooled[-1]
    lines += [f"From {len(pooled)} sitting(s) of the timing stage on {newest['machine']['cpu']} "
              f"({newest['machine']['cores']} cores), {pooled[0]['date'][:10]} to {newest['date'][:10]} "
              f"(`timing/sittings.json`, {recorded} recorded; only sittings of this machine, recipe and framework "
              "versions are pooled). In each round every arm ran once in a fresh process, the order rotating "
              "between rounds; ratios pair the arms within a round. *Different* needs two or more sittings, each "
              "different (its interval over rounds beyond the margin) on the same side, and a difference larger "
              "than the sittings vary by: their range, widened by their spread on both sides, beyond the margin; "
              "*equivalent* the same inside it. Intervals are 95%, Bonferroni-corrected over the "
              f"{len(stock_pairs(frameworks)) * 4} speed verdicts. {busy_text(pooled)}", ""]
    for item in verdicts(frameworks, pooled, speed_ratio):
        lines.append(f"- {sentence(item, speed_ratio)}")
    lines.append("")
    arms = arms_of(frameworks)
    keys = [("step_seconds", 1000.0, "{:.2f}"), ("startup_seconds", 1.0, "{:.1f}"),
            ("inference_images_per_second", 1.0, "{:,.0f}"), ("latency_ms", 1.0, "{:.3f}")]
    rows = []
    for arm in arms:
        figures = [arm_figure(pooled, arm, key) for key, _, _ in keys]
        if any(value is not None for value in figures):
            rows.append([backends.label(arm)] + ["-" if value is None else form.format(factor * value)
                                                 for value, (_, factor, form) in zip(figures, keys)])
    columns = ["Training step (ms)", "Start-up and compilation (s)", "Inference (images/s)", "Latency, one image (ms)"]
    lines += ["Each arm's figures, geometric mean over sittings of each sitting's geometric mean over rounds:", "",
              table(["Arm", *columns], rows, ["left", "right", "right", "right", "right"]), "",
              "Within a process: " + "; ".join(f"{column.split(' (')[0].lower()}, {record.MEASURES[key]}"
                                               for column, (key, _, _) in zip(columns, keys)) + ".", ""]
    slowdowns = contention(frameworks, pooled)
    if slowdowns:
        lines += ["**Contention.** Each framework's steady training step with the standard spinning process (one "
                  "Python process busy-looping) holding one core, against the same process's step without it in "
                  "the same round (stock level):", "",
                  table(["Framework", "Slowdown", "95% interval over rounds", "Rounds"],
                        [[backends.label(item.framework), _x(item.estimate),
                          "-" if item.interval is None else f"{_x(item.interval.low)} to {_x(item.interval.high)}",
                          str(item.rounds)] for item in slowdowns], ["left", "right", "right", "right"]),
                  "", "What each framework's documentation recommends for a shared CPU: docs/fairness.md.", ""]
    rows = []
    for framework in frameworks:
        step, startup = arm_figure(pooled, framework, "step_seconds"), arm_figure(pooled, framework, "startup_seconds")
        reached = epochs_to_target.get(framework, [])
        seconds = None if step is None or startup is None else time_to_accuracy(
            reached, train_images, batch_sizes[framework], step, startup)
        rows.append([backends.label(framework), ", ".join("-" if e is None else str(e) for e in reached),
                     "-" if seconds is None else f"{seconds:.1f}"])
    lines += [f"**Time to {100 * target:g}% validation accuracy**: the epochs each seed's training log needed (the "
              "logs' resolution) x the steps per epoch x the steady step time + start-up:", "",
              table(["Framework", "Epochs to target, per seed", "Seconds (median epochs)"], rows,
                    ["left", "right", "right"]), ""]
    return lines
