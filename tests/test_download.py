"""Stage ``download`` against real mirrors: a loopback HTTP server with faults, local folders, file:// URLs.

Every failure test also checks the download folder afterwards: no final file unless the content
verified, and no temporary (``stages/common/atomic.py``'s ``.tmp``) left behind.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.parse
from pathlib import Path

import pytest

from stages import download
from stages.common import atomic, params
from stages.common.datasets import KNOWN_DATASETS, Dataset, resolve_dataset
from stages.common.errors import StageError, run_stage
from stages.download import FetchSettings, MirrorError
from tests.support import (
    NAMES,
    PROJECT_ROOT,
    WRONG_CONTENT,
    Fault,
    MirrorServer,
    custom_params,
    make_dataset,
    project_params,
    write_params,
)

FAST = FetchSettings(timeout_s=5.0, retries=2, retry_backoff_s=0.01)
STALLING = FetchSettings(timeout_s=0.3, retries=1, retry_backoff_s=0.01)  # the stalled server sleeps 2 s
LABELS = NAMES["train_labels"]

# fault kind -> (reason in the error message, transient: retried on the same mirror)
FAULTS = {
    "403": ("HTTP 403", False),
    "404": ("HTTP 404", False),
    "500": ("HTTP 500", True),
    "html": ("not a gzip file", False),
    "truncate": ("truncated body", True),
    "wrong": ("checksum mismatch", False),
    "stall": ("timed out", True),
}


def new_fault(kind: str) -> Fault:
    return Fault(kind, stall_s=2.0)


def settings_for(kind: str) -> FetchSettings:
    return STALLING if kind == "stall" else FAST


def dataset_of(custom: dict) -> Dataset:
    return resolve_dataset(params.validate(custom_params(custom, ["unused/"])).data)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def requests_for(server: MirrorServer, name: str) -> int:
    return sum(1 for path in server.requests if path.rsplit("/", 1)[-1] == name)


def assert_verified(folder: Path, dataset: Dataset) -> None:
    """The folder holds exactly the dataset's decompressed files, each with the right content."""
    assert sorted(path.name for path in folder.iterdir()) == sorted(remote.local_name for remote in dataset.files)
    for remote in dataset.files:
        assert sha256(folder / remote.local_name) == remote.sha256, remote.local_name


def temporaries(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.name.startswith(".") or path.suffix == ".tmp")


@pytest.fixture
def dataset(generated) -> Dataset:
    return dataset_of(generated.custom)


@pytest.fixture
def remote(dataset):
    return dataset.file("train_labels")


@pytest.fixture
def second(generated):
    """Another loopback server on the same files (a good mirror unless given faults)."""
    with MirrorServer(generated.folder) as server:
        yield server


@pytest.fixture
def folder(tmp_path) -> Path:
    path = tmp_path / "raw"
    path.mkdir()
    return path


# --------------------------------------------------------------------------------------------
# One fault per test: fallback to a good mirror, or one error listing every mirror
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(FAULTS))
def test_fault_falls_back_to_the_next_mirror(kind, mirror, second, remote, folder):
    mirror.faults[LABELS] = new_fault(kind)
    settings = settings_for(kind)

    how = download.download_file(remote, (mirror.url, second.url), folder, settings)

    assert how.startswith(f"from {second.url} ")
    assert sha256(folder / remote.local_name) == remote.sha256
    assert sorted(path.name for path in folder.iterdir()) == [remote.local_name]
    _, transient = FAULTS[kind]
    # Transient faults are retried on the same mirror first; permanent ones move on at once.
    assert requests_for(mirror, LABELS) == (settings.retries + 1 if transient else 1)
    assert requests_for(second, LABELS) == 1


@pytest.mark.parametrize("kind", list(FAULTS))
def test_fault_on_every_mirror_is_one_error_naming_each(kind, mirror, second, remote, folder):
    mirror.faults[LABELS] = new_fault(kind)
    second.faults[LABELS] = new_fault(kind)
    reason, _ = FAULTS[kind]

    with pytest.raises(StageError) as caught:
        download.download_file(remote, (mirror.url, second.url), folder, settings_for(kind))

    message = str(caught.value)
    assert message.startswith(f"could not download {LABELS} from any of 2 mirror(s): ")
    failures = message.split(": ", 1)[1].split("; ")
    assert len(failures) == 2
    for failure, server in zip(failures, (mirror, second)):
        assert failure.startswith(f"{server.url}{LABELS}: "), failure
        assert reason in failure, failure
    assert list(folder.iterdir()) == []  # neither the final file nor a temporary


def test_server_error_then_ok_is_retried_on_the_same_mirror(mirror, remote, folder):
    mirror.faults[LABELS] = Fault("500", times=1)

    how = download.download_file(remote, (mirror.url,), folder, FAST)

    assert how.startswith(f"from {mirror.url} ")
    assert requests_for(mirror, LABELS) == 2
    assert sha256(folder / remote.local_name) == remote.sha256
    assert temporaries(folder) == []


def test_truncated_body_then_ok_is_retried_on_the_same_mirror(mirror, remote, folder):
    mirror.faults[LABELS] = Fault("truncate", times=1)

    download.download_file(remote, (mirror.url,), folder, FAST)

    assert requests_for(mirror, LABELS) == 2
    assert sha256(folder / remote.local_name) == remote.sha256
    assert temporaries(folder) == []


def test_retries_back_off_exponentially(mirror, remote, folder):
    mirror.faults[LABELS] = Fault("500", times=3)
    sleeps: list[float] = []

    download.fetch_from_mirror(mirror.url, remote, folder / remote.local_name,
                               FetchSettings(timeout_s=5.0, retries=3, retry_backoff_s=0.5), sleep=sleeps.append)

    assert sleeps == [0.5, 1.0, 2.0]
    assert requests_for(mirror, LABELS) == 4


def test_retries_are_bounded(mirror, remote, folder):
    mirror.faults[LABELS] = Fault("500")
    sleeps: list[float] = []

    with pytest.raises(MirrorError) as caught:
        download.fetch_from_mirror(mirror.url, remote, folder / remote.local_name,
                                   FetchSettings(timeout_s=5.0, retries=2, retry_backoff_s=0.25), sleep=sleeps.append)

    assert caught.value.transient
    assert sleeps == [0.25, 0.5]
    assert requests_for(mirror, LABELS) == 3
    assert list(folder.iterdir()) == []


def test_permanent_failure_is_not_retried(mirror, remote, folder):
    mirror.faults[LABELS] = Fault("404")
    sleeps: list[float] = []

    with pytest.raises(MirrorError) as caught:
        download.fetch_from_mirror(mirror.url, remote, folder / remote.local_name,
                                   FetchSettings(timeout_s=5.0, retries=3, retry_backoff_s=0.25), sleep=sleeps.append)

    assert not caught.value.transient
    assert sleeps == []
    assert requests_for(mirror, LABELS) == 1


def test_a_checksum_mismatch_names_both_full_sha256_digests(mirror, remote, folder):
    mirror.faults[LABELS] = Fault("wrong")
    served = hashlib.sha256(WRONG_CONTENT).hexdigest()

    with pytest.raises(MirrorError) as caught:
        download.fetch_from_mirror(mirror.url, remote, folder / remote.local_name, FAST)

    # the whole 64 hex digits of each: the user compares them with data.custom's sha256 and the file's
    assert f"content sha256 {served}, expected {remote.sha256}" in str(caught.value)
    assert list(folder.iterdir()) == []


def test_stalled_server_is_abandoned_after_the_timeout(mirror, remote, folder):
    mirror.faults[LABELS] = new_fault("stall")

    with pytest.raises(StageError, match="timed out after 0.3 s"):
        download.download_file(remote, (mirror.url,), folder, FetchSettings(timeout_s=0.3, retries=0,
                                                                             retry_backoff_s=0.01))

    # The client gave up while the server was still stalling (2 s): it did not wait for the answer.
    assert requests_for(mirror, LABELS) == 1 and LABELS not in mirror.completed
    assert list(folder.iterdir()) == []


def names_requested(server: MirrorServer) -> list[str]:
    return [path.rsplit("/", 1)[-1] for path in server.requests]


def test_a_mirror_that_timed_out_is_skipped_for_the_remaining_files(mirror, second, dataset, folder):
    for name in NAMES.values():
        mirror.faults[name] = new_fault("stall")
    first = dataset.files[0].name

    download.download_dataset(dataset, (mirror.url, second.url), folder, STALLING)

    assert_verified(folder, dataset)
    assert names_requested(mirror) == [first] * (STALLING.retries + 1)  # its retries once, for the first file only
    assert sorted(names_requested(second)) == sorted(NAMES.values())


def test_a_skipped_mirror_is_named_in_the_error(mirror, second, dataset, folder):
    for name in NAMES.values():
        mirror.faults[name] = new_fault("stall")
    first, after = dataset.files[0].name, dataset.files[1].name
    second.faults[after] = Fault("404")

    with pytest.raises(StageError) as caught:
        download.download_dataset(dataset, (mirror.url, second.url), folder, STALLING)

    assert f"{mirror.url}: skipped (timed out for {first} earlier in this run)" in str(caught.value)
    assert "HTTP 404" in str(caught.value)
    assert names_requested(mirror) == [first] * (STALLING.retries + 1)


def test_a_mirror_that_answers_on_retry_is_kept(mirror, second, dataset, folder):
    first = dataset.files[0].name
    mirror.faults[first] = Fault("stall", times=1, stall_s=2.0)

    download.download_dataset(dataset, (mirror.url, second.url), folder, STALLING)

    assert_verified(folder, dataset)
    assert sorted(names_requested(mirror)) == sorted([first, *NAMES.values()])
    assert second.requests == []


# --------------------------------------------------------------------------------------------
# Whole datasets, mirror kinds, files already present
# --------------------------------------------------------------------------------------------
def test_whole_dataset_over_http(mirror, dataset, folder):
    download.download_dataset(dataset, (mirror.url,), folder, FAST)

    assert_verified(folder, dataset)
    assert sorted(path.rsplit("/", 1)[-1] for path in mirror.requests) == sorted(NAMES.values())


def test_downloaded_files_get_the_usual_permissions(mirror, dataset, folder):
    download.download_dataset(dataset, (mirror.url,), folder, FAST)

    umask = os.umask(0)
    os.umask(umask)
    for remote in dataset.files:  # not mkstemp's private 0600
        assert (folder / remote.local_name).stat().st_mode & 0o777 == 0o666 & ~umask


def test_mirror_as_local_directory(generated, dataset, folder):
    download.download_dataset(dataset, (str(generated.folder),), folder, FAST)

    assert_verified(folder, dataset)


def test_mirror_as_file_url(generated, dataset, folder):
    url = generated.folder.as_uri()
    assert url.startswith("file:///")

    download.download_dataset(dataset, (url,), folder, FAST)

    assert_verified(folder, dataset)


def test_local_mirror_missing_a_file_falls_back(generated, tmp_path, dataset, mirror, folder):
    partial = tmp_path / "partial-mirror"
    partial.mkdir()
    for role in ("train_images", "test_images"):
        (partial / NAMES[role]).write_bytes((generated.folder / NAMES[role]).read_bytes())

    download.download_dataset(dataset, (str(partial), mirror.url), folder, FAST)

    assert_verified(folder, dataset)
    assert sorted(path.rsplit("/", 1)[-1] for path in mirror.requests) == sorted(
        [NAMES["train_labels"], NAMES["test_labels"]])


def test_missing_local_mirror_is_reported(tmp_path, remote, folder):
    missing = tmp_path / "no-such-mirror"

    with pytest.raises(StageError) as caught:
        download.download_file(remote, (str(missing), missing.as_uri()), folder, FAST)

    message = str(caught.value)
    assert f"{missing / LABELS}: file not found" in message
    assert message.count("file not found") == 2
    assert list(folder.iterdir()) == []


def test_files_already_present_and_verified_are_not_fetched_again(mirror, dataset, remote, folder):
    download.download_dataset(dataset, (mirror.url,), folder, FAST)
    inode = (folder / remote.local_name).stat().st_ino
    mirror.requests.clear()

    assert download.download_file(remote, (mirror.url,), folder, FAST) == "already present and verified"
    download.download_dataset(dataset, (mirror.url,), folder, FAST)

    assert mirror.requests == []
    assert (folder / remote.local_name).stat().st_ino == inode
    assert_verified(folder, dataset)


def test_present_but_corrupt_file_is_replaced(mirror, dataset, remote, folder):
    download.download_dataset(dataset, (mirror.url,), folder, FAST)
    (folder / remote.local_name).write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x01\x07")  # valid IDX, wrong data
    mirror.requests.clear()

    download.download_dataset(dataset, (mirror.url,), folder, FAST)

    assert [path.rsplit("/", 1)[-1] for path in mirror.requests] == [LABELS]
    assert_verified(folder, dataset)


def test_files_of_another_dataset_are_removed(mirror, dataset, folder):
    (folder / "emnist-train-images-idx3-ubyte").write_bytes(b"other dataset")
    (folder / ".gitignore").write_text("/*\n")

    download.download_dataset(dataset, (mirror.url,), folder, FAST)

    assert not (folder / "emnist-train-images-idx3-ubyte").exists()
    assert (folder / ".gitignore").read_text() == "/*\n"  # hidden files are not outputs: left alone


def test_a_temporary_left_by_an_interrupted_run_is_removed(mirror, dataset, folder):
    leftover = folder / f".{dataset.files[0].local_name}.k3x9q2ab.tmp"  # what mkstemp named it in that run
    leftover.write_bytes(b"\x1f\x8b half of a file")

    download.download_dataset(dataset, (mirror.url,), folder, FAST)

    assert_verified(folder, dataset)  # exactly the dataset's files: no hidden leftover


def test_a_download_killed_with_sigkill_leaves_a_temporary_the_next_run_removes(mirror, dataset, folder):
    destination = folder / dataset.files[0].local_name
    child = subprocess.Popen(  # holds a temporary the way fetch_once does, then is killed mid-download
        [sys.executable, "-c", "import sys, time; from stages.common import atomic\n"
         "with atomic.atomic_path(sys.argv[1]) as path:\n"
         "    path.write_bytes(b'partial'); print(path, flush=True); time.sleep(60)", str(destination)],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        temporary = Path(child.stdout.readline().strip())
        assert temporary.parent == folder and temporary.name.startswith(".") and temporary.suffix == ".tmp"

        assert atomic.sweep_tree(folder) == []  # a live download keeps its temporary
        assert temporary.read_bytes() == b"partial"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        child.stdout.close()
    assert temporary.exists()

    download.download_dataset(dataset, (mirror.url,), folder, FAST)

    assert not temporary.exists()
    assert_verified(folder, dataset)


def test_no_mirrors_is_an_error(dataset, folder):
    with pytest.raises(StageError, match="no mirrors configured for dataset 'custom'"):
        download.download_dataset(dataset, (), folder, FAST)


def test_multi_member_gzip_is_accepted(generated, mirror, dataset, remote, folder):
    content = gzip.decompress((generated.folder / LABELS).read_bytes())
    thirds = len(content) // 3
    members = [content[:thirds], content[thirds: 2 * thirds], content[2 * thirds:]]
    (generated.folder / LABELS).write_bytes(b"".join(gzip.compress(part, mtime=0) for part in members))

    download.download_dataset(dataset, (mirror.url,), folder, FAST)

    assert_verified(folder, dataset)


# --------------------------------------------------------------------------------------------
# Concurrency
# --------------------------------------------------------------------------------------------
def download_in_threads(dataset: Dataset, mirror: str, folder: Path, count: int = 2) -> list[BaseException]:
    """Start ``count`` downloads into ``folder`` at the same moment; return what they raised."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run() -> None:
        barrier.wait()
        try:
            download.download_dataset(dataset, (mirror,), folder, FAST)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return errors


def test_two_threads_download_into_the_same_folder(mirror, dataset, tmp_path):
    for round_index in range(8):  # the stale-file clean-up race showed up in about one round in three
        folder = tmp_path / f"raw{round_index}"
        folder.mkdir()
        for index in range(10):
            (folder / f"stale-{index}").write_bytes(b"left over from another dataset")

        assert download_in_threads(dataset, mirror.url, folder) == []
        assert_verified(folder, dataset)


def _download_in_process(custom: dict, mirror: str, folder: str) -> None:
    download.download_dataset(dataset_of(custom), (mirror,), Path(folder), FAST)


def test_two_processes_download_into_the_same_folder(generated, mirror, dataset, folder):
    # The server holds the first file until both processes have asked for it: the downloads overlap
    # however long each interpreter takes to start (a gate that never opens fails the test).
    first = NAMES["train_images"]
    gate = mirror.faults[first] = Fault("gate", times=2, stall_s=120.0)
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_download_in_process, args=(generated.custom, mirror.url, str(folder)))
                 for _ in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=300)

    assert [process.exitcode for process in processes] == [0, 0]
    assert gate.served == 2 and not gate.broken  # both requests were in flight at once
    assert_verified(folder, dataset)


# --------------------------------------------------------------------------------------------
# Scheme validation and the offline public mirrors
# --------------------------------------------------------------------------------------------
def test_unsupported_scheme_is_rejected_by_params_validation(generated, mirror):
    raw = custom_params(generated.custom, [mirror.url, "ftp://ftp.example.org/mnist/"])

    with pytest.raises(StageError) as caught:
        params.validate(raw)

    message = str(caught.value)
    assert "data.mirrors[1]: unsupported scheme in 'ftp://ftp.example.org/mnist/'" in message
    assert "data.mirrors[0]" not in message


def test_unsupported_scheme_is_skipped_by_the_downloader(mirror, remote, folder):
    how = download.download_file(remote, ("ftp://ftp.example.org/mnist/", mirror.url), folder, FAST)

    assert how.startswith(f"from {mirror.url} ")

    with pytest.raises(StageError, match=r"ftp://ftp\.example\.org/mnist/: unsupported scheme 'ftp'"):
        download.download_file(remote, ("ftp://ftp.example.org/mnist/",), folder / "elsewhere", FAST)


def test_offline_public_mirrors_fail_without_retries_and_with_a_clear_message(folder, caplog):
    mnist = KNOWN_DATASETS["mnist"]
    for url in mnist.public_mirrors:
        host = urllib.parse.urlsplit(url).hostname
        try:
            socket.getaddrinfo(host, 443)
        except OSError:
            continue
        pytest.skip(f"{host} resolves: this machine is online, so the public mirrors may really be downloaded")
    # The shipped defaults (timeout 30 s, 3 retries from 1 s): a host that does not resolve is not retried.
    settings = FetchSettings.from_params(params.validate(project_params()).data)

    with pytest.raises(StageError) as caught:
        download.download_dataset(mnist, mnist.public_mirrors, folder, settings)

    assert settings.retries > 0 and not [record for record in caplog.records if "retry" in record.getMessage()]
    message = str(caught.value)
    assert message.startswith("could not download train-images-idx3-ubyte.gz from any of 3 mirror(s)")
    for url in mnist.public_mirrors:
        assert f"{url}train-images-idx3-ubyte.gz: cannot resolve host" in message
    assert list(folder.iterdir()) == []


# --------------------------------------------------------------------------------------------
# stream_gunzip on its own
# --------------------------------------------------------------------------------------------
def chunks_of(data: bytes, size: int):
    pieces = iter([data[start: start + size] for start in range(0, len(data), size)])
    return lambda: next(pieces, b"")


def test_stream_gunzip_multi_member_at_every_chunk_boundary():
    parts = [b"first member ", b"", b"second member " * 3, bytes(range(256))]
    blob = b"".join(gzip.compress(part, mtime=0) for part in parts)
    expected = b"".join(parts)

    for size in range(1, len(blob) + 1):
        output = bytearray()
        digest = download.stream_gunzip(chunks_of(blob, size), output.extend)
        assert bytes(output) == expected, size
        assert digest == hashlib.sha256(expected).hexdigest(), size


def test_stream_gunzip_rejects_non_gzip_as_permanent():
    with pytest.raises(MirrorError, match="not a gzip file") as caught:
        download.stream_gunzip(chunks_of(b"<!DOCTYPE html><html>Access denied</html>", 1 << 20), lambda _: None)

    assert not caught.value.transient
    assert "<!DOCTYPE html>" in str(caught.value)


def test_stream_gunzip_rejects_corrupt_deflate_data_as_permanent():
    blob = bytearray(gzip.compress(b"some content " * 100, mtime=0))
    blob[10:30] = b"\xff" * 20  # right magic, garbage compressed data

    with pytest.raises(MirrorError, match="corrupt gzip data") as caught:
        download.stream_gunzip(chunks_of(bytes(blob), 1 << 20), lambda _: None)

    assert not caught.value.transient


def test_stream_gunzip_reports_a_cut_off_stream_as_transient():
    blob = gzip.compress(os.urandom(4096), mtime=0)

    with pytest.raises(MirrorError, match="truncated body") as caught:
        download.stream_gunzip(chunks_of(blob[: len(blob) // 2], 100), lambda _: None)

    assert caught.value.transient


def test_stream_gunzip_reports_an_empty_body_as_transient():
    with pytest.raises(MirrorError, match="empty body") as caught:
        download.stream_gunzip(lambda: b"", lambda _: None)

    assert caught.value.transient


def test_stream_gunzip_stops_a_decompression_bomb(monkeypatch):
    monkeypatch.setattr(download, "MAX_DECOMPRESSED_BYTES", 10_000)
    blob = gzip.compress(b"\x00" * 100_000, mtime=0)

    with pytest.raises(MirrorError, match="decompressed size exceeds 10000 bytes") as caught:
        download.stream_gunzip(chunks_of(blob, 1 << 20), lambda _: None)

    assert not caught.value.transient


# --------------------------------------------------------------------------------------------
# The stage's main() in a project folder
# --------------------------------------------------------------------------------------------
def test_main_downloads_into_data_raw(generated, mirror, second, dataset, tmp_path, monkeypatch):
    mirror.faults.update({name: Fault("404") for name in NAMES.values()})
    project = tmp_path / "project"
    project.mkdir()
    write_params(project, custom_params(generated.custom, [mirror.url, second.url]))
    monkeypatch.chdir(project)

    download.main([])

    assert_verified(project / "data" / "raw", dataset)


def test_main_failure_exits_non_zero_with_one_line(generated, tmp_path, monkeypatch, capsys):
    project = tmp_path / "project"
    project.mkdir()
    write_params(project, custom_params(generated.custom, [str(tmp_path / "nowhere")]))
    monkeypatch.chdir(project)

    with pytest.raises(SystemExit) as caught:
        run_stage(lambda: download.main([]), "download")

    assert caught.value.code == 1
    error = capsys.readouterr().err
    assert f"error: download: could not download {NAMES['train_images']} from any of 1 mirror(s): " in error
    assert "Traceback" not in error
    assert list((project / "data" / "raw").iterdir()) == []


def test_make_dataset_checksums_match_the_gzip_content(tmp_path):
    """The generator the download tests rely on describes its files truthfully."""
    custom = make_dataset(tmp_path, n_train=20, n_test=10)
    for role, name in NAMES.items():
        content = gzip.decompress((tmp_path / name).read_bytes())
        assert custom["files"][role] == {"name": name, "sha256": hashlib.sha256(content).hexdigest()}


def test_a_full_disk_is_one_error_naming_the_file_and_keeps_what_was_there(mirror, dataset, remote, folder,
                                                                           monkeypatch):
    destination = folder / remote.local_name
    destination.write_bytes(b"a previous, corrupt copy")
    real_gunzip = download.stream_gunzip

    def gunzip_onto_a_full_disk(chunks, write, on_progress=lambda _: None):
        def write_until_full(data: bytes) -> None:
            write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        return real_gunzip(chunks, write_until_full, on_progress)

    monkeypatch.setattr(download, "stream_gunzip", gunzip_onto_a_full_disk)

    with pytest.raises(StageError) as caught:
        download.download_file(remote, (mirror.url,), folder, FAST)

    assert str(caught.value) == f"{destination}: cannot write: no space left on device; nothing half-written was left"
    assert destination.read_bytes() == b"a previous, corrupt copy"
    assert temporaries(folder) == []
