"""Benchmark: download + preprocess of the full MNIST from a loopback mirror, and no-op `dvc repro`.

Prints, as medians over ``--runs`` runs (each stage in its own process, as DVC runs it):

- ``download``: the four files from a real HTTP server on 127.0.0.1 serving
  ``../shared/datasets/mnist``, into an empty folder (stream, gunzip, sha256, rename);
- ``preprocess``: IDX -> the numpy format, whole stage process (target < 2 s);
- ``no-op dvc repro``: the whole pipeline in this repository when everything is up to date
  (target < 1.5 s), next to the same command in a trivial one-stage DVC project, as a ratio.

    .venv/bin/python bench/pipeline_bench.py [--runs 5]

The no-op measurement needs a completed pipeline in this repository (``make run`` with a
mirror, or ``dvc pull``); it is skipped otherwise.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "datasets" / "mnist"
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))

from stages.common import yamlfile  # noqa: E402


def timed(command: list[str], cwd: Path, env: dict | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, capture_output=True, env=env)
    return time.perf_counter() - started


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def serve(folder: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def bench_download_preprocess(runs: int) -> dict[str, list[float]]:
    server, url = serve(MNIST)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    raw = yamlfile.read(ROOT / "params.yaml")
    raw["data"].update(dataset="mnist", mirrors=[url])
    times: dict[str, list[float]] = {"download": [], "preprocess": []}
    try:
        for _ in range(runs):
            with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as scratch:
                work = Path(scratch)
                (work / "params.yaml").write_text(yaml.safe_dump(raw))
                times["download"].append(timed([sys.executable, "-m", "stages.download"], work, env))
                times["preprocess"].append(timed([sys.executable, "-m", "stages.preprocess"], work, env))
    finally:
        server.shutdown()
    return times


def bench_noop_repro(runs: int) -> dict[str, list[float]] | None:
    dvc = str(BIN / "dvc")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    status = subprocess.run([dvc, "status", "--quiet"], cwd=ROOT, capture_output=True, env=env)
    if status.returncode != 0 or not (ROOT / "dvc.lock").is_file():
        print("no-op dvc repro: skipped (the pipeline in this repository is not up to date; run it first)")
        return None
    times: dict[str, list[float]] = {"project": [], "trivial": []}
    with tempfile.TemporaryDirectory(prefix="trivial-dvc-") as scratch:
        trivial = Path(scratch)
        subprocess.run(["git", "init", "-q"], cwd=trivial, check=True)
        subprocess.run([dvc, "init", "-q"], cwd=trivial, check=True, env=env)
        subprocess.run([dvc, "stage", "add", "-q", "-n", "echo", "-o", "out.txt", "echo hi > out.txt"],
                       cwd=trivial, check=True, env=env)
        subprocess.run([dvc, "repro", "-q"], cwd=trivial, check=True, env=env)
        for _ in range(runs):
            times["project"].append(timed([dvc, "repro"], ROOT, env))
            times["trivial"].append(timed([dvc, "repro"], trivial, env))
        shutil.rmtree(trivial, ignore_errors=True)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    arguments = parser.parse_args()
    if not MNIST.is_dir():
        raise SystemExit(f"{MNIST} not found: this benchmark needs the real MNIST files")
    stages = bench_download_preprocess(arguments.runs)
    for name, values in stages.items():
        print(f"{name:>16}: median {statistics.median(values):.2f} s  (runs: {', '.join(f'{v:.2f}' for v in values)})")
    noop = bench_noop_repro(arguments.runs)
    if noop:
        project, trivial = statistics.median(noop["project"]), statistics.median(noop["trivial"])
        print(f"{'no-op dvc repro':>16}: median {project:.2f} s for this pipeline, {trivial:.2f} s for a trivial "
              f"one-stage project (ratio {project / trivial:.2f})")


if __name__ == "__main__":
    main()
