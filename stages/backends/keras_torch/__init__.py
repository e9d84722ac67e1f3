"""Keras 3 on the PyTorch engine (implements ``stages.backends.base.Backend``).

The Keras backend (``stages/backends/keras/``: the same layers, ``Model.fit``, optimizers, saving
and loading) with ``KERAS_BACKEND=torch``, so that the report separates the cost of Keras' API
from that of its engine: against ``keras`` (the same API on TensorFlow) and against ``torch``
(PyTorch written as its tutorials write it). What differs from the TensorFlow engine is the
machine set-up below: PyTorch's threads, seeds, determinism and device. Keras runs this engine
eagerly by default (``jit_compile="auto"``); the tuned level has no switch (Keras' other choice,
``jit_compile=True``, is documented as torch.compile but not recommended for speed), so its arm
reruns the stock one, a measure of the run-to-run noise.
"""

from __future__ import annotations

import os

os.environ["KERAS_BACKEND"] = "torch"  # read once, when Keras is imported (by the module below)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402 - imported by Keras already, on this engine

from stages.backends.engines import torch_deterministic_algorithms, torch_threads_and_device  # noqa: E402
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
    load_model,
    predict,
    save_model,
    set_weights,
)
from stages.common.errors import StageError  # noqa: E402
from stages.common.params import TrainParams  # noqa: E402

__all__ = ["ADAM_EPSILON", "ENGINE", "DESCRIPTION", "MODEL_FILE", "SEMANTICS", "SWITCHES", "TUNED", "augment",
           "batch_norm_constants", "build_model", "configure", "count_parameters", "environment", "export", "fit",
           "for_inference", "get_weights", "load_model", "predict", "save_model", "set_weights"]

DESCRIPTION = (
    "Keras 3 on PyTorch (`KERAS_BACKEND=torch`): the same `keras.Sequential`, `Model.fit` and `keras.optimizers` "
    "optimizer as the Keras framework, with Keras' default for this engine, eager PyTorch execution "
    "(`jit_compile=\"auto\"`), over a `keras.utils.PyDataset` in the shared batch order. Stock inference is "
    "`Model.predict` for many images and a plain `model(x)` call for one batch. Keras recommends no switch for "
    "speed on this engine, so the tuned level is the stock one (its arm measures the run-to-run noise).")
SWITCHES: dict[str, str] = {}
TUNED: tuple[str, ...] = ()


def environment() -> dict[str, str]:
    """Keras' and PyTorch's versions and build, the devices."""
    return {
        "keras": keras.__version__, "keras_engine": keras.backend.backend(), "torch": torch.__version__,
        "numpy": np.__version__, "onednn": "available" if torch.backends.mkldnn.is_available() else "not built",
        "cuda": torch.version.cuda or "none", "devices": "cuda" if torch.cuda.is_available() else "cpu",
    }


def configure(settings: TrainParams, seed: int) -> str:
    """Threads, seeds, determinism and device; return the device used ('cpu' or 'cuda').

    As for PyTorch (``engines``): its thread count, ``torch.use_deterministic_algorithms`` on a GPU
    only; the seed through Keras' ``keras.utils.set_random_seed`` (which seeds PyTorch on this
    engine). Keras chose its device when it was imported (CUDA where PyTorch sees one), so
    ``train.device: cpu`` hides the GPUs before that import (``stages.backends.load``,
    ``DEVICE_AT_IMPORT``).
    """
    device = torch_threads_and_device(settings)
    if settings.device == "cpu" and torch.cuda.is_available():  # Keras chose CUDA when it was imported
        raise StageError("train.device is 'cpu' but Keras on PyTorch was imported with a GPU visible: load it "
                         "with stages.backends.load(..., device='cpu'), which hides the GPUs first")
    keras.utils.set_random_seed(seed)
    torch_deterministic_algorithms(device)
    return device
