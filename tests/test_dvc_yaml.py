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

from stages.common import frameworks
from tests.support import PROJECT_ROOT, project_params


def substituted(body: dict, replacements: dict[str, str]) -> dict:
    text = yaml.safe_dump(body)
    for placeholder, value in replacements.items():
        text = text.replace(placeholder, value)
    return yaml.safe_load(text)


def expanded_stages() -> dict[str, dict]:
    """dvc.yaml's stages with foreach and matrix expanded from params.yaml and each stage's own
    ``vars`` substituted, as DVC names and resolves them (its YAML aliases are PyYAML's too)."""
    raw = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())
    params = project_params()
    lists = {"${replicates.seeds}": params["replicates"]["seeds"], "${frameworks}": params["frameworks"],
             "${replicates.tuned_seeds}": params["replicates"]["tuned_seeds"]}
    stages = {}
    for name, stage in raw["stages"].items():
        variables = {f"${{{key}}}": str(value) for entry in stage.get("vars", []) for key, value in entry.items()}
        body = {key: value for key, value in stage.items() if key not in ("vars", "matrix")}
        if "foreach" in stage:
            for item in lists[stage["foreach"]]:
                stages[f"{name}@{item}"] = substituted(stage["do"], {**variables, "${item}": str(item)})
        elif "matrix" in stage:
            frameworks, seeds = lists[stage["matrix"]["framework"]], lists[stage["matrix"]["seed"]]
            for framework in frameworks:
                for seed in seeds:
                    stages[f"{name}@{seed}-{framework}"] = substituted(
                        body, {**variables, "${item.framework}": framework, "${item.seed}": str(seed)})
        else:
            stages[name] = substituted(body, variables)
    return stages


def dependency_paths(stage: dict) -> set[str]:
    return {next(iter(dep)) if isinstance(dep, dict) else dep for dep in stage["deps"]}


def runtime_nodes(tree: ast.AST):
    """Every node except those under ``if TYPE_CHECKING:`` (imports the type checker alone reads)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            continue
        yield node
        yield from runtime_nodes(node)


def project_imports(module: str, seen: set[str] | None = None) -> set[str]:
    """Project modules (stages.*) imported by ``module``, transitively, as file paths."""
    seen = set() if seen is None else seen
    path = PROJECT_ROOT / (module.replace(".", "/") + ".py")
    if not path.is_file():  # a package: its __init__.py
        path = PROJECT_ROOT / module.replace(".", "/") / "__init__.py"
    if module in seen or not path.is_file():
        return set()
    seen.add(module)
    found = {path.relative_to(PROJECT_ROOT).as_posix()}
    for node in runtime_nodes(ast.parse(path.read_text())):
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
    if (PROJECT_ROOT / module.group(1).replace(".", "/") / "__main__.py").is_file():  # a package stage
        names.append(f"{module.group(1)}.__main__")
    if module.group(1) in ("stages.train", "stages.evaluate", "stages.export"):  # load their backend by name
        names.append(f"stages.backends.{module.group(2)}")
    return names


def covered(path: str, deps: set[str]) -> bool:
    """A module is covered by its own path or by a listed folder holding it."""
    return path in deps or any(path.startswith(f"{dep.rstrip('/')}/") for dep in deps)


# The registry's names and labels decide only which frameworks params.yaml may name, which `validate`
# decides first, and the labels `report` prints: no other stage's outputs depend on them, so a line
# added for a new framework must rerun no data stage and no other framework's training.
REGISTRY_FILE = "stages/common/frameworks.py"
REGISTRY_READERS = ("validate", "report")


@pytest.mark.parametrize("stage_name", sorted(expanded_stages()))
def test_stage_lists_every_module_it_imports(stage_name):
    stage = expanded_stages()[stage_name]
    needed = set()
    for module in modules_of(stage["cmd"]):
        needed |= project_imports(module)
    needed -= {"stages/__init__.py", "stages/common/__init__.py"}
    if stage_name not in REGISTRY_READERS:
        needed -= {REGISTRY_FILE}
    missing = {path for path in needed if not covered(path, dependency_paths(stage))}
    assert not missing, f"{stage_name} imports {sorted(missing)} but does not list them in dvc.yaml deps"


@pytest.mark.parametrize("stage_name", sorted(expanded_stages()))
def test_stage_params_exist_in_params_yaml(stage_name):
    params = project_params()
    for key in expanded_stages()[stage_name].get("params", []):
        if isinstance(key, dict):  # `params.yaml:` alone: the whole file
            assert list(key) == ["params.yaml"] and not key["params.yaml"], key
            continue
        node = params
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"{stage_name}: params.yaml has no {key}"
            node = node[part]


def test_no_stage_depends_on_the_mirror_list():
    for name, stage in expanded_stages().items():
        for key in stage.get("params", []):
            if name == "validate":  # reads every param, and triggers nothing downstream
                continue
            assert not key.startswith("data.mirrors") and key != "data", name


def test_every_stage_module_is_in_the_pipeline():
    commands = " ".join(stage["cmd"] for stage in expanded_stages().values())
    for path in Path(PROJECT_ROOT / "stages").glob("*.py"):
        if path.stem != "__init__":
            assert f"stages.{path.stem}" in commands, path
    for path in Path(PROJECT_ROOT / "stages").glob("*/__main__.py"):  # a stage's package
        if path.parent.name != "reproduce":  # checks the committed results; no pipeline stage
            assert f"stages.{path.parent.name}" in commands, path
    assert "stages.report" in commands


def test_every_framework_and_seed_has_its_train_and_evaluate_stage():
    params = project_params()
    names = set(expanded_stages())
    for framework in params["frameworks"]:
        for seed in params["replicates"]["seeds"]:
            assert {f"train@{seed}-{framework}", f"evaluate@{seed}-{framework}", f"init@{seed}"} <= names
        for seed in params["replicates"]["tuned_seeds"]:
            assert {f"train-tuned@{seed}-{framework}", f"evaluate-tuned@{seed}-{framework}"} <= names


def test_each_tuned_stage_runs_its_level_into_the_tuned_arms_folders():
    from stages.common import paths

    stages = expanded_stages()
    for name, stage in stages.items():
        kind, _, replicate = name.partition("@")
        if kind not in ("train-tuned", "evaluate-tuned"):
            continue
        seed, framework = replicate.split("-", 1)
        assert stage["cmd"].endswith(" --tuning tuned"), name
        assert paths.stage(kind.removesuffix("-tuned"), framework, int(seed), "tuned") == name
        outs = {next(iter(out)) if isinstance(out, dict) else out for out in stage["outs"]}
        folder = paths.model_dir if kind == "train-tuned" else paths.eval_dir
        assert any(out.startswith(str(folder(framework, int(seed), "tuned"))) for out in outs), name


def test_the_paths_module_and_dvc_yaml_name_the_same_outputs():
    from stages.common import paths

    stages = expanded_stages()
    outs = {next(iter(out)) if isinstance(out, dict) else out for stage in stages.values()
            for out in stage.get("outs", [])}
    assert str(paths.model_dir("keras", 1)) in outs and str(paths.logs_dir("torch", 2)) in outs
    assert str(paths.init_weights(3)) in outs and str(paths.REPORTS) in outs and str(paths.VALIDATED) in outs
    assert str(paths.eval_dir("torch", 1) / paths.PREDICTIONS_FILE) in outs
    raw = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())
    assert raw["metrics"] == [str(paths.SUMMARY_METRICS)]


def test_every_stage_but_validate_follows_validate():
    for name, stage in expanded_stages().items():
        if name != "validate":
            assert "data/params.ok" in dependency_paths(stage), name


def test_every_report_figure_is_a_dvc_plot():
    from stages.report.figures import FIGURES

    raw = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())
    declared = {entry if isinstance(entry, str) else next(iter(entry)) for entry in raw["plots"]}
    assert {f"reports/{figure.file}" for figure in FIGURES} <= declared


def test_the_registry_is_read_only_where_its_names_matter():
    stages = expanded_stages()
    for name in REGISTRY_READERS:
        assert REGISTRY_FILE in dependency_paths(stages[name]), f"{name} must list {REGISTRY_FILE}"
    for name in ("download", "preprocess", f"init@{project_params()['replicates']['seeds'][0]}"):
        assert not {REGISTRY_FILE, "stages/backends/__init__.py"} & dependency_paths(stages[name]), name


def test_every_registered_framework_has_its_backend_module_and_params_section():
    """dvc.yaml's train and evaluate stages list ``stages/backends/<name>/`` (each backend is a
    package); the report and each framework's stages read the framework's params section."""
    raw = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())
    report_params = raw["stages"]["report"]["params"]
    for framework, (module, _) in frameworks.REGISTRY.items():
        assert module == f"stages.backends.{framework}", f"{framework}: its backend is stages/backends/{framework}/"
        assert (PROJECT_ROOT / "stages" / "backends" / framework / "__init__.py").is_file()
        assert project_params().get(framework) == {}, f"params.yaml: add `{framework}: {{}}` (its overrides)"
        assert framework in report_params, f"dvc.yaml: add {framework} to the report stage's params"


def test_every_framework_model_is_a_registered_artifact():
    """Every registered framework, whether params.yaml runs it by default or not (an experiment may).
    DVC's artifact names allow no underscore: keras_jax's is keras-jax-model."""
    raw = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())
    for framework in frameworks.names():
        name = f"{framework.replace('_', '-')}-model"
        assert name in raw["artifacts"], (
            f"dvc.yaml: add an artifact {name} (path: models/{framework}, type: model, desc, labels, "
            f"meta: {{framework: {framework}}})")
        artifact = raw["artifacts"][name]
        assert artifact["type"] == "model" and artifact["path"] == f"models/{framework}"
        assert artifact["meta"]["framework"] == framework and artifact["desc"] and artifact["labels"]


def test_every_framework_onnx_export_is_a_registered_artifact():
    """``dvc artifacts get . <framework>-onnx`` fetches the exports of every replicate seed (docs/onnx.md)."""
    from stages.common import paths

    raw = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())
    outs = {next(iter(out)) if isinstance(out, dict) else out for stage in expanded_stages().values()
            for out in stage.get("outs", [])}
    for framework in frameworks.names():
        artifact = raw["artifacts"].get(f"{framework.replace('_', '-')}-onnx")
        assert artifact, f"dvc.yaml: add an artifact {framework.replace('_', '-')}-onnx (path: onnx/{framework})"
        assert artifact["type"] == "model" and artifact["path"] == str(paths.ONNX / framework)
        assert artifact["meta"] == {"framework": framework, "format": "onnx"} and artifact["labels"]
    for framework in project_params()["frameworks"]:
        assert str(paths.onnx_dir(framework, 1)) in outs


def test_the_matrix_runs_seed_by_seed_so_that_frameworks_alternate():
    """DVC runs a matrix's stages in its expansion order: seed first keeps no framework's
    replicates all together (a machine that slows down mid-run would slow one framework only)."""
    raw = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())
    for name in ("train", "train-tuned", "evaluate", "evaluate-tuned", "export", "export-tuned"):
        assert list(raw["stages"][name]["matrix"]) == ["seed", "framework"], name


def test_the_committed_lock_records_only_stages_of_the_pipeline():
    """DVC never prunes a stage it no longer runs from dvc.lock: stale entries would show users
    results of stages that no longer exist (and cost every `dvc` command their parsing)."""
    lock = yaml.safe_load((PROJECT_ROOT / "dvc.lock").read_text())
    assert set(lock["stages"]) == set(expanded_stages())


def test_the_restore_hint_names_each_replicate_stages_cached_and_git_kept_outputs():
    from stages.common import paths

    for name, stage in expanded_stages().items():
        kind, _, replicate = name.partition("@")
        if kind.removesuffix("-tuned") not in ("train", "evaluate"):
            continue
        seed, framework = replicate.split("-", 1)
        tuning = "tuned" if kind.endswith("-tuned") else "stock"
        outs = [next(iter(out.items())) if isinstance(out, dict) else (out, {}) for out in stage["outs"]]
        cached = [path for path, options in outs if (options or {}).get("cache", True)]
        in_git = [path for path, options in outs if not (options or {}).get("cache", True)]

        assert paths.replicate_outputs(kind.removesuffix("-tuned"), framework, int(seed), tuning) == (
            [Path(path) for path in cached], [Path(path) for path in in_git]), name
        assert paths.restore_hint(kind.removesuffix("-tuned"), framework, int(seed), tuning).endswith(
            f"`dvc checkout {' '.join(cached)}` and `git checkout -- {' '.join(in_git)}` bring them back"), name


def test_the_stage_outputs_are_dvc_yamls_for_every_stage():
    """What an interrupted stage says DVC removed, and restores, is what dvc.yaml declares."""
    from stages.common import paths

    for name, stage in expanded_stages().items():
        outs = [next(iter(out.items())) if isinstance(out, dict) else (out, {}) for out in stage["outs"]]
        cached = [Path(path) for path, options in outs if (options or {}).get("cache", True)]
        in_git = [Path(path) for path, options in outs if not (options or {}).get("cache", True)]
        assert paths.stage_outputs(name) == (cached, in_git), name
        assert ("`dvc checkout " + name + "`" in paths.restore_commands(name)) == bool(cached), name
