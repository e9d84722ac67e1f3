"""The PyTorch backend (implements ``stages.backends.base.Backend``).

Builds the shared architecture as an ``nn.Sequential`` (NCHW, flattened in Keras' HWC order so
dense weights are shared), trains it eagerly or through ``torch.compile`` with a plain loop over
batches gathered on the device from the training split, copied there once (no DataLoader
workers, no per-batch host-to-device copies), in the shared per-epoch order, and saves a
``state_dict``. Loads only with ``weights_only=True``.
Only PyTorch is imported here, never TensorFlow.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import math
import os
import pickle
import platform
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from stages.backends.base import (
    EpochCallback,
    EpochRecord,
    Model,
    StepCallback,
    StepRecord,
    batch_indices,
    check_finite,
    check_finite_weights,
    interactive,
)
from stages.common import atomic
from stages.common.architecture import BATCH_NORM_DECAY, BATCH_NORM_EPSILON, ArchitectureSpec
from stages.common.errors import StageError
from stages.common.params import TrainParams
from stages.common.prepared import Split
from stages.common.runtime import configure_threads

MODEL_FILE = "model.pt"
VALIDATION_BATCH = 1000
ADAM_EPSILON = 1e-8
# glibc's mallopt parameters, and how large a freed block may be and still be kept for reuse.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEEP_FREED_BYTES = 1 << 30


def configure(settings: TrainParams, seed: int) -> str:
    """Threads, seeds, determinism and device; return the device used ('cpu' or 'cuda')."""
    configure_threads(settings.threads)
    reuse_freed_memory()
    # Required by deterministic cuBLAS; harmless on the CPU. Must be set before CUDA starts.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.set_num_threads(settings.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set in this process (tests): the first setting stays
    available = torch.cuda.is_available()
    if settings.device == "cuda" and not available:
        raise StageError("train.device is 'cuda' but PyTorch sees no GPU (torch.cuda.is_available() is False)")
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    # Determinism does not need freshly allocated memory filled with NaN (a debugging aid that
    # use_deterministic_algorithms switches on): no kernel here reads memory it did not write.
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.backends.cudnn.benchmark = False
    return "cuda" if available and settings.device != "cpu" else "cpu"


def reuse_freed_memory() -> bool:
    """Keep freed blocks of up to ``KEEP_FREED_BYTES`` in the process for reuse; True if set.

    PyTorch's CPU tensors come from the C library's malloc. glibc hands blocks above its mmap
    threshold (32 MB at most) back to the system when freed, so a batch of 1000 images, whose
    first activation map is 37 MB, was mapped and page-faulted in afresh by every layer of every
    batch: faults took most of the first convolution's time. PyTorch's performance tuning guide
    recommends an allocator that reuses memory (jemalloc, tcmalloc); raising glibc's own mmap
    and trim thresholds does that in-process. Elsewhere (macOS, musl) nothing changes.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    return bool(libc.mallopt(M_MMAP_THRESHOLD, KEEP_FREED_BYTES)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES))


def _device(model) -> str:
    return next(model.parameters()).device.type


def build_model(spec: ArchitectureSpec) -> Model:
    """The spec's layers as an ``nn.Sequential`` taking NCHW float32 images, giving logits."""
    nn = torch.nn
    activations = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
    modules = []
    channels = spec.input_shape[2]
    previous_shape: tuple[int, ...] = spec.input_shape
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
            modules.append(ChannelsLastFlatten())
        elif layer.kind == "dense":
            modules.append(nn.Linear(int(np.prod(previous_shape)), config["units"]))
        else:
            raise ValueError(f"unknown layer kind {layer.kind!r}")
        previous_shape = layer.output_shape
    model = nn.Sequential(*modules)
    # Keras' defaults, so both frameworks start from the same distribution of weights.
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            _glorot_uniform(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


def _glorot_uniform(weight) -> None:
    """Keras' glorot_uniform: fans counted as Keras does (receptive field x channels)."""
    receptive = int(np.prod(weight.shape[2:])) if weight.dim() > 2 else 1
    fan_out, fan_in = weight.shape[0] * receptive, weight.shape[1] * receptive
    limit = float(np.sqrt(6.0 / (fan_in + fan_out)))
    with torch.no_grad():
        weight.uniform_(-limit, limit)


class ChannelsLastFlatten(nn.Module):
    """Flatten NCHW maps in (H, W, C) order, as Keras does, so dense weights are shared."""

    def forward(self, inputs):
        return inputs.permute(0, 2, 3, 1).flatten(1)


def layer_kinds(model: Model) -> list[str]:
    """The built model's layers in the spec's vocabulary (for parity tests)."""
    names = {nn.Conv2d: "conv", nn.BatchNorm2d: "batch_norm", nn.MaxPool2d: "max_pool", nn.Dropout: "dropout",
             nn.Linear: "dense", nn.ReLU: "activation", nn.GELU: "activation", nn.Tanh: "activation",
             nn.Sigmoid: "activation"}
    return [names.get(type(module), "flatten") for module in model]


def count_parameters(model: Model) -> int:
    return int(sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad))


def get_weights(model: Model) -> list[np.ndarray]:
    """All weights in the canonical layout: conv (kh, kw, in, out), dense (in, out), then biases;
    batch norm gamma, beta, running mean, running variance (Keras' order)."""
    weights: list[np.ndarray] = []
    for module in model:
        if isinstance(module, nn.Conv2d):
            weights.append(module.weight.detach().cpu().numpy().transpose(2, 3, 1, 0))
        elif isinstance(module, nn.Linear):
            weights.append(module.weight.detach().cpu().numpy().T)
        elif isinstance(module, nn.BatchNorm2d):
            weights += [tensor.detach().cpu().numpy() for tensor in
                        (module.weight, module.bias, module.running_mean, module.running_var)]
            continue
        else:
            continue
        if module.bias is not None:
            weights.append(module.bias.detach().cpu().numpy())
    return [np.ascontiguousarray(weight) for weight in weights]


def set_weights(model: Model, weights: Sequence[np.ndarray]) -> None:
    nn = torch.nn
    remaining = list(weights)

    def take(target, layout=None) -> None:
        array = remaining.pop(0)
        array = array.transpose(layout) if layout is not None else array
        if tuple(array.shape) != tuple(target.shape):
            raise ValueError(f"weight of shape {array.shape} does not fit {tuple(target.shape)}")
        with torch.no_grad():
            target.copy_(torch.from_numpy(np.ascontiguousarray(array)))

    for module in model:
        if isinstance(module, nn.Conv2d):
            take(module.weight, (3, 2, 0, 1))
        elif isinstance(module, nn.Linear):
            take(module.weight, (1, 0))
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


def _optimizer(model, settings: TrainParams):
    """Adam, AdamW or SGD; weight decay is decoupled for all three, as Keras applies it (``fit``).

    Fused: one kernel updates every parameter, where PyTorch's CPU default loops over them
    with a handful of ops each (its docs: fused is typically the fastest implementation).
    """
    if settings.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=settings.learning_rate, momentum=settings.momentum, fused=True)
    return torch.optim.Adam(model.parameters(), lr=settings.learning_rate, eps=ADAM_EPSILON, fused=True)


def _rescale_momentum(optimizer, ratio: float) -> None:
    """Give SGD with momentum Keras' meaning under a changing learning rate.

    Keras keeps the velocity in weight units (``v = momentum * v - rate * grad; w += v``),
    PyTorch in gradient units (``b = momentum * b + grad; w -= rate * b``): the two agree only
    while the rate is constant. Scaling PyTorch's buffer by ``old rate / new rate`` before a
    step with a new rate gives exactly Keras' update, so both frameworks get the same recipe
    under every schedule (a constant schedule never calls this).
    """
    with torch.no_grad():
        for state in optimizer.state.values():
            buffer = state.get("momentum_buffer")
            if buffer is not None:
                buffer.mul_(ratio)


def _augmenter(settings: TrainParams, background: float):
    """A function that augments a batch of NCHW images at once, each with its own draw: a
    rotation about the centre by up to ``max_rotation_deg``, then a shift by up to ``max_shift``
    of the image size, as one bilinear resampling (Keras' interpolation) on the batch's device,
    uncovered pixels filled with ``background``. Draws come from PyTorch's seeded generator."""
    augment = settings.augment
    max_angle = math.radians(augment.max_rotation_deg)

    def apply(batch):
        count, _, height, width = batch.shape
        uniform = torch.rand((3, count), device=batch.device) * 2 - 1
        angle = uniform[0] * max_angle
        shift_x, shift_y = uniform[1] * augment.max_shift * width, uniform[2] * augment.max_shift * height
        cos, sin = torch.cos(angle), torch.sin(angle)
        # Output pixel p (centred pixel units) shows input pixel R^-1 (p - shift); affine_grid
        # wants that map in normalised units (x * 2 / width, y * 2 / height).
        theta = torch.stack([
            torch.stack([cos, sin * height / width, -(cos * shift_x + sin * shift_y) * 2 / width], dim=1),
            torch.stack([-sin * width / height, cos, (sin * shift_x - cos * shift_y) * 2 / height], dim=1),
        ], dim=1)
        grid = nn.functional.affine_grid(theta, list(batch.shape), align_corners=False)
        # Zero padding around (images - background) is background padding around the images.
        moved = nn.functional.grid_sample(batch - background, grid, mode="bilinear", padding_mode="zeros",
                                          align_corners=False) + background
        # In the batch's own strides (channels-last): a 1-channel NCHW result has NCHW strides,
        # which oneDNN runs 1.45x slower (BENCHMARKS.md).
        return torch.empty_like(batch).copy_(moved)

    return apply


def _to_nhwc(images: np.ndarray, device: str, scale: float):
    """NHWC numpy images -> contiguous NHWC float32 tensor on ``device``, copied once on the host
    (writable: torch refuses read-only memory-mapped arrays)."""
    tensor = torch.from_numpy(np.array(images, dtype=np.float32, copy=True))
    if scale != 1.0:
        tensor.mul_(scale)
    return tensor.to(device, non_blocking=True)


def _channels_last(nhwc):
    """An NCHW view of NHWC memory: PyTorch's channels-last format, which its oneDNN convolutions
    on the CPU run faster than contiguous NCHW (PyTorch's CPU performance guide; BENCHMARKS.md)."""
    return nhwc.permute(0, 3, 1, 2)


def _to_input(images: np.ndarray, device: str, scale: float):
    """NHWC numpy images -> NCHW channels-last float32 tensor on ``device``."""
    return _channels_last(_to_nhwc(images, device, scale))


def _evaluate_split(model, split: Split, device: str, settings: TrainParams) -> tuple[float, float]:
    model.eval()
    loss_sum, correct = 0.0, 0
    with torch.inference_mode():
        for start in range(0, split.labels.shape[0], VALIDATION_BATCH):
            images = _to_input(split.images[start:start + VALIDATION_BATCH], device, settings.input_scale)
            labels = torch.from_numpy(split.labels[start:start + VALIDATION_BATCH].astype(np.int64)).to(device)
            outputs = model(images)
            loss_sum += float(torch.nn.functional.cross_entropy(
                outputs, labels, reduction="sum", label_smoothing=settings.label_smoothing))
            correct += int((outputs.argmax(1) == labels).sum())
    count = split.labels.shape[0]
    return loss_sum / count, correct / count


def fit(model: Model, train: Split, val: Split, settings: TrainParams, learning_rates: np.ndarray, seed: int,
        on_epoch_end: EpochCallback, background: float = 0.0, on_step_end: StepCallback | None = None) -> None:
    """Train ``model`` in place; call ``on_epoch_end(EpochRecord)`` after each epoch's validation
    (and ``on_step_end(StepRecord)`` after each optimizer step, if given)."""
    functional = torch.nn.functional
    device = "cuda" if settings.device != "cpu" and torch.cuda.is_available() else "cpu"
    model.to(device)
    forward = compile_model(model, settings.execution)
    optimizer = _optimizer(model, settings)
    parameters = list(model.parameters())
    augment = _augmenter(settings, background) if settings.augment.enabled else None
    generator = np.random.default_rng(seed)
    # The whole split on the device once; each epoch's order goes there once, and batches are
    # gathered on the device (on a GPU, per-batch host work, not the GPU, was the limit).
    images_all = _to_nhwc(train.images, device, settings.input_scale)
    labels_all = torch.from_numpy(train.labels.astype(np.int64)).to(device)
    step = 0
    for epoch in range(1, settings.epochs + 1):
        started = time.perf_counter()
        model.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        # Sorted within each batch: the same images, gathered in memory order.
        batches = [np.sort(rows) for rows in batch_indices(train.labels.shape[0], settings.batch_size, generator)]
        order = torch.from_numpy(np.concatenate(batches)).to(device)
        progress = _progress(len(batches), f"epoch {epoch}/{settings.epochs}")
        start = 0
        for batch_number, rows in enumerate(batches, start=1):
            index = order[start:start + rows.shape[0]]
            start += rows.shape[0]
            images = _channels_last(images_all.index_select(0, index))
            labels = labels_all.index_select(0, index)
            if augment is not None:
                images = augment(images)
            rate = float(learning_rates[step])
            if step > 0 and settings.optimizer == "sgd" and rate != learning_rates[step - 1]:
                _rescale_momentum(optimizer, float(learning_rates[step - 1]) / rate)
            for group in optimizer.param_groups:
                group["lr"] = rate
            outputs = forward(images)
            loss = functional.cross_entropy(outputs, labels, label_smoothing=settings.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if settings.weight_decay:
                with torch.no_grad():
                    torch._foreach_mul_(parameters, 1.0 - rate * settings.weight_decay)
            optimizer.step()
            step += 1
            loss_value = loss.detach()
            if device == "cpu" or batch_number % 50 == 0:
                check_finite(float(loss_value), epoch, batch_number)
            loss_sum += loss_value.double() * labels.shape[0]
            correct += (outputs.detach().argmax(1) == labels).sum()
            if on_step_end is not None:
                seen = min(batch_number * settings.batch_size, train.labels.shape[0])
                on_step_end(StepRecord(epoch=epoch, batch=batch_number, rows=rows,
                                       learning_rate=float(optimizer.param_groups[0]["lr"]),
                                       loss=float(loss_sum) / seen))
            progress.update(1)
        progress.close()
        del images, labels, outputs, loss
        total_loss = float(loss_sum) / train.labels.shape[0]
        check_finite(total_loss, epoch, len(batches))
        with torch.no_grad():
            check_finite_weights(all(bool(torch.isfinite(tensor).all()) for tensor in model.state_dict().values()
                                     if tensor.is_floating_point()), epoch)
        validation_started = time.perf_counter()
        val_loss, val_accuracy = _evaluate_split(model, val, device, settings)
        on_epoch_end(EpochRecord(
            epoch=epoch, train_loss=total_loss, train_accuracy=float(correct) / train.labels.shape[0],
            val_loss=val_loss, val_accuracy=val_accuracy,
            learning_rate=float(optimizer.param_groups[0]["lr"]),  # what the last step used
            train_seconds=validation_started - started, seconds=time.perf_counter() - started))
    model.to("cpu")


def compile_model(model: Model, execution: str) -> Model:
    """``model`` itself (``standard``: eager) or wrapped by ``torch.compile`` (``compiled``);
    the wrapper shares the parameters, so training it trains ``model``."""
    return torch.compile(model) if execution == "compiled" else model


def _progress(total: int, description: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="batch", leave=False, disable=not interactive(),
                file=sys.stderr)


def logits(model: Model, images: np.ndarray) -> np.ndarray:
    """Raw outputs for NHWC images, in inference mode."""
    model.eval()
    with torch.inference_mode():
        return model(_to_input(images, _device(model), 1.0)).cpu().numpy()


def for_inference(model: Model, execution: str) -> Model:
    """``model`` in evaluation mode, eager or compiled (``torch.compile``; same weights)."""
    model.eval()
    return compile_model(model, execution)


def predict(model: Model, images: np.ndarray, batch_size: int, input_scale: float = 1.0) -> np.ndarray:
    """Class probabilities (float32, N x classes) for NHWC images, batch by batch."""
    model.eval()
    device = _device(model)
    outputs = []
    with torch.inference_mode():
        for start in range(0, images.shape[0], batch_size):
            batch = _to_input(images[start:start + batch_size], device, input_scale)
            outputs.append(torch.softmax(model(batch), dim=1).cpu().numpy())
    return np.concatenate(outputs).astype(np.float32)


def save_model(model: Model, path: Path) -> None:
    """Save the ``state_dict``; serialised in memory first so the bytes never name a temp file."""
    buffer = io.BytesIO()
    torch.save({name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}, buffer)
    atomic.write_bytes(path, buffer.getvalue())


def load_model(path: Path, spec: ArchitectureSpec) -> Model:
    """Rebuild the model from its spec and load the weights with ``weights_only=True``."""
    if not path.is_file():
        raise StageError(f"{path}: missing; run the training stage first (dvc repro train)")
    model = build_model(spec)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types for a corrupt file
        raise StageError(f"{path}: not a loadable PyTorch state_dict for this architecture "
                         f"({type(error).__name__}: {_load_failure_reason(error)})") from None
    model.eval()
    return model


def _load_failure_reason(error: Exception) -> str:
    """The first sentence of why ``torch.load`` refused a file, on one line.

    For a refused unpickle, PyTorch wraps the unpickler's own reason (e.g. "Unsupported global:
    GLOBAL builtins.exec was not an allowed global by default.") in paragraphs of advice, with
    terminal escape codes, that begin by suggesting ``weights_only=False``: the reason is kept,
    the advice is not.
    """
    reason = error.__context__ if isinstance(error, pickle.UnpicklingError) and error.__context__ else error
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(reason)).split())
    return re.split(r"(?<=\.) ", text, maxsplit=1)[0]
