"""stages/init.py: framework-neutral initial weights per seed, in the canonical layout."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from stages import init
from stages.common import paths, prepared
from stages.common.architecture import build_spec, load_initial_weights
from stages.common.errors import StageError
from stages.common.params import load_params
from tests.support import project_params


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(project_params()))
    images = np.zeros((20, 28, 28, 1), np.float32)
    labels = (np.arange(20) % 10).astype(np.uint8)
    splits = {name: prepared.Split(images, labels) for name in ("train", "val", "test")}
    meta = prepared.build_meta(dataset="mnist", class_names=[str(i) for i in range(10)], image_shape=(28, 28, 1),
                               normalize={"method": "standardize", "mean": 0.0, "std": 1.0}, splits=splits,
                               sources={}, seed=42, val_fraction=0.1)
    prepared.save_prepared(paths.PREPARED, splits, meta)
    return tmp_path


def test_weights_fit_the_spec_in_the_canonical_layout(workspace):
    init.main(["1"])
    weights = load_initial_weights(paths.init_weights(1))
    spec = build_spec(load_params().model, (28, 28, 1), 10)
    # Default model: conv 5x5x1x16 (no bias: batch norm follows), 4 batch-norm vectors, conv 3x3x16x32, 4 more,
    # dense 800x128 + bias, dense 128x10 + bias.
    assert [weight.shape for weight in weights] == [(5, 5, 1, 16), (16,), (16,), (16,), (16,), (3, 3, 16, 32), (32,),
                                                   (32,), (32,), (32,), (800, 128), (128,), (128, 10), (10,)]
    assert sum(weight.size for weight in weights) - 2 * (16 + 32) == spec.parameters  # running stats aside
    assert all(weight.dtype == np.float32 for weight in weights)


def test_kernels_are_glorot_uniform_and_the_rest_is_the_identity(workspace):
    init.main(["2"])
    weights = load_initial_weights(paths.init_weights(2))
    dense = weights[10]
    limit = np.sqrt(6 / (800 + 128))
    assert np.abs(dense).max() <= limit and np.abs(dense).max() > 0.95 * limit  # fills its range
    assert abs(float(dense.mean())) < 0.01 * limit * 10 and dense.std() == pytest.approx(limit / np.sqrt(3), rel=0.02)
    gamma, beta, mean, variance = weights[1:5]
    assert (gamma == 1).all() and (beta == 0).all() and (mean == 0).all() and (variance == 1).all()
    assert (weights[11] == 0).all() and (weights[13] == 0).all()


def test_same_seed_same_bytes_other_seed_other_weights(workspace):
    init.main(["3"])
    first = paths.init_weights(3).read_bytes()
    init.main(["3"])
    assert paths.init_weights(3).read_bytes() == first
    init.main(["4"])
    assert not np.array_equal(load_initial_weights(paths.init_weights(3))[0],
                              load_initial_weights(paths.init_weights(4))[0])


def test_a_corrupt_archive_is_a_clear_error(workspace):
    path = paths.init_weights(5)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a zip")
    with pytest.raises(StageError, match="not an initial-weights archive"):
        load_initial_weights(path)
    with pytest.raises(StageError, match="missing; run `dvc repro init`"):
        load_initial_weights(paths.init_weights(6))
