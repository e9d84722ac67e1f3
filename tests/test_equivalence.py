"""Every registered framework gets the same recipe: from identical weights and the same batches,
a few optimisation steps give the same weights, losses and learning rates in every pair of
frameworks, except where a framework's own public API implements a recipe point differently
(the backends' ``SEMANTICS``, tabled in docs/fairness.md and the report). There the documented
difference is checked: it must show up, and only where the table says.

Each framework trains every case below in its own subprocess (``tests/framework_worker.py fit``)
with the backend's real ``fit``, starting from the framework-neutral initial weights of
``stages.common.architecture.initial_weights``; this module imports no framework. Dropout and
augmentation are off in the compared cases (their random draws are framework-specific).

Tolerances (float32 arithmetic, a few steps):
- SGD with momentum agrees to ~1e-7 under a constant rate: ``WEIGHT_ATOL`` is far above that.
  Under a changing rate, a velocity in weight units (Keras, JAX/Flax) and a buffer in gradient
  units (PyTorch) differ (``sgd_momentum``), and SGD's weight decay is decoupled in Keras and
  JAX/Flax, coupled (L2) in PyTorch (``sgd_weight_decay``): cases exercising a point on which a
  pair's SEMANTICS differ must end more than ``WEIGHT_ATOL`` apart.
- Adam/AdamW: frameworks place Adam's epsilon differently (Keras adds it to sqrt(v), PyTorch and
  optax to the bias-corrected sqrt(v)), which moves weights whose gradient is ~1e-7 by up to
  ~5e-4 here; ``WEIGHT_ATOL = 2e-3`` covers that. The recipe differences this must catch
  (weight decay 0.3, label smoothing 0.2, a schedule not applied, momentum off, another batch
  order) each move weights by 1e-2 or more in these cases.
- Batch-norm running variance: with the same convention two frameworks agree to ~4e-6
  (``VARIANCE_RTOL = 1e-5``); Keras' and Flax's layers use the biased batch variance and
  PyTorch's the unbiased one (``moving_variance``), about 3e-4 apart here: then
  ``VARIANCE_BIAS_RTOL`` and the unbiased one must be the larger.
- Losses agree to ~2e-5: ``LOSS_ATOL = 1e-4``.
- GELU: the exact GELU against its tanh approximation moves weights and losses by ~8e-5 in
  ``GELU_CASE``, within the tolerances above; in that case every other recipe point agrees to
  ~1e-7, so there the pairs must agree within ``GELU_ATOL = 1e-5`` (or differ by more,
  where their SEMANTICS say one uses the approximation).
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest

from stages.backends.base import batch_indices
from stages.common.architecture import BATCH_NORM_DECAY, BATCH_NORM_EPSILON, build_spec, initial_weights
from stages.common.params import ModelParams, parse_section
from stages.common.semantics import SEMANTIC_CHOICES
from tests.support import PROJECT_ROOT, assert_glorot_initialisation, project_params, selected_frameworks

FRAMEWORKS = selected_frameworks()  # every registered framework (or those --framework names), each in its own worker
PAIRS = list(itertools.combinations(FRAMEWORKS, 2))
WEIGHT_ATOL = 2e-3
VARIANCE_RTOL = 1e-5
VARIANCE_BIAS_RTOL = 2e-3
LOSS_ATOL = 1e-4
GELU_ATOL = 1e-5
# Against the framework-free reference (float64), under each framework's own SEMANTICS: measured
# over every case and framework, weights agree to 1.5e-6, running variances to 4e-7 relative, step
# losses to 2.4e-6. Flipping one exercised convention moves the reference from every framework by
# at least 2.0e-5 (Adam's epsilon placement, the smallest), 8e-5 (GELU), 3e-2 (SGD momentum, decay)
# in the weights and 2.9e-4 relative in the running variance: the tolerances sit between the two.
REFERENCE_ATOL = 1e-5
REFERENCE_LOSS_ATOL = 2e-5


def model(batch_norm: bool = True, dropout: float = 0.0, block_order: str = "conv-norm-act-pool",
          activation: str = "tanh") -> dict:
    return {"conv_blocks": [{"filters": 4, "kernel_size": 3, "convs": 1, "batch_norm": batch_norm, "pool": 2,
                             "dropout": dropout}],
            "padding": "valid", "block_order": block_order, "activation": activation, "dense": [8],
            "dense_dropout": dropout}


POOL_FIRST = "conv-pool-norm-act"


def train(**overrides) -> dict:
    settings = {"epochs": 2, "batch_size": 16, "optimizer": "adam", "learning_rate": 0.01, "momentum": 0.9,
                "weight_decay": 0.0, "schedule": "constant", "warmup_fraction": 0.25, "label_smoothing": 0.0,
                "input_scale": 1.0, "threads": 2, "device": "cpu", "augment": {"enabled": False}}
    settings.update(overrides)
    return settings


# 40 training images in batches of 16: two full batches and a smaller last one, per epoch.
DATA = {"seed": 5, "image_size": 12, "train_count": 40, "val_count": 16}
# Every optimizer, every schedule, weight decay, label smoothing and batch norm on and off.
CASES = {
    "adam_constant_batch_norm": (model(), train()),
    "adamw_onecycle_weight_decay": (model(), train(optimizer="adamw", schedule="onecycle", weight_decay=0.3)),
    "adam_cosine_label_smoothing": (model(), train(schedule="cosine", label_smoothing=0.2)),
    "sgd_momentum_cosine_weight_decay": (model(), train(optimizer="sgd", schedule="cosine", learning_rate=0.05,
                                                        weight_decay=0.3)),
    "sgd_momentum_onecycle_no_batch_norm": (model(batch_norm=False), train(optimizer="sgd", schedule="onecycle",
                                                                           learning_rate=0.05)),
    "sgd_constant_label_smoothing_no_batch_norm": (model(batch_norm=False), train(
        optimizer="sgd", learning_rate=0.05, label_smoothing=0.2)),
    "adamw_cosine_weight_decay_no_batch_norm": (model(batch_norm=False), train(
        optimizer="adamw", schedule="cosine", weight_decay=0.3)),
    # The default block order (pool before batch norm and activation). SGD agrees to rounding
    # (2.4e-7 in the loss); Adam turns rounding-level differences in near-zero gradients into
    # full-size steps, which with label smoothing and a cosine schedule reached 1.9e-4 in the
    # loss by step 4 on this order, over LOSS_ATOL, so that combination is left to the
    # classic order above.
    "adam_constant_batch_norm_pool_first": (model(block_order=POOL_FIRST), train()),
    "sgd_momentum_cosine_weight_decay_pool_first": (model(block_order=POOL_FIRST), train(
        optimizer="sgd", schedule="cosine", learning_rate=0.05, weight_decay=0.3)),
    # SGD where the frameworks' semantics agree: a constant rate, no decay.
    "sgd_momentum_constant_batch_norm": (model(), train(optimizer="sgd", learning_rate=0.05)),
    # GELU where every other point agrees (SGD, a constant rate, no batch norm): frameworks agree
    # to ~1e-7, and the tanh approximation (JAX's default) moves them by ~8e-5 (``GELU_ATOL``).
    "sgd_momentum_constant_gelu_no_batch_norm": (model(batch_norm=False, activation="gelu"), train(
        optimizer="sgd", learning_rate=0.05)),
}
GELU_CASE = "sgd_momentum_constant_gelu_no_batch_norm"


def case(name: str) -> dict:
    """One of ``CASES`` as a worker (and the reference) trains it."""
    return {"name": name, "model": CASES[name][0], "train": CASES[name][1], **DATA}


def exercised(name: str) -> set[str]:
    """The SEMANTICS keys whose convention changes this case's trained weights."""
    settings = CASES[name][1]
    points = set()
    if CASES[name][0]["activation"] == "gelu":
        points.add("gelu")
    if settings["optimizer"] == "sgd" and settings["weight_decay"] > 0:
        points.add("sgd_weight_decay")
    if settings["optimizer"] == "sgd" and settings["momentum"] > 0 and settings["schedule"] != "constant":
        points.add("sgd_momentum")
    return points


def semantics(outputs: dict, framework: str) -> dict[str, str]:
    return json.loads((outputs[framework] / "semantics.json").read_text())


def differing(outputs: dict, points: set[str], pair: tuple[str, str]) -> set[str]:
    """Of ``points``, those on which the pair's recorded SEMANTICS differ."""
    left, right = (semantics(outputs, framework) for framework in pair)
    return {point for point in points if left[point] != right[point]}
# As shipped: two threads, several epochs, augmentation and dropout on. Trained first in each
# worker, then again alone in a fresh process: the model files must be identical bytes.
SHIPPED = {"name": "shipped", "model": model(dropout=0.25, block_order=POOL_FIRST), "save_model": True,
           "background": -0.5,
           "train": train(optimizer="adamw", schedule="onecycle", weight_decay=1e-4, epochs=3,
                          augment={"enabled": True, "max_shift": 0.1, "max_rotation_deg": 10.0}), **DATA}


def model_file(outputs: dict, framework: str):
    """The shipped case's saved model (``shipped.<the backend's MODEL_FILE>``)."""
    (path,) = (outputs[framework]).glob("shipped.model*")
    return path


def run_workers(cases: list[dict], folder) -> dict:
    """Run every framework's worker concurrently (one process each); their output folders."""
    (folder / "cases.json").write_text(json.dumps({"cases": cases}))
    outputs, processes = {}, {}
    for framework in FRAMEWORKS:
        outputs[framework] = folder / framework
        outputs[framework].mkdir()
        processes[framework] = subprocess.Popen(
            [sys.executable, "-m", "tests.framework_worker", framework, "fit", str(folder / "cases.json"),
             str(outputs[framework])], cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    for framework, process in processes.items():
        output, _ = process.communicate(timeout=600)
        assert process.returncode == 0, f"{framework} worker failed:\n{output.decode(errors='replace')[-3000:]}"
    return outputs


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cases = [SHIPPED] + [case(name) for name in CASES]
    return run_workers(cases, tmp_path_factory.mktemp("equivalence"))


@pytest.fixture(scope="module")
def retrained(tmp_path_factory):
    return run_workers([SHIPPED], tmp_path_factory.mktemp("determinism"))


def load(outputs: dict, name: str) -> dict:
    return {framework: dict(np.load(outputs[framework] / f"{name}.npz")) for framework in FRAMEWORKS}


def weights(run: dict) -> list[np.ndarray]:
    return [run[f"weight_{index}"] for index in range(len([key for key in run if key.startswith("weight_")]))]


def initial(name: str) -> list[np.ndarray]:
    spec = build_spec(parse_section(ModelParams, CASES[name][0], "model"),
                      (DATA["image_size"], DATA["image_size"], 1), 10)
    return initial_weights(spec, np.random.default_rng(DATA["seed"]))


def batches(run: dict) -> list[np.ndarray]:
    return np.split(run["step_rows"], np.cumsum(run["step_sizes"])[:-1])


def running_variance_indices(name: str) -> set[int]:
    """Positions of the batch-norm running variances in the canonical weight list."""
    indices, position = set(), 0
    spec = build_spec(parse_section(ModelParams, CASES[name][0], "model"), (12, 12, 1), 10)
    for layer in spec.layers:
        if layer.kind == "conv":
            position += 1 + int(layer.config["bias"])
        elif layer.kind == "batch_norm":
            indices.add(position + 3)
            position += 4
        elif layer.kind == "dense":
            position += 2
    return indices


@pytest.mark.parametrize("pair", PAIRS, ids="-vs-".join)
@pytest.mark.parametrize("name", CASES)
def test_every_pair_reaches_the_same_weights_except_where_their_semantics_differ(trained, name, pair):
    runs = load(trained, name)
    start = initial(name)
    variances = running_variance_indices(name)
    first, second = (weights(runs[framework]) for framework in pair)
    assert len(first) == len(second) == len(start)
    for trained_weights in (first, second):
        moved = max(float(np.abs(trained_weight - initial_weight).max())
                    for trained_weight, initial_weight in zip(trained_weights, start))
        assert moved > 10 * WEIGHT_ATOL  # training moved the weights far beyond the tolerance
    if differing(trained, exercised(name), pair):  # a documented difference: it must show
        apart = max(float(np.abs(left - right).max()) for index, (left, right) in
                    enumerate(zip(first, second)) if index not in variances)
        assert apart > WEIGHT_ATOL, f"{name}: {differing(trained, exercised(name), pair)} should set them apart"
        return
    biased = differing(trained, {"moving_variance"}, pair)
    for index, (left, right) in enumerate(zip(first, second)):
        if index in variances and biased:
            np.testing.assert_allclose(left, right, rtol=VARIANCE_BIAS_RTOL, err_msg=f"running variance {index}")
            second_unbiased = semantics(trained, pair[1])["moving_variance"] == "unbiased"
            unbiased, other = (right, left) if second_unbiased else (left, right)
            assert np.all(unbiased > other), f"running variance {index}: the unbiased one must be larger"
        elif index in variances:
            np.testing.assert_allclose(left, right, rtol=VARIANCE_RTOL, err_msg=f"running variance {index}")
        else:
            np.testing.assert_allclose(left, right, rtol=0, atol=WEIGHT_ATOL, err_msg=f"weight {index}")


@pytest.mark.parametrize("pair", PAIRS, ids="-vs-".join)
def test_every_pair_computes_the_gelu_its_semantics_name(trained, pair):
    runs = load(trained, GELU_CASE)
    first, second = (runs[framework] for framework in pair)
    apart = max(max(float(np.abs(left - right).max()) for left, right in zip(weights(first), weights(second))),
                float(np.abs(first["step_loss"] - second["step_loss"]).max()))
    if differing(trained, {"gelu"}, pair):
        assert apart > GELU_ATOL, f"{pair}: the tanh approximation should set them apart"
    else:
        assert apart <= GELU_ATOL, f"{pair}: {apart:.2e} apart with the same GELU (an approximate one?)"


@pytest.mark.parametrize("pair", PAIRS, ids="-vs-".join)
@pytest.mark.parametrize("name", CASES)
def test_every_pair_reports_the_same_losses_at_every_step(trained, name, pair):
    runs = load(trained, name)
    first, second = (runs[framework] for framework in pair)
    np.testing.assert_array_equal(first["step_epoch"], second["step_epoch"])
    np.testing.assert_array_equal(first["step_batch"], second["step_batch"])
    assert first["step_loss"].shape == (6,)  # 2 epochs x 3 batches
    # The first step's loss precedes any update: equal whatever the optimizer's conventions.
    np.testing.assert_allclose(first["step_loss"][0], second["step_loss"][0], rtol=0, atol=LOSS_ATOL)
    if differing(trained, exercised(name), pair):
        return
    np.testing.assert_allclose(first["step_loss"], second["step_loss"], rtol=0, atol=LOSS_ATOL)
    for field in ("train_loss", "val_loss"):
        np.testing.assert_allclose(first[f"epoch_{field}"], second[f"epoch_{field}"], rtol=0, atol=LOSS_ATOL)
    np.testing.assert_allclose(first["epoch_val_accuracy"], second["epoch_val_accuracy"], atol=1 / 16 + 1e-9)
    # Training accuracy over all 40 images of each epoch: one image may flip between frameworks.
    np.testing.assert_allclose(first["epoch_train_accuracy"], second["epoch_train_accuracy"],
                               atol=1 / 40 + 1e-9)


@pytest.mark.parametrize("name", CASES)
def test_optimizers_apply_the_scheduled_rate_at_every_step(trained, name):
    """The rate read back from each optimizer, step by step, is the shared table's, exactly, in
    the precision the framework holds it (Keras and optax: float32, PyTorch: float64); the epoch
    record carries the last step's."""
    runs = load(trained, name)
    table = runs[FRAMEWORKS[0]]["table"]
    assert table.shape == (6,)
    if CASES[name][1]["schedule"] != "constant":
        assert len(np.unique(table)) == 6  # the schedule changes the rate at every step
    for framework in FRAMEWORKS:
        np.testing.assert_array_equal(runs[framework]["table"], table)
        rates = runs[framework]["step_learning_rate"]
        assert np.array_equal(rates, table) or np.array_equal(rates, table.astype(np.float32)), (framework, rates)
    for framework in FRAMEWORKS:
        np.testing.assert_array_equal(runs[framework]["epoch_learning_rate"],
                                      runs[framework]["step_learning_rate"][[2, 5]])


@pytest.mark.parametrize("name", CASES)
def test_every_framework_visits_the_same_batches_in_the_shared_order(trained, name):
    runs = load(trained, name)
    generator = np.random.default_rng(DATA["seed"])
    expected = [rows for _ in range(2) for rows in batch_indices(DATA["train_count"], 16, generator)]
    assert [len(rows) for rows in expected] == [16, 16, 8, 16, 16, 8]
    for framework in FRAMEWORKS:
        visited = batches(runs[framework])
        assert len(visited) == len(expected), framework
        for step, (rows, want) in enumerate(zip(visited, expected)):
            np.testing.assert_array_equal(np.sort(rows), np.sort(want), err_msg=f"{framework} step {step + 1}")
    # Two epochs visit the images in different orders (the order is reshuffled per epoch).
    assert not np.array_equal(np.concatenate(expected[:3]), np.concatenate(expected[3:]))


@pytest.fixture(scope="module")
def references() -> dict:
    """The cases trained by the framework-free reference (tests/reference_trainer.py), each under
    the conventions asked for, once: (case, conventions) -> its weights and step losses."""
    return {}


def reference_for(references: dict, name: str, conventions: dict[str, str]) -> dict:
    from tests.reference_trainer import train_reference

    key = (name, json.dumps(conventions, sort_keys=True))
    if key not in references:
        references[key] = train_reference(case(name), conventions)
    return references[key]


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("name", CASES)
def test_every_framework_trains_as_the_reference_does_under_its_declared_semantics(trained, references, name,
                                                                                   framework):
    """Against a framework-free reference (numpy, float64, forward and backward written out), not
    only against each other: every framework's weights, running statistics and step losses are the
    recipe's, under the conventions its backend declares. A framework that deviates where it
    declares otherwise (an approximate GELU, momentum in other units, another running-variance
    convention) ends apart from the reference (``test_the_reference_tells_every_convention_apart``)."""
    run = load(trained, name)[framework]
    expected = reference_for(references, name, semantics(trained, framework))
    variances = running_variance_indices(name)
    assert len(weights(run)) == len(expected["weights"])
    for index, (got, want) in enumerate(zip(weights(run), expected["weights"])):
        if index in variances:
            np.testing.assert_allclose(got, want, rtol=VARIANCE_RTOL, err_msg=f"{framework}: running variance {index}")
        else:
            np.testing.assert_allclose(got, want, rtol=0, atol=REFERENCE_ATOL, err_msg=f"{framework}: weight {index}")
    np.testing.assert_allclose(run["step_loss"], expected["step_loss"], rtol=0, atol=REFERENCE_LOSS_ATOL,
                               err_msg=framework)


@pytest.mark.parametrize("name", CASES)
def test_the_reference_tells_every_convention_apart(trained, references, name):
    """The check above has teeth: on every case where a recipe point matters, the reference under
    the other convention for that point ends further from each framework than the tolerances allow.
    So a backend that declared one convention and ran the other would fail it."""
    variances = running_variance_indices(name)
    points = exercised(name) | ({"moving_variance"} if variances else set()) | (
        {"adam_epsilon"} if CASES[name][1]["optimizer"] != "sgd" else set())
    for framework in FRAMEWORKS:
        run = weights(load(trained, name)[framework])
        declared = semantics(trained, framework)
        for point in points:
            other = next(value for value in SEMANTIC_CHOICES[point] if value != declared[point])
            flipped = reference_for(references, name, {**declared, point: other})
            if point == "moving_variance":
                gap = max(float(np.max(np.abs(run[index] / flipped["weights"][index] - 1))) for index in variances)
                assert gap > VARIANCE_RTOL, (framework, point, gap)
            else:
                gap = max(float(np.abs(left - right).max()) for index, (left, right) in
                          enumerate(zip(run, flipped["weights"])) if index not in variances)
                assert gap > REFERENCE_ATOL, (framework, point, gap)


def test_batch_norm_constants_are_the_architectures_in_every_framework(trained):
    runs = load(trained, "adam_constant_batch_norm")
    for framework in FRAMEWORKS:
        np.testing.assert_allclose(runs[framework]["batch_norm_constants"], [[BATCH_NORM_DECAY, BATCH_NORM_EPSILON]],
                                   rtol=1e-6, err_msg=framework)


def test_shipped_recipe_trains_to_identical_bytes_in_two_processes(trained, retrained):
    for framework in FRAMEWORKS:
        first, second = model_file(trained, framework).read_bytes(), model_file(retrained, framework).read_bytes()
        assert first == second, f"{framework}: two runs of the same seed saved different model files"
        first_run, second_run = load(trained, "shipped")[framework], load(retrained, "shipped")[framework]
        for left, right in zip(weights(first_run), weights(second_run), strict=True):
            assert left.tobytes() == right.tobytes(), framework
        assert first_run["epoch_train_loss"].shape == (3,)


def test_shared_initial_weights_are_glorot_uniform_with_zero_biases():
    spec = build_spec(parse_section(ModelParams, project_params()["model"], "model"), (28, 28, 1), 10)
    assert_glorot_initialisation(spec, initial_weights(spec, np.random.default_rng(0)))


def test_shared_initial_weights_depend_on_the_seed_only():
    spec = build_spec(parse_section(ModelParams, project_params()["model"], "model"), (28, 28, 1), 10)
    first, again = (initial_weights(spec, np.random.default_rng(1)) for _ in range(2))
    other = initial_weights(spec, np.random.default_rng(2))
    assert all(np.array_equal(left, right) for left, right in zip(first, again))
    assert not np.array_equal(first[0], other[0])
