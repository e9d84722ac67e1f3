"""The PyTorch backend's training: a plain loop over batches gathered on the device from the
training split, copied there once (no DataLoader workers, no per-batch host-to-device copies),
in the shared per-epoch order, with a ``torch.optim`` optimizer and augmentation by one
resampling on the device."""

from __future__ import annotations

import math
import sys
import time

import numpy as np
import torch
from torch import nn

from stages.backends.base import (
    EpochCallback,
    EpochRecord,
    StepCallback,
    StepRecord,
    batch_indices,
    check_finite,
    check_finite_weights,
    interactive,
)
from stages.backends.torch.network import Network, as_nchw, memory_format, set_memory_format, to_input, to_nhwc
from stages.common.params import TrainParams
from stages.common.prepared import Split

VALIDATION_BATCH = 1000
ADAM_EPSILON = 1e-8  # PyTorch's default, passed explicitly: the recipe's value


def _optimizer(model: Network, settings: TrainParams):
    """``torch.optim``'s own optimizer for the recipe, at its default implementation unless the
    ``fused_optimizer`` switch is on.

    The recipe's weight decay is decoupled (Keras' meaning); for Adam that is exactly
    ``torch.optim.AdamW``, so ``adam`` with a decay runs AdamW. SGD's ``weight_decay`` is
    PyTorch's coupled L2 and its momentum buffer is in gradient units (``SEMANTICS``): those
    differences are PyTorch's, listed in the report, not corrected here.
    """
    fused = {"fused": True} if "fused_optimizer" in settings.switches else {}
    parameters, rate, decay = model.layers.parameters(), settings.learning_rate, settings.weight_decay
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
        return moved.contiguous(memory_format=memory_format(batch))

    return apply


def augment(images: np.ndarray, settings: TrainParams, background: float, seed: int) -> np.ndarray:
    with torch.random.fork_rng(devices=[]):  # PyTorch's global generator, as configure() seeded it, untouched
        torch.manual_seed(seed)
        batch = torch.from_numpy(np.ascontiguousarray(np.asarray(images, np.float32).transpose(0, 3, 1, 2)))
        return np.ascontiguousarray(_augmenter(settings, background)(batch).numpy().transpose(0, 2, 3, 1))


def _evaluate_split(model: Network, split: Split, device: str, settings: TrainParams) -> tuple[float, float]:
    model.layers.eval()
    loss_sum, correct = 0.0, 0
    with torch.inference_mode():
        for start in range(0, split.labels.shape[0], VALIDATION_BATCH):
            images = to_input(split.images[start:start + VALIDATION_BATCH], device, settings.input_scale,
                              model.channels_last)
            labels = torch.from_numpy(split.labels[start:start + VALIDATION_BATCH].astype(np.int64)).to(device)
            outputs = model.layers(images)
            loss_sum += float(torch.nn.functional.cross_entropy(
                outputs, labels, reduction="sum", label_smoothing=settings.label_smoothing))
            correct += int((outputs.argmax(1) == labels).sum())
    count = split.labels.shape[0]
    return loss_sum / count, correct / count


def fit(model: Network, train: Split, val: Split, settings: TrainParams, learning_rates: np.ndarray, seed: int,
        on_epoch_end: EpochCallback, background: float = 0.0, on_step_end: StepCallback | None = None) -> None:
    """Train ``model`` in place; call ``on_epoch_end(EpochRecord)`` after each epoch's validation
    (and ``on_step_end(StepRecord)`` after each optimizer step, if given)."""
    functional = torch.nn.functional
    device = "cuda" if settings.device != "cpu" and torch.cuda.is_available() else "cpu"
    layers = model.layers
    layers.to(device)
    channels_last = "channels_last" in settings.switches
    set_memory_format(model, channels_last)
    optimizer = _optimizer(model, settings)
    augment = _augmenter(settings, background) if settings.augment.enabled else None
    generator = np.random.default_rng(seed)
    # The whole split on the device once; each epoch's order goes there once, and batches are
    # gathered on the device (on a GPU, per-batch host work, not the GPU, was the limit).
    images_all = to_nhwc(train.images, device, settings.input_scale)
    labels_all = torch.from_numpy(train.labels.astype(np.int64)).to(device)
    step = 0
    for epoch in range(1, settings.epochs + 1):
        started = time.perf_counter()
        layers.train()
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
            images = as_nchw(images_all.index_select(0, index), channels_last)
            labels = labels_all.index_select(0, index)
            if augment is not None:
                images = augment(images)
            rate = float(learning_rates[step])
            for group in optimizer.param_groups:
                group["lr"] = rate
            outputs = layers(images)
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
            check_finite_weights(all(bool(torch.isfinite(tensor).all()) for tensor in layers.state_dict().values()
                                     if tensor.is_floating_point()), epoch)
        validation_started = time.perf_counter()
        val_loss, val_accuracy = _evaluate_split(model, val, device, settings)
        on_epoch_end(EpochRecord(
            epoch=epoch, train_loss=total_loss, train_accuracy=float(correct) / train.labels.shape[0],
            val_loss=val_loss, val_accuracy=val_accuracy,
            learning_rate=float(optimizer.param_groups[0]["lr"]),  # what the last step used
            train_seconds=validation_started - started, seconds=time.perf_counter() - started))
    layers.to("cpu")


def _progress(total: int, description: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="batch", leave=False, disable=not interactive(),
                file=sys.stderr)
