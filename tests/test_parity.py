"""One architecture, every registered framework: same parameter count, same logits (each
framework's own suite checks its layers against the spec's, read from its own classes).

Each framework runs in its own subprocess (tests/framework_worker.py): weights exported from the
first registered framework are loaded into every other, and theirs into it, and both must give
the same logits within 1e-4 (the layouts are then the same in every pair). This checks the
flatten order (channels-first vs channels-last), kernel layouts and batch-norm constants.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from stages import backends
from tests.support import PROJECT_ROOT, project_params, selected_frameworks

REFERENCE = backends.names()[0]  # every other framework (or those --framework names) against the registry's first
OTHERS = [name for name in selected_frameworks() if name != REFERENCE]
DIRECTIONS = [direction for other in OTHERS for direction in ((REFERENCE, other), (other, REFERENCE))]

TUTORIAL_MODEL = {
    "conv_blocks": [{"filters": 32, "kernel_size": 3, "convs": 1, "batch_norm": False, "pool": 2, "dropout": 0.0}],
    "padding": "valid", "block_order": "conv-norm-act-pool", "activation": "relu", "dense": [],
    "dense_dropout": 0.0,
}
DEEPER_MODEL = {
    "conv_blocks": [
        {"filters": 8, "kernel_size": 5, "convs": 2, "batch_norm": True, "pool": 2, "dropout": 0.1},
        {"filters": 12, "kernel_size": 3, "convs": 1, "batch_norm": False, "pool": 3, "dropout": 0.0},
    ],
    "padding": "same", "block_order": "conv-pool-norm-act", "activation": "gelu", "dense": [32, 16],
    "dense_dropout": 0.2,
}


def default_model() -> dict:
    return project_params()["model"]


def run_worker(*arguments: str) -> None:
    subprocess.run([sys.executable, "-m", "tests.framework_worker", *arguments], cwd=PROJECT_ROOT, check=True,
                   capture_output=True, timeout=300)


@pytest.mark.parametrize("model_name", ["default", "tutorial", "deeper"])
@pytest.mark.parametrize(("source", "target"), DIRECTIONS, ids=[f"{source}-to-{to}" for source, to in DIRECTIONS])
def test_weights_moved_between_frameworks_give_the_same_logits(tmp_path, model_name, source, target):
    model = {"default": default_model(), "tutorial": TUTORIAL_MODEL, "deeper": DEEPER_MODEL}[model_name]
    (tmp_path / "model.json").write_text(json.dumps(model))
    run_worker(source, "export", str(tmp_path / "model.json"), str(tmp_path / "source.npz"))
    run_worker(target, "import", str(tmp_path / "model.json"), str(tmp_path / "source.npz"),
               str(tmp_path / "target.npz"))
    exported, imported = np.load(tmp_path / "source.npz"), np.load(tmp_path / "target.npz")
    assert int(exported["parameters"]) == int(imported["parameters"])
    assert exported["logits"].shape == (8, 10)
    # Random weights give logits of order 10: a wrong flatten order would be far off.
    assert np.abs(exported["logits"]).max() > 0.1
    np.testing.assert_allclose(imported["logits"], exported["logits"], atol=1e-4, rtol=1e-4)
