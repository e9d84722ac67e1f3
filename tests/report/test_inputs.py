"""stages/report/inputs.py: every replicate's files read through the schemas; each problem is
one line naming the file and the stage that rewrites it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stages.common.errors import StageError
from stages.report import inputs
from tests.report import generated

NAMES = [f"class {i}" for i in range(10)]


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    generated.write_workspace(tmp_path, ("keras", "torch"), (1, 2))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def load():
    return inputs.load_all(["keras", "torch"], [1, 2], generated.labels().astype(np.int64), NAMES)


def test_reads_every_replicate_in_seed_order(workspace):
    results = load()
    assert [(r.framework, r.seed) for items in results.values() for r in items] == [
        ("keras", 1), ("keras", 2), ("torch", 1), ("torch", 2)]
    assert results["torch"][1].curves["val/accuracy"].epochs.tolist() == [1, 2, 3]
    assert results["keras"][0].probabilities.shape == (generated.COUNT, 10)


@pytest.mark.parametrize(("path", "rerun"), [
    ("eval/torch/2/metrics.json", "dvc repro evaluate@2-torch"),
    ("dvclive/keras/1/metrics.json", "dvc repro train@1-keras"),
    ("dvclive/keras/1/plots/metrics/val/loss.tsv", "dvc repro train@1-keras"),
    ("eval/keras/2/predictions.npy", "dvc repro evaluate@2-keras"),
    ("models/torch/1/run.json", "dvc repro train@1-torch"),
])
def test_a_missing_file_names_itself_and_the_stage_to_rerun(workspace, path, rerun):
    (workspace / path).unlink()
    with pytest.raises(StageError, match=rf"{path}: missing; run `{rerun}`"):
        load()


def test_a_metrics_file_with_a_wrong_field_is_refused(workspace):
    path = workspace / "eval/keras/1/metrics.json"
    content = json.loads(path.read_text())
    content["test_accuracy"] = "high"
    path.write_text(json.dumps(content))
    with pytest.raises(StageError, match="eval/keras/1/metrics.json: test_accuracy: expected a number, got 'high'; "
                                         r"run `dvc repro evaluate@1-keras`$"):
        load()


def test_predictions_that_contradict_the_metrics_are_refused(workspace):
    path = workspace / "eval/torch/1/predictions.npy"
    probabilities = np.load(path)
    np.save(path, np.roll(probabilities, 1, axis=1))
    with pytest.raises(StageError, match="predictions give accuracy"):
        load()


@pytest.mark.parametrize("garbage", [bytes(range(256)) * 4, b""], ids=["random-bytes", "empty"])
def test_random_bytes_for_predictions_are_not_a_numpy_file(workspace, garbage):
    path = workspace / "eval/torch/1/predictions.npy"
    path.write_bytes(garbage)

    with pytest.raises(StageError) as caught:
        load()

    found = f"it starts with {garbage[:6]!r}" if garbage else "it is empty"
    assert str(caught.value) == (rf"{path.relative_to(workspace)}: not a numpy file ({found}; a .npy file starts "
                                 r"with b'\x93NUMPY'); run `dvc repro evaluate@1-torch`")


def test_predictions_of_the_wrong_shape_are_refused(workspace):
    np.save(workspace / "eval/torch/1/predictions.npy", np.zeros((3, 10), np.float32))
    with pytest.raises(StageError, match=r"expected float32 of shape \(40, 10\)"):
        load()


def test_a_run_file_for_another_replicate_is_refused(workspace):
    path = workspace / "models/keras/2/run.json"
    path.write_text(path.read_text().replace('"seed": 2', '"seed": 1'))
    with pytest.raises(StageError, match="describes keras seed 1"):
        load()
