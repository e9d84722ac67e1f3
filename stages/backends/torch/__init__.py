"""The PyTorch backend (implements ``stages.backends.base.Backend``).

Builds the shared architecture as an ``nn.Sequential`` of PyTorch's own modules (NCHW; the
canonical layout's dense weights, in Keras' HWC flatten order, are permuted to PyTorch's CHW
order in ``set_weights``/``get_weights``), held in a ``Network`` with the facts PyTorch's module
does not keep (``network.py``), trains it eagerly with a ``torch.optim`` optimizer in a
plain loop over batches gathered on the device from the training split, copied there once (no
DataLoader workers, no per-batch host-to-device copies), in the shared per-epoch order, and saves
a ``state_dict``. Loads only with ``weights_only=True``.
Only PyTorch is imported here, never TensorFlow. The network is in ``network.py``, the training
loop in ``training.py``; inference, export and the model file are here.

One of PyTorch's log lines is filtered out (a filter on its logger, ``_NoCudaRuntimeNotice``):
``torch.compile`` imports ``torch.utils.cpp_extension``, which warns "No CUDA runtime is found,
using CUDA_HOME=..." on every machine that has a CUDA toolkit but no usable GPU. It is no
fault of the run and nothing to act on (``train.device: cuda`` without a GPU is refused with
its own line); every other line of PyTorch's still shows.
"""

from __future__ import annotations

import io
import logging
import pickle
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from stages.backends.engines import torch_deterministic_algorithms, torch_threads_and_device
from stages.backends.torch.network import (
    Network,
    batch_norm_constants,
    build_model,
    count_parameters,
    device_of,
    get_weights,
    set_memory_format,
    set_weights,
    to_input,
)
from stages.backends.torch.training import augment, fit
from stages.common import atomic
from stages.common.architecture import ArchitectureSpec
from stages.common.errors import StageError
from stages.common.params import TrainParams

__all__ = ["DESCRIPTION", "MODEL_FILE", "SEMANTICS", "SWITCHES", "TUNED", "Network", "augment",
           "batch_norm_constants", "build_model", "configure", "count_parameters", "environment", "export", "fit",
           "for_inference", "get_weights", "load_model", "predict", "save_model", "set_weights"]

MODEL_FILE = "model.pt"

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
    device = torch_threads_and_device(settings)
    torch.manual_seed(seed)
    if torch_deterministic_algorithms(device):
        # Determinism does not need freshly allocated memory filled with NaN (a debugging aid that
        # use_deterministic_algorithms switches on): no kernel here reads memory it did not write.
        torch.utils.deterministic.fill_uninitialized_memory = False
        torch.backends.cudnn.benchmark = False
    return device


def for_inference(model: Network, switches: tuple[str, ...]) -> Network:
    """``model`` in evaluation mode: eager in PyTorch's default memory format (stock), in the
    channels-last format (``channels_last``), compiled by ``torch.compile`` (``compiled_inference``;
    the wrapper shares the weights)."""
    model.layers.eval()
    set_memory_format(model, "channels_last" in switches)
    if "compiled_inference" in switches:
        return Network(model.layers, model.map_height, model.channels_last, torch.compile(model.layers))
    return model


def predict(model: Network, images: np.ndarray, batch_size: int, input_scale: float = 1.0) -> np.ndarray:
    """Class probabilities (float32, N x classes) for NHWC images, batch by batch."""
    model.layers.eval()
    device = device_of(model)
    outputs = []
    with torch.inference_mode():
        for start in range(0, images.shape[0], batch_size):
            batch = to_input(images[start:start + batch_size], device, input_scale, model.channels_last)
            outputs.append(torch.softmax(model(batch), dim=1).cpu().numpy())
    return np.concatenate(outputs).astype(np.float32)


class _FromNHWC(nn.Module):
    """``model`` fed NHWC images, as every export takes them: the transpose becomes part of the graph."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images):
        return self.model(images.permute(0, 3, 1, 2))


def export(model: Network, spec: ArchitectureSpec, path: Path) -> None:
    """The ONNX graph of ``model`` in evaluation mode, by ``torch.onnx.export`` (its default
    ``torch.export``-based exporter), with a free batch dimension."""
    example = torch.zeros((2, *spec.input_shape), dtype=torch.float32)
    with torch.inference_mode(False), torch.no_grad():  # the eager layers, never torch.compile's wrapper
        program = torch.onnx.export(_FromNHWC(model.layers).cpu().eval(), (example,), input_names=["images"],
                                    output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("batch")},),
                                    dynamo=True, verbose=False)
    program.save(str(path))


def save_model(model: Network, path: Path) -> None:
    """Save the ``state_dict``; serialised in memory first so the bytes never name a temp file."""
    buffer = io.BytesIO()
    torch.save({name: tensor.detach().cpu() for name, tensor in model.layers.state_dict().items()}, buffer)
    atomic.write_bytes(path, buffer.getvalue())


def load_model(path: Path, spec: ArchitectureSpec) -> Network:
    """Rebuild the model from its spec and load the weights with ``weights_only=True``."""
    if not path.is_file():
        raise StageError(f"{path}: missing; run the training stage first (dvc repro train)")
    model = build_model(spec, 0)  # every weight is then loaded from the file
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.layers.load_state_dict(state, strict=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types for a corrupt file
        raise StageError(f"{path}: not a loadable PyTorch state_dict for this architecture "
                         f"({type(error).__name__}: {_load_failure_reason(error)})") from None
    model.layers.eval()
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
