"""Benchmark: each framework's training step with the backend's fused optimizer against its default.

Both backends update the default recipe's weights with one fused kernel: PyTorch with ``fused=True`` (its CPU
default loops over the parameters, a handful of ops each), Keras with TensorFlow's
``ResourceApplyAdam`` (``FusedAdam``/``FusedAdamW`` in ``stages/backends/keras.py``; Keras 3's
own Adam runs a dozen ops per variable). This A/B trains the default recipe both ways with each
backend's real ``fit`` (12,800 images, 2 epochs, the two alternating in one process per
framework, as ``bench/step_bench.py`` does) and prints the median ms per step of epoch 2 and the
median same-round ratio.

    .venv/bin/python bench/optimizer_bench.py [--frameworks keras,torch] [--rounds 6] [--json FILE]

Needs ``data/prepared`` from the real MNIST (``dvc repro preprocess``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from step_bench import PREPARED, add_run_arguments, child, report, run_children  # noqa: E402

VARIANTS = [("fused", []), ("default", [])]


def keras_variant(backend, name: str, originals: dict) -> None:
    """``_optimizer`` looks the classes up when it builds: swap in Keras' own, or back."""
    originals.setdefault("adam", backend.FusedAdam)
    originals.setdefault("adamw", backend.FusedAdamW)
    fused = name == "fused"
    backend.FusedAdam = originals["adam"] if fused else backend.keras.optimizers.Adam
    backend.FusedAdamW = originals["adamw"] if fused else backend.keras.optimizers.AdamW


def torch_variant(backend, name: str, originals: dict) -> None:
    """The backend's own optimizer, or the same class and settings with PyTorch's default
    implementation (``fused=None``: a per-parameter loop on the CPU)."""
    build = originals.setdefault("build", backend._optimizer)

    def unfused(model, settings):
        optimizer = build(model, settings)
        return type(optimizer)(optimizer.param_groups[0]["params"], **{**optimizer.defaults, "fused": None})

    backend._optimizer = build if name == "fused" else unfused


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(parser, rounds=6)
    arguments = parser.parse_args()
    if arguments.child:  # one framework per process
        originals: dict = {}
        swap = keras_variant if arguments.child == "keras" else torch_variant
        result = child(arguments.child, VARIANTS, arguments.images, arguments.rounds,
                       lambda backend, name: swap(backend, name, originals))
        print(json.dumps(result))
        return
    if not PREPARED.is_dir():
        raise SystemExit(f"{PREPARED} is missing: run `dvc repro preprocess` on the real MNIST first")
    table = run_children(__file__, arguments.frameworks.split(","),
                         ["--images", str(arguments.images), "--rounds", str(arguments.rounds)])
    report(table, VARIANTS, arguments.json, {"images": arguments.images, "rounds": arguments.rounds})


if __name__ == "__main__":
    main()
