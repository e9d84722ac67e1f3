"""A stage's output is the project's own lines: TensorFlow's native start-up lines are filtered.

Each case runs a real interpreter, as a stage runs, and reads what it wrote to its stderr.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys

import pytest

from stages.common import errors
from stages.common.errors import NATIVE_NOISE, run_stage
from tests.support import PROJECT_ROOT

# A module that, like TensorFlow, writes native log lines straight to file descriptor 2 on import,
# mixed with lines that must reach the user.
FAKE_NATIVE = """
import os, sys
os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n")
os.write(2, b"I0000 00:00:1795821517.170189    9071 cudart_stub.cc:31] Could not find cuda drivers on your "
            b"machine, GPU will not be used.\\n")
print("a warning from Python code", file=sys.stderr)
os.write(2, b"E0000 00:00:1795821529.061601    9174 cuda_platform.cc:52] failed call to cuInit: INTERNAL\\n")
os.write(2, b"W0000 00:00:1795821529.061601    9174 port.cc:113] oneDNN custom operations are on.\\n")
"""
PROBE = """
import sys
from stages.common.errors import native_noise_filtered, run_stage
def main():
    {setup}
    print("stage line", file=sys.stderr)
run_stage(main, "probe")
"""


def run_probe(setup: str, extra_path: str = "", **environment: str) -> list[str]:
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(environment, PYTHONPATH=os.pathsep.join(filter(None, [str(PROJECT_ROOT), extra_path])))
    result = subprocess.run([sys.executable, "-c", PROBE.format(setup=setup)], cwd=PROJECT_ROOT,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stderr.splitlines()


@pytest.fixture
def fake_native(tmp_path) -> str:
    (tmp_path / "fake_native.py").write_text(FAKE_NATIVE)
    return str(tmp_path)


def test_loading_the_keras_backend_in_a_stage_prints_no_native_lines():
    """TensorFlow, imported by the Keras backend on every engine, prints none of its start-up lines."""
    for framework in ("keras", "keras_torch"):
        assert run_probe(f"from stages import backends; backends.load({framework!r})") == ["stage line"], framework


def test_native_info_and_warning_lines_are_dropped_and_everything_else_kept(fake_native):
    lines = run_probe("with native_noise_filtered(): import fake_native", extra_path=fake_native)

    assert lines == ["a warning from Python code",
                     "E0000 00:00:1795821529.061601    9174 cuda_platform.cc:52] failed call to cuInit: INTERNAL",
                     "stage line"]


def test_tf_cpp_min_log_level_0_shows_everything(fake_native):
    lines = run_probe("with native_noise_filtered(): import fake_native", extra_path=fake_native,
                      TF_CPP_MIN_LOG_LEVEL="0")

    assert len(lines) == 6 and lines[0].startswith("WARNING: All log messages before absl")


@pytest.mark.parametrize("line", [
    b"I0000 00:00:1795821523.948605    9174 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use "
    b"available CPU instructions in performance-critical operations.",
    b"To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the appropriate "
    b"compiler flags.",
    b"I0000 00:00:1700000000.123456   12345 port.cc:153] oneDNN custom operations are on. You may see slightly "
    b"different numerical results due to floating-point round-off errors from different computation orders. To "
    b"turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.",
])
def test_known_start_up_notices_are_noise(line):
    assert NATIVE_NOISE.fullmatch(line)


@pytest.mark.parametrize("line", [
    b"12:00:01 train INFO epoch 1/5: loss 0.2",
    b"error: train: params.yaml: train.epochs: expected a value of at least 1, got 0",
    b"F0000 00:00:1700000000.123456   12345 gpu_device.cc:1] Check failed: out of memory",
])
def test_project_lines_and_native_errors_are_not_noise(line):
    assert not NATIVE_NOISE.fullmatch(line)


# --------------------------------------------------------------------------------------------
# A stage run by an interpreter that lacks the project's packages (`.venv/bin/dvc exp run`
# without the environment activated runs the stages with the system python)
# --------------------------------------------------------------------------------------------
def run_stage_without(blocked: str, tmp_path, *arguments: str, cwd=None) -> subprocess.CompletedProcess:
    """``python -m <arguments>`` in a real interpreter in which importing ``blocked`` fails, as
    in one where it is not installed (a sitecustomize puts None in sys.modules)."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(f"import sys\nsys.modules[{blocked!r}] = None\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shim), str(PROJECT_ROOT)]),
           "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", *arguments], cwd=cwd or tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)


def assert_names_the_interpreter(result: subprocess.CompletedProcess, stage: str, module: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines() == [
        f"error: {stage}: cannot import {module} with {sys.executable} (import of {module} halted; None in "
        "sys.modules): the stages need the project's environment; activate it (source .venv/bin/activate) or "
        "run `make run`"]


def test_a_package_missing_at_a_stages_start_names_the_interpreter(tmp_path):
    result = run_stage_without("numpy", tmp_path, "stages.init", "1")

    assert_names_the_interpreter(result, "init", "numpy")
    assert list(tmp_path.iterdir()) == [tmp_path / "shim"]


def test_the_yaml_parser_missing_is_named_although_run_stage_watches_params_through_it(tmp_path):
    """errors.py imports watch.py, which reads params.yaml with ruamel.yaml: the package check runs
    first, from failures.py, which imports the standard library only."""
    result = run_stage_without("ruamel.yaml", tmp_path, "stages.init", "1")

    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines() == [
        f"error: init: cannot import ruamel with {sys.executable} (import of ruamel.yaml halted; None in "
        "sys.modules): the stages need the project's environment; activate it (source .venv/bin/activate) or "
        "run `make run`"]


def test_a_framework_that_cannot_be_imported_names_the_interpreter(tmp_path):
    from tests.trainer_contract import stage_project

    project = tmp_path / "project"
    project.mkdir()
    stage_project(project, "torch")
    before = sorted(path.relative_to(project) for path in project.rglob("*"))

    result = run_stage_without("torch", tmp_path, "stages.train", "torch", "1", cwd=project)

    assert_names_the_interpreter(result, "train", "torch")
    assert sorted(path.relative_to(project) for path in project.rglob("*")) == before


def test_a_bug_importing_a_project_module_still_shows_its_traceback(tmp_path):
    result = run_stage_without("stages.common.paths", tmp_path, "stages.init", "1")

    assert result.returncode == 1 and "Traceback" in result.stderr and "ModuleNotFoundError" in result.stderr


# The machine refusing a write (full disk, quota, read-only, no rights) anywhere in a stage: one line
# --------------------------------------------------------------------------------------------
def stage_failing_with(error: OSError):
    def main():
        raise error

    return main


@pytest.mark.parametrize(("error", "line"), [
    (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "dvclive/keras/1/plots/metrics/train/loss.tsv"),
     "error: probe: dvclive/keras/1/plots/metrics/train/loss.tsv: no space left on device"),
    (OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)), "error: probe: disk quota exceeded"),
    (PermissionError(errno.EACCES, os.strerror(errno.EACCES), "eval/torch/1"),
     "error: probe: eval/torch/1: permission denied"),
    (OSError(errno.EROFS, os.strerror(errno.EROFS), "reports"), "error: probe: reports: read-only file system"),
])
def test_a_write_the_machine_refuses_is_one_line_naming_the_file(error, line, capsys):
    with pytest.raises(SystemExit) as caught:
        run_stage(stage_failing_with(error), "probe")

    assert caught.value.code == 1
    assert capsys.readouterr().err.splitlines() == [line]


def test_other_os_errors_are_bugs_and_keep_their_traceback():
    with pytest.raises(IsADirectoryError):
        run_stage(stage_failing_with(IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), "data/raw/..")),
                  "probe")


def test_every_package_a_stage_module_imports_when_it_loads_is_checked_first():
    """``STAGE_PACKAGES`` holds every third-party package that a module of ``stages`` (outside the
    backends, which ``run_stage`` imports) imports at its top level: a new one left out would
    fail with a traceback in an interpreter that lacks it."""
    import ast

    from stages.common.failures import STAGE_PACKAGES

    loaded = set()
    for path in (PROJECT_ROOT / "stages").rglob("*.py"):
        if "backends" in path.relative_to(PROJECT_ROOT).parts:
            continue
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            loaded.update(name for name in names
                          if name.split(".")[0] not in sys.stdlib_module_names | {"stages", "__future__"})
    assert {name.split(".")[0] for name in loaded} <= {package.split(".")[0] for package in STAGE_PACKAGES}


def test_a_stage_logs_its_own_info_lines_and_other_packages_only_from_warning_up():
    """What a stage prints: its own INFO lines, another package's WARNING, not another package's INFO
    (torch.onnx's exporters log "No unused functions to remove" per export)."""
    program = ("import logging\n"
               "from stages.common.errors import run_stage\n"
               "def main():\n"
               "    logging.getLogger('export').info('wrote onnx/keras/1')\n"
               "    logging.getLogger('onnx_ir.passes.common.unused_removal').info('No unused functions to remove')\n"
               "    logging.getLogger('onnxscript.optimizer').warning('a warning of theirs')\n"
               "run_stage(main, 'export')\n")
    result = subprocess.run([sys.executable, "-c", program], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            timeout=120, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    assert result.returncode == 0, result.stderr
    assert [line.split(" ", 1)[1] for line in result.stderr.splitlines()] == [
        "export INFO wrote onnx/keras/1", "onnxscript.optimizer WARNING a warning of theirs"]


def test_every_logger_the_project_names_logs_at_info():
    """Each ``logging.getLogger("<name>")`` of stages/ that is the project's own is in PROJECT_LOGGERS
    (a new stage's logger left out would go quiet)."""
    third_party = {"jax", "torch.utils.cpp_extension"}  # configured by the backends, not the project's
    names = set()
    for path in (PROJECT_ROOT / "stages").rglob("*.py"):
        names |= set(re.findall(r'getLogger\("([^"]+)"\)', path.read_text()))
    assert names - third_party and names - third_party <= set(errors.PROJECT_LOGGERS)
