"""The JAX/Flax backend (implements ``stages.backends.base.Backend``).

Written as Flax's own MNIST tutorial writes a model (docs_nnx/mnist_tutorial, Flax 0.12.8): Flax
NNX, not linen, because NNX is what Flax's current getting-started guide teaches and its
modules hold their own weights, so ``get_weights``/``set_weights`` read and write them in place
as the other backends do. The shared architecture is an ``nnx.Sequential`` of Flax's own layers
(``nnx.Conv``, ``nnx.BatchNorm``, ``nnx.Dropout``, ``nnx.Linear``) and JAX functions (activations,
``nnx.max_pool``, a reshape), NHWC, whose kernels are already in the canonical layout. Training
is one ``nnx.jit`` train step (``nnx.value_and_grad``, then ``nnx.Optimizer.update`` with an optax
transformation), on ``nnx.view``s of the model in training and evaluation mode, over the
training split copied to the device once; each step gathers its batch there by index, in the
shared per-epoch order. Dropout and augmentation draw from ``nnx.Rngs`` streams keyed by the
replicate seed; the initial weights (when not the shared ones) from ``jax.random.key(seed)``.

The recipe through optax's public API: ``optax.adam``/``optax.adamw`` with ``eps=1e-8`` (epsilon
added to the square root of the bias-corrected second moment, as PyTorch places it) and the
recipe's decoupled weight decay (``adam`` with a decay runs ``optax.adamw``, as the PyTorch
backend runs ``torch.optim.AdamW``); SGD as optax's own building blocks composed in Keras' order,
``optax.chain(scale_by_learning_rate, trace, add_decayed_weights(-lr * wd))``: the velocity in
weight units and the decay applied to the weights, not through the momentum (``optax.sgd`` would
keep the buffer in gradient units, PyTorch's convention). The per-step learning-rate table is an
optax schedule under ``optax.inject_hyperparams``, whose state holds the rate each step applied
(read back for the records). ``nnx.BatchNorm(momentum=0.9)`` keeps 90% of the old statistic,
Keras' meaning of momentum, and Flax updates its running variance with the biased batch variance
(no public argument changes that: ``SEMANTICS``). GELU is ``jax.nn.gelu(approximate=False)``:
JAX's default is the tanh approximation, which the recipe does not use.

Devices: JAX runs on the default backend of the installed jaxlib. With the CUDA plugin
(``pip install 'jax[cuda12]==0.10.2'``, not in requirements.lock) and a GPU present, that is the
GPU, where XLA's deterministic GPU kernels are requested (``--xla_gpu_deterministic_ops``, before
JAX starts; ``runtime.op_determinism``); ``train.device: cpu`` pins every array to the CPU
(``jax_default_device``).
On the CPU, XLA sizes its thread pool from the CPUs the process may use, and JAX has no setting
for it, so ``configure`` restricts the process to ``train.threads`` CPUs first.
Models are saved as Flax msgpack (``flax.serialization``: arrays only, no code), loaded the same
way. Only JAX, Flax and optax are imported here.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, serialization

from stages.backends.base import (
    EpochCallback,
    EpochRecord,
    Model,
    StepCallback,
    StepRecord,
    batch_indices,
    check_finite,
    check_finite_weights,
)
from stages.common import atomic
from stages.common.architecture import BATCH_NORM_DECAY, BATCH_NORM_EPSILON, ArchitectureSpec
from stages.common.errors import StageError
from stages.common.params import TrainParams
from stages.common.prepared import Split
from stages.common.runtime import configure_threads, derive_seed, jax_device_before_start, op_determinism, restrict_cpus

MODEL_FILE = "model.msgpack"
VALIDATION_BATCH = 1000
ADAM_EPSILON = 1e-8  # optax's default, passed explicitly: the recipe's value
CHECK_EVERY = 50  # steps between loss checks (each waits for the device)
PERFORMANCE_GUIDE = "https://flax.readthedocs.io/en/latest/guides/performance.html"

DESCRIPTION = (
    "JAX/Flax NNX: an `nnx.Sequential` of Flax's own layers, trained by one `nnx.jit` train step "
    "(`nnx.value_and_grad`, `nnx.Optimizer` with an optax optimizer) over data copied to the device once, as "
    "Flax's MNIST tutorial writes it, and inference through an `nnx.jit` prediction step on an evaluation "
    "`nnx.view`. The tuned level stages the Python graph traversal out of every step and every prediction "
    "(`nnx.split` once, then plain `jax.jit`), as Flax's performance guide recommends.")
SWITCHES = {
    "functional_training": "the train step as plain `jax.jit` over the `nnx.split` state (`nnx.merge` inside), "
                           "which Flax's performance guide recommends to remove `nnx.jit`'s per-call Python "
                           f"graph traversal ({PERFORMANCE_GUIDE})",
    "functional_inference": "prediction as plain `jax.jit` over the `nnx.split` state of the evaluation view, "
                            f"from the same guide ({PERFORMANCE_GUIDE})",
}
TUNED: tuple[str, ...] = ("functional_training", "functional_inference")
SEMANTICS = {
    "moving_variance": "biased",  # nnx.BatchNorm updates its running variance with the batch's plain variance
    "adam_epsilon": "corrected",  # optax.scale_by_adam: eps added to sqrt of the bias-corrected moment
    "sgd_momentum": "weight_units",  # scale_by_learning_rate, then trace: v = m v - lr g; w += v
    "sgd_weight_decay": "decoupled",  # add_decayed_weights(-lr wd) after the trace: w -= lr wd w
    "gelu": "exact",  # jax.nn.gelu(approximate=False); JAX's default is the tanh approximation
}
# JAX logs at INFO, on every start without a TPU, that it found none; the stages' logs show INFO.
logging.getLogger("jax").setLevel(logging.WARNING)
ACTIVATIONS: dict[str, Any] = {"relu": nnx.relu, "gelu": functools.partial(nnx.gelu, approximate=False),
                               "tanh": nnx.tanh, "sigmoid": nnx.sigmoid}
_state: dict[str, Any] = {"seed": 0}
# (N, H, W, C) -> (N, H * W * C): JAX's own reshape, in channels-last order (the canonical one).
FLATTEN = functools.partial(jax.lax.collapse, start_dimension=1)


def environment() -> dict[str, str]:
    """JAX's, jaxlib's, Flax's and optax's versions, the XLA backend and its devices."""
    devices = jax.devices()
    return {
        "jax": jax.__version__, "jaxlib": metadata.version("jaxlib"),
        "flax": flax.__version__, "optax": optax.__version__, "numpy": np.__version__,
        "xla_backend": jax.default_backend(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "devices": ", ".join(f"{device.platform} ({device.device_kind})" for device in devices),
    }


def configure(settings: TrainParams, seed: int) -> str:
    """Threads, seeds, determinism and device; return the device used ('cpu' or 'cuda')."""
    configure_threads(settings.threads)
    restrict_cpus(settings.threads)  # read by XLA when its CPU client starts (no effect after that)
    flags = os.environ.get("XLA_FLAGS", "")
    # the GPU only, before JAX starts: the CPU reruns bitwise without it (runtime.op_determinism)
    if op_determinism(jax_device_before_start(settings.device)) and "xla_gpu_deterministic_ops" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_gpu_deterministic_ops=true".strip()
    _state["seed"] = seed
    gpus = [device for device in jax.devices() if device.platform == "gpu"]
    if settings.device == "cuda" and not gpus:
        raise StageError("train.device is 'cuda' but JAX sees no GPU (is the CUDA plugin installed? "
                         "pip install 'jax[cuda12]==0.10.2'); set it to auto or cpu")
    use_gpu = bool(gpus) and settings.device != "cpu"
    jax.config.update("jax_default_device", gpus[0] if use_gpu else jax.devices("cpu")[0])
    return "cuda" if use_gpu else "cpu"


def build_model(spec: ArchitectureSpec) -> Model:
    """The spec's layers as an ``nnx.Sequential`` taking NHWC float32 images, giving logits."""
    rngs = nnx.Rngs(params=jax.random.key(_state["seed"]))
    glorot = nnx.initializers.glorot_uniform()  # Keras' default, the recipe's; Flax's own is LeCun normal
    layers: list[Any] = []
    channels = spec.input_shape[2]
    features = 0
    for layer in spec.layers:
        config = layer.config
        if layer.kind == "conv":
            layers.append(nnx.Conv(channels, config["filters"], (config["kernel_size"],) * 2,
                                   padding=config["padding"].upper(), use_bias=config["bias"], kernel_init=glorot,
                                   rngs=rngs))
            channels = config["filters"]
        elif layer.kind == "batch_norm":
            layers.append(nnx.BatchNorm(channels, momentum=BATCH_NORM_DECAY, epsilon=BATCH_NORM_EPSILON, rngs=rngs))
        elif layer.kind == "activation":
            layers.append(ACTIVATIONS[config["name"]])
        elif layer.kind == "max_pool":
            pool = (config["pool"],) * 2
            layers.append(functools.partial(nnx.max_pool, window_shape=pool, strides=pool))
        elif layer.kind == "dropout":
            layers.append(nnx.Dropout(config["rate"]))
        elif layer.kind == "flatten":
            layers.append(FLATTEN)
            features = layer.output_shape[0]
        elif layer.kind == "dense":
            layers.append(nnx.Linear(features, config["units"], kernel_init=glorot, rngs=rngs))
            features = config["units"]
        else:
            raise ValueError(f"unknown layer kind {layer.kind!r}")
    return nnx.Sequential(*layers)


@dataclass
class Inference:
    """A model ready for ``predict``: its evaluation view and the prediction call of its level."""

    model: Any
    probabilities: Any  # (images, scale) -> class probabilities on the device


def _module(model):
    return model.model if isinstance(model, Inference) else model


def layer_kinds(model: Model) -> list[str]:
    """The built model's layers in the spec's vocabulary (for parity tests)."""
    modules = {nnx.Conv: "conv", nnx.BatchNorm: "batch_norm", nnx.Dropout: "dropout", nnx.Linear: "dense"}
    kinds = []
    for layer in _module(model).layers:
        if type(layer) in modules:
            kinds.append(modules[type(layer)])
        elif layer is FLATTEN:
            kinds.append("flatten")
        elif isinstance(layer, functools.partial) and layer.func is nnx.max_pool:
            kinds.append("max_pool")
        elif any(layer is function for function in ACTIVATIONS.values()):
            kinds.append("activation")
        else:
            raise ValueError(f"unknown layer {layer!r}")
    return kinds


def count_parameters(model: Model) -> int:
    return int(sum(leaf.size for leaf in jax.tree.leaves(nnx.state(_module(model), nnx.Param))))


def _variables(model) -> list:
    """Every weight ``nnx.Variable`` in the canonical order."""
    variables: list = []
    for layer in _module(model).layers:
        if isinstance(layer, (nnx.Conv, nnx.Linear)):
            variables += [layer.kernel] + ([layer.bias] if layer.bias is not None else [])
        elif isinstance(layer, nnx.BatchNorm):
            variables += [layer.scale, layer.bias, layer.mean, layer.var]
    return variables


def get_weights(model: Model) -> list[np.ndarray]:
    """All weights in the canonical layout (Flax's own: kernels (kh, kw, in, out) and (in, out);
    batch norm scale, bias, running mean, running variance)."""
    return [np.array(variable[...]) for variable in _variables(model)]


def set_weights(model: Model, weights: Sequence[np.ndarray]) -> None:
    variables = _variables(model)
    if len(weights) != len(variables):
        raise ValueError(f"expected {len(variables)} weight arrays, got {len(weights)}")
    for variable, weight in zip(variables, weights):
        if tuple(weight.shape) != tuple(variable[...].shape):
            raise ValueError(f"weight of shape {weight.shape} does not fit {tuple(variable[...].shape)}")
        variable[...] = jnp.asarray(weight, dtype=jnp.float32)


def _sgd(learning_rate, momentum, weight_decay):
    """Keras' SGD from optax's own transformations: v = m v - lr g and w -= lr wd w, then w += v."""
    return optax.chain(optax.scale_by_learning_rate(learning_rate), optax.trace(decay=momentum),
                       optax.add_decayed_weights(-learning_rate * weight_decay))


def _optimizer(settings: TrainParams, learning_rates: np.ndarray):
    """The recipe's optimizer, its rate the shared table indexed by optax's own step count."""
    table = jnp.asarray(np.asarray(learning_rates, dtype=np.float32))
    last = len(learning_rates) - 1

    def schedule(count):
        return table[jnp.minimum(count, last)]

    rate, decay = schedule, settings.weight_decay
    if settings.optimizer == "sgd":
        return optax.inject_hyperparams(_sgd)(learning_rate=rate, momentum=settings.momentum, weight_decay=decay)
    if settings.optimizer == "adamw" or decay:
        return optax.inject_hyperparams(optax.adamw)(learning_rate=rate, eps=ADAM_EPSILON, weight_decay=decay)
    return optax.inject_hyperparams(optax.adam)(learning_rate=rate, eps=ADAM_EPSILON)


def augment_batch(images, key, max_shift: float, max_rotation_deg: float, background: float):
    """Each NHWC image rotated about its centre by up to ``max_rotation_deg`` and shifted by up to
    ``max_shift`` of its size, as one bilinear resampling (``jax.scipy.ndimage.map_coordinates``,
    Keras' interpolation), uncovered pixels filled with ``background``; one draw per image."""
    count, height, width, _ = images.shape
    uniform = jax.random.uniform(key, (3, count), minval=-1.0, maxval=1.0)
    angles = uniform[0] * math.radians(max_rotation_deg)
    shifts_x, shifts_y = uniform[1] * max_shift * width, uniform[2] * max_shift * height
    rows, columns = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32), jnp.arange(width, dtype=jnp.float32),
                                 indexing="ij")
    centre_y, centre_x = (height - 1) / 2, (width - 1) / 2

    def one(image, angle, shift_x, shift_y):
        # Output pixel p (centred) shows input pixel R^-1 (p - shift).
        x, y = columns - centre_x - shift_x, rows - centre_y - shift_y
        cos, sin = jnp.cos(angle), jnp.sin(angle)
        source = [-sin * x + cos * y + centre_y, cos * x + sin * y + centre_x]
        resample = functools.partial(jax.scipy.ndimage.map_coordinates, coordinates=source, order=1,
                                     mode="constant", cval=background)
        return jax.vmap(resample, in_axes=2, out_axes=2)(image)

    return jax.vmap(one)(images, angles, shifts_x, shifts_y)


def augment(images: np.ndarray, settings: TrainParams, background: float, seed: int) -> np.ndarray:
    augmentation = settings.augment
    return np.asarray(augment_batch(jnp.asarray(images, jnp.float32), jax.random.key(seed), augmentation.max_shift,
                                    augmentation.max_rotation_deg, background))


def batch_norm_constants(model: Model) -> list[tuple[float, float]]:
    """Flax's ``momentum`` is the share of the running statistic kept: the decay itself."""
    return [(float(layer.momentum), float(layer.epsilon)) for layer in _module(model).layers
            if isinstance(layer, nnx.BatchNorm)]


def _loss(model, images, labels, smoothing: float, rngs):
    logits = model(images, rngs=rngs)
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), smoothing)
    return optax.softmax_cross_entropy(logits, targets).mean(), logits


def _train_step(model, optimizer, rngs, images_all, labels_all, rows, smoothing: float, augment: tuple | None):
    """One optimizer step on the batch ``rows``: its loss, correct count and the rate it applied."""
    images, labels = images_all[rows], labels_all[rows]
    if augment is not None:
        images = augment_batch(images, rngs.augment(), *augment)
    (loss, logits), grads = nnx.value_and_grad(_loss, has_aux=True)(model, images, labels, smoothing, rngs)
    optimizer.update(model, grads)
    correct = jnp.sum(jnp.argmax(logits, axis=-1) == labels)
    return loss, correct, optimizer.opt_state.hyperparams["learning_rate"]


_STATIC = ("smoothing", "augment")
_stock_step = nnx.jit(_train_step, static_argnames=_STATIC)


def _functional_step(model, optimizer, rngs):
    """The train step as the performance guide's functional loop: split once, plain ``jax.jit``."""
    graphdef, state = nnx.split((model, optimizer, rngs))

    @functools.partial(jax.jit, static_argnums=(4, 5))  # smoothing, augment
    def functional_train_step(state, images_all, labels_all, rows, smoothing, augment):
        model, optimizer, rngs = nnx.merge(graphdef, state)
        outputs = _train_step(model, optimizer, rngs, images_all, labels_all, rows, smoothing, augment)
        return outputs, nnx.state((model, optimizer, rngs))

    def run(images_all, labels_all, rows, smoothing, augment):
        nonlocal state
        outputs, state = functional_train_step(state, images_all, labels_all, rows, smoothing, augment)
        return outputs

    def finish() -> None:
        nnx.update((model, optimizer, rngs), state)

    return run, finish


def _eval_view(model):
    """``model`` in evaluation mode (dropout off, batch norm on its running statistics): the
    model itself if it already is, else an ``nnx.view`` sharing its weights."""
    layers = model.layers
    if all(getattr(layer, "deterministic", True) and getattr(layer, "use_running_average", True)
           for layer in layers):
        return model
    return nnx.view(model, deterministic=True, use_running_average=True, raise_if_not_found=False)


@nnx.jit
def _stock_probabilities(model, images, scale):
    return jax.nn.softmax(model(images * scale), axis=-1)


def _functional_probabilities(model):
    graphdef, state = nnx.split(model)

    @jax.jit
    def functional_probabilities(state, images, scale):
        return jax.nn.softmax(nnx.merge(graphdef, state)(images * scale), axis=-1)

    return functools.partial(functional_probabilities, state)


def for_inference(model: Model, switches: tuple[str, ...]) -> Model:
    """``model``'s evaluation view with the prediction call of its level: the tutorial's ``nnx.jit``
    prediction step (stock) or plain ``jax.jit`` over the split state (``functional_inference``)."""
    view = _eval_view(_module(model))
    if "functional_inference" in switches:
        return Inference(view, _functional_probabilities(view))
    return Inference(view, functools.partial(_stock_probabilities, view))


def _evaluate_split(model, split: Split, smoothing: float, scale: float) -> tuple[float, float]:
    probabilities = predict(model, split.images, VALIDATION_BATCH, scale)
    count = split.labels.shape[0]
    targets = np.eye(probabilities.shape[1], dtype=np.float64)[split.labels]
    targets = targets * (1 - smoothing) + smoothing / probabilities.shape[1]
    loss = float(-np.sum(targets * np.log(np.maximum(probabilities.astype(np.float64), 1e-30))) / count)
    return loss, float(np.mean(probabilities.argmax(axis=1) == split.labels))


def fit(model: Model, train: Split, val: Split, settings: TrainParams, learning_rates: np.ndarray, seed: int,
        on_epoch_end: EpochCallback, background: float = 0.0, on_step_end: StepCallback | None = None) -> None:
    """Train ``model`` in place; call ``on_epoch_end(EpochRecord)`` after each epoch's validation
    (and ``on_step_end(StepRecord)`` after each optimizer step, if given)."""
    train_view = nnx.view(model, deterministic=False, use_running_average=False, raise_if_not_found=False)
    eval_view = nnx.view(model, deterministic=True, use_running_average=True, raise_if_not_found=False)
    optimizer = nnx.Optimizer(train_view, _optimizer(settings, learning_rates), wrt=nnx.Param)
    rngs = nnx.Rngs(dropout=jax.random.key(seed), augment=jax.random.key(derive_seed(seed, "augment")))
    augment = settings.augment
    static = {"smoothing": float(settings.label_smoothing),
              "augment": (float(augment.max_shift), float(augment.max_rotation_deg), float(background))
              if augment.enabled else None}
    if "functional_training" in settings.switches:
        step, finish = _functional_step(train_view, optimizer, rngs)
    else:
        step, finish = functools.partial(_stock_step, train_view, optimizer, rngs), (lambda: None)
    images_all = jax.device_put(np.asarray(train.images, dtype=np.float32) * np.float32(settings.input_scale))
    labels_all = jax.device_put(train.labels.astype(np.int32))
    generator = np.random.default_rng(seed)
    count = train.labels.shape[0]
    for epoch in range(1, settings.epochs + 1):
        started = time.perf_counter()
        batches = [np.sort(rows) for rows in batch_indices(count, settings.batch_size, generator)]
        losses, corrects, sizes = [], [], []
        rate: Any = None
        for number, rows in enumerate(batches, start=1):
            loss, correct, rate = step(images_all, labels_all, rows.astype(np.int32), **static)
            losses.append(loss)
            corrects.append(correct)
            sizes.append(rows.shape[0])
            if on_step_end is not None:
                _check_losses(losses, epoch, number)
                seen = sum(sizes)
                on_step_end(StepRecord(epoch=epoch, batch=number, rows=rows, learning_rate=float(rate),
                                       loss=float(np.dot(np.asarray(jnp.stack(losses), np.float64), sizes) / seen)))
            elif number % CHECK_EVERY == 0:
                _check_losses(losses, epoch, number)
        finish()
        values = _check_losses(losses, epoch, len(batches))
        total_loss = float(np.dot(values.astype(np.float64), sizes) / count)
        check_finite(total_loss, epoch, len(batches))
        check_finite_weights(all(bool(jnp.isfinite(leaf).all()) for leaf in jax.tree.leaves(nnx.state(model))),
                             epoch)
        validation_started = time.perf_counter()
        val_loss, val_accuracy = _evaluate_split(eval_view, val, settings.label_smoothing, settings.input_scale)
        on_epoch_end(EpochRecord(
            epoch=epoch, train_loss=total_loss, train_accuracy=int(jnp.sum(jnp.stack(corrects))) / count,
            val_loss=val_loss, val_accuracy=val_accuracy, learning_rate=float(rate),
            train_seconds=validation_started - started, seconds=time.perf_counter() - started))


def _check_losses(losses: list, epoch: int, upto: int) -> np.ndarray:
    """The epoch's step losses so far (waits for the device); raises at the first non-finite one."""
    values = np.asarray(jnp.stack(losses))
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        check_finite(float(values[bad[0]]), epoch, int(bad[0]) + 1)
    return values


def logits(model: Model, images: np.ndarray) -> np.ndarray:
    """Raw outputs for NHWC images, in inference mode."""
    return np.asarray(_eval_view(_module(model))(jnp.asarray(images, dtype=jnp.float32)))


def predict(model: Model, images: np.ndarray, batch_size: int, input_scale: float = 1.0) -> np.ndarray:
    """Class probabilities (float32, N x classes) for NHWC images, batch by batch."""
    inference = model if isinstance(model, Inference) else for_inference(model, ())
    scale = np.float32(input_scale)
    outputs = [inference.probabilities(jnp.asarray(images[start:start + batch_size], dtype=jnp.float32), scale)
               for start in range(0, images.shape[0], batch_size)]
    return np.concatenate([np.asarray(output) for output in outputs]).astype(np.float32)


def _pure_state(model) -> dict:
    return nnx.state(_module(model)).to_pure_dict()


def export(model: Model, spec: ArchitectureSpec, path: Path) -> None:
    """The ONNX graph of ``model``'s evaluation view, by ``jax2onnx.to_onnx`` (the converter Keras
    uses on JAX), with a free batch dimension ``B``.

    On these pins jax2onnx 0.12.5 is the newest that installs beside Flax (later releases need an
    older Orbax); ``jax2tf`` with ``tf2onnx`` is no route, since jax2tf now writes only
    ``XlaCallModule`` ops, which tf2onnx cannot convert (docs/onnx.md)."""
    from jax2onnx import to_onnx

    graphdef, state = nnx.split(_eval_view(_module(model)))
    to_onnx(lambda images: nnx.merge(graphdef, state)(images), [("B", *spec.input_shape)], input_names=["images"],
            output_names=["logits"], return_mode="file", output_path=str(path))


def save_model(model: Model, path: Path) -> None:
    """Every weight and batch-norm statistic as Flax msgpack (``flax.serialization.to_bytes``):
    arrays only, the same bytes for the same weights."""
    atomic.write_bytes(path, serialization.to_bytes(jax.device_get(_pure_state(model))))


def load_model(path: Path, spec: ArchitectureSpec) -> Model:
    """Rebuild the model from its spec and restore the msgpack state into it (no code runs)."""
    if not path.is_file():
        raise StageError(f"{path}: missing; run the training stage first (dvc repro train)")
    model = build_model(spec)
    target = _pure_state(model)
    try:
        restored = serialization.from_bytes(target, path.read_bytes())
        shapes = jax.tree.map(np.shape, restored), jax.tree.map(np.shape, target)
        if shapes[0] != shapes[1]:
            raise ValueError("the weights' shapes differ from the architecture's")
    except Exception as error:  # noqa: BLE001 - msgpack and flax raise many types for a bad file
        reason = " ".join(str(error).split())[:300]
        raise StageError(f"{path}: not a loadable Flax msgpack state for this architecture "
                         f"({type(error).__name__}: {reason})") from None
    state = nnx.state(model)
    nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, restored))  # device arrays, as training leaves them
    nnx.update(model, state)
    return model
