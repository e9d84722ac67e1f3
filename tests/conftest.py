"""Shared fixtures: a generated dataset and a loopback HTTP mirror serving it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import SHARED_DATASETS, MirrorServer, make_dataset


@dataclass(frozen=True)
class GeneratedDataset:
    folder: Path  # laid out like a mirror: the four .gz files
    custom: dict  # the `data.custom` params describing it (names, sha256, class names)


@pytest.fixture
def generated(tmp_path) -> GeneratedDataset:
    folder = tmp_path / "mirror"
    return GeneratedDataset(folder, make_dataset(folder))


@pytest.fixture
def mirror(generated):
    """A real HTTP server on 127.0.0.1 serving the generated dataset (faults settable per file)."""
    with MirrorServer(generated.folder) as server:
        yield server


def shared_dataset(name: str):
    folder = SHARED_DATASETS / name
    if not folder.is_dir():
        pytest.skip(f"real dataset not found at {folder} (it ships with the project's CI, not with a clone)")
    return folder
