"""stages/common/training.py: the training summary, the epoch log, the input value of a blank pixel."""

from __future__ import annotations

import math

import pytest

from stages.backends.base import EpochRecord, NonFiniteLoss
from stages.common import training


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


def test_epoch_log_of_a_failed_run_leaves_no_partial_logs(tmp_path):
    folder = tmp_path / "dvclive" / "torch" / "1"

    with pytest.raises(KeyboardInterrupt), training.EpochLog("test", 3, 10, folder=folder) as log:
        log(record(1, 0.5))
        raise KeyboardInterrupt

    assert not folder.exists()


@pytest.mark.parametrize(("normalize", "scale", "expected"), [
    ({"method": "standardize", "mean": 33.0, "std": 78.0}, 1.0, -33.0 / 78.0),
    ({"method": "scale", "mean": 0.0, "std": 255.0}, 1.0, 0.0),
    ({"method": "none", "mean": 0.0, "std": 1.0}, 1 / 255, 0.0),
    ({"method": "standardize", "mean": 10.0, "std": 2.0}, 0.5, -2.5),
])
def test_background_value_is_a_blank_pixel_as_the_model_sees_it(loaded_train, normalize, scale, expected):
    import dataclasses

    settings = dataclasses.replace(loaded_train, input_scale=scale)

    assert training.background_value({"normalize": normalize}, settings) == pytest.approx(expected)


@pytest.fixture
def loaded_train():
    from stages.common.params import validate
    from tests.support import project_params

    return validate(project_params()).train
