"""Seeding and CPU threads, set the same way by every stage that computes.

Thread counts must be fixed before a framework is imported (BLAS and OpenMP pools read their
environment once), so stages call ``configure_threads`` first, then import their framework.
A fixed thread count is also part of determinism: reductions split differently across a
different number of threads give different floating-point sums.
"""

from __future__ import annotations

import os
import random

import numpy as np

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")


def configure_threads(threads: int) -> None:
    for variable in _THREAD_VARIABLES:
        os.environ[variable] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    # Keep TensorFlow's C++ start-up chatter out of the stage's log.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def restrict_cpus(threads: int) -> None:
    """Let this process run on ``threads`` CPUs only: for XLA (JAX), which sizes its CPU thread
    pool from the CPUs the process may use when its CPU client starts, and has no thread setting."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) > threads:
        os.sched_setaffinity(0, cpus[:threads])


def op_determinism(device: str) -> bool:
    """Whether the frameworks' deterministic-kernel flags (``torch.use_deterministic_algorithms``,
    TensorFlow's ``enable_op_determinism``, XLA's ``--xla_gpu_deterministic_ops``) are set: on the
    GPU only. No getting-started guide sets them, and on the CPU every registered framework reruns
    to the same bytes without them (``test_shipped_recipe_trains_to_identical_bytes_in_two_processes``),
    so stock stays as the guides write it there. A GPU's kernels (atomic adds in cuDNN, cuBLAS and
    XLA reductions) are not bitwise-repeatable without them: there they are the named switch
    ``op_determinism`` of the device, recorded in every replicate's environment (docs/fairness.md)."""
    return device == "cuda"


def jax_device_before_start(device_param: str) -> str:
    """The device JAX may use, decided before it starts (XLA reads its flags once): 'cuda' where
    ``train.device`` allows a GPU and a CUDA plugin of JAX's is installed, else 'cpu'."""
    import importlib.util

    plugins = ("jax_cuda12_plugin", "jax_cuda13_plugin")
    return "cuda" if device_param != "cpu" and any(importlib.util.find_spec(name) for name in plugins) else "cpu"


def seed_python_and_numpy(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    os.environ["PYTHONHASHSEED"] = str(seed)


def derive_seed(seed: int, purpose: str) -> int:
    """A stable sub-seed per purpose, so stages don't share one random stream by accident."""
    import hashlib

    digest = hashlib.sha256(f"{seed}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


# The instruction sets that pick the frameworks' CPU kernels (oneDNN, XLA, ATen dispatch): two CPUs
# that differ here may compute different bytes from the same code and seed.
KERNEL_ISA = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16",
              "amx_tile", "amx_bf16", "amx_int8", "avx_vnni")


def machine_environment(threads: int) -> dict[str, str]:
    """The machine a replicate ran on: CPU model and kernel instruction sets, cores, the thread
    count it used, Python."""
    import platform

    cpu = platform.processor() or platform.machine()
    flags: list[str] = []
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            lines = info.read().splitlines()
        cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), cpu)
        flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), [])
    except OSError:
        pass  # not Linux: platform's answer stands
    return {"cpu": cpu, "cpu_isa": " ".join(flag for flag in flags if flag in KERNEL_ISA) or "unknown",
            "cores": str(os.cpu_count()), "threads": str(threads),
            "python": platform.python_version(), "os": f"{platform.system()} {platform.release()}"}


def load_per_core() -> float | None:
    """The 1-minute load average per core (above 1: more runnable processes than cores), or None
    where the system has no load average."""
    try:
        return round(os.getloadavg()[0] / (os.cpu_count() or 1), 3)
    except OSError:
        return None


def relative_spread(seconds) -> float | None:
    """(max - min) / median of repeated timings; None for fewer than two."""
    import statistics

    values = list(seconds)
    if len(values) < 2 or statistics.median(values) <= 0:
        return None
    return round((max(values) - min(values)) / statistics.median(values), 4)
