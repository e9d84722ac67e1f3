"""What a Dask worker runs: one DVC command sequence in a fresh clone of the git remote.

Standard library only (``dvc`` and ``yaml`` are imported lazily, by ``upstream_stages`` and
``changed_entries``): the driver ships this module to the workers by value, so a worker needs
the project's environment (git, DVC, the pipeline's dependencies) but not this package. Jobs and
results are plain dicts.

A job: ``git_url``, ``commit``, ``dvc_remote`` ({name, url} or None), ``workdir`` (parent of
the temporary workspaces, None = the system's), and per function: ``name``, ``overrides`` and
``lock`` (``run_experiment``; the dvc.lock text ``prepare`` returned, or None for the commit's),
``upstream`` and ``override_keys`` (``prepare``).

A commit's dvc.lock can be out of date (params.yaml changed, the lock not updated) and name
outputs no DVC remote has; DVC then fails in every experiment to load them. ``prepare`` returns
the lock as it reproduced it when any entry changed, and each experiment starts from that one.

An experiment that fails (its pipeline exits non-zero) is a result with ``status: failed``: it
would fail again, so Dask must not retry it. Anything else that goes wrong (clone, push) raises,
and Dask retries the task, as it does when the worker running it dies.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

LOG_LINES = 200  # lines of a command's output kept in a result
TOPIC = "dvc-sweep"  # Dask event topic: {"started": name} when an experiment starts on a worker

# Runs a command (argv[2:]) in its own process group and kills the whole group when the process
# that started it (the Dask worker) dies, so a killed worker leaves no orphaned training behind;
# then removes the worker's clone (argv[1], if not empty), which the dead worker cannot.
WATCHDOG = """
import os, shutil, signal, subprocess, sys, time
parent = os.getppid()
child = subprocess.Popen(sys.argv[2:], start_new_session=True)
def stop(*_):
    os.killpg(child.pid, signal.SIGKILL)
    sys.exit(137)
signal.signal(signal.SIGTERM, stop)
while child.poll() is None:
    if os.getppid() != parent:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        if sys.argv[1]:
            shutil.rmtree(sys.argv[1], ignore_errors=True)
        sys.exit(137)
    time.sleep(0.2)
sys.exit(child.returncode)
"""


def environment() -> dict[str, str]:
    """The worker's environment with its Python first on PATH (stage commands say ``python``)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run(command: list[str], cwd: Path, log: list[str], clone: Path | None = None) -> int:
    """Run ``command`` under the watchdog, append its output to ``log``; return its exit status.
    ``clone``: the workspace the watchdog removes if the worker dies meanwhile."""
    log.append(f"$ {' '.join(command)}")
    result = subprocess.run([sys.executable, "-c", WATCHDOG, str(clone or ""), *command], cwd=cwd, env=environment(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    log.extend(result.stdout.splitlines())
    if result.returncode != 0:
        log.append(f"[exit status {result.returncode}]")
    return result.returncode


def tail(log: list[str], lines: int = LOG_LINES) -> str:
    return "\n".join(log[-lines:])


def check(command: list[str], cwd: Path, log: list[str], what: str, clone: Path | None = None) -> None:
    if run(command, cwd, log, clone) != 0:
        raise RuntimeError(f"{what} failed on {socket.gethostname()}:\n{tail(log, 30)}")


@contextlib.contextmanager
def workspace(job: dict, label: str, log: list[str]) -> Iterator[Path]:
    """A fresh clone of ``job['git_url']`` at ``job['commit']``, its DVC remote set; removed after.
    Clones that dead worker processes of this host left in the same folder are removed first."""
    parent = Path(job.get("workdir") or tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    for stale in stale_clones(parent):
        log.append(f"removing {stale}: the clone of a worker process that died")
        shutil.rmtree(stale, ignore_errors=True)
    folder = Path(tempfile.mkdtemp(prefix=f"sweep-{label}-{host_token()}-{os.getpid()}-", dir=parent))
    try:
        check(["git", "clone", "--quiet", "--no-checkout", job["git_url"], str(folder)], folder.parent, log,
              f"git clone {job['git_url']}", folder)
        check(["git", "checkout", "--quiet", "--detach", job["commit"]], folder, log,
              f"git checkout {job['commit']} (is it pushed to {job['git_url']}?)", folder)
        identity = subprocess.run(["git", "config", "user.email"], cwd=folder, capture_output=True, text=True)
        if not identity.stdout.strip() and not os.environ.get("GIT_COMMITTER_EMAIL"):
            check(["git", "config", "user.name", "dvc sweep"], folder, log, "git config", folder)
            check(["git", "config", "user.email", "sweep@localhost"], folder, log, "git config", folder)
        remote = job.get("dvc_remote")
        if remote:
            check(["dvc", "remote", "add", "--local", "--force", "--default", remote["name"], remote["url"]],
                  folder, log, "dvc remote add", folder)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def host_token() -> str:
    """This host's name as one part of a clone's folder name (no ``-``: the parts are split on it)."""
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"


def stale_clones(parent: Path) -> list[Path]:
    """Clones in ``parent`` (``sweep-<label>-<host>-<pid>-<random>``) made on this host by a process
    that no longer runs: a worker killed before it could remove its clone (its watchdog removes it
    too, unless it was killed with it). Clones of other hosts, and of live processes, are kept."""
    found = []
    for path in parent.glob("sweep-*"):
        parts = path.name.rsplit("-", 3)
        if len(parts) == 4 and parts[1] == host_token() and parts[2].isdigit() and not alive(int(parts[2])):
            found.append(path)
    return sorted(found)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def upstream_stages(root: Path, override_keys: list[str]) -> list[str]:
    """Stages that no override can change: neither they nor any stage they depend on names an
    overridden param. ``override_keys`` are ``[file:]dotted.key`` (``file`` defaults to params.yaml).

    A stage that depends on a whole params file (e.g. one that validates it) does not count as
    reading every key: it is run once at the base params like the others, and an experiment whose
    overrides do change its outputs simply reruns it and what follows (DVC decides that per stage),
    so this choice only affects how much is reused, never what is computed."""
    import networkx as nx
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo
    from dvc.stage import PipelineStage

    overrides = [key.partition(":")[::2] if ":" in key else ("params.yaml", key) for key in override_keys]

    def reads_override(stage) -> bool:
        for dep in stage.deps:
            if not isinstance(dep, ParamsDependency):
                continue
            path = os.path.relpath(dep.fs_path, root)
            for file, key in overrides:
                if file != path:
                    continue
                if any(p == key or key.startswith(p + ".") or p.startswith(key + ".") for p in dep.params):
                    return True
        return False

    def address(stage) -> str:  # as `dvc repro` takes it, from the repository's root
        dvcfile = os.path.relpath(stage.path, root)
        return stage.name if dvcfile == "dvc.yaml" else f"{dvcfile}:{stage.name}"

    with Repo(str(root)) as repo:
        graph = repo.index.graph
        touched = {stage for stage in graph if reads_override(stage)}
        return sorted(address(stage) for stage in graph if isinstance(stage, PipelineStage)
                      and stage not in touched and not touched & nx.descendants(graph, stage))


def prepare(job: dict) -> dict:
    """Run the stages the grid does not change once, at the sweep's commit, and push their outputs
    and run-cache entries, so that every experiment restores them instead of recomputing them."""
    log: list[str] = []
    start = time.monotonic()
    with workspace(job, "prepare", log) as folder:
        stages = list(job["upstream"]) if job.get("upstream") is not None else \
            upstream_stages(folder, job["override_keys"])
        log.append(f"upstream stages: {' '.join(stages) or '(none)'}")
        committed = read_lock(folder)
        if stages:
            check(["dvc", "repro", "--pull", *stages], folder, log, f"dvc repro {' '.join(stages)}", folder)
            check(["dvc", "push", "--run-cache", *stages], folder, log, "dvc push --run-cache", folder)
        lock = read_lock(folder)
        refreshed = changed_entries(committed, lock)
        if refreshed:
            log.append(f"dvc.lock: the commit's entries of {' '.join(refreshed)} were out of date; "
                       "the experiments start from the ones just reproduced")
    return {"stages": stages, "log": tail(log), "seconds": time.monotonic() - start,
            "lock": lock if refreshed else None, "lock_refreshed": refreshed}


def read_lock(folder: Path) -> str | None:
    try:
        return (folder / "dvc.lock").read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def changed_entries(before: str | None, after: str | None) -> list[str]:
    """Names of the stages whose dvc.lock entry differs between two versions of the file. A stage
    the first version lacks does not count: without an entry, DVC restores it from the run cache."""
    import yaml  # DVC's dependency, like ``dvc`` itself: imported on the worker

    def entries(text: str | None) -> dict:
        return (yaml.safe_load(text) or {}).get("stages", {}) if text else {}

    old, new = entries(before), entries(after)
    return sorted(name for name in new if name in old and new[name] != old[name])


def announce(name: str) -> None:
    """Tell the driver (through Dask's event log) that ``name`` started, for its progress line."""
    try:
        from distributed import get_worker

        get_worker().log_event(TOPIC, {"started": name})
    except (ImportError, ValueError):  # not inside a Dask worker
        pass


def run_experiment(job: dict) -> dict:
    """Run one grid point as ``dvc exp run`` and push it; a failing pipeline is a result, not an error."""
    announce(job["name"])
    log: list[str] = []
    phases: dict[str, float] = {}
    started = time.monotonic()
    result = {"name": job["name"], "overrides": list(job["overrides"]), "host": socket.gethostname(),
              "pid": os.getpid()}
    with workspace(job, job["name"], log) as folder:
        phases["clone"] = time.monotonic() - started
        mark = time.monotonic()
        if job.get("lock"):  # the upstream stages' entries as the prepare step reproduced them
            (folder / "dvc.lock").write_text(job["lock"], encoding="utf-8")
            log.append("dvc.lock: the prepare step's (its upstream stages at this commit's params)")
        settings = [argument for override in job["overrides"] for argument in ("-S", override)]
        status = run(["dvc", "exp", "run", "--pull", "-n", job["name"], *settings], folder, log, folder)
        phases["exp_run"] = time.monotonic() - mark
        if status != 0:
            return {**result, "status": "failed", "log": tail(log), "phases": phases,
                    "seconds": time.monotonic() - started}
        mark = time.monotonic()
        check(["dvc", "exp", "push", "--force", "origin", job["name"]], folder, log, f"dvc exp push {job['name']}",
              folder)
        phases["push"] = time.monotonic() - mark
    return {**result, "status": "done", "log": tail(log), "phases": phases, "seconds": time.monotonic() - started}
