"""End-to-end fixtures: real git + real DVC repositories holding a copy of the project.

Each repository is configured for a tiny generated dataset served by a real HTTP server on
127.0.0.1 (``data.dataset: custom``), one short epoch, and few latency samples, so the whole
pipeline runs in well under a minute. ``pipeline_repo`` has run the whole pipeline once and
committed it; tests that change things work on copies of it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from stages.common import yamlfile
from tests.support import PROJECT_ROOT, MirrorServer, make_dataset

# what the pipeline reads besides data
PROJECT_FILES = ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore", "stages")
FRAMEWORKS = ("keras", "torch")
SEEDS = (1, 2)  # two replicates: the fewest that give intervals and paired tests
BIN = Path(sys.executable).parent


def environment() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["DVC_NO_ANALYTICS"] = "1"
    env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = "tests"
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "tests@example.invalid"
    env.pop("PYTHONPATH", None)
    return env


@dataclass
class Repo:
    path: Path

    def run(self, *command: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        result = subprocess.run(command, cwd=self.path, env=environment(), capture_output=True, text=True,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(command)} exited {result.returncode}\n"
                                 f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}")
        return result

    def dvc(self, *arguments: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(str(BIN / "dvc"), *arguments, check=check)

    def git(self, *arguments: str) -> subprocess.CompletedProcess:
        return self.run("git", *arguments)

    def params(self) -> dict:
        return yamlfile.read(self.path / "params.yaml")

    def set_params(self, change) -> None:
        raw = self.params()
        change(raw)
        (self.path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))

    def commit(self, message: str) -> None:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)

    def up_to_date(self) -> bool:
        """Whether `dvc status` finds nothing to rerun but `validate`, which is always run (dvc.yaml)."""
        import json

        return json.loads(self.dvc("status", "--json").stdout or "{}") == {"validate": ["always changed"]}

    def copy(self, destination: Path) -> Repo:
        shutil.copytree(self.path, destination, symlinks=True)
        return Repo(destination)


def tiny_params(raw: dict, mirror_url: str, custom: dict) -> None:
    raw["data"].update(dataset="custom", custom=custom, mirrors=[mirror_url], timeout_s=5, retries=1,
                       retry_backoff_s=0.05)
    raw["train"].update(epochs=1, batch_size=32, threads=1)
    # Stock only: the tuned arm compiles (seconds per stage); tests/e2e/test_pipeline.py runs one tuned seed.
    raw["replicates"].update(seeds=list(SEEDS), tuned_seeds=[])
    raw["evaluate"].update(batch_size=50, latency_samples=5, latency_warmup=1, throughput_repeats=2)
    raw["report"].update(misclassified=4, disagreements=4, dpi=60)
    # Two short rounds. busy_cores 2: other engineers' test runs share this machine, and a dropped
    # arm would leave the speed section without data (tests/timing/ test the busy check itself).
    # No contention phase (it doubles the stock arms' processes in every run): the session's
    # pipeline_repo turns it on for tests/e2e/test_timing_stage.py.
    raw["timing"].update(rounds=2, warmup_steps=2, steps=3, inference_images=60, inference_repeats=1,
                         latency_samples=3, latency_warmup=1, busy_cores=2.0, retries=0, contention=False)


def make_repo(path: Path, mirror_url: str, custom: dict) -> Repo:
    path.mkdir(parents=True)
    for name in PROJECT_FILES:
        source = PROJECT_ROOT / name
        if source.is_dir():
            shutil.copytree(source, path / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, path / name)
    repo = Repo(path)
    repo.git("init", "-q", "-b", "main")
    repo.dvc("init", "-q")
    repo.dvc("config", "core.autostage", "true")
    repo.set_params(lambda raw: tiny_params(raw, mirror_url, custom))
    repo.commit("project")
    return repo


@pytest.fixture(scope="session")
def served_dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mirror")
    custom = make_dataset(folder, n_train=300, n_test=60)
    with MirrorServer(folder) as server:
        yield server, custom


@pytest.fixture
def fresh_repo(tmp_path, served_dataset) -> Repo:
    server, custom = served_dataset
    return make_repo(tmp_path / "repo", server.url, custom)


@pytest.fixture(scope="session")
def pipeline_repo(tmp_path_factory, served_dataset) -> Repo:
    """A repository whose whole pipeline has run once and been committed. Do not modify it."""
    server, custom = served_dataset
    repo = make_repo(tmp_path_factory.mktemp("pipeline") / "repo", server.url, custom)
    repo.set_params(lambda raw: raw["timing"].update(contention=True))
    repo.dvc("repro")
    repo.commit("run the pipeline")
    return repo


@pytest.fixture
def pipeline_copy(tmp_path, pipeline_repo) -> Repo:
    return pipeline_repo.copy(tmp_path / "copy")


def ran_stages(output: str) -> set[str]:
    """Names of the stages that `dvc repro` says it ran (``validate``, which runs on every params
    change and changes nothing downstream, left out)."""
    import re

    return set(re.findall(r"Running stage '([^']+)'", output)) - {"validate"}


def replicates(stage: str, frameworks=FRAMEWORKS, seeds=SEEDS) -> set[str]:
    """``train`` -> {train@1-keras, train@2-keras, train@1-torch, ...}."""
    return {f"{stage}@{seed}-{framework}" for framework in frameworks for seed in seeds}
