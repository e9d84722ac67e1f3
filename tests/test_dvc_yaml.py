"""dvc.yaml is the table of contents: check that it tells DVC the truth.

Every stage must list, as dependencies, each project module its command imports (directly or
through other project modules): a missing one would let DVC skip a stage whose code changed.
And every stage's params must exist in params.yaml.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from tests.support import PROJECT_ROOT, project_params

FRAMEWORKS = ("keras", "torch")


def expanded_stages() -> dict[str, dict]:
    raw = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())
    stages = {}
    for name, stage in raw["stages"].items():
        if "foreach" in stage:
            for item in stage["foreach"]:
                text = yaml.safe_dump(stage["do"]).replace("${item}", item)
                stages[f"{name}@{item}"] = yaml.safe_load(text)
        else:
            stages[name] = stage
    return stages


def project_imports(module: str, seen: set[str] | None = None) -> set[str]:
    """Project modules (stages.*) imported by ``module``, transitively, as file paths."""
    seen = set() if seen is None else seen
    path = PROJECT_ROOT / (module.replace(".", "/") + ".py")
    if module in seen or not path.is_file():
        return set()
    seen.add(module)
    found = {path.relative_to(PROJECT_ROOT).as_posix()}
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("stages"):
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names if alias.name.startswith("stages")]
        for name in names:
            found |= project_imports(name, seen)
    return found


def modules_of(command: str) -> list[str]:
    module = re.match(r"python -m (\S+)(?: (\S+))?", command)
    assert module, command
    names = [module.group(1)]
    if module.group(1) == "stages.evaluate":  # imports its framework's trainer by name
        names.append(f"stages.train_{module.group(2)}")
    return names


@pytest.mark.parametrize("stage_name", sorted(expanded_stages()))
def test_stage_lists_every_module_it_imports(stage_name):
    stage = expanded_stages()[stage_name]
    needed = set()
    for module in modules_of(stage["cmd"]):
        needed |= project_imports(module)
    needed -= {"stages/__init__.py", "stages/common/__init__.py"}
    missing = needed - set(stage["deps"])
    assert not missing, f"{stage_name} imports {sorted(missing)} but does not list them in dvc.yaml deps"


@pytest.mark.parametrize("stage_name", sorted(expanded_stages()))
def test_stage_params_exist_in_params_yaml(stage_name):
    params = project_params()
    for key in expanded_stages()[stage_name].get("params", []):
        node = params
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"{stage_name}: params.yaml has no {key}"
            node = node[part]


def test_no_stage_depends_on_the_mirror_list():
    for name, stage in expanded_stages().items():
        for key in stage.get("params", []):
            assert not key.startswith("data.mirrors") and key != "data", name


def test_every_stage_module_is_in_the_pipeline():
    commands = " ".join(stage["cmd"] for stage in expanded_stages().values())
    for path in Path(PROJECT_ROOT / "stages").glob("*.py"):
        if path.stem != "__init__":
            assert f"stages.{path.stem}" in commands, path
