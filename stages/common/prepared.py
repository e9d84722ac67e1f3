"""The one numpy format that preprocess writes and every later stage reads.

``data/prepared/`` holds, for each split in ``train``, ``val``, ``test``:

- ``<split>_images.npy``: float32, shape (N, height, width, 1), channels-last (NHWC),
  C-contiguous, already normalised as ``meta.json`` says. Plain ``.npy`` (no pickle), so it
  can be memory-mapped with ``np.load(path, mmap_mode="r")`` and batches sliced without copies.
- ``<split>_labels.npy``: uint8, shape (N,), class indices into ``class_names``.

and ``meta.json`` (see ``build_meta``): format version, dataset name, class names, image shape,
layout, dtypes, the normalisation (method, mean, std), per-split counts and label counts, the
sha256 of the source IDX files, the seed and validation fraction.

Channels-last is Keras' native layout on the CPU; the PyTorch trainer permutes each batch to
channels-first, which costs microseconds per batch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stages.common import atomic, npfile
from stages.common.failures import StageError

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
IMAGE_DTYPE = np.float32
LABEL_DTYPE = np.uint8
META_FILE = "meta.json"


@dataclass(frozen=True)
class Split:
    images: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class PreparedData:
    splits: dict[str, Split]
    meta: dict[str, Any]

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    @property
    def num_classes(self) -> int:
        return len(self.meta["class_names"])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        height, width, channels = self.meta["image_shape"]
        return (height, width, channels)


def build_meta(*, dataset: str, class_names: list[str], image_shape: tuple[int, int, int],
               normalize: dict[str, Any], splits: dict[str, Split], sources: dict[str, str],
               seed: int, val_fraction: float) -> dict[str, Any]:
    num_classes = len(class_names)
    return {
        "format_version": FORMAT_VERSION,
        "dataset": dataset,
        "class_names": list(class_names),
        "image_shape": list(image_shape),
        "layout": "NHWC",
        "image_dtype": np.dtype(IMAGE_DTYPE).name,
        "label_dtype": np.dtype(LABEL_DTYPE).name,
        "normalize": normalize,
        "splits": {
            name: {
                "count": int(split.labels.shape[0]),
                "label_counts": np.bincount(split.labels, minlength=num_classes).astype(int).tolist(),
            }
            for name, split in splits.items()
        },
        "sources_sha256": sources,
        "seed": seed,
        "val_fraction": val_fraction,
    }


def save_prepared(folder: str | Path, splits: dict[str, Split], meta: dict[str, Any]) -> None:
    """Write all arrays and meta.json into a fresh folder that replaces ``folder`` at once."""
    with atomic.atomic_directory(folder) as temporary:
        for name, split in splits.items():
            with open(temporary / f"{name}_images.npy", "wb") as handle:
                np.save(handle, np.ascontiguousarray(split.images, dtype=IMAGE_DTYPE), allow_pickle=False)
            with open(temporary / f"{name}_labels.npy", "wb") as handle:
                np.save(handle, np.ascontiguousarray(split.labels, dtype=LABEL_DTYPE), allow_pickle=False)
        (temporary / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def load_meta(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / META_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StageError(f"{path}: missing; run the preprocess stage first (dvc repro preprocess)") from None
    except (OSError, ValueError) as error:
        raise StageError(f"{path}: not valid JSON ({error})") from None
    required = ("format_version", "class_names", "image_shape", "splits", "normalize")
    missing = [key for key in required if key not in meta] if isinstance(meta, dict) else list(required)
    if missing:
        raise StageError(f"{path}: missing keys {missing}; expected the prepared-data metadata")
    if meta["format_version"] != FORMAT_VERSION:
        raise StageError(f"{path}: format_version {meta['format_version']}; expected {FORMAT_VERSION} "
                         "(rerun preprocess)")
    return meta


def load_split(folder: str | Path, name: str, meta: dict[str, Any], mmap: bool = True) -> Split:
    """Load and validate one split against meta.json; errors name the offending file."""
    folder = Path(folder)
    height, width, channels = meta["image_shape"]
    count = meta["splits"].get(name, {}).get("count")
    arrays = {}
    for kind, dtype, shape in (("images", IMAGE_DTYPE, (count, height, width, channels)),
                               ("labels", LABEL_DTYPE, (count,))):
        path = folder / f"{name}_{kind}.npy"
        array = _load_npy(path, mmap)
        if array.dtype != dtype:
            raise StageError(f"{path}: dtype {array.dtype}; expected {np.dtype(dtype).name}")
        if tuple(array.shape) != tuple(shape):
            raise StageError(f"{path}: shape {tuple(array.shape)}; expected {tuple(shape)} from {META_FILE}")
        arrays[kind] = array
    labels = arrays["labels"]
    if labels.size and int(labels.max()) >= len(meta["class_names"]):
        raise StageError(f"{folder / f'{name}_labels.npy'}: label {int(labels.max())} outside the "
                         f"{len(meta['class_names'])} classes")
    return Split(images=arrays["images"], labels=labels)


def _load_npy(path: Path, mmap: bool) -> np.ndarray:
    """np.load without pickle, with errors that say what is wrong with the file (the magic bytes
    checked first: ``npfile.check``)."""
    try:
        npfile.check(path, "rerun the preprocess stage")
    except FileNotFoundError:
        raise StageError(f"{path}: missing; run the preprocess stage first (dvc repro preprocess)") from None
    except OSError as error:
        raise StageError(f"{path}: cannot read ({error.strerror})") from None
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as error:
        if "pickle" in str(error) or "Python objects" in str(error):  # without / with mmap
            raise StageError(f"{path}: holds Python objects (an object array), expected plain numbers; "
                             "rerun the preprocess stage") from None
        raise StageError(f"{path}: not a valid .npy file ({error})") from None
    except OSError as error:
        raise StageError(f"{path}: not a valid .npy file ({error})") from None


def load_prepared(folder: str | Path, splits: tuple[str, ...] = SPLITS, mmap: bool = True) -> PreparedData:
    meta = load_meta(folder)
    return PreparedData(splits={name: load_split(folder, name, meta, mmap) for name in splits}, meta=meta)
