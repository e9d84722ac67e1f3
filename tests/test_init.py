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


def default_spec():
    return build_spec(load_params().model, (28, 28, 1), 10)


def test_weights_fit_the_spec_in_the_canonical_layout(workspace):
    init.main(["1"])
    spec = default_spec()
    weights = load_initial_weights(paths.init_weights(1), spec)
    # Default model: conv 5x5x1x16 (no bias: batch norm follows), 4 batch-norm vectors, conv 3x3x16x32, 4 more,
    # dense 800x128 + bias, dense 128x10 + bias.
    assert [weight.shape for weight in weights] == [(5, 5, 1, 16), (16,), (16,), (16,), (16,), (3, 3, 16, 32), (32,),
                                                   (32,), (32,), (32,), (800, 128), (128,), (128, 10), (10,)]
    assert sum(weight.size for weight in weights) - 2 * (16 + 32) == spec.parameters  # running stats aside
    assert all(weight.dtype == np.float32 for weight in weights)


def test_kernels_are_glorot_uniform_and_the_rest_is_the_identity(workspace):
    init.main(["2"])
    weights = load_initial_weights(paths.init_weights(2), default_spec())
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
    assert not np.array_equal(load_initial_weights(paths.init_weights(3), default_spec())[0],
                              load_initial_weights(paths.init_weights(4), default_spec())[0])


@pytest.mark.parametrize("garbage", [bytes(range(256)) * 4, b"", b"\x80\x04\x95 looks like a pickle"],
                         ids=["random-bytes", "empty", "pickle-opcodes"])
def test_random_bytes_are_not_a_numpy_file(workspace, garbage):
    path = paths.init_weights(5)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(garbage)

    with pytest.raises(StageError) as caught:
        load_initial_weights(path, default_spec())

    found = f"it starts with {garbage[:6]!r}" if garbage else "it is empty"
    assert str(caught.value) == (f"{path}: not a numpy file ({found}; a .npz file is a zip archive); rerun "
                                 "`dvc repro init`")


def test_a_corrupt_archive_is_a_clear_error(workspace):
    path = paths.init_weights(5)
    path.parent.mkdir(parents=True, exist_ok=True)
    init.main(["5"])
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])  # a zip cut short
    with pytest.raises(StageError, match="not an initial-weights archive .*rerun `dvc repro init`$"):
        load_initial_weights(path, default_spec())
    with pytest.raises(StageError, match="missing; run `dvc repro init`"):
        load_initial_weights(paths.init_weights(6), default_spec())


def tampered(workspace, change) -> str:
    """The message of loading seed 7's weights after ``change(arrays)`` rewrote them."""
    init.main(["7"])
    path = paths.init_weights(7)
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    change(arrays)
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    with pytest.raises(StageError) as refused:
        load_initial_weights(path, default_spec())
    assert "\n" not in str(refused.value)
    return str(refused.value)


def test_initial_weights_with_a_nan_name_the_file_the_array_and_finite_values(workspace):
    def poison(arrays):
        arrays["w10"][3, 5] = np.nan
        arrays["w10"][4, 0] = np.inf

    assert tampered(workspace, poison) == (f"{paths.init_weights(7)}: w10 holds 2 NaN or infinite values; expected "
                                           "finite weights; rerun `dvc repro init`")


def test_initial_weights_of_another_shape_name_the_array_and_both_shapes(workspace):
    def reshape(arrays):
        arrays["w5"] = np.zeros((3, 3, 16, 64), np.float32)
        arrays["w10"] = np.zeros((800, 64), np.float32)

    assert tampered(workspace, reshape) == (
        f"{paths.init_weights(7)}: w5 has shape (3, 3, 16, 64), expected (3, 3, 16, 32), and 1 more array of "
        "another shape (w10 has (800, 64), expected (800, 128)); the model in params.yaml differs from the one "
        "these weights were drawn for: rerun `dvc repro init`")


def test_initial_weights_with_arrays_missing_name_the_arrays_expected(workspace):
    def drop(arrays):
        del arrays["w13"], arrays["w12"]

    assert tampered(workspace, drop) == (f"{paths.init_weights(7)}: holds arrays w0..w11, expected w0..w13 for the "
                                         "model in params.yaml; rerun `dvc repro init`")


def test_initial_weights_that_are_not_numbers_are_refused(workspace):
    def text(arrays):
        arrays["w2"] = np.array(["a"] * 16)

    assert tampered(workspace, text) == (f"{paths.init_weights(7)}: w2 holds <U1 values; expected floating-point "
                                         "weights; rerun `dvc repro init`")
