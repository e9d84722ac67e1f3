"""The params loader: YAML 1.2 floats (what DVC writes with -S), duplicate keys and bad bytes refused."""

from __future__ import annotations

import pytest

from stages.common import yamlfile
from stages.common.errors import StageError


@pytest.mark.parametrize("text, number", [
    ("1e-05", 1e-05), ("5e-3", 5e-3), ("1E5", 1e5), (".5", 0.5), ("-2.5e-7", -2.5e-7), ("+1e+300", 1e300),
    ("2.5e3", 2500.0), ("1.0e-05", 1e-05), ("0.005", 0.005), ("-.5E-2", -0.005), ("1_000.5", 1000.5),
])
def test_exponent_forms_are_numbers(text, number):
    value = yamlfile.loads(f"x: {text}\n", "params.yaml")["x"]

    assert isinstance(value, float) and value == number


@pytest.mark.parametrize("text, value", [
    ("5", 5), ("-3", -3), ("1e", "1e"), ("e5", "e5"), ("1e5x", "1e5x"), ("'1e-05'", "1e-05"), ("0x1f", 31),
    ("abc1e5", "abc1e5"), (".inf", float("inf")), ("true", True), ("null", None),
])
def test_other_scalars_are_unchanged(text, value):
    loaded = yamlfile.loads(f"x: {text}\n", "params.yaml")["x"]

    assert loaded == value and type(loaded) is type(value)


def test_what_dvc_writes_with_set_param_reads_back_as_the_same_number(tmp_path):
    from dvc.utils.hydra import apply_overrides

    path = tmp_path / "params.yaml"
    path.write_text("train:\n  learning_rate: 0.005  # peak rate\n  batch_size: 128\n", encoding="utf-8")
    values = [0.00001, 5e-3, 1e5, 0.5, -2.5e-7, 1e300, 1e17, 3.0e-12]
    apply_overrides(str(path), [f"train.learning_rate={values[0]!r}"]
                    + [f"++train.v{index}={value!r}" for index, value in enumerate(values)])

    train = yamlfile.read(path)["train"]

    assert train["learning_rate"] == 0.00001
    assert [train[f"v{index}"] for index in range(len(values))] == values
    assert "1e-05" in path.read_text(encoding="utf-8")  # DVC's own spelling, which YAML 1.1 reads as a string


def test_a_duplicate_key_is_refused_with_both_lines():
    text = "seed: 42\ntrain:\n  epochs: 5\n  batch_size: 128\n  epochs: 6\n"

    with pytest.raises(StageError) as caught:
        yamlfile.loads(text, "params.yaml")

    assert str(caught.value) == ("params.yaml is not valid YAML: line 5, column 3: duplicate key 'epochs' "
                                 "(first at line 3, column 3)")


def test_a_duplicate_top_level_key_is_refused():
    with pytest.raises(StageError, match=r"line 3, column 1: duplicate key 'seed' \(first at line 1, column 1\)"):
        yamlfile.loads("seed: 42\nother: 1\nseed: 7\n", "params.yaml")


def test_the_same_key_in_different_mappings_is_fine():
    assert yamlfile.loads("a: {x: 1}\nb: {x: 2}\nc: [{x: 1}, {x: 2}]\n", "p") == {
        "a": {"x": 1}, "b": {"x": 2}, "c": [{"x": 1}, {"x": 2}]}


def test_a_non_utf8_byte_names_the_file_line_and_offset(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_bytes(b"seed: 42\ntrain:\n  optimizer: ad\xe9m\n")

    with pytest.raises(StageError) as caught:
        yamlfile.read(path)

    assert str(caught.value) == (f"{path} is not UTF-8 text: byte 0xe9 at line 3, column 16 (offset 31); "
                                 "save it as UTF-8")


def test_a_control_character_names_its_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_bytes(b"seed: 42\ntrain: \x07\n")

    with pytest.raises(StageError) as caught:
        yamlfile.read(path)

    assert str(caught.value) == (f"{path} is not valid YAML: line 2, column 8: unacceptable character #x0007: "
                                 "special characters are not allowed")


def test_a_missing_file_names_it(tmp_path):
    with pytest.raises(StageError, match=rf"^cannot read {tmp_path / 'params.yaml'}: No such file"):
        yamlfile.read(tmp_path / "params.yaml")
