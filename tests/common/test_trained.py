"""stages/common/trained.py: a model folder that cannot be read back names the file and the command."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from stages.common import paths
from stages.common.errors import StageError
from stages.common.trained import load_trained


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
        load_trained(UNREACHED, folder, "dvc repro train@1-keras")


def test_corrupt_architecture_names_the_file_and_the_command(tmp_path):
    folder = model_folder(tmp_path, architecture='{"input_shape": [28, 28]}', run=RUN)

    with pytest.raises(StageError, match=r"architecture\.json: corrupt .*; run `dvc repro train@1-keras`"):
        load_trained(UNREACHED, folder, "dvc repro train@1-keras")


def test_missing_run_info_names_the_file_and_the_command(tmp_path):
    folder = model_folder(tmp_path, architecture=SPEC)

    with pytest.raises(StageError, match=r"run\.json: missing; run `dvc repro train@1-keras`"):
        load_trained(UNREACHED, folder, "dvc repro train@1-keras")


def test_run_info_with_a_wrong_field_is_refused(tmp_path):
    folder = model_folder(tmp_path, architecture=SPEC, run={**RUN, "input_scale": "1/255"})

    with pytest.raises(StageError, match="input_scale"):
        load_trained(UNREACHED, folder, "dvc repro train@1-keras")
