"""Stage ``preprocess``: IDX files -> the shared numpy format (see ``stages/common/prepared.py``).

Reads ``data/raw/`` (the four decompressed IDX files) and ``params.yaml`` (``seed``,
``data.dataset``/``data.custom`` for file and class names, ``preprocess:``).
Writes ``data/prepared/`` ({train,val,test}_{images,labels}.npy and meta.json).

The only stage that knows about IDX. Every file is validated before anything is written. The
validation split is carved from the training set, stratified by class and seeded, so that the
test set is never used for model selection. Normalisation statistics come from the training
split alone.

Run: ``python -m stages.preprocess`` (or ``dvc repro preprocess``).
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import numpy as np

from stages.common import cli, paths, prepared
from stages.common.datasets import Dataset, resolve_dataset
from stages.common.errors import StageError, run_stage
from stages.common.params import PreprocessParams, load_params
from stages.common.runtime import derive_seed
from stages.common.splits import val_count
from stages.preprocess.idx import parse_images_and_labels

RAW_DIR = paths.RAW
PREPARED_DIR = paths.PREPARED

log = logging.getLogger("preprocess")


def subsample(labels: np.ndarray, limit: int | None, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of a seeded random subset of at most ``limit`` items (all if None)."""
    if limit is None or limit >= labels.shape[0]:
        return np.arange(labels.shape[0])
    return np.sort(rng.choice(labels.shape[0], size=limit, replace=False))


def stratified_split(labels: np.ndarray, val_fraction: float, rng: np.random.Generator,
                     num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (train, val) with ``val_fraction`` of every class in val, seeded."""
    train_parts, val_parts = [], []
    for label in range(num_classes):
        members = np.flatnonzero(labels == label)
        rng.shuffle(members)
        count = val_count(members.size, val_fraction)
        val_parts.append(members[:count])
        train_parts.append(members[count:])
    train_indices, val_indices = np.sort(np.concatenate(train_parts)), np.sort(np.concatenate(val_parts))
    if train_indices.size == 0 or val_indices.size == 0:
        raise StageError(f"preprocess.val_fraction {val_fraction} leaves an empty split of {labels.size} "
                         "training images; use more images or another fraction")
    return train_indices, val_indices


def normalisation(train_images: np.ndarray, method: str) -> dict[str, float | str]:
    """(mean, std) that map raw 0..255 pixels to the model's input range."""
    if method == "standardize":
        # float64 accumulation: a float32 sum over 47M pixels loses digits.
        mean = float(train_images.mean(dtype=np.float64))
        std = float(train_images.std(dtype=np.float64))
        return {"method": method, "mean": mean, "std": max(std, 1e-6)}
    if method == "scale":
        return {"method": method, "mean": 0.0, "std": 255.0}
    return {"method": method, "mean": 0.0, "std": 1.0}


def normalise(images: np.ndarray, stats: dict) -> np.ndarray:
    """uint8 (N, H, W) -> float32 (N, H, W, 1) in the prepared format."""
    output = images.astype(np.float32)[..., np.newaxis]
    if stats["mean"] != 0.0:
        output -= np.float32(stats["mean"])
    if stats["std"] != 1.0:
        output *= np.float32(1.0 / stats["std"])
    return output


def prepare(train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray,
            test_labels: np.ndarray, settings: PreprocessParams, seed: int,
            num_classes: int) -> tuple[dict[str, prepared.Split], dict]:
    """Pure core of the stage: raw uint8 arrays -> normalised splits and normalisation stats."""
    if train_images.shape[1:] != test_images.shape[1:]:
        raise StageError(f"train images are {train_images.shape[1:]} but test images are {test_images.shape[1:]}")
    rng = np.random.default_rng(derive_seed(seed, "preprocess"))
    pool = subsample(train_labels, settings.max_train, rng)
    test_keep = subsample(test_labels, settings.max_test, rng)
    train_indices, val_indices = stratified_split(train_labels[pool], settings.val_fraction, rng, num_classes)
    train_indices, val_indices = pool[train_indices], pool[val_indices]
    stats = normalisation(train_images[train_indices], settings.normalize)
    splits = {
        "train": prepared.Split(normalise(train_images[train_indices], stats), train_labels[train_indices]),
        "val": prepared.Split(normalise(train_images[val_indices], stats), train_labels[val_indices]),
        "test": prepared.Split(normalise(test_images[test_keep], stats), test_labels[test_keep]),
    }
    return splits, stats


def read_raw(folder: Path, dataset: Dataset) -> dict[str, np.ndarray]:
    """Read and validate the four IDX files of ``dataset`` from ``folder``."""
    arrays = {}
    for split in ("train", "test"):
        images_file, labels_file = dataset.file(f"{split}_images"), dataset.file(f"{split}_labels")
        contents = []
        for remote in (images_file, labels_file):
            path = folder / remote.local_name
            try:
                contents.append(path.read_bytes())
            except FileNotFoundError:
                raise StageError(f"{path}: missing; run the download stage first (dvc repro download)") from None
        images, labels = parse_images_and_labels(
            contents[0], contents[1], str(folder / images_file.local_name), str(folder / labels_file.local_name),
            num_classes=len(dataset.class_names))
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    return arrays


def main(argv: list[str] | None = None) -> None:
    cli.parser("stages.preprocess", __doc__).parse_args(argv)
    params = load_params()
    dataset = resolve_dataset(params.data)
    started = time.perf_counter()
    raw = read_raw(RAW_DIR, dataset)
    splits, stats = prepare(raw["train_images"], raw["train_labels"], raw["test_images"], raw["test_labels"],
                            params.preprocess, params.seed, len(dataset.class_names))
    height, width = raw["train_images"].shape[1:]
    meta = prepared.build_meta(
        dataset=dataset.name, class_names=list(dataset.class_names), image_shape=(height, width, 1),
        normalize=stats, splits=splits, sources={remote.local_name: remote.sha256 for remote in dataset.files},
        seed=params.seed, val_fraction=params.preprocess.val_fraction)
    prepared.save_prepared(PREPARED_DIR, splits, meta)
    counts = ", ".join(f"{name} {split.labels.shape[0]}" for name, split in splits.items())
    log.info("wrote %s: %s images of %dx%d, %s normalisation, in %.2f s", PREPARED_DIR, counts, height, width,
             stats["method"], time.perf_counter() - started)


if __name__ == "__main__":
    run_stage(lambda: main(sys.argv[1:]), "preprocess")
