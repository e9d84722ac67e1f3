"""Adding a framework takes one backend module and its registry entry: nothing else.

A toy framework defined in the tests (tests/numpy_backend.py: the framework-free reference of the
equivalence suite run as a backend) is registered here, one line, and runs the real train,
evaluate and report code beside Keras and PyTorch outputs made by the real pipeline (the report
compares all three, every pair), and the whole suite parametrised over the registry: the trainer
contract, the equivalence and the parity suites. Injected into it, each recipe deviation the
equivalence suite exists to catch makes that suite fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from xml.etree import ElementTree

import pytest

from stages import backends
from stages.report import onnx
from tests import trainer_contract
from tests.e2e.conftest import SEEDS, make_repo
from tests.report.test_onnx import section_table
from tests.support import PROJECT_ROOT
from tests.test_equivalence import CASES, exercised, running_variance_indices

TUTORIAL_FAMILY = {"conv_blocks": [{"filters": 4, "kernel_size": 3, "convs": 1, "batch_norm": False, "pool": 2,
                                    "dropout": 0.0}], "padding": "valid", "block_order": "conv-norm-act-pool",
                   "activation": "relu", "dense": [], "dense_dropout": 0.0}


@pytest.fixture(scope="module")
def two_framework_run(tmp_path_factory, served_dataset):
    """The real pipeline (Keras, PyTorch) on the tutorial architecture family, run once."""
    server, custom = served_dataset
    repo = make_repo(tmp_path_factory.mktemp("third") / "repo", server.url, custom)
    repo.set_params(lambda raw: raw.update(model=TUTORIAL_FAMILY))
    repo.dvc("repro")
    return repo


def test_a_third_backend_runs_through_train_evaluate_and_report(two_framework_run, monkeypatch):
    from stages.evaluate import __main__ as evaluate
    from stages.export import __main__ as export
    from stages.report import __main__ as report
    from stages.train import __main__ as train

    monkeypatch.setitem(backends.REGISTRY, "numpy", ("tests.numpy_backend", "NumPy"))  # the registry entry
    monkeypatch.chdir(two_framework_run.path)
    two_framework_run.set_params(lambda raw: raw.update(frameworks=["keras", "torch", "numpy"], numpy={}))
    for seed in SEEDS:
        train.main(["numpy", str(seed)])
        evaluate.main(["numpy", str(seed)])
        export.main(["numpy", str(seed)])  # the toy declares no ONNX route
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
    onnx_rows = section_table(text, onnx.HEADING)  # the toy keeps its ONNX Runtime row, saying why it has none
    assert onnx_rows[""] == ["Keras", "PyTorch", "NumPy"]
    assert onnx_rows["Export route"][2] == "no route: the toy numpy framework has no ONNX exporter of its own"
    assert onnx_rows["Test accuracy on ONNX Runtime"][2] == "no route"
    assert "no route" not in onnx_rows["Test accuracy on ONNX Runtime"][0]
    assert "onnx.numpy.throughput_ratio" not in metrics and "onnx.keras.throughput_ratio" in metrics


TOY = ["--extra-framework", "numpy=tests.numpy_backend:NumPy", "--framework", "numpy"]  # its one registry line


def run_pytest(folder, *arguments: str, deviation: str = "") -> tuple[subprocess.CompletedProcess, dict[str, str]]:
    """pytest in a process of its own with the toy registered; its result and each test's outcome."""
    report = folder / "junit.xml"
    environment = {**os.environ, "NUMPY_BACKEND_DEVIATION": deviation}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
                             *TOY, *arguments], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900,
                            env=environment)
    return result, outcomes_of(report)


def outcomes_of(report) -> dict[str, str]:
    """test -> passed | failure | error | skipped, from a pytest JUnit XML report."""
    outcomes = {}
    for case in ElementTree.parse(report).iter("testcase"):
        found = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        outcomes[f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"] = (found or ["passed"])[0]
    return outcomes


def test_make_runs_the_trainer_contract_for_a_framework_without_a_test_folder_of_its_own(tmp_path):
    """`make test-frameworks`, as `make test` runs it, for the registry's frameworks (here the toy
    alone, registered through PYTEST_ADDOPTS): with no tests/numpy/ folder, it runs every test of
    tests/trainer_contract.py for it, in a pytest process of its own."""
    report = tmp_path / "junit.xml"
    environment = {key: value for key, value in os.environ.items() if key not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    environment["PYTEST_ADDOPTS"] = f"-p no:cacheprovider -q {' '.join(TOY[:2])} --junitxml={report}"
    result = subprocess.run(["make", "--no-print-directory", "test-frameworks", "FRAMEWORKS=numpy"], cwd=PROJECT_ROOT,
                            env=environment, capture_output=True, text=True, timeout=900)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "== the trainer contract for numpy" in result.stdout
    outcomes = outcomes_of(report)

    def named(wanted: str) -> set[str]:
        return {name.split("::")[1].split("[")[0] for name, outcome in outcomes.items()
                if name.startswith("trainer_contract::") and outcome == wanted}

    # the toy declares no ONNX route (tests/numpy_backend.py), so the one test of a written export skips
    written_export = "test_the_export_stage_writes_an_onnx_model_that_plain_onnx_runtime_runs_as_the_framework"
    assert named("skipped") <= {written_export}
    assert named("passed") | named("skipped") == {name for name in dir(trainer_contract) if name.startswith("test_")}
    assert set(outcomes.values()) <= {"passed", "skipped"}


def test_the_suites_parametrised_over_the_registry_run_on_a_third_backend(tmp_path):
    """Registered for a pytest run (``--extra-framework``: its one registry line) and selected
    (``--framework``), the numpy backend runs the suites parametrised over the registry with
    nothing else edited: the equivalence suite against the framework-free reference, and the
    parity suite (weights moved to and from Keras, in worker processes of their own)."""
    result, outcomes = run_pytest(tmp_path, "tests/test_equivalence.py", "tests/test_parity.py")

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    for name in CASES:
        assert outcomes[f"test_equivalence::{AGAINST_REFERENCE}[{name}-numpy]"] == "passed"
    parity = [name for name, outcome in outcomes.items() if name.startswith("test_parity::") and outcome == "passed"]
    assert len(parity) == 6 and all("numpy-to-keras" in name or "keras-to-numpy" in name for name in parity)


AGAINST_REFERENCE = "test_every_framework_trains_as_the_reference_does_under_its_declared_semantics"
DEVIATED = {  # the recipe point each injected deviation changes: the cases where it shows
    "approximate_gelu": lambda name: CASES[name][0]["activation"] == "gelu",
    "pytorch_momentum": lambda name: "sgd_momentum" in exercised(name),
    "biased_variance": lambda name: bool(running_variance_indices(name)),
}


@pytest.mark.parametrize("deviation", DEVIATED)
def test_a_backend_that_deviates_from_the_recipe_it_declares_fails_the_equivalence_suite(tmp_path, deviation):
    """The numpy backend trains with one recipe point changed (an approximate GELU, PyTorch-style
    momentum, the biased running variance) while its SEMANTICS still declare the recipe's: the
    equivalence suite fails, on exactly the cases that exercise that point, and passes the rest."""
    result, outcomes = run_pytest(tmp_path, "tests/test_equivalence.py", deviation=deviation)

    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-2000:]
    failed = {name for name, outcome in outcomes.items() if outcome == "failure"}
    expected = {name for name in CASES if DEVIATED[deviation](name)}
    assert expected and len(expected) < len(CASES)
    assert {f"test_equivalence::{AGAINST_REFERENCE}[{name}-numpy]" for name in expected} <= failed
    assert {name.split("[")[0] for name in failed} <= {f"test_equivalence::{AGAINST_REFERENCE}",
                                                      "test_equivalence::test_the_reference_tells_every_convention_apart"}
    assert all(outcomes[f"test_equivalence::{AGAINST_REFERENCE}[{name}-numpy]"] == "passed"
               for name in set(CASES) - expected)
