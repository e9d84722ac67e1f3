"""The timing stage through real `dvc repro`: one sitting appended per run, read by the report."""

from __future__ import annotations

import json

from tests.e2e.conftest import ran_stages


def test_the_pipeline_runs_the_timing_stage_and_the_report_shows_speed_from_it(pipeline_repo):
    root = pipeline_repo.path
    record = json.loads((root / "timing/sittings.json").read_text())
    assert len(record["sittings"]) == 1
    sitting = record["sittings"][0]
    assert [round_["order"] for round_ in sitting["rounds"]] == [
        ["keras", "keras-tuned", "torch", "torch-tuned"], ["keras-tuned", "torch", "torch-tuned", "keras"]]
    pids = [arm["pid"] for round_ in sitting["rounds"] for arm in round_["arms"].values()]
    assert len(set(pids)) == len(pids) == 8  # a fresh process per arm and round
    for round_ in sitting["rounds"]:
        assert round_["arms"]["torch"]["contended"]["step_seconds"] > 0  # stock arms: contention too
        assert round_["arms"]["torch-tuned"]["contended"] is None
    report = (root / "reports/report.md").read_text()
    assert "## Speed (the timing stage's sittings)" in report
    assert "**Contention.**" in report and "Busy machine" not in report and "1-minute load" not in report
    verdicts = json.loads((root / "reports/verdicts.json").read_text())["keras_vs_torch"]
    assert {"step_seconds", "startup_seconds", "inference_images_per_second", "latency_ms"} <= set(verdicts)
    assert "train_seconds" not in verdicts  # speed verdicts no longer come from the seeds


def test_a_forced_rerun_appends_a_sitting_and_the_report_pools_both(pipeline_copy):
    result = pipeline_copy.dvc("repro", "-s", "-f", "timing")
    assert ran_stages(result.stdout) == {"timing"}
    pipeline_copy.dvc("repro")
    record = json.loads((pipeline_copy.path / "timing/sittings.json").read_text())
    assert [sitting["sitting"] for sitting in record["sittings"]] == [1, 2]
    assert "From 2 sitting(s) of the timing stage" in (pipeline_copy.path / "reports/report.md").read_text()
