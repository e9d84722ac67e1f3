"""One architecture, every registered framework: same parameter count, same logits (each
framework's own suite checks its layers against the spec's, read from its own classes).

Each framework runs in its own subprocess (tests/framework_worker.py): weights exported from the
first registered framework are loaded into every other, and theirs into it, and both must give
the same logits within 1e-4 (the layouts are then the same in every pair). This checks the
flatten order (channels-first vs channels-last), kernel layouts and batch-norm constants.

The logits are read back from ``predict``'s probabilities: log-probabilities less their mean over
the classes are the logits less theirs (softmax drops only a constant per image). Two sets of
logits within 1e-4 of each other give such centred values within 2e-4 (each logit and the mean
move by at most 1e-4). Where random weights spread the logits too far for float32 probabilities,
the worker reads them out with the output layer scaled by a power of 1/2 (``readout_scale``,
exact in float32), which the logits are divided by again here; float32 probabilities add about
1e-7 to each logarithm, times the inverse of that scale.
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


def centred_logits(probabilities: np.ndarray, scale: float) -> np.ndarray:
    """The logits less their mean over the classes, from probabilities (all above zero) read out
    at ``scale`` (tests/framework_worker.py's ``read_out``)."""
    logs = np.log(probabilities.astype(np.float64))
    return (logs - logs.mean(axis=1, keepdims=True)) / scale


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
    assert exported["probabilities"].shape == (8, 10)
    # Every probability a normal float32 (none rounded to zero): its logarithm holds the logit to about 1e-7.
    tiny = np.finfo(np.float32).tiny
    assert np.all(exported["probabilities"] >= tiny) and np.all(imported["probabilities"] >= tiny)
    scale = float(exported["readout_scale"])
    source_logits = centred_logits(exported["probabilities"], scale)
    target_logits = centred_logits(imported["probabilities"], scale)
    # Random weights give logits of order 10 to hundreds: a wrong flatten order would be far off.
    assert np.abs(source_logits).max() > 0.1
    np.testing.assert_allclose(target_logits, source_logits, atol=2e-4, rtol=1e-4)
