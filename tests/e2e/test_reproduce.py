"""End to end, `python -m stages.reproduce`: two result sets of the tiny pipeline, each compared
with the committed one in a real git + DVC repository, one per outcome (bitwise, within margins,
not reproduced), and its refusals."""

from __future__ import annotations

import json
import subprocess

from tests.e2e.conftest import BIN, Repo, environment

# A rerun on "another CPU": oneDNN (TensorFlow's and PyTorch's convolutions) held to SSE4.1, as on
# a machine without AVX: the same recipe and params, other floating-point sums. (PyTorch's portable
# ATen kernels, ATEN_CPU_CAPABILITY=default, would also stop the timing stage's torch.compile arm.)
OTHER_KERNELS = {"ONEDNN_MAX_CPU_ISA": "SSE41"}
# The tiny test set has 60 images (one is 1.67 pp): margins a study of that size would set.
WIDE_MARGINS = {"accuracy_pp": 5.0, "test_loss": 0.05, "macro_f1": 0.05, "speed_ratio": 1.05}


def reproduce(repo: Repo, *arguments: str) -> subprocess.CompletedProcess:
    return repo.run(str(BIN / "python"), "-m", "stages.reproduce", *arguments, check=False)


def rerun(repo: Repo, extra: dict[str, str] | None = None) -> None:
    """`dvc repro --force`: every stage again, with ``extra`` in the stages' environment."""
    result = subprocess.run([str(BIN / "dvc"), "repro", "--force"], cwd=repo.path,
                            env={**environment(), **(extra or {})}, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_an_identical_rerun_is_reproduced_bitwise_and_leaves_dvc_up_to_date(pipeline_copy):
    rerun(pipeline_copy)
    result = reproduce(pipeline_copy)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "reproduced bitwise\n"
    text = (pipeline_copy.path / "reports/reproduction.md").read_text()
    assert "**reproduced bitwise**" in text
    assert "| models | keras | 2 of 2 | - | - |" in text and "| predictions | torch | 2 of 2 | - | - |" in text
    assert "The recorded environments are the same." in text and "The params are the same." in text
    # not an output of the report stage: the pipeline stays up to date, and git sees a new file only
    assert pipeline_copy.up_to_date()  # `validate` aside, which dvc.yaml runs every time
    assert "?? reports/reproduction.md" in pipeline_copy.git("status", "--porcelain", "reports").stdout.splitlines()


def test_a_rerun_on_other_kernels_is_reproduced_within_the_margins(pipeline_copy):
    pipeline_copy.set_params(lambda raw: raw["report"]["equivalence"].update(WIDE_MARGINS))
    pipeline_copy.dvc("repro")
    pipeline_copy.commit("the study, with margins for its 60 test images")
    before = {seed: json.loads((pipeline_copy.path / f"eval/keras/{seed}/metrics.json").read_text())
              for seed in (1, 2)}
    rerun(pipeline_copy, OTHER_KERNELS)
    after = {seed: json.loads((pipeline_copy.path / f"eval/keras/{seed}/metrics.json").read_text())
             for seed in (1, 2)}
    assert any(before[seed]["test_loss"] != after[seed]["test_loss"] for seed in (1, 2))  # the sums moved
    result = reproduce(pipeline_copy)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "reproduced within margins\n"
    text = (pipeline_copy.path / "reports/reproduction.md").read_text()
    assert "| Keras | test loss |" in text and "equivalent |" in text


def test_a_changed_recipe_is_not_reproduced_naming_the_params_that_differ(pipeline_copy):
    pipeline_copy.set_params(lambda raw: raw["train"].update(epochs=2, learning_rate=0.003))
    pipeline_copy.set_params(lambda raw: raw["data"].update(timeout_s=7))  # not part of the recipe
    pipeline_copy.dvc("repro")
    result = reproduce(pipeline_copy)
    assert result.returncode == 1
    line = result.stdout.strip()
    assert line.startswith("not reproduced: params differ (")
    assert "train.epochs: 1 -> 2" in line and "train.learning_rate:" in line and "-> 0.003" in line
    assert "timeout_s" not in line
    assert "- `train.epochs: 1 -> 2`" in (pipeline_copy.path / "reports/reproduction.md").read_text()


def test_a_bad_revision_or_missing_results_is_one_line_and_keeps_the_previous_reproduction(pipeline_copy):
    previous = pipeline_copy.path / "reports/reproduction.md"
    previous.write_text("kept\n")
    result = reproduce(pipeline_copy, "--against", "no-such-branch")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "error: reproduce: --against no-such-branch: not a commit of this repository; expected a branch, tag or "
        "commit (e.g. HEAD, HEAD~1, main, a commit id)"]
    (pipeline_copy.path / "dvc.lock").unlink()
    result = reproduce(pipeline_copy)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: reproduce: the workspace:dvc.lock: missing")
    first = pipeline_copy.git("rev-list", "--max-parents=0", "HEAD").stdout.strip()
    pipeline_copy.git("checkout", "-q", "--", "dvc.lock")
    result = reproduce(pipeline_copy, "--against", first)  # the project, before any result was committed
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "dvc.lock: missing" in result.stderr.strip().splitlines()[-1]
    assert previous.read_text() == "kept\n"
    assert "--against REV" in reproduce(pipeline_copy, "--help").stdout
