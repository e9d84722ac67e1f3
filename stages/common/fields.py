"""The project's one validator: a frozen dataclass built from a parsed mapping, checking types,
ranges, allowed values, missing and unknown keys at every level, every problem one line
(``<key>: expected ..., got ...``). It checks both kinds of input a stage reads:

- ``params.yaml`` (``params.py`` declares its sections with ``checked``/``optional_field``, the
  limits riding in each field's metadata, and builds them with ``build``);
- the JSON records stages write and read back (``schemas.py``: ``TrainingSummary``, ``RunInfo``,
  ... built by ``schemas.from_dict``, a field with a default being one a file may leave out).

Annotations understood: ``int``, ``float`` (finite; a whole number reads as a float), ``bool``,
``str``, ``Literal[...]``, ``X | None``, ``tuple[X, ...]`` and ``list[X]`` (a list), ``dict[K, V]``
(a mapping, keys and values checked), ``Any`` (anything) and nested dataclasses. Why hand-written
rather than pydantic: docs/design.md, "Validation: one hand-written checker".
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class Rules:
    """Which fields (``(class name, field name)``) may be left out, and which the file must not set."""

    optional: frozenset[tuple[str, str]] = frozenset()
    refused: frozenset[tuple[str, str]] = frozenset()
    refused_reason: str = "not allowed here"


def limits(minimum: float | None = None, maximum: float | None = None, *, exclusive_min: bool = False,
           exclusive_max: bool = False, pattern: str | None = None, min_items: int | None = None,
           max_items: int | None = None, items: dict | None = None) -> dict:
    """Field metadata understood by the validator (``items``: the same checks for each list item)."""
    return {"minimum": minimum, "maximum": maximum, "exclusive_min": exclusive_min,
            "exclusive_max": exclusive_max, "pattern": pattern, "min_items": min_items,
            "max_items": max_items, "items": items}


def checked(**kwargs: Any) -> Any:
    """A required field with these limits."""
    return field(metadata=limits(**kwargs))


def optional_field(**kwargs: Any) -> Any:
    """A field that may be left out (None), with these limits."""
    return field(default=None, metadata=limits(**kwargs))


def type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        arguments = typing.get_args(annotation)
        names = [type_name(argument) for argument in arguments if argument is not type(None)]
        return " or ".join(names + (["null"] if type(None) in arguments else []))
    if annotation is int:
        return "an integer"
    if annotation is float:
        return "a number"
    if annotation is bool:
        return "true or false"
    if annotation is str:
        return "a string"
    if origin is Literal:
        return "one of " + ", ".join(repr(choice) for choice in typing.get_args(annotation))
    if origin in (tuple, list):
        return "a list"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(annotation):
        return "a mapping"
    return str(annotation)


def _convert(value: Any, annotation: Any, key: str, problems: list[str], rules: Rules,
             metadata: Any = None) -> Any:
    """Check ``value`` against ``annotation``; append problems; return the typed value."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        arguments = [argument for argument in typing.get_args(annotation) if argument is not type(None)]
        if len(arguments) != 1:  # X | None only: which of two types a value was meant to be is guesswork
            raise TypeError(f"unsupported field type {annotation!r}")
        if value is None:
            return None
        return _convert(value, arguments[0], key, problems, rules, metadata)
    if value is None:
        problems.append(f"{key}: expected {type_name(annotation)}, got null")
        return None
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        return build(annotation, value, key, problems, rules)
    if origin is Literal:
        choices = typing.get_args(annotation)
        if value not in choices or isinstance(value, bool):
            problems.append(f"{key}: expected {type_name(annotation)}, got {value!r}")
        return value
    if origin in (tuple, list):  # tuple[X, ...] or list[X]: a list in the file
        if not isinstance(value, list):
            problems.append(f"{key}: expected a list, got {value!r}")
            return origin()
        item_type = typing.get_args(annotation)[0]
        item_checks = metadata.get("items") if metadata else None
        items = origin(_convert(item, item_type, f"{key}[{index}]", problems, rules, item_checks)
                       for index, item in enumerate(value))
        if metadata and metadata.get("min_items") is not None and len(items) < metadata["min_items"]:
            problems.append(f"{key}: expected at least {metadata['min_items']} items, got {len(items)}")
        if metadata and metadata.get("max_items") is not None and len(items) > metadata["max_items"]:
            problems.append(f"{key}: expected at most {metadata['max_items']} items, got {len(items)}")
        return items
    if origin is dict:
        if not isinstance(value, dict):
            problems.append(f"{key}: expected a mapping, got {value!r}")
            return {}
        key_type, value_type = typing.get_args(annotation)
        return {_convert(name, key_type, f"{key} key", problems, rules):
                _convert(item, value_type, f"{key}.{name}", problems, rules) for name, item in value.items()}
    if annotation is bool:
        if not isinstance(value, bool):
            problems.append(f"{key}: expected true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{key}: expected an integer, got {value!r}")
            return value
    elif annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"{key}: expected a number, got {value!r}")
            return value
        if value != value or value in (float("inf"), float("-inf")):
            problems.append(f"{key}: expected a finite number, got {value!r}")
            return value
        value = float(value)
    elif annotation is not str:
        raise TypeError(f"unsupported field type {annotation!r}")  # a bug in a dataclass, not in the file
    elif not isinstance(value, str):
        problems.append(f"{key}: expected a string, got {value!r}")
        return value
    if metadata:
        _check_bounds(value, key, metadata, problems)
    return value


def _check_bounds(value: Any, key: str, metadata: Any, problems: list[str]) -> None:
    minimum, maximum = metadata.get("minimum"), metadata.get("maximum")
    if minimum is not None:
        if metadata.get("exclusive_min") and not value > minimum:
            problems.append(f"{key}: expected a value greater than {minimum}, got {value!r}")
        elif not metadata.get("exclusive_min") and not value >= minimum:
            problems.append(f"{key}: expected a value of at least {minimum}, got {value!r}")
    if maximum is not None:
        if metadata.get("exclusive_max") and not value < maximum:
            problems.append(f"{key}: expected a value below {maximum}, got {value!r}")
        elif not metadata.get("exclusive_max") and not value <= maximum:
            problems.append(f"{key}: expected a value of at most {maximum}, got {value!r}")
    pattern = metadata.get("pattern")
    if pattern is not None and not re.fullmatch(pattern, value):
        problems.append(f"{key}: expected a string matching {pattern}, got {value!r}")


def build(cls: type, raw: Any, key: str, problems: list[str], rules: Rules, *, partial: bool = False) -> Any:
    """Build dataclass ``cls`` from mapping ``raw``, appending one line per problem to ``problems``
    (None if it cannot be built); with ``partial``, keys may be missing and the checked values
    come back as a dict."""
    prefix = f"{key}." if key else ""
    if not isinstance(raw, dict):
        problems.append(f"{key or 'top level'}: expected a mapping, got {raw!r}")
        return None
    hints = typing.get_type_hints(cls)
    fields = {item.name: item for item in dataclasses.fields(cls)}
    for name in sorted(set(raw) & {field_name for owner, field_name in rules.refused if owner == cls.__name__}):
        problems.append(f"{prefix}{name}: {rules.refused_reason}")
    raw = {name: value for name, value in raw.items() if (cls.__name__, name) not in rules.refused}
    for unknown in sorted(set(raw) - set(fields), key=str):
        close = [name for name in fields if _similar(str(unknown), name)]
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        problems.append(f"{prefix}{unknown}: unknown key{hint}; allowed: {', '.join(fields)}")
    values = {}
    for name, item in fields.items():
        if name not in raw:
            if not partial and (cls.__name__, name) not in rules.optional | rules.refused:
                problems.append(f"{prefix}{name}: missing (expected {type_name(hints[name])})")
            continue
        values[name] = _convert(raw[name], hints[name], f"{prefix}{name}", problems, rules, item.metadata)
    if partial:
        return values
    try:
        return cls(**values)
    except TypeError:
        return None


def _similar(left: str, right: str) -> bool:
    import difflib

    return difflib.SequenceMatcher(None, left, right).ratio() >= 0.75
