"""GPU check: run the trainers' CUDA path on the real MNIST and report speed, accuracy, determinism.

For each framework whose library is installed: build the shared architecture, train it with the
default recipe on ``device: cuda`` (pure functions of the trainer module, so no DVC or dvclive
is needed on the GPU machine), evaluate on the test split, train a second time to check that
CUDA runs are reproducible (byte-identical weights), and save/load the model through the safe
loader. A framework that is not installed is reported as skipped, with the reason.

    python bench/gpu_check.py --mirror ../shared/datasets/mnist [--epochs 5]

The download and preprocess stages run first, as processes, into a scratch folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stages import backends  # noqa: E402
from stages.common import prepared, yamlfile  # noqa: E402
from stages.common.architecture import build_spec, initial_weights  # noqa: E402
from stages.common.params import effective_train, validate  # noqa: E402
from stages.common.runtime import derive_seed  # noqa: E402
from stages.train.training import EpochLog, train_model  # noqa: E402

REQUIRED = {"keras": ("tensorflow", "keras"), "torch": ("torch", "torchvision")}


def check(framework: str, params, data: prepared.PreparedData, scratch: Path) -> dict:
    missing = [name for name in REQUIRED[framework] if importlib.util.find_spec(name) is None]
    if missing:
        return {"framework": framework, "skipped": f"{', '.join(missing)} not installed on this machine"}
    backend = backends.load(framework)
    settings = dataclasses.replace(effective_train(params, framework), device="cuda")
    spec = build_spec(params.model, data.image_shape, data.num_classes)
    train, val, test = (data.splits[name] for name in ("train", "val", "test"))
    seed = params.replicates.seeds[0]
    initial = initial_weights(spec, np.random.default_rng(derive_seed(seed, "init")))  # as stages/init.py draws them
    runs = []
    for _ in range(2):
        started = time.perf_counter()
        device = backend.configure(settings, seed)
        epoch_log = EpochLog(framework, settings.epochs, train.labels.shape[0])
        model = train_model(backend, spec, train, val, settings, seed, epoch_log, initial)
        runs.append((model, epoch_log.records, device, time.perf_counter() - started))
    (model, records, device, seconds), (second, _, _, _) = runs
    probabilities = backend.predict(model, test.images, 1000)
    identical = all(left.tobytes() == right.tobytes()
                    for left, right in zip(backend.get_weights(model), backend.get_weights(second), strict=True))
    path = scratch / backend.MODEL_FILE
    backend.save_model(model, path)
    reloaded = backend.predict(backend.load_model(path, spec), test.images, 1000)
    return {
        "framework": framework, "device": device, "epochs": len(records), "train_seconds": round(seconds, 1),
        "images_per_second": round(train.labels.shape[0] * len(records)
                                   / sum(record.train_seconds for record in records)),
        "val_accuracy": records[-1].val_accuracy,
        "test_accuracy": float(np.mean(probabilities.argmax(1) == test.labels)),
        "second_run_byte_identical": identical,
        "reloaded_predictions_equal": bool(np.array_equal(reloaded.argmax(1), probabilities.argmax(1))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mirror", required=True)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--frameworks", default="torch,keras")
    arguments = parser.parse_args()
    raw = yamlfile.read(ROOT / "params.yaml")
    raw["data"]["mirrors"] = [str(Path(arguments.mirror).resolve())]
    if arguments.epochs:
        raw["train"]["epochs"] = arguments.epochs
    params = validate(raw)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch_name:
        scratch = Path(scratch_name)
        (scratch / "params.yaml").write_text(yaml.safe_dump(raw))
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for stage in ("download", "preprocess"):
            subprocess.run([sys.executable, "-m", f"stages.{stage}"], cwd=scratch, env=env, check=True)
        data = prepared.load_prepared(scratch / "data" / "prepared")
        for framework in arguments.frameworks.split(","):
            # One framework per process: importing TensorFlow and then torchvision segfaults.
            if len(arguments.frameworks.split(",")) > 1:
                result = subprocess.run([sys.executable, __file__, "--mirror", arguments.mirror, "--frameworks",
                                         framework] + (["--epochs", str(arguments.epochs)] if arguments.epochs
                                                       else []), env=env, capture_output=True, text=True)
                sys.stderr.write(result.stderr[-3000:])
                print(result.stdout.strip() or f'{{"framework": "{framework}", "failed": {result.returncode}}}')
                continue
            print(json.dumps(check(framework, params, data, scratch)))


if __name__ == "__main__":
    main()
