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
way. Only JAX, Flax and optax are imported here. The network is in ``network.py``, the
training in ``training.py``, the prediction calls in ``inference.py``; export and the model file
are here.
"""

from __future__ import annotations

import logging
import os
from importlib import metadata
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, serialization

from stages.backends.base import Model
from stages.backends.engines import jax_threads_and_device
from stages.backends.jax.inference import eval_view, for_inference, predict
from stages.backends.jax.network import (
    ACTIVATIONS,
    FLATTEN,
    Inference,
    batch_norm_constants,
    build_model,
    count_parameters,
    get_weights,
    module_of,
    set_weights,
)
from stages.backends.jax.training import augment, augment_batch, fit
from stages.common import atomic
from stages.common.architecture import ArchitectureSpec
from stages.common.errors import StageError
from stages.common.params import TrainParams

__all__ = ["ACTIVATIONS", "DESCRIPTION", "FLATTEN", "MODEL_FILE", "SEMANTICS", "SWITCHES", "TUNED", "Inference",
           "augment", "augment_batch", "batch_norm_constants", "build_model", "configure", "count_parameters",
           "environment", "export", "fit", "for_inference", "get_weights", "load_model", "predict", "save_model",
           "set_weights"]

MODEL_FILE = "model.msgpack"
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
    """Threads, seeds, determinism and device; return the device used ('cpu' or 'cuda'). JAX has no
    global seed: each draw is keyed by the replicate seed itself."""
    return jax_threads_and_device(settings)


def _pure_state(model) -> dict:
    return nnx.state(module_of(model)).to_pure_dict()


def export(model: Model, spec: ArchitectureSpec, path: Path) -> None:
    """The ONNX graph of ``model``'s evaluation view, by ``jax2onnx.to_onnx`` (the converter Keras
    uses on JAX), with a free batch dimension ``B``.

    On these pins jax2onnx 0.12.5 is the newest that installs beside Flax (later releases need an
    older Orbax); ``jax2tf`` with ``tf2onnx`` is no route, since jax2tf now writes only
    ``XlaCallModule`` ops, which tf2onnx cannot convert (docs/onnx.md)."""
    from jax2onnx import to_onnx

    graphdef, state = nnx.split(eval_view(module_of(model)))
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
    model = build_model(spec, 0)  # every weight is then restored from the file
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
