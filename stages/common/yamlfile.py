"""Reading ``params.yaml`` the way DVC writes it: YAML 1.2 numbers, no duplicate keys, UTF-8.

PyYAML implements YAML 1.1, whose float needs a dot and a signed exponent: it reads ``1e-05``,
``5e-3`` and ``1E5`` as strings. DVC (ruamel.yaml, YAML 1.2) writes ``1e-05`` for
``dvc exp run -S train.learning_rate=0.00001``. ``Loader`` is PyYAML's safe loader with the YAML
1.2 exponent forms added to its float resolver (``1e-05``, ``5e-3``, ``1E5``, ``.5e1``, ``2.5E3``);
everything YAML 1.1 reads as a number still is one. It also refuses a key that appears twice in
one mapping (PyYAML keeps the last silently; DVC refuses the file), naming both lines.

``read(path)`` and ``loads(text, source)`` raise ``StageError`` with one line naming the file and
where the problem is: not UTF-8 (the byte, its line and offset), not valid YAML (line and
column), a duplicate key. Everything in the project that reads params.yaml uses them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode

from stages.common.errors import StageError

FLOAT_TAG = "tag:yaml.org,2002:float"
# YAML 1.2's exponent forms that YAML 1.1 lacks: an exponent without a dot, or with an unsigned
# exponent. An exponent is required, so plain integers stay integers.
EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$")


class Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with YAML 1.2 exponent floats, refusing duplicate keys."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if first is not key_node:
                mark = first.start_mark
                raise ConstructorError(None, None, f"duplicate key {key!r} (first at line {mark.line + 1}, "
                                       f"column {mark.column + 1})", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


Loader.add_implicit_resolver(FLOAT_TAG, EXPONENT_FLOAT, list("-+0123456789."))


def loads(text: str, source: str) -> Any:
    """Parse YAML ``text`` read from ``source`` (named in the error); raise StageError on a problem."""
    try:
        return yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        raise StageError(f"{source} is not valid YAML: {problem(error, text)}") from None


def read(path: str | Path) -> Any:
    """Read and parse the YAML file ``path``; raise StageError naming it on any problem."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise StageError(f"cannot read {path}: {error.strerror}") from None
    return loads(decode(data, str(path)), str(path))


def decode(data: bytes, source: str) -> str:
    """UTF-8 ``data`` as text; StageError naming the first bad byte, its line, column and offset."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line_start = data.rfind(b"\n", 0, error.start) + 1
        line = data.count(b"\n", 0, error.start) + 1
        raise StageError(f"{source} is not UTF-8 text: byte 0x{data[error.start]:02x} at line {line}, column "
                         f"{error.start - line_start + 1} (offset {error.start}); save it as UTF-8") from None


def problem(error: yaml.YAMLError, text: str = "") -> str:
    """One line: where the parser stopped (1-based line and column), what it expected, and since where."""
    if isinstance(error, yaml.reader.ReaderError):
        before = text[:error.position]
        column = error.position - (before.rfind("\n") + 1) + 1
        return f"line {before.count(chr(10)) + 1}, column {column}: {str(error).splitlines()[0]}"
    if not isinstance(error, yaml.MarkedYAMLError) or error.problem_mark is None:
        return str(error).splitlines()[0]
    mark = error.problem_mark
    message = f"line {mark.line + 1}, column {mark.column + 1}: {error.problem}"
    if error.context and error.context_mark is not None:
        context = error.context_mark
        message += f" ({error.context} at line {context.line + 1}, column {context.column + 1})"
    return message
