"""The machine set-up of the two engines that two backends each run on: PyTorch (``torch`` and
``keras_torch``) and JAX (``jax`` and ``keras_jax``), written once for both.

Each function imports its engine when called, from a backend that has imported it already: a
backend loads only its own engine, never the other one (nor Flax or optax, the JAX backend's own).
What differs between the two backends of an engine stays in their ``configure``: the seeding
(the framework's own call, or Keras'), PyTorch's extra GPU settings, Keras' device check.
"""

from __future__ import annotations

import os

from stages.common.errors import StageError
from stages.common.params import TrainParams
from stages.common.runtime import configure_threads, jax_device_before_start, op_determinism, restrict_cpus


def torch_threads_and_device(settings: TrainParams) -> str:
    """PyTorch's threads (``train.threads`` intra-op, one inter-op) and the device it is to use:
    'cuda' where PyTorch sees a GPU and ``train.device`` allows one, else 'cpu'. ``StageError``
    for ``train.device: cuda`` without a GPU."""
    import torch

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
    return "cuda" if available and settings.device != "cpu" else "cpu"


def torch_deterministic_algorithms(device: str) -> bool:
    """PyTorch's deterministic algorithms and cuBLAS workspace, where ``runtime.op_determinism``
    asks for them (the GPU only: the CPU reruns bitwise without them); whether it did."""
    import torch

    if not op_determinism(device):
        return False
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS, before CUDA starts
    torch.use_deterministic_algorithms(True)
    return True


def jax_threads_and_device(settings: TrainParams) -> str:
    """JAX's CPUs, deterministic GPU kernels and default device; return the device ('cpu' or 'cuda').

    XLA sizes its CPU thread pool from the CPUs the process may use (JAX has no thread setting),
    so the process is restricted to ``train.threads`` CPUs first; XLA's CPU kernels are
    deterministic, and its deterministic GPU kernels are requested before JAX starts. ``StageError``
    for ``train.device: cuda`` without a GPU."""
    import jax

    configure_threads(settings.threads)
    restrict_cpus(settings.threads)  # read by XLA when its CPU client starts (no effect after that)
    flags = os.environ.get("XLA_FLAGS", "")
    # the GPU only, before JAX starts: the CPU reruns bitwise without it (runtime.op_determinism)
    if op_determinism(jax_device_before_start(settings.device)) and "xla_gpu_deterministic_ops" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_gpu_deterministic_ops=true".strip()
    gpus = [device for device in jax.devices() if device.platform == "gpu"]
    if settings.device == "cuda" and not gpus:
        raise StageError("train.device is 'cuda' but JAX sees no GPU (is the CUDA plugin installed? "
                         "pip install 'jax[cuda12]==0.10.2'); set it to auto or cpu")
    use_gpu = bool(gpus) and settings.device != "cpu"
    jax.config.update("jax_default_device", gpus[0] if use_gpu else jax.devices("cpu")[0])
    return "cuda" if use_gpu else "cpu"
