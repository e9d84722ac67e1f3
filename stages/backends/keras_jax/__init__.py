"""Keras 3 on the JAX engine (implements ``stages.backends.base.Backend``).

The Keras backend (``stages/backends/keras/``: the same layers, ``Model.fit``, optimizers, saving
and loading) with ``KERAS_BACKEND=jax``, so that the report separates the cost of Keras' API from
that of its engine: against ``keras`` (the same API on TensorFlow) and against ``jax`` (JAX
written as Flax writes it). What differs from the TensorFlow engine is the machine set-up below:
JAX's threads, seeds, determinism and device. Keras compiles the train and predict steps with
XLA by default on this engine (``jit_compile="auto"``), and its documentation recommends no
further switch, so the tuned level has none: its arm reruns the stock one, a measure of the
run-to-run noise.
"""

from __future__ import annotations

import logging
import os

os.environ["KERAS_BACKEND"] = "jax"  # read once, when Keras is imported (by the module below)

import jax  # noqa: E402 - imported by Keras already, on this engine
import keras  # noqa: E402
import numpy as np  # noqa: E402

from stages.backends.engines import jax_threads_and_device  # noqa: E402
from stages.backends.keras import (  # noqa: E402 - after the engine is named
    ADAM_EPSILON,
    ENGINE,
    MODEL_FILE,
    SEMANTICS,
    augment,
    batch_norm_constants,
    build_model,
    count_parameters,
    export,
    fit,
    for_inference,
    get_weights,
    keras_export,
    load_model,
    predict,
    save_model,
    set_weights,
)
from stages.common.params import TrainParams  # noqa: E402

__all__ = ["ADAM_EPSILON", "ENGINE", "DESCRIPTION", "MODEL_FILE", "SEMANTICS", "SWITCHES", "TUNED", "augment",
           "batch_norm_constants", "build_model", "configure", "count_parameters", "environment", "export",
           "fit", "keras_export", "for_inference", "get_weights", "load_model", "predict", "save_model",
           "set_weights"]

DESCRIPTION = (
    "Keras 3 on JAX (`KERAS_BACKEND=jax`): the same `keras.Sequential`, `Model.fit` and `keras.optimizers` "
    "optimizer as the Keras framework, with Keras' default for this engine, train and predict steps compiled by "
    "XLA (`jit_compile=\"auto\"`), over a `keras.utils.PyDataset` in the shared batch order. Stock inference is "
    "`Model.predict` for many images and a plain `model(x)` call for one batch. Keras recommends no further "
    "switch on this engine, so the tuned level is the stock one (its arm measures the run-to-run noise).")
SWITCHES: dict[str, str] = {}
TUNED: tuple[str, ...] = ()
# JAX logs at INFO, on every start without a TPU, that it found none; the stages' logs show INFO.
logging.getLogger("jax").setLevel(logging.WARNING)


def environment() -> dict[str, str]:
    """Keras', JAX's and jaxlib's versions, the XLA backend and its devices."""
    from importlib import metadata

    return {
        "keras": keras.__version__, "keras_engine": keras.backend.backend(), "jax": jax.__version__,
        "jaxlib": metadata.version("jaxlib"), "numpy": np.__version__, "xla_backend": jax.default_backend(),
        "devices": ", ".join(f"{device.platform} ({device.device_kind})" for device in jax.devices()),
    }


def configure(settings: TrainParams, seed: int) -> str:
    """Threads, seeds, determinism and device; return the device used ('cpu' or 'cuda'): as for
    JAX/Flax (``engines``), and the seed through Keras' ``keras.utils.set_random_seed``."""
    device = jax_threads_and_device(settings)
    keras.utils.set_random_seed(seed)
    return device
