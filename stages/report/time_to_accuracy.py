"""Time to a target validation accuracy, as MLPerf Training, DAWNBench and AlgoPerf rank runs.

Per replicate, from dvclive's per-epoch logs: the training seconds (cumulative ``epoch_seconds``,
validation included, as ``train_seconds``) and the epochs until validation accuracy first
reaches ``report.target_val_accuracy``. A replicate that never reaches it is *censored*: it is
shown as "not reached in <epochs> epochs (> <seconds> s)" and never dropped. A paired ratio
across seeds is estimated only when every replicate of both arms reached the target; otherwise
the result says how many were censored and gives, for each seed where only one arm reached it,
the bound the censored time implies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stages.report import stats
from stages.report.inputs import Curve


@dataclass(frozen=True)
class Reached:
    """One replicate's time to target; when censored, seconds/epochs are the whole run's."""

    seconds: float
    epochs: int
    censored: bool

    def text(self) -> str:
        if self.censored:
            return f"not reached in {self.epochs} epochs (> {self.seconds:.1f} s)"
        return f"{self.seconds:.1f} s, {self.epochs} epochs"


def reached(val_accuracy: Curve, epoch_seconds: Curve, target: float) -> Reached:
    length = min(len(val_accuracy.values), len(epoch_seconds.values))
    if length == 0:
        raise ValueError("no epochs logged")
    cumulative = np.cumsum(epoch_seconds.values[:length])
    hits = np.flatnonzero(val_accuracy.values[:length] >= target)
    if hits.size == 0:
        return Reached(float(cumulative[-1]), int(val_accuracy.epochs[length - 1]), True)
    first = int(hits[0])
    return Reached(float(cumulative[first]), int(val_accuracy.epochs[first]), False)


@dataclass(frozen=True)
class TimeToTarget:
    """First arm / second arm, seed by seed."""

    target: float
    first: tuple[Reached, ...]
    second: tuple[Reached, ...]
    seconds: stats.Paired | None  # None: not estimable (a replicate is censored)
    epochs: stats.Paired | None
    bounds: tuple[str, ...]  # per seed: the ratio, its bound ("> 1.20", "< 0.80") or "unknown"

    @property
    def censored(self) -> int:
        return sum(item.censored for item in self.first + self.second)


def _bound(first: Reached, second: Reached) -> str:
    ratio = first.seconds / second.seconds
    if not first.censored and not second.censored:
        return f"{ratio:.2f}"
    if first.censored and not second.censored:
        return f"> {ratio:.2f}"  # first would have needed more than its whole run
    if second.censored and not first.censored:
        return f"< {ratio:.2f}"
    return "unknown"  # neither reached it


def compare(first: Sequence[Reached], second: Sequence[Reached], target: float) -> TimeToTarget:
    bounds = tuple(_bound(a, b) for a, b in zip(first, second, strict=True))
    if any(item.censored for item in [*first, *second]):
        return TimeToTarget(target, tuple(first), tuple(second), None, None, bounds)
    seconds = stats.paired_ratio([a.seconds for a in first], [b.seconds for b in second])
    epochs = stats.paired_ratio([float(a.epochs) for a in first], [float(b.epochs) for b in second])
    return TimeToTarget(target, tuple(first), tuple(second), seconds, epochs, bounds)


def sentence(result: TimeToTarget, first: str, second: str, n: int) -> str:
    target = f"{100 * result.target:g}% validation accuracy"
    if result.seconds is None:
        total = 2 * len(result.first)
        return (f"Time to {target}: not estimable, {result.censored} of {total} replicates never reached it "
                f"(censored; per seed, {first} / {second}: {', '.join(result.bounds)}).")
    ratio = result.seconds
    epochs = result.epochs
    assert epochs is not None
    detail = "" if ratio.ci is None else f", 95% CI {ratio.ci.low:.2f}-{ratio.ci.high:.2f}x across {n} seeds"
    return (f"Time to {target}: {first} / {second} = {ratio.estimate:.2f}x in seconds{detail} (paired t on log "
            f"ratios, p = {'-' if ratio.p_value is None else f'{ratio.p_value:.2g}'}); "
            f"{epochs.estimate:.2f}x in epochs.")
