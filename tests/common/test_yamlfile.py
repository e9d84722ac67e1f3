"""The params loader: DVC's own parser (YAML 1.2 floats, what DVC refuses), duplicate keys, bad bytes and
hostile YAML (alias bombs, deep nesting, oversized files) refused in one line."""

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
                                 "control characters are not allowed")


def test_a_missing_file_names_it(tmp_path):
    with pytest.raises(StageError, match=rf"^cannot read {tmp_path / 'params.yaml'}: No such file"):
        yamlfile.read(tmp_path / "params.yaml")


# --------------------------------------------------------------------------------------------
# One dialect: what DVC's own parser (dvc.utils.serialize.parse_yaml) reads, and nothing else
# --------------------------------------------------------------------------------------------
DIALECT_CASES = [
    "mirrors: [https://mirror.internal.example/mnist/, /mnt/datasets/mnist]\n",  # docs/data.md's old example
    "mirrors: ['https://mirror.internal.example/mnist/', /mnt/datasets/mnist]\n",
    "mirrors:\n  - https://mirror.internal.example/mnist/\n  - /mnt/datasets/mnist\n",
    "data: {url: http://example.org/x}\n",
    "x: yes\ny: on\nz: 0o17\nw: 017\n",  # YAML 1.2: strings and octal as DVC reads them
    "x: 1e-05\ny: 1_000\n",
    "a: &x [1, 2]\nb: *x\n",
    "a: 1\nb: [1\n",
    "a: 1\n  b: 2\n",
    "x: \"\\q\"\n",
    "",
]


@pytest.mark.parametrize("text", DIALECT_CASES)
def test_the_project_reads_params_as_dvc_does(text):
    from dvc.utils.serialize import YAMLFileCorruptedError, parse_yaml

    try:
        dvc: object = parse_yaml(text, "params.yaml")
    except YAMLFileCorruptedError:
        dvc = "refused"
    try:
        ours: object = yamlfile.loads(text, "params.yaml") or {}
    except StageError:
        ours = "refused"

    assert ours == dvc


def test_an_unquoted_url_in_a_flow_list_is_refused_in_one_line_saying_to_quote_it():
    with pytest.raises(StageError) as caught:
        yamlfile.loads("data:\n  mirrors: [https://mirror.internal.example/mnist/, /mnt/datasets/mnist]\n",
                       "params.yaml")

    assert str(caught.value) == (
        "params.yaml is not valid YAML: line 2, column 18: found unexpected ':' (while scanning a plain scalar at "
        "line 2, column 13); quote a value that holds ':' (a URL) inside [...] or {...}, as DVC's parser requires")


# --------------------------------------------------------------------------------------------
# Hostile YAML: refused from the parser's events, before any object is built
# --------------------------------------------------------------------------------------------
def alias_bomb(levels: int, width: int = 9) -> str:
    """``a0`` holds ``width`` values, each ``a<i>`` ``width`` aliases of ``a<i-1>``: width**(levels+1) leaves."""
    lines = [f"a0: &a0 [{', '.join(['x'] * width)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + f"\nseed: *a{levels}\n"


def test_an_alias_bomb_is_refused_in_one_line_naming_the_alias():
    with pytest.raises(StageError) as caught:
        yamlfile.loads(alias_bomb(8), "params.yaml")  # 9**9 leaves: built, a MemoryError

    assert str(caught.value) == ("params.yaml is refused: line 6, column 15 (alias *a4): more than 100000 values "
                                 "once aliases are expanded; refused before building them")


def test_aliases_below_the_limit_are_read():
    loaded = yamlfile.loads(alias_bomb(3, width=10), "params.yaml")  # 10**4 leaves

    assert len(loaded["seed"]) == 10 and loaded["seed"][0][0][0] == ["x"] * 10


def test_deep_nesting_is_refused_in_one_line():
    text = "x: " + "[" * 1000 + "]" * 1000 + "\n"  # built: a RecursionError

    with pytest.raises(StageError) as caught:
        yamlfile.loads(text, "params.yaml")

    assert str(caught.value) == ("params.yaml is refused: line 1, column 35: nested deeper than 32 levels")


def test_nesting_up_to_the_limit_is_read():
    depth = yamlfile.MAX_DEPTH - 1  # the top-level mapping is the first level
    value = yamlfile.loads("x: " + "[" * depth + "]" * depth + "\n", "params.yaml")["x"]

    for _ in range(depth - 1):
        value = value[0]
    assert value == []


def test_a_file_over_the_size_limit_is_refused_before_it_is_parsed(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_bytes(b"x: [" + b"1, " * (yamlfile.MAX_BYTES // 3) + b"1]\n")

    with pytest.raises(StageError) as caught:
        yamlfile.read(path)

    assert str(caught.value) == f"{path} is larger than 1048576 bytes; a params file is a few kilobytes"


def test_every_yaml_example_in_the_docs_is_read_by_dvc_and_the_project():
    import re

    from dvc.utils.serialize import parse_yaml

    from tests.support import PROJECT_ROOT

    examples = [(path, match.group(1)) for path in sorted(PROJECT_ROOT.glob("**/*.md")) if ".venv" not in path.parts
                for match in re.finditer(r"```ya?ml\n(.*?)```", path.read_text(encoding="utf-8"), re.S)]

    assert any(path.name == "data.md" and "mirrors" in text for path, text in examples)
    for path, text in examples:
        assert yamlfile.loads(text, str(path)) == parse_yaml(text, str(path))
