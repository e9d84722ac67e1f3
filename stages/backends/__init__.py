"""The framework backends, by name: the one list of frameworks this project can train.

Each entry names a module that implements ``stages.backends.base.Backend`` (checked by the type
checker in ``stages/backends/conformance.py``). Adding a framework means writing one module
here and adding its name below; around them, its pins in requirements.txt (then ``make lock``),
a mypy override if it ships no types, its line in ``conformance.py``, a ``tests/<name>/`` module
that runs ``tests/trainer_contract.py`` and provides ``augment_images``, its batch-norm reader in
``tests/framework_worker.py``, and its ``<name>-model`` artifact in dvc.yaml (each test that
needs one names it). ``params.yaml`` runs it once ``frameworks:`` lists it; an override section
is optional. Modules are imported on demand, one framework per process: importing this package
imports no framework.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stages.backends.base import Backend

# name -> (module, label used in reports and logs)
REGISTRY: dict[str, tuple[str, str]] = {
    "keras": ("stages.backends.keras", "Keras"),
    "torch": ("stages.backends.torch", "PyTorch"),
    "jax": ("stages.backends.jax", "JAX/Flax"),
}

# Switches that must be in the process environment before a framework is imported, per
# framework and tuning level (name -> value; None: removed, so the framework's own default
# holds whatever the caller's shell set). Each is also named in its backend's SWITCHES.
PROCESS_ENVIRONMENT: dict[str, dict[str, dict[str, str | None]]] = {
    # TensorFlow's CPU guide recommends its oneDNN kernels; TensorFlow turns them on by itself
    # only on some x86 CPUs (AVX-512 VNNI and newer), so stock leaves the choice to it.
    "keras": {"stock": {"TF_ENABLE_ONEDNN_OPTS": None}, "tuned": {"TF_ENABLE_ONEDNN_OPTS": "1"}},
}


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def label(name: str) -> str:
    """A framework's label (``PyTorch``), or an arm's (``torch-tuned``: ``PyTorch (tuned)``)."""
    if name in REGISTRY:
        return REGISTRY[name][1]
    framework, _, level = name.rpartition("-")
    return f"{REGISTRY[framework][1]} ({level})" if framework in REGISTRY and level == "tuned" else name


def load(name: str, tuning: str = "stock") -> Backend:
    """Import and return the backend module for ``name`` (and with it, its framework), with the
    process environment of its ``tuning`` level set first."""
    if name not in REGISTRY:
        from stages.common.errors import StageError

        raise StageError(f"unknown framework {name!r}; expected one of {', '.join(REGISTRY)}")
    for variable, value in PROCESS_ENVIRONMENT.get(name, {}).get(tuning, {}).items():
        if value is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = value
    module: Backend = importlib.import_module(REGISTRY[name][0])
    return module
