"""Unit tests of the sweep's pure parts (grid, names, refs, report) and of its checks before any
Dask cluster starts, on small real git/DVC repositories."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from sweep import gitrepo, grid, report, task
from tests.e2e.conftest import Repo, environment


def test_grid_expands_dvc_sweep_syntax_into_a_product():
    points = grid.expand(["train.learning_rate=0.001,0.01", "train.batch_size=range(32,97,32)", "seed=1"])
    assert len(points) == 6
    assert ("seed=1", "train.batch_size=64", "train.learning_rate=0.01") in points
    assert grid.expand(["other.yaml:model.width=8,16"]) == [("other.yaml:model.width=8",),
                                                              ("other.yaml:model.width=16",)]


def test_grid_union_drops_duplicates_and_names_are_deterministic():
    points = grid.points("lr", [["train.learning_rate=0.001,0.01"], ["train.learning_rate=0.01"], ["seed=3"]])
    assert [p.overrides for p in points] == [("train.learning_rate=0.001",), ("train.learning_rate=0.01",),
                                             ("seed=3",)]
    assert len({p.name for p in points}) == 3 and all(p.name.startswith("lr-") for p in points)
    # the same overrides in any order give the same name; another prefix or value another one
    assert grid.experiment_name("lr", ("a=1", "b=2")) == grid.experiment_name("lr", ("b=2", "a=1"))
    assert grid.experiment_name("lr", ("a=1",)) != grid.experiment_name("lr", ("a=2",))
    assert grid.experiment_name("lr", ("a=1",)) != grid.experiment_name("x", ("a=1",))
    assert grid.override_keys(points) == ["seed", "train.learning_rate"]
    assert grid.override_keys(grid.points("s", [["p.yaml:a.b=1", "+c=x:y"]])) == ["c", "p.yaml:a.b"]


@pytest.mark.parametrize(("content", "message"), [
    ("params: [train.x=1]\nextra: 1\n", "unknown key(s) extra"),
    ("params: train.x=1\n", "expected a list of `key=value` strings"),
    ("params: [train.x]\n", "expected a list of `key=value` strings"),
    ("name: 'a b'\nparams: [x=1]\n", "name: expected"),
    ("params: [\n", "not valid YAML"),
    ("- x=1\n", "expected a mapping"),
    ("name: lr\n", "no grid"),
])
def test_invalid_grid_files_are_refused_in_one_line(tmp_path, content, message):
    path = tmp_path / "grid.yaml"
    path.write_text(content)
    with pytest.raises(grid.GridError, match=".*") as caught:
        grid.load(path)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_an_invalid_override_is_refused_naming_it():
    with pytest.raises(grid.GridError, match=r"invalid override in train.x=\(1,"):
        grid.expand(["train.x=(1,"])
    with pytest.raises(grid.GridError, match="Glob override"):
        grid.expand(["train.x=glob(*)"])


def test_grid_file_and_set_params_combine(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"name": "g", "params": ["a=1,2"], "grids": [["b=3"]]}))
    prefix, grids = grid.load(path, ["c=4"])
    assert prefix == "g" and grids == [["a=1,2"], ["b=3"], ["c=4"]]
    assert grid.load(None, ["c=4"]) == ("sweep", [["c=4"]])


def test_remote_experiment_refs_are_parsed_by_baseline_and_name():
    baseline = "ab" + "c" * 38
    listing = (f"{'1' * 40}\trefs/exps/ab/{'c' * 38}/lr-0123456789\n"
               f"{'2' * 40}\trefs/exps/exec/EXEC_BASELINE\n"
               f"{'3' * 40}\trefs/heads/main\n")
    assert gitrepo.parse_exp_refs(listing) == {(baseline, "lr-0123456789"): "1" * 40}
    assert gitrepo.exp_ref(baseline, "lr-1") == f"refs/exps/ab/{'c' * 38}/lr-1"


def test_threads_per_experiment_takes_the_largest_of_params_and_overrides(tmp_path):
    (tmp_path / "params.yaml").write_text("train: {threads: 2}\n")
    assert gitrepo.threads_per_experiment(tmp_path, []) == 2
    assert gitrepo.threads_per_experiment(tmp_path, ["train.threads=4", "train.threads=1"]) == 4
    assert gitrepo.threads_per_experiment(tmp_path / "none", []) == 1


def test_report_lines_and_summary():
    done = {"name": "lr-1", "overrides": ["train.learning_rate=0.01"], "status": "done", "seconds": 41.6}
    failed = {"name": "lr-2", "overrides": ["train.epochs=0"], "status": "failed", "seconds": 9,
              "log": "\n".join(f"line {i}" for i in range(40)) + "\nWARNING: No file hash info found for 'x'."
                     "\nerror: train.epochs: expected at least 1",
              "log_path": "/logs/lr-2.log"}
    skipped = {"name": "lr-3", "overrides": [], "status": "skipped"}
    assert report.event(done) == "done    lr-1  train.learning_rate=0.01 in 42 s"
    text = report.event(failed)
    assert text.startswith("FAILED  lr-2  train.epochs=0 in 9 s")
    assert "  | error: train.epochs: expected at least 1" in text and "line 10" not in text
    assert "line 26" in text and "No file hash" not in text
    assert "full log: /logs/lr-2.log" in text and "  rerun it alone: dvc exp run -S train.epochs=0" in text
    table = report.summary([done, failed, skipped]).splitlines()
    assert table[0].split() == ["experiment", "status", "seconds", "overrides"]
    assert table[4].split() == ["lr-3", "skipped", "-", "(base", "params)"]
    assert table[-1] == "3 experiments: 1 done, 1 skipped, 1 failed"
    counts = report.counts(5, [done, failed], running=2)
    assert report.progress(counts) == "sweep: 1 finished, 2 running, 1 failed, 1 queued (of 5)"


def test_the_rerun_hint_is_a_command_that_can_be_pasted():
    overrides = ["train.learning_rate=0.01", "train.schedule=one cycle", "+extra='x'"]
    failed = {"name": "lr-4", "overrides": overrides, "status": "failed", "log": "error: train: ..."}
    hint = report.event(failed).splitlines()[-1]
    assert hint.startswith("  rerun it alone: ")
    command = hint.removeprefix("  rerun it alone: ")
    assert shlex.split(command) == ["dvc", "exp", "run", "-S", overrides[0], "-S", overrides[1], "-S", overrides[2]]
    assert report.event({**failed, "overrides": []}).endswith("rerun it alone: dvc exp run")


DVC_YAML = """
stages:
  check:
    cmd: echo ok > ok.txt
    params:
      - params.yaml:
    outs: [ok.txt]
  fetch:
    cmd: echo data > raw.txt
    deps: [ok.txt]
    params: [data.name]
    outs: [raw.txt]
  prepare:
    cmd: cat raw.txt > prepared.txt
    deps: [raw.txt]
    params: [prep]
    outs: [prepared.txt]
  fit:
    foreach: [a, b]
    do:
      cmd: cat prepared.txt > fit-${item}.txt
      deps: [prepared.txt]
      params: [train]
      outs: ["fit-${item}.txt"]
  summary:
    cmd: cat fit-a.txt fit-b.txt > summary.txt
    deps: [fit-a.txt, fit-b.txt]
    outs: [summary.txt]
"""


@pytest.fixture
def small_repo(tmp_path) -> Repo:
    repo = Repo(tmp_path / "small")
    repo.path.mkdir()
    (repo.path / "dvc.yaml").write_text(DVC_YAML)
    (repo.path / "params.yaml").write_text("data: {name: x}\nprep: {scale: 1}\ntrain: {lr: 0.1, epochs: 1}\n")
    repo.git("init", "-q", "-b", "main")
    repo.dvc("init", "-q")
    return repo


def test_upstream_stages_are_those_no_override_reaches(small_repo):
    assert task.upstream_stages(small_repo.path, ["train.lr"]) == ["check", "fetch", "prepare"]
    assert task.upstream_stages(small_repo.path, ["prep.scale"]) == ["check", "fetch"]
    assert task.upstream_stages(small_repo.path, ["train"]) == ["check", "fetch", "prepare"]
    assert task.upstream_stages(small_repo.path, ["data.name", "train.lr"]) == ["check"]
    assert task.upstream_stages(small_repo.path, ["other.yaml:train.lr"]) == [
        "check", "fetch", "fit@a", "fit@b", "prepare", "summary"]


def test_a_new_clone_first_removes_those_that_dead_processes_of_this_host_left(small_repo, tmp_path):
    """A worker killed together with its watchdog (its whole process group) leaves its clone; the
    next task on the host removes it. Clones of live processes, or of other hosts, stay."""
    small_repo.git("add", "-A")
    small_repo.git("commit", "-q", "-m", "project")
    work = tmp_path / "work"
    finished = subprocess.Popen(["true"])
    finished.wait()  # its pid is free: the clone's owner is gone
    host = task.host_token()
    dead = work / f"sweep-t-0123456789-{host}-{finished.pid}-abcd1234"
    live = work / f"sweep-t-0123456789-{host}-{os.getpid()}-abcd1234"
    elsewhere = work / f"sweep-t-0123456789-{host}x-{finished.pid}-abcd1234"
    for folder in (dead, live, elsewhere):
        (folder / "data").mkdir(parents=True)
    job = {"git_url": str(small_repo.path), "commit": gitrepo.head(small_repo.path), "workdir": str(work),
           "dvc_remote": None}
    log: list[str] = []
    with task.workspace(job, "t-9876543210", log) as clone:
        assert (clone / "dvc.yaml").is_file()
        assert sorted(path.name for path in work.iterdir()) == sorted([live.name, elsewhere.name, clone.name])
    assert f"removing {dead}: the clone of a worker process that died" in log
    assert sorted(path.name for path in work.iterdir()) == sorted([live.name, elsewhere.name])


def sweep_in(repo: Repo, *arguments: str) -> subprocess.CompletedProcess:
    env = environment()
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    return subprocess.run([sys.executable, "-m", "sweep", *arguments], cwd=repo.path, env=env, capture_output=True,
                          text=True, timeout=120)


def test_help_says_what_it_reads_and_writes():
    result = subprocess.run([sys.executable, "-m", "sweep", "--help"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0
    assert "Reads:" in result.stdout and "Writes:" in result.stdout and "--scheduler" in result.stdout


def test_refusals_before_any_cluster_starts(small_repo, tmp_path):
    no_grid = sweep_in(small_repo)
    assert no_grid.returncode == 2 and no_grid.stderr.strip() == "error: no grid: give a grid file or -S options " \
                                                                 "(see --help)"
    small_repo.git("add", "-A")
    small_repo.git("commit", "-q", "-m", "project")
    no_remote = sweep_in(small_repo, "-S", "train.lr=0.1,0.2", "--git-remote", str(tmp_path))
    assert no_remote.returncode == 2 and "no DVC remote" in no_remote.stderr, no_remote.stderr
    small_repo.dvc("remote", "add", "-d", "store", str(tmp_path / "store"))
    small_repo.git("add", "-A")
    small_repo.git("commit", "-q", "-m", "DVC remote")
    unknown = sweep_in(small_repo, "-S", "train.lr=0.1,0.2")
    assert unknown.returncode == 2 and "git remote 'origin': no such remote" in unknown.stderr
    subprocess.run(["git", "init", "-q", "--bare", str(tmp_path / "remote.git")], check=True)
    small_repo.git("remote", "add", "origin", str(tmp_path / "remote.git"))
    unpushed = sweep_in(small_repo, "-S", "train.lr=0.1,0.2")
    assert unpushed.returncode == 2, unpushed.stdout + unpushed.stderr
    assert "is not on git remote 'origin'" in unpushed.stderr and "git push origin HEAD" in unpushed.stderr
    assert "Dask scheduler" not in unpushed.stdout
    too_many = sweep_in(small_repo, "-S", "train.lr=0.1", "--workers", "1000")
    assert too_many.returncode == 2 and "exceed this machine's" in too_many.stderr
    dry = sweep_in(small_repo, "-S", "train.lr=0.1,0.2", "--dry-run")
    assert dry.returncode == 0 and dry.stdout.count("(to run)") == 2, dry.stdout + dry.stderr
    for keyless in ("=5", "+=5", "params.yaml:=5"):
        refused = sweep_in(small_repo, "-S", keyless, "--dry-run")
        assert refused.returncode == 2 and refused.stdout == "", refused.stdout
        assert refused.stderr.strip() == f"error: -S: {keyless!r} names no key; expected key=value, e.g. " \
                                         "train.epochs=5", refused.stderr


def test_uncommitted_changes_are_named_whole(small_repo):
    small_repo.git("add", "-A")
    small_repo.git("commit", "-q", "-m", "project")
    (small_repo.path / "dvc.yaml").write_text(DVC_YAML + "\n")  # ` M dvc.yaml`: a leading space
    (small_repo.path / "params.yaml").write_text("data: {name: y}\n")
    small_repo.git("add", "params.yaml")  # `M  params.yaml`
    (small_repo.path / "untracked.txt").write_text("not part of the commit, nor a change to it\n")

    assert gitrepo.uncommitted(small_repo.path) == ["dvc.yaml", "params.yaml"]


@pytest.fixture
def hand_cluster(tmp_path):
    """The README's cluster by hand: `dask scheduler` and two `dask worker`s, started outside this
    checkout (no `sweep` package on their path). Yields the scheduler's address."""
    dask = str(Path(sys.executable).parent / "dask")
    folder = tmp_path / "cluster"
    folder.mkdir()
    scheduler_file = folder / "scheduler.json"
    logs = [folder / name for name in ("scheduler.log", "worker-1.log", "worker-2.log")]
    commands = [[dask, "scheduler", "--port", "0", "--no-dashboard"]] + \
        [[dask, "worker", "--nthreads", "1", "--no-dashboard"]] * 2
    processes = []
    for command, log in zip(commands, logs):
        with log.open("wb") as output:  # each process's own output, for a failure's message
            processes.append(subprocess.Popen([*command, "--scheduler-file", str(scheduler_file)], cwd=folder,
                                              env=environment(), stdout=output, stderr=subprocess.STDOUT))
    try:
        yield scheduler_address(scheduler_file, processes[0], logs[0])
    finally:
        for process in processes:
            process.kill()
        for process in processes:
            process.wait(timeout=30)


def scheduler_address(path: Path, scheduler: subprocess.Popen | None = None, log: Path | None = None,
                      timeout: float = 120.0) -> str:
    """The address in Dask's scheduler file, once the file parses: the scheduler creates it empty and
    then writes it, so a file that exists may not be complete yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return json.loads(path.read_text())["address"]
        except (OSError, ValueError, KeyError):  # not there yet, or still being written
            pass
        if scheduler is not None and scheduler.poll() is not None:
            raise AssertionError(f"the Dask scheduler exited ({scheduler.returncode}):\n{tail_of(log)}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path}: no scheduler address after {timeout:.0f} s:\n{tail_of(log)}")
        time.sleep(0.1)


def tail_of(log: Path | None) -> str:
    return log.read_text(errors="replace")[-3000:] if log and log.exists() else ""


def test_the_scheduler_address_is_read_once_its_file_is_complete(tmp_path):
    path = tmp_path / "scheduler.json"
    path.write_text("")  # as Dask leaves it between creating the file and writing it
    writer = threading.Timer(0.3, lambda: path.write_text(json.dumps({"address": "tcp://127.0.0.1:1"})))
    writer.start()
    try:
        assert scheduler_address(path, timeout=60) == "tcp://127.0.0.1:1"
    finally:
        writer.cancel()


def test_workers_started_by_hand_run_the_task_code_without_this_package(hand_cluster):
    from distributed import Client

    from sweep import engine

    with Client(hand_cluster, timeout="60s") as client:
        client.wait_for_workers(2, timeout=60)
        assert list(client.run(lambda: importlib.util.find_spec("sweep") is None).values()) == [True, True]
        assert client.submit(engine.by_value(task.tail), ["a", "b", "c"], 2, pure=False).result() == "b\nc"
        assert client.submit(engine.by_value(task.environment), pure=False).result()["DVC_NO_ANALYTICS"] == "1"


def test_a_sweep_on_a_scheduler_given_by_address(small_repo, hand_cluster, tmp_path):
    """The whole sweep through `--scheduler`, on a pipeline of shell commands: upstream stages
    once, one experiment per point pushed and pulled back, a rerun that skips them."""
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(tmp_path / "remote.git")], check=True)
    small_repo.dvc("remote", "add", "-d", "store", str(tmp_path / "store"))
    small_repo.git("add", "-A")
    small_repo.git("commit", "-q", "-m", "project")
    small_repo.git("remote", "add", "origin", str(tmp_path / "remote.git"))
    small_repo.git("push", "-q", "origin", "main")
    arguments = ("-S", "train.lr=0.1,0.2", "--scheduler", hand_cluster, "--json", str(tmp_path / "results.json"))
    first = sweep_in(small_repo, *arguments)
    assert first.returncode == 0, first.stdout + first.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["prepare"]["stages"] == ["check", "fetch", "prepare"]
    assert [r["status"] for r in results["experiments"]] == ["done", "done"]
    for result in results["experiments"]:
        log = Path(result["log_path"]).read_text()
        assert "Running stage 'fit@a'" in log and "Running stage 'fetch'" not in log
    assert f"Dask scheduler {hand_cluster}" in first.stdout
    shown = small_repo.dvc("exp", "show", "--csv").stdout
    assert shown.count("sweep-") == 2 and ",0.1," in shown and ",0.2," in shown
    again = sweep_in(small_repo, *arguments)
    assert again.returncode == 0 and "2 experiments: 2 skipped" in again.stdout and "Dask scheduler" not in again.stdout
