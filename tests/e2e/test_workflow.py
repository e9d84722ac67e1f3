"""End to end, issue 'reproducible research workflow': caching granularity, experiments, the
queue, and a DVC remote round trip, with real DVC in real git repositories on tiny data.
"""

from __future__ import annotations

import json
import shlex
import time

import pytest

from tests.e2e.conftest import Repo, ran_stages
from tests.support import PROJECT_ROOT


def changed_stages(repo: Repo) -> set[str]:
    """Stages whose own dependencies (code, data, params) changed, per `dvc status`."""
    return set(json.loads(repo.dvc("status", "--json").stdout or "{}"))


@pytest.mark.parametrize(("change", "expected"), [
    (lambda raw: raw["torch"].update(optimizer="sgd"), {"train@torch", "evaluate@torch", "report"}),
    (lambda raw: raw["keras"].update(batch_size=16), {"train@keras", "evaluate@keras", "report"}),
    (lambda raw: raw["model"].update(dense=[32]), {"train@keras", "train@torch", "report"}),
    (lambda raw: raw["train"].update(learning_rate=0.001), {"train@keras", "train@torch", "report"}),
    (lambda raw: raw["report"].update(dpi=80), {"report"}),
    (lambda raw: raw["data"].update(mirrors=["https://mirror.example.invalid/mnist/"], timeout_s=3), set()),
], ids=["torch-only", "keras-only", "model", "shared-train", "plot-only", "mirrors"])
def test_a_param_change_invalidates_exactly_the_stages_that_read_it(pipeline_copy, change, expected):
    # The stages whose declared params changed. Their downstream stages (evaluate after a new
    # model) rerun too when their inputs change: see the test below, which runs for real.
    pipeline_copy.set_params(change)
    assert changed_stages(pipeline_copy) == expected
    assert ran_stages(pipeline_copy.dvc("repro", "--dry").stdout) == expected


def test_a_torch_only_change_reruns_only_the_torch_branch(pipeline_copy):
    keras_model = (pipeline_copy.path / "models/keras/model.keras").read_bytes()
    pipeline_copy.set_params(lambda raw: raw["torch"].update(epochs=2))
    ran = ran_stages(pipeline_copy.dvc("repro").stdout)
    assert ran == {"train@torch", "evaluate@torch", "report"}
    assert (pipeline_copy.path / "models/keras/model.keras").read_bytes() == keras_model
    assert json.loads((pipeline_copy.path / "dvclive/torch/metrics.json").read_text())["epochs"] == 2


def test_exp_run_set_param_runs_and_exp_show_lists_both_frameworks(pipeline_copy):
    pipeline_copy.dvc("exp", "run", "-n", "dpi-test", "-S", "report.dpi=70")
    shown = pipeline_copy.dvc("exp", "show", "--json").stdout
    assert "dpi-test" in shown
    for path in ("metrics/keras.json", "metrics/torch.json"):
        assert path in shown


def test_exp_run_rejects_a_misspelt_key_before_running(pipeline_copy):
    result = pipeline_copy.dvc("exp", "run", "-S", "train.epoch=2", check=False)
    assert result.returncode != 0
    assert "train.epoch" in result.stdout + result.stderr
    assert "Running stage" not in result.stdout


def test_exp_run_rejects_a_bad_value_before_any_work(pipeline_copy):
    result = pipeline_copy.dvc("exp", "run", "-S", "train.epochs=-3", check=False)
    assert result.returncode != 0
    assert "train.epochs: expected a value of at least 1, got -3" in result.stdout + result.stderr
    # Nothing was trained: the committed model is still in place.
    assert (pipeline_copy.path / "models/torch/model.pt").is_file()


def test_tutorial_preset_is_valid_for_dvc_and_the_validator(pipeline_copy):
    overrides = shlex.split((PROJECT_ROOT / "presets/tutorial.args").read_text())
    # Queue it (validates the Hydra syntax against params.yaml) without running it.
    pipeline_copy.dvc("exp", "run", "--queue", "-n", "tutorial", *overrides)
    assert "tutorial" in pipeline_copy.dvc("queue", "status").stdout
    pipeline_copy.dvc("queue", "remove", "--all")


def _experiments(repo: Repo) -> dict[str, dict]:
    """name -> {params, metrics} from `dvc exp show --json`."""
    found: dict[str, dict] = {}

    def walk(node) -> None:
        if isinstance(node, dict):
            if node.get("name") and isinstance(node.get("data"), dict) and node["data"].get("metrics"):
                found[node["name"]] = node["data"]
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(repo.dvc("exp", "show", "--json").stdout))
    return found


def test_queued_grid_runs_and_keeps_results_apart(pipeline_copy):
    for epochs in (2, 3):
        pipeline_copy.dvc("exp", "run", "--queue", "-n", f"torch-epochs-{epochs}", "-S", f"++torch.epochs={epochs}")
    pipeline_copy.dvc("queue", "start", "--jobs", "1")
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        status = pipeline_copy.dvc("queue", "status").stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(3)
    pipeline_copy.dvc("queue", "stop", "--kill", check=False)
    assert "Failed" not in status, status
    experiments = _experiments(pipeline_copy)
    for epochs in (2, 3):
        data = experiments[f"torch-epochs-{epochs}"]
        summary = data["metrics"]["dvclive/torch/metrics.json"]["data"]
        assert summary["epochs"] == epochs
        assert data["params"]["params.yaml"]["data"]["torch"]["epochs"] == epochs
        assert data["metrics"]["dvclive/keras/metrics.json"]["data"]["epochs"] == 1


def test_remote_push_clone_pull_round_trip(pipeline_copy, tmp_path):
    storage = tmp_path / "storage"
    pipeline_copy.dvc("remote", "add", "-d", "shared", str(storage))
    pipeline_copy.commit("add a DVC remote")
    pipeline_copy.dvc("push")
    clone = Repo(tmp_path / "clone")
    pipeline_copy.run("git", "clone", "-q", str(pipeline_copy.path), str(clone.path))
    # Before pulling, the committed results are already readable.
    assert "test_accuracy" in clone.dvc("metrics", "show").stdout
    clone.dvc("pull")
    assert "Data and pipelines are up to date" in clone.dvc("status").stdout
    for relative in ("models/keras/model.keras", "models/torch/model.pt", "data/prepared/train_images.npy",
                     "data/raw/train-images-idx3-ubyte", "eval/torch/predictions.npy"):
        assert (clone.path / relative).read_bytes() == (pipeline_copy.path / relative).read_bytes(), relative
