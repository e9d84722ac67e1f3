"""Benchmark: Keras' training step with the backend's fused batch norm against Keras' own layer.

The Keras backend trains batch norm with TensorFlow's fused kernel (``FusedBatchNormalization``
in ``stages/backends/keras.py``); Keras 3's own ``BatchNormalization`` runs separate ops. This
A/B trains the default recipe both ways with the backend's real ``fit`` (12,800 images, 2
epochs, the two alternating in one process, as ``bench/step_bench.py`` does) and prints the
median ms per step of epoch 2 and the median same-round ratio.

    .venv/bin/python bench/keras_batch_norm_bench.py [--rounds 6] [--json FILE]

Needs ``data/prepared`` from the real MNIST (``dvc repro preprocess``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from step_bench import PREPARED, child, report  # noqa: E402

VARIANTS = [("fused", []), ("keras-own", [])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12_800, help="training images per epoch")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--json", help="write the results here as JSON")
    arguments = parser.parse_args()
    if not PREPARED.is_dir():
        raise SystemExit(f"{PREPARED} is missing: run `dvc repro preprocess` on the real MNIST first")

    fused = None

    def use_variant(backend, name: str) -> None:
        nonlocal fused
        fused = fused or backend.FusedBatchNormalization
        # build_model looks the class up when it builds: swap in Keras' own layer, or back. (Keras
        # is taken from the backend, which sets TensorFlow's oneDNN switch before importing it.)
        backend.FusedBatchNormalization = fused if name == "fused" else backend.keras.layers.BatchNormalization

    table = {"keras": child("keras", VARIANTS, arguments.images, arguments.rounds, use_variant)}
    report(table, VARIANTS, arguments.json, {"images": arguments.images, "rounds": arguments.rounds})


if __name__ == "__main__":
    main()
