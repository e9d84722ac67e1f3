"""Stage ``preprocess``: the pure ``prepare`` core, ``main()`` in a project folder, ``load_prepared``'s
errors, and the real MNIST / Fashion-MNIST files downloaded through a loopback mirror."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest

from stages import download
from stages.common import prepared
from stages.common.datasets import KNOWN_DATASETS
from stages.common.errors import StageError, run_stage
from stages.common.params import PreprocessParams
from stages.preprocess import __main__ as preprocess
from tests.conftest import shared_dataset
from tests.support import MirrorServer, custom_params, gunzip_dataset, project_params, write_params

CLASSES = 10
HEIGHT, WIDTH = 6, 5


def settings(normalize: str = "none", val_fraction: float = 0.2, max_train: int | None = None,
             max_test: int | None = None) -> PreprocessParams:
    return PreprocessParams(val_fraction=val_fraction, max_train=max_train, max_test=max_test, normalize=normalize)


def indexed_images(count: int, rng: np.random.Generator, low: int = 0, high: int = 256) -> np.ndarray:
    """Random uint8 images whose first two pixels spell their index (little-endian base 256)."""
    images = rng.integers(low, high, size=(count, HEIGHT, WIDTH), dtype=np.uint8)
    images[:, 0, 0] = np.arange(count) % 256
    images[:, 0, 1] = np.arange(count) // 256
    return images


def indices_of(images: np.ndarray) -> np.ndarray:
    """Recover the original indices from prepared (normalize: none) images."""
    return (images[:, 0, 0, 0] + 256 * images[:, 0, 1, 0]).astype(np.int64)


@pytest.fixture(scope="module")
def raw() -> dict[str, np.ndarray]:
    """Unequal classes (class k has 20 + 5k training images), shuffled, plus a test set."""
    rng = np.random.default_rng(1)
    train_labels = np.repeat(np.arange(CLASSES), 20 + 5 * np.arange(CLASSES)).astype(np.uint8)
    rng.shuffle(train_labels)
    test_labels = (np.arange(50) % CLASSES).astype(np.uint8)
    rng.shuffle(test_labels)
    return {
        "train_images": indexed_images(train_labels.size, rng),
        "train_labels": train_labels,
        "test_images": indexed_images(test_labels.size, rng),
        "test_labels": test_labels,
    }


def run_prepare(raw: dict, options: PreprocessParams, seed: int = 7):
    return preprocess.prepare(raw["train_images"], raw["train_labels"], raw["test_images"], raw["test_labels"],
                              options, seed, CLASSES)


# --------------------------------------------------------------------------------------------
# Split
# --------------------------------------------------------------------------------------------
def test_split_is_stratified_and_partitions_the_training_set(raw):
    splits, _ = run_prepare(raw, settings(val_fraction=0.2))

    train, val = indices_of(splits["train"].images), indices_of(splits["val"].images)
    assert np.intersect1d(train, val).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(raw["train_labels"].size))
    np.testing.assert_array_equal(splits["train"].labels, raw["train_labels"][train])
    np.testing.assert_array_equal(splits["val"].labels, raw["train_labels"][val])
    class_sizes = 20 + 5 * np.arange(CLASSES)
    expected_val = np.array([int(round(size * 0.2)) for size in class_sizes])
    np.testing.assert_array_equal(np.bincount(splits["val"].labels, minlength=CLASSES), expected_val)
    np.testing.assert_array_equal(np.bincount(splits["train"].labels, minlength=CLASSES), class_sizes - expected_val)


def test_split_is_seeded(raw):
    first, _ = run_prepare(raw, settings(), seed=7)
    again, _ = run_prepare(raw, settings(), seed=7)
    other, _ = run_prepare(raw, settings(), seed=8)

    for name in prepared.SPLITS:
        np.testing.assert_array_equal(first[name].images, again[name].images)
        np.testing.assert_array_equal(first[name].labels, again[name].labels)
    assert not np.array_equal(indices_of(first["val"].images), indices_of(other["val"].images))
    # Another seed still stratifies the same way.
    np.testing.assert_array_equal(np.bincount(first["val"].labels), np.bincount(other["val"].labels))


def test_test_set_is_untouched_by_the_split(raw):
    for seed, fraction in ((7, 0.2), (8, 0.5)):
        splits, _ = run_prepare(raw, settings(val_fraction=fraction), seed=seed)

        np.testing.assert_array_equal(splits["test"].images[..., 0], raw["test_images"].astype(np.float32))
        np.testing.assert_array_equal(splits["test"].labels, raw["test_labels"])


def test_caps_on_train_and_test(raw):
    splits, _ = run_prepare(raw, settings(val_fraction=0.1, max_train=100, max_test=7))

    train, val = indices_of(splits["train"].images), indices_of(splits["val"].images)
    assert train.size + val.size == 100
    assert np.intersect1d(train, val).size == 0
    test = indices_of(splits["test"].images)
    assert test.size == 7
    assert np.all(np.diff(test) > 0)  # a subset of the test set, in its original order
    np.testing.assert_array_equal(splits["test"].labels, raw["test_labels"][test])
    np.testing.assert_array_equal(splits["val"].labels, raw["train_labels"][val])


def test_caps_above_the_data_keep_everything(raw):
    splits, _ = run_prepare(raw, settings(max_train=10_000, max_test=10_000))

    assert splits["train"].labels.size + splits["val"].labels.size == raw["train_labels"].size
    assert splits["test"].labels.size == raw["test_labels"].size


def test_a_split_left_empty_is_an_error(raw):
    tiny = {key: value[:12] for key, value in raw.items()}  # about one image per class

    with pytest.raises(StageError, match="val_fraction 0.01 leaves an empty split of 12 training images"):
        run_prepare(tiny, settings(val_fraction=0.01))


def test_train_and_test_image_sizes_must_agree(raw):
    other = dict(raw, test_images=np.zeros((50, HEIGHT + 1, WIDTH), np.uint8))

    with pytest.raises(StageError, match=r"train images are \(6, 5\) but test images are \(7, 5\)"):
        run_prepare(other, settings())


# --------------------------------------------------------------------------------------------
# Normalisation and output format
# --------------------------------------------------------------------------------------------
def test_output_format(raw):
    splits, _ = run_prepare(raw, settings(normalize="standardize"))

    for name in prepared.SPLITS:
        images, labels = splits[name].images, splits[name].labels
        assert images.dtype == np.float32
        assert images.ndim == 4 and images.shape[1:] == (HEIGHT, WIDTH, 1)  # NHWC, one channel
        assert labels.dtype == np.uint8
        assert labels.shape == (images.shape[0],)


def test_standardize_uses_the_training_split_only(raw):
    bright = dict(raw, test_images=np.full_like(raw["test_images"], 255))  # would shift any shared statistic
    plain, _ = run_prepare(bright, settings(normalize="none"))
    splits, stats = run_prepare(bright, settings(normalize="standardize"))

    raw_train = plain["train"].images.astype(np.float64)
    assert stats["method"] == "standardize"
    assert stats["mean"] == pytest.approx(raw_train.mean(), rel=1e-12)
    assert stats["std"] == pytest.approx(raw_train.std(), rel=1e-12)
    pool = np.concatenate([raw_train, plain["val"].images]).astype(np.float64)
    assert abs(pool.mean() - stats["mean"]) > 1e-6  # validation images are not part of the statistics
    train = splits["train"].images.astype(np.float64)
    assert abs(train.mean()) < 1e-4
    assert train.std() == pytest.approx(1.0, abs=1e-4)
    for name in ("val", "test"):  # the same transform, with the training split's statistics
        expected = (plain[name].images.astype(np.float64) - stats["mean"]) / stats["std"]
        np.testing.assert_allclose(splits[name].images, expected, rtol=1e-5, atol=1e-5)


def test_standardize_of_constant_images_does_not_divide_by_zero(raw):
    flat = dict(raw, train_images=np.full_like(raw["train_images"], 9))

    splits, stats = run_prepare(flat, settings(normalize="standardize"))

    assert stats["mean"] == 9.0 and stats["std"] == 1e-6
    assert np.all(np.isfinite(splits["test"].images))
    assert np.all(splits["train"].images == 0.0)


def test_scale_maps_to_the_unit_interval(raw):
    plain, _ = run_prepare(raw, settings(normalize="none"))
    splits, stats = run_prepare(raw, settings(normalize="scale"))

    assert stats == {"method": "scale", "mean": 0.0, "std": 255.0}
    for name in prepared.SPLITS:
        np.testing.assert_allclose(splits[name].images, plain[name].images / 255.0, rtol=1e-6)
    train = splits["train"].images
    assert train.min() == 0.0 and train.max() == pytest.approx(1.0)


def test_none_keeps_raw_pixel_values_as_floats(raw):
    splits, stats = run_prepare(raw, settings(normalize="none"))

    assert stats == {"method": "none", "mean": 0.0, "std": 1.0}
    images = splits["train"].images
    assert images.dtype == np.float32
    np.testing.assert_array_equal(images[..., 0], raw["train_images"][indices_of(images)].astype(np.float32))
    assert images.max() == 255.0 and images.min() == 0.0


# --------------------------------------------------------------------------------------------
# main() in a project folder
# --------------------------------------------------------------------------------------------
@pytest.fixture
def project(tmp_path, generated, monkeypatch) -> Path:
    """A project folder with params for the generated dataset and its IDX files in data/raw."""
    folder = tmp_path / "project"
    folder.mkdir()
    write_params(folder, custom_params(generated.custom, [str(generated.folder)], val_fraction=0.1,
                                       normalize="standardize"))
    gunzip_dataset(generated.folder, folder / "data" / "raw")
    monkeypatch.chdir(folder)
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_main_writes_the_prepared_format(project, generated):
    preprocess.main([])

    output = project / "data" / "prepared"
    assert sorted(path.name for path in output.iterdir()) == sorted(
        [f"{split}_{kind}.npy" for split in prepared.SPLITS for kind in ("images", "labels")] + ["meta.json"])
    assert sorted(path.name for path in (project / "data").iterdir()) == ["prepared", "raw"]  # no temporaries
    meta = json.loads((output / "meta.json").read_text())
    normalize = meta.pop("normalize")
    assert normalize["method"] == "standardize" and sorted(normalize) == ["mean", "method", "std"]
    files = generated.custom["files"]
    assert meta == {
        "format_version": 1,
        "dataset": "custom",
        "class_names": [f"class {index}" for index in range(10)],
        "image_shape": [28, 28, 1],
        "layout": "NHWC",
        "image_dtype": "float32",
        "label_dtype": "uint8",
        "splits": {  # make_dataset: 20 training and 6 test images per class; val is 10% of each class
            "train": {"count": 180, "label_counts": [18] * 10},
            "val": {"count": 20, "label_counts": [2] * 10},
            "test": {"count": 60, "label_counts": [6] * 10},
        },
        "sources_sha256": {spec["name"][: -len(".gz")]: spec["sha256"] for spec in files.values()},
        "seed": project_params()["seed"],
        "val_fraction": 0.1,
    }
    data = prepared.load_prepared(output)
    for name in prepared.SPLITS:
        split = data.splits[name]
        assert isinstance(split.images, np.memmap)  # plain .npy: memory-mapped, no pickle
        assert split.images.dtype == np.float32 and split.images.shape[1:] == (28, 28, 1)
        assert split.labels.dtype == np.uint8
        assert np.bincount(split.labels, minlength=10).tolist() == meta["splits"][name]["label_counts"]
    train = np.asarray(data.splits["train"].images, dtype=np.float64)
    assert abs(train.mean()) < 1e-4 and train.std() == pytest.approx(1.0, abs=1e-4)  # the train split's stats
    assert 0 < normalize["mean"] < 255 and 0 < normalize["std"] < 255


def test_main_malformed_raw_file_writes_nothing(project):
    bad = project / "data" / "raw" / "t10k-labels-idx1-ubyte"
    bad.write_bytes(bad.read_bytes() + b"\x00")

    with pytest.raises(StageError) as caught:
        preprocess.main([])

    assert str(caught.value).startswith(f"{Path('data/raw/t10k-labels-idx1-ubyte')}: 1 unexpected trailing bytes")
    assert sorted(path.name for path in (project / "data").iterdir()) == ["raw"]


def test_main_failure_keeps_the_previous_prepared_data(project):
    preprocess.main([])
    output = project / "data" / "prepared"
    before = snapshot(output)
    # Valid IDX, but a label outside the 10 classes: detected only after all files were read.
    labels = project / "data" / "raw" / "train-labels-idx1-ubyte"
    content = bytearray(labels.read_bytes())
    content[-1] = 10
    labels.write_bytes(bytes(content))

    with pytest.raises(StageError, match=r"train-labels-idx1-ubyte: label 10 at index 199 is outside the 10 classes"):
        preprocess.main([])

    assert snapshot(output) == before
    assert sorted(path.name for path in (project / "data").iterdir()) == ["prepared", "raw"]


def test_main_missing_raw_file_points_at_the_download_stage(project):
    (project / "data" / "raw" / "train-images-idx3-ubyte").unlink()

    with pytest.raises(StageError, match=r"train-images-idx3-ubyte: missing; run the download stage first"):
        preprocess.main([])

    assert not (project / "data" / "prepared").exists()


def test_main_is_deterministic(project):
    preprocess.main([])
    first = snapshot(project / "data" / "prepared")
    preprocess.main([])

    assert snapshot(project / "data" / "prepared") == first


# --------------------------------------------------------------------------------------------
# load_prepared: every problem names the file
# --------------------------------------------------------------------------------------------
@pytest.fixture
def saved(tmp_path, raw) -> Path:
    splits, stats = run_prepare(raw, settings(normalize="scale"))
    meta = prepared.build_meta(dataset="custom", class_names=[str(index) for index in range(CLASSES)],
                               image_shape=(HEIGHT, WIDTH, 1), normalize=stats, splits=splits,
                               sources={}, seed=7, val_fraction=0.2)
    folder = tmp_path / "prepared"
    prepared.save_prepared(folder, splits, meta)
    return folder


def test_load_prepared_round_trip(saved, raw):
    data = prepared.load_prepared(saved, mmap=False)

    assert data.class_names == [str(index) for index in range(CLASSES)]
    assert data.num_classes == CLASSES
    assert data.image_shape == (HEIGHT, WIDTH, 1)
    total = sum(data.splits[name].labels.size for name in ("train", "val"))
    assert total == raw["train_labels"].size
    assert data.splits["test"].images.shape == (raw["test_labels"].size, HEIGHT, WIDTH, 1)


def test_load_prepared_wrong_dtype(saved):
    path = saved / "train_images.npy"
    np.save(path, np.load(path).astype(np.float64))

    with pytest.raises(StageError, match=rf"^{path}: dtype float64; expected float32$"):
        prepared.load_prepared(saved)


def test_load_prepared_wrong_label_dtype(saved):
    path = saved / "test_labels.npy"
    np.save(path, np.load(path).astype(np.int64))

    with pytest.raises(StageError, match=rf"^{path}: dtype int64; expected uint8$"):
        prepared.load_prepared(saved)


def test_load_prepared_wrong_shape(saved):
    path = saved / "val_labels.npy"
    labels = np.load(path)
    np.save(path, labels[:-1])

    with pytest.raises(StageError, match=rf"^{path}: shape \({labels.size - 1},\); expected \({labels.size},\) "
                                         "from meta.json"):
        prepared.load_prepared(saved)


def test_load_prepared_channels_first_is_a_shape_error(saved):
    path = saved / "test_images.npy"
    np.save(path, np.ascontiguousarray(np.load(path).transpose(0, 3, 1, 2)))

    with pytest.raises(StageError, match=rf"^{path}: shape \(50, 1, 6, 5\); expected \(50, 6, 5, 1\)"):
        prepared.load_prepared(saved)


def test_load_prepared_missing_file(saved):
    path = saved / "test_images.npy"
    path.unlink()

    with pytest.raises(StageError, match=rf"^{path}: missing; run the preprocess stage first"):
        prepared.load_prepared(saved)


def test_load_prepared_not_an_npy_file(saved):
    path = saved / "val_images.npy"
    path.write_bytes(b"not numpy")

    with pytest.raises(StageError) as caught:
        prepared.load_prepared(saved)

    assert str(caught.value) == (rf"{path}: not a numpy file (it starts with b'not nu'; a .npy file starts with "
                                 r"b'\x93NUMPY'); rerun the preprocess stage")


@pytest.mark.parametrize("garbage", [bytes(range(256)) * 4, b"", b"\x80\x04\x95 looks like a pickle"],
                         ids=["random-bytes", "empty", "pickle-opcodes"])
def test_load_prepared_garbage_label_file_names_the_file_not_pickle(saved, garbage):
    path = saved / "train_labels.npy"
    path.write_bytes(garbage)

    with pytest.raises(StageError) as caught:
        prepared.load_prepared(saved)

    found = f"it starts with {garbage[:6]!r}" if garbage else "it is empty"
    assert str(caught.value).startswith(f"{path}: not a numpy file ({found}; ")
    assert "pickle" not in str(caught.value)


def test_load_prepared_truncated_npy_file(saved):
    path = saved / "test_labels.npy"
    path.write_bytes(path.read_bytes()[:20])

    with pytest.raises(StageError, match=rf"^{path}: not a valid .npy file \(EOF: reading array header"):
        prepared.load_prepared(saved)


def test_load_prepared_refuses_pickled_arrays(saved):
    path = saved / "train_labels.npy"
    np.save(path, np.array([{"label": 1}], dtype=object), allow_pickle=True)

    with pytest.raises(StageError, match=rf"^{path}: holds Python objects \(an object array\), expected plain "
                                         "numbers; rerun the preprocess stage$"):
        prepared.load_prepared(saved)


def test_load_prepared_label_outside_the_classes(saved):
    path = saved / "test_labels.npy"
    labels = np.load(path)
    labels[3] = CLASSES
    np.save(path, labels)

    with pytest.raises(StageError, match=rf"^{path}: label 10 outside the 10 classes"):
        prepared.load_prepared(saved)


def test_load_prepared_missing_meta(saved):
    (saved / "meta.json").unlink()

    with pytest.raises(StageError, match=rf"^{saved / 'meta.json'}: missing; run the preprocess stage first"):
        prepared.load_prepared(saved)


@pytest.mark.parametrize(("content", "problem"), [
    ("{not json", "not valid JSON"),
    ("5", "missing keys"),  # valid JSON, not a mapping
    ('{"format_version": 1}', r"missing keys \['class_names', 'image_shape', 'splits', 'normalize'\]"),
])
def test_load_prepared_bad_meta(saved, content, problem):
    (saved / "meta.json").write_text(content)

    with pytest.raises(StageError, match=rf"^{saved / 'meta.json'}: {problem}"):
        prepared.load_prepared(saved)


def test_load_prepared_other_format_version(saved):
    meta = json.loads((saved / "meta.json").read_text())
    meta["format_version"] = 2
    (saved / "meta.json").write_text(json.dumps(meta))

    with pytest.raises(StageError, match=r"meta.json: format_version 2; expected 1 \(rerun preprocess\)"):
        prepared.load_prepared(saved)


# --------------------------------------------------------------------------------------------
# Real data: download through a loopback mirror, then preprocess
# --------------------------------------------------------------------------------------------
MNIST_TRAIN = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
FASHION_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot"]


def download_and_preprocess(name: str, tmp_path: Path, monkeypatch) -> dict:
    source = shared_dataset(name)
    project = tmp_path / "project"
    project.mkdir()
    with MirrorServer(source) as server:
        raw = project_params()
        raw["data"].update(dataset=name, mirrors=[server.url], retries=0)
        raw["preprocess"].update(normalize="scale", val_fraction=0.1, max_train=None, max_test=None)
        write_params(project, raw)
        monkeypatch.chdir(project)
        download.main([])
        assert sorted(path.rsplit("/", 1)[-1] for path in server.requests) == sorted(
            remote.name for remote in KNOWN_DATASETS[name].files)
    preprocess.main([])
    return json.loads((project / "data" / "prepared" / "meta.json").read_text())


def check_real_meta(meta: dict, name: str, train_counts: list[int], test_counts: list[int]) -> None:
    splits = meta["splits"]
    combined = [train + val for train, val in zip(splits["train"]["label_counts"], splits["val"]["label_counts"])]
    assert combined == train_counts
    assert splits["test"]["label_counts"] == test_counts
    val_counts = [int(round(count * 0.1)) for count in train_counts]  # 10% of each class, rounded per class
    assert splits["val"]["label_counts"] == val_counts
    assert splits["val"]["count"] == sum(val_counts)
    assert splits["train"]["count"] + splits["val"]["count"] == 60_000
    assert splits["test"]["count"] == 10_000
    assert meta["image_shape"] == [28, 28, 1]
    assert meta["sources_sha256"] == {remote.local_name: remote.sha256 for remote in KNOWN_DATASETS[name].files}


def test_real_mnist(tmp_path, monkeypatch):
    meta = download_and_preprocess("mnist", tmp_path, monkeypatch)

    check_real_meta(meta, "mnist", MNIST_TRAIN, MNIST_TEST)
    assert meta["class_names"] == [str(digit) for digit in range(10)]
    images = np.load(tmp_path / "project" / "data" / "prepared" / "test_images.npy", mmap_mode="r")
    assert float(images.mean()) == pytest.approx(0.1325, abs=0.001)  # MNIST's well-known test mean


def test_real_fashion_mnist(tmp_path, monkeypatch):
    meta = download_and_preprocess("fashion-mnist", tmp_path, monkeypatch)

    check_real_meta(meta, "fashion-mnist", [6000] * 10, [1000] * 10)
    assert meta["class_names"] == FASHION_NAMES


def test_main_on_a_full_disk_is_one_line_naming_the_output_and_keeps_the_previous_data(project, monkeypatch,
                                                                                      capsys):
    preprocess.main([])
    output = project / "data" / "prepared"
    before = snapshot(output)
    real_save = np.save
    saved = []

    def save_until_the_disk_is_full(handle, array, **options):  # the third array finds the disk full
        if len(saved) == 2:
            handle.write(b"\x93NUMPY half an array")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        saved.append(handle.name)
        return real_save(handle, array, **options)

    monkeypatch.setattr(prepared.np, "save", save_until_the_disk_is_full)

    with pytest.raises(SystemExit) as caught:
        run_stage(lambda: preprocess.main([]), "preprocess")

    assert caught.value.code == 1
    assert capsys.readouterr().err.splitlines()[-1] == (f"error: preprocess: {Path('data/prepared')}: cannot write: "
                                                        "no space left on device; nothing half-written was left")
    assert snapshot(output) == before
    assert sorted(path.name for path in (project / "data").iterdir()) == ["prepared", "raw"]
