"""tests/conftest.py: the real datasets are optional on a clone, required in CI; the frameworks a run covers."""

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


def test_the_selected_frameworks_are_all_registered_ones_unless_named(monkeypatch):
    from stages.common import frameworks
    from tests.support import selected_frameworks

    monkeypatch.setenv("COMPARISON_TEST_ONLY", "")
    assert selected_frameworks() == list(frameworks.names())
    monkeypatch.setenv("COMPARISON_TEST_ONLY", "torch;keras")
    assert selected_frameworks() == ["torch", "keras"]


def test_an_unregistered_framework_named_for_a_run_stops_it_naming_the_registered_ones(monkeypatch):
    from tests.support import selected_frameworks

    monkeypatch.setenv("COMPARISON_TEST_ONLY", "torch;mxnet")
    with pytest.raises(SystemExit, match=r"--framework mxnet: not a registered framework; registered: keras, torch"):
        selected_frameworks()


def test_an_extra_framework_is_registered_for_the_run_with_its_label(monkeypatch):
    from stages.common import frameworks
    from tests.support import register_extra_frameworks

    monkeypatch.setattr(frameworks, "REGISTRY", dict(frameworks.REGISTRY))
    monkeypatch.setenv("COMPARISON_TEST_FRAMEWORKS", "numpy=tests.numpy_backend:NumPy;other=tests.other")
    register_extra_frameworks()
    assert frameworks.names()[-2:] == ("numpy", "other")
    assert frameworks.label("numpy") == "NumPy" and frameworks.label("other") == "other"
