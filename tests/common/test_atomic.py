"""stages/common/atomic.py: readers only ever see complete outputs."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from stages.common import atomic
from stages.common.errors import StageError
from tests.support import PROJECT_ROOT


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

# --------------------------------------------------------------------------------------------
# Injected faults: the rollback paths of the folder swap and the file rename
# --------------------------------------------------------------------------------------------
def failing_replace(monkeypatch, fail_when):
    """Make ``os.replace`` (as atomic.py calls it) raise OSError for the calls ``fail_when`` picks."""
    real_replace = os.replace
    calls: list[tuple[Path, Path]] = []

    def replace(source, destination):
        calls.append((Path(source), Path(destination)))
        if fail_when(Path(source), Path(destination), len(calls)):
            raise OSError(errno.EIO, "Input/output error (injected)")  # full disks: below
        return real_replace(source, destination)

    monkeypatch.setattr(atomic.os, "replace", replace)
    return calls


def test_folder_swap_that_fails_midway_puts_the_previous_folder_back(tmp_path, monkeypatch):
    final = tmp_path / "prepared"
    final.mkdir()
    (final / "meta.json").write_text("previous")
    # The old folder moves aside first, then the new one fails to move in: the old must come back.
    calls = failing_replace(monkeypatch, lambda source, destination, count: destination == final
                            and source.name.endswith(".tmp"))

    with pytest.raises(OSError, match="injected"), atomic.atomic_directory(final) as temporary:
        (temporary / "meta.json").write_text("new")

    assert listing(final) == ["meta.json"] and (final / "meta.json").read_text() == "previous"
    assert listing(tmp_path) == ["prepared"]  # no temporary and no .old folder left behind
    assert [destination.name for _, destination in calls] == ["content", "prepared", "prepared"]  # aside, in, back


def test_folder_swap_into_a_new_place_that_fails_leaves_nothing(tmp_path, monkeypatch):
    failing_replace(monkeypatch, lambda source, destination, count: True)

    with pytest.raises(OSError, match="injected"), atomic.atomic_directory(tmp_path / "prepared") as temporary:
        (temporary / "meta.json").write_text("new")

    assert listing(tmp_path) == []


def test_folder_swap_whose_first_move_fails_keeps_the_previous_folder_and_leaves_nothing(tmp_path, monkeypatch):
    final = tmp_path / "prepared"
    final.mkdir()
    (final / "meta.json").write_text("previous")
    failing_replace(monkeypatch, lambda source, destination, count: source == final)

    with pytest.raises(OSError, match="injected"), atomic.atomic_directory(final) as temporary:
        (temporary / "meta.json").write_text("new")

    assert (final / "meta.json").read_text() == "previous"
    assert listing(tmp_path) == ["prepared"]


def test_folder_swap_interrupted_by_ctrl_c_midway_puts_the_previous_folder_back(tmp_path, monkeypatch):
    final = tmp_path / "models"
    final.mkdir()
    (final / "model.pt").write_bytes(b"good")
    real_replace = os.replace

    def replace(source, destination):
        if Path(destination) == final and Path(source).name.endswith(".tmp"):
            raise KeyboardInterrupt
        return real_replace(source, destination)

    monkeypatch.setattr(atomic.os, "replace", replace)

    with pytest.raises(KeyboardInterrupt), atomic.atomic_directory(final) as temporary:
        (temporary / "model.pt").write_bytes(b"new")

    assert (final / "model.pt").read_bytes() == b"good"
    assert listing(tmp_path) == ["models"]


def test_file_rename_that_fails_keeps_the_previous_file_and_removes_the_temporary(tmp_path, monkeypatch):
    final = tmp_path / "metrics.json"
    final.write_text("previous")
    failing_replace(monkeypatch, lambda source, destination, count: True)

    with pytest.raises(OSError, match="injected"):
        atomic.write_text(final, "new")

    assert final.read_text() == "previous"
    assert listing(tmp_path) == ["metrics.json"]


def test_folder_swap_moves_the_previous_folder_aside_before_the_new_one_in(tmp_path, monkeypatch):
    """The order that makes the swap safe: aside, then in, then the old one deleted."""
    final = tmp_path / "prepared"
    final.mkdir()
    (final / "old.npy").write_text("old")
    calls = failing_replace(monkeypatch, lambda source, destination, count: False)

    with atomic.atomic_directory(final) as temporary:
        (temporary / "new.npy").write_text("new")

    assert [(source == final, destination == final) for source, destination in calls] == [(True, False),
                                                                                          (False, True)]
    aside = calls[0][1].parent  # hidden and recognisable while it exists: .prepared.<random>.old
    assert aside.parent == tmp_path and aside.name.startswith(".prepared.") and aside.name.endswith(".old")
    assert listing(final) == ["new.npy"] and listing(tmp_path) == ["prepared"]


def test_folder_swap_succeeds_when_the_previous_copy_cannot_be_deleted(tmp_path, monkeypatch):
    final = tmp_path / "prepared"
    final.mkdir()
    (final / "old.npy").write_text("old")
    real_rmtree = atomic.shutil.rmtree

    def rmtree(path, ignore_errors=False, **options):
        if str(path).endswith(".old"):  # injected: the previous copy is undeletable
            if ignore_errors:
                return None
            raise PermissionError(13, "Permission denied (injected)", str(path))
        return real_rmtree(path, ignore_errors=ignore_errors, **options)

    monkeypatch.setattr(atomic.shutil, "rmtree", rmtree)

    with atomic.atomic_directory(final) as temporary:
        (temporary / "new.npy").write_text("new")

    assert listing(final) == ["new.npy"]


def test_json_keeps_the_writers_key_order(tmp_path):
    atomic.write_json(tmp_path / "metrics.json", {"test_accuracy": 0.99, "test_loss": 0.02, "parameters": 3})

    assert list(json.loads((tmp_path / "metrics.json").read_text())) == ["test_accuracy", "test_loss", "parameters"]


def undeletable_aside(monkeypatch) -> None:
    """Inject: the folder set aside (``.<name>.<random>.old``) cannot be deleted."""
    real_rmtree = atomic.shutil.rmtree

    def rmtree(path, ignore_errors=False, **options):
        if str(path).endswith(".old"):
            if ignore_errors:
                return None
            raise PermissionError(13, "Permission denied (injected)", str(path))
        return real_rmtree(path, ignore_errors=ignore_errors, **options)

    monkeypatch.setattr(atomic.shutil, "rmtree", rmtree)


@pytest.mark.parametrize("failing", ["aside", "in"])
def test_folder_swap_failure_reports_the_move_that_failed_even_if_clean_up_fails(tmp_path, monkeypatch, failing):
    final = tmp_path / "prepared"
    final.mkdir()
    (final / "meta.json").write_text("previous")
    undeletable_aside(monkeypatch)
    if failing == "aside":  # moving the previous folder aside fails
        failing_replace(monkeypatch, lambda source, destination, count: source == final)
    else:  # moving the new folder in fails
        failing_replace(monkeypatch, lambda source, destination, count: destination == final
                        and source.name.endswith(".tmp"))

    with pytest.raises(OSError, match="Input/output error"), atomic.atomic_directory(final) as temporary:
        (temporary / "meta.json").write_text("new")

    assert (final / "meta.json").read_text() == "previous"


# --------------------------------------------------------------------------------------------
# Temporaries left by a killed run (SIGKILL, power loss): removed at the next write of the same output
# --------------------------------------------------------------------------------------------
def stale_file(folder: Path, name: str, suffix: str = ".tmp") -> Path:
    """A temporary exactly as mkstemp names them for ``name``, as a killed writer leaves it."""
    handle, path = tempfile.mkstemp(prefix=f".{name}.", suffix=suffix, dir=folder)
    os.write(handle, b"half-written")
    os.close(handle)
    return Path(path)


def stale_folder(folder: Path, name: str, suffix: str = ".tmp") -> Path:
    path = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=suffix, dir=folder))
    (path / "train_images.npy").write_bytes(b"half-written")
    return path


def test_a_file_write_removes_its_own_stale_temporaries_and_nothing_else(tmp_path):
    stale_file(tmp_path, "metrics.json")
    stale_file(tmp_path, "metrics.json")
    others = [tmp_path / ".metrics.json.user-notes.tmp",  # not a name mkstemp gives
              tmp_path / ".metrics.json.abcdefghi.tmp",  # one character too many for mkstemp's random part
              tmp_path / ".other.json.abcdefgh.tmp",  # another output's temporary
              tmp_path / "metrics.json.abcdefgh.tmp",  # not hidden
              tmp_path / ".metrics.json.abcdefgh.part"]  # another suffix
    for path in others:
        path.write_text("keep me")

    atomic.write_text(tmp_path / "metrics.json", "new")

    assert (tmp_path / "metrics.json").read_text() == "new"
    assert listing(tmp_path) == sorted(["metrics.json", *(path.name for path in others)])


def test_a_folder_write_removes_its_own_stale_temporary_and_aside_folders(tmp_path):
    final = tmp_path / "prepared"
    final.mkdir()
    (final / "meta.json").write_text("previous")
    stale_folder(tmp_path, "prepared")
    stale_folder(tmp_path, "prepared", ".old")
    keep = stale_folder(tmp_path, "prepared-2")

    with atomic.atomic_directory(final) as temporary:
        (temporary / "meta.json").write_text("new")

    assert (final / "meta.json").read_text() == "new"
    assert listing(tmp_path) == sorted(["prepared", keep.name])


def test_a_stale_temporary_is_removed_even_when_the_new_write_fails(tmp_path):
    final = tmp_path / "metrics.json"
    final.write_text("previous")
    stale_file(tmp_path, "metrics.json")

    with pytest.raises(Boom), atomic.atomic_path(final):
        raise Boom

    assert listing(tmp_path) == ["metrics.json"] and final.read_text() == "previous"


def test_a_write_in_progress_keeps_its_temporary_when_another_writes_the_same_output(tmp_path):
    final = tmp_path / "metrics.json"

    with atomic.atomic_path(final) as first:
        first.write_text("first")
        atomic.write_text(final, "second")  # sweeps stale temporaries: ``first`` is live (locked), not stale
        assert first.read_text() == "first"

    assert final.read_text() == "first"
    assert listing(tmp_path) == ["metrics.json"]


def test_a_folder_write_in_progress_keeps_its_temporary_when_another_writes_the_same_output(tmp_path):
    final = tmp_path / "prepared"

    with atomic.atomic_directory(final) as first:
        (first / "meta.json").write_text("first")
        with atomic.atomic_directory(final) as second:
            (second / "meta.json").write_text("second")
        assert listing(first) == ["meta.json"]

    assert (final / "meta.json").read_text() == "first"
    assert listing(tmp_path) == ["prepared"]


def test_a_symlink_named_like_a_temporary_is_left_alone(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "precious").write_text("keep")
    link = tmp_path / ".prepared.abcdefgh.tmp"
    link.symlink_to(target)

    with atomic.atomic_directory(tmp_path / "prepared") as temporary:
        (temporary / "meta.json").write_text("{}")

    assert link.is_symlink() and (target / "precious").read_text() == "keep"


KILLED_WRITER = """
import os, sys
from pathlib import Path
from stages.common import atomic

kind, final = sys.argv[1], Path(sys.argv[2])
real_replace = os.replace

def replace_then_hang(source, destination):  # the folder swap, stopped after the previous folder moved aside
    real_replace(source, destination)
    if kind == "aside" and Path(destination).name == "content":
        print("ready", flush=True)
        sys.stdin.read()

atomic.os.replace = replace_then_hang
if kind == "file":
    with atomic.atomic_path(final) as temporary:
        temporary.write_text("half-writ")
        print("ready", flush=True)
        sys.stdin.read()  # held here until killed
else:
    with atomic.atomic_directory(final) as temporary:
        (temporary / "meta.json").write_text("half-writ")
        if kind == "folder":
            print("ready", flush=True)
            sys.stdin.read()
"""


def kill_writer_midway(kind: str, final: Path) -> None:
    """Run a writer of ``final`` in a child process and SIGKILL it once it is at the kill point."""
    child = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, kind, str(final)], cwd=PROJECT_ROOT,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize("kind", ["file", "folder", "aside"])
def test_a_writer_killed_midway_leaves_temporaries_that_the_next_write_removes(tmp_path, kind):
    final = tmp_path / ("metrics.json" if kind == "file" else "prepared")
    if kind == "file":
        final.write_text("previous")
    else:
        final.mkdir()
        (final / "meta.json").write_text("previous")

    kill_writer_midway(kind, final)

    assert any(name.startswith(f".{final.name}.") for name in listing(tmp_path))  # the kill left its temporaries
    if kind == "file":
        atomic.write_text(final, "new")
        assert final.read_text() == "new"
    else:
        with atomic.atomic_directory(final) as temporary:
            (temporary / "meta.json").write_text("new")
        assert (final / "meta.json").read_text() == "new"
    assert listing(tmp_path) == [final.name]


def test_a_swap_killed_after_moving_the_previous_folder_aside_gets_it_back_at_the_next_write(tmp_path):
    final = tmp_path / "prepared"
    final.mkdir()
    (final / "meta.json").write_text("previous")
    kill_writer_midway("aside", final)
    assert not final.exists()  # killed between the two moves: the previous folder is only aside

    with pytest.raises(Boom), atomic.atomic_directory(final):
        raise Boom  # the next write fails too: the previous folder must still be there afterwards

    assert (final / "meta.json").read_text() == "previous"
    assert listing(tmp_path) == ["prepared"]


# --------------------------------------------------------------------------------------------
# A full disk (or quota, or read-only file system): one StageError naming the output
# --------------------------------------------------------------------------------------------
def full_disk(*_arguments, **_options):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_file_written_inside_a_folder_write_is_named_in_the_final_folder(tmp_path, monkeypatch):
    final = tmp_path / "models" / "1"
    atomic.write_text(final / "kept.txt", "previous")
    monkeypatch.setattr(atomic.np, "save", full_disk)

    with pytest.raises(StageError) as caught, atomic.atomic_directory(final) as temporary:
        atomic.write_text(temporary / "run.json", "{}")
        atomic.write_npy(temporary / "weights.npy", np.arange(5))

    assert str(caught.value) == (f"{final / 'weights.npy'}: cannot write: no space left on device; nothing "
                                 "half-written was left")
    assert listing(final.parent) == ["1"] and listing(final) == ["kept.txt"]


def test_a_file_write_on_a_full_disk_names_the_output_and_keeps_the_previous_file(tmp_path, monkeypatch):
    final = tmp_path / "c.npy"
    np.save(final, np.arange(3))
    monkeypatch.setattr(atomic.np, "save", full_disk)

    with pytest.raises(StageError) as caught:
        atomic.write_npy(final, np.arange(5))

    assert str(caught.value) == f"{final}: cannot write: no space left on device; nothing half-written was left"
    np.testing.assert_array_equal(np.load(final), np.arange(3))
    assert listing(tmp_path) == ["c.npy"]


@pytest.mark.parametrize(("code", "reason"), [(errno.ENOSPC, "no space left on device"),
                                              (errno.EDQUOT, "disk quota exceeded"),
                                              (errno.EROFS, "read-only file system")])
def test_a_folder_write_that_fails_for_lack_of_space_names_the_output(tmp_path, code, reason):
    final = tmp_path / "prepared"
    final.mkdir()
    (final / "meta.json").write_text("previous")

    with pytest.raises(StageError) as caught, atomic.atomic_directory(final) as temporary:
        (temporary / "train_images.npy").write_bytes(b"half")
        raise OSError(code, os.strerror(code))

    assert str(caught.value) == f"{final}: cannot write: {reason}; nothing half-written was left"
    assert listing(final) == ["meta.json"] and listing(tmp_path) == ["prepared"]


def test_numpys_short_write_is_reported_as_a_full_disk(tmp_path):
    refused = (r"c\.npy: cannot write: only 0 of 1000 items written \(is the disk full\?\); "
               "nothing half-written was left")
    with pytest.raises(StageError, match=refused), atomic.atomic_path(tmp_path / "c.npy"):
        raise OSError("1000 requested and 0 written")  # numpy's ndarray.tofile on a short write

    assert listing(tmp_path) == []


def test_a_folder_that_cannot_be_written_to_names_the_output(tmp_path, monkeypatch):
    def refused(*_arguments, **_options):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(tmp_path / ".metrics.json.abcdefgh.tmp"))

    monkeypatch.setattr(atomic.tempfile, "mkstemp", refused)

    with pytest.raises(StageError) as caught:
        atomic.write_text(tmp_path / "metrics.json", "new")

    assert str(caught.value) == (f"{tmp_path / 'metrics.json'}: cannot write: permission denied; "
                                 "nothing half-written was left")


def test_other_errors_inside_a_write_pass_through(tmp_path):
    with pytest.raises(PermissionError), atomic.atomic_path(tmp_path / "c.npy"):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/etc/some-input-the-writer-read")
