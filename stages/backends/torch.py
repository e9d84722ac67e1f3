"""The PyTorch backend (implements ``stages.backends.base.Backend``).

Builds the shared architecture as an ``nn.Sequential`` of PyTorch's own modules (NCHW; the
canonical layout's dense weights, in Keras' HWC flatten order, are permuted to PyTorch's CHW
order in ``set_weights``/``get_weights``), trains it eagerly with a ``torch.optim`` optimizer in a
plain loop over batches gathered on the device from the training split, copied there once (no
DataLoader workers, no per-batch host-to-device copies), in the shared per-epoch order, and saves
a ``state_dict``. Loads only with ``weights_only=True``.
Only PyTorch is imported here, never TensorFlow.

One of PyTorch's log lines is filtered out (a filter on its logger, ``_NoCudaRuntimeNotice``):
``torch.compile`` imports ``torch.utils.cpp_extension``, which warns "No CUDA runtime is found,
using CUDA_HOME=..." on every machine that has a CUDA toolkit but no usable GPU. It is no
fault of the run and nothing to act on (``train.device: cuda`` without a GPU is refused with
its own line); every other line of PyTorch's still shows.
"""

from __future__ import annotations

import io
import logging
import math
import os
import pickle
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
from stages.common.runtime import configure_threads, op_determinism

MODEL_FILE = "model.pt"
VALIDATION_BATCH = 1000
ADAM_EPSILON = 1e-8  # PyTorch's default, passed explicitly: the recipe's value

DESCRIPTION = (
    "PyTorch eager: an `nn.Sequential` of `torch.nn` modules in PyTorch's default (contiguous NCHW) memory "
    "format, trained by a plain loop with a `torch.optim` optimizer at its default implementation, and "
    "inference in eager mode under `torch.inference_mode`. The tuned level adds the fused optimizer, the "
    "channels-last memory format and `torch.compile` for inference.")
SWITCHES = {
    "fused_optimizer": "`fused=True`: one kernel updates every parameter; PyTorch's optimizer docs: foreach and "
                       "fused are typically faster than the for-loop default, fused theoretically fastest "
                       "(https://pytorch.org/docs/stable/optim.html)",
    "channels_last": "channels-last memory format for the model and its inputs, which PyTorch's performance "
                     "tuning guide recommends for convolutional networks on the CPU "
                     "(https://pytorch.org/tutorials/recipes/recipes/tuning_guide.html)",
    "compiled_inference": "`torch.compile` (Inductor) for the trained model's inference "
                          "(https://pytorch.org/tutorials/intermediate/torch_compile_tutorial.html)",
}
TUNED: tuple[str, ...] = ("fused_optimizer", "channels_last", "compiled_inference")
SEMANTICS = {
    "moving_variance": "unbiased",  # nn.BatchNorm2d's running_var uses the unbiased batch variance
    "adam_epsilon": "corrected",  # torch.optim.Adam(W): eps added to sqrt of the bias-corrected moment
    "sgd_momentum": "gradient_units",  # torch.optim.SGD: b = m b + g; w -= lr b
    "sgd_weight_decay": "coupled",  # torch.optim.SGD's weight_decay is added to the gradient (L2)
    "gelu": "exact",  # nn.GELU(approximate="none"), PyTorch's default
}


class _NoCudaRuntimeNotice(logging.Filter):
    """Drops ``torch.utils.cpp_extension``'s "No CUDA runtime is found" warning, and only that."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No CUDA runtime is found")


# On the named logger, before torch.compile first imports the module that logs it.
logging.getLogger("torch.utils.cpp_extension").addFilter(_NoCudaRuntimeNotice())


def environment() -> dict[str, str]:
    """PyTorch's version and build (``torch.__config__``), the kernels and devices in use."""
    config = torch.__config__.show()
    blas = re.search(r"BLAS_INFO=([^,\s]+)", config)
    return {
        "torch": torch.__version__, "numpy": np.__version__,
        "torch_build": f"BLAS={blas.group(1) if blas else 'unknown'}, "
                       f"oneDNN={torch.backends.mkldnn.is_available()}, "
                       f"CUDA={torch.version.cuda or 'none'}",
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "devices": "cpu" + (f", cuda x{torch.cuda.device_count()}" if torch.cuda.is_available() else ""),
    }


def configure(settings: TrainParams, seed: int) -> str:
    """Threads, seeds, determinism and device; return the device used ('cpu' or 'cuda')."""
    configure_threads(settings.threads)
    torch.set_num_threads(settings.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set in this process (tests): the first setting stays
    available = torch.cuda.is_available()
    if settings.device == "cuda" and not available:
        raise StageError("train.device is 'cuda' but PyTorch sees no GPU (torch.cuda.is_available() is False); "
                         "set it to auto or cpu")
    torch.manual_seed(seed)
    device = "cuda" if available and settings.device != "cpu" else "cpu"
    if op_determinism(device):  # the GPU only: the CPU reruns bitwise without it (runtime.op_determinism)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS, before CUDA starts
        torch.use_deterministic_algorithms(True)
        # Determinism does not need freshly allocated memory filled with NaN (a debugging aid that
        # use_deterministic_algorithms switches on): no kernel here reads memory it did not write.
        torch.utils.deterministic.fill_uninitialized_memory = False
        torch.backends.cudnn.benchmark = False
    return device


def _device(model) -> str:
    return next(model.parameters()).device.type


def build_model(spec: ArchitectureSpec) -> Model:
    """The spec's layers as an ``nn.Sequential`` taking NCHW float32 images, giving logits."""
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
    if flattened_height is not None:
        model.map_height = flattened_height  # a plain attribute: not part of the state_dict
    # Keras' defaults (Glorot-uniform kernels, zero biases: PyTorch's xavier_uniform_ counts the
    # fans as Keras does), so both frameworks start from the same distribution of weights.
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


def _flattened_shapes(model) -> dict[int, tuple[int, int, int]]:
    """For each dense layer right after ``nn.Flatten``: the (C, H, W) shape it flattens."""
    shapes, channels = {}, None
    modules = list(model)
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
            height = getattr(model, "map_height", side)
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


def layer_kinds(model: Model) -> list[str]:
    """The built model's layers in the spec's vocabulary (for parity tests)."""
    names = {nn.Conv2d: "conv", nn.BatchNorm2d: "batch_norm", nn.MaxPool2d: "max_pool", nn.Dropout: "dropout",
             nn.Linear: "dense", nn.ReLU: "activation", nn.GELU: "activation", nn.Tanh: "activation",
             nn.Sigmoid: "activation", nn.Flatten: "flatten"}
    return [names[type(module)] for module in model]


def count_parameters(model: Model) -> int:
    return int(sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad))


def get_weights(model: Model) -> list[np.ndarray]:
    """All weights in the canonical layout: conv (kh, kw, in, out), dense (in, out), then biases;
    batch norm gamma, beta, running mean, running variance (Keras' order)."""
    weights: list[np.ndarray] = []
    shapes = _flattened_shapes(model)
    for module in model:
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


def set_weights(model: Model, weights: Sequence[np.ndarray]) -> None:
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

    for module in model:
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


def _optimizer(model, settings: TrainParams):
    """``torch.optim``'s own optimizer for the recipe, at its default implementation unless the
    ``fused_optimizer`` switch is on.

    The recipe's weight decay is decoupled (Keras' meaning); for Adam that is exactly
    ``torch.optim.AdamW``, so ``adam`` with a decay runs AdamW. SGD's ``weight_decay`` is
    PyTorch's coupled L2 and its momentum buffer is in gradient units (``SEMANTICS``): those
    differences are PyTorch's, listed in the report, not corrected here.
    """
    fused = {"fused": True} if "fused_optimizer" in settings.switches else {}
    parameters, rate, decay = model.parameters(), settings.learning_rate, settings.weight_decay
    if settings.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=rate, momentum=settings.momentum, weight_decay=decay, **fused)
    if settings.optimizer == "adamw" or decay:
        return torch.optim.AdamW(parameters, lr=rate, eps=ADAM_EPSILON, weight_decay=decay, **fused)
    return torch.optim.Adam(parameters, lr=rate, eps=ADAM_EPSILON, **fused)


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
        return moved.contiguous(memory_format=_memory_format(batch))

    return apply


def augment(images: np.ndarray, settings: TrainParams, background: float, seed: int) -> np.ndarray:
    with torch.random.fork_rng(devices=[]):  # PyTorch's global generator, as configure() seeded it, untouched
        torch.manual_seed(seed)
        batch = torch.from_numpy(np.ascontiguousarray(np.asarray(images, np.float32).transpose(0, 3, 1, 2)))
        return np.ascontiguousarray(_augmenter(settings, background)(batch).numpy().transpose(0, 2, 3, 1))


def batch_norm_constants(model: Model) -> list[tuple[float, float]]:
    """PyTorch's ``momentum`` is the share of the batch statistic: decay = 1 - momentum."""
    return [(1.0 - float(module.momentum), float(module.eps)) for module in model
            if isinstance(module, nn.BatchNorm2d)]


def _memory_format(batch):
    return torch.channels_last if batch.dim() == 4 and not batch.is_contiguous() else torch.contiguous_format


def _to_nhwc(images: np.ndarray, device: str, scale: float):
    """NHWC numpy images -> contiguous NHWC float32 tensor on ``device``, copied once on the host
    (writable: torch refuses read-only memory-mapped arrays)."""
    tensor = torch.from_numpy(np.array(images, dtype=np.float32, copy=True))
    if scale != 1.0:
        tensor.mul_(scale)
    return tensor.to(device, non_blocking=True)


def _as_nchw(nhwc, channels_last: bool):
    """NCHW images from NHWC memory: PyTorch's default contiguous NCHW (stock), or an NCHW view of
    the NHWC memory, which is PyTorch's channels-last format (the ``channels_last`` switch)."""
    view = nhwc.permute(0, 3, 1, 2)
    # clone, not contiguous(): a one-channel view already counts as contiguous, and its strides
    # would make PyTorch pick channels-last for every layer after it
    return view if channels_last else view.clone(memory_format=torch.contiguous_format)


def _to_input(images: np.ndarray, device: str, scale: float, channels_last: bool):
    """NHWC numpy images -> NCHW float32 tensor on ``device`` in the model's memory format."""
    return _as_nchw(_to_nhwc(images, device, scale), channels_last)


def _uses_channels_last(model) -> bool:
    return bool(getattr(model, "channels_last", False))


def _set_memory_format(model, channels_last: bool) -> None:
    """The model's weights in the channels-last format (PyTorch's tuning guide) or the default."""
    model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    model.channels_last = channels_last  # a plain attribute: how this model's inputs are laid out


def _evaluate_split(model, split: Split, device: str, settings: TrainParams) -> tuple[float, float]:
    model.eval()
    loss_sum, correct = 0.0, 0
    with torch.inference_mode():
        for start in range(0, split.labels.shape[0], VALIDATION_BATCH):
            images = _to_input(split.images[start:start + VALIDATION_BATCH], device, settings.input_scale,
                               _uses_channels_last(model))
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
    channels_last = "channels_last" in settings.switches
    _set_memory_format(model, channels_last)
    optimizer = _optimizer(model, settings)
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
            images = _as_nchw(images_all.index_select(0, index), channels_last)
            labels = labels_all.index_select(0, index)
            if augment is not None:
                images = augment(images)
            rate = float(learning_rates[step])
            for group in optimizer.param_groups:
                group["lr"] = rate
            outputs = model(images)
            loss = functional.cross_entropy(outputs, labels, label_smoothing=settings.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
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


def _progress(total: int, description: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="batch", leave=False, disable=not interactive(),
                file=sys.stderr)


def logits(model: Model, images: np.ndarray) -> np.ndarray:
    """Raw outputs for NHWC images, in inference mode."""
    model.eval()
    with torch.inference_mode():
        return model(_to_input(images, _device(model), 1.0, _uses_channels_last(model))).cpu().numpy()


def for_inference(model: Model, switches: tuple[str, ...]) -> Model:
    """``model`` in evaluation mode: eager in PyTorch's default memory format (stock), in the
    channels-last format (``channels_last``), compiled by ``torch.compile`` (``compiled_inference``;
    the wrapper shares the weights)."""
    model.eval()
    _set_memory_format(model, "channels_last" in switches)
    if "compiled_inference" in switches:
        compiled = torch.compile(model)
        compiled.channels_last = model.channels_last
        return compiled
    return model


def predict(model: Model, images: np.ndarray, batch_size: int, input_scale: float = 1.0) -> np.ndarray:
    """Class probabilities (float32, N x classes) for NHWC images, batch by batch."""
    model.eval()
    device = _device(model)
    outputs = []
    with torch.inference_mode():
        for start in range(0, images.shape[0], batch_size):
            batch = _to_input(images[start:start + batch_size], device, input_scale, _uses_channels_last(model))
            outputs.append(torch.softmax(model(batch), dim=1).cpu().numpy())
    return np.concatenate(outputs).astype(np.float32)


class _FromNHWC(nn.Module):
    """``model`` fed NHWC images, as every export takes them: the transpose becomes part of the graph."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images):
        return self.model(images.permute(0, 3, 1, 2))


def export(model: Model, spec: ArchitectureSpec, path: Path) -> None:
    """The ONNX graph of ``model`` in evaluation mode, by ``torch.onnx.export`` (its default
    ``torch.export``-based exporter), with a free batch dimension."""
    module = model._orig_mod if hasattr(model, "_orig_mod") else model  # the eager module behind torch.compile's
    example = torch.zeros((2, *spec.input_shape), dtype=torch.float32)
    with torch.inference_mode(False), torch.no_grad():
        program = torch.onnx.export(_FromNHWC(module).cpu().eval(), (example,), input_names=["images"],
                                    output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("batch")},),
                                    dynamo=True, verbose=False)
    program.save(str(path))


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
