"""The inputs that must not change while a stage runs: ``params.yaml`` and the stage's code.

``errors.run_stage`` notes both when a stage starts (``watch_inputs``) and refuses to finish a
stage whose params or loaded modules changed meanwhile (``check_inputs``), as every atomic write
does before it publishes an output (``atomic.py``): an output is never published for inputs it was
not made from. The refusal names the changed params keys (params.yaml read as DVC reads it,
``yamlfile.py``) and the changed modules, and under ``dvc repro`` what DVC removed before the
stage ran and how to get it back (``removed_by_dvc``).
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

from stages.common import paths, yamlfile
from stages.common.failures import StageError

CODE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the stages package
_started: tuple[bytes | None, dict[str, tuple[int, int]]] | None = None  # params.yaml, code (mtime, size)


def _code_files() -> dict[str, tuple[int, int]]:
    """(mtime, size) of every module file of the ``stages`` package."""
    found: dict[str, tuple[int, int]] = {}
    for folder, _, names in os.walk(CODE_ROOT):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with contextlib.suppress(OSError):
                    status = os.stat(path)
                    found[path] = (status.st_mtime_ns, status.st_size)
    return found


def _params_bytes() -> bytes | None:
    try:
        with open(paths.PARAMS, "rb") as handle:
            return handle.read()
    except OSError:
        return None


def watch_inputs() -> None:
    """Note ``params.yaml`` and the code as they are now: what this stage runs with."""
    global _started
    _started = (_params_bytes(), _code_files())


def stop_watching() -> None:
    """The stage is over: later code in this process (a test, a second stage) starts afresh."""
    global _started
    _started = None


def _changed_keys(before: bytes | None, after: bytes | None) -> list[str] | None:
    """The dotted keys whose values differ (None if either side cannot be read as YAML)."""
    try:
        old, new = (yamlfile.loads((text or b"").decode("utf-8"), str(paths.PARAMS)) for text in (before, after))
    except (StageError, UnicodeDecodeError):
        return None

    def differences(a: Any, b: Any, prefix: str) -> list[str]:
        if isinstance(a, dict) and isinstance(b, dict):
            return [line for key in dict.fromkeys([*a, *b])
                    for line in differences(a.get(key, "(absent)"), b.get(key, "(absent)"), f"{prefix}{key}.")]
        return [] if a == b else [f"{prefix.rstrip('.')}: {a!r} -> {b!r}"]

    return differences(old, new, "")


def input_changes() -> list[str]:
    """What changed since ``watch_inputs``: params keys, and the project modules this process loaded."""
    if _started is None:
        return []
    changes = []
    params_before, code_before = _started
    params = _params_bytes()
    if params != params_before:
        keys = _changed_keys(params_before, params)
        if keys is None:
            changes.append(f"{paths.PARAMS} was rewritten")
        else:
            changes.extend(f"{paths.PARAMS}: {key}" for key in keys)
    now = _code_files()
    loaded = {os.path.abspath(file) for module in list(sys.modules.values())
              if isinstance(file := getattr(module, "__file__", None), str)}
    changes.extend(os.path.relpath(path) for path in sorted(loaded)
                   if path in code_before and now.get(path) != code_before[path])
    return changes


def check_inputs() -> None:
    """Refuse to finish a stage whose params or code changed since it started (see the module doc)."""
    changes = input_changes()
    if changes:
        raise StageError(f"changed while this stage ran: {'; '.join(changes)}. It ran with the previous values, so "
                         "no output was written and DVC records nothing; rerun `dvc repro` (it runs with the "
                         f"current params){removed_by_dvc()}")


def removed_by_dvc() -> str:
    """Under ``dvc repro``/``dvc exp run``: what DVC removed before this stage ran, and how to get it back."""
    address = os.environ.get("DVC_STAGE")
    if not address:
        return ""
    try:
        cached, in_git = paths.stage_outputs(address)
    except (KeyError, ValueError):
        return ""
    removed = ", ".join(map(str, [*cached, *in_git]))
    return (f"; DVC removed the outputs of {address} ({removed}) before it ran: "
            f"{paths.restore_commands(address)} bring back the last recorded ones")
