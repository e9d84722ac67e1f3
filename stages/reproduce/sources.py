"""The two result sets a reproduction compares: a git revision's committed files, read through git
(``git show REV:path``, nothing checked out), and the workspace's files.

DVC-cached outputs (models, predictions) are compared by the md5 that each side records or has:
the revision's ``dvc.lock`` records them, and the workspace's files are hashed here the way DVC
hashes them (a file's md5; a folder's through DVC's own ``Tree`` digest), so no DVC cache is
needed on either side.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.common import paths, yamlfile
from stages.common.errors import StageError

LOCK = "dvc.lock"
# per-replicate files kept in git: eval/<arm>/<seed>/metrics.json, dvclive/<arm>/<seed>/metrics.json
REPLICATE_FILE = re.compile(r"(eval|dvclive)/([\w-]+)/(\d+)/metrics\.json")


def git(*arguments: str) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(["git", *arguments], capture_output=True, check=False)
    except FileNotFoundError:
        raise StageError("git: not found on PATH; the reproduction reads the old results through git") from None


class Source:
    """Where one result set's files come from; ``name`` says so in messages."""

    name: str

    def read(self, path: str) -> bytes | None:
        """The file's bytes, or None where this side has no such file."""
        raise NotImplementedError

    def listing(self, folder: str) -> list[str]:
        """Every file under ``folder``, as repository-relative paths."""
        raise NotImplementedError

    def text(self, path: str) -> str | None:
        data = self.read(path)
        return None if data is None else yamlfile.decode(data, f"{self.name}:{path}")

    def json(self, path: str) -> Any:
        text = self.text(path)
        if text is None:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise StageError(f"{self.name}:{path}: not readable JSON ({error})") from None

    def yaml(self, path: str) -> Any:
        text = self.text(path)
        return None if text is None else yamlfile.loads(text, f"{self.name}:{path}")

    def replicate_files(self) -> Iterator[tuple[str, str, int, str]]:
        """(kind ``eval`` or ``dvclive``, arm, seed, path) of every per-replicate metrics file."""
        for folder in (str(paths.EVAL), str(paths.LOGS)):
            for path in self.listing(folder):
                match = REPLICATE_FILE.fullmatch(path)
                if match:
                    yield match[1], match[2], int(match[3]), path


class Revision(Source):
    def __init__(self, revision: str) -> None:
        inside = git("rev-parse", "--is-inside-work-tree")
        if inside.returncode != 0:
            raise StageError(f"{Path.cwd()}: not a git repository; run the reproduction in the project's clone")
        found = git("rev-parse", "--verify", "--quiet", "--end-of-options", f"{revision}^{{commit}}")
        if found.returncode != 0 or not revision:
            raise StageError(f"--against {revision}: not a commit of this repository; expected a branch, tag or "
                             "commit (e.g. HEAD, HEAD~1, main, a commit id)")
        self.revision = revision
        self.commit = found.stdout.decode().strip()
        self.name = revision
        subject = git("log", "-1", "--format=%cs %s", self.commit).stdout.decode().strip()
        self.described = f"{revision} ({self.commit[:12]}, {subject})"

    def read(self, path: str) -> bytes | None:
        shown = git("show", f"{self.commit}:{path}")
        return shown.stdout if shown.returncode == 0 else None

    def listing(self, folder: str) -> list[str]:
        listed = git("ls-tree", "-r", "--name-only", "-z", self.commit, "--", folder)
        return sorted(name for name in listed.stdout.decode().split("\0") if name)


class Workspace(Source):
    name = "the workspace"

    def read(self, path: str) -> bytes | None:
        try:
            return Path(path).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def listing(self, folder: str) -> list[str]:
        root = Path(folder)
        return sorted(str(path) for path in root.rglob("*") if path.is_file()) if root.is_dir() else []


# --------------------------------------------------------------------------------------------
# dvc.lock: the outputs' hashes and the params every stage recorded
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Lock:
    outputs: dict[str, str]  # output path -> md5 (a folder's ends in .dir)
    params: dict[str, Any]  # dotted key -> value, as the stages recorded them


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"train": {"epochs": 1}}`` -> ``{"train.epochs": 1}`` (lists stay values)."""
    if not isinstance(value, dict) or (prefix and not value):
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, item in value.items():
        flat.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def read_lock(source: Source) -> Lock:
    """The outputs and params of ``source``'s dvc.lock. ``validate`` reads all of params.yaml and
    writes a constant, so its params (mirrors, timeouts) are left out: the other stages record
    exactly the params their outputs depend on."""
    raw = source.yaml(LOCK)
    if raw is None:
        raise StageError(f"{source.name}:{LOCK}: missing; the results to compare are those of a `dvc repro` "
                         "(run `make run` first)")
    try:
        stages = raw["stages"]
        outputs = {out["path"]: out["md5"] for stage in stages.values() for out in stage.get("outs", [])}
        params: dict[str, Any] = {}
        for name, stage in stages.items():
            if name != "validate":
                for values in stage.get("params", {}).values():
                    params.update(flatten(values))
    except (KeyError, TypeError, AttributeError) as error:
        raise StageError(f"{source.name}:{LOCK}: not a dvc.lock of this project ({type(error).__name__}: "
                         f"{error})") from None
    return Lock(outputs, params)


def file_md5(path: Path) -> str:
    digest = hashlib.md5()  # noqa: S324 - DVC's content hash, not a security measure
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def workspace_md5(path: str) -> str | None:
    """The md5 DVC would record for the workspace's ``path`` (None: not in the workspace). A
    folder's is DVC's digest of its listing; the reproduction's own file is left out of
    ``reports/``, as .dvcignore leaves it out for DVC."""
    from dvc_data.hashfile.hash_info import HashInfo
    from dvc_data.hashfile.tree import Tree

    root = Path(path)
    if root.is_file():
        return file_md5(root)
    if not root.is_dir():
        return None
    tree = Tree()
    for file in sorted(item for item in root.rglob("*") if item.is_file() and item != paths.REPRODUCTION):
        tree.add(file.relative_to(root).parts, None, HashInfo("md5", file_md5(file)))
    tree.digest()
    return str(tree.hash_info.value) if tree.hash_info is not None else None
