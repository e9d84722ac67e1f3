"""End to end, the order of events: params changed under a running stage, a refused
``dvc exp run -S``, temporaries of killed writers, Ctrl-C and SIGTERM under ``dvc repro``. Real DVC
in real git repositories, real processes and real signals; every wait is on a condition (a log
line, a marker a process prints), never on a fixed sleep.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from tests.e2e.conftest import BIN, Repo, environment, ran_stages
from tests.support import PROJECT_ROOT


def stage_process(parent: int, module: str) -> int:
    """The pid of the descendant of ``parent`` running ``python -m <module>``."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    todo, found = [parent], []
    while todo:
        pid = todo.pop()
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            command = []
        if b"-m" in command and module.encode() in command:
            found.append(pid)
        todo.extend(children.get(pid, []))
    assert len(found) == 1, f"expected one {module} process under {parent}, found {found}"
    return found[0]


def start_repro(repo: Repo, *arguments: str) -> subprocess.Popen:
    """``dvc repro`` in its own session (as a terminal's foreground job), its stderr streamed.
    SIGINT is given its default disposition, as at a terminal (CI may start us with it ignored)."""
    return subprocess.Popen([str(BIN / "dvc"), "repro", *arguments], cwd=repo.path, env=environment(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for_line(process: subprocess.Popen, text: str) -> list[str]:
    assert process.stdout is not None
    seen = []
    for line in process.stdout:
        seen.append(line)
        if text in line:
            return seen
    raise AssertionError(f"{text!r} never appeared:\n{''.join(seen)[-3000:]}")


def files(root: Path, *folders: str) -> dict[Path, bytes]:
    return {path: path.read_bytes() for folder in folders for path in (root / folder).rglob("*") if path.is_file()}


def hidden_leftovers(root: Path) -> list[Path]:
    return [path for path in root.rglob(".*") if path.name not in (".gitignore", ".dvcignore")
            and ".git" not in path.parts and ".dvc" not in path.parts]


def lock_entry(repo: Repo, stage: str) -> dict:
    return yaml.safe_load((repo.path / "dvc.lock").read_text())["stages"][stage]


def restore(repo: Repo, line: str) -> None:
    """Run the restore commands quoted in an error line."""
    for command in (shlex.split(text) for text in line.split("`")[1::2] if " checkout " in text):
        repo.dvc(*command[1:]) if command[0] == "dvc" else repo.git(*command[1:])


# --------------------------------------------------------------------------------------------
# Params changed under a running stage
# --------------------------------------------------------------------------------------------
def test_params_changed_by_a_concurrent_exp_run_are_never_recorded_for_a_model_trained_without_them(pipeline_copy):
    root = pipeline_copy.path
    pipeline_copy.set_params(lambda raw: raw["torch"].update(epochs=3, batch_size=4))
    pipeline_copy.commit("torch: three epochs")
    lock_before = (root / "dvc.lock").read_bytes()
    model_before = files(root, "models/torch/1")
    repro = start_repro(pipeline_copy, "-s", "-f", "train@1-torch")
    wait_for_line(repro, "epoch 1/3")
    stage = stage_process(repro.pid, "stages.train")
    os.kill(stage, signal.SIGSTOP)  # held mid-training while the experiment rewrites params.yaml
    try:
        concurrent = pipeline_copy.dvc("exp", "run", "-S", "torch.epochs=2", check=False)
    finally:
        os.kill(stage, signal.SIGCONT)
    output = repro.communicate(timeout=600)[0]

    assert concurrent.returncode != 0 and "lock" in (concurrent.stdout + concurrent.stderr).lower()
    assert pipeline_copy.params()["torch"]["epochs"] == 2  # DVC wrote it before its lock refused the run
    assert repro.returncode != 0 and "Traceback" not in output
    (line,) = [line for line in output.splitlines() if line.startswith("error: train: ")]
    assert "changed while this stage ran: params.yaml: torch.epochs: 3 -> 2" in line
    assert "`dvc checkout train@1-torch`" in line
    assert (root / "dvc.lock").read_bytes() == lock_before  # nothing recorded
    assert files(root, "models/torch/1") in ({}, model_before) and not hidden_leftovers(root)  # no new model

    restore(pipeline_copy, line)  # the previous model, as dvc.lock records it
    assert files(root, "models/torch/1") == model_before
    pipeline_copy.dvc("repro")  # trains with the params now in params.yaml, and records them
    assert lock_entry(pipeline_copy, "train@1-torch")["params"]["params.yaml"]["torch"]["epochs"] == 2
    trained = yaml.safe_load((root / "dvclive/torch/1/metrics.json").read_text())
    assert trained["epochs"] == 2


# --------------------------------------------------------------------------------------------
# dvc exp run -S
# --------------------------------------------------------------------------------------------
REFUSED = ("-S", "frameworks=[torch]", "-S", "train.epochs=0")


def test_a_refused_raw_dvc_exp_run_leaves_its_value_in_params_yaml_and_removes_validates_output(pipeline_copy):
    """DVC's behaviour, measured (docs/failures.md): if DVC changes it, this test says so."""
    root = pipeline_copy.path
    before = files(root, "models", "eval", "dvclive", "reports", "data")
    result = pipeline_copy.dvc("exp", "run", *REFUSED, check=False)
    assert result.returncode != 0
    assert "train.epochs: expected a value of at least 1, got 0" in result.stdout + result.stderr
    gone = sorted(str(path.relative_to(root)) for path in before if not path.exists())
    assert gone == ["data/params.ok"]  # validate's own output, removed by DVC before validate ran
    assert pipeline_copy.params()["train"]["epochs"] == 0  # the refused value stays
    pipeline_copy.git("checkout", "params.yaml", "data/params.ok")  # the restore command docs/failures.md gives
    pipeline_copy.dvc("checkout")
    assert files(root, "models", "eval", "dvclive", "reports", "data") == before


def run_exp(repo: Repo, *arguments: str) -> subprocess.CompletedProcess:
    env = {**environment(), "PYTHONPATH": str(PROJECT_ROOT)}  # the repository's stages/, the project's sweep/
    return subprocess.run([sys.executable, "-m", "sweep.exp", *arguments], cwd=repo.path, env=env,
                          capture_output=True, text=True, timeout=600)


def test_the_projects_exp_route_refuses_bad_values_before_dvc_touches_anything(pipeline_copy):
    root = pipeline_copy.path
    before = files(root, "models", "eval", "dvclive", "reports", "data")
    params = (root / "params.yaml").read_bytes()
    result = run_exp(pipeline_copy, *REFUSED, "-S", "frameworks=[mxnet]")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith("error: exp: refused before DVC touched the workspace (2 problem(s))")
    assert any("train.epochs: expected a value of at least 1, got 0" in line for line in lines[1:])
    assert any("unknown framework 'mxnet'" in line for line in lines[1:])
    assert (root / "params.yaml").read_bytes() == params
    assert files(root, "models", "eval", "dvclive", "reports", "data") == before
    assert pipeline_copy.git("status", "--porcelain").stdout == ""


def test_the_projects_exp_route_refuses_a_bad_point_of_a_queued_sweep_and_runs_a_good_experiment(pipeline_copy):
    refused = run_exp(pipeline_copy, "--queue", "-S", "report.dpi=70,7")
    assert refused.returncode == 1 and "report.dpi: expected a value of at least 50, got 7" in refused.stderr
    assert "queued" not in pipeline_copy.dvc("exp", "show", "--no-pager").stdout.lower()

    result = run_exp(pipeline_copy, "-n", "dpi-route", "-S", "report.dpi=70")
    assert result.returncode == 0, result.stderr
    assert pipeline_copy.params()["report"]["dpi"] == 70
    assert "dpi-route" in pipeline_copy.dvc("exp", "list", "--name-only").stdout


# --------------------------------------------------------------------------------------------
# Temporaries of killed writers
# --------------------------------------------------------------------------------------------
WRITER = """
import sys
from pathlib import Path
from stages.common import atomic
kind, target = sys.argv[1], Path(sys.argv[2])
with (atomic.atomic_directory if kind == "folder" else atomic.atomic_path)(target) as temporary:
    (temporary / "partial" if kind == "folder" else temporary).write_bytes(b"half-written")
    print(temporary, flush=True)
    sys.stdin.readline()
"""


def start_writer(repo: Repo, kind: str, target: str) -> tuple[subprocess.Popen, Path]:
    """A process writing ``target`` through the project's atomic writer, stopped mid-write."""
    process = subprocess.Popen([sys.executable, "-c", WRITER, kind, target], cwd=repo.path, env=environment(),
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    temporary = repo.path / process.stdout.readline().strip()
    assert temporary.exists() and temporary.name.startswith(f".{Path(target).name}.")
    return process, temporary


def test_temporaries_of_killed_writers_are_swept_by_the_next_repro_even_when_dvc_restores_the_stage(pipeline_copy):
    killed = []
    for kind, target in (("folder", "data/prepared"), ("file", "models/init/1.npz")):
        process, temporary = start_writer(pipeline_copy, kind, target)
        process.kill()  # SIGKILL: no finally runs
        process.wait()
        killed.append(temporary)
    live, kept = start_writer(pipeline_copy, "folder", "data/raw")  # a writer still at work
    try:
        # As after `dvc repro` had removed preprocess's output and its process was killed:
        # the next repro restores it from the run cache without running it.
        pipeline_copy.run("rm", "-rf", "data/prepared")
        assert all(path.exists() for path in killed)
        result = pipeline_copy.dvc("repro")
        assert (pipeline_copy.path / "data/prepared").is_dir()  # back from DVC's cache, preprocess not run
        assert ran_stages(result.stdout) == set()  # report did not rerun for models/
        assert not any(path.exists() for path in killed)
        assert kept.exists(), "a live writer's temporary was removed"
    finally:
        live.communicate("\n", timeout=60)
    assert live.returncode == 0 and not kept.exists()
    assert pipeline_copy.git("status", "--porcelain").stdout == ""  # data/raw is DVC's, ignored by git


# --------------------------------------------------------------------------------------------
# Ctrl-C and SIGTERM under dvc repro
# --------------------------------------------------------------------------------------------
def interrupt_training(repo: Repo, deliver) -> tuple[int | None, str]:
    repo.set_params(lambda raw: raw["torch"].update(epochs=1000, batch_size=1))
    repo.commit("torch: minutes of training")
    repro = start_repro(repo, "-s", "train@1-torch")
    seen = wait_for_line(repro, "epoch 1/1000")  # partial logs exist, in their temporary: they must not survive
    assert [path.name for path in (repo.path / "dvclive/torch").glob(".1.*.tmp")]
    deliver(repro)
    return repro.wait(timeout=300), "".join(seen) + (repro.stdout.read() if repro.stdout else "")


def check_interrupted(repo: Repo, before: dict[Path, bytes], output: str, what: str) -> None:
    assert "Traceback" not in output
    (line,) = [line for line in output.splitlines() if line.startswith("error: train: ")]
    assert line.startswith(f"error: train: {what}; nothing half-written was left; DVC removed the outputs of "
                           "train@1-torch (models/torch/1, dvclive/torch/1) before it ran: "
                           "`dvc checkout train@1-torch` and `git checkout -- dvclive/torch/1`"), line
    assert not (repo.path / "models/torch/1").exists() and not (repo.path / "dvclive/torch/1").exists()
    assert not hidden_leftovers(repo.path)
    repo.git("checkout", "HEAD~1", "--", "params.yaml")  # the params of the recorded run
    restore(repo, line)
    assert files(repo.path, "models/torch/1", "dvclive/torch/1") == before


def test_ctrl_c_under_dvc_repro_names_what_dvc_removed_and_how_to_restore_it(pipeline_copy):
    before = files(pipeline_copy.path, "models/torch/1", "dvclive/torch/1")
    returncode, output = interrupt_training(pipeline_copy, lambda repro: os.killpg(repro.pid, signal.SIGINT))
    assert returncode != 0
    check_interrupted(pipeline_copy, before, output, "interrupted")


def test_sigterm_cleans_up_as_ctrl_c_does_with_one_line(pipeline_copy):
    before = files(pipeline_copy.path, "models/torch/1", "dvclive/torch/1")
    returncode, output = interrupt_training(
        pipeline_copy, lambda repro: os.kill(stage_process(repro.pid, "stages.train"), signal.SIGTERM))
    assert returncode != 0
    check_interrupted(pipeline_copy, before, output, "terminated (SIGTERM)")
