"""Test support: small generated IDX datasets and a real HTTP mirror on 127.0.0.1 with faults.

``make_dataset(folder, ...)`` writes the four gzip IDX files of a learnable synthetic dataset
(each class is a bright bar at its own position, plus noise) and returns the ``data.custom``
params that describe it. ``MirrorServer`` serves a folder over HTTP on loopback and can be told
to misbehave per file name: 403, 404, 500 a given number of times, an HTML page with status
200, a truncated body, wrong content, or a stall longer than the client's timeout.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stages.preprocess.idx import encode_idx

NAMES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = PROJECT_ROOT.parent / "shared" / "datasets"
WRONG_CONTENT = b"\x00\x00\x08\x01\x00\x00\x00\x02\x01\x02"  # what a "wrong" fault serves, gzipped: a valid IDX


def synthetic_images(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 images where class k shows a bright horizontal bar at row 2 + 2k (+ noise)."""
    images = rng.integers(0, 60, size=(labels.shape[0], size, size), dtype=np.uint8)
    for index, label in enumerate(labels):
        row = (2 + 2 * int(label)) % size
        images[index, row: row + 2, 3: size - 3] = 230
    return images


def make_dataset(folder: Path, n_train: int = 200, n_test: int = 60, num_classes: int = 10, size: int = 28,
                 seed: int = 0) -> dict:
    """Write a gzip IDX dataset into ``folder``; return its ``data.custom`` params."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in (("train", n_train), ("test", n_test)):
        labels = (np.arange(count) % num_classes).astype(np.uint8)
        rng.shuffle(labels)
        arrays[f"{split}_labels"] = labels
        arrays[f"{split}_images"] = synthetic_images(labels, size, rng)
    files = {}
    for role, name in NAMES.items():
        raw = encode_idx(arrays[role])
        (folder / name).write_bytes(gzip.compress(raw, mtime=0))
        files[role] = {"name": name, "sha256": hashlib.sha256(raw).hexdigest()}
    return {"files": files, "class_names": [f"class {index}" for index in range(num_classes)]}


def copy_dataset(source: Path, destination: Path) -> Path:
    shutil.copytree(source, destination)
    return destination


@dataclass
class Fault:
    """How the server misbehaves for one file name."""

    kind: str  # 403 | 404 | 500 | html | truncate | wrong | stall | gate
    times: int = 1_000_000  # how many requests misbehave before the file is served normally
    stall_s: float = 5.0  # stall: how long; gate: how long to wait for the other requests at most
    served: int = field(default=0)
    # gate: each request waits here until ``parties`` requests are in flight at once, then all are
    # served; if they never are (no overlap), the barrier breaks and ``broken`` records it (503).
    parties: int = 2
    barrier: threading.Barrier | None = None
    broken: bool = False

    def __post_init__(self) -> None:
        if self.kind == "gate":
            self.barrier = threading.Barrier(self.parties)


class MirrorServer:
    """A real ThreadingHTTPServer on 127.0.0.1 serving ``root`` with per-file faults."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.faults: dict[str, Fault] = {}
        self.requests: list[str] = []
        self.completed: list[str] = []  # file names whose response has been fully handled
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                name = self.path.rsplit("/", 1)[-1]
                server.requests.append(self.path)
                try:
                    self._get(name)
                finally:
                    server.completed.append(name)

            def _get(self, name: str) -> None:
                fault = server.faults.get(name)
                if fault is not None and fault.served < fault.times:
                    fault.served += 1
                    return server._misbehave(self, fault, name)
                path = server.root / name
                if not path.is_file():
                    return self._send(404, b"not found", "text/plain")
                return self._send(200, path.read_bytes(), "application/gzip")

            def _send(self, status: int, body: bytes, content_type: str, length: int | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body) if length is None else length))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.handler = Handler
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        # Don't wait at close for handlers still stalling; they are daemon threads and end on their own.
        self.httpd.block_on_close = False
        # A short poll interval makes shutdown() return in milliseconds rather than up to 0.5 s.
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def _misbehave(self, handler, fault: Fault, name: str) -> None:
        body = (self.root / name).read_bytes() if (self.root / name).is_file() else b""
        if fault.kind in ("403", "404", "500"):
            return handler._send(int(fault.kind), b"<html>error</html>", "text/html")
        if fault.kind == "html":
            return handler._send(200, b"<!DOCTYPE html><html><body>Please log in</body></html>", "text/html")
        if fault.kind == "truncate":
            # Announce the full length, send half, then close the connection.
            handler._send(200, body[: len(body) // 2], "application/gzip", length=len(body))
            handler.close_connection = True
            return None
        if fault.kind == "wrong":
            other = gzip.compress(WRONG_CONTENT, mtime=0)
            return handler._send(200, other, "application/gzip")
        if fault.kind == "gate":
            assert fault.barrier is not None
            try:
                fault.barrier.wait(timeout=fault.stall_s)
            except threading.BrokenBarrierError:
                fault.broken = True
                return handler._send(503, b"gate: the other requests never came", "text/plain")
            return handler._send(200, body, "application/gzip")
        if fault.kind == "stall":
            time.sleep(fault.stall_s)
            return handler._send(200, body, "application/gzip")
        raise ValueError(fault.kind)

    def __enter__(self) -> MirrorServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# --------------------------------------------------------------------------------------------
# params.yaml helpers for tests that run a stage's main() in a temporary folder
# --------------------------------------------------------------------------------------------
def results_revision(folder: Path) -> str:
    """The commit whose code made a committed experiment's results (``make every-framework``
    writes it to ``<folder>/revision``)."""
    return (folder / "revision").read_text(encoding="utf-8").strip()


def made_by_current_report_code(folder: Path) -> bool:
    """Whether the report code that wrote ``folder`` is the current one (no change to
    ``stages/report/`` since its revision): only then do the current report's rules apply to it."""
    import subprocess

    if not (folder / "revision").exists():
        return True  # written by the current run (reports/)
    changed = subprocess.run(["git", "diff", "--quiet", results_revision(folder), "--", "stages/report"],
                             cwd=PROJECT_ROOT, capture_output=True)
    return changed.returncode == 0


def project_params() -> dict:
    """A fresh, mutable copy of the project's parsed params.yaml."""
    from stages.common import yamlfile

    return yamlfile.read(PROJECT_ROOT / "params.yaml")


def custom_params(custom: dict, mirrors: list[str], **preprocess) -> dict:
    """Project params switched to the custom dataset ``custom`` served by ``mirrors``."""
    raw = project_params()
    raw["data"].update(dataset="custom", custom=custom, mirrors=list(mirrors), timeout_s=5, retries=1,
                       retry_backoff_s=0.01)
    raw["preprocess"].update(preprocess)
    return raw


def write_params(folder: Path, raw: dict) -> Path:
    import yaml

    path = Path(folder) / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def gunzip_dataset(mirror_folder: Path, raw_folder: Path) -> Path:
    """Decompress a mirror folder's four .gz files into ``raw_folder`` (the layout of data/raw)."""
    raw_folder.mkdir(parents=True, exist_ok=True)
    for name in NAMES.values():
        (raw_folder / name[: -len(".gz")]).write_bytes(gzip.decompress((mirror_folder / name).read_bytes()))
    return raw_folder


# --------------------------------------------------------------------------------------------
# Initial weights: checked as a distribution
# --------------------------------------------------------------------------------------------
def assert_glorot_initialisation(spec, weights) -> None:
    """``weights`` (canonical layout) are what ``spec`` promises: Glorot-uniform kernels (inside
    +-sqrt(6 / (fan_in + fan_out)), filling that range uniformly: Kolmogorov-Smirnov), zero
    biases, batch-norm gamma 1, beta 0, running mean 0, running variance 1."""
    from scipy import stats

    weights = [np.asarray(weight) for weight in weights]
    expected: list[tuple[str, tuple[int, ...], float | None]] = []  # (what, shape, glorot limit or constant)
    channels, features = spec.input_shape[2], 0
    for layer in spec.layers:
        config = layer.config
        if layer.kind == "conv":
            kernel, filters = config["kernel_size"], config["filters"]
            fans = kernel * kernel * (channels + filters)
            expected.append(("conv kernel", (kernel, kernel, channels, filters), float(np.sqrt(6.0 / fans))))
            if config["bias"]:
                expected.append(("conv bias", (filters,), None))
            channels = filters
        elif layer.kind == "batch_norm":
            expected += [("gamma", (channels,), None), ("beta", (channels,), None),
                         ("running mean", (channels,), None), ("running variance", (channels,), None)]
        elif layer.kind == "flatten":
            features = layer.output_shape[0]
        elif layer.kind == "dense":
            units = config["units"]
            expected += [("dense kernel", (features, units), float(np.sqrt(6.0 / (features + units)))),
                         ("dense bias", (units,), None)]
            features = units
    assert [weight.shape for weight in weights] == [shape for _, shape, _ in expected]
    for index, ((what, _, limit), weight) in enumerate(zip(expected, weights)):
        if limit is None:
            constant = 1.0 if what in ("gamma", "running variance") else 0.0
            np.testing.assert_array_equal(weight, constant, err_msg=f"weight {index} ({what})")
            continue
        assert np.abs(weight).max() <= limit, f"weight {index} ({what}) exceeds the Glorot limit {limit}"
        assert np.abs(weight).max() > 0.9 * limit, f"weight {index} ({what}) does not fill +-{limit}"
        result = stats.kstest(weight.ravel(), "uniform", args=(-limit, 2 * limit))
        assert result.pvalue > 1e-4, f"weight {index} ({what}) is not uniform on +-{limit} (KS p={result.pvalue:.2g})"


# --------------------------------------------------------------------------------------------
# A clock for timing code, so that measured speeds are known exactly
# --------------------------------------------------------------------------------------------
class FakeClock:
    """A stand-in for the ``time`` module in stages.evaluate: each timed call lasts the next of
    ``durations`` (a start reading returns the time, the matching end reading adds one duration)."""

    def __init__(self, durations):
        self.durations, self.now, self.calls = list(durations), 100.0, 0

    def perf_counter(self) -> float:
        self.calls += 1
        if self.calls % 2 == 0:
            self.now += self.durations.pop(0)
        return self.now


# pytest's --extra-framework and --framework (tests/conftest.py), passed on to worker subprocesses
EXTRA_FRAMEWORKS = "COMPARISON_TEST_FRAMEWORKS"  # NAME=MODULE:LABEL;...
SELECTED_FRAMEWORKS = "COMPARISON_TEST_ONLY"  # NAME;...


def register_extra_frameworks() -> None:
    """Add the frameworks named in ``COMPARISON_TEST_FRAMEWORKS`` (``NAME=MODULE:LABEL;...``, set by
    pytest's ``--extra-framework``) to the registry of this process: one line each, as a user
    would add to stages/common/frameworks.py."""
    from stages.common import frameworks

    for entry in filter(None, os.environ.get(EXTRA_FRAMEWORKS, "").split(";")):
        name, _, rest = entry.partition("=")
        module, _, label = rest.partition(":")
        frameworks.REGISTRY[name] = (module, label or name)


def selected_frameworks() -> list[str]:
    """The registered frameworks this test run covers: those pytest's ``--framework`` names (in
    ``COMPARISON_TEST_ONLY``), else all; a name not registered stops the run, naming the choices."""
    from stages.common import frameworks

    named = [name for name in os.environ.get(SELECTED_FRAMEWORKS, "").split(";") if name]
    unknown = [name for name in named if name not in frameworks.names()]
    if unknown:
        raise SystemExit(f"--framework {unknown[0]}: not a registered framework; registered: "
                         f"{', '.join(frameworks.names())} (add one with --extra-framework NAME=MODULE:LABEL)")
    return named or list(frameworks.names())
