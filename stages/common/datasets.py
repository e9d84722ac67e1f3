"""The datasets the download stage knows by name, and the custom one described in params.

A dataset is four gzip-compressed IDX files. Each is identified by the sha256 of its
*decompressed* bytes: mirrors re-compress files (different ``.gz`` bytes, same content), so the
content is what identifies the data, and a change of mirror never invalidates cached outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

from stages.common.params import DataParams

SPLIT_FILES = ("train_images", "train_labels", "test_images", "test_labels")


@dataclass(frozen=True)
class RemoteFile:
    role: str  # one of SPLIT_FILES
    name: str  # file name on the mirror, e.g. train-images-idx3-ubyte.gz
    sha256: str  # of the decompressed content

    @property
    def local_name(self) -> str:
        """Name under data/raw/: the decompressed file, without ``.gz``."""
        return self.name[: -len(".gz")] if self.name.endswith(".gz") else self.name


@dataclass(frozen=True)
class Dataset:
    name: str
    files: tuple[RemoteFile, ...]
    class_names: tuple[str, ...]
    public_mirrors: tuple[str, ...]
    # (height, width, channels) of every image, where the checksums fix it; None for a custom
    # dataset, whose files alone say (stages/validate.py checks the model against a known one)
    image_shape: tuple[int, int, int] | None = None

    def file(self, role: str) -> RemoteFile:
        return next(item for item in self.files if item.role == role)


_MNIST_NAMES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}

KNOWN_DATASETS = {
    "mnist": Dataset(
        name="mnist",
        files=tuple(RemoteFile(role, _MNIST_NAMES[role], sha256) for role, sha256 in (
            ("train_images", "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
            ("train_labels", "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
            ("test_images", "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
            ("test_labels", "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
        )),
        class_names=tuple(str(digit) for digit in range(10)),
        public_mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        image_shape=(28, 28, 1),
    ),
    "fashion-mnist": Dataset(
        name="fashion-mnist",
        files=tuple(RemoteFile(role, _MNIST_NAMES[role], sha256) for role, sha256 in (
            ("train_images", "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
            ("train_labels", "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
            ("test_images", "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
            ("test_labels", "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
        )),
        class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                     "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        public_mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        image_shape=(28, 28, 1),
    ),
}


def resolve_dataset(data: DataParams) -> Dataset:
    """The dataset that ``data`` names, built from ``data.custom`` for a custom one."""
    if data.dataset != "custom":
        return KNOWN_DATASETS[data.dataset]
    custom = data.custom
    assert custom is not None  # guaranteed by params validation
    return Dataset(
        name="custom",
        files=tuple(RemoteFile(role, getattr(custom.files, role).name, getattr(custom.files, role).sha256)
                    for role in SPLIT_FILES),
        class_names=custom.class_names,
        public_mirrors=(),
    )


def mirrors_for(data: DataParams) -> tuple[str, ...]:
    """Mirrors to try, in order: the configured ones, else the dataset's public mirrors."""
    return tuple(data.mirrors) or resolve_dataset(data).public_mirrors
