"""The trainer contract (tests/trainer_contract.py) for TensorFlow/Keras, in a Keras-only process."""

from tests.trainer_contract import *  # noqa: F403 - the shared contract tests

FRAMEWORK = "keras"
