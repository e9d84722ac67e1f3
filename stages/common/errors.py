"""Error type and command-line wrapper shared by every stage.

A stage raises ``StageError`` for anything the user can fix (bad params, bad input files,
unreachable mirrors). ``run_stage`` turns it into one line on stderr and a non-zero exit, so
that ``dvc repro`` shows the cause without a traceback. Bugs still produce a traceback. The
machine refusing a write (``SYSTEM_FAILURES``: a full disk, a quota, a read-only file system, no
rights) is the user's to fix too: one line naming the file, when the error names one (the
atomic-write helpers in ``atomic.py`` name the output they were writing).

A stage's output is the project's own log lines: TensorFlow's C++ start-up lines (``cudart_stub``,
CPU-feature and oneDNN notices) are written by its native code straight to file descriptor 2 while
it is imported, before ``TF_CPP_MIN_LOG_LEVEL`` takes effect, so the Keras backend imports it
inside ``native_noise_filtered``, which captures descriptor 2 and passes on every line except
those informational native-log lines. Set ``TF_CPP_MIN_LOG_LEVEL=0`` to see everything TensorFlow says.

A stage run by an interpreter that lacks the project's packages (``.venv/bin/dvc exp run``
without the environment activated runs the stages with the system ``python``) says so in one
line, naming that interpreter and how to activate the environment: ``run_stage`` for imports
inside a stage (the framework), ``require_packages`` (called when the ``stages`` package is
imported) for the packages a stage module imports when it loads, before ``run_stage``. A
project module that fails to import is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import importlib.util
import logging
import os
import re
import signal
import sys
import tempfile
import types
from collections.abc import Callable, Iterator, Sequence
from typing import Any

LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
# absl's native log line (I/W = info/warning; errors and fatal ones are always shown), the note
# absl prints before its first line, and the CPU-feature notice's second line.
NATIVE_NOISE = re.compile(rb"[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w.-]+:\d+\] .*"
                          rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
                          rb"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler"
                          rb" flags\.")
PROJECT_PACKAGES = ("stages", "sweep", "tests", "bench")
# errno -> reason: the machine refusing a write, which the user fixes (room, quota, mount, rights)
WRITE_FAILURES = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                  errno.EROFS: "read-only file system", errno.EFBIG: "file too large"}
PERMISSION_FAILURES = {errno.EACCES: "permission denied", errno.EPERM: "operation not permitted"}
SYSTEM_FAILURES = {**WRITE_FAILURES, **PERMISSION_FAILURES}


class StageError(Exception):
    """A problem with the user's input (params, data files, mirrors), not a bug."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the stage is, so that it cleans up as after Ctrl-C."""


# --------------------------------------------------------------------------------------------
# Inputs that must not change while a stage runs
# --------------------------------------------------------------------------------------------
PARAMS_PATH = "params.yaml"
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
        with open(PARAMS_PATH, "rb") as handle:
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
    from stages.common import yamlfile

    try:
        old, new = (yamlfile.loads((text or b"").decode("utf-8"), PARAMS_PATH) for text in (before, after))
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
            changes.append(f"{PARAMS_PATH} was rewritten")
        else:
            changes.extend(f"{PARAMS_PATH}: {key}" for key in keys)
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
    from stages.common import paths

    try:
        cached, in_git = paths.stage_outputs(address)
    except (KeyError, ValueError):
        return ""
    removed = ", ".join(map(str, [*cached, *in_git]))
    return (f"; DVC removed the outputs of {address} ({removed}) before it ran: "
            f"{paths.restore_commands(address)} bring back the last recorded ones")


# The project's loggers (one per stage, and atomic writes): they log at INFO; every other package's
# loggers only from WARNING up (torch.onnx's exporters, for one, log INFO lines such as "No unused
# functions to remove" per export, which a stage's output should not carry).
PROJECT_LOGGERS = ("download", "validate", "preprocess", "init", "train", "evaluate", "export", "timing", "report",
                   "reproduce", "atomic")


def setup_logging() -> None:
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT, datefmt="%H:%M:%S", stream=sys.stderr)
    for name in PROJECT_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)


@contextlib.contextmanager
def native_noise_filtered() -> Iterator[None]:
    """Capture file descriptor 2 for the block, then pass on every line that is not native-log noise
    (everything where ``TF_CPP_MIN_LOG_LEVEL=0`` asks for TensorFlow's native lines)."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().splitlines(keepends=True)
                    if not NATIVE_NOISE.fullmatch(line.rstrip(b"\r\n"))]
            if kept:
                os.write(2, b"".join(kept))


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


def _terminate(number: int, frame: types.FrameType | None) -> None:
    raise Terminated()


def run_stage(main: Callable[[], None], name: str) -> None:
    """Run a stage's ``main`` and map user errors, a missing package, changed inputs, Ctrl-C and
    SIGTERM to clean exits."""
    setup_logging()
    previous_sigterm = signal.signal(signal.SIGTERM, _terminate)
    watch_inputs()
    try:
        main()
        check_inputs()
    except StageError as error:
        print(f"error: {name}: {error}", file=sys.stderr)
        sys.exit(1)
    except ImportError as error:
        message = import_problem(error)
        if message is None:
            raise
        print(f"error: {name}: {message}", file=sys.stderr)
        sys.exit(1)
    except OSError as error:
        if error.errno not in SYSTEM_FAILURES:
            raise
        where = f"{os.fsdecode(error.filename)}: " if error.filename is not None else ""
        print(f"error: {name}: {where}{SYSTEM_FAILURES[error.errno]}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt as error:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the line short
        terminated = isinstance(error, Terminated)
        print(f"error: {name}: {'terminated (SIGTERM)' if terminated else 'interrupted'}; nothing half-written was "
              f"left{removed_by_dvc() or ' and outputs written before were left untouched'}", file=sys.stderr)
        sys.exit(128 + signal.SIGTERM if terminated else 130)
    finally:
        stop_watching()
        signal.signal(signal.SIGTERM, previous_sigterm)
