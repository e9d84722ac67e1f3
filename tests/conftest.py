"""Shared fixtures: a generated dataset and a loopback HTTP mirror serving it; the real datasets.

Tests that need ``../shared/datasets`` skip on a clone without it, but fail in CI (``CI=true``),
where the datasets ship: a layout change must not silently drop the real-data checks."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import (
    EXTRA_FRAMEWORKS,
    SELECTED_FRAMEWORKS,
    SHARED_DATASETS,
    MirrorServer,
    make_dataset,
    register_extra_frameworks,
)


def pytest_addoption(parser):
    parser.addoption("--extra-framework", action="append", default=[], metavar="NAME=MODULE:LABEL",
                     help="register one more framework for this run, e.g. numpy=tests.numpy_backend:NumPy: the "
                          "suites parametrised over the registry then include it (tests/e2e/test_third_backend.py)")
    parser.addoption("--framework", action="append", default=[], metavar="NAME",
                     help="run the suites parametrised over the registry for these registered frameworks only "
                          "(the equivalence and parity suites, the latter against the registry's first), and "
                          "tests/trainer_contract.py, given as a path, for this one")


def pytest_configure(config):
    """Before any test module is imported (they read the registry at import)."""
    extra = config.getoption("--extra-framework")
    if extra:
        os.environ[EXTRA_FRAMEWORKS] = ";".join(extra)  # the worker subprocesses register them too
    register_extra_frameworks()
    os.environ[SELECTED_FRAMEWORKS] = ";".join(config.getoption("--framework"))


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


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def shared_dataset(name: str, root: Path = SHARED_DATASETS):
    folder = root / name
    if not folder.is_dir():
        if in_ci():
            pytest.fail(f"real dataset not found at {folder}, and CI=true: the real-data tests must run in CI "
                        "(has the shared/datasets layout changed?)", pytrace=False)
        pytest.skip(f"real dataset not found at {folder} (it ships with the project's CI, not with a clone)")
    return folder
