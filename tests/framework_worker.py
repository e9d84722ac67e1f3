"""Runs one framework in its own process for cross-framework tests (never both in one process).

    python -m tests.framework_worker <keras|torch> export <model.json> <out.npz>
        build the model from the ``model:`` params in model.json (seeded), replace every weight
        with seeded random values (batch-norm statistics included, so they matter), and save
        the canonical weights, a fixed input batch, the logits, the layer kinds and the
        parameter count.
    python -m tests.framework_worker <keras|torch> import <model.json> <in.npz> <out.npz>
        build the same architecture, load the weights from in.npz, and save its logits on
        in.npz's input batch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from stages import backends
from stages.common.architecture import build_spec
from stages.common.params import ModelParams, parse_section


def _spec(model_json: str, input_shape=(28, 28, 1), num_classes: int = 10):
    model = parse_section(ModelParams, json.loads(Path(model_json).read_text()), "model")
    return build_spec(model, input_shape, num_classes)


def main(argv: list[str]) -> None:
    framework, mode, model_json = argv[:3]
    backend = backends.load(framework)
    spec = _spec(model_json)
    model = backend.build_model(spec)
    if mode == "export":
        rng = np.random.default_rng(7)
        # 1-D weights (biases, batch-norm gamma/beta/mean/variance) drawn positive: variances must be.
        weights = [rng.normal(0.0, 0.2, size=weight.shape).astype(np.float32) if weight.ndim > 1
                   else rng.uniform(0.5, 1.5, size=weight.shape).astype(np.float32)
                   for weight in backend.get_weights(model)]
        backend.set_weights(model, weights)
        inputs = rng.normal(0.0, 1.0, size=(8, *spec.input_shape)).astype(np.float32)
        np.savez(argv[3], inputs=inputs, logits=backend.logits(model, inputs),
                 kinds=np.array(backend.layer_kinds(model)), parameters=backend.count_parameters(model),
                 **{f"weight_{index}": weight for index, weight in enumerate(backend.get_weights(model))})
    elif mode == "import":
        source = np.load(argv[3])
        count = len([key for key in source.files if key.startswith("weight_")])
        backend.set_weights(model, [source[f"weight_{index}"] for index in range(count)])
        np.savez(argv[4], logits=backend.logits(model, source["inputs"]),
                 kinds=np.array(backend.layer_kinds(model)), parameters=backend.count_parameters(model))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(sys.argv[1:])
