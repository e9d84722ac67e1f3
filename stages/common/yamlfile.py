"""Reading ``params.yaml`` with DVC's own parser: ruamel.yaml, ``YAML(typ="safe")``, as
``dvc/utils/serialize/_yaml.py`` (``parse_yaml``) configures it.

DVC reads params.yaml that way before it runs any stage, so one dialect decides what a file
means: YAML 1.2 numbers (``1e-05``, which DVC writes for ``-S train.learning_rate=0.00001``, is
a float; ``yes`` is a string), and whatever DVC refuses is refused here too, with a line that
says where. The C parser (ruamel.yaml.clib, libyaml) refuses an unquoted ``:`` inside ``[...]``
(``mirrors: [https://example.org/]``), where DVC only says "YAML file structure is corrupted".

Before anything is built, the file is checked as a stream of parser events, which costs as much
as the file is long: at most ``MAX_BYTES`` bytes, ``MAX_DEPTH`` nested collections, and
``MAX_NODES`` values once every alias is expanded (an alias bomb, ``a2: [*a1, *a1, ...]``, is a
short file that expands to billions of values). A key that appears twice in one mapping is
named with both lines (DVC refuses it too).

``read(path)`` and ``loads(text, source)`` raise ``StageError`` with one line naming the file and
where the problem is: not UTF-8 (the byte, its line and offset), not valid YAML (line and
column), a duplicate key, a limit passed. Everything in the project that reads params.yaml uses
them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent, CollectionEndEvent, CollectionStartEvent, MappingStartEvent, ScalarEvent
from ruamel.yaml.reader import ReaderError

from stages.common.failures import StageError

MAX_BYTES = 1 << 20  # params.yaml is a few kilobytes
MAX_DEPTH = 32  # nested mappings and lists; params.yaml nests 5 deep
MAX_NODES = 100_000  # values, aliases expanded


class LimitError(Exception):
    """The event stream passed one of the limits (``message`` names which, and where)."""


class DuplicateKeyError(LimitError):
    """A key appears twice in one mapping (``message`` names both places)."""


@dataclass
class _Collection:
    """A mapping or list being read: its expanded size so far, and for a mapping its keys."""

    anchor: str | None
    mapping: bool
    size: int = 1
    at_key: bool = True  # a mapping's next event is a key
    keys: dict[str, Any] = field(default_factory=dict)  # a plain or quoted scalar key -> its mark


def _where(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


def check_structure(text: str) -> None:
    """Walk the parser events of ``text``; raise LimitError past a limit or on a duplicate key.
    YAML errors are left to the loader, which reports them the same way (DVC's parser)."""
    anchors: dict[str, int] = {}  # anchor -> the number of values it stands for
    stack: list[_Collection] = []

    def add(size: int, event: Any) -> None:
        if stack:
            parent = stack[-1]
            parent.size += size
            if parent.size > MAX_NODES:
                alias = f" (alias *{event.anchor})" if isinstance(event, AliasEvent) else ""
                raise LimitError(f"{_where(event.start_mark)}{alias}: more than {MAX_NODES} values once aliases "
                                 "are expanded; refused before building them")
            if parent.mapping:
                parent.at_key = not parent.at_key

    for event in YAML(typ="safe").parse(text):
        if isinstance(event, CollectionStartEvent):
            if stack and stack[-1].mapping and stack[-1].at_key:
                stack[-1].keys.clear()  # a complex key: leave duplicates to the loader
            if len(stack) >= MAX_DEPTH:
                raise LimitError(f"{_where(event.start_mark)}: nested deeper than {MAX_DEPTH} levels")
            stack.append(_Collection(event.anchor, isinstance(event, MappingStartEvent)))
        elif isinstance(event, CollectionEndEvent):
            done = stack.pop()
            if done.anchor is not None:
                anchors[done.anchor] = done.size
            add(done.size, event)
        elif isinstance(event, ScalarEvent):
            if event.anchor is not None:
                anchors[event.anchor] = 1
            if stack and stack[-1].mapping and stack[-1].at_key:
                _check_key(stack[-1], event)
            add(1, event)
        elif isinstance(event, AliasEvent):
            add(anchors.get(event.anchor, 1), event)


def _check_key(mapping: _Collection, event: ScalarEvent) -> None:
    # A plain `1` and a quoted '1' are different keys (an integer and a string); two plain or two
    # quoted spellings of the same text are the same key.
    key = f"{'plain' if event.implicit[0] else 'quoted'}:{event.value}"
    first = mapping.keys.setdefault(key, event.start_mark)
    if first is not event.start_mark:
        raise DuplicateKeyError(f"{_where(event.start_mark)}: duplicate key {event.value!r} (first at {_where(first)})")


def loads(text: str, source: str) -> Any:
    """Parse YAML ``text`` read from ``source`` (named in the error); raise StageError on a problem."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise StageError(f"{source} is larger than {MAX_BYTES} bytes; a params file is a few kilobytes")
    try:
        check_structure(text)
        return YAML(typ="safe").load(text)
    except DuplicateKeyError as error:
        raise StageError(f"{source} is not valid YAML: {error}") from None
    except LimitError as error:
        raise StageError(f"{source} is refused: {error}") from None
    except YAMLError as error:
        raise StageError(f"{source} is not valid YAML: {problem(error, text)}") from None
    except RecursionError:  # a construct the limits above did not foresee: still one line
        raise StageError(f"{source} is refused: nested too deeply to read") from None


def read(path: str | Path) -> Any:
    """Read and parse the YAML file ``path``; raise StageError naming it on any problem."""
    path = Path(path)
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_BYTES + 1)
    except OSError as error:
        raise StageError(f"cannot read {path}: {error.strerror}") from None
    if len(data) > MAX_BYTES:
        raise StageError(f"{path} is larger than {MAX_BYTES} bytes; a params file is a few kilobytes")
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


def problem(error: YAMLError, text: str = "") -> str:
    """One line: where the parser stopped (1-based line and column), what it expected, and since where."""
    if isinstance(error, ReaderError):
        before = text[:error.position]
        column = error.position - (before.rfind("\n") + 1) + 1
        return f"line {before.count(chr(10)) + 1}, column {column}: {str(error).splitlines()[0]}"
    if not isinstance(error, MarkedYAMLError) or error.problem_mark is None:
        return str(error).strip().splitlines()[0]
    message = f"{_where(error.problem_mark)}: {error.problem}"
    if error.context and error.context_mark is not None:
        message += f" ({error.context} at {_where(error.context_mark)})"
    if error.problem == "found unexpected ':'" and error.context == "while scanning a plain scalar":
        message += "; quote a value that holds ':' (a URL) inside [...] or {...}, as DVC's parser requires"
    return message
