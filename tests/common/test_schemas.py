"""stages/common/schemas.py: one definition per output file, checked field by field on reading."""

from __future__ import annotations

import dataclasses
import json

import pytest

from stages.common import schemas
from stages.common.errors import StageError
from stages.common.schemas import RunInfo, TrainingSummary

SUMMARY = TrainingSummary(epochs=5, train_loss=0.1, train_accuracy=0.97, val_loss=0.05, val_accuracy=0.99,
                          best_val_accuracy=0.991, train_seconds=20.5, images_per_second=13000.0, parameters=108922,
                          seconds_to_val_accuracy_98=4.1, seconds_to_val_accuracy_99=None)


def test_save_then_load_gives_the_same_record(tmp_path):
    schemas.save(SUMMARY, tmp_path / "metrics.json")
    assert schemas.load(TrainingSummary, tmp_path / "metrics.json", "dvc repro") == SUMMARY
    assert list(json.loads((tmp_path / "metrics.json").read_text())) == [f.name for f in dataclasses.fields(SUMMARY)]


def test_whole_numbers_read_as_floats_where_the_field_is_a_float(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"framework": "torch", "seed": 1, "device": "cpu",
                                                   "init": "shared", "input_scale": 1, "tuning": "stock",
                                                   "switches": {}, "description": "d", "semantics": {},
                                                   "environment": {"torch": "2"}}))
    info = schemas.load(RunInfo, tmp_path / "run.json", "x")
    assert isinstance(info.input_scale, float)


@pytest.mark.parametrize(("change", "message"), [
    (lambda raw: raw.pop("epochs"), "missing epochs"),
    (lambda raw: raw.update(step=5), "unexpected step"),
    (lambda raw: raw.update(epochs=5.5), "epochs should be"),
    (lambda raw: raw.update(epochs=True), "epochs should be"),
    (lambda raw: raw.update(train_loss=float("nan")), "train_loss should be"),
    (lambda raw: raw.update(train_loss=None), "train_loss should be"),
    (lambda raw: raw.update(seconds_to_val_accuracy_98="soon"), "seconds_to_val_accuracy_98 should be"),
])
def test_a_bad_field_is_one_line_naming_the_file_and_the_fix(tmp_path, change, message):
    raw = dataclasses.asdict(SUMMARY)
    change(raw)
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(StageError, match=rf"{path}: .*{message}.*; run `dvc repro train@1-keras`") as error:
        schemas.load(TrainingSummary, path, "dvc repro train@1-keras")
    assert "\n" not in str(error.value)


def test_missing_and_unreadable_files_name_the_file(tmp_path):
    with pytest.raises(StageError, match="absent.json: missing; run `fix`"):
        schemas.load(RunInfo, tmp_path / "absent.json", "fix")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(StageError, match="bad.json: not readable JSON"):
        schemas.load(RunInfo, tmp_path / "bad.json", "fix")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(StageError, match="list.json: expected a JSON object"):
        schemas.load(RunInfo, tmp_path / "list.json", "fix")


def test_the_load_fields_are_optional_and_checked_when_present(tmp_path):
    raw = dataclasses.asdict(SUMMARY)
    for name in ("load_per_core_1m", "timing_spread"):
        raw.pop(name)
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(raw))
    assert schemas.load(TrainingSummary, path, "x").load_per_core_1m is None  # files from before still read
    path.write_text(json.dumps({**raw, "load_per_core_1m": 1.7, "timing_spread": 0.05}))
    loaded = schemas.load(TrainingSummary, path, "x")
    assert (loaded.load_per_core_1m, loaded.timing_spread) == (1.7, 0.05)
    path.write_text(json.dumps({**raw, "load_per_core_1m": "busy"}))
    with pytest.raises(StageError, match="load_per_core_1m should be"):
        schemas.load(TrainingSummary, path, "x")
