"""Benchmark: the cost of the sweep machinery (``python -m sweep``) on tiny data.

Three runs of the same 4-point grid (``train.learning_rate=0.002,0.005,0.01,0.02``), each in its
own fresh project (a copy of this one with the e2e tests' tiny generated dataset served on
127.0.0.1, one epoch, ``train.threads: 1``, PyTorch only, one seed: the sweep test's settings),
bare git remote and local DVC remote:

- ``local``: the pipeline's own run: the upstream stages once (``dvc repro``), then
  ``dvc exp run -S ...`` for each point, one after the other, in the project itself;
- ``sweep, 1 worker`` and ``sweep, 2 workers``: ``python -m sweep grid.yaml --workers N``
  (local Dask cluster, clone per experiment, pull of the upstream outputs, push, pull back).

Prints the wall times, the per-experiment overhead of the sweep (1 worker: sweep wall time minus
the local run's, divided by the number of points) and the median phases of a sweep task.

    .venv/bin/python bench/sweep_bench.py [--json bench/results/sweep.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sweep import grid, task  # noqa: E402
from tests.e2e.conftest import Repo, environment, make_repo  # noqa: E402
from tests.support import MirrorServer, make_dataset  # noqa: E402
from tests.sweep.test_sweep import fewer_trainings  # noqa: E402

GRID = {"name": "bench", "params": ["train.learning_rate=0.002,0.005,0.01,0.02"]}


def project(base: Path, server: MirrorServer, custom: dict) -> Repo:
    repo = make_repo(base / "repo", server.url, custom)
    repo.set_params(fewer_trainings)
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(base / "remote.git")], check=True)
    repo.dvc("remote", "add", "-d", "store", str(base / "store"))
    (repo.path / "grid.yaml").write_text(yaml.safe_dump(GRID))
    repo.commit("DVC remote, grid")
    repo.git("remote", "add", "origin", str(base / "remote.git"))
    repo.git("push", "-q", "origin", "main")
    return repo


def local(repo: Repo) -> dict:
    started = time.perf_counter()
    points = grid.points(GRID["name"], [GRID["params"]])
    upstream = task.upstream_stages(repo.path, grid.override_keys(points))
    repo.dvc("repro", *upstream)
    upstream_s = time.perf_counter() - started
    runs = []
    for point in points:
        mark = time.perf_counter()
        repo.dvc("exp", "run", "-n", point.name, *[a for o in point.overrides for a in ("-S", o)])
        runs.append(time.perf_counter() - mark)
    return {"wall_s": time.perf_counter() - started, "upstream_s": upstream_s, "exp_run_s": runs}


def swept(repo: Repo, workers: int) -> dict:
    env = environment()
    env["PYTHONPATH"] = str(ROOT)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "sweep", "grid.yaml", "--workers", str(workers), "--json",
                             "sweep.json"], cwd=repo.path, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"sweep with {workers} worker(s) failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    report = json.loads((repo.path / "sweep.json").read_text())
    experiments = report["experiments"]

    def median(phase: str) -> float:
        return statistics.median(e["phases"][phase] for e in experiments)

    return {"wall_s": wall, "prepare_s": report["prepare"]["seconds"], "clone_s": median("clone"),
            "exp_run_s": median("exp_run"), "push_s": median("push"),
            "task_s": statistics.median(e["seconds"] for e in experiments)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    with tempfile.TemporaryDirectory(prefix="sweep-bench-") as folder:
        base = Path(folder)
        custom = make_dataset(base / "mirror", n_train=300, n_test=60)
        with MirrorServer(base / "mirror") as server:
            figures = {"local": local(project(base / "local", server, custom))}
            for workers in (1, 2):
                figures[f"sweep_{workers}"] = swept(project(base / f"sweep{workers}", server, custom), workers)
    points = len(grid.points(GRID["name"], [GRID["params"]]))
    figures["overhead_per_experiment_s"] = (figures["sweep_1"]["wall_s"] - figures["local"]["wall_s"]) / points
    one, two, own = figures["sweep_1"], figures["sweep_2"], figures["local"]
    print(f"{points}-point grid, tiny data, 1 epoch, train.threads 1, {os.cpu_count()} CPU(s)")
    print(f"local (upstream once + dvc exp run x {points}, in place): {own['wall_s']:6.1f} s "
          f"(upstream {own['upstream_s']:.1f} s, dvc exp run median {statistics.median(own['exp_run_s']):.1f} s)")
    for label, run in (("sweep, 1 worker ", one), ("sweep, 2 workers", two)):
        print(f"{label}: {run['wall_s']:6.1f} s wall (prepare {run['prepare_s']:.1f} s; per task median: "
              f"clone {run['clone_s']:.1f} s, dvc exp run {run['exp_run_s']:.1f} s, push {run['push_s']:.1f} s, "
              f"whole task {run['task_s']:.1f} s)")
    print(f"sweep overhead per experiment (1 worker, vs local): {figures['overhead_per_experiment_s']:.1f} s")
    print(f"speed-up of 2 workers over 1: {one['wall_s'] / two['wall_s']:.2f}x")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
