"""Speed verdicts from sittings (stages/report/speed.py), on small generated sittings, against
scipy; and the pooling rules of the sittings record."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from stages.report import speed
from stages.timing import record

MARGIN = 1.05
METRIC = speed.SPEED_METRICS[2]  # inference throughput: higher is better
STEP = speed.SPEED_METRICS[0]


def sitting(ratios, base=1000.0, cpu="Xeon", identity="a", contended=None) -> dict:
    """A sitting whose rounds give keras / torch = each of ``ratios`` in every speed figure."""
    rounds = []
    for number, ratio in enumerate(ratios, start=1):
        torch = {key: base for key in record.SPEEDS} | {"contended": None}
        keras = {key: base * ratio for key in record.SPEEDS} | {"contended": None}
        if contended is not None:
            keras["contended"] = {"step_seconds": base * ratio * contended[number - 1]}
        rounds.append({"round": number, "arms": {"keras": keras, "torch": torch}})
    return {"date": "2026-12-07T00:00:00+00:00", "machine": {"cpu": cpu, "cores": "2"}, "identity": identity,
            "rounds": rounds, "repeated": 0, "dropped": 0, "busy_cores": 0.2}


def reference(values, confidence):
    values = np.asarray(values, float)
    return stats.t.interval(confidence, len(values) - 1, loc=values.mean(), scale=stats.sem(values))


def test_each_sittings_interval_matches_scipy_and_gives_the_sittings_own_word():
    raws = ([2.4, 2.5, 2.6], [2.3, 2.45, 2.5], [1.0, 1.04, 0.98])
    item = speed.judge("keras", "torch", METRIC, [sitting(raw) for raw in raws], math.log(MARGIN), family=4)
    confidence = 1 - 0.05 / 4
    for found, raw in zip(item.sittings, raws):
        low, high = reference(np.log(raw), confidence)
        assert (found.interval.low, found.interval.high) == pytest.approx((low, high), rel=1e-9)
    assert [found.word for found in item.sittings] == ["different", "different", "inconclusive"]
    means = [np.log(raw).mean() for raw in raws]
    assert item.estimate == pytest.approx(np.mean(means))
    assert item.spread == pytest.approx(max(means) - min(means))


def test_a_ratio_far_from_1_in_every_sitting_is_different_with_its_spread_printed():
    # the issue's figures: Keras' throughput 2.4-2.6x PyTorch's in every sitting
    sittings = [sitting([2.36, 2.4, 2.5]), sitting([2.5, 2.56, 2.6]), sitting([2.45, 2.5, 2.52])]
    item = speed.judge("keras", "torch", METRIC, sittings, math.log(MARGIN), family=4)
    assert item.word == "different"
    text = speed.sentence(item, MARGIN)
    assert text.startswith("Different: Keras is 2.4")
    assert "per sitting 2.42x different, 2.55x different, 2.49x different" in text
    assert "between-sitting spread 1.06x" in text  # 2.553 / 2.419
    # Keras' latency 15-22x PyTorch's (lower is better): PyTorch is the faster, and it is different too
    latency = [sitting([15.4, 16, 15]), sitting([22.5, 22, 23]), sitting([18.0, 18.2, 17.9])]
    item = speed.judge("keras", "torch", speed.SPEED_METRICS[3], latency, math.log(MARGIN), family=4)
    assert item.word == "different" and speed.sentence(item, MARGIN).startswith("Different: PyTorch is ")
    # ... and with two sittings too: the rule needs no t quantile with one degree of freedom
    assert speed.judge("keras", "torch", speed.SPEED_METRICS[3], latency[:2], math.log(MARGIN), 4).word == "different"


def test_one_sitting_never_carries_a_verdict_and_sittings_that_disagree_are_inconclusive():
    one = [sitting([0.80, 0.82, 0.83])]
    item = speed.judge("keras", "torch", STEP, one, math.log(MARGIN), 4)
    assert item.sittings[0].word == "different"
    assert item.word == "inconclusive" and "cannot show how much sittings vary" in item.settle
    # 0.82x then 0.98x (the training times): the second sitting's interval includes the margin
    two = one + [sitting([0.96, 0.98, 1.0])]
    item = speed.judge("keras", "torch", STEP, two, math.log(MARGIN), 4)
    assert item.word == "inconclusive" and "disagree (different, " in item.settle
    # each sitting clearly different, but in opposite directions: a rule on the pooled ratio alone would not see it
    opposite = [sitting([1.5, 1.52, 1.55]), sitting([0.6, 0.62, 0.61])]
    item = speed.judge("keras", "torch", STEP, opposite, math.log(MARGIN), 4)
    assert item.word == "inconclusive" and "disagree (different, different)" in item.settle


def test_agreeing_sittings_that_vary_by_more_than_the_difference_are_inconclusive():
    # every sitting beyond the margin on the same side, but 1.12x then 1.6x: they vary by 1.43x, more than
    # 1.12x clears the margin by, so a next sitting could land inside it
    wide = [sitting([1.12, 1.125, 1.13]), sitting([1.6, 1.62, 1.61])]
    item = speed.judge("keras", "torch", STEP, wide, math.log(MARGIN), 4)
    assert [found.word for found in item.sittings] == ["different", "different"]
    assert item.word == "inconclusive" and "they vary by 1.43x" in item.settle
    # the same spread far from 1 is different
    far = [sitting([3.0, 3.01, 3.02]), sitting([4.3, 4.31, 4.29])]
    assert speed.judge("keras", "torch", STEP, far, math.log(MARGIN), 4).word == "different"


def test_equivalent_only_when_every_sitting_and_their_spread_lie_inside_the_margin():
    close = [sitting([1.0, 1.01, 0.995]), sitting([1.005, 1.0, 1.01]), sitting([1.0, 1.005, 1.003])]
    assert speed.judge("keras", "torch", STEP, close, math.log(MARGIN), 4).word == "equivalent"
    assert speed.judge("keras", "torch", STEP, close, math.log(1.001), 4).word == "inconclusive"
    # each sitting equivalent on its own, but 0.97x then 1.03x: widened by their spread they reach past 1.05x
    drifting = [sitting([0.97, 0.971, 0.969]), sitting([1.03, 1.031, 1.029])]
    item = speed.judge("keras", "torch", STEP, drifting, math.log(MARGIN), 4)
    assert [found.word for found in item.sittings] == ["equivalent", "equivalent"] and item.word == "inconclusive"
    # sittings whose own intervals are all too wide: more rounds, not more sittings, would settle it
    noisy = [sitting([0.8, 1.3, 1.0]), sitting([1.2, 0.85, 1.05])]
    item = speed.judge("keras", "torch", STEP, noisy, math.log(MARGIN), 4)
    assert item.word == "inconclusive" and "more rounds per sitting" in item.settle


def test_the_bonferroni_family_widens_every_interval():
    sittings = [sitting([1.10, 1.2, 1.15])]
    alone = speed.judge("keras", "torch", STEP, sittings, math.log(MARGIN), 1).sittings[0].interval
    many = speed.judge("keras", "torch", STEP, sittings, math.log(MARGIN), 40).sittings[0].interval
    assert many.low < alone.low and many.high > alone.high
    assert (alone.low, alone.high) == pytest.approx(reference(np.log([1.10, 1.2, 1.15]), 0.95))


def test_the_contention_slowdown_is_paired_per_round_with_its_interval_from_scipy():
    slow = [12.0, 14.0, 11.0]
    sittings = [sitting([1.0, 1.1, 0.9], contended=slow)]
    [found] = speed.contention(["keras", "torch"], sittings)
    assert found.framework == "keras" and found.rounds == 3
    assert math.exp(found.estimate) == pytest.approx(stats.gmean(slow))
    assert (found.interval.low, found.interval.high) == pytest.approx(reference(np.log(slow), 0.95))


def test_sittings_of_another_machine_or_recipe_are_not_pooled():
    sittings = [sitting([2.0], identity="a"), sitting([2.0], cpu="EPYC"), sitting([2.0], identity="b"),
                sitting([2.0], identity="a")]
    assert record.pooled(sittings) == [sittings[0], sittings[3]]
    assert record.pooled([]) == []


def test_time_to_accuracy_is_steps_to_the_target_times_the_steady_step_plus_start_up():
    assert speed.epoch_reached([0.97, 0.985, 0.991, 0.993], 0.99) == 3
    assert speed.epoch_reached([0.9], 0.99) is None
    # median epochs 3, 54,000 images at batch 128: 422 steps per epoch
    assert speed.time_to_accuracy([2, 3, 3], 54000, 128, 0.015, 4.0) == pytest.approx(3 * 422 * 0.015 + 4.0)
    assert speed.time_to_accuracy([2, None], 54000, 128, 0.015, 4.0) is None
