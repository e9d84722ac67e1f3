"""Every stage has a real command line: --help says what it reads and writes and touches
nothing; an unknown argument is refused with a usage line and exit status 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support import PROJECT_ROOT

STAGES = {  # module -> arguments it needs besides --help
    "stages.validate": [], "stages.download": [], "stages.preprocess": [], "stages.init": ["1"],
    "stages.train": ["torch", "1"], "stages.evaluate": ["torch", "1"], "stages.report": [],
}


def run(tmp_path, *arguments):
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", *arguments], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("module", sorted(STAGES))
def test_help_describes_the_stage_and_touches_nothing(tmp_path, module):
    result = run(tmp_path, module, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: python -m {module}")
    assert "Reads" in result.stdout and "Writes" in result.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("module", sorted(STAGES))
def test_help_shows_no_restructuredtext_markup(tmp_path, module):
    result = run(tmp_path, module, "--help")
    assert result.returncode == 0, result.stderr
    assert "``" not in result.stdout
    assert "`params.yaml`" in result.stdout


@pytest.mark.parametrize("module", sorted(module for module, needed in STAGES.items() if needed))
def test_an_unknown_flag_is_named_before_missing_arguments(tmp_path, module):
    result = run(tmp_path, module, "--bogus")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == f"python -m {module}: error: unrecognized arguments: --bogus"
    assert "required" not in result.stderr


def test_an_abbreviated_flag_is_still_accepted(tmp_path):
    result = run(tmp_path, "stages.train", "--tun", "bogus")
    assert result.returncode == 2
    assert "argument --tuning: invalid choice: 'bogus'" in result.stderr


@pytest.mark.parametrize("module", sorted(STAGES))
def test_an_unknown_argument_is_refused_with_a_usage_line(tmp_path, module):
    result = run(tmp_path, module, *STAGES[module], "--frobnicate")
    assert result.returncode == 2
    assert f"usage: python -m {module}" in result.stderr and "unrecognized arguments: --frobnicate" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("arguments", "message"), [
    (["stages.train", "torch", "one"], "expected a whole-number seed, got 'one'"),
    (["stages.evaluate", "keras", "-4"], "expected a seed from 0 to"),
])
def test_a_bad_seed_is_refused_before_any_work(tmp_path, arguments, message):
    result = run(tmp_path, *arguments)
    assert result.returncode == 2 and message in result.stderr
