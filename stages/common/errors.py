"""The command-line wrapper shared by every stage: ``run_stage``.

A stage raises ``StageError`` (``failures.py``; imported from here by the stages) for anything
the user can fix (bad params, bad input files, unreachable mirrors). ``run_stage`` turns it into
one line on stderr and a non-zero exit, so that ``dvc repro`` shows the cause without a
traceback. Bugs still produce a traceback. The machine refusing a write (``SYSTEM_FAILURES``: a
full disk, a quota, a read-only file system, no rights) is the user's to fix too: one line naming
the file, when the error names one (the atomic-write helpers in ``atomic.py`` name the output
they were writing). So is a package the interpreter lacks (``failures.import_problem``). A stage
whose params or code changed while it ran is refused (``watch.py``).

A stage's output is the project's own log lines: TensorFlow's C++ start-up lines (``cudart_stub``,
CPU-feature and oneDNN notices) are written by its native code straight to file descriptor 2 while
it is imported, before ``TF_CPP_MIN_LOG_LEVEL`` takes effect, so the Keras backend imports it
inside ``native_noise_filtered``, which captures descriptor 2 and passes on every line except
those informational native-log lines. Set ``TF_CPP_MIN_LOG_LEVEL=0`` to see everything TensorFlow says.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import sys
import tempfile
import types
from collections.abc import Callable, Iterator

from stages.common.failures import SYSTEM_FAILURES, StageError, import_problem  # StageError: the stages' import
from stages.common.watch import check_inputs, removed_by_dvc, stop_watching, watch_inputs

LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
# absl's native log line (I/W = info/warning; errors and fatal ones are always shown), the note
# absl prints before its first line, and the CPU-feature notice's second line.
NATIVE_NOISE = re.compile(rb"[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w.-]+:\d+\] .*"
                          rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
                          rb"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler"
                          rb" flags\.")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the stage is, so that it cleans up as after Ctrl-C."""


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
