"""Error type and command-line wrapper shared by every stage.

A stage raises ``StageError`` for anything the user can fix (bad params, bad input files,
unreachable mirrors). ``run_stage`` turns it into one line on stderr and a non-zero exit, so
that ``dvc repro`` shows the cause without a traceback. Bugs still produce a traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


class StageError(Exception):
    """A problem with the user's input (params, data files, mirrors), not a bug."""


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, datefmt="%H:%M:%S", stream=sys.stderr)


def run_stage(main: Callable[[], None], name: str) -> None:
    """Run a stage's ``main`` and map user errors and Ctrl-C to clean exits."""
    setup_logging()
    try:
        main()
    except StageError as error:
        print(f"error: {name}: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"error: {name}: interrupted; outputs written before were left untouched", file=sys.stderr)
        sys.exit(130)
