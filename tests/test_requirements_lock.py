"""requirements.lock installs wherever a researcher works: resolved for each platform, nothing installed.

The lock is one file for every platform: exact pins, with environment markers on the packages
that only some platforms need (CUDA wheels and triton on Linux). For Linux x86_64 and macOS
arm64, uv resolves the lock as that platform would, from wheels only, and the result must be
exactly the lock's lines whose markers hold there: every dependency pinned, none missing, no
other version. (``pip install --dry-run --platform ...`` cannot check this from another
platform: pip evaluates markers for the interpreter running it, so on Linux it demands torch's
Linux-only CUDA packages for macOS too.) These tests need a package index and are skipped,
with the reason, where none is reachable.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support import PROJECT_ROOT

LOCK = PROJECT_ROOT / "requirements.lock"
DIRECT = PROJECT_ROOT / "requirements.txt"
# Packages published as source only; pure Python, so they install on every platform.
SOURCE_ONLY = ("antlr4-python3-runtime",)
# (uv's --python-platform, extra environment, marker values of that platform)
TARGETS = {
    "linux-x86_64": ("x86_64-manylinux_2_28", {}, {"sys_platform": "linux", "platform_system": "Linux",
                                                   "platform_machine": "x86_64"}),
    "macos-arm64": ("aarch64-apple-darwin", {"MACOSX_DEPLOYMENT_TARGET": "14.0"},
                    {"sys_platform": "darwin", "platform_system": "Darwin", "platform_machine": "arm64"}),
}
PYTHON = {"python_version": "3.11", "python_full_version": "3.11.7", "implementation_name": "cpython",
          "platform_python_implementation": "CPython", "os_name": "posix"}
GPU_ONLY = re.compile(r"^(nvidia-(?!ml-py$).*|triton|cuda-.*)$")  # nvidia-ml-py: pure Python


def lock_requirements() -> list[Requirement]:
    lines = [line.split("#", 1)[0].strip() for line in LOCK.read_text(encoding="utf-8").splitlines()]
    return [Requirement(line) for line in lines if line]


def pins_for(environment: dict[str, str]) -> dict[str, str]:
    """The lock's ``name: version`` for the lines whose marker holds in ``environment``."""
    return {canonicalize_name(requirement.name): str(requirement.specifier)[2:] for requirement in lock_requirements()
            if requirement.marker is None or requirement.marker.evaluate(environment)}


def index_url() -> str:
    return os.environ.get("UV_DEFAULT_INDEX") or os.environ.get("UV_INDEX_URL") or "https://pypi.org/simple/"


@pytest.fixture(scope="module")
def reachable_index() -> str:
    url = index_url()
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=5).close()  # noqa: S310
    except (urllib.error.URLError, OSError) as error:
        pytest.skip(f"no package index reachable at {url} ({error}): cannot resolve the lock for other platforms")
    return url


def uv() -> str:
    found = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    assert found, "uv is not installed: it is pinned in requirements.txt; run `make install`"
    return found


# --------------------------------------------------------------------------------------------
# Offline: the lock's form
# --------------------------------------------------------------------------------------------
def test_every_lock_line_is_an_exact_pin():
    loose = [str(requirement) for requirement in lock_requirements()
             if len(requirement.specifier) != 1 or next(iter(requirement.specifier)).operator != "=="]

    assert loose == []


def test_each_package_is_pinned_once_per_platform():
    for _, _, platform in TARGETS.values():
        environment = {**PYTHON, **platform}
        names = [canonicalize_name(requirement.name) for requirement in lock_requirements()
                 if requirement.marker is None or requirement.marker.evaluate(environment)]
        assert len(names) == len(set(names)), sorted(name for name in names if names.count(name) > 1)


def test_direct_requirements_are_locked_at_their_version():
    direct = [Requirement(line) for line in DIRECT.read_text(encoding="utf-8").splitlines()
              if line.strip() and not line.startswith("#")]
    locked = pins_for({**PYTHON, **TARGETS["linux-x86_64"][2]})

    assert {canonicalize_name(item.name): str(item.specifier)[2:] for item in direct}.items() <= locked.items()


def test_gpu_packages_are_marked_for_linux_only():
    macos = pins_for({**PYTHON, **TARGETS["macos-arm64"][2]})
    linux = pins_for({**PYTHON, **TARGETS["linux-x86_64"][2]})

    assert [name for name in macos if GPU_ONLY.match(name)] == []
    assert "triton" in linux and "nvidia-cudnn-cu13" in linux


# --------------------------------------------------------------------------------------------
# Online: resolve the lock as each platform would
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("target", list(TARGETS))
def test_lock_resolves_completely_for(target, reachable_index, tmp_path):
    platform_tag, extra_environment, markers = TARGETS[target]
    output = tmp_path / "resolved.txt"
    command = [uv(), "pip", "compile", str(LOCK), "--python-platform", platform_tag, "--python-version", "3.11",
               "--only-binary", ":all:", *[argument for name in SOURCE_ONLY for argument in ("--no-binary", name)],
               "--default-index", reachable_index, "--no-header", "--no-annotate", "--quiet", "-o", str(output)]
    result = subprocess.run(command, env={**os.environ, **extra_environment}, capture_output=True, text=True,
                            timeout=600)

    assert result.returncode == 0, f"{target}: the lock does not resolve:\n{result.stderr}"
    resolved = {canonicalize_name(name): version for name, version in
                re.findall(r"^([A-Za-z0-9._-]+)==(\S+)", output.read_text(encoding="utf-8"), flags=re.MULTILINE)}
    assert resolved == pins_for({**PYTHON, **markers})
    assert resolved["torch"] == "2.14.1" and resolved["tensorflow"] == "2.21.0"


def test_dvc_reads_its_yaml_files_with_the_c_parser():
    """ruamel.yaml.clib is installed, so DVC's ``YAML(typ="safe")`` parses dvc.yaml and dvc.lock
    with libyaml's C code: a no-op ``dvc repro`` of this pipeline spent most of its time in the
    pure-Python parser (BENCHMARKS.md)."""
    from dvc.utils.serialize import _yaml
    from ruamel.yaml import YAML

    assert _yaml.parse_yaml("stages: {a: {cmd: echo}}", "dvc.yaml") == {"stages": {"a": {"cmd": "echo"}}}
    parser = YAML(typ="safe")  # what parse_yaml builds
    parser.load("a: 1")
    assert parser.Parser.__name__ == "CParser"
