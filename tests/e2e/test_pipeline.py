"""End to end: the whole pipeline in a real git + DVC repository on tiny generated data.

Every framework trains, is evaluated and is exported to ONNX once per replicate seed and the report
compares them, its ONNX Runtime column included;
`dvc metrics show` and `dvc plots show` work; a second `dvc repro` does nothing; a forced rerun
reproduces the models byte for byte; failures and Ctrl-C leave the previous outputs in place.
"""

from __future__ import annotations

import json
import signal
import subprocess

import numpy as np

from stages.common import schemas
from stages.common.schemas import OnnxMetrics, PerClass, RunInfo, TestMetrics, TrainingSummary
from tests.e2e.conftest import FRAMEWORKS, SEEDS, environment, ran_stages, replicates

STAGES = {"download", "preprocess", *(f"init@{seed}" for seed in SEEDS), *replicates("train"),
          *replicates("evaluate"), *replicates("export"), "timing", "report"}


def test_whole_pipeline_writes_every_output(pipeline_repo):
    root = pipeline_repo.path
    for framework in FRAMEWORKS:
        for seed in SEEDS:
            run = schemas.load(RunInfo, root / f"models/{framework}/{seed}/run.json", "")
            assert (run.framework, run.seed, run.init) == (framework, seed, "shared")
            assert schemas.load(TrainingSummary, root / f"dvclive/{framework}/{seed}/metrics.json", "").epochs == 1
            metrics = schemas.load(TestMetrics, root / f"eval/{framework}/{seed}/metrics.json", "")
            assert metrics.test_images == 60 and 0.0 <= metrics.test_accuracy <= 1.0
            per_class = schemas.load(PerClass, root / f"eval/{framework}/{seed}/per_class.json", "")
            assert sum(per_class.support) == 60
            assert np.load(root / f"eval/{framework}/{seed}/predictions.npy").shape == (60, 10)
            assert (root / f"eval/{framework}/{seed}/confusion.csv").read_text().count("\n") == 61
    report = (root / "reports/report.md").read_text()
    assert "class 7" in report  # class names come from the dataset's metadata
    assert "2 seed(s)" in report and "McNemar" in report
    assert {path.name for path in (root / "reports").glob("*.png")} >= {"metrics_over_seeds.png",
                                                                        "training_curves.png"}


def test_the_report_shows_the_onnx_runtime_column_of_the_real_exports(pipeline_repo):
    """Both frameworks' exports ran on ONNX Runtime; the report quotes their figures and the ratio
    to the framework's own inference, with an interval over the two seeds."""
    from stages.report import onnx
    from tests.report.test_onnx import section_table

    root = pipeline_repo.path
    for framework in FRAMEWORKS:
        for seed in SEEDS:
            record = schemas.load(OnnxMetrics, root / f"eval/{framework}/{seed}/onnx.json", "")
            assert record.error is None and (root / f"onnx/{framework}/{seed}/model.onnx").is_file()
            assert record.different_class_images == 0 and record.test_images == 60
    table = section_table((root / "reports/report.md").read_text(), onnx.HEADING)
    assert table[""] == ["Keras", "PyTorch"]
    assert table["Export route"] == ["`stages.backends.keras.export`", "`stages.backends.torch.export`"]
    assert table["Same predicted class as the framework"] == ["100.00% (0 of 120 image-seeds differ, 2 seeds)"] * 2
    for row in ("Inference throughput, ONNX Runtime / framework", "Latency, ONNX Runtime / framework"):
        assert all(cell.endswith("x]") and " [" in cell for cell in table[row]), table[row]


def test_shared_initialisation_gives_both_frameworks_the_same_starting_weights(pipeline_repo):
    # Both trainers load models/init/<seed>.npz; different seeds give different starting points.
    root = pipeline_repo.path
    first, second = (np.load(root / f"models/init/{seed}.npz") for seed in SEEDS)
    assert first.files == second.files
    assert not np.array_equal(first["w0"], second["w0"])
    limit = np.sqrt(6.0 / (5 * 5 * 1 + 5 * 5 * 16))  # the first conv: 5x5 kernels, 1 -> 16 channels
    assert np.abs(first["w0"]).max() <= limit


def test_second_repro_does_nothing(pipeline_copy):
    result = pipeline_copy.dvc("repro")
    assert ran_stages(result.stdout) == set()
    assert pipeline_copy.up_to_date()


def test_metrics_show_is_one_numeric_summary_with_intervals(pipeline_repo):
    shown = json.loads(pipeline_repo.dvc("metrics", "show", "--json").stdout)
    files = next(iter(shown.values()))["data"]
    assert list(files) == ["reports/metrics.json"]
    data = files["reports/metrics.json"]["data"]
    assert data["seeds"] == len(SEEDS)
    for framework in FRAMEWORKS:
        assert {"test_accuracy", "test_accuracy_ci95", "train_seconds", "train_seconds_ci_low",
                "train_seconds_ci_high"} <= set(data[framework])
    assert {"accuracy_diff_pp", "accuracy_diff_pp_ci95", "accuracy_diff_p", "train_time_ratio"} <= set(
        data["keras_vs_torch"])
    for framework in FRAMEWORKS:  # the ONNX Runtime column (stages/report/onnx.py)
        assert {f"onnx.{framework}.{key}" for key in ("same_class_share", "throughput_ratio", "throughput_ratio_ci_low",
                                                      "latency_ratio")} <= set(data)

    def numbers(node):
        return all(numbers(value) for value in node.values()) if isinstance(node, dict) else \
            isinstance(node, (int, float)) and not isinstance(node, bool)

    assert numbers(data)


def test_plots_show_includes_the_report_images_and_the_curves(pipeline_copy):
    pipeline_copy.dvc("plots", "show", "-o", "plots_out")
    page = (pipeline_copy.path / "plots_out" / "index.html").read_text()
    assert "metrics_over_seeds.png" in page and "disagreements.png" in page
    assert "validation accuracy (mean over seeds)" in page


def test_forced_rerun_is_byte_identical(pipeline_copy):
    root = pipeline_copy.path
    watched = ["models/keras/1/model.keras", "models/torch/1/model.pt", "models/keras/2/model.keras",
               "eval/keras/1/predictions.npy", "eval/torch/2/predictions.npy", "models/init/1.npz"]
    for framework in FRAMEWORKS:
        for name in ("train/loss", "val/accuracy"):
            watched.append(f"dvclive/{framework}/1/plots/metrics/{name}.tsv")
    before = {path: (root / path).read_bytes() for path in watched}
    result = pipeline_copy.dvc("repro", "--force")
    assert ran_stages(result.stdout) == STAGES
    for path, content in before.items():
        assert (root / path).read_bytes() == content, f"{path} changed on a forced rerun"
    # Identical outputs: the lock file records the same model hashes as the committed run.
    assert "models/" not in pipeline_copy.git("diff", "-U0", "dvc.lock").stdout


def test_failed_training_keeps_the_previous_model_and_logs(pipeline_copy):
    root = pipeline_copy.path
    model_before = (root / "models/torch/1/model.pt").read_bytes()
    logs_before = (root / "dvclive/torch/1/metrics.json").read_bytes()
    # Divergence: a learning rate the validator accepts but the network cannot survive.
    pipeline_copy.set_params(lambda raw: raw.update(torch={"learning_rate": 10.0, "optimizer": "sgd",
                                                           "schedule": "constant", "momentum": 0.99}))
    result = pipeline_copy.run("python", "-m", "stages.train", "torch", "1", check=False)
    assert result.returncode == 1
    assert "became" in result.stderr and "no model or metrics were written" in result.stderr
    assert (root / "models/torch/1/model.pt").read_bytes() == model_before
    assert (root / "dvclive/torch/1/metrics.json").read_bytes() == logs_before
    assert not [path for path in root.rglob(".*") if path.name not in (".gitignore", ".dvcignore")
                and ".git" not in path.parts and ".dvc" not in path.parts]


def test_ctrl_c_during_training_keeps_the_previous_model_and_logs(pipeline_copy):
    root = pipeline_copy.path
    model_before = (root / "models/torch/1/model.pt").read_bytes()
    logs_before = (root / "dvclive/torch/1/metrics.json").read_bytes()
    # Batch 1 for 1000 epochs: minutes of work, so the interrupt surely lands mid-training.
    pipeline_copy.set_params(lambda raw: raw.update(torch={"epochs": 1000, "batch_size": 1}))
    # A shell's background jobs inherit SIGINT ignored (CI may run us so); Ctrl-C at a terminal
    # arrives with the default disposition, so give the child that.
    process = subprocess.Popen(["python", "-m", "stages.train", "torch", "1"], cwd=root, env=environment(),
                               stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in process.stderr:  # after epoch 1, dvclive has written partial logs that must not survive
        if "epoch 1/1000" in line:
            break
    assert process.poll() is None, "training ended before it could be interrupted"
    process.send_signal(signal.SIGINT)
    remaining = process.communicate(timeout=120)[1]
    assert process.returncode == 130
    assert "interrupted" in remaining
    assert (root / "models/torch/1/model.pt").read_bytes() == model_before
    assert (root / "dvclive/torch/1/metrics.json").read_bytes() == logs_before
    leftovers = [path for path in root.rglob(".*") if path.name.endswith((".tmp", ".old"))]
    assert not leftovers, leftovers
