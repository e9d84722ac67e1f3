"""The frameworks this project can train, by name: the registry, and nothing else.

A leaf module (it imports nothing from the project), so that adding a line here reruns no data
stage and no other framework's training: only ``validate`` (which refuses an unknown name in
``params.yaml``) and ``report`` (which prints the labels) list it as a DVC dependency. Each name's
backend is the package ``stages.backends.<name>``, which dvc.yaml's train and evaluate stages list
(``stages/backends/${item.framework}``); docs/adding-a-framework.md says what else a new one
needs.
"""

from __future__ import annotations

# name -> (backend module, label used in reports and logs)
REGISTRY: dict[str, tuple[str, str]] = {
    "keras": ("stages.backends.keras", "Keras"),
    "torch": ("stages.backends.torch", "PyTorch"),
    "jax": ("stages.backends.jax", "JAX/Flax"),
    "keras_jax": ("stages.backends.keras_jax", "Keras on JAX"),
    "keras_torch": ("stages.backends.keras_torch", "Keras on PyTorch"),
}


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def label(name: str) -> str:
    """A framework's label (``PyTorch``), or an arm's (``torch-tuned``: ``PyTorch (tuned)``)."""
    if name in REGISTRY:
        return REGISTRY[name][1]
    framework, _, level = name.rpartition("-")
    return f"{REGISTRY[framework][1]} ({level})" if framework in REGISTRY and level == "tuned" else name
