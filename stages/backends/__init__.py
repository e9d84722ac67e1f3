"""The framework backends: ``load`` imports one by name, with its process switches set first.

The names and labels live in ``stages/common/frameworks.py`` (the registry, a leaf module that no data
stage depends on). Each name's module here implements ``stages.backends.base.Backend`` (checked
by the type checker in ``stages/backends/conformance.py``); docs/adding-a-framework.md lists what
adding one takes. Modules are imported on demand, one framework per process: importing this
package imports no framework.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING

from stages.common.frameworks import REGISTRY, label, names

if TYPE_CHECKING:
    from stages.backends.base import Backend

__all__ = ["REGISTRY", "SWITCH_ENVIRONMENT", "label", "load", "names"]

# Switches that work through the process environment, which must be set before the framework
# is imported: framework -> switch -> variables it sets. A variable of a switch that is off is
# removed, so the framework's own default holds whatever the caller's shell set. Each switch is
# also named, with what it does, in its backend's SWITCHES.
SWITCH_ENVIRONMENT: dict[str, dict[str, dict[str, str]]] = {
    # TensorFlow's CPU guide recommends its oneDNN kernels; TensorFlow turns them on by itself
    # only on some x86 CPUs (AVX-512 VNNI and newer), so stock leaves the choice to it.
    "keras": {"onednn": {"TF_ENABLE_ONEDNN_OPTS": "1"}},
}
# Frameworks that choose their device when they are imported (Keras on PyTorch: CUDA where PyTorch
# sees a GPU): `train.device: cpu` hides the GPUs from the process before the import, with CUDA's
# documented CUDA_VISIBLE_DEVICES. The others place their work in their backend's `configure`.
DEVICE_AT_IMPORT = ("keras_torch",)


def load(name: str, tuning: str = "stock", switches: tuple[str, ...] | None = None, device: str = "auto") -> Backend:
    """Import and return the backend module for ``name`` (and with it, its framework), with the
    process environment of its switches set first: none for ``stock``; for ``tuned``, all of
    them, or only ``switches`` where given (to measure one switch alone). ``device``
    (``train.device``): ``cpu`` hides the GPUs first from a framework in ``DEVICE_AT_IMPORT``."""
    if name not in REGISTRY:
        from stages.common.errors import StageError

        raise StageError(f"unknown framework {name!r}; expected one of {', '.join(REGISTRY)}")
    # The engine of Keras is its backend module's choice (keras: TensorFlow; keras_jax: JAX...),
    # never the caller's shell.
    os.environ.pop("KERAS_BACKEND", None)
    environment = SWITCH_ENVIRONMENT.get(name, {})
    on = set() if tuning != "tuned" else set(environment) if switches is None else set(switches)
    for switch, variables in environment.items():
        for variable, value in variables.items():
            if switch in on:
                os.environ[variable] = value
            else:
                os.environ.pop(variable, None)
    if name in DEVICE_AT_IMPORT and device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    module: Backend = importlib.import_module(REGISTRY[name][0])
    return module
