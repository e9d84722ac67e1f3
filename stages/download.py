"""Stage ``download``: fetch the dataset's four gzip IDX files from the first mirror that works.

Reads ``params.yaml`` (``data:``) and the mirrors. Writes ``data/raw/<name>`` for each file,
*decompressed* and verified against the sha256 of its content, so the output (and every cached stage after
it) depends only on the data, never on which mirror served it.

A mirror is an ``http(s)://`` base URL, a ``file://`` URL or a local directory. Each file is
streamed with a progress bar, decompressed and hashed on the fly into a temporary file in
``data/raw/``, and renamed into place only after its checksum matched. Mirrors are tried in
order; transient failures (connection errors, timeouts, 5xx, truncated bodies) are retried
with exponential backoff, permanent ones (403, 404, not gzip, wrong content) move on to the
next mirror at once. A mirror that timed out for one file (after its retries) is skipped for the
files that remain, so a stalling mirror costs its retries once per run, not once per file. When
every mirror fails, the stage exits non-zero with one message that lists each mirror and why it
failed. Files already present and verified are not fetched again.

Each file is written as every output is (``stages/common/atomic.py``): a locked temporary
``.<name>.<random>.tmp`` next to it, renamed into place only once verified. The lock dies with
the process, however it ends, so temporaries left by a killed run (SIGKILL, power loss) are found
and removed at the start of the next run, while a download running concurrently in the same
folder keeps its own.

Run: ``python -m stages.download`` (or ``dvc repro download``).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from stages.common import atomic, cli, paths
from stages.common.datasets import Dataset, RemoteFile, mirrors_for, resolve_dataset
from stages.common.errors import StageError, run_stage
from stages.common.params import DataParams, load_params

RAW_DIR = paths.RAW
CHUNK_BYTES = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"
# Far above any IDX dataset of this kind (MNIST's largest file is 47 MB); stops a hostile
# mirror from filling the disk with a decompression bomb.
MAX_DECOMPRESSED_BYTES = 4 << 30
USER_AGENT = "framework-comparison-pipeline/1 (python urllib)"

log = logging.getLogger("download")


class MirrorError(Exception):
    """One mirror failed for one file. ``transient`` failures are worth retrying."""

    def __init__(self, reason: str, transient: bool, timed_out: bool = False) -> None:
        super().__init__(reason)
        self.transient = transient
        self.timed_out = timed_out


@dataclass(frozen=True)
class FetchSettings:
    timeout_s: float
    retries: int
    retry_backoff_s: float

    @classmethod
    def from_params(cls, data: DataParams) -> FetchSettings:
        return cls(timeout_s=data.timeout_s, retries=data.retries, retry_backoff_s=data.retry_backoff_s)


# --------------------------------------------------------------------------------------------
# Opening a mirror
# --------------------------------------------------------------------------------------------
def file_location(mirror: str, name: str) -> str:
    """Where ``name`` lives on ``mirror``: a URL, or a local path."""
    scheme = urllib.parse.urlsplit(mirror).scheme.lower()
    if scheme in ("http", "https"):
        return urllib.parse.urljoin(mirror if mirror.endswith("/") else mirror + "/", urllib.parse.quote(name))
    if scheme == "file":
        return os.path.join(urllib.request.url2pathname(urllib.parse.urlsplit(mirror).path), name)
    if "://" in mirror:
        raise MirrorError(f"unsupported scheme {scheme!r}; expected http(s)://, file:// or a local directory",
                          transient=False)
    return os.path.join(os.path.expanduser(mirror), name)


def open_location(location: str, timeout_s: float) -> tuple[BinaryIO, int | None]:
    """Open a URL or local file for streaming; return (readable, size in bytes or None)."""
    if not location.startswith(("http://", "https://")):
        try:
            handle = open(location, "rb")  # noqa: SIM115 - closed by the caller
        except FileNotFoundError:
            raise MirrorError("file not found", transient=False) from None
        except OSError as error:
            raise MirrorError(f"cannot open: {error.strerror}", transient=False) from None
        return handle, os.fstat(handle.fileno()).st_size
    request = urllib.request.Request(location, headers={"User-Agent": USER_AGENT})
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)  # noqa: S310 - scheme checked above
    except urllib.error.HTTPError as error:
        transient = error.code >= 500 or error.code in (408, 429)
        raise MirrorError(f"HTTP {error.code} {error.reason}", transient=transient) from None
    except urllib.error.URLError as error:
        if isinstance(error.reason, socket.gaierror):
            raise MirrorError(f"cannot resolve host ({error.reason.strerror})", transient=False) from None
        if isinstance(error.reason, (TimeoutError, socket.timeout)):
            raise MirrorError(f"timed out after {timeout_s:g} s while connecting", transient=True,
                              timed_out=True) from None
        raise MirrorError(f"connection failed ({error.reason})", transient=True) from None
    except TimeoutError:
        raise MirrorError(f"timed out after {timeout_s:g} s waiting for a response", transient=True,
                          timed_out=True) from None
    except (ConnectionError, http.client.HTTPException, OSError) as error:
        raise MirrorError(f"connection failed ({error})", transient=True) from None
    length = response.headers.get("Content-Length")
    return response, int(length) if length and length.isdigit() else None


# --------------------------------------------------------------------------------------------
# Streaming, decompressing, verifying
# --------------------------------------------------------------------------------------------
def stream_gunzip(chunks: Callable[[], bytes], write: Callable[[bytes], object],
                  on_progress: Callable[[int], object] = lambda _: None) -> str:
    """Decompress a gzip stream read by ``chunks`` into ``write``; return the content's sha256.

    Raises MirrorError for a body that is not gzip (permanent) or that ends early (transient).
    Concatenated gzip members are accepted, as gzip itself does.
    """
    digest = hashlib.sha256()
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    first = True
    written = 0
    while True:
        try:
            chunk = chunks()
        except TimeoutError:
            raise MirrorError("timed out while reading the body", transient=True, timed_out=True) from None
        except http.client.IncompleteRead as error:
            raise MirrorError(f"truncated body ({len(error.partial)} bytes in the last read)", transient=True) from None
        except (ConnectionError, http.client.HTTPException, OSError) as error:
            raise MirrorError(f"connection broke while reading ({error})", transient=True) from None
        if not chunk:
            break
        on_progress(len(chunk))
        if first:
            if not chunk.startswith(GZIP_MAGIC[: len(chunk)]):
                preview = chunk[:40].decode("latin-1").replace("\n", " ")
                raise MirrorError(f"not a gzip file (starts with {preview!r})", transient=False)
            first = False
        while chunk:
            try:
                data = decompressor.decompress(chunk)
            except zlib.error as error:
                raise MirrorError(f"corrupt gzip data ({error})", transient=False) from None
            digest.update(data)
            write(data)
            written += len(data)
            if written > MAX_DECOMPRESSED_BYTES:
                raise MirrorError(f"decompressed size exceeds {MAX_DECOMPRESSED_BYTES} bytes", transient=False)
            chunk = decompressor.unused_data if decompressor.eof else b""
            if chunk:
                decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    if first:
        raise MirrorError("empty body", transient=True)
    if not decompressor.eof:
        raise MirrorError("truncated body (gzip stream ends early)", transient=True)
    return digest.hexdigest()


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_once(location: str, remote: RemoteFile, destination: Path, settings: FetchSettings) -> None:
    """One attempt: stream ``location`` into ``destination`` if and only if its content verifies."""
    handle, size = open_location(location, settings.timeout_s)
    # A full disk: one line naming the file; a failed check: nothing renamed, the temporary removed.
    with atomic.atomic_path(destination) as temporary:
        _fetch_into(handle, size, remote, temporary)


def _fetch_into(handle: BinaryIO, size: int | None, remote: RemoteFile, temporary: Path) -> None:
    """Stream ``handle`` into ``temporary``; raise ``MirrorError`` unless its content verifies."""
    with handle, open(temporary, "wb") as output, tqdm(
        total=size, unit="B", unit_scale=True, desc=remote.name, leave=False,
        disable=not sys.stderr.isatty(), file=sys.stderr,
    ) as bar:
        read = handle.read
        received = 0

        def count(length: int) -> None:
            nonlocal received
            received += length
            bar.update(length)

        digest = stream_gunzip(lambda: read(CHUNK_BYTES), output.write, count)
        if size is not None and received != size:
            raise MirrorError(f"truncated body ({received} of {size} bytes)", transient=True)
    if digest != remote.sha256:
        raise MirrorError(f"checksum mismatch: content sha256 {digest}, expected {remote.sha256}", transient=False)


def fetch_from_mirror(mirror: str, remote: RemoteFile, destination: Path, settings: FetchSettings,
                      sleep: Callable[[float], object] = time.sleep) -> None:
    """Try one mirror, retrying transient failures with exponential backoff."""
    location = file_location(mirror, remote.name)
    for attempt in range(settings.retries + 1):
        try:
            fetch_once(location, remote, destination, settings)
            return
        except MirrorError as error:
            if not error.transient or attempt == settings.retries:
                raise
            delay = settings.retry_backoff_s * 2**attempt
            log.warning("%s: %s; retry %d of %d in %.1f s", location, error, attempt + 1, settings.retries, delay)
            sleep(delay)


def download_file(remote: RemoteFile, mirrors: tuple[str, ...], folder: Path, settings: FetchSettings,
                  timed_out: dict[str, str] | None = None) -> str:
    """Make ``folder/remote.local_name`` hold the verified content; return how it got there.

    ``timed_out`` maps each mirror that timed out earlier in this run to the file it timed out
    for; such mirrors are skipped, and one that times out now is added.
    """
    destination = folder / remote.local_name
    if destination.is_file() and sha256_of_file(destination) == remote.sha256:
        return "already present and verified"
    timed_out = {} if timed_out is None else timed_out
    failures = []
    for mirror in mirrors:
        if mirror in timed_out:
            failures.append(f"{mirror}: skipped (timed out for {timed_out[mirror]} earlier in this run)")
            continue
        started = time.perf_counter()
        try:
            fetch_from_mirror(mirror, remote, destination, settings)
        except MirrorError as error:
            failures.append(f"{file_location_or_mirror(mirror, remote.name)}: {error}")
            log.warning("%s: %s", mirror, error)
            if error.timed_out:
                timed_out[mirror] = remote.name
                log.warning("%s: timed out; skipping it for the remaining files", mirror)
            continue
        seconds = time.perf_counter() - started
        size = destination.stat().st_size
        return f"from {mirror} ({size / 1e6:.1f} MB decompressed in {seconds:.2f} s)"
    raise StageError(f"could not download {remote.name} from any of {len(mirrors)} mirror(s): "
                     + "; ".join(failures))


def file_location_or_mirror(mirror: str, name: str) -> str:
    try:
        return file_location(mirror, name)
    except MirrorError:
        return mirror


def download_dataset(dataset: Dataset, mirrors: tuple[str, ...], folder: Path, settings: FetchSettings) -> None:
    if not mirrors:
        raise StageError(f"no mirrors configured for dataset {dataset.name!r}; set data.mirrors in params.yaml")
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {remote.local_name for remote in dataset.files}
    for stale in folder.iterdir():
        # Files of another dataset would otherwise end up in the cached output.
        if stale.is_file() and stale.name not in wanted and not stale.name.startswith("."):
            stale.unlink(missing_ok=True)  # a concurrent download may have removed it first
    for path in atomic.sweep_tree(folder):
        log.info("removed %s, left behind by an interrupted download", path.name)
    timed_out: dict[str, str] = {}
    for remote in dataset.files:
        how = download_file(remote, mirrors, folder, settings, timed_out)
        log.info("%s: %s", remote.local_name, how)


def main(argv: list[str] | None = None) -> None:
    cli.parser("stages.download", __doc__).parse_args(argv)
    params = load_params()
    dataset = resolve_dataset(params.data)
    download_dataset(dataset, mirrors_for(params.data), RAW_DIR, FetchSettings.from_params(params.data))


if __name__ == "__main__":
    run_stage(lambda: main(sys.argv[1:]), "download")
