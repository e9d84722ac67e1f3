"""The trainer contract and Keras' own checks (tests/keras_contract.py) for Keras on the JAX engine,
in a process that runs no other Keras engine."""

from tests.keras_contract import *  # noqa: F403 - the contract and every Keras engine's checks

FRAMEWORK = "keras_jax"
