"""Shared building blocks: learning-rate schedules, metrics, the architecture spec, atomic writes."""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from stages.common import atomic, metrics
from stages.common.architecture import ArchitectureSpec, build_spec
from stages.common.errors import StageError
from stages.common.params import ConvBlock, ModelParams, validate
from stages.common.schedules import learning_rates
from tests.support import project_params


@pytest.fixture(scope="module")
def loaded():
    return validate(project_params())


# --------------------------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------------------------
def schedule(loaded, kind: str, epochs: int = 4, learning_rate: float = 0.003, warmup_fraction: float = 0.2):
    return dataclasses.replace(loaded.train, schedule=kind, epochs=epochs, learning_rate=learning_rate,
                               warmup_fraction=warmup_fraction)


def test_constant_schedule(loaded):
    rates = learning_rates(schedule(loaded, "constant"), steps_per_epoch=25)

    assert rates.shape == (100,) and rates.dtype == np.float64
    assert np.all(rates == 0.003)


def test_cosine_schedule(loaded):
    rates = learning_rates(schedule(loaded, "cosine", epochs=2), steps_per_epoch=50)

    assert rates.shape == (100,)
    assert rates[0] == 0.003  # starts at the peak
    assert np.all(np.diff(rates) < 0)  # then only decreases
    assert rates[50] == pytest.approx(0.0015)  # half-way: half the peak
    assert 0 < rates[-1] < 0.003 * 1e-3  # ends just above 0


def test_onecycle_schedule(loaded):
    rates = learning_rates(schedule(loaded, "onecycle", epochs=4, warmup_fraction=0.2), steps_per_epoch=250)

    assert rates.shape == (1000,)
    warmup = 200
    assert rates[0] == pytest.approx(0.003 / 25)  # warm-up starts at peak / 25
    assert np.all(np.diff(rates[: warmup + 1]) > 0)  # warm-up: strictly increasing, linearly
    np.testing.assert_allclose(np.diff(rates[:warmup]), (0.003 - 0.003 / 25) / warmup)
    assert int(np.argmax(rates)) == warmup and rates.max() == pytest.approx(0.003)  # the peak, once
    assert np.all(np.diff(rates[warmup:]) < 0)  # then decays
    assert rates[-1] == pytest.approx(0.003 / 1e4, rel=0.05)  # to peak / 1e4
    assert rates.min() >= 0.003 / 1e4


def test_onecycle_without_warmup_starts_at_the_peak(loaded):
    rates = learning_rates(schedule(loaded, "onecycle", warmup_fraction=0.0), steps_per_epoch=10)

    assert rates[0] == 0.003
    assert np.all(np.diff(rates) < 0)


def test_schedule_of_a_single_step(loaded):
    for kind in ("constant", "cosine", "onecycle"):
        rates = learning_rates(schedule(loaded, kind, epochs=1), steps_per_epoch=1)
        assert rates.shape == (1,) and rates[0] == pytest.approx(0.003), kind


def test_project_schedule_shape(loaded):
    """The shipped recipe (whatever its values): one rate per optimizer step, peaking at learning_rate."""
    steps = math.ceil(54_000 / loaded.train.batch_size)
    rates = learning_rates(loaded.train, steps)

    assert rates.shape == (loaded.train.epochs * steps,)
    assert rates.max() == pytest.approx(loaded.train.learning_rate)
    assert np.all(rates > 0)


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------
TRUE = np.array([0, 0, 0, 1, 1, 2])
PREDICTED = np.array([0, 0, 1, 1, 0, 0])  # class 2 is never predicted; class 3 never occurs at all


def test_confusion_matrix():
    confusion = metrics.confusion_matrix(TRUE, PREDICTED, num_classes=4)

    np.testing.assert_array_equal(confusion, [[2, 1, 0, 0],
                                              [1, 1, 0, 0],
                                              [1, 0, 0, 0],
                                              [0, 0, 0, 0]])


def test_confusion_matrix_rows_are_true_classes():
    confusion = metrics.confusion_matrix(np.array([2]), np.array([0]), num_classes=3)

    assert confusion[2, 0] == 1 and confusion.sum() == 1


def test_confusion_matrix_shapes_must_agree():
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.confusion_matrix(np.array([0, 1]), np.array([0]), num_classes=2)


def test_per_class_scores_with_a_class_never_predicted():
    confusion = metrics.confusion_matrix(TRUE, PREDICTED, num_classes=4)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division-by-zero warnings for the empty classes
        scores = metrics.per_class_scores(confusion)

    np.testing.assert_allclose(scores["precision"], [2 / 4, 1 / 2, 0, 0])
    np.testing.assert_allclose(scores["recall"], [2 / 3, 1 / 2, 0, 0])
    f1_first = 2 * (1 / 2) * (2 / 3) / (1 / 2 + 2 / 3)
    np.testing.assert_allclose(scores["f1"], [f1_first, 1 / 2, 0, 0])
    np.testing.assert_array_equal(scores["support"], [3, 2, 1, 0])
    assert scores["support"].dtype == np.int64


def test_perfect_scores():
    confusion = metrics.confusion_matrix(np.array([0, 1, 2]), np.array([0, 1, 2]), num_classes=3)

    scores = metrics.per_class_scores(confusion)

    for name in ("precision", "recall", "f1"):
        np.testing.assert_array_equal(scores[name], [1.0, 1.0, 1.0])


def test_accuracy():
    assert metrics.accuracy(TRUE, PREDICTED) == 0.5
    assert metrics.accuracy(np.array([], dtype=int), np.array([], dtype=int)) == 0.0


def test_cross_entropy():
    probabilities = np.array([[0.5, 0.5, 0.0], [0.1, 0.9, 0.0], [0.2, 0.2, 0.6]], dtype=np.float32)

    loss = metrics.cross_entropy(probabilities, np.array([0, 1, 2]))

    assert loss == pytest.approx(-(math.log(0.5) + math.log(0.9) + math.log(0.6)) / 3, rel=1e-6)


def test_cross_entropy_of_a_zero_probability_is_finite():
    loss = metrics.cross_entropy(np.array([[1.0, 0.0]]), np.array([1]))

    assert loss == pytest.approx(-math.log(1e-12))


def test_percentile_ms():
    assert metrics.percentile_ms([0.001, 0.003, 0.002], 50) == pytest.approx(2.0)
    assert metrics.percentile_ms(np.array([0.001, 0.002, 0.003]), 100) == pytest.approx(3.0)


# --------------------------------------------------------------------------------------------
# Architecture spec
# --------------------------------------------------------------------------------------------
def tutorial_model() -> ModelParams:
    """The classic Keras MNIST tutorial: Conv2D(32, 3x3, valid) + ReLU, MaxPool 2, Flatten, Dense 10."""
    block = ConvBlock(filters=32, kernel_size=3, convs=1, batch_norm=False, pool=2, dropout=0.0)
    return ModelParams(conv_blocks=(block,), padding="valid", activation="relu", dense=(), dense_dropout=0.0)


def test_tutorial_model_parameter_count():
    spec = build_spec(tutorial_model(), (28, 28, 1), 10)

    assert spec.parameters == 54_410  # 3*3*32 + 32 = 320, then 13*13*32*10 + 10 = 54,090
    assert [(layer.kind, layer.output_shape, layer.parameters) for layer in spec.layers] == [
        ("conv", (26, 26, 32), 320),
        ("activation", (26, 26, 32), 0),
        ("max_pool", (13, 13, 32), 0),
        ("flatten", (5408,), 0),
        ("dense", (10,), 54_090),
    ]
    assert spec.layers[0].config == {"filters": 32, "kernel_size": 3, "padding": "valid", "bias": True}


def default_model() -> ModelParams:
    """The model params.yaml shipped with: two same-padded conv blocks (32, 64) with batch norm, dense 128."""
    blocks = tuple(ConvBlock(filters=filters, kernel_size=3, convs=1, batch_norm=True, pool=2, dropout=0.0)
                   for filters in (32, 64))
    return ModelParams(conv_blocks=blocks, padding="same", activation="relu", dense=(128,), dense_dropout=0.25)


def test_default_model():
    spec = build_spec(default_model(), (28, 28, 1), 10)

    assert [(layer.kind, layer.output_shape) for layer in spec.layers] == [
        ("conv", (28, 28, 32)), ("batch_norm", (28, 28, 32)), ("activation", (28, 28, 32)),
        ("max_pool", (14, 14, 32)),
        ("conv", (14, 14, 64)), ("batch_norm", (14, 14, 64)), ("activation", (14, 14, 64)),
        ("max_pool", (7, 7, 64)),
        ("flatten", (3136,)),
        ("dropout", (3136,)), ("dense", (128,)), ("activation", (128,)),
        ("dropout", (128,)), ("dense", (10,)),  # logits: no activation after the output layer
    ]
    convs = [layer for layer in spec.layers if layer.kind == "conv"]
    assert [layer.config["bias"] for layer in convs] == [False, False]  # batch norm replaces the bias
    assert [layer.parameters for layer in spec.layers if layer.parameters] == [
        3 * 3 * 1 * 32, 2 * 32, 3 * 3 * 32 * 64, 2 * 64, 3136 * 128 + 128, 128 * 10 + 10]
    assert spec.parameters == 421_738


def test_project_model_builds_consistently(loaded):
    spec = build_spec(loaded.model, (28, 28, 1), 10)

    assert spec.layers[-1].kind == "dense" and spec.layers[-1].output_shape == (10,)
    assert spec.parameters == sum(layer.parameters for layer in spec.layers) > 0
    flatten = next(layer for layer in spec.layers if layer.kind == "flatten")
    before = spec.layers[spec.layers.index(flatten) - 1].output_shape
    assert flatten.output_shape == (math.prod(before),)


def test_spec_json_round_trip(loaded):
    spec = build_spec(loaded.model, (28, 28, 1), 10)

    again = ArchitectureSpec.from_json(spec.to_json())

    assert again == spec
    assert again.summary() == spec.summary()


def test_convolutions_that_shrink_the_map_to_nothing_are_an_error():
    block = ConvBlock(filters=8, kernel_size=5, convs=2, batch_norm=False, pool=2, dropout=0.0)
    model = ModelParams(conv_blocks=(block, block, block), padding="valid", activation="relu", dense=(),
                        dense_dropout=0.0)

    # 28 -> 24 -> 20 -> pool 10 -> 6 -> 2 -> pool 1 -> 5x5 kernel: -3
    with pytest.raises(StageError, match=r"model.conv_blocks\[2\]: conv 1 shrinks the feature map to -3x-3"):
        build_spec(model, (28, 28, 1), 10)


def test_pooling_that_shrinks_the_map_to_nothing_is_an_error():
    block = ConvBlock(filters=8, kernel_size=3, convs=1, batch_norm=True, pool=4, dropout=0.0)
    model = ModelParams(conv_blocks=(block,) * 3, padding="same", activation="relu", dense=(), dense_dropout=0.0)

    # 28 -> pool 7 -> pool 1 -> pool 0
    with pytest.raises(StageError, match=r"model.conv_blocks\[2\]: pooling by 4 shrinks the feature map to 0x0"):
        build_spec(model, (28, 28, 1), 10)


# --------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------
class Boom(Exception):
    pass


def listing(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_atomic_path_replaces_on_success(tmp_path):
    final = tmp_path / "metrics.json"
    final.write_text("old")

    with atomic.atomic_path(final) as temporary:
        assert temporary.parent == tmp_path and temporary != final
        temporary.write_text("new")
        assert final.read_text() == "old"  # readers see the old content until the end

    assert final.read_text() == "new"
    assert listing(tmp_path) == ["metrics.json"]
    assert final.stat().st_mode & 0o777 == 0o666 & ~current_umask()


def test_atomic_path_failure_keeps_the_previous_content(tmp_path):
    final = tmp_path / "metrics.json"
    final.write_text("old")

    with pytest.raises(Boom), atomic.atomic_path(final) as temporary:
        temporary.write_text("half-writ")
        raise Boom

    assert final.read_text() == "old"
    assert listing(tmp_path) == ["metrics.json"]


def test_atomic_path_failure_creates_nothing(tmp_path):
    with pytest.raises(Boom), atomic.atomic_path(tmp_path / "sub" / "model.keras") as temporary:
        temporary.write_bytes(b"partial")
        raise Boom

    assert listing(tmp_path / "sub") == []


def test_atomic_helpers_write_their_formats(tmp_path):
    atomic.write_json(tmp_path / "a.json", {"accuracy": 0.99})
    atomic.write_text(tmp_path / "b.txt", "ünïcode")
    atomic.write_npy(tmp_path / "c.npy", np.arange(6, dtype=np.float32).reshape(2, 3).T)

    assert (tmp_path / "a.json").read_text() == '{\n  "accuracy": 0.99\n}\n'
    assert (tmp_path / "b.txt").read_bytes() == "ünïcode".encode()
    np.testing.assert_array_equal(np.load(tmp_path / "c.npy"), np.arange(6, dtype=np.float32).reshape(2, 3).T)
    assert listing(tmp_path) == ["a.json", "b.txt", "c.npy"]


def test_write_npy_failure_keeps_the_previous_file(tmp_path):
    final = tmp_path / "c.npy"
    np.save(final, np.arange(3))

    with pytest.raises(ValueError):
        atomic.write_npy(final, np.array([{"not": "allowed"}], dtype=object))  # pickling is refused

    np.testing.assert_array_equal(np.load(final), np.arange(3))
    assert listing(tmp_path) == ["c.npy"]


def test_atomic_directory_replaces_on_success(tmp_path):
    final = tmp_path / "prepared"
    final.mkdir()
    (final / "old.npy").write_text("old")

    with atomic.atomic_directory(final) as temporary:
        assert listing(temporary) == []
        (temporary / "new.npy").write_text("new")
        assert listing(final) == ["old.npy"]

    assert listing(final) == ["new.npy"]
    assert listing(tmp_path) == ["prepared"]  # no temporary or .old folder left
    assert final.stat().st_mode & 0o777 == 0o777 & ~current_umask()


def test_atomic_directory_failure_keeps_the_previous_content(tmp_path):
    final = tmp_path / "prepared"
    final.mkdir()
    (final / "meta.json").write_text("previous")

    with pytest.raises(Boom), atomic.atomic_directory(final) as temporary:
        (temporary / "meta.json").write_text("partial")
        raise Boom

    assert listing(final) == ["meta.json"]
    assert (final / "meta.json").read_text() == "previous"
    assert listing(tmp_path) == ["prepared"]


def test_atomic_directory_failure_creates_nothing(tmp_path):
    with pytest.raises(Boom), atomic.atomic_directory(tmp_path / "prepared") as temporary:
        (temporary / "train_images.npy").write_bytes(b"partial")
        raise Boom

    assert listing(tmp_path) == []


def test_atomic_directory_replaces_a_file_in_the_way(tmp_path):
    final = tmp_path / "prepared"
    final.write_text("a file, not a folder")

    with atomic.atomic_directory(final) as temporary:
        (temporary / "meta.json").write_text("{}")

    assert listing(final) == ["meta.json"]
    assert listing(tmp_path) == ["prepared"]
