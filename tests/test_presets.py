"""Each preset's ``-S key=value`` overrides, applied to params.yaml as ``dvc exp run`` does, validate."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from stages.common import yamlfile
from stages.common.params import validate
from tests.support import PROJECT_ROOT, project_params

PRESETS = sorted((PROJECT_ROOT / "presets").glob("*.args"))


def overrides(path: Path) -> list[tuple[str, object]]:
    """(dotted key, YAML value) for each ``-S key=value`` in a preset (Hydra's ``++`` prefix removed)."""
    arguments = shlex.split(path.read_text(encoding="utf-8"))
    assert len(arguments) % 2 == 0 and set(arguments[::2]) == {"-S"}, f"{path.name}: expected only -S key=value"
    pairs = [argument.split("=", 1) for argument in arguments[1::2]]
    return [(key.removeprefix("++"), yamlfile.loads(value, path.name)) for key, value in pairs]


def with_overrides(raw: dict, pairs: list[tuple[str, object]]) -> dict:
    for key, value in pairs:
        *parents, last = key.split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return raw


def test_the_presets_are_there():
    assert {path.name for path in PRESETS} >= {"tutorial.args", "quick.args"}


@pytest.mark.parametrize("preset", PRESETS, ids=[path.stem for path in PRESETS])
def test_preset_overrides_validate(preset):
    params = validate(with_overrides(project_params(), overrides(preset)))

    assert params is not None


def test_quick_preset_is_small():
    params = validate(with_overrides(project_params(), overrides(PROJECT_ROOT / "presets" / "quick.args")))

    assert params.preprocess.max_train <= 10_000 and params.preprocess.max_test <= 2_000
    assert params.train.epochs == 1 and len(params.replicates.seeds) == 1


def test_a_bad_override_is_refused():
    with pytest.raises(Exception, match=r"train.epochs: expected a value of at least 1, got 0"):
        validate(with_overrides(project_params(), [("train.epochs", 0)]))
