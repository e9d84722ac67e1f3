"""The trainer contract (tests/trainer_contract.py) for PyTorch, in a PyTorch-only process."""

from tests.trainer_contract import *  # noqa: F403 - the shared contract tests

FRAMEWORK = "torch"
