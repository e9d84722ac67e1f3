"""The PyTorch backend's network: the shared architecture as an ``nn.Sequential`` (NCHW), held in
``Network`` with the facts about it that PyTorch's module does not keep, its weights in the
canonical layout, and NHWC images turned into its input.

The canonical layout's dense weights, in Keras' HWC flatten order, are permuted to PyTorch's CHW
order in ``set_weights``/``get_weights``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from stages.common.architecture import BATCH_NORM_DECAY, BATCH_NORM_EPSILON, ArchitectureSpec


@dataclass
class Network:
    """The backend's model: PyTorch's module, and what the backend must know about it beside it."""

    layers: nn.Sequential  # PyTorch's own modules, taking NCHW float32 images, giving logits
    map_height: int | None = None  # the height of the feature map ``nn.Flatten`` flattens (None: no flatten)
    channels_last: bool = False  # the layers' weights, and so their inputs, in the channels-last format
    compiled: Callable[[Any], Any] | None = None  # ``torch.compile``'s wrapper of ``layers``, for inference

    def __call__(self, images):
        """Logits for an NCHW batch: the compiled wrapper where there is one, else the layers."""
        return (self.compiled if self.compiled is not None else self.layers)(images)


def build_model(spec: ArchitectureSpec, seed: int) -> Network:
    """The spec's layers as an ``nn.Sequential`` taking NCHW float32 images, giving logits; the
    initial weights drawn from PyTorch's global generator, which ``configure`` seeded with ``seed``."""
    activations = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
    modules = []
    channels = spec.input_shape[2]
    previous_shape: tuple[int, ...] = spec.input_shape
    flattened_height: int | None = None
    for layer in spec.layers:
        config = layer.config
        if layer.kind == "conv":
            modules.append(nn.Conv2d(channels, config["filters"], config["kernel_size"], padding=config["padding"],
                                     bias=config["bias"]))
            channels = config["filters"]
        elif layer.kind == "batch_norm":
            modules.append(nn.BatchNorm2d(channels, eps=BATCH_NORM_EPSILON, momentum=1 - BATCH_NORM_DECAY))
        elif layer.kind == "activation":
            modules.append(activations[config["name"]]())
        elif layer.kind == "max_pool":
            modules.append(nn.MaxPool2d(config["pool"]))
        elif layer.kind == "dropout":
            modules.append(nn.Dropout(config["rate"]))
        elif layer.kind == "flatten":
            modules.append(nn.Flatten())  # (C, H, W) order; set_weights permutes the next dense layer
            flattened_height = previous_shape[0]
        elif layer.kind == "dense":
            modules.append(nn.Linear(int(np.prod(previous_shape)), config["units"]))
        else:
            raise ValueError(f"unknown layer kind {layer.kind!r}")
        previous_shape = layer.output_shape
    model = nn.Sequential(*modules)
    # Keras' defaults (Glorot-uniform kernels, zero biases: PyTorch's xavier_uniform_ counts the
    # fans as Keras does), so both frameworks start from the same distribution of weights.
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return Network(model, flattened_height)


def _flattened_shapes(model: Network) -> dict[int, tuple[int, int, int]]:
    """For each dense layer right after ``nn.Flatten``: the (C, H, W) shape it flattens."""
    shapes, channels = {}, None
    modules = list(model.layers)
    for index, module in enumerate(modules):
        if isinstance(module, nn.Conv2d):
            channels = module.out_channels
        elif isinstance(module, nn.Flatten) and index + 1 < len(modules) and channels:
            dense = modules[index + 1]
            while not isinstance(dense, nn.Linear):
                index += 1
                dense = modules[index + 1]
            area = dense.in_features // channels
            side = math.isqrt(area)
            height = model.map_height if model.map_height is not None else side
            shapes[id(dense)] = (channels, height, area // height)
    return shapes


def _dense_layout(module, shapes, to_canonical: bool):
    """The permutation between a dense kernel's canonical (H, W, C) input order and PyTorch's (C, H, W)."""
    if id(module) not in shapes:
        return None
    channels, height, width = shapes[id(module)]
    chw = np.arange(channels * height * width).reshape(channels, height, width)
    hwc_to_chw = chw.transpose(1, 2, 0).reshape(-1)  # canonical row i holds PyTorch input hwc_to_chw[i]
    return hwc_to_chw if to_canonical else np.argsort(hwc_to_chw)


def count_parameters(model: Network) -> int:
    return int(sum(parameter.numel() for parameter in model.layers.parameters() if parameter.requires_grad))


def get_weights(model: Network) -> list[np.ndarray]:
    """All weights in the canonical layout: conv (kh, kw, in, out), dense (in, out), then biases;
    batch norm gamma, beta, running mean, running variance (Keras' order)."""
    weights: list[np.ndarray] = []
    shapes = _flattened_shapes(model)
    for module in model.layers:
        if isinstance(module, nn.Conv2d):
            weights.append(module.weight.detach().cpu().numpy().transpose(2, 3, 1, 0))
        elif isinstance(module, nn.Linear):
            kernel = module.weight.detach().cpu().numpy().T
            order = _dense_layout(module, shapes, to_canonical=True)
            weights.append(kernel[order] if order is not None else kernel)
        elif isinstance(module, nn.BatchNorm2d):
            weights += [tensor.detach().cpu().numpy() for tensor in
                        (module.weight, module.bias, module.running_mean, module.running_var)]
            continue
        else:
            continue
        if module.bias is not None:
            weights.append(module.bias.detach().cpu().numpy())
    return [np.ascontiguousarray(weight) for weight in weights]


def set_weights(model: Network, weights: Sequence[np.ndarray]) -> None:
    remaining = list(weights)
    shapes = _flattened_shapes(model)

    def take(target, layout=None, rows=None) -> None:
        array = remaining.pop(0)
        if rows is not None and array.shape[0] == rows.shape[0]:
            array = array[rows]
        array = array.transpose(layout) if layout is not None else array
        if tuple(array.shape) != tuple(target.shape):
            raise ValueError(f"weight of shape {array.shape} does not fit {tuple(target.shape)}")
        with torch.no_grad():
            target.copy_(torch.from_numpy(np.ascontiguousarray(array)))

    for module in model.layers:
        if isinstance(module, nn.Conv2d):
            take(module.weight, (3, 2, 0, 1))
        elif isinstance(module, nn.Linear):
            take(module.weight, (1, 0), _dense_layout(module, shapes, to_canonical=False))
        elif isinstance(module, nn.BatchNorm2d):
            for target in (module.weight, module.bias, module.running_mean, module.running_var):
                take(target)
            continue
        else:
            continue
        if module.bias is not None:
            take(module.bias)
    if remaining:
        raise ValueError(f"{len(remaining)} weight arrays left over")


def batch_norm_constants(model: Network) -> list[tuple[float, float]]:
    """PyTorch's ``momentum`` is the share of the batch statistic: decay = 1 - momentum."""
    return [(1.0 - float(module.momentum), float(module.eps)) for module in model.layers
            if isinstance(module, nn.BatchNorm2d)]


def device_of(model: Network) -> str:
    return next(model.layers.parameters()).device.type


def memory_format(batch):
    return torch.channels_last if batch.dim() == 4 and not batch.is_contiguous() else torch.contiguous_format


def set_memory_format(model: Network, channels_last: bool) -> None:
    """The model's weights in the channels-last format (PyTorch's tuning guide) or the default."""
    model.layers.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    model.channels_last = channels_last  # how this model's inputs are laid out


def to_nhwc(images: np.ndarray, device: str, scale: float):
    """NHWC numpy images -> contiguous NHWC float32 tensor on ``device``, copied once on the host
    (writable: torch refuses read-only memory-mapped arrays)."""
    tensor = torch.from_numpy(np.array(images, dtype=np.float32, copy=True))
    if scale != 1.0:
        tensor.mul_(scale)
    return tensor.to(device, non_blocking=True)


def as_nchw(nhwc, channels_last: bool):
    """NCHW images from NHWC memory: PyTorch's default contiguous NCHW (stock), or an NCHW view of
    the NHWC memory, which is PyTorch's channels-last format (the ``channels_last`` switch)."""
    view = nhwc.permute(0, 3, 1, 2)
    # clone, not contiguous(): a one-channel view already counts as contiguous, and its strides
    # would make PyTorch pick channels-last for every layer after it
    return view if channels_last else view.clone(memory_format=torch.contiguous_format)


def to_input(images: np.ndarray, device: str, scale: float, channels_last: bool):
    """NHWC numpy images -> NCHW float32 tensor on ``device`` in the model's memory format."""
    return as_nchw(to_nhwc(images, device, scale), channels_last)
