"""Write files and folders so that readers only ever see complete outputs.

Everything is written under a temporary name in the destination folder (same file system) and
renamed into place only when complete, so an interrupted or failing stage never leaves a
half-written file at the final path, and the previous good output survives until the new one
is ready.

The temporaries of an output ``<name>`` are ``.<name>.<random>.tmp`` (the new file or folder)
and ``.<name>.<random>.old`` (the previous folder, set aside during a swap), with mkstemp's and
mkdtemp's 8-character random part. Each is locked (``flock``) by the process that created it for
as long as it exists. The lock dies with the process, however it ends, so the temporaries of a
killed run (SIGKILL, power loss) are found and removed at the next write of the same output,
while a write of it running concurrently keeps its own (as ``stages/download.py`` does for its
``.part`` files). A swap killed after setting the previous folder aside and before moving the new
one in leaves no folder at the final path: the next write puts the previous one back first.

Before renaming anything into place, a write checks that the stage's params and code did not
change since it started (``watch.check_inputs``): an output is never published for inputs it was
not made from.

The temporaries of a killed stage that DVC then restores from its run cache, without running the
stage, would stay forever: ``sweep_tree`` removes every unlocked temporary under a folder, and the
``validate`` stage, which runs first on every ``dvc repro``, calls it on the pipeline's outputs.

A write that fails for want of room or rights (full disk, quota, read-only file system, a folder
the user cannot write to) raises one ``StageError`` naming the output and the reason (a file
written inside an ``atomic_directory`` is named inside the final folder, never the temporary);
its temporary is removed and the previous output is left as it was.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from stages.common.failures import PERMISSION_FAILURES, WRITE_FAILURES, StageError
from stages.common.watch import check_inputs

_UMASK = os.umask(0)
os.umask(_UMASK)
TEMPORARY_SUFFIX, ASIDE_SUFFIX = ".tmp", ".old"
_RANDOM_PART = r"[a-z0-9_]{8}"  # tempfile's names: 8 characters from its alphabet

# numpy's ndarray.tofile (np.save) on a short write, without an errno
SHORT_WRITE = re.compile(r"(\d+) requested and (\d+) written")

log = logging.getLogger("atomic")


def publishable(path: Path, directory: bool = False) -> Path:
    """Give a mkstemp/mkdtemp path (created private, 0600/0700) the usual umask permissions."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_UMASK)
    return path


def _locked(create: Callable[[], str]) -> tuple[int, Path]:
    """Create a temporary with ``create`` and lock it for as long as this process holds the
    returned descriptor; retry if a sweep removed it between its creation and the lock."""
    while True:
        name = create()
        try:
            descriptor = os.open(name, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            continue
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        try:
            if os.stat(name, follow_symlinks=False).st_ino == os.fstat(descriptor).st_ino:
                return descriptor, Path(name)
        except FileNotFoundError:
            pass
        os.close(descriptor)


def _new_file(final: Path) -> str:
    handle, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=TEMPORARY_SUFFIX, dir=final.parent)
    os.close(handle)
    return name


def _new_folder(final: Path, suffix: str) -> str:
    return tempfile.mkdtemp(prefix=f".{final.name}.", suffix=suffix, dir=final.parent)


def is_own_temporary(name: str, final: Path) -> bool:
    """Whether ``name`` is one of the temporaries this module creates for ``final``."""
    return re.fullmatch(re.escape(f".{final.name}.") + _RANDOM_PART + r"\.(tmp|old)", name) is not None


def sweep_stale_temporaries(final: Path) -> list[str]:
    """Remove the temporaries of ``final`` that no live process holds locked; return their names.

    An aside folder found while ``final`` is missing holds the previous output (its swap was
    killed midway): it is moved back to ``final`` first.
    """
    try:
        names = sorted(entry.name for entry in os.scandir(final.parent) if is_own_temporary(entry.name, final))
    except FileNotFoundError:
        return []
    removed = []
    for name in names:
        path = final.parent / name
        try:
            descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue  # renamed into place or removed meanwhile, or a symlink: not ours
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.stat(path, follow_symlinks=False).st_ino != os.fstat(descriptor).st_ino:
                continue
            if path.is_dir():
                if name.endswith(ASIDE_SUFFIX) and (path / "content").is_dir() and not os.path.lexists(final):
                    os.replace(path / "content", final)
                    log.info("%s: put the previous folder back from %s, left by an interrupted swap", final, name)
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink()
            removed.append(name)
        except OSError:
            pass  # locked: a write in progress
        finally:
            os.close(descriptor)
    for name in removed:
        log.info("removed %s, left behind by an interrupted run", final.parent / name)
    return removed


TEMPORARY_NAME = re.compile(r"\.(?P<final>.+)\." + _RANDOM_PART + r"\.(?:tmp|old)")


def sweep_tree(root: Path) -> list[Path]:
    """Remove the stale temporaries (see ``sweep_stale_temporaries``) of every output under
    ``root``; return the paths removed. A temporary is not searched inside."""
    removed: list[Path] = []
    for folder, subfolders, names in os.walk(root):
        finals = {match["final"] for name in [*subfolders, *names] if (match := TEMPORARY_NAME.fullmatch(name))}
        subfolders[:] = [name for name in subfolders if not TEMPORARY_NAME.fullmatch(name)]
        for final in sorted(finals):
            removed.extend(Path(folder) / name for name in sweep_stale_temporaries(Path(folder) / final))
    return removed


def write_failure(error: OSError, final: Path) -> str | None:
    """Why writing ``final`` failed, if it is the room or the rights (``None`` for anything else).
    Failures in ``WRITE_FAILURES`` can only come from a write, whatever code runs inside it.
    A permission error counts only when it names ``final`` or one of its temporaries: code inside
    a write may read other files, and a refusal to read them is not this write's failure."""
    if error.errno in WRITE_FAILURES:
        return WRITE_FAILURES[error.errno]
    if error.errno in PERMISSION_FAILURES and error.filename is not None:
        name = Path(os.fsdecode(error.filename))
        ours = name == final or any(path.parent == final.parent and is_own_temporary(path.name, final)
                                    for path in (name, *name.parents))
        return PERMISSION_FAILURES[error.errno] if ours else None
    short = SHORT_WRITE.fullmatch(str(error)) if error.errno is None else None
    if short:
        return f"only {short[2]} of {short[1]} items written (is the disk full?)"
    return None


# The temporary folders of the ``atomic_directory`` writes in progress -> the folder each becomes:
# a file written inside one (models/torch/.1.<random>.tmp/model.pt) is named where it is going
# (models/torch/1/model.pt), the output the user knows.
_FOLDERS_IN_PROGRESS: dict[Path, Path] = {}


def output_name(path: Path) -> Path:
    """``path`` as it will be named once its folder's write completes (itself if none is in progress)."""
    for temporary, final in _FOLDERS_IN_PROGRESS.items():
        if path == temporary or temporary in path.parents:
            return output_name(final / path.relative_to(temporary))
    return path


@contextlib.contextmanager
def writing(final: Path) -> Iterator[None]:
    """Turn a write of ``final`` that failed for want of room or rights into one ``StageError``."""
    try:
        yield
    except OSError as error:
        reason = write_failure(error, final)
        if reason is None:
            raise
        raise StageError(f"{output_name(final)}: cannot write: {reason}; nothing half-written was left") from None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success only."""
    final = Path(path)
    with writing(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale_temporaries(final)
        lock, temporary = _locked(lambda: _new_file(final))
        try:
            publishable(temporary)
            yield temporary
            check_inputs()  # params or code changed meanwhile: this output is not what they say
            os.replace(temporary, final)
        finally:
            temporary.unlink(missing_ok=True)
            os.close(lock)


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
    with writing(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale_temporaries(final)
        lock, temporary = _locked(lambda: _new_folder(final, TEMPORARY_SUFFIX))
        _FOLDERS_IN_PROGRESS[temporary] = final
        try:
            publishable(temporary, directory=True)
            yield temporary
            check_inputs()
            replace_directory(temporary, final)
        finally:
            del _FOLDERS_IN_PROGRESS[temporary]
            shutil.rmtree(temporary, ignore_errors=True)
            os.close(lock)


def replace_directory(source: Path, final: Path) -> None:
    """Swap ``source`` into ``final``; the old folder is removed only after the swap."""
    if final.exists() and not final.is_dir():
        final.unlink()
    if not final.exists():
        os.replace(source, final)
        return
    lock, old = _locked(lambda: _new_folder(final, ASIDE_SUFFIX))
    try:
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
    finally:
        os.close(lock)
