"""The report stage as a whole (stages/report/__main__.py) on a generated workspace."""

from __future__ import annotations

import json

import pytest

from stages.common import paths
from stages.common.errors import StageError
from stages.report import __main__ as report
from stages.report.figures import FIGURES
from tests.report import generated


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    generated.write_workspace(tmp_path, ("keras", "torch"), (1, 2, 3))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_writes_the_report_the_metrics_the_curves_and_every_figure(workspace):
    report.main([])
    written = {path.name for path in (workspace / "reports").iterdir()}
    assert written == {"report.md", "metrics.json", "verdicts.json", "curves.csv", *(spec.file for spec in FIGURES)}
    text = (workspace / "reports/report.md").read_text()
    assert "## Conclusions" in text and "## Keras vs PyTorch" in text and "McNemar" in text
    assert "3 seed(s)" in text and "matched pair" in text
    for heading in ("95% CI (seeds + test)", "90% CI (seeds + test)", "Holm p", "Sign-flip p (these models)",
                    "TOST p (seeds + test)", "TOST Holm p", "Seeds needed", "Detectable",
                    "Time to 93% val. accuracy (s)", "The test set's floor", "one family of 6 tests over the whole"):
        assert heading in text, heading
    assert json.loads((workspace / "reports/metrics.json").read_text())["seeds"] == 3
    curves = (workspace / "reports/curves.csv").read_text().splitlines()
    assert curves[0] == "epoch,keras,torch" and len(curves) == 4


def test_one_seed_says_intervals_need_two_and_still_tests_the_predictions(tmp_path, monkeypatch):
    generated.write_workspace(tmp_path, ("keras", "torch"), (1,))
    monkeypatch.chdir(tmp_path)
    report.main([])
    text = (tmp_path / "reports/report.md").read_text()
    assert "**One seed only**" in text and "needs 2+ seeds" in text
    assert "McNemar p" in text and "accuracy 95% CI" in text


def test_a_failing_run_keeps_the_previous_reports(workspace):
    report.main([])
    before = {path.name: path.read_bytes() for path in (workspace / "reports").iterdir()}
    (workspace / "eval/torch/3/metrics.json").unlink()
    with pytest.raises(StageError, match="eval/torch/3/metrics.json: missing"):
        report.main([])
    assert {path.name: path.read_bytes() for path in (workspace / "reports").iterdir()} == before
    assert not [path for path in workspace.iterdir() if path.name.startswith(".reports")]


def test_the_same_inputs_give_the_same_bytes(workspace):
    report.main([])
    first = {path.name: path.read_bytes() for path in (workspace / "reports").iterdir()}
    report.main([])
    assert {path.name: path.read_bytes() for path in (workspace / "reports").iterdir()} == first


def test_the_report_gives_the_stock_comparison_then_what_tuning_buys_then_the_environment(workspace):
    report.main([])

    text = (workspace / "reports/report.md").read_text()
    sections = [text.index(heading) for heading in ("## Conclusions", "## What tuning buys", "## Environment",
                                                     "## Semantic differences")]
    assert sections == sorted(sections)
    tuning_rows = [line for line in text[sections[1]:sections[2]].splitlines() if line.startswith("| Keras")]
    # generated.py: tuned trains in 0.8x the time at 1.5x the inference throughput, same predictions
    assert tuning_rows and "| 0.80x" in tuning_rows[0] and "| 1.50x" in tuning_rows[0]
    assert "+0.00 pp" in tuning_rows[0] and "unchanged (the same accuracy on every seed)" in tuning_rows[0]
    assert "| switches | none | none | switch_a | switch_a |" in text
    assert "| keras_version | 1.0 | - | 1.0 | - |" in text
    assert "| moving variance | biased | unbiased | differs |" in text
    summary = json.loads((workspace / "reports/metrics.json").read_text())
    assert summary["tuning.torch.train_seconds_ratio"] == pytest.approx(0.8)


def test_a_replicate_trained_at_another_level_is_refused(workspace):
    run = workspace / paths.model_dir("torch", 2, "tuned") / paths.RUN_FILE
    run.write_text(json.dumps({**json.loads(run.read_text()), "tuning": "stock"}))

    with pytest.raises(StageError, match=r"torch-tuned/2/run.json: trained stock, evaluated tuned, expected tuned; "
                                         r"run `dvc repro train-tuned@2-torch`"):
        report.main([])

