"""``python -m tests.timing.worker``: the timing stage's worker with the toy frameworks registered
(their one registry line each), as a user's added framework would be."""

from __future__ import annotations

import sys

from stages.common import frameworks
from stages.common.errors import run_stage
from stages.timing import worker

TOYS = {"numpy": ("tests.numpy_backend", "NumPy"), "slow_start": ("tests.timing.slow_start", "Slow start")}
COMMAND = (sys.executable, "-m", "tests.timing.worker")

if __name__ == "__main__":
    frameworks.REGISTRY.update(TOYS)
    run_stage(lambda: worker.main(sys.argv[1:]), "timing")
