"""stages/validate.py: the first stage checks every param and writes a marker that never changes."""

from __future__ import annotations

import pytest
import yaml

from stages import validate
from stages.common import paths
from stages.common.errors import StageError
from tests.support import project_params


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(project_params()))
    return tmp_path


def test_valid_params_write_the_constant_marker_once(workspace):
    validate.main([])
    marker = workspace / paths.VALIDATED
    assert marker.read_text() == validate.CONTENT
    stamp = marker.stat().st_mtime_ns
    validate.main([])
    assert marker.stat().st_mtime_ns == stamp  # unchanged content is not even rewritten


def test_invalid_params_stop_with_every_problem_and_leave_the_marker(workspace):
    validate.main([])
    raw = project_params()
    raw["report"]["dpi"] = 7
    raw["replicates"]["seeds"] = [1, 1]
    (workspace / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(StageError) as error:
        validate.main([])
    assert "report.dpi: expected a value of at least 50, got 7" in str(error.value)
    assert "replicates.seeds: each seed once, got [1, 1]" in str(error.value)
    assert (workspace / paths.VALIDATED).read_text() == validate.CONTENT


@pytest.mark.parametrize(("change", "message"), [
    (lambda raw: raw.update(frameworks=["keras", "mxnet"]), "frameworks[1]: unknown framework 'mxnet'"),
    (lambda raw: raw.update(frameworks=[]), "frameworks: expected at least 1 items"),
    (lambda raw: raw.pop("torch"), "torch: missing (expected a mapping of train: overrides"),
    (lambda raw: raw.update(torch=[1]), "torch: expected a mapping of train: overrides, got [1]"),
    (lambda raw: raw["replicates"].update(seeds=[-1]), "replicates.seeds[0]: expected a value from 0 to"),
    (lambda raw: raw["replicates"].update(seeds=[]), "replicates.seeds: expected at least 1 items"),
    (lambda raw: raw["replicates"].update(init="random"), "replicates.init: expected one of 'shared', 'framework'"),
    (lambda raw: raw.update(overrides={}), "overrides: unknown key"),
])
def test_frameworks_and_replicates_are_validated(workspace, change, message):
    raw = project_params()
    change(raw)
    (workspace / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(StageError) as error:
        validate.main([])
    assert message in str(error.value)
