"""A workspace for the timing stage: params, prepared data and initial weights in a temporary
folder, with the toy frameworks of tests/timing/worker.py registered in this process too."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from stages import init
from stages.common import frameworks, paths, prepared
from tests.support import PROJECT_ROOT, project_params
from tests.timing.worker import TOYS


def timing_params(names=("numpy", "slow_start"), **timing) -> dict:
    raw = project_params()
    raw["frameworks"] = list(names)
    for name in names:
        raw[name] = {}
    raw["replicates"].update(seeds=[1], tuned_seeds=[])
    raw["train"].update(batch_size=8, threads=1)
    raw["evaluate"].update(batch_size=16)
    raw["timing"].update(rounds=2, warmup_steps=2, steps=3, inference_images=32, inference_repeats=1,
                         latency_samples=3, latency_warmup=1, contention=False, busy_cores=2.0, retries=0)
    raw["timing"].update(timing)
    return raw


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    for name, entry in TOYS.items():
        monkeypatch.setitem(frameworks.REGISTRY, name, entry)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(PROJECT_ROOT))  # the workers import stages/ and tests/ from here
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(timing_params(), sort_keys=False))
    rng = np.random.default_rng(0)
    labels = (np.arange(64) % 10).astype(np.uint8)
    splits = {name: prepared.Split(rng.standard_normal((64, 28, 28, 1)).astype(np.float32), labels)
              for name in ("train", "val", "test")}
    meta = prepared.build_meta(dataset="mnist", class_names=[str(i) for i in range(10)], image_shape=(28, 28, 1),
                               normalize={"method": "standardize", "mean": 0.0, "std": 1.0}, splits=splits,
                               sources={}, seed=42, val_fraction=0.1)
    prepared.save_prepared(paths.PREPARED, splits, meta)
    init.main(["1"])
    return tmp_path


def set_timing(folder, **timing) -> None:
    raw = yaml.safe_load((folder / "params.yaml").read_text())
    raw["timing"].update(timing)
    (folder / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
