"""The framework-neutral description of the network that both trainers build.

``build_spec(model_params, image_shape, num_classes)`` expands the ``model:`` params into a flat
list of layers with their output shapes and trainable-parameter counts. The Keras and PyTorch
builders turn exactly this list into layers, and tests compare each built model against it.

Layer order per conv block: ``convs`` x [conv -> batch norm (if enabled) -> activation] with a
max-pool (if pool > 1), then dropout (if > 0). ``model.block_order`` places the pool:
``conv-norm-act-pool`` after the last activation (the classic order), ``conv-pool-norm-act``
right after the last conv, so that conv's batch norm and activation run on the pooled map
(pool x pool times fewer values; the same shapes, parameters and FLOPs counted). A conv
followed by batch norm has no bias (the norm's shift replaces it). After the blocks: flatten in
channels-last (H, W, C) order, the same in both frameworks so that weights move between them
unchanged, then for each hidden dense layer [dropout -> dense -> activation], then
[dropout -> dense(num_classes)] giving logits.

Batch-norm constants are fixed here so both frameworks agree: epsilon 1e-5 and a running
average that keeps 90% of the old value per step (Keras momentum 0.9 = PyTorch momentum 0.1).
Weights: Glorot-uniform kernels and zero biases in both (Keras' default; PyTorch is told).

The canonical weight layout (``get_weights``/``set_weights`` in both trainers): conv kernels
(kh, kw, in, out), dense kernels (in, out), then biases; batch norm gamma, beta, mean, variance.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stages.common import atomic, npfile
from stages.common.failures import StageError
from stages.common.params import ModelParams

BATCH_NORM_EPSILON = 1e-5
BATCH_NORM_DECAY = 0.9


@dataclass(frozen=True)
class Layer:
    kind: str  # conv | batch_norm | activation | max_pool | dropout | flatten | dense
    config: dict[str, Any] = field(default_factory=dict)
    output_shape: tuple[int, ...] = ()  # (H, W, C) or (units,)
    parameters: int = 0  # trainable parameters


@dataclass(frozen=True)
class ArchitectureSpec:
    input_shape: tuple[int, int, int]  # (H, W, C)
    num_classes: int
    layers: tuple[Layer, ...]

    @property
    def parameters(self) -> int:
        return sum(layer.parameters for layer in self.layers)

    def summary(self) -> list[str]:
        """One ``kind`` per layer, with the settings that define it (for parity tests)."""
        return [f"{layer.kind}{json.dumps(layer.config, sort_keys=True)}->{list(layer.output_shape)}"
                for layer in self.layers]

    def to_json(self) -> str:
        return json.dumps({"input_shape": list(self.input_shape), "num_classes": self.num_classes,
                           "layers": [asdict(layer) for layer in self.layers]}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ArchitectureSpec:
        raw = json.loads(text)
        layers = tuple(Layer(item["kind"], item["config"], tuple(item["output_shape"]), item["parameters"])
                       for item in raw["layers"])
        height, width, channels = raw["input_shape"]
        return cls((height, width, channels), raw["num_classes"], layers)


def _conv_output(size: int, kernel: int, padding: str) -> int:
    return size if padding == "same" else size - kernel + 1


def _pool(height: int, width: int, pool: int, block_index: int) -> tuple[int, int]:
    height, width = height // pool, width // pool
    if height < 1 or width < 1:
        raise StageError(f"model.conv_blocks[{block_index}]: pooling by {pool} shrinks the "
                         f"feature map to {height}x{width}; use a smaller pool or fewer blocks")
    return height, width


def build_spec(model: ModelParams, input_shape: tuple[int, int, int], num_classes: int) -> ArchitectureSpec:
    """Expand ``model:`` params into the layer list; raise StageError if a map shrinks to nothing."""
    height, width, channels = input_shape
    layers: list[Layer] = []
    activation = {"name": model.activation}
    for block_index, block in enumerate(model.conv_blocks):
        pool_first = block.pool > 1 and model.block_order == "conv-pool-norm-act"
        for conv_index in range(block.convs):
            height = _conv_output(height, block.kernel_size, model.padding)
            width = _conv_output(width, block.kernel_size, model.padding)
            if height < 1 or width < 1:
                raise StageError(f"model.conv_blocks[{block_index}]: conv {conv_index + 1} shrinks the "
                                 f"feature map to {height}x{width}; use padding: same or fewer blocks")
            bias = not block.batch_norm
            weights = block.kernel_size * block.kernel_size * channels * block.filters + (block.filters if bias else 0)
            channels = block.filters
            shape = (height, width, channels)
            layers.append(Layer("conv", {"filters": block.filters, "kernel_size": block.kernel_size,
                                         "padding": model.padding, "bias": bias}, shape, weights))
            if pool_first and conv_index == block.convs - 1:
                height, width = _pool(height, width, block.pool, block_index)
                shape = (height, width, channels)
                layers.append(Layer("max_pool", {"pool": block.pool}, shape))
            if block.batch_norm:
                layers.append(Layer("batch_norm", {"epsilon": BATCH_NORM_EPSILON, "decay": BATCH_NORM_DECAY},
                                    shape, 2 * channels))
            layers.append(Layer("activation", activation, shape))
        if block.pool > 1 and not pool_first:
            height, width = _pool(height, width, block.pool, block_index)
            layers.append(Layer("max_pool", {"pool": block.pool}, (height, width, channels)))
        if block.dropout > 0:
            layers.append(Layer("dropout", {"rate": block.dropout}, (height, width, channels)))
    features = height * width * channels
    layers.append(Layer("flatten", {"order": "HWC"}, (features,)))
    for units in (*model.dense, num_classes):
        if model.dense_dropout > 0:
            layers.append(Layer("dropout", {"rate": model.dense_dropout}, (features,)))
        layers.append(Layer("dense", {"units": units}, (units,), features * units + units))
        features = units
        layers.append(Layer("activation", activation, (units,)))
    layers.pop()  # the output layer gives logits: no activation after it
    return ArchitectureSpec(tuple(input_shape), num_classes, tuple(layers))  # type: ignore[arg-type]


def _glorot_uniform(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Keras' glorot_uniform: fans count the receptive field (kh * kw) times the channels."""
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape).astype(np.float32)


def canonical_layout(spec: ArchitectureSpec) -> list[tuple[tuple[int, ...], str]]:
    """Every weight array of ``spec`` in the canonical layout, in order: (shape, initial fill),
    the fill being ``glorot`` (kernels), ``zeros`` or ``ones``."""
    layout: list[tuple[tuple[int, ...], str]] = []
    channels = spec.input_shape[2]
    features = 0
    for layer in spec.layers:
        config = layer.config
        if layer.kind == "conv":
            kernel = config["kernel_size"]
            layout.append(((kernel, kernel, channels, config["filters"]), "glorot"))
            if config["bias"]:
                layout.append(((config["filters"],), "zeros"))
            channels = config["filters"]
        elif layer.kind == "batch_norm":
            layout += [((channels,), "ones"), ((channels,), "zeros"), ((channels,), "zeros"), ((channels,), "ones")]
        elif layer.kind == "flatten":
            features = layer.output_shape[0]
        elif layer.kind == "dense":
            layout += [((features, config["units"]), "glorot"), ((config["units"],), "zeros")]
            features = config["units"]
    return layout


def initial_weights(spec: ArchitectureSpec, rng: np.random.Generator) -> list[np.ndarray]:
    """Framework-neutral initial weights in the canonical layout: Glorot-uniform kernels, zero
    biases, batch norm gamma 1, beta 0, running mean 0, running variance 1."""
    return [_glorot_uniform(shape, rng) if fill == "glorot" else np.full(shape, fill == "ones", np.float32)
            for shape, fill in canonical_layout(spec)]


def load_initial_weights(path: Path, spec: ArchitectureSpec) -> list[np.ndarray]:
    """The ``stages/init.py`` weights for a seed (npz, read without pickle), checked against
    ``spec``: one array per weight of the canonical layout, each of its shape, finite floats."""
    rerun = "rerun `dvc repro init`"
    try:
        npfile.check(path, rerun)
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except FileNotFoundError:
        raise StageError(f"{path}: missing; run `dvc repro init` first") from None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:  # BadZipFile: a zip cut short
        raise StageError(f"{path}: not an initial-weights archive written by stages/init.py ({error}); "
                         f"{rerun}") from None
    expected = [shape for shape, _ in canonical_layout(spec)]
    names = [f"w{index}" for index in range(len(expected))]
    if sorted(arrays) != sorted(names):
        raise StageError(f"{path}: holds arrays {_names_of(arrays)}, expected {_names_of(names)} for the model in "
                         f"params.yaml; {rerun}")
    wrong = [(name, arrays[name].shape, shape) for name, shape in zip(names, expected, strict=True)
             if arrays[name].shape != shape]
    if wrong:
        (name, found, shape), rest = wrong[0], wrong[1:]
        more = (f", and {len(rest)} more array{'s' if len(rest) > 1 else ''} of another shape ("
                + ", ".join(f"{other} has {other_found}, expected {other_shape}"
                            for other, other_found, other_shape in rest) + ")") if rest else ""
        raise StageError(f"{path}: {name} has shape {found}, expected {shape}{more}; the model in params.yaml "
                         f"differs from the one these weights were drawn for: {rerun}")
    for name in names:
        array = arrays[name]
        if not np.issubdtype(array.dtype, np.floating):
            raise StageError(f"{path}: {name} holds {array.dtype} values; expected floating-point weights; {rerun}")
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise StageError(f"{path}: {name} holds {bad} NaN or infinite values; expected finite weights; {rerun}")
    return [arrays[name] for name in names]


def _names_of(names: Sequence[str] | dict[str, np.ndarray]) -> str:
    """``w0..w13`` for the consecutive array names stages/init.py writes, else the names listed."""
    listed = sorted(names, key=lambda name: (len(name), name))
    if listed and listed == [f"w{index}" for index in range(len(listed))]:
        return f"w0..w{len(listed) - 1}" if len(listed) > 1 else "w0"
    return ", ".join(listed) or "none"


def save_initial_weights(path: Path, weights: Sequence[np.ndarray]) -> None:
    with atomic.atomic_path(path) as temporary, open(temporary, "wb") as handle:
        arrays: dict[str, Any] = {f"w{index}": weight for index, weight in enumerate(weights)}
        np.savez(handle, **arrays)
