"""stages/common/architecture.py: the framework-neutral layer list."""

from __future__ import annotations

import dataclasses
import math

import pytest

from stages.common.architecture import ArchitectureSpec, build_spec
from stages.common.errors import StageError
from stages.common.params import ConvBlock, ModelParams, validate
from tests.support import project_params


@pytest.fixture(scope="module")
def loaded():
    return validate(project_params())

def tutorial_model() -> ModelParams:
    """The classic Keras MNIST tutorial: Conv2D(32, 3x3, valid) + ReLU, MaxPool 2, Flatten, Dense 10."""
    block = ConvBlock(filters=32, kernel_size=3, convs=1, batch_norm=False, pool=2, dropout=0.0)
    return ModelParams(conv_blocks=(block,), padding="valid", block_order="conv-norm-act-pool", activation="relu",
                       dense=(), dense_dropout=0.0)


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
    return ModelParams(conv_blocks=blocks, padding="same", block_order="conv-norm-act-pool", activation="relu",
                       dense=(128,), dense_dropout=0.25)


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


def test_pool_first_order_pools_each_blocks_last_conv_before_its_norm_and_activation():
    two_convs = ConvBlock(filters=8, kernel_size=3, convs=2, batch_norm=True, pool=2, dropout=0.1)
    no_pool = ConvBlock(filters=4, kernel_size=3, convs=1, batch_norm=False, pool=1, dropout=0.0)
    classic = ModelParams(conv_blocks=(two_convs, no_pool), padding="same", block_order="conv-norm-act-pool",
                          activation="relu", dense=(), dense_dropout=0.0)
    pool_first = dataclasses.replace(classic, block_order="conv-pool-norm-act")

    spec = build_spec(pool_first, (28, 28, 1), 10)

    assert [(layer.kind, layer.output_shape) for layer in spec.layers] == [
        ("conv", (28, 28, 8)), ("batch_norm", (28, 28, 8)), ("activation", (28, 28, 8)),
        ("conv", (28, 28, 8)), ("max_pool", (14, 14, 8)), ("batch_norm", (14, 14, 8)), ("activation", (14, 14, 8)),
        ("dropout", (14, 14, 8)),
        ("conv", (14, 14, 4)), ("activation", (14, 14, 4)),  # pool 1: no pooling layer in either order
        ("flatten", (784,)), ("dense", (10,)),
    ]
    reference = build_spec(classic, (28, 28, 1), 10)
    assert [layer.kind for layer in reference.layers][3:8] == ["conv", "batch_norm", "activation", "max_pool",
                                                                "dropout"]
    # The same weights in the same order: only where the pooling happens moves.
    assert [(layer.kind, layer.parameters) for layer in spec.layers if layer.parameters] == [
        (layer.kind, layer.parameters) for layer in reference.layers if layer.parameters]


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
    model = ModelParams(conv_blocks=(block, block, block), padding="valid", block_order="conv-norm-act-pool",
                        activation="relu", dense=(), dense_dropout=0.0)

    # 28 -> 24 -> 20 -> pool 10 -> 6 -> 2 -> pool 1 -> 5x5 kernel: -3
    with pytest.raises(StageError, match=r"model.conv_blocks\[2\]: conv 1 shrinks the feature map to -3x-3"):
        build_spec(model, (28, 28, 1), 10)


@pytest.mark.parametrize("order", ["conv-norm-act-pool", "conv-pool-norm-act"])
def test_pooling_that_shrinks_the_map_to_nothing_is_an_error(order):
    block = ConvBlock(filters=8, kernel_size=3, convs=1, batch_norm=True, pool=4, dropout=0.0)
    model = ModelParams(conv_blocks=(block,) * 3, padding="same", block_order=order, activation="relu", dense=(),
                        dense_dropout=0.0)

    # 28 -> pool 7 -> pool 1 -> pool 0
    with pytest.raises(StageError, match=r"model.conv_blocks\[2\]: pooling by 4 shrinks the feature map to 0x0"):
        build_spec(model, (28, 28, 1), 10)


