"""Keras' engine for this process, named before Keras is imported, and Keras imported once.

The engine is TensorFlow, unless ``keras_jax`` or ``keras_torch`` named another before
importing the Keras backend (``stages.backends.load`` clears the caller's ``KERAS_BACKEND`` first:
a shell cannot swap it). Every module of the Keras backend imports Keras through this one.
"""

from __future__ import annotations

import importlib.util
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before the import: it reads this once
ENGINE = os.environ.setdefault("KERAS_BACKEND", "tensorflow")
from stages.common.errors import native_noise_filtered  # noqa: E402

# TensorFlow prints native start-up lines while it is imported, before its log level applies
# (errors.native_noise_filtered). Keras imports it on every engine where it is installed: on
# TensorFlow at once, on JAX and PyTorch in keras.utils.set_random_seed; so it is imported here,
# with those lines filtered, once for the process.
with native_noise_filtered():
    import keras
    if importlib.util.find_spec("tensorflow") is not None:
        import tensorflow  # noqa: F401 - imported for its start-up lines, as said above

__all__ = ["ENGINE", "keras"]
