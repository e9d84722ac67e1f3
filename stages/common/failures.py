"""What stops a stage with one line instead of a traceback, before anything else is loaded.

``StageError`` is a problem the user can fix (bad params, bad input files, unreachable mirrors);
``SYSTEM_FAILURES`` are the machine refusing a write (a full disk, a quota, a read-only file
system, no rights), which the user fixes too; ``import_problem`` says what to do about a package
the interpreter lacks. ``errors.run_stage`` turns each into one line on stderr.

A stage run by an interpreter that lacks the project's packages (``.venv/bin/dvc exp run``
without the environment activated runs the stages with the system ``python``) says so in one
line, naming that interpreter and how to activate the environment: ``errors.run_stage`` for
imports inside a stage (the framework), ``require_packages`` (called when the ``stages`` package
is imported) for the packages a stage module imports when it loads. A project module that fails
to import is a bug and keeps its traceback.

This module imports the standard library only: ``stages/__init__.py`` runs ``require_packages``
from it before any other project module loads, and every other module, ``yamlfile.py`` included,
can raise ``StageError`` without importing ``errors.py`` (which watches params.yaml through
``yamlfile.py``).
"""

from __future__ import annotations

import errno
import importlib
import importlib.util
import sys
from collections.abc import Sequence


class StageError(Exception):
    """A problem with the user's input (params, data files, mirrors), not a bug."""


# errno -> reason: the machine refusing a write, which the user fixes (room, quota, mount, rights)
WRITE_FAILURES = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                  errno.EROFS: "read-only file system", errno.EFBIG: "file too large"}
PERMISSION_FAILURES = {errno.EACCES: "permission denied", errno.EPERM: "operation not permitted"}
SYSTEM_FAILURES = {**WRITE_FAILURES, **PERMISSION_FAILURES}

PROJECT_PACKAGES = ("stages", "sweep", "tests", "bench")


def import_problem(error: ImportError) -> str | None:
    """What to tell the user about a package that failed to import; None for a project module's
    import (a bug)."""
    package = (error.name or "").partition(".")[0]
    if not package or package in PROJECT_PACKAGES:
        return None
    return (f"cannot import {package} with {sys.executable} ({error.msg}): the stages need the project's "
            "environment; activate it (source .venv/bin/activate) or run `make run`")


# The third-party packages that stage modules import when they load, before ``run_stage`` can catch
# an ImportError (a framework is imported inside ``run_stage``). tests/common/test_errors.py keeps the
# list complete.
STAGE_PACKAGES = ("numpy", "ruamel.yaml", "yaml", "scipy", "matplotlib", "psutil", "tqdm")


def _main_stage() -> str | None:
    """The stage that ``python -m stages.<name>`` runs in this process (``sys.orig_argv``), or None."""
    arguments = sys.orig_argv
    module = arguments[arguments.index("-m") + 1] if "-m" in arguments[:-1] else ""
    parts = [part for part in module.split(".") if part != "__main__"]
    return parts[-1] if len(parts) > 1 and parts[0] == "stages" else None


def require_packages(packages: Sequence[str] = STAGE_PACKAGES) -> None:
    """In a ``python -m stages.<name>`` process, before the stage module loads: a package it needs
    that this interpreter cannot import is one line naming the interpreter, and exit status 1."""
    stage = _main_stage()
    if stage is None:
        return
    for package in packages:
        try:
            missing = importlib.util.find_spec(package) is None
        except (ImportError, ValueError):  # a parent package missing, or None in sys.modules
            missing = True
        if not missing:
            continue
        try:
            importlib.import_module(package)
        except ImportError as error:
            print(f"error: {stage}: {import_problem(error)}", file=sys.stderr)
            sys.exit(1)
