"""stages/common/atomic.py: readers only ever see complete outputs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from stages.common import atomic


class Boom(Exception):
    pass


def listing(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_atomic_path_replaces_on_success(tmp_path):
    final = tmp_path / "metrics.json"
    final.write_text("old")

    with atomic.atomic_path(final) as temporary:
        assert temporary.parent == tmp_path and temporary != final
        temporary.write_text("new")
        assert final.read_text() == "old"  # readers see the old content until the end

    assert final.read_text() == "new"
    assert listing(tmp_path) == ["metrics.json"]
    assert final.stat().st_mode & 0o777 == 0o666 & ~current_umask()


def test_atomic_path_failure_keeps_the_previous_content(tmp_path):
    final = tmp_path / "metrics.json"
    final.write_text("old")

    with pytest.raises(Boom), atomic.atomic_path(final) as temporary:
        temporary.write_text("half-writ")
        raise Boom

    assert final.read_text() == "old"
    assert listing(tmp_path) == ["metrics.json"]


def test_atomic_path_failure_creates_nothing(tmp_path):
    with pytest.raises(Boom), atomic.atomic_path(tmp_path / "sub" / "model.keras") as temporary:
        temporary.write_bytes(b"partial")
        raise Boom

    assert listing(tmp_path / "sub") == []


def test_atomic_helpers_write_their_formats(tmp_path):
    atomic.write_json(tmp_path / "a.json", {"accuracy": 0.99})
    atomic.write_text(tmp_path / "b.txt", "ünïcode")
    atomic.write_npy(tmp_path / "c.npy", np.arange(6, dtype=np.float32).reshape(2, 3).T)

    assert (tmp_path / "a.json").read_text() == '{\n  "accuracy": 0.99\n}\n'
    assert (tmp_path / "b.txt").read_bytes() == "ünïcode".encode()
    np.testing.assert_array_equal(np.load(tmp_path / "c.npy"), np.arange(6, dtype=np.float32).reshape(2, 3).T)
    assert listing(tmp_path) == ["a.json", "b.txt", "c.npy"]


def test_write_npy_failure_keeps_the_previous_file(tmp_path):
    final = tmp_path / "c.npy"
    np.save(final, np.arange(3))

    with pytest.raises(ValueError):
        atomic.write_npy(final, np.array([{"not": "allowed"}], dtype=object))  # pickling is refused

    np.testing.assert_array_equal(np.load(final), np.arange(3))
    assert listing(tmp_path) == ["c.npy"]


def test_atomic_directory_replaces_on_success(tmp_path):
    final = tmp_path / "prepared"
    final.mkdir()
    (final / "old.npy").write_text("old")

    with atomic.atomic_directory(final) as temporary:
        assert listing(temporary) == []
        (temporary / "new.npy").write_text("new")
        assert listing(final) == ["old.npy"]

    assert listing(final) == ["new.npy"]
    assert listing(tmp_path) == ["prepared"]  # no temporary or .old folder left
    assert final.stat().st_mode & 0o777 == 0o777 & ~current_umask()


def test_atomic_directory_failure_keeps_the_previous_content(tmp_path):
    final = tmp_path / "prepared"
    final.mkdir()
    (final / "meta.json").write_text("previous")

    with pytest.raises(Boom), atomic.atomic_directory(final) as temporary:
        (temporary / "meta.json").write_text("partial")
        raise Boom

    assert listing(final) == ["meta.json"]
    assert (final / "meta.json").read_text() == "previous"
    assert listing(tmp_path) == ["prepared"]


def test_atomic_directory_failure_creates_nothing(tmp_path):
    with pytest.raises(Boom), atomic.atomic_directory(tmp_path / "prepared") as temporary:
        (temporary / "train_images.npy").write_bytes(b"partial")
        raise Boom

    assert listing(tmp_path) == []


def test_atomic_directory_replaces_a_file_in_the_way(tmp_path):
    final = tmp_path / "prepared"
    final.write_text("a file, not a folder")

    with atomic.atomic_directory(final) as temporary:
        (temporary / "meta.json").write_text("{}")

    assert listing(final) == ["meta.json"]
    assert listing(tmp_path) == ["prepared"]
