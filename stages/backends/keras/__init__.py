"""The Keras 3 backend (implements ``stages.backends.base.Backend``), on the TensorFlow engine here.

Builds the shared architecture as a ``keras.Sequential`` of Keras' own layers, trains it with
``Model.fit`` and a Keras optimizer in the shared per-epoch batch order, and saves ``.keras``
archives normalised so identical weights give identical bytes. Loads only with Keras'
``safe_mode``.

Keras runs on one engine per process (``KERAS_BACKEND``, read when Keras is imported). This module
is the framework ``keras``: the TensorFlow engine, fed by a ``tf.data`` pipeline as TensorFlow's
guide writes one. ``keras_jax`` and ``keras_torch`` are this same code on the JAX and
PyTorch engines (each names its engine, then imports this module), fed by a
``keras.utils.PyDataset``, the engine-neutral input of Keras' training guide. Only Keras and its
engine are imported here, except that Keras' own ``keras.utils.set_random_seed`` also imports
TensorFlow, where it is installed, to seed it. The tuning level's process switch (oneDNN) is set
before the import by ``stages.backends.load``. The engine and Keras' import are in ``engine.py``,
the network and its inference in ``network.py``, the training in ``training.py``, the model file
and export in ``saving.py``.
"""

from __future__ import annotations

import os

import numpy as np

from stages.backends.keras.engine import ENGINE, keras
from stages.backends.keras.network import (
    TracedInference,
    batch_norm_constants,
    build_model,
    count_parameters,
    for_inference,
    get_weights,
    predict,
    set_weights,
)
from stages.backends.keras.saving import (
    HDF5_MAGIC,
    MODEL_FILE,
    NO_ONNX_ROUTE_ON_JAX,
    export,
    keras_export,
    load_model,
    save_model,
)
from stages.backends.keras.training import ADAM_EPSILON, EpochBatches, TableSchedule, augment, compile_trainer, fit
from stages.common.errors import StageError
from stages.common.params import TrainParams
from stages.common.runtime import configure_threads, op_determinism

if ENGINE == "tensorflow":
    import tensorflow as tf

__all__ = ["ADAM_EPSILON", "DESCRIPTION", "ENGINE", "HDF5_MAGIC", "MODEL_FILE", "NO_ONNX_ROUTE_ON_JAX", "SEMANTICS",
           "SWITCHES", "TUNED", "EpochBatches", "TableSchedule", "TracedInference", "augment", "batch_norm_constants",
           "build_model", "compile_trainer", "configure", "count_parameters", "environment", "export", "fit",
           "for_inference", "get_weights", "keras_export", "load_model", "predict", "save_model", "set_weights"]

DESCRIPTION = (
    "Keras 3 on TensorFlow: a `keras.Sequential` of Keras' own layers, trained by `Model.fit` (Keras' "
    "default traced `tf.function` step; `jit_compile` left at Keras' `auto`, which Keras turns off on a "
    "CPU-only machine) with a `keras.optimizers` optimizer, over a `tf.data` pipeline with default options. "
    "Stock inference is `Model.predict` for many images and a plain `model(x)` call for one batch, as "
    "Keras' API docs advise; the tuned level adds TensorFlow's oneDNN kernels and a traced inference call.")
SWITCHES = {
    "onednn": "TensorFlow's oneDNN CPU kernels (`TF_ENABLE_ONEDNN_OPTS=1`), which TensorFlow turns on by itself "
              "only on x86 CPUs with AVX-512 VNNI and newer (https://www.tensorflow.org/install/pip; "
              "https://github.com/tensorflow/tensorflow/releases/tag/v2.9.0)",
    "traced_inference": "inference through one `tf.function`, as TensorFlow's guide recommends for repeated "
                        "small calls (https://www.tensorflow.org/guide/function)",
}
# Not a switch: XLA for the train step (`jit_compile=True`, Keras' docs' way to compile it for speed) made
# the steady step 3.3x slower on this CPU (80.3 against 24.4 ms, docs/fairness.md), so tuned leaves it out.
TUNED: tuple[str, ...] = ("onednn", "traced_inference")
SEMANTICS = {
    "moving_variance": "biased",  # keras.layers.BatchNormalization updates with the batch's plain variance
    "adam_epsilon": "uncorrected",  # Keras adds epsilon to sqrt(v), its bias correction folded into the rate
    "sgd_momentum": "weight_units",  # keras.optimizers.SGD: v = m v - lr g; w += v
    "sgd_weight_decay": "decoupled",  # Keras' optimizers decay the weights themselves
    "gelu": "exact",  # keras.activations.gelu(approximate=False), Keras' default
}


def environment() -> dict[str, str]:
    """TensorFlow's and Keras' versions and build, the kernels and devices in use."""
    build = tf.sysconfig.get_build_info()
    return {
        "tensorflow": tf.__version__, "keras": keras.__version__, "keras_engine": keras.backend.backend(),
        "numpy": np.__version__,
        "tensorflow_build": ", ".join(f"{key}={build[key]}" for key in sorted(build)
                                      if key in ("is_cuda_build", "is_rocm_build", "cuda_version", "cudnn_version")),
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "TensorFlow's default for this CPU"),
        "devices": ", ".join(device.device_type for device in tf.config.list_physical_devices()),
    }


def configure(settings: TrainParams, seed: int) -> str:
    """Threads, seeds, determinism and device; return the device used ('cpu' or 'cuda')."""
    configure_threads(settings.threads)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(settings.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # already initialised in this process (tests): the first setting stays
    gpus = tf.config.list_physical_devices("GPU")
    if settings.device == "cuda" and not gpus:
        raise StageError("train.device is 'cuda' but TensorFlow sees no GPU (is a CUDA build of TensorFlow "
                         "installed? pip install 'tensorflow[and-cuda]'); set it to auto or cpu")
    if settings.device == "cpu" and gpus:
        tf.config.set_visible_devices([], "GPU")
    keras.utils.set_random_seed(seed)
    device = "cuda" if gpus and settings.device != "cpu" else "cpu"
    if op_determinism(device):  # the GPU only: the CPU reruns bitwise without it (runtime.op_determinism)
        tf.config.experimental.enable_op_determinism()
    return device
