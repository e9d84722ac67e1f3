"""Type-checker proof that every backend module implements the ``Backend`` protocol.

Never imported at run time (it would import every framework into one process); ``make lint``
runs mypy, which checks each assignment below against ``stages.backends.base.Backend``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stages.backends import jax, keras, keras_jax, keras_torch, torch
    from stages.backends.base import Backend

    _keras: Backend = keras
    _torch: Backend = torch
    _jax: Backend = jax
    _keras_jax: Backend = keras_jax
    _keras_torch: Backend = keras_torch
