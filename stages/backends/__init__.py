"""The framework backends, by name: the one list of frameworks this project can train.

Each entry names a module that implements ``stages.backends.base.Backend`` (checked by the type
checker in ``stages/backends/conformance.py``). Adding a framework means writing one module
here, adding its name below, and adding its name to ``frameworks:`` and an override section in
``params.yaml``. Modules are imported on demand, one framework per process: importing this
package imports no framework.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stages.backends.base import Backend

# name -> (module, label used in reports and logs)
REGISTRY: dict[str, tuple[str, str]] = {
    "keras": ("stages.backends.keras", "Keras"),
    "torch": ("stages.backends.torch", "PyTorch"),
}


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def label(name: str) -> str:
    return REGISTRY[name][1] if name in REGISTRY else name


def load(name: str) -> Backend:
    """Import and return the backend module for ``name`` (and with it, its framework)."""
    if name not in REGISTRY:
        from stages.common.errors import StageError

        raise StageError(f"unknown framework {name!r}; expected one of {', '.join(REGISTRY)}")
    module: Backend = importlib.import_module(REGISTRY[name][0])
    return module
