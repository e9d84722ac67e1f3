"""The user's repository as the sweep sees it: its commit, its git and DVC remotes, and the
experiments the git remote already holds (``git ls-remote <remote> 'refs/exps/*'``)."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.common import yamlfile
from stages.common.errors import StageError

EXP_REF = re.compile(r"^([0-9a-f]{40})\s+refs/exps/([0-9a-f]{2})/([0-9a-f]{38})/([^/\s]+)$")


class RepoError(RuntimeError):
    """The repository or its remotes are not usable for a sweep (one line, naming the problem)."""


@dataclass(frozen=True)
class Remotes:
    git_name: str  # as the user gave it: a remote name or a URL
    git_url: str  # what the workers clone and push to
    dvc_name: str
    dvc_url: str


def git(root: Path, *arguments: str, check: bool = True) -> str:
    result = subprocess.run(["git", *arguments], cwd=root, capture_output=True, text=True)
    if check and result.returncode != 0:
        message = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
        raise RepoError(f"git {' '.join(arguments)}: {message}")
    return result.stdout.rstrip()  # not lstrip: `git status --porcelain` lines start with a space


def toplevel(path: Path) -> Path:
    return Path(git(Path(path), "rev-parse", "--show-toplevel"))


def head(root: Path) -> str:
    return git(root, "rev-parse", "HEAD")


def uncommitted(root: Path) -> list[str]:
    """Tracked files with uncommitted changes: the sweep runs the commit, not these."""
    return [line[3:] for line in git(root, "status", "--porcelain", "--untracked-files=no").splitlines()]


def git_url(root: Path, remote: str) -> str:
    names = git(root, "remote").split()
    if remote in names:
        url = git(root, "remote", "get-url", remote)
    elif re.match(r"^[\w+.-]+://|^[\w.-]+@[\w.-]+:", remote) or Path(remote).exists():
        url = remote
    else:
        raise RepoError(f"git remote {remote!r}: no such remote (have: {', '.join(names) or 'none'}) "
                        "and not a URL or path")
    if "://" not in url and not re.match(r"^[\w.-]+@[\w.-]+:", url) and not Path(url).is_absolute():
        url = str((root / url).resolve())
    return url


def dvc_remote(root: Path, name: str | None) -> tuple[str, str]:
    """(name, url) of the DVC remote ``name`` or of the default one; local paths made absolute."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        config = repo.config
        remotes = dict(config.get("remote", {}))
        chosen = name or config.get("core", {}).get("remote")
    if not chosen:
        raise RepoError("no DVC remote: the workers exchange outputs through one; add one with "
                        "`dvc remote add -d <name> <url>` (and commit .dvc/config) or pass --dvc-remote")
    if chosen not in remotes:
        raise RepoError(f"DVC remote {chosen!r} is not configured (have: {', '.join(remotes) or 'none'})")
    return chosen, str(remotes[chosen]["url"])


def commit_on_remote(root: Path, url: str, commit: str) -> bool:
    """Whether a branch or tag of the git remote contains ``commit`` (as far as local history tells)."""
    listing = git(root, "ls-remote", "--heads", "--tags", url)
    for line in listing.splitlines():
        sha = line.split()[0]
        if sha == commit:
            return True
        ancestor = subprocess.run(["git", "merge-base", "--is-ancestor", commit, sha], cwd=root,
                                  capture_output=True)
        if ancestor.returncode == 0:
            return True
    return False


def parse_exp_refs(listing: str) -> dict[tuple[str, str], str]:
    """``git ls-remote`` output -> {(baseline commit, experiment name): experiment commit}."""
    found = {}
    for line in listing.splitlines():
        match = EXP_REF.match(line.strip())
        if match:
            sha, first, rest, name = match.groups()
            found[(first + rest, name)] = sha
    return found


def remote_experiments(root: Path, url: str) -> dict[tuple[str, str], str]:
    return parse_exp_refs(git(root, "ls-remote", url, "refs/exps/*"))


def exp_ref(baseline: str, name: str) -> str:
    return f"refs/exps/{baseline[:2]}/{baseline[2:]}/{name}"


def threads_per_experiment(root: Path, overrides: list[str], key: str = "train.threads") -> int:
    """The largest ``train.threads`` any point uses (params.yaml's value or an override), 1 if unset."""
    values = []
    try:
        value: Any = yamlfile.read(root / "params.yaml") or {}
        for part in key.split("."):
            value = value[part]
        values.append(int(value))
    except (StageError, KeyError, TypeError, ValueError):
        pass
    for override in overrides:
        name, _, value = override.partition("=")
        if name.lstrip("+") == key:
            try:
                values.append(int(value))
            except ValueError:
                pass
    return max(values, default=1)
