"""Write files and folders so that readers only ever see complete outputs.

Everything is written under a temporary name in the destination folder (same file system) and
renamed into place only when complete, so an interrupted or failing stage never leaves a
half-written file at the final path, and the previous good output survives until the new one
is ready.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

_UMASK = os.umask(0)
os.umask(_UMASK)


def publishable(path: Path, directory: bool = False) -> Path:
    """Give a mkstemp/mkdtemp path (created private, 0600/0700) the usual umask permissions."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_UMASK)
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success only."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(handle)
    temporary = publishable(Path(temporary_name))
    try:
        yield temporary
        os.replace(temporary, final)
    finally:
        temporary.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], payload: Any) -> None:
    write_text(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def write_npy(path: str | os.PathLike[str], array: np.ndarray) -> None:
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        np.save(handle, np.ascontiguousarray(array), allow_pickle=False)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary folder that replaces ``path`` as a whole on success only."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = publishable(Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)),
                            directory=True)
    try:
        yield temporary
        replace_directory(temporary, final)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def replace_directory(source: Path, final: Path) -> None:
    """Swap ``source`` into ``final``; the old folder is removed only after the swap."""
    if final.exists() and not final.is_dir():
        final.unlink()
    if not final.exists():
        os.replace(source, final)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
    try:
        os.replace(final, old / "content")
    except BaseException:
        shutil.rmtree(old, ignore_errors=True)
        raise
    try:
        os.replace(source, final)
    except BaseException:
        os.replace(old / "content", final)  # should this fail too, the previous folder stays in ``old``
        shutil.rmtree(old, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
