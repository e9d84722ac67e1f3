"""stages/evaluate.py's pure functions: metrics against hand-computed cases, the files' contents,
the timing loops and the model-folder errors. (The stage end to end, per framework, with a
non-default input_scale and a model/data shape mismatch: tests/trainer_contract.py.)"""

from __future__ import annotations

import csv
import io
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from stages import backends, evaluate
from stages.common import paths, schemas
from stages.common.errors import StageError
from stages.common.params import EvaluateParams
from tests.support import FakeClock

NAMES = ["zero", "one", "two"]
# 5 test images; predictions (argmax): 0, 2, 1, 2, 0 for true labels 0, 1, 1, 2, 2.
LABELS = np.array([0, 1, 1, 2, 2])
PROBABILITIES = np.array([
    [0.7, 0.2, 0.1],
    [0.1, 0.3, 0.6],
    [0.2, 0.5, 0.3],
    [0.1, 0.1, 0.8],
    [0.5, 0.1, 0.4],
], dtype=np.float32)


def test_classification_metrics_match_a_hand_computed_case():
    summary, per_class = evaluate.classification_metrics(PROBABILITIES, LABELS, NAMES)

    assert summary["test_accuracy"] == pytest.approx(3 / 5)
    expected_loss = -(math.log(0.7) + math.log(0.3) + math.log(0.5) + math.log(0.8) + math.log(0.4)) / 5
    assert summary["test_loss"] == pytest.approx(expected_loss, rel=1e-6)
    # precision: zero 1/2, one 1/1, two 1/2; recall: zero 1/1, one 1/2, two 1/2
    assert per_class.precision == pytest.approx([0.5, 1.0, 0.5])
    assert per_class.recall == pytest.approx([1.0, 0.5, 0.5])
    f1 = [2 * 0.5 * 1.0 / 1.5, 2 * 1.0 * 0.5 / 1.5, 0.5]
    assert per_class.f1 == pytest.approx(f1)
    assert summary["macro_precision"] == pytest.approx(2 / 3)
    assert summary["macro_recall"] == pytest.approx(2 / 3)
    assert summary["macro_f1"] == pytest.approx(sum(f1) / 3)
    assert per_class.support == [1, 2, 2]
    assert per_class.confusion == [[1, 0, 0], [0, 1, 1], [1, 0, 1]]  # [actual][predicted]
    assert per_class.class_names == NAMES


def test_per_class_json_holds_the_scores_the_confusion_and_the_names(tmp_path):
    _, per_class = evaluate.classification_metrics(PROBABILITIES, LABELS, NAMES)
    path = tmp_path / paths.PER_CLASS_FILE

    schemas.save(per_class, path)
    raw = json.loads(path.read_text())

    assert list(raw) == ["class_names", "precision", "recall", "f1", "support", "confusion"]
    assert raw["class_names"] == NAMES and raw["support"] == [1, 2, 2]
    assert raw["confusion"] == [[1, 0, 0], [0, 1, 1], [1, 0, 1]]
    assert raw["precision"] == pytest.approx([0.5, 1.0, 0.5])
    assert schemas.load(schemas.PerClass, path, "rerun") == per_class


def test_confusion_csv_has_actual_then_predicted_class_names_per_image():
    text = evaluate.confusion_csv(LABELS, PROBABILITIES.argmax(axis=1), NAMES)

    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["actual", "predicted"]
    assert rows[1:] == [["zero", "zero"], ["one", "two"], ["one", "one"], ["two", "two"], ["two", "zero"]]
    assert text.endswith("\n") and "\r" not in text


def test_confusion_csv_quotes_class_names_with_commas():
    text = evaluate.confusion_csv(np.array([1]), np.array([0]), ["T-shirt/top", "Bag, small"])

    assert list(csv.reader(io.StringIO(text)))[1] == ["Bag, small", "T-shirt/top"]


def test_throughput_times_each_repeat_after_an_untimed_warm_up():
    calls = []

    def predict_all():
        calls.append(1)
        return PROBABILITIES

    probabilities, rates = evaluate.measure_throughput(predict_all, count=5, repeats=3)

    assert len(calls) == 4 and len(rates) == 3  # 1 warm-up + 3 timed
    assert all(rate > 0 for rate in rates)
    np.testing.assert_array_equal(probabilities, PROBABILITIES)


def test_throughput_refuses_inference_that_is_not_deterministic():
    outputs = iter([PROBABILITIES, PROBABILITIES, PROBABILITIES + 1e-7])

    with pytest.raises(RuntimeError, match="different probabilities"):
        evaluate.measure_throughput(lambda: next(outputs), count=5, repeats=2)


def test_latency_times_one_image_per_call_after_warm_up():
    images = np.arange(3 * 4, dtype=np.float32).reshape(3, 2, 2, 1)
    seen = []
    settings = EvaluateParams(batch_size=10, throughput_repeats=1, latency_samples=5, latency_warmup=2)

    seconds = evaluate.measure_latency(lambda image: seen.append(image.copy()), images, settings)

    assert len(seconds) == 5 and all(value >= 0 for value in seconds)
    assert [image.shape for image in seen] == [(1, 2, 2, 1)] * 7
    # Warm-up images 0, 1; then timed images 0, 1, 2, 0, 1 (cycling through the test set).
    assert [int(image[0, 0, 0, 0]) // 4 for image in seen] == [0, 1, 0, 1, 2, 0, 1]


def model_folder(tmp_path, architecture: str | None = "{}", run: dict | None = None):
    folder = tmp_path / "models" / "keras" / "1"
    folder.mkdir(parents=True)
    if architecture is not None:
        (folder / paths.ARCHITECTURE_FILE).write_text(architecture)
    if run is not None:
        (folder / paths.RUN_FILE).write_text(json.dumps(run))
    return folder


# A backend that must never be reached: these folders fail before any model is loaded.
UNREACHED = SimpleNamespace(MODEL_FILE="model.keras", load_model=lambda path, spec: pytest.fail("loaded"))
SPEC = json.dumps({"input_shape": [28, 28, 1], "num_classes": 10, "layers": []})
RUN = {"framework": "keras", "seed": 1, "device": "cpu", "init": "shared", "input_scale": 1.0, "tuning": "stock",
       "switches": {}, "description": "Keras", "semantics": {}, "environment": {}}


def test_missing_architecture_names_the_file_and_the_command(tmp_path):
    folder = model_folder(tmp_path, architecture=None, run=RUN)

    with pytest.raises(StageError, match=r"architecture\.json: missing; run `dvc repro train@1-keras`"):
        evaluate.load_trained(UNREACHED, folder, "dvc repro train@1-keras")


def test_corrupt_architecture_names_the_file_and_the_command(tmp_path):
    folder = model_folder(tmp_path, architecture='{"input_shape": [28, 28]}', run=RUN)

    with pytest.raises(StageError, match=r"architecture\.json: corrupt .*; run `dvc repro train@1-keras`"):
        evaluate.load_trained(UNREACHED, folder, "dvc repro train@1-keras")


def test_missing_run_info_names_the_file_and_the_command(tmp_path):
    folder = model_folder(tmp_path, architecture=SPEC)

    with pytest.raises(StageError, match=r"run\.json: missing; run `dvc repro train@1-keras`"):
        evaluate.load_trained(UNREACHED, folder, "dvc repro train@1-keras")


def test_run_info_with_a_wrong_field_is_refused(tmp_path):
    folder = model_folder(tmp_path, architecture=SPEC, run={**RUN, "input_scale": "1/255"})

    with pytest.raises(StageError, match="input_scale"):
        evaluate.load_trained(UNREACHED, folder, "dvc repro train@1-keras")


def test_throughput_is_images_per_second_of_each_timed_pass(monkeypatch):
    monkeypatch.setattr(evaluate, "time", FakeClock([0.5, 0.25, 2.0]))

    _, rates = evaluate.measure_throughput(lambda: PROBABILITIES, count=5, repeats=3)

    assert rates == [10.0, 20.0, 2.5]


def test_latency_is_the_seconds_of_each_timed_call(monkeypatch):
    monkeypatch.setattr(evaluate, "time", FakeClock([0.001, 0.003, 0.002]))
    settings = EvaluateParams(batch_size=10, throughput_repeats=1, latency_samples=3, latency_warmup=1)

    seconds = evaluate.measure_latency(lambda image: None, np.zeros((2, 2, 2, 1), np.float32), settings)

    assert seconds == pytest.approx([0.001, 0.003, 0.002], abs=1e-12)


def test_command_line_help_names_the_stage_and_its_arguments(capsys):
    with pytest.raises(SystemExit) as exited:
        evaluate.main(["--help"])

    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert "stages.evaluate" in text and "framework" in text and "seed" in text
    assert f"one of: {', '.join(backends.names())}" in text and "the replicate seed (one of replicates.seeds)" in text
    assert "test-set\nmetrics, predictions and speed of one trained model" in text
    assert "--tuning {stock,tuned}" in text
