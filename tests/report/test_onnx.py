"""The report's ONNX Runtime column (stages/report/onnx.py) on generated inputs: every framework's
row, "no route" and why for one without an exporter, the ONNX Runtime / framework ratios with
their intervals against scipy, the figures in reports/metrics.json, and the inputs check naming
the export stage to rerun."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from stages import backends
from stages.common.errors import StageError
from stages.report import __main__ as report
from stages.report import onnx
from tests.report import generated

SEEDS = (1, 2, 3)


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    monkeypatch.setitem(backends.REGISTRY, "numpy", ("tests.numpy_backend", "NumPy"))
    generated.write_workspace(tmp_path, ("keras", "torch", "numpy"), SEEDS)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def section_table(text: str, heading: str = onnx.HEADING) -> dict[str, list[str]]:
    """The first table under ``heading``: row label -> cells, one per framework."""
    lines = text[text.index(heading + "\n"):].splitlines()[1:]
    rows = [line for line in lines[:next(i for i, line in enumerate(lines) if line.startswith("#"))]
            if line.startswith("|")]
    table = {}
    for line in rows[:1] + rows[2:]:  # the header, then the body (rows[1] aligns the columns)
        cells = [cell.strip() for cell in line.strip("|").split(" | ")]
        table[cells[0]] = cells[1:]
    return table


def scipy_ratio(first: list[float], second: list[float]) -> tuple[float, float, float]:
    """Geometric mean of first/second and the 95% t interval of the mean log ratio, exponentiated:
    scipy's gmean and ttest_1samp, independent of stages/report/stats.py."""
    logs = np.log(np.asarray(first) / np.asarray(second))
    interval = scipy_stats.ttest_1samp(logs, 0.0).confidence_interval(0.95)
    return (float(scipy_stats.gmean(np.asarray(first) / np.asarray(second))), math.exp(interval.low),
            math.exp(interval.high))


def framework_throughput(index: int, seed: int) -> float:
    return 10_000.0 * (index + 1) + 10 * seed  # generated.write_workspace's stock arms


def test_the_report_has_an_onnx_runtime_row_for_every_framework_and_no_route_says_why(workspace):
    report.main([])
    text = (workspace / "reports/report.md").read_text()
    assert text.index("## Every framework") < text.index(onnx.HEADING) < text.index("## What tuning buys")
    table = section_table(text)
    assert table[""] == ["Keras", "PyTorch", "NumPy"]
    assert table["Export route"][:2] == ["`stages.backends.example.export`"] * 2
    assert table["Export route"][2] == f"no route: {generated.NO_ROUTE['numpy']}"
    for label, cells in table.items():
        if label:
            assert cells[2] in ("no route", f"no route: {generated.NO_ROUTE['numpy']}"), label
            assert "no route" not in cells[0] and "no route" not in cells[1], label
    # generated.onnx_figures: seed x 1e-7 at most, seed 3 classes one of 40 images differently
    assert table["Largest probability difference vs the framework"][:2] == ["3e-07", "3e-07"]
    assert table["Same predicted class as the framework"][0] == "99.17% (1 of 120 image-seeds differ, 3 seeds)"
    accuracy = [float(np.mean(generated.probabilities("torch", seed).argmax(axis=1) == generated.labels()))
                for seed in SEEDS]
    assert table["Test accuracy on ONNX Runtime"][1].startswith(f"{100 * np.mean(accuracy):.2f}% ± ")
    # the tuned arms have a table of their own; the toy's tuned arm keeps its row too
    tuned = section_table(text, onnx.TUNED_HEADING)
    assert tuned[""] == ["Keras (tuned)", "PyTorch (tuned)", "NumPy (tuned)"]
    assert tuned["Latency, ONNX Runtime / framework"][2] == "no route"


@pytest.mark.parametrize(("framework", "index"), [("keras", 0), ("torch", 1)])
def test_the_ratios_to_the_framework_and_their_intervals_are_scipys(workspace, framework, index):
    """Per seed, ONNX Runtime runs (1.9 + 0.1 seed)x the framework's throughput: ratios 2.0, 2.1
    and 2.2, whose geometric mean is 9.24^(1/3) = 2.0984 (the arithmetic mean, 2.1, or the ratio
    of the arithmetic means would print 2.100x; the framework over ONNX Runtime 0.477x); a
    normal quantile in place of t, or the seeds unpaired, would move the interval."""
    report.main([])
    figures = [generated.onnx_figures(framework, seed, framework_throughput(index, seed)) for seed in SEEDS]
    throughput = scipy_ratio([float(f["throughput_images_per_second"]) for f in figures],
                             [framework_throughput(index, seed) for seed in SEEDS])
    latency = scipy_ratio([float(f["latency_ms_median"]) for f in figures], [generated.LATENCY_MS] * len(SEEDS))
    assert throughput[0] == pytest.approx(9.24 ** (1 / 3), rel=1e-9)  # the hand-worked geometric mean
    normal = math.exp(np.log([2.0, 2.1, 2.2]).mean() + 1.96 * np.log([2.0, 2.1, 2.2]).std(ddof=1) / math.sqrt(3))
    assert abs(normal - throughput[2]) > 0.05  # so the check below tells t from a normal quantile

    table = section_table((workspace / "reports/report.md").read_text())
    column = ["keras", "torch"].index(framework)
    for row, (estimate, low, high) in (("Inference throughput, ONNX Runtime / framework", throughput),
                                       ("Latency, ONNX Runtime / framework", latency)):
        assert table[row][column] == f"{estimate:.3f}x [{low:.3f}x, {high:.3f}x]", row
    summary = json.loads((workspace / "reports/metrics.json").read_text())
    for key, (estimate, low, high) in (("throughput_ratio", throughput), ("latency_ratio", latency)):
        prefix = f"onnx.{framework}.{key}"
        assert (summary[prefix], summary[prefix + "_ci_low"], summary[prefix + "_ci_high"]) == pytest.approx(
            (estimate, low, high), rel=1e-5)


def test_metrics_json_holds_the_stock_figures_as_numbers_and_none_for_a_framework_without_route(workspace):
    report.main([])
    summary = json.loads((workspace / "reports/metrics.json").read_text())
    found = {key for key in summary if key.startswith("onnx.")}
    figures = {"max_abs_probability_difference", "same_class_share", "test_accuracy", "throughput_images_per_second",
               "latency_ms", "throughput_ratio", "throughput_ratio_ci_low", "throughput_ratio_ci_high",
               "latency_ratio", "latency_ratio_ci_low", "latency_ratio_ci_high"}
    assert found == {f"onnx.{framework}.{name}" for framework in ("keras", "torch") for name in figures}
    assert all(isinstance(summary[key], float) for key in found)
    assert summary["onnx.torch.same_class_share"] == pytest.approx(np.mean([1, 1, 39 / 40]), rel=1e-5)
    assert summary["onnx.keras.max_abs_probability_difference"] == pytest.approx(3e-7)


def test_one_seed_gives_the_ratio_without_an_interval(tmp_path, monkeypatch):
    generated.write_workspace(tmp_path, ("keras", "torch"), (1,))
    monkeypatch.chdir(tmp_path)
    report.main([])
    table = section_table((tmp_path / "reports/report.md").read_text())
    assert table["Inference throughput, ONNX Runtime / framework"][0] == "2.000x (needs 2+ seeds for an interval)"
    summary = json.loads((tmp_path / "reports/metrics.json").read_text())
    assert "onnx.keras.throughput_ratio" in summary and "onnx.keras.throughput_ratio_ci_low" not in summary


@pytest.mark.parametrize(("path", "rerun"), [("eval/torch/2/onnx.json", "dvc repro export@2-torch"),
                                             ("eval/keras-tuned/1/onnx.json", "dvc repro export-tuned@1-keras")])
def test_a_missing_export_names_the_stage_to_rerun_and_keeps_the_previous_reports(workspace, path, rerun):
    report.main([])
    before = {file.name: file.read_bytes() for file in (workspace / "reports").iterdir()}
    (workspace / path).unlink()
    with pytest.raises(StageError, match=rf"^{path}: missing; run `{rerun}`$"):
        report.main([])
    assert {file.name: file.read_bytes() for file in (workspace / "reports").iterdir()} == before


def test_an_export_of_another_test_split_or_without_its_figures_is_refused(workspace):
    path = workspace / "eval/keras/1/onnx.json"
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "test_images": 41}))
    with pytest.raises(StageError, match=r"eval/keras/1/onnx.json: 41 test images, but data/prepared holds 40; "
                                         r"run `dvc repro export@1-keras`"):
        report.main([])
    path.write_text(json.dumps({**record, "latency_ms_median": None}))
    with pytest.raises(StageError, match=r"eval/keras/1/onnx.json: expected every figure of a working export, "
                                         r"latency_ms_median missing; run `dvc repro export@1-keras`"):
        report.main([])
