"""The sweep from start to end: plan (grid, commit, remotes, what already ran), prepare the
upstream stages once, run the rest on Dask, pull every finished experiment back, summarise."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sweep import engine, gitrepo, grid, report
from sweep.gitrepo import RepoError


@dataclass(frozen=True)
class Options:
    grid_file: Path | None
    set_params: tuple[str, ...] = ()
    scheduler: str | None = None
    workers: int | None = None
    git_remote: str = "origin"
    dvc_remote: str | None = None
    upstream: tuple[str, ...] | None = None  # None: the stages no override can change
    retries: int = 2
    workdir: str | None = None
    logs: Path | None = None
    json_path: Path | None = None
    pull: bool = True
    dry_run: bool = False
    progress_interval: float = 30.0


@dataclass(frozen=True)
class Plan:
    root: Path
    commit: str
    remotes: gitrepo.Remotes
    points: list[grid.Point]
    finished: set[str]  # names of points whose experiment the git remote already has
    workers: int
    logs: Path

    def job(self, options: Options, **fields) -> dict:
        return {"git_url": self.remotes.git_url, "commit": self.commit, "workdir": options.workdir,
                "dvc_remote": {"name": self.remotes.dvc_name, "url": self.remotes.dvc_url}, **fields}


def plan(options: Options, cwd: Path) -> Plan:
    prefix, grids = grid.load(options.grid_file, list(options.set_params))
    points = grid.points(prefix, grids)
    root = gitrepo.toplevel(cwd)
    commit = gitrepo.head(root)
    url = gitrepo.git_url(root, options.git_remote)
    dvc_name, dvc_url = gitrepo.dvc_remote(root, options.dvc_remote)
    remotes = gitrepo.Remotes(options.git_remote, url, dvc_name, dvc_url)
    on_remote = gitrepo.remote_experiments(root, url)
    finished = {point.name for point in points if (commit, point.name) in on_remote}
    threads = gitrepo.threads_per_experiment(root, [o for p in points for o in p.overrides])
    workers = options.workers or max(1, engine.cores() // threads)
    if options.workers and not options.scheduler and options.workers * threads > engine.cores():
        raise RepoError(f"--workers {options.workers} x train.threads {threads} = {options.workers * threads} "
                        f"threads exceed this machine's {engine.cores()} cores; lower --workers or train.threads")
    logs = options.logs or root / ".dvc" / "tmp" / "sweep" / commit[:8]
    return Plan(root, commit, remotes, points, finished, workers, logs)


def check_commit(plan: Plan, say: Callable[[str], None]) -> None:
    if not gitrepo.commit_on_remote(plan.root, plan.remotes.git_url, plan.commit):
        raise RepoError(f"commit {plan.commit[:8]} is not on git remote {plan.remotes.git_name!r}: the workers "
                        f"clone it from there; push it first (git push {plan.remotes.git_name} HEAD)")
    changed = gitrepo.uncommitted(plan.root)
    if changed:
        say(f"sweep: warning: uncommitted changes ({', '.join(changed[:5])}) are not part of the sweep, "
            f"which runs commit {plan.commit[:8]}")


def execute(options: Options, cwd: Path, say: Callable[[str], None] = print) -> int:
    """Run the sweep; return the exit status (0: every experiment finished, 1: some failed)."""
    the_plan = plan(options, cwd)
    todo = [point for point in the_plan.points if point.name not in the_plan.finished]
    say(f"sweep: {len(the_plan.points)} experiments at commit {the_plan.commit[:8]}: {len(todo)} to run, "
        f"{len(the_plan.finished)} already on git remote {the_plan.remotes.git_name!r}")
    if options.dry_run:
        for point in the_plan.points:
            state = "already on the remote" if point.name in the_plan.finished else "to run"
            say(f"  {point.name}  {point.label()}  ({state})")
        return 0
    results: list[dict] = [{"name": p.name, "overrides": list(p.overrides), "status": "skipped"}
               for p in the_plan.points if p.name in the_plan.finished]
    for result in results:
        say(report.event(result))
    prepared: dict | None = None
    if todo:
        check_commit(the_plan, say)
        prepared, ran = _run_on_dask(the_plan, options, todo, say)
        results.extend(ran)
    order = {point.name: index for index, point in enumerate(the_plan.points)}
    results.sort(key=lambda result: order[result["name"]])
    pulled = _pull_back(the_plan, [r["name"] for r in results if r["status"] in ("done", "skipped")], say) \
        if options.pull else True
    say(report.summary(results))
    if options.json_path:
        report.write_json(options.json_path, results, prepared)
    failed = any(result["status"] in ("failed", "error") for result in results)
    return 1 if failed or not pulled else 0


def _run_on_dask(the_plan: Plan, options: Options, todo: list[grid.Point],
                 say: Callable[[str], None]) -> tuple[dict, list[dict]]:
    where = options.scheduler or f"a local cluster of {the_plan.workers} worker(s) x 1 thread"
    with engine.client_for(options.scheduler, the_plan.workers) as client:
        say(f"sweep: Dask scheduler {client.scheduler.address} ({where})")
        keys = grid.override_keys(todo)
        upstream = None if options.upstream is None else list(options.upstream)
        prepared: dict
        if upstream == []:
            prepared = {"stages": [], "log": "", "seconds": 0.0}
        else:
            try:
                prepared = engine.prepare(client, the_plan.job(options, upstream=upstream, override_keys=keys),
                                          options.retries)
            except Exception as error:
                raise RepoError(f"preparing the upstream stages failed: {str(error).strip()}") from error
            prepared["log_path"] = str(report.write_log(the_plan.logs, "prepare", prepared["log"]))
            say(f"sweep: upstream stages ready in the DVC remote ({' '.join(prepared['stages']) or 'none'}) "
                f"in {prepared['seconds']:.0f} s")
        lock = prepared.pop("lock", None)
        if lock:
            refreshed = " ".join(prepared["lock_refreshed"])
            say(f"sweep: note: dvc.lock of commit {the_plan.commit[:8]} is out of date for {refreshed}; the "
                f"experiments start from the entries just reproduced (to commit them: dvc repro {refreshed} "
                "&& git commit dvc.lock)")
        jobs = [the_plan.job(options, name=point.name, overrides=list(point.overrides), lock=lock)
                for point in todo]

        def on_result(result: dict) -> None:
            if result.get("log"):
                result["log_path"] = str(report.write_log(the_plan.logs, result["name"], result["log"]))
            say(report.event(result))

        results = engine.run_all(client, jobs, options.retries, on_result, say, options.progress_interval)
    return prepared, results


def _pull_back(the_plan: Plan, names: list[str], say: Callable[[str], None]) -> bool:
    """``dvc exp pull`` every finished experiment (git refs and DVC outputs) into the user's repo."""
    if not names:
        return True
    refs = [gitrepo.exp_ref(the_plan.commit, name) for name in names]
    beside = Path(sys.executable).parent / "dvc"
    dvc = str(beside) if beside.exists() else (shutil.which("dvc") or "dvc")
    result = subprocess.run([dvc, "exp", "pull", "--force", the_plan.remotes.git_name, *refs], cwd=the_plan.root,
                            capture_output=True, text=True)
    if result.returncode != 0:
        message = (result.stderr.strip().splitlines() or ["no output"])[-1]
        say(f"sweep: error: dvc exp pull failed (exit status {result.returncode}): {message}")
        return False
    say(f"sweep: pulled {len(refs)} experiment(s) from {the_plan.remotes.git_name!r}; see them with `dvc exp show`")
    return True
