"""stages/common/schemas.py: one definition per output file, checked field by field on reading."""

from __future__ import annotations

import dataclasses
import json

import pytest

from stages.common import schemas
from stages.common.errors import StageError
from stages.common.schemas import PerClass, RunInfo, TrainingSummary

SUMMARY = TrainingSummary(epochs=5, train_loss=0.1, train_accuracy=0.97, val_loss=0.05, val_accuracy=0.99,
                          best_val_accuracy=0.991, train_seconds=20.5, images_per_second=13000.0, parameters=108922,
                          seconds_to_val_accuracy_98=4.1, seconds_to_val_accuracy_99=None)
PER_CLASS = PerClass(class_names=["a", "b"], precision=[1.0, 0.5], recall=[0.5, 1.0], f1=[0.667, 0.667],
                     support=[2, 1], confusion=[[1, 1], [0, 1]])
RUN = RunInfo(framework="torch", seed=1, device="cpu", init="shared", input_scale=1.0, tuning="tuned",
              switches={"onednn": "what it does"}, description="d", semantics={}, environment={"torch": "2"})


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


ALLOWED = ", ".join(field.name for field in dataclasses.fields(TrainingSummary))


@pytest.mark.parametrize(("change", "message"), [
    (lambda raw: raw.pop("epochs"), "epochs: missing (expected an integer)"),
    (lambda raw: raw.update(epoch=5), f"epoch: unknown key (did you mean 'epochs'?); allowed: {ALLOWED}"),
    (lambda raw: raw.update(epochs=5.5), "epochs: expected an integer, got 5.5"),
    (lambda raw: raw.update(epochs=True), "epochs: expected an integer, got True"),
    (lambda raw: raw.update(train_loss=float("nan")), "train_loss: expected a finite number, got nan"),
    (lambda raw: raw.update(train_loss=float("inf")), "train_loss: expected a finite number, got inf"),
    (lambda raw: raw.update(train_loss=None), "train_loss: expected a number, got null"),
    (lambda raw: raw.update(seconds_to_val_accuracy_98="soon"),
     "seconds_to_val_accuracy_98: expected a number, got 'soon'"),
    (lambda raw: raw.update(epochs="5", parameters=None),  # every problem, still one line
     "epochs: expected an integer, got '5'; parameters: expected an integer, got null"),
], ids=["missing", "unknown", "wrong-type", "bool-for-int", "nan", "inf", "null", "wrong-type-optional", "several"])
def test_a_bad_field_is_one_line_naming_the_file_the_field_and_the_fix(tmp_path, change, message):
    raw = dataclasses.asdict(SUMMARY)
    change(raw)
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(StageError) as error:
        schemas.load(TrainingSummary, path, "dvc repro train@1-keras")
    assert str(error.value) == f"{path}: {message}; run `dvc repro train@1-keras`"


@pytest.mark.parametrize(("cls", "change", "message"), [
    (PerClass, lambda raw: raw.update(support=[1, "2"]), "support[1]: expected an integer, got '2'"),
    (PerClass, lambda raw: raw.update(confusion=[[1, 0], [0, 2.5]]), "confusion[1][1]: expected an integer, got 2.5"),
    (PerClass, lambda raw: raw.update(recall=0.5), "recall: expected a list, got 0.5"),
    (RunInfo, lambda raw: raw["switches"].update(onednn=1), "switches.onednn: expected a string, got 1"),
    (RunInfo, lambda raw: raw.update(environment=["torch 2"]), "environment: expected a mapping, got ['torch 2']"),
], ids=["list-item", "nested-list-item", "not-a-list", "dict-value", "not-a-dict"])
def test_list_items_and_mapping_values_are_checked_one_by_one(tmp_path, cls, change, message):
    raw = dataclasses.asdict(PER_CLASS if cls is PerClass else RUN)
    change(raw)
    path = tmp_path / "record.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(StageError) as error:
        schemas.load(cls, path, "fix")
    assert str(error.value) == f"{path}: {message}; run `fix`"


def test_whole_numbers_read_as_floats_in_lists_and_optional_fields_too():
    per_class = schemas.from_dict(PerClass, {**dataclasses.asdict(PER_CLASS), "precision": [1, 0.5]}, "x")
    assert per_class.precision == [1.0, 0.5] and all(isinstance(value, float) for value in per_class.precision)
    summary = schemas.from_dict(TrainingSummary, {**dataclasses.asdict(SUMMARY), "seconds_to_val_accuracy_98": 4}, "x")
    assert isinstance(summary.seconds_to_val_accuracy_98, float)


def test_a_field_type_the_validator_does_not_know_is_a_bug_not_a_bad_file():
    @dataclasses.dataclass(frozen=True)
    class Odd:
        labels: set[int]

    with pytest.raises(TypeError, match="unsupported field type"):
        schemas.from_dict(Odd, {"labels": [1]}, "odd.json")


def test_missing_and_unreadable_files_name_the_file(tmp_path):
    with pytest.raises(StageError, match="absent.json: missing; run `fix`"):
        schemas.load(RunInfo, tmp_path / "absent.json", "fix")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(StageError, match="bad.json: not readable JSON"):
        schemas.load(RunInfo, tmp_path / "bad.json", "fix")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(StageError, match=r"list.json: top level: expected a mapping, got \[1, 2\]; run `fix`"):
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
    with pytest.raises(StageError, match="load_per_core_1m: expected a number, got 'busy'"):
        schemas.load(TrainingSummary, path, "x")
