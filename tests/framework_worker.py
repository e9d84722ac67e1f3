"""Runs one framework in its own process for cross-framework tests (never both in one process).

    python -m tests.framework_worker <framework> export <model.json> <out.npz>
        build the model from the ``model:`` params in model.json (seeded), replace every weight
        with seeded random values (batch-norm statistics included, so they matter), and save
        the canonical weights, a fixed input batch, its probabilities (``predict``, read out at
        ``readout_scale``: see ``read_out``) and the parameter count.
    python -m tests.framework_worker <framework> import <model.json> <in.npz> <out.npz>
        build the same architecture, load the weights from in.npz, and save its probabilities
        (``predict``, at in.npz's ``readout_scale``) on in.npz's input batch.
    python -m tests.framework_worker <framework> fit <cases.json> <out_dir>
        for each case: build the model, load the framework-neutral initial weights of
        ``stages.common.architecture.initial_weights`` (seeded), train it with the backend's own
        ``fit`` on seeded random data, and save ``<out_dir>/<case>.npz``: the trained weights,
        every epoch record and every step record (batch rows, the learning rate read back from
        the optimizer, the running loss), the batch-norm constants as the framework's own layers
        hold them (``batch_norm_constants``); with ``"save_model": true`` also the saved model file.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

from stages import backends
from stages.common.architecture import build_spec, initial_weights
from stages.common.params import ModelParams, parse_section, validate
from stages.common.prepared import Split
from stages.common.schedules import learning_rates


def _spec(model_json: str, input_shape=(28, 28, 1), num_classes: int = 10):
    model = parse_section(ModelParams, json.loads(Path(model_json).read_text()), "model")
    return build_spec(model, input_shape, num_classes)


def case_data(case: dict) -> tuple[Split, Split]:
    """Seeded random images (standard normal) and labels: the same arrays in every process."""
    rng = np.random.default_rng(1000 + case["seed"])
    size = case["image_size"]

    def split(count: int) -> Split:
        images = rng.normal(0.0, 1.0, size=(count, size, size, 1)).astype(np.float32)
        return Split(images, rng.integers(0, 10, size=count).astype(np.uint8))

    return split(case["train_count"]), split(case["val_count"])


def case_settings(case: dict):
    """The project's params.yaml with the case's ``model`` and ``train`` overrides, validated."""
    from tests.support import project_params

    raw = project_params()
    raw["model"] = case["model"]
    raw["train"].update({key: value for key, value in case["train"].items() if key != "augment"})
    raw["train"]["augment"].update(case["train"].get("augment", {}))
    return validate(raw)


def fit_cases(backend, cases: list[dict], out_dir: Path) -> None:
    for case in cases:
        params = case_settings(case)
        settings = params.train
        spec = build_spec(params.model, (case["image_size"], case["image_size"], 1), 10)
        backend.configure(settings, case["seed"])
        model = backend.build_model(spec, case["seed"])
        backend.set_weights(model, initial_weights(spec, np.random.default_rng(case["seed"])))
        train, val = case_data(case)
        steps_per_epoch = math.ceil(train.labels.shape[0] / settings.batch_size)
        epochs, steps = [], []
        backend.fit(model, train, val, settings, learning_rates(settings, steps_per_epoch), case["seed"],
                    epochs.append, background=case.get("background", 0.0), on_step_end=steps.append)
        arrays = {f"weight_{index}": weight for index, weight in enumerate(backend.get_weights(model))}
        for field in ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "learning_rate"):
            arrays[f"epoch_{field}"] = np.array([getattr(record, field) for record in epochs])
        for field in ("epoch", "batch", "learning_rate", "loss"):
            arrays[f"step_{field}"] = np.array([getattr(record, field) for record in steps])
        arrays["step_rows"] = np.concatenate([np.asarray(record.rows, dtype=np.int64) for record in steps])
        arrays["step_sizes"] = np.array([len(record.rows) for record in steps])
        arrays["table"] = learning_rates(settings, steps_per_epoch)
        arrays["batch_norm_constants"] = np.array(backend.batch_norm_constants(model), dtype=np.float64).reshape(-1, 2)
        np.savez(out_dir / f"{case['name']}.npz", **arrays)
        if case.get("save_model"):
            backend.save_model(model, out_dir / f"{case['name']}.{backend.MODEL_FILE}")


# The smallest probability a readout may hold: far above float32's smallest normal number (1.2e-38),
# so that the other framework's, within rounding of it, is a normal number too.
SMALLEST_PROBABILITY = 1e-30


def read_out(backend, model, inputs: np.ndarray, scale: float) -> np.ndarray:
    """``predict``'s probabilities with the output layer's kernel and bias (the last two canonical
    weights) multiplied by ``scale``, a power of two: the logits are then the model's times
    ``scale`` exactly (the layer is linear, and a power of two scales float32 without rounding),
    and the test divides their log-probabilities by it. The model's weights are put back (from a
    copy: a backend's ``get_weights`` may return views of the weights it then changes)."""
    weights = [np.array(weight, copy=True) for weight in backend.get_weights(model)]
    backend.set_weights(model, [*weights[:-2], weights[-2] * np.float32(scale), weights[-1] * np.float32(scale)])
    probabilities = backend.predict(model, inputs, len(inputs))
    backend.set_weights(model, weights)
    return probabilities


def readout_scale(backend, model, inputs: np.ndarray) -> float:
    """1, or the largest power of 1/2 at which no probability falls below ``SMALLEST_PROBABILITY``:
    random weights can spread a model's logits over hundreds, and softmax rounds the probability
    of a logit more than about 87 below the largest to zero in float32, losing that logit."""
    scale = 1.0
    while scale > 2.0**-20 and read_out(backend, model, inputs, scale).min() < SMALLEST_PROBABILITY:
        scale /= 2
    return scale


def main(argv: list[str]) -> None:
    from tests.support import register_extra_frameworks

    register_extra_frameworks()  # frameworks the test run registered (pytest --extra-framework)
    framework, mode = argv[:2]
    backend = backends.load(framework)
    if mode == "fit":
        request = json.loads(Path(argv[2]).read_text())
        fit_cases(backend, request["cases"], Path(argv[3]))
        (Path(argv[3]) / "semantics.json").write_text(json.dumps(backend.SEMANTICS))
        return
    model_json = argv[2]
    spec = _spec(model_json)
    model = backend.build_model(spec, 0)
    if mode == "export":
        rng = np.random.default_rng(7)
        # 1-D weights (biases, batch-norm gamma/beta/mean/variance) drawn positive: variances must be.
        weights = [rng.normal(0.0, 0.2, size=weight.shape).astype(np.float32) if weight.ndim > 1
                   else rng.uniform(0.5, 1.5, size=weight.shape).astype(np.float32)
                   for weight in backend.get_weights(model)]
        backend.set_weights(model, weights)
        inputs = rng.normal(0.0, 1.0, size=(8, *spec.input_shape)).astype(np.float32)
        scale = readout_scale(backend, model, inputs)
        np.savez(argv[3], inputs=inputs, readout_scale=scale, probabilities=read_out(backend, model, inputs, scale),
                 parameters=backend.count_parameters(model),
                 **{f"weight_{index}": weight for index, weight in enumerate(backend.get_weights(model))})
    elif mode == "import":
        source = np.load(argv[3])
        count = len([key for key in source.files if key.startswith("weight_")])
        backend.set_weights(model, [source[f"weight_{index}"] for index in range(count)])
        probabilities = read_out(backend, model, source["inputs"], float(source["readout_scale"]))
        np.savez(argv[4], probabilities=probabilities,
                 parameters=backend.count_parameters(model))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(sys.argv[1:])
