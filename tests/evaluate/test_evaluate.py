"""stages/evaluate/__main__.py's pure functions: metrics against hand-computed cases, the files'
contents. (The timing loops: tests/common/test_metrics.py; the model-folder errors:
tests/common/test_trained.py.) (The stage end to end, per framework, with a
non-default input_scale and a model/data shape mismatch: tests/trainer_contract.py.)"""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest

from stages import backends
from stages.common import paths, schemas
from stages.evaluate import __main__ as evaluate

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


def test_command_line_help_names_the_stage_and_its_arguments(capsys):
    with pytest.raises(SystemExit) as exited:
        evaluate.main(["--help"])

    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert "stages.evaluate" in text and "framework" in text and "seed" in text
    assert f"one of: {', '.join(backends.names())}" in text and "the replicate seed (one of replicates.seeds)" in text
    assert "test-set\nmetrics, predictions and speed of one trained model" in text
    assert "--tuning {stock,tuned}" in text
