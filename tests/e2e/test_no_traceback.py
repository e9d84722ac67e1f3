"""No user error reaches the user as a traceback: a table of hostile-input probes, each run as a
stage runs (``python -m stages.<name>``) and, for the params ones, through ``dvc repro`` in a
real git + DVC repository, where the previous outputs must also survive the refusal.

Each probe exits non-zero with exactly one ``error:`` line and no "Traceback". They all fail
before any training, on tiny data, so the module is fast. The repository uses the real MNIST
from ``../shared/datasets`` as a local mirror: only for a known dataset does the image size
follow from params, so only there can ``validate`` refuse a model that shrinks it to nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import shared_dataset
from tests.e2e.conftest import Repo, environment, make_repo, ran_stages
from tests.support import PROJECT_ROOT, project_params


@dataclass(frozen=True)
class ParamsProbe:
    name: str
    edit: Callable[[bytes], bytes]  # params.yaml's bytes -> the hostile ones
    message: str  # in the one error line or the problem lines under it
    dvc_message: str | None = None  # where DVC itself refuses the file first, its words (else `message`)


def replace(old: bytes, new: bytes) -> Callable[[bytes], bytes]:
    def edit(text: bytes) -> bytes:
        assert old in text, old
        return text.replace(old, new, 1)
    return edit


PARAMS_PROBES = [
    ParamsProbe("duplicate-key", replace(b"  epochs: 1\n", b"  epochs: 1\n  epochs: 2\n"), "duplicate key 'epochs'",
                'found duplicate key "epochs"'),
    ParamsProbe("non-utf8", replace(b"optimizer: adamw", b"optimizer: adam\xe9"), "is not UTF-8 text: byte 0xe9",
                "is not valid utf-8"),
    # Two conv blocks of kernel 5 pooling by 4: 28 -> 24 -> 6 -> 2 -> 0.
    ParamsProbe("pool-0x0", lambda text: replace(b"kernel_size: 3, convs: 1, batch_norm: true, pool: 2",
                                                 b"kernel_size: 5, convs: 1, batch_norm: true, pool: 4")(
        replace(b"kernel_size: 5, convs: 1, batch_norm: true, pool: 2",
                b"kernel_size: 5, convs: 1, batch_norm: true, pool: 4")(text)), "shrinks the feature map to 0x0"),
    ParamsProbe("empty-split", replace(b"max_train: 1000", b"max_train: 10"), "can leave the validation split empty"),
    # docs/data.md's old mirrors example: DVC's parser refuses an unquoted URL inside [...], so validate does.
    ParamsProbe("unquoted-url", replace(b"mirrors: [", b"mirrors: [https://mirror.internal.example/mnist/, "),
                "found unexpected ':'", "YAML file structure is corrupted"),
]


def alias_bomb(text: bytes) -> bytes:
    """``seed: *a8``: 9**9 leaves once expanded (under an unknown key too, DVC reads the whole file)."""
    lines = [b"a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [b"a%d: &a%d [%s]" % (i, i, b", ".join([b"*a%d" % (i - 1)] * 9)) for i in range(1, 9)]
    return text.replace(b"seed: ", b"\n".join(lines) + b"\nbomb: *a8\nseed: ", 1)


def deep_nesting(text: bytes) -> bytes:
    return text + b"deep: " + b"[" * 1000 + b"]" * 1000 + b"\n"


# Hostile YAML that DVC itself crashes on (docs/failures.md): refused by every stage's own command.
HOSTILE_PROBES = [ParamsProbe("alias-bomb", alias_bomb, "more than 100000 values once aliases are expanded"),
                  ParamsProbe("deep-nesting", deep_nesting, "nested deeper than 32 levels")]
STAGE_COMMANDS = [("stages.validate",), ("stages.download",), ("stages.preprocess",), ("stages.init", "1"),
                  ("stages.train", "torch", "1"), ("stages.evaluate", "torch", "1"), ("stages.report",)]


def params_text(mirror: Path) -> bytes:
    """The project's params on MNIST from a local mirror, small, in the project's own layout."""
    raw = project_params()
    raw["data"].update(mirrors=[str(mirror)], retries=0)
    raw["preprocess"].update(max_train=1000, max_test=100)
    raw["train"].update(epochs=1, threads=1)
    raw["model"]["conv_blocks"][1].update(pool=2)
    raw["replicates"].update(seeds=[1], tuned_seeds=[])
    return yaml_bytes(raw)


def yaml_bytes(raw: dict) -> bytes:
    import yaml

    return yaml.safe_dump(raw, sort_keys=False, width=200, default_flow_style=None).encode()


def assert_one_line_error(result: subprocess.CompletedProcess, message: str, *, under_dvc: bool = False) -> None:
    """Exit status non-zero, no traceback, ``message`` said, and one ``error:`` line: the stage's
    (``error: <stage>: ...``, or argparse's ``<prog>: error: ...``). Under DVC, also DVC's own
    ``ERROR:`` line, which is all there is where DVC refuses params.yaml before any stage runs."""
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    ours = [line for line in output.splitlines() if "error:" in line]
    dvc = [line for line in output.splitlines() if line.startswith("ERROR: ")]
    assert len(ours) == 1 or (under_dvc and not ours), output
    assert len(dvc) == (1 if under_dvc else 0), output
    assert message in output, output


def stage(work: Path, *arguments: str, pythonpath: str = "") -> subprocess.CompletedProcess:
    env = {**environment(), "PYTHONPATH": os.pathsep.join(filter(None, [pythonpath, str(PROJECT_ROOT)]))}
    return subprocess.run([sys.executable, "-m", *arguments], cwd=work, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def mnist() -> Path:
    return shared_dataset("mnist")


# --------------------------------------------------------------------------------------------
# As a stage runs: python -m stages.<name>
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("probe", PARAMS_PROBES, ids=[probe.name for probe in PARAMS_PROBES])
def test_a_params_probe_through_the_stage(tmp_path, mnist, probe):
    (tmp_path / "params.yaml").write_bytes(probe.edit(params_text(mnist)))

    assert_one_line_error(stage(tmp_path, "stages.validate"), probe.message)
    assert sorted(tmp_path.iterdir()) == [tmp_path / "params.yaml"]


@pytest.mark.parametrize("command", STAGE_COMMANDS, ids=[command[0] for command in STAGE_COMMANDS])
@pytest.mark.parametrize("probe", HOSTILE_PROBES, ids=[probe.name for probe in HOSTILE_PROBES])
def test_hostile_yaml_is_refused_in_one_line_by_every_stage(tmp_path, mnist, probe, command):
    (tmp_path / "params.yaml").write_bytes(probe.edit(params_text(mnist)))

    result = stage(tmp_path, *command)

    assert_one_line_error(result, "params.yaml is refused: ")
    assert probe.message in result.stderr and len(result.stderr) < 500, result.stderr
    assert sorted(tmp_path.iterdir()) == [tmp_path / "params.yaml"]


def test_an_exponent_learning_rate_passes_the_stage(tmp_path, mnist):
    edit = replace(b"learning_rate: 0.005", b"learning_rate: 1e-05")
    (tmp_path / "params.yaml").write_bytes(edit(params_text(mnist)))

    result = stage(tmp_path, "stages.validate")

    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_an_unknown_flag(tmp_path):
    result = stage(tmp_path, "stages.train", "--bogus")

    assert_one_line_error(result, "unrecognized arguments: --bogus")
    assert result.returncode == 2


@pytest.mark.parametrize("stage_name", ["stages.train", "stages.evaluate"])
def test_an_empty_switch_list_is_refused_before_anything_is_written(tmp_path, stage_name):
    result = stage(tmp_path, stage_name, "torch", "1", "--tuning", "tuned", "--switches=")

    assert_one_line_error(result, "argument --switches: expected one or more switch names")
    assert result.returncode == 2 and list(tmp_path.iterdir()) == []


def test_a_framework_that_cannot_be_imported(tmp_path):
    from tests.trainer_contract import stage_project

    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text("import sys\nsys.modules['torch'] = None\n")
    project = tmp_path / "project"
    project.mkdir()
    stage_project(project, "torch")

    result = stage(project, "stages.train", "torch", "1", pythonpath=str(shim))

    assert_one_line_error(result, f"cannot import torch with {sys.executable}")
    assert not (project / "models" / "torch").exists()


# --------------------------------------------------------------------------------------------
# Through dvc repro: refused at validate, before DVC removes any output
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mnist_repo(tmp_path_factory, mnist) -> Repo:
    """A repository on MNIST (1,000 training images) whose init@1 has run: data/raw,
    data/prepared and models/init/1.npz exist, produced by DVC."""
    repo = make_repo(tmp_path_factory.mktemp("mnist") / "repo", str(mnist), {})
    (repo.path / "params.yaml").write_bytes(params_text(mnist))
    repo.dvc("repro", "init@1")
    repo.commit("init@1")
    return repo


def outputs(repo: Repo) -> dict[Path, bytes]:
    found = {path: path.read_bytes() for folder in ("data/prepared", "models/init")
             for path in (repo.path / folder).rglob("*") if path.is_file()}
    assert repo.path / "models/init/1.npz" in found and repo.path / "data/prepared/meta.json" in found
    return found


@pytest.mark.parametrize("probe", PARAMS_PROBES, ids=[probe.name for probe in PARAMS_PROBES])
def test_a_params_probe_through_dvc_repro_keeps_the_outputs(mnist_repo, probe):
    before, good = outputs(mnist_repo), (mnist_repo.path / "params.yaml").read_bytes()
    (mnist_repo.path / "params.yaml").write_bytes(probe.edit(good))
    try:
        result = mnist_repo.dvc("repro", "init@1", check=False)
    finally:
        (mnist_repo.path / "params.yaml").write_bytes(good)

    assert_one_line_error(result, probe.dvc_message or probe.message, under_dvc=True)
    assert ran_stages(result.stdout) == set()
    assert {path: path.read_bytes() for path in before} == before


def test_dvc_exp_run_with_a_small_learning_rate_passes_validate(mnist_repo, tmp_path):
    repo = mnist_repo.copy(tmp_path / "copy")

    result = repo.dvc("exp", "run", "-S", "train.learning_rate=0.00001", "init@1")

    assert "learning_rate: 1e-05" in (repo.path / "params.yaml").read_text()  # as DVC writes it
    assert "Running stage 'validate'" in result.stdout and ran_stages(result.stdout) == set()
