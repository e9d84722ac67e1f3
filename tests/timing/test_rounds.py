"""stages/timing: rounds alternate the arms, each in a fresh process; the steady step time leaves
the warm-up out; the sitting is appended to the record."""

from __future__ import annotations

import json
import os
import statistics

import pytest

from stages.common.params import load_params
from stages.timing import __main__ as timing
from stages.timing import record
from stages.timing.worker import epochs_needed
from tests.timing import slow_start
from tests.timing.conftest import set_timing
from tests.timing.worker import COMMAND


def test_rounds_alternate_the_arms_each_in_a_fresh_process(workspace):
    entry = timing.sitting(load_params(), COMMAND)
    arms = ["numpy", "numpy-tuned", "slow_start", "slow_start-tuned"]
    assert [round_["order"] for round_ in entry["rounds"]] == [arms, arms[1:] + arms[:1]]
    for round_ in entry["rounds"]:
        assert set(round_["arms"]) == set(arms)
        started = sorted(round_["arms"], key=lambda arm: round_["arms"][arm]["created"])
        assert started == round_["order"]  # read back from the processes: they ran in the round's order
    pids = [arm["pid"] for round_ in entry["rounds"] for arm in round_["arms"].values()]
    assert len(set(pids)) == 8 and os.getpid() not in pids  # one fresh process per arm and round
    assert (entry["repeated"], entry["dropped"]) == (0, 0)
    assert entry["machine"]["cpu"] and len(entry["identity"]) == 16
    # the switches each arm ran with (a backend's tuned level is code, not params) are part of the identity:
    # a sitting timed with another tuned level is never pooled with this one
    assert {arm: figures["switches"] for arm, figures in entry["rounds"][0]["arms"].items()} == dict.fromkeys(arms, [])
    ran = {arm: [] for arm in arms}
    assert record.identity(load_params(), entry["versions"], ran) == entry["identity"]
    assert record.identity(load_params(), entry["versions"], {**ran, "numpy-tuned": ["a_switch"]}) != entry["identity"]
    # the throughput is all timed passes' images over their seconds, and each pass's rate is kept
    for figures in (arm for round_ in entry["rounds"] for arm in round_["arms"].values()):
        assert len(figures["inference_passes"]) == load_params().timing.inference_repeats
        overall = statistics.harmonic_mean(figures["inference_passes"])
        assert figures["inference_images_per_second"] == pytest.approx(overall, rel=1e-4)


def test_a_figure_measured_another_way_is_never_pooled(workspace, monkeypatch):
    params, versions, switches = load_params(), {"numpy": {"numpy": "2"}}, {"numpy": []}
    before = record.identity(params, versions, switches)
    monkeypatch.setitem(record.MEASURES, "inference_images_per_second", "the median pass")

    assert record.identity(params, versions, switches) != before


def test_the_steady_step_time_leaves_the_slow_first_steps_out(workspace):
    set_timing(workspace, rounds=2, warmup_steps=slow_start.SLOW_STEPS, steps=3)
    entry = timing.sitting(load_params(), COMMAND)
    for round_ in entry["rounds"]:
        slow = round_["arms"]["slow_start"]
        assert slow["step_seconds"] < slow_start.SLOW_SECONDS  # the slow steps were warm-up
        assert slow["startup_seconds"] >= slow_start.SLOW_SECONDS  # ... and start-up includes the first
    # with no warm-up the same backend's median is a slow step: the test above would catch a stage that kept them
    set_timing(workspace, rounds=2, warmup_steps=1, steps=3)
    slow = timing.sitting(load_params(), COMMAND)["rounds"][0]["arms"]["slow_start"]
    assert statistics.median(slow["steps"]) >= slow_start.SLOW_SECONDS


def test_epochs_hold_the_timed_steps_after_the_warm_up():
    assert epochs_needed(6, 2, 3) == 1  # steps 3..6 of one epoch: 4 timed after 2 warm-up
    assert epochs_needed(3, 2, 3) == 2  # epoch 1: step 3 timed; epoch 2: its second and third steps
    assert epochs_needed(2, 0, 3) == 3  # one timed step per epoch


def test_each_run_appends_one_sitting_and_keeps_the_earlier_ones(workspace, monkeypatch):
    monkeypatch.setattr(timing, "WORKER", COMMAND)  # the toy frameworks' worker
    timing.main([])
    timing.main([])
    saved = json.loads((workspace / record.SITTINGS).read_text())["sittings"]
    assert [sitting["sitting"] for sitting in saved] == [1, 2]
    assert record.pooled(saved) == saved  # same machine, recipe and versions
    set_timing(workspace, steps=4)  # another recipe: a new identity, not pooled with the earlier ones
    timing.main([])
    saved = record.load()
    assert len(saved) == 3 and record.pooled(saved) == saved[2:]


def test_an_unreadable_record_stops_the_stage_before_any_timing_and_is_left_as_it_was(workspace, monkeypatch):
    import pytest

    from stages.common.errors import StageError

    monkeypatch.setattr(timing, "WORKER", ("false",))  # any worker started would fail differently
    path = workspace / record.SITTINGS
    path.parent.mkdir(parents=True)
    path.write_text('{"sittings": [{"date": "x"}]}')
    with pytest.raises(StageError, match=r"timing/sittings.json: not a sittings record .*git checkout"):
        timing.main([])
    assert path.read_text() == '{"sittings": [{"date": "x"}]}'
