"""A framework-free reference for the equivalence suite: the recipe trained in plain numpy (float64).

``train_reference(case, semantics)`` trains one case of tests/test_equivalence.py as the recipe
says, from the same initial weights (``stages.common.architecture.initial_weights``), on the same
seeded data (``tests.framework_worker.case_data``), in the shared batch order
(``stages.backends.base.batch_indices``) and at the shared per-step rates
(``stages.common.schedules.learning_rates``), with forward and backward passes written out by hand.
Where frameworks' public APIs express a recipe point differently, ``semantics`` picks the
convention (one of ``stages.common.semantics.SEMANTIC_CHOICES`` per key), so that each framework
is checked against the reference under the conventions its backend declares (``SEMANTICS``).

``Reference`` supports every layer of the shared architecture: conv (stride 1, valid or same
padding, with or without bias), batch norm (training statistics, running statistics updated with
the decay), relu/tanh/sigmoid/gelu, max-pool, flatten, dense, and inverted dropout with masks
from a numpy generator; ``optimizer_step`` runs Adam/AdamW (beta 0.9/0.999, epsilon 1e-8,
decoupled weight decay) and SGD with momentum; ``cross_entropy`` takes label-smoothed targets.
``train_reference`` trains the equivalence cases (dropout and augmentation off: their draws are
framework-specific). tests/numpy_backend.py packages ``Reference`` as a toy framework backend.
Imports no framework.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

from stages.backends.base import batch_indices
from stages.common.architecture import BATCH_NORM_DECAY, BATCH_NORM_EPSILON, build_spec, initial_weights
from stages.common.schedules import learning_rates

BETA_1, BETA_2, ADAM_EPSILON = 0.9, 0.999, 1e-8


def _gelu(x: np.ndarray, tanh: bool) -> tuple[np.ndarray, np.ndarray]:
    """GELU and its derivative, exact (error function) or the tanh approximation."""
    if tanh:
        inner = math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)
        t = np.tanh(inner)
        derivative = 0.5 * (1 + t) + 0.5 * x * (1 - t**2) * math.sqrt(2 / math.pi) * (1 + 3 * 0.044715 * x**2)
        return 0.5 * x * (1 + t), derivative
    cdf = 0.5 * (1 + special.erf(x / math.sqrt(2)))
    return x * cdf, cdf + x * np.exp(-0.5 * x**2) / math.sqrt(2 * math.pi)


def _activation(name: str, x: np.ndarray, semantics: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """(output, derivative) of an activation."""
    if name == "relu":
        return np.maximum(x, 0), (x > 0).astype(x.dtype)
    if name == "tanh":
        y = np.tanh(x)
        return y, 1 - y**2
    if name == "sigmoid":
        y = special.expit(x)
        return y, y * (1 - y)
    if name == "gelu":
        return _gelu(x, semantics["gelu"] == "tanh")
    raise ValueError(f"reference: no activation {name!r}")


def _padding(size: int, padding: str) -> tuple[int, int]:
    """Zeros before and after each spatial axis: ``same`` keeps the size, the odd one after
    (TensorFlow's, PyTorch's and XLA's convention for even kernels)."""
    total = size - 1 if padding == "same" else 0
    return total // 2, total - total // 2


def _patches(x: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W, C) -> (N, H - size + 1, W - size + 1, size * size * C), in (kh, kw, c) order."""
    n, h, w, c = x.shape
    rows, cols = h - size + 1, w - size + 1
    return np.stack([x[:, i:i + rows, j:j + cols, :] for i in range(size) for j in range(size)],
                    axis=3).reshape(n, rows, cols, size * size * c)


class Reference:
    """The spec's layers over canonical weights (``get_weights`` order), trained step by step."""

    def __init__(self, spec, weights: list[np.ndarray], semantics: dict[str, str]) -> None:
        self.spec, self.semantics = spec, semantics
        self.weights = [np.asarray(weight, dtype=np.float64).copy() for weight in weights]
        self.slots: list[dict] = []  # per layer: indices of its weights
        position = 0
        for layer in spec.layers:
            if layer.kind == "conv":
                count = 1 + int(layer.config["bias"])
            elif layer.kind == "batch_norm":
                count = 4
            elif layer.kind == "dense":
                count = 2
            else:
                count = 0
            self.slots.append({"indices": list(range(position, position + count))})
            position += count
        self.trainable = [index for layer, slot in zip(spec.layers, self.slots) for index in
                          (slot["indices"][:2] if layer.kind == "batch_norm" else slot["indices"])]

    def forward(self, x: np.ndarray, training: bool, draws: np.random.Generator | None = None,
                masks: list[np.ndarray] | None = None) -> tuple[np.ndarray, list]:
        """Logits and what ``backward`` needs. In training, batch norm uses the batch's statistics
        and updates the running ones, and dropout drops with masks drawn from ``draws``, or with
        the given ``masks`` (one boolean keep-mask per dropout layer, in order, broadcast against
        its input: a test that read a framework's mask back replays its step exactly)."""
        caches = []
        supplied = list(masks) if masks is not None else None
        for layer, slot in zip(self.spec.layers, self.slots):
            w = [self.weights[index] for index in slot["indices"]]
            config = layer.config
            if layer.kind == "conv":
                before, after = _padding(config["kernel_size"], config["padding"])
                x = np.pad(x, ((0, 0), (before, after), (before, after), (0, 0)))
                patches = _patches(x, config["kernel_size"])
                y = patches @ w[0].reshape(-1, w[0].shape[-1]) + (w[1] if len(w) > 1 else 0.0)
                caches.append((patches, x.shape, (before, after)))
            elif layer.kind == "batch_norm":
                gamma, beta, mean, variance = w
                axes = tuple(range(x.ndim - 1))
                if training:
                    count = x.size // x.shape[-1]
                    batch_mean, batch_variance = x.mean(axis=axes), x.var(axis=axes)
                    moved = batch_variance * (count / (count - 1) if self.semantics["moving_variance"] == "unbiased"
                                              else 1.0)
                    self.weights[slot["indices"][2]] = BATCH_NORM_DECAY * mean + (1 - BATCH_NORM_DECAY) * batch_mean
                    self.weights[slot["indices"][3]] = (BATCH_NORM_DECAY * variance
                                                        + (1 - BATCH_NORM_DECAY) * moved)
                    mean, variance = batch_mean, batch_variance
                inverse = 1 / np.sqrt(variance + BATCH_NORM_EPSILON)
                normalised = (x - mean) * inverse
                y = gamma * normalised + beta
                caches.append((normalised, inverse, axes))
            elif layer.kind == "activation":
                y, derivative = _activation(config["name"], x, self.semantics)
                caches.append(derivative)
            elif layer.kind == "max_pool":
                pool = config["pool"]
                n, h, w_, c = x.shape
                rows, cols = h // pool, w_ // pool
                windows = x[:, :rows * pool, :cols * pool, :].reshape(n, rows, pool, cols, pool, c)
                y = windows.max(axis=(2, 4))
                caches.append((windows == y[:, :, None, :, None, :], x.shape))
            elif layer.kind == "flatten":
                caches.append(x.shape)
                y = x.reshape(x.shape[0], -1)
            elif layer.kind == "dense":
                caches.append(x)
                y = x @ w[0] + w[1]
            elif training and config["rate"] > 0:  # dropout: inverted, as every framework scales it
                if supplied is not None:
                    if not supplied:
                        raise ValueError("reference: fewer masks than dropout layers")
                    keep = np.broadcast_to(np.asarray(supplied.pop(0), dtype=bool), x.shape)
                elif draws is not None:
                    keep = draws.random(x.shape) >= config["rate"]
                else:
                    raise ValueError("reference: dropout in training needs a generator or masks")
                mask = keep / (1 - config["rate"])
                caches.append(mask)
                y = x * mask
            else:  # dropout in inference
                caches.append(1.0)
                y = x
            x = y
        if supplied:
            raise ValueError(f"reference: {len(supplied)} more masks than dropout layers")
        return x, caches

    def backward(self, upstream: np.ndarray, caches: list) -> dict[int, np.ndarray]:
        grads: dict[int, np.ndarray] = {}
        for layer, slot, cache in reversed(list(zip(self.spec.layers, self.slots, caches))):
            indices = slot["indices"]
            if layer.kind == "conv":
                patches, shape, (before, after) = cache
                kernel = self.weights[indices[0]]
                size, outputs = layer.config["kernel_size"], kernel.shape[-1]
                flat = upstream.reshape(-1, outputs)
                grads[indices[0]] = (patches.reshape(-1, patches.shape[-1]).T @ flat).reshape(kernel.shape)
                if len(indices) > 1:
                    grads[indices[1]] = flat.sum(axis=0)
                d_patches = (upstream @ kernel.reshape(-1, outputs).T).reshape(*upstream.shape[:3], size, size,
                                                                                shape[-1])
                dx = np.zeros(shape)
                rows, cols = upstream.shape[1], upstream.shape[2]
                for i in range(size):
                    for j in range(size):
                        dx[:, i:i + rows, j:j + cols, :] += d_patches[:, :, :, i, j, :]
                upstream = dx[:, before:shape[1] - after, before:shape[2] - after, :]
            elif layer.kind == "batch_norm":
                normalised, inverse, axes = cache
                gamma = self.weights[indices[0]]
                grads[indices[0]] = (upstream * normalised).sum(axis=axes)
                grads[indices[1]] = upstream.sum(axis=axes)
                d_normalised = upstream * gamma
                count = normalised.size // normalised.shape[-1]
                upstream = inverse / count * (count * d_normalised - d_normalised.sum(axis=axes)
                                              - normalised * (d_normalised * normalised).sum(axis=axes))
            elif layer.kind == "activation":
                upstream = upstream * cache
            elif layer.kind == "max_pool":
                mask, shape = cache
                pool = layer.config["pool"]
                spread = mask * upstream[:, :, None, :, None, :]
                dx = np.zeros(shape)
                n, rows, _, cols, _, c = spread.shape
                dx[:, :rows * pool, :cols * pool, :] = spread.reshape(n, rows * pool, cols * pool, c)
                upstream = dx
            elif layer.kind == "flatten":
                upstream = upstream.reshape(cache)
            elif layer.kind == "dense":
                grads[indices[0]] = cache.T @ upstream
                grads[indices[1]] = upstream.sum(axis=0)
                upstream = upstream @ self.weights[indices[0]].T
            elif layer.kind == "dropout":
                upstream = upstream * cache
        return grads


def cross_entropy(logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy from logits, and its gradient."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = float(-(targets * log_probabilities).sum(axis=1).mean())
    return loss, (np.exp(log_probabilities) - targets) / logits.shape[0]


def optimizer_step(reference: Reference, grads: dict[int, np.ndarray], state: dict, settings, rate: float,
                   step: int) -> None:
    """One optimizer step at ``rate`` (step counts from 1), in the semantics' conventions."""
    semantics, decay = reference.semantics, settings.weight_decay
    for index in reference.trainable:
        weight, grad = reference.weights[index], grads[index]
        slot = state.setdefault(index, {"m": np.zeros_like(weight), "v": np.zeros_like(weight)})
        if settings.optimizer in ("adam", "adamw"):
            weight = weight - rate * decay * weight  # decoupled, for Adam with a decay too (every backend)
            slot["m"] = BETA_1 * slot["m"] + (1 - BETA_1) * grad
            slot["v"] = BETA_2 * slot["v"] + (1 - BETA_2) * grad**2
            if semantics["adam_epsilon"] == "corrected":
                weight = weight - rate * (slot["m"] / (1 - BETA_1**step)) / (
                    np.sqrt(slot["v"] / (1 - BETA_2**step)) + ADAM_EPSILON)
            else:
                alpha = rate * math.sqrt(1 - BETA_2**step) / (1 - BETA_1**step)
                weight = weight - alpha * slot["m"] / (np.sqrt(slot["v"]) + ADAM_EPSILON)
        elif settings.optimizer == "sgd":
            if semantics["sgd_weight_decay"] == "coupled":
                grad = grad + decay * weight
            else:
                weight = weight - rate * decay * weight
            if semantics["sgd_momentum"] == "weight_units":
                slot["m"] = settings.momentum * slot["m"] - rate * grad
                weight = weight + slot["m"]
            else:
                slot["m"] = settings.momentum * slot["m"] + grad
                weight = weight - rate * slot["m"]
        else:
            raise ValueError(f"reference: no optimizer {settings.optimizer!r}")
        reference.weights[index] = weight


def train_reference(case: dict, semantics: dict[str, str]) -> dict[str, np.ndarray]:
    """Train one equivalence case as the recipe says; the canonical weights and the per-step
    running mean loss (over the epoch's images so far, as the backends report it)."""
    from tests.framework_worker import case_data, case_settings

    params = case_settings(case)
    settings = params.train
    if settings.augment.enabled or settings.input_scale != 1.0:
        raise ValueError("reference: no augmentation, input scale 1")
    spec = build_spec(params.model, (case["image_size"], case["image_size"], 1), 10)
    if any(layer.kind == "dropout" for layer in spec.layers):
        raise ValueError("reference: the equivalence cases run with dropout off")
    reference = Reference(spec, initial_weights(spec, np.random.default_rng(case["seed"])), semantics)
    train, _ = case_data(case)
    images, count = train.images.astype(np.float64), train.labels.shape[0]
    smoothing = settings.label_smoothing
    targets = np.eye(10)[train.labels] * (1 - smoothing) + smoothing / 10
    steps_per_epoch = math.ceil(count / settings.batch_size)
    table = learning_rates(settings, steps_per_epoch)
    generator, state, step, step_losses = np.random.default_rng(case["seed"]), {}, 0, []
    for _ in range(settings.epochs):
        total, seen = 0.0, 0
        for rows in batch_indices(count, settings.batch_size, generator):
            logits, caches = reference.forward(images[rows], training=True)
            loss, upstream = cross_entropy(logits, targets[rows])
            grads = reference.backward(upstream, caches)
            step += 1
            optimizer_step(reference, grads, state, settings, float(table[step - 1]), step)
            total, seen = total + loss * len(rows), seen + len(rows)
            step_losses.append(total / seen)
    return {"weights": reference.weights, "step_loss": np.array(step_losses)}
