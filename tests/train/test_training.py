"""stages/train/training.py: the training summary, the epoch log, the input value of a blank pixel."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import subprocess
import sys

import pytest

from stages.backends.base import EpochRecord, NonFiniteLoss
from stages.common import schemas
from stages.train import training
from tests.support import PROJECT_ROOT


def record(epoch: int, val_accuracy: float, seconds: float = 10.0, train_seconds: float = 8.0,
           train_loss: float = 0.5, val_loss: float = 0.4) -> EpochRecord:
    return EpochRecord(epoch=epoch, train_loss=train_loss, train_accuracy=0.9 + epoch / 100, val_loss=val_loss,
                       val_accuracy=val_accuracy, learning_rate=1e-3 * epoch, train_seconds=train_seconds,
                       seconds=seconds)


def test_summary_takes_the_final_epochs_metrics_and_the_best_validation_accuracy():
    records = [record(1, 0.97, train_loss=0.9, val_loss=0.8), record(2, 0.991, train_loss=0.5, val_loss=0.3),
               record(3, 0.985, train_loss=0.4, val_loss=0.35)]

    summary = training.summarize(records, parameters=1234, train_images=100)

    assert summary.epochs == 3 and summary.parameters == 1234
    assert (summary.train_loss, summary.val_loss, summary.val_accuracy) == (0.4, 0.35, 0.985)
    assert summary.train_accuracy == pytest.approx(0.93)
    assert summary.best_val_accuracy == 0.991  # epoch 2, not the last one


def test_time_to_accuracy_counts_every_epoch_up_to_and_including_the_one_that_reached_it():
    records = [record(1, 0.95, seconds=10.0), record(2, 0.981, seconds=12.5), record(3, 0.97, seconds=9.0),
               record(4, 0.992, seconds=11.0)]

    summary = training.summarize(records, parameters=1, train_images=100)

    assert summary.seconds_to_val_accuracy_98 == 22.5  # epochs 1-2 (not 10.0, not 31.5)
    assert summary.seconds_to_val_accuracy_99 == 42.5  # epochs 1-4; epoch 3's dip does not reset it
    assert summary.train_seconds == 42.5


def test_an_accuracy_exactly_at_the_threshold_counts_as_reached():
    summary = training.summarize([record(1, 0.98, seconds=3.0), record(2, 0.99, seconds=4.0)], 1, 10)

    assert (summary.seconds_to_val_accuracy_98, summary.seconds_to_val_accuracy_99) == (3.0, 7.0)


def test_thresholds_never_reached_are_none():
    summary = training.summarize([record(1, 0.5), record(2, 0.979999)], parameters=1, train_images=10)

    assert summary.seconds_to_val_accuracy_98 is None and summary.seconds_to_val_accuracy_99 is None


def test_images_per_second_counts_optimisation_time_only():
    # 3 epochs of 600 images in 2 + 3 + 1 = 6 s of optimisation (validation excluded): 300 images/s.
    records = [record(1, 0.5, seconds=5.0, train_seconds=2.0), record(2, 0.5, seconds=5.0, train_seconds=3.0),
               record(3, 0.5, seconds=5.0, train_seconds=1.0)]

    summary = training.summarize(records, parameters=1, train_images=600)

    assert summary.images_per_second == 300.0
    assert summary.train_seconds == 15.0


def test_images_per_second_is_rounded_to_a_tenth():
    records = [record(epoch, 0.5, seconds=1.0, train_seconds=0.35) for epoch in (1, 2)]

    summary = training.summarize(records, parameters=1, train_images=10)

    assert summary.images_per_second == 28.6  # 20 images in 0.7 s: 28.571...


def test_summary_times_are_rounded_to_milliseconds():
    summary = training.summarize([record(1, 0.99, seconds=1.23456, train_seconds=1.0)], 1, 3)

    assert summary.train_seconds == 1.235 and summary.seconds_to_val_accuracy_99 == 1.235
    assert summary.images_per_second == 3.0


def test_epoch_log_keeps_every_record_in_order():
    log = training.EpochLog("test", epochs=2, train_images=10)
    with log:
        log(record(1, 0.5))
        log(record(2, 0.6))

    assert [item.epoch for item in log.records] == [1, 2]


@pytest.mark.parametrize("field", ["train_loss", "val_loss"])
def test_epoch_log_refuses_a_non_finite_loss(field):
    log = training.EpochLog("test", epochs=1, train_images=10)
    bad = record(1, 0.5, **{field: math.nan})

    with pytest.raises(NonFiniteLoss, match="nan"), log:
        log(bad)

    assert log.records == []


def test_epoch_log_streams_each_epoch_to_dvclive(tmp_path):
    folder = tmp_path / "dvclive" / "keras" / "1"
    with training.EpochLog("test", epochs=2, train_images=10, folder=folder) as log:
        log(record(1, 0.5, val_loss=0.8))
        log(record(2, 0.75, val_loss=0.6))

    rows = (folder / "plots" / "metrics" / "val" / "accuracy.tsv").read_text().splitlines()
    assert rows[0].split("\t")[:2] == ["step", "accuracy"]
    assert [row.split("\t")[:2] for row in rows[1:]] == [["1", "0.5"], ["2", "0.75"]]
    rates = (folder / "plots" / "metrics" / "learning_rate.tsv").read_text().splitlines()
    assert [float(row.split("\t")[1]) for row in rates[1:]] == [0.001, 0.002]


def test_epoch_log_of_a_first_run_that_fails_leaves_no_folder_and_no_temporary(tmp_path):
    folder = tmp_path / "dvclive" / "torch" / "1"

    with pytest.raises(KeyboardInterrupt), training.EpochLog("test", 3, 10, folder=folder) as log:
        log(record(1, 0.5))
        raise KeyboardInterrupt

    assert logs_of(folder.parent) == []


@pytest.mark.parametrize(("normalize", "scale", "expected"), [
    ({"method": "standardize", "mean": 33.0, "std": 78.0}, 1.0, -33.0 / 78.0),
    ({"method": "scale", "mean": 0.0, "std": 255.0}, 1.0, 0.0),
    ({"method": "none", "mean": 0.0, "std": 1.0}, 1 / 255, 0.0),
    ({"method": "standardize", "mean": 10.0, "std": 2.0}, 0.5, -2.5),
])
def test_background_value_is_a_blank_pixel_as_the_model_sees_it(loaded_train, normalize, scale, expected):
    settings = dataclasses.replace(loaded_train, input_scale=scale)

    assert training.background_value({"normalize": normalize}, settings) == pytest.approx(expected)


@pytest.fixture
def loaded_train():
    from stages.common.params import validate
    from tests.support import project_params

    return validate(project_params()).train


def test_epoch_log_writes_one_readable_line_per_epoch(caplog):
    caplog.set_level(logging.INFO, logger="train")
    log = training.EpochLog("Keras seed 1", epochs=5, train_images=60)

    with log:
        log(EpochRecord(epoch=2, train_loss=0.51234, train_accuracy=0.9, val_loss=0.25, val_accuracy=0.975,
                        learning_rate=0.00125, train_seconds=0.5, seconds=1.25))

    assert [record.getMessage() for record in caplog.records if record.name == "train"] == [
        "Keras seed 1 epoch 2/5: train loss 0.5123 acc 90.00% | val loss 0.2500 acc 97.50% | lr 1.25e-03 | "
        "1.2 s (120 images/s)"]


def test_epoch_log_non_finite_loss_names_the_epoch():
    log = training.EpochLog("test", epochs=3, train_images=10)

    with pytest.raises(NonFiniteLoss, match="at epoch 3"), log:
        log(record(3, 0.5, val_loss=math.inf))


def test_epoch_log_writes_only_its_own_folder(tmp_path, monkeypatch):
    """No dvc.yaml, report or experiment of dvclive's own: DVC and the report stage own those."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "dvclive" / "keras" / "1"

    with training.EpochLog("test", epochs=1, train_images=10, folder=folder) as log:
        log(record(1, 0.5))

    assert sorted(path.name for path in tmp_path.iterdir()) == ["dvclive"]
    written = sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())
    assert written == ["metrics.json", "plots/metrics/epoch_seconds.tsv", "plots/metrics/learning_rate.tsv",
                       "plots/metrics/train/accuracy.tsv", "plots/metrics/train/loss.tsv",
                       "plots/metrics/val/accuracy.tsv", "plots/metrics/val/loss.tsv"]


def logs_of(folder) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def previous_logs(tmp_path):
    folder = tmp_path / "dvclive" / "torch" / "1"
    folder.mkdir(parents=True)
    (folder / "good.tsv").write_text("a finished run's logs")
    return folder


@pytest.mark.parametrize("failure", [RuntimeError("the run fails"), KeyboardInterrupt()],
                         ids=["failed", "interrupted"])
def test_epoch_log_of_a_run_that_fails_or_is_interrupted_keeps_the_previous_logs(tmp_path, failure):
    folder = previous_logs(tmp_path)

    with pytest.raises(type(failure)), training.EpochLog("test", 3, 10, folder=folder) as log:
        log(record(1, 0.5))
        assert logs_of(folder) == ["good.tsv"]  # untouched while the run goes ...
        assert log.writing is not None and "plots" in logs_of(log.writing)  # ... which logs beside it
        raise failure

    assert logs_of(folder) == ["good.tsv"]
    assert logs_of(folder.parent) == ["1"]  # no temporary left


def test_epoch_log_of_a_finished_run_replaces_the_previous_logs(tmp_path):
    folder = previous_logs(tmp_path)

    with training.EpochLog("test", 1, 10, folder=folder) as log:
        log(record(1, 0.5))

    assert logs_of(folder) == ["metrics.json", "plots"]
    assert logs_of(folder.parent) == ["1"]


def test_epoch_log_whose_dvclive_cannot_start_leaves_the_previous_logs_and_no_temporary(tmp_path, monkeypatch):
    import dvclive

    def refuse(*arguments, **options):
        raise OSError("dvclive cannot start")

    monkeypatch.setattr(dvclive, "Live", refuse)
    folder = previous_logs(tmp_path)

    with pytest.raises(OSError, match="dvclive cannot start"), training.EpochLog("test", 1, 10, folder=folder):
        pytest.fail("the run started without its logs")

    assert logs_of(folder) == ["good.tsv"]
    assert logs_of(folder.parent) == ["1"]


def test_the_training_summary_replaces_dvclives_when_the_run_ends(tmp_path):
    folder = previous_logs(tmp_path)
    summary = training.summarize([record(1, 0.5)], parameters=7, train_images=10)

    with training.EpochLog("test", 1, 10, folder=folder) as log:
        log(record(1, 0.5))
        log.finish(summary)
        assert not (folder / "metrics.json").exists()  # written beside the previous logs until the end

    assert json.loads((folder / "metrics.json").read_text()) == json.loads(json.dumps(schemas.to_dict(summary)))


KILLED_TRAINING = """
import sys
from pathlib import Path
from stages.backends.base import EpochRecord
from stages.train import training

with training.EpochLog("killed", 3, 10, folder=Path(sys.argv[1])) as log:
    for epoch in (1, 2):
        log(EpochRecord(epoch, 9.0, 0.1, 9.0, 0.1, 0.5, 1.0, 1.0))  # the killed run's numbers: loss 9, rate 0.5
    print("ready", flush=True)
    sys.stdin.read()  # held here, mid-training, until killed
"""


def test_a_training_killed_midway_keeps_the_previous_logs_and_the_next_run_removes_its_temporary(tmp_path):
    folder = tmp_path / "dvclive" / "torch" / "1"
    with training.EpochLog("first", 1, 10, folder=folder) as log:
        log(record(1, 0.5))
    child = subprocess.Popen([sys.executable, "-c", KILLED_TRAINING, str(folder)], cwd=PROJECT_ROOT,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
    finally:
        child.kill()
        child.wait()
    rows = (folder / "plots" / "metrics" / "learning_rate.tsv").read_text().splitlines()
    assert [float(row.split("\t")[1]) for row in rows[1:]] == [0.001]  # the first run's logs, untouched ...
    stale = [name for name in logs_of(folder.parent) if name != "1"]
    assert len(stale) == 1 and stale[0].startswith(".1.") and stale[0].endswith(".tmp")  # ... beside the killed run's

    with training.EpochLog("rerun", 2, 10, folder=folder) as log:
        log(record(1, 0.5))
        log(record(2, 0.6))

    for name in ("learning_rate", "train/loss"):
        rows = (folder / "plots" / "metrics" / f"{name}.tsv").read_text().splitlines()
        assert [row.split("\t")[0] for row in rows[1:]] == ["1", "2"]
    rates = (folder / "plots" / "metrics" / "learning_rate.tsv").read_text().splitlines()
    assert [float(row.split("\t")[1]) for row in rates[1:]] == [0.001, 0.002]  # nothing of the killed run
    assert logs_of(folder.parent) == ["1"]
