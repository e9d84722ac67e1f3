"""stages/validate.py: the first stage checks every param and writes a marker that never changes."""

from __future__ import annotations

import pytest
import yaml

from stages import validate
from stages.common import paths
from stages.common.errors import StageError
from tests.support import custom_params, make_dataset, project_params


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


# --------------------------------------------------------------------------------------------
# What params alone decide beyond their schema is refused here, before DVC removes any output
# (the stage that would refuse it runs the same function)
# --------------------------------------------------------------------------------------------
def refused(workspace, raw) -> str:
    (workspace / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(StageError) as error:
        validate.main([])
    assert not (workspace / paths.VALIDATED).exists()
    return str(error.value)


def shrinking_model(raw: dict) -> dict:
    """Two conv blocks of kernel 5 pooling by 4: 28 -> 24 -> 6 -> 2 -> 0 on MNIST's 28x28 images."""
    for block in raw["model"]["conv_blocks"]:
        block.update(kernel_size=5, pool=4)
    return raw


def test_a_model_that_shrinks_a_known_datasets_images_to_nothing_is_refused(workspace):
    message = refused(workspace, shrinking_model(project_params()))

    assert message == ("1 problem(s) in params.yaml:\n  params.yaml: model.conv_blocks[1]: pooling by 4 shrinks the "
                       "feature map to 0x0; use a smaller pool or fewer blocks")


def test_a_custom_datasets_image_size_is_left_to_the_stage(workspace, generated):
    raw = shrinking_model(custom_params(generated.custom, [str(generated.folder)]))
    (workspace / "params.yaml").write_text(yaml.safe_dump(raw))

    validate.main([])  # the images' size is in the data files, which validate does not read

    assert (workspace / paths.VALIDATED).read_text() == validate.CONTENT


@pytest.mark.parametrize("dataset", ["mnist", "custom"])
def test_max_train_too_small_for_a_validation_image_is_refused(workspace, generated, dataset):
    raw = custom_params(generated.custom, [str(generated.folder)]) if dataset == "custom" else project_params()
    raw["preprocess"].update(max_train=10, val_fraction=0.1)

    message = refused(workspace, raw)

    assert message == ("1 problem(s) in params.yaml:\n  params.yaml: preprocess.max_train: 10 training images over "
                       "10 classes can leave the validation split empty (at val_fraction 0.1 a class needs 6 "
                       "images for one validation image); use at least 51, or a larger preprocess.val_fraction")


def test_max_train_that_guarantees_a_validation_image_passes(workspace):
    raw = project_params()
    raw["preprocess"].update(max_train=51, val_fraction=0.1)
    (workspace / "params.yaml").write_text(yaml.safe_dump(raw))

    validate.main([])

    assert (workspace / paths.VALIDATED).read_text() == validate.CONTENT


def test_every_decidable_problem_is_listed_at_once(workspace):
    raw = shrinking_model(project_params())
    raw["preprocess"].update(max_train=10)

    lines = refused(workspace, raw).splitlines()

    assert lines[0] == "2 problem(s) in params.yaml:"
    assert [line.split(":")[1] for line in lines[1:]] == [" model.conv_blocks[1]", " preprocess.max_train"]


def test_two_custom_files_of_one_name_are_refused_before_download(workspace):
    custom = make_dataset(workspace / "mirror", n_train=20, n_test=10)
    custom["files"]["test_labels"]["name"] = custom["files"]["train_labels"]["name"]
    (workspace / "params.yaml").write_text(yaml.safe_dump(custom_params(custom, [str(workspace / "mirror")])))

    with pytest.raises(StageError) as error:
        validate.main([])

    assert str(error.value) == (
        f"1 problem(s) in params.yaml:\n  params.yaml: data.custom.files.test_labels.name: "
        f"{custom['files']['train_labels']['name']!r} is also train_labels's name; each file needs its own name on "
        "the mirror")
    assert not (workspace / paths.VALIDATED).exists()
