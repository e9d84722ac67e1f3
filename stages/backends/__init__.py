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

# Switches that work through the process environment, which must be set before the framework
# is imported: framework -> switch -> variables it sets. A variable of a switch that is off is
# removed, so the framework's own default holds whatever the caller's shell set. Each switch is
# also named, with what it does, in its backend's SWITCHES.
SWITCH_ENVIRONMENT: dict[str, dict[str, dict[str, str]]] = {
    # TensorFlow's CPU guide recommends its oneDNN kernels; TensorFlow turns them on by itself
    # only on some x86 CPUs (AVX-512 VNNI and newer), so stock leaves the choice to it.
    "keras": {"onednn": {"TF_ENABLE_ONEDNN_OPTS": "1"}},
}


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def label(name: str) -> str:
    """A framework's label (``PyTorch``), or an arm's (``torch-tuned``: ``PyTorch (tuned)``)."""
    if name in REGISTRY:
        return REGISTRY[name][1]
    framework, _, level = name.rpartition("-")
    return f"{REGISTRY[framework][1]} ({level})" if framework in REGISTRY and level == "tuned" else name


def load(name: str, tuning: str = "stock", switches: tuple[str, ...] | None = None) -> Backend:
    """Import and return the backend module for ``name`` (and with it, its framework), with the
    process environment of its switches set first: none for ``stock``; for ``tuned``, all of
    them, or only ``switches`` where given (to measure one switch alone)."""
    if name not in REGISTRY:
        from stages.common.errors import StageError

        raise StageError(f"unknown framework {name!r}; expected one of {', '.join(REGISTRY)}")
    environment = SWITCH_ENVIRONMENT.get(name, {})
    on = set() if tuning != "tuned" else set(environment) if switches is None else set(switches)
    for switch, variables in environment.items():
        for variable, value in variables.items():
            if switch in on:
                os.environ[variable] = value
            else:
                os.environ.pop(variable, None)
    module: Backend = importlib.import_module(REGISTRY[name][0])
    return module
