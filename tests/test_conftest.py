"""tests/conftest.py: the real datasets are optional on a clone, required in CI."""

from __future__ import annotations

import pytest

from tests.conftest import shared_dataset


def test_missing_real_dataset_skips_outside_ci(tmp_path, monkeypatch):
    monkeypatch.delenv("CI", raising=False)

    with pytest.raises(pytest.skip.Exception, match="not found"):
        shared_dataset("mnist", root=tmp_path)


@pytest.mark.parametrize("value", ["true", "True", "1"])
def test_missing_real_dataset_fails_in_ci(tmp_path, monkeypatch, value):
    monkeypatch.setenv("CI", value)

    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        shared_dataset("mnist", root=tmp_path)


def test_present_real_dataset_is_returned_in_ci(tmp_path, monkeypatch):
    monkeypatch.setenv("CI", "true")
    (tmp_path / "mnist").mkdir()

    assert shared_dataset("mnist", root=tmp_path) == tmp_path / "mnist"
