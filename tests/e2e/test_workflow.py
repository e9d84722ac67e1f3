"""End to end, the research workflow: caching granularity over frameworks and seeds, refused
params that lose nothing, experiments, the queue, and a DVC remote round trip, with real DVC in
real git repositories on tiny data.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time

import pytest

from tests.e2e.conftest import SEEDS, Repo, ran_stages, replicates
from tests.support import PROJECT_ROOT


def changed_stages(repo: Repo) -> set[str]:
    """Stages whose own dependencies (code, data, params) changed, per `dvc status`."""
    return set(json.loads(repo.dvc("status", "--json").stdout or "{}")) - {"validate"}


# a framework's params reach its train, evaluate and export stages (export reads the framework's threads and device)
TORCH = replicates("train", ["torch"]) | replicates("evaluate", ["torch"]) | replicates("export", ["torch"])
KERAS = replicates("train", ["keras"]) | replicates("evaluate", ["keras"]) | replicates("export", ["keras"])


@pytest.mark.parametrize(("change", "expected"), [
    # the timing stage reads each framework's section, model and train (it trains steps to time them)
    (lambda raw: raw["torch"].update(optimizer="sgd"), TORCH | {"timing", "report"}),
    (lambda raw: raw["keras"].update(batch_size=16), KERAS | {"timing", "report"}),
    (lambda raw: raw["model"].update(dense=[32]), {f"init@{seed}" for seed in SEEDS} | replicates("train")
     | {"timing", "report"}),
    (lambda raw: raw["train"].update(learning_rate=0.001), replicates("train") | {"timing", "report"}),
    (lambda raw: raw["replicates"].update(init="framework"), replicates("train") | {"report"}),
    (lambda raw: raw["evaluate"].update(latency_samples=6), replicates("evaluate") | replicates("export") | {"report"}),
    (lambda raw: raw["report"].update(dpi=80), {"report"}),
    (lambda raw: raw["timing"].update(rounds=3), {"timing"}),
    (lambda raw: raw["data"].update(mirrors=["https://mirror.example.invalid/mnist/"], timeout_s=3), set()),
], ids=["torch-only", "keras-only", "model", "shared-train", "init-mode", "inference", "plot-only", "timing",
        "mirrors"])
def test_a_param_change_invalidates_exactly_the_stages_that_read_it(pipeline_copy, change, expected):
    # The stages whose declared params changed. Their downstream stages (evaluate after a new
    # model) rerun too when their inputs change: see the tests below, which run for real.
    pipeline_copy.set_params(change)
    assert changed_stages(pipeline_copy) == expected
    dry = ran_stages(pipeline_copy.dvc("repro", "--dry").stdout)
    assert expected <= dry


def test_adding_a_seed_trains_only_that_seed(pipeline_copy):
    new = max(SEEDS) + 1
    models = {path: path.read_bytes() for path in (pipeline_copy.path / "models").rglob("model.*")}
    pipeline_copy.set_params(lambda raw: raw["replicates"].update(seeds=[*SEEDS, new]))
    ran = ran_stages(pipeline_copy.dvc("repro").stdout)
    # the timing stage reads replicates.seeds (the first seed's initial weights): one more sitting
    assert ran == {f"init@{new}", f"train@{new}-keras", f"train@{new}-torch", f"evaluate@{new}-keras",
                   f"evaluate@{new}-torch", f"export@{new}-keras", f"export@{new}-torch", "timing", "report"}
    assert all(path.read_bytes() == content for path, content in models.items())
    summary = json.loads((pipeline_copy.path / "reports/metrics.json").read_text())
    assert summary["seeds"] == len(SEEDS) + 1


def test_a_torch_only_change_reruns_only_the_torch_replicates(pipeline_copy):
    keras_models = {seed: (pipeline_copy.path / f"models/keras/{seed}/model.keras").read_bytes() for seed in SEEDS}
    pipeline_copy.set_params(lambda raw: raw["torch"].update(epochs=2))
    ran = ran_stages(pipeline_copy.dvc("repro").stdout)
    assert ran == TORCH | {"timing", "report"}
    for seed in SEEDS:
        assert (pipeline_copy.path / f"models/keras/{seed}/model.keras").read_bytes() == keras_models[seed]
        assert json.loads((pipeline_copy.path / f"dvclive/torch/{seed}/metrics.json").read_text())["epochs"] == 2


@pytest.mark.parametrize(("change", "message", "kept"), [
    (lambda raw: raw["report"].update(dpi=7), "report.dpi: expected a value of at least 50, got 7", "reports"),
    (lambda raw: raw["train"].update(epochs=0), "train.epochs: expected a value of at least 1, got 0",
     "models/keras/1"),
], ids=["report-dpi", "train-epochs"])
def test_a_refused_param_under_dvc_repro_loses_no_output(pipeline_copy, change, message, kept):
    before = {path: path.read_bytes() for path in (pipeline_copy.path / kept).rglob("*") if path.is_file()}
    logs = {path: path.read_bytes() for path in (pipeline_copy.path / "dvclive").rglob("*") if path.is_file()}
    pipeline_copy.set_params(change)
    result = pipeline_copy.dvc("repro", check=False)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert ran_stages(result.stdout) == set()  # stopped at validate
    assert before and {path: path.read_bytes() for path in before} == before
    assert {path: path.read_bytes() for path in logs} == logs


def test_cuda_on_a_machine_without_a_gpu_says_how_to_get_back_what_dvc_repro_removed(pipeline_copy):
    """The one refusal validate cannot make (it needs the machine): DVC has removed the stage's
    outputs by then, and the commands in the stage's error line bring every one of them back."""
    if pipeline_copy.run("python", "-c", "import sys, torch; sys.exit(torch.cuda.is_available())",
                         check=False).returncode:
        pytest.skip("this machine has a GPU: train.device: cuda runs")
    root = pipeline_copy.path
    before = {path: path.read_bytes() for folder in ("models/keras/1", "dvclive/keras/1")
              for path in (root / folder).rglob("*") if path.is_file()}
    pipeline_copy.set_params(lambda raw: raw["train"].update(device="cuda"))

    result = pipeline_copy.dvc("repro", check=False)

    assert result.returncode != 0 and "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error: train: ")]
    assert "train.device is 'cuda' but TensorFlow sees no GPU" in line
    assert not (root / "models/keras/1").exists()  # DVC removed the outputs before the stage ran
    commands = [shlex.split(command) for command in line.split("`")[1::2] if " checkout " in command]
    assert commands == [["dvc", "checkout", "models/keras/1"], ["git", "checkout", "--", "dvclive/keras/1"]]
    pipeline_copy.git("checkout", "--", "params.yaml")
    for command in commands:
        pipeline_copy.dvc(*command[1:]) if command[0] == "dvc" else pipeline_copy.git(*command[1:])

    assert {path: path.read_bytes() for path in before} == before
    assert changed_stages(pipeline_copy) == set()


def test_exp_run_set_param_runs_and_exp_show_lists_the_summary(pipeline_copy):
    pipeline_copy.dvc("exp", "run", "-n", "dpi-test", "-S", "report.dpi=70")
    shown = pipeline_copy.dvc("exp", "show", "--json").stdout
    assert "dpi-test" in shown and "reports/metrics.json" in shown
    assert "accuracy_diff_pp" in shown


def test_exp_run_rejects_a_misspelt_key_before_running(pipeline_copy):
    result = pipeline_copy.dvc("exp", "run", "-S", "train.epoch=2", check=False)
    assert result.returncode != 0
    assert "train.epoch" in result.stdout + result.stderr
    assert "Running stage" not in result.stdout


def test_exp_run_rejects_a_bad_value_before_any_work(pipeline_copy):
    result = pipeline_copy.dvc("exp", "run", "-S", "train.epochs=-3", check=False)
    assert result.returncode != 0
    assert "train.epochs: expected a value of at least 1, got -3" in result.stdout + result.stderr
    # Nothing was trained: the committed models are still in place.
    assert (pipeline_copy.path / "models/torch/1/model.pt").is_file()


@pytest.mark.parametrize("preset", ["tutorial", "quick"])
def test_presets_are_valid_for_dvc(pipeline_copy, preset):
    overrides = shlex.split((PROJECT_ROOT / f"presets/{preset}.args").read_text())
    # Queue it (validates the Hydra syntax against params.yaml) without running it.
    pipeline_copy.dvc("exp", "run", "--queue", "-n", preset, *overrides)
    assert preset in pipeline_copy.dvc("queue", "status").stdout
    pipeline_copy.dvc("queue", "remove", "--all")


def test_make_quick_runs_its_preset_as_an_experiment_and_leaves_the_workspace_alone(pipeline_copy):
    """`make quick`'s own command (read from `make -n`), in a project whose default run is done:
    the experiment is kept, and params.yaml, reports/ and the models stay the default run's."""
    # Under `make test` this runs as a sub-make, which prints "Entering/Leaving directory" lines
    # unless told not to; MAKEFLAGS from the outer make must not reach it either.
    environment = {key: value for key, value in os.environ.items() if key not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    dry = subprocess.run(["make", "--no-print-directory", "-n", "quick"], cwd=PROJECT_ROOT, env=environment,
                         capture_output=True, text=True, check=True)
    words = shlex.split(dry.stdout.strip().splitlines()[-1])
    assert words[0].endswith("dvc") and words[1:5] == ["exp", "run", "--temp", "-n"], words
    watched = [pipeline_copy.path / "params.yaml", *sorted((pipeline_copy.path / "reports").iterdir()),
               *sorted((pipeline_copy.path / "models").rglob("*.*"))]
    before = {path: path.read_bytes() for path in watched if path.is_file()}
    pipeline_copy.dvc(*words[1:])
    assert {path: path.read_bytes() for path in before} == before
    assert words[5] in _experiments(pipeline_copy)


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


def test_queued_experiments_run_and_keep_results_apart(pipeline_copy):
    for seeds in ([1], [3]):
        pipeline_copy.dvc("exp", "run", "--queue", "-n", f"seeds-{seeds[0]}", "-S", f"replicates.seeds={seeds}")
    pipeline_copy.dvc("queue", "start", "--jobs", "1")
    status = ""
    for _ in range(300):  # polls, not a time budget: the queue ends either way
        status = pipeline_copy.dvc("queue", "status").stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(2)
    pipeline_copy.dvc("queue", "stop", "--kill", check=False)
    assert "Failed" not in status, status
    experiments = _experiments(pipeline_copy)
    for seed in (1, 3):
        data = experiments[f"seeds-{seed}"]
        assert data["metrics"]["reports/metrics.json"]["data"]["seeds"] == 1
        assert data["params"]["params.yaml"]["data"]["replicates"]["seeds"] == [seed]


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
    assert clone.up_to_date()
    for relative in ("models/keras/1/model.keras", "models/torch/2/model.pt", "data/prepared/train_images.npy",
                     "data/raw/train-images-idx3-ubyte", "eval/torch/1/predictions.npy"):
        assert (clone.path / relative).read_bytes() == (pipeline_copy.path / relative).read_bytes(), relative


def test_artifacts_get_downloads_a_registered_model(pipeline_copy, tmp_path):
    storage = tmp_path / "storage"
    pipeline_copy.dvc("remote", "add", "-d", "shared", str(storage))
    pipeline_copy.commit("add a DVC remote")
    pipeline_copy.dvc("push")
    # Registering a version is a git tag in GTO's format (what `gto register torch-model` writes).
    pipeline_copy.git("tag", "-a", "torch-model@v1.0.0", "-m", "Registering artifact torch-model version v1.0.0")
    got = pipeline_copy.dvc("artifacts", "get", str(pipeline_copy.path), "torch-model", "-o", str(tmp_path / "got"),
                            check=False)
    assert got.returncode == 0, got.stdout + got.stderr
    assert (tmp_path / "got" / "1" / "model.pt").read_bytes() == \
        (pipeline_copy.path / "models/torch/1/model.pt").read_bytes()
