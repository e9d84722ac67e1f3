"""Adding a framework takes one backend module and its registry entry: nothing else in stages/.

A numpy backend defined in the tests (tests/numpy_backend.py: the tutorial architecture trained
for real by gradient descent) is registered here and run through the real train, evaluate and
report code, beside Keras and PyTorch outputs made by the real pipeline. The report compares
all three, every pair.
"""

from __future__ import annotations

import inspect
import json

import pytest

from stages import backends
from stages.backends.base import Backend
from tests import numpy_backend
from tests.e2e.conftest import SEEDS, make_repo

TUTORIAL_FAMILY = {"conv_blocks": [{"filters": 4, "kernel_size": 3, "convs": 1, "batch_norm": False, "pool": 2,
                                    "dropout": 0.0}], "padding": "valid", "block_order": "conv-norm-act-pool",
                   "activation": "relu", "dense": [], "dense_dropout": 0.0}


def test_the_numpy_backend_has_every_member_of_the_protocol_with_its_signature():
    for name, member in vars(Backend).items():
        if name.startswith("_"):
            continue
        ours = getattr(numpy_backend, name)
        if callable(member):
            expected = list(inspect.signature(member).parameters)[1:]  # without self
            assert list(inspect.signature(ours).parameters) == expected, name
    assert isinstance(numpy_backend.MODEL_FILE, str)


@pytest.fixture(scope="module")
def two_framework_run(tmp_path_factory, served_dataset):
    """The real pipeline (Keras, PyTorch) on the tutorial architecture family, run once."""
    server, custom = served_dataset
    repo = make_repo(tmp_path_factory.mktemp("third") / "repo", server.url, custom)
    repo.set_params(lambda raw: raw.update(model=TUTORIAL_FAMILY))
    repo.dvc("repro")
    return repo


def test_a_third_backend_runs_through_train_evaluate_and_report(two_framework_run, monkeypatch):
    from stages import evaluate, train
    from stages.report import __main__ as report

    monkeypatch.setitem(backends.REGISTRY, "numpy", ("tests.numpy_backend", "NumPy"))  # the registry entry
    monkeypatch.chdir(two_framework_run.path)
    two_framework_run.set_params(lambda raw: raw.update(frameworks=["keras", "torch", "numpy"], numpy={}))
    for seed in SEEDS:
        train.main(["numpy", str(seed)])
        evaluate.main(["numpy", str(seed)])
    report.main([])

    root = two_framework_run.path
    summary = json.loads((root / "dvclive/numpy/1/metrics.json").read_text())
    assert summary["train_loss"] < 2.3  # below chance level: it learned (log 10 = 2.30)
    metrics = json.loads((root / "reports/metrics.json").read_text())
    assert {"keras", "torch", "numpy", "keras_vs_torch", "keras_vs_numpy", "torch_vs_numpy"} <= set(metrics)
    text = (root / "reports/report.md").read_text()
    assert "# Keras vs PyTorch vs NumPy" in text
    assert "| | Keras | PyTorch | NumPy |".replace("| |", "|  |") in text
    for pair in ("## Keras vs PyTorch", "## Keras vs NumPy", "## PyTorch vs NumPy"):
        assert pair in text


def test_the_suites_parametrised_over_the_registry_run_on_a_third_backend():
    """Registered for a pytest run (``--extra-framework``: its one registry line), the numpy backend
    joins the suites that iterate over the registry, here the parity suite on the architecture
    family it builds: its weights moved to and from Keras give the same logits, in worker
    processes of their own. Nothing in the suite names it."""
    import subprocess
    import sys

    from tests.support import PROJECT_ROOT

    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/test_parity.py", "-k", "tutorial and numpy", "-q", "-p",
         "no:cacheprovider", "--extra-framework", "numpy=tests.numpy_backend:NumPy"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "2 passed" in result.stdout, result.stdout[-2000:]
