"""End to end: the whole pipeline in a real git + DVC repository on tiny generated data.

Covers the training, evaluation and reporting issues: both frameworks train, evaluate and are
compared; `dvc metrics show` and `dvc plots show` work; a second `dvc repro` does nothing; a
forced rerun reproduces the models byte for byte and the metrics exactly.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time

import numpy as np

from tests.e2e.conftest import environment, ran_stages

STAGES = {"download", "preprocess", "train@keras", "train@torch", "evaluate@keras", "evaluate@torch", "report"}
FRAMEWORKS = ("keras", "torch")


def test_whole_pipeline_writes_every_output(pipeline_repo):
    root = pipeline_repo.path
    for framework in FRAMEWORKS:
        assert (root / "models" / framework / "architecture.json").is_file()
        summary = json.loads((root / "dvclive" / framework / "metrics.json").read_text())
        assert summary["framework"] == framework and summary["epochs"] == 1
        metrics = json.loads((root / "metrics" / f"{framework}.json").read_text())
        assert metrics["test_images"] == 60 and 0.0 <= metrics["test_accuracy"] <= 1.0
        probabilities = np.load(root / "eval" / framework / "predictions.npy")
        assert probabilities.shape == (60, 10)
        assert (root / "eval" / framework / "confusion.csv").read_text().count("\n") == 61
    assert (root / "models/keras/model.keras").is_file() and (root / "models/torch/model.pt").is_file()
    report = (root / "reports/report.md").read_text()
    assert "class 7" in report  # class names come from the dataset's metadata
    assert len(list((root / "reports").glob("*.png"))) == 6


def test_second_repro_does_nothing(pipeline_copy):
    result = pipeline_copy.dvc("repro")
    assert ran_stages(result.stdout) == set()
    assert "Data and pipelines are up to date" in pipeline_copy.dvc("status").stdout


def test_metrics_show_lists_both_frameworks(pipeline_repo):
    shown = json.loads(pipeline_repo.dvc("metrics", "show", "--json").stdout)
    files = next(iter(shown.values()))["data"]
    for framework in FRAMEWORKS:
        assert "test_accuracy" in files[f"metrics/{framework}.json"]["data"]
        assert "images_per_second" in files[f"dvclive/{framework}/metrics.json"]["data"]


def test_plots_show_writes_html(pipeline_copy):
    pipeline_copy.dvc("plots", "show", "-o", "plots_out")
    page = (pipeline_copy.path / "plots_out" / "index.html").read_text()
    for title in ("Cross-entropy loss per epoch", "Keras confusion matrix", "PyTorch confusion matrix"):
        assert title in page


def test_forced_rerun_is_byte_identical(pipeline_copy):
    root = pipeline_copy.path
    watched = ["models/keras/model.keras", "models/torch/model.pt", "eval/keras/predictions.npy",
               "eval/torch/predictions.npy"]
    for framework in FRAMEWORKS:
        for split in ("train", "val"):
            for name in ("loss", "accuracy"):
                watched.append(f"dvclive/{framework}/plots/metrics/{split}/{name}.tsv")
    before = {path: (root / path).read_bytes() for path in watched}
    metrics_before = {f: json.loads((root / f"metrics/{f}.json").read_text()) for f in FRAMEWORKS}
    result = pipeline_copy.dvc("repro", "--force")
    assert ran_stages(result.stdout) == STAGES
    for path, content in before.items():
        assert (root / path).read_bytes() == content, f"{path} changed on a forced rerun"
    for framework in FRAMEWORKS:
        after = json.loads((root / f"metrics/{framework}.json").read_text())
        for key in ("test_accuracy", "test_loss", "macro_f1", "parameters", "model_bytes"):
            assert after[key] == metrics_before[framework][key]
    # Identical outputs: the lock file records the same model hashes as the committed run.
    assert "models/" not in pipeline_copy.git("diff", "-U0", "dvc.lock").stdout


def test_interrupted_or_failed_training_keeps_the_previous_model(pipeline_copy):
    root = pipeline_copy.path
    model_before = (root / "models/torch/model.pt").read_bytes()
    # Divergence: a learning rate the validator accepts but the network cannot survive.
    pipeline_copy.set_params(lambda raw: raw.update(torch={"learning_rate": 10.0, "optimizer": "sgd",
                                                           "schedule": "constant", "momentum": 0.99}))
    result = pipeline_copy.run("python", "-m", "stages.train_torch", check=False)
    assert result.returncode == 1
    assert "became" in result.stderr and "no model or metrics were written" in result.stderr
    assert (root / "models/torch/model.pt").read_bytes() == model_before
    assert not [path for path in (root / "models").rglob("*") if path.name.startswith(".")
                and path.name != ".gitignore"]


def test_ctrl_c_during_training_keeps_the_previous_model(pipeline_copy):
    root = pipeline_copy.path
    model_before = (root / "models/torch/model.pt").read_bytes()
    logs_before = (root / "dvclive/torch/metrics.json").read_bytes()
    # Batch 1 for 1000 epochs: minutes of work, so the interrupt surely lands mid-training.
    pipeline_copy.set_params(lambda raw: raw.update(torch={"epochs": 1000, "batch_size": 1}))
    # A shell's background jobs inherit SIGINT ignored (CI may run us so); Ctrl-C at a terminal
    # arrives with the default disposition, so give the child that.
    process = subprocess.Popen(["python", "-m", "stages.train_torch"], cwd=root, env=environment(),
                               stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    for line in process.stderr:
        if "epoch 1/1000" in line or time.monotonic() > deadline:
            break
    assert process.poll() is None, "training ended before it could be interrupted"
    process.send_signal(signal.SIGINT)
    remaining = process.communicate(timeout=60)[1]
    assert process.returncode == 130
    assert "interrupted" in remaining
    assert (root / "models/torch/model.pt").read_bytes() == model_before
    assert (root / "dvclive/torch/metrics.json").read_bytes() == logs_before
    leftovers = [path for path in root.rglob(".*.tmp")]
    assert not leftovers, leftovers
