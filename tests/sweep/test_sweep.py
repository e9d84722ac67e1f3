"""End to end: a sweep on a real local Dask cluster (two worker processes), a bare git repository
as the git remote, a local folder as the DVC remote, the tiny generated dataset of the e2e tests
served over HTTP on 127.0.0.1.

One sweep runs once for the module (two valid points and one invalid), and a worker process is
killed with SIGKILL while it runs an experiment; the tests then check what it left behind. Every
assertion is about results, logs and refs, none about time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from sweep import gitrepo, grid
from tests.e2e.conftest import Repo, environment, make_repo
from tests.support import MirrorServer, make_dataset

GRID = {"name": "t", "params": ["train.learning_rate=0.003,0.01"], "grids": [["train.epochs=0"]]}
VALID = {"name": "t", "params": ["train.learning_rate=0.003,0.01"]}
INVALID = ("train.epochs=0",)
UPSTREAM = ("download", "preprocess")  # the stages a learning-rate grid must not rerun


@dataclass
class Sweep:
    repo: Repo
    remote: Path  # bare git repository
    store: Path  # DVC remote
    server: MirrorServer
    returncode: int
    output: str
    results: dict
    killed: str  # the experiment whose worker was killed
    killed_pid: int  # that worker's process id
    survivors: list[str]  # processes left in the killed experiment's clone after the kill
    leftover: list[str]  # the killed experiment's clone folders still there after the kill
    workdir: Path  # where the workers made their clones
    requests_before: int  # mirror requests before the sweep

    def result(self, overrides: tuple[str, ...]) -> dict:
        matches = [r for r in self.results["experiments"] if tuple(r["overrides"]) == overrides]
        assert len(matches) == 1, f"{overrides}: {len(matches)} results"
        return matches[0]


def fewer_trainings(raw: dict) -> None:
    """One framework and one seed per experiment, where the pipeline has those params: the sweep
    machinery is under test here, not the comparison (tests/e2e covers the whole pipeline)."""
    if "frameworks" in raw:
        raw["frameworks"] = ["torch"]
    if "seeds" in raw.get("replicates", {}):
        raw["replicates"]["seeds"] = raw["replicates"]["seeds"][:1]


def sweep_command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "sweep", *arguments]


def sweep_environment() -> dict:
    env = environment()
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])  # this checkout's sweep package
    return env


def kill_a_worker_during(process: subprocess.Popen, lines: list[str], names: set[str],
                         workdir: Path) -> tuple[str, int, list[str], list[str]]:
    """Once the sweep prints its scheduler, wait until a worker executes one of ``names``, and a
    pipeline stage runs in that experiment's clone; SIGKILL the worker. Returns the experiment, the
    worker's pid, the processes still in its clone and the clone folders still there, each once
    they are gone or 60 s have passed (the worker's watchdog must kill them all and remove it)."""
    from distributed import Client

    while not any("Dask scheduler tcp://" in line for line in lines):
        assert process.poll() is None, "the sweep ended before starting its cluster:\n" + "".join(lines)
        time.sleep(0.2)
    address = next(line for line in lines if "Dask scheduler tcp://" in line).split()[3]
    with Client(address, timeout="20s") as client:
        while True:
            assert process.poll() is None, "the sweep ended before any experiment ran:\n" + "".join(lines)
            executing = client.run(lambda dask_worker: [str(ts.key) for ts in dask_worker.state.executing])
            for worker, keys in executing.items():
                running = [name for name in names if any(key.startswith(name + "-") for key in keys)]
                if running:
                    pid = client.run(os.getpid, workers=[worker])[worker]
                    return running[0], pid, *kill_during_a_stage(pid, running[0], workdir)
            time.sleep(0.3)


def kill_during_a_stage(pid: int, name: str, workdir: Path) -> tuple[list[str], list[str]]:
    """SIGKILL worker ``pid`` once a pipeline stage runs in experiment ``name``'s clone; return the
    processes left in the clone, and the clone folders left, once none are or 60 s have passed."""
    folders = until(lambda: [str(folder) for folder in workdir.glob(f"sweep-{name}-*")], 120,
                    f"{name}: no clone in {workdir}")
    until(lambda: any("-m stages." in command for command in processes_in(folders)), 300,
          f"{name}: no pipeline stage ran in its clone")
    os.kill(pid, signal.SIGKILL)  # in the middle of the pipeline
    until(lambda: not processes_in(folders), 60)
    survivors = processes_in(folders)
    until(lambda: not any(os.path.exists(folder) for folder in folders), 60)
    return survivors, [folder for folder in folders if os.path.exists(folder)]


def until(condition, timeout: float, failure: str | None = None):
    """Poll ``condition`` until it returns something true, and return that; after ``timeout``
    seconds raise AssertionError(``failure``), or return None if no failure message is given."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            if failure is None:
                return None
            raise AssertionError(failure)
        time.sleep(0.2)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Sweep:
    base = tmp_path_factory.mktemp("sweep")
    custom = make_dataset(base / "mirror", n_train=300, n_test=60)
    with MirrorServer(base / "mirror") as server:
        repo = make_repo(base / "repo", server.url, custom)
        repo.set_params(fewer_trainings)
        remote = base / "remote.git"
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
        repo.dvc("remote", "add", "-d", "store", str(base / "store"))
        (repo.path / "grid.yaml").write_text(yaml.safe_dump(GRID))
        (repo.path / "valid.yaml").write_text(yaml.safe_dump(VALID))
        repo.commit("DVC remote, grids")
        repo.git("remote", "add", "origin", str(remote))
        repo.git("push", "-q", "origin", "main")
        valid = {p.name for p in grid.points("t", [VALID["params"]])}
        before = len(server.requests)
        process = subprocess.Popen(sweep_command("grid.yaml", "--workers", "2", "--json", "results.json",
                                                 "--progress-interval", "5", "--workdir", str(base / "work")),
                                   cwd=repo.path, env=sweep_environment(), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        lines: list[str] = []

        def read() -> None:
            for line in process.stdout:
                lines.append(line)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            killed, killed_pid, survivors, leftover = kill_a_worker_during(process, lines, valid, base / "work")
            process.wait(timeout=900)
        finally:
            if process.poll() is None:
                process.kill()
        reader.join(timeout=10)
        output = "".join(lines)
        assert (repo.path / "results.json").is_file(), output
        results = json.loads((repo.path / "results.json").read_text())
        yield Sweep(repo, remote, base / "store", server, process.returncode, output, results, killed, killed_pid,
                    survivors, leftover, base / "work", before)


def test_every_experiment_reaches_a_fresh_clone_with_its_params_and_metrics(sweep, tmp_path):
    clone = Repo(tmp_path / "clone")
    subprocess.run(["git", "clone", "-q", str(sweep.remote), str(clone.path)], check=True, env=environment())
    clone.dvc("exp", "pull", "origin")  # every experiment of HEAD: git refs and outputs
    shown = json.loads(clone.dvc("exp", "show", "--json").stdout)
    experiments = {entry["name"]: entry for entry in walk(shown) if entry.get("name")}
    for point in grid.points("t", [VALID["params"]]):
        assert point.name in experiments, f"{point.name} missing from dvc exp show: {sorted(experiments)}"
        data = experiments[point.name]["data"]
        params = data["params"]["params.yaml"]["data"]
        assert f"train.learning_rate={params['train']['learning_rate']}" in point.overrides
        assert params["train"]["epochs"] == 1
        metrics = {path: value["data"] for path, value in data["metrics"].items() if value.get("data")}
        assert metrics and all(numbers(m) for m in metrics.values()), metrics
    assert not any(name.startswith("t-") and name not in {p.name for p in grid.points("t", [VALID["params"]])}
                   for name in experiments), "the failed point must not be pushed"
    # any one of them can be checked out there, outputs (models, report) included
    name = grid.points("t", [VALID["params"]])[0].name
    clone.dvc("exp", "apply", name)
    assert clone.up_to_date()
    assert any((clone.path / "reports").iterdir())
    # the user's repository got them too
    listed = sweep.repo.dvc("exp", "list", "--name-only").stdout.split()
    assert sorted(listed) == sorted(p.name for p in grid.points("t", [VALID["params"]]))


def test_upstream_stages_ran_once_not_per_experiment(sweep):
    prepared = sweep.results["prepare"]
    assert {"download", "preprocess"} <= set(prepared["stages"]), prepared["stages"]
    prep_log = Path(prepared["log_path"]).read_text()
    for stage in UPSTREAM:
        assert f"Running stage '{stage}'" in prep_log
    done = [r for r in sweep.results["experiments"] if r["status"] == "done"]
    assert len(done) == 2
    for result in done:
        log = Path(result["log_path"]).read_text()
        assert "Running stage" in log, "the experiment ran no stage at all"
        for stage in UPSTREAM:
            assert f"Running stage '{stage}'" not in log, f"{result['name']} reran {stage}"
            assert f"Stage '{stage}' is cached - skipping run" in log or f"Stage '{stage}' didn't change" in log
    # The mirror served the four dataset files once: one download for the whole grid.
    assert len(sweep.server.requests) - sweep.requests_before == 4, sweep.server.requests


def test_a_killed_worker_has_its_experiment_retried_and_reported_once(sweep):
    assert "done    " + sweep.killed in sweep.output
    names = [r["name"] for r in sweep.results["experiments"]]
    assert sorted(names) == sorted(p.name for p in grid.points("t", [GRID["params"], *GRID["grids"]]))
    for name in names:
        assert sweep.output.count(f"done    {name}") + sweep.output.count(f"FAILED  {name}") == 1
    assert sweep.survivors == [], "the killed task's processes (dvc, its stage) outlived their worker"
    retried = sweep.result(next(p.overrides for p in grid.points("t", [VALID["params"]]) if p.name == sweep.killed))
    assert retried["status"] == "done"
    assert retried["pid"] != sweep.killed_pid, "the experiment was not rerun by another worker process"


def test_a_killed_workers_clone_is_removed(sweep):
    assert sweep.leftover == [], "the killed worker's clone stayed in the work folder"
    assert list(sweep.workdir.iterdir()) == [], "a clone outlived the sweep"


def test_an_invalid_point_is_reported_with_its_overrides_and_the_rest_complete(sweep):
    failed = sweep.result(INVALID)
    assert failed["status"] == "failed"
    assert sweep.returncode == 1
    name = grid.experiment_name("t", INVALID)
    assert f"FAILED  {name}  train.epochs=0" in sweep.output
    assert "train.epochs" in failed["log"] and "at least 1" in failed["log"], failed["log"][-2000:]
    assert "2 done, 1 failed" in sweep.output


def test_a_rerun_of_a_finished_sweep_trains_nothing(sweep):
    refs = gitrepo.remote_experiments(sweep.repo.path, str(sweep.remote))
    rerun = subprocess.run(sweep_command("valid.yaml", "--workers", "2", "--json", "rerun.json"), cwd=sweep.repo.path,
                           env=sweep_environment(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    results = json.loads((sweep.repo.path / "rerun.json").read_text())
    assert [r["status"] for r in results["experiments"]] == ["skipped"] * 2
    assert results["prepare"] is None and "Dask scheduler" not in rerun.stdout
    assert gitrepo.remote_experiments(sweep.repo.path, str(sweep.remote)) == refs


def processes_in(folders: list[str]) -> list[str]:
    """Command lines of the processes whose working directory is in one of ``folders``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
            if any(cwd == folder or cwd.startswith(folder + "/") for folder in folders):
                found.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return found


def walk(node):
    """Every dict in ``dvc exp show --json`` output that describes one revision."""
    if isinstance(node, dict):
        if "data" in node and isinstance(node["data"], dict) and "params" in node["data"]:
            yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def numbers(tree) -> bool:
    if isinstance(tree, dict):
        return any(numbers(value) for value in tree.values())
    return isinstance(tree, int | float) and not isinstance(tree, bool)


def test_a_sweep_on_a_commit_whose_dvc_lock_is_stale(tmp_path):
    """params.yaml changed after the last `dvc repro` and committed with the old dvc.lock, whose
    outputs were never pushed: the lock names a data/prepared that no DVC remote has. The prepare
    step reproduces the upstream stages at the new params, and every experiment starts from that
    state instead of failing to load the stale directory."""
    custom = make_dataset(tmp_path / "mirror", n_train=300, n_test=60)
    with MirrorServer(tmp_path / "mirror") as server:
        repo = make_repo(tmp_path / "repo", server.url, custom)
        repo.set_params(fewer_trainings)
        repo.dvc("remote", "add", "-d", "store", str(tmp_path / "store"))
        repo.dvc("repro")
        repo.commit("run the pipeline (outputs not pushed)")
        stale = prepared_hash(repo.path / "dvc.lock")
        repo.set_params(lambda raw: raw["preprocess"].update(val_fraction=0.2))
        repo.commit("preprocess.val_fraction: 0.2, dvc.lock not updated")
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(tmp_path / "remote.git")], check=True)
        repo.git("remote", "add", "origin", str(tmp_path / "remote.git"))
        repo.git("push", "-q", "origin", "main")
        result = subprocess.run(sweep_command("-S", "train.learning_rate=0.003", "--workers", "1", "--json",
                                              "results.json", "--workdir", str(tmp_path / "work")),
                                cwd=repo.path, env=sweep_environment(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "dvc.lock of commit" in result.stdout and "out of date for init@1 preprocess validate" in result.stdout
    [experiment] = json.loads((repo.path / "results.json").read_text())["experiments"]
    assert experiment["status"] == "done", experiment.get("log")
    log = Path(experiment["log_path"]).read_text()
    assert "Running stage 'preprocess'" not in log, "the experiment recomputed what the prepare step had"
    repo.dvc("exp", "apply", experiment["name"])
    fresh = prepared_hash(repo.path / "dvc.lock")
    assert fresh != stale and repo.params()["preprocess"]["val_fraction"] == 0.2
    assert repo.up_to_date()


def prepared_hash(lock: Path) -> str:
    """The hash dvc.lock records for data/prepared (a directory: ``<md5>.dir``)."""
    [out] = yaml.safe_load(lock.read_text())["stages"]["preprocess"]["outs"]
    assert out["path"] == "data/prepared", out
    return out["md5"]
