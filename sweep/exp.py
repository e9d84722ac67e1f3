"""``python -m sweep.exp [dvc exp run options]`` (``make exp ARGS=...``): ``dvc exp run``, with its
``-S`` overrides validated before DVC touches the workspace.

DVC's ``exp run`` writes the ``-S`` values into ``params.yaml`` and checks the workspace out for
the new pipeline before any stage runs, so ``validate`` refuses a bad value only after DVC has
removed the outputs of the stages that left the matrix, and the refused value stays in
``params.yaml`` (docs/failures.md). This command parses the arguments with DVC's own parser,
expands the ``-S`` sweeps with DVC's own code (as ``--queue`` does), applies each point's
overrides to a copy of ``params.yaml`` with DVC's own ``apply_overrides``, and checks the copy as
the ``validate`` stage does. Only if every point passes does it run ``dvc exp run`` with the same
arguments, and it exits with its status; otherwise it prints the problems, one line each, and
exits 1 with ``params.yaml`` and the workspace untouched.

Reads ``params.yaml``; writes nothing itself (``dvc exp run`` writes what it writes).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from stages.common.errors import StageError
from sweep.grid import DEFAULT_PARAMS_FILE, GridError, expand

USAGE = "usage: python -m sweep.exp [dvc exp run options, e.g. -S train.epochs=2 --queue]"


def set_params(argv: list[str]) -> list[str]:
    """The ``-S``/``--set-param`` values of a ``dvc exp run`` command line, read by DVC's parser."""
    from dvc.cli import DvcParserError, parse_args

    try:
        return list(parse_args(["exp", "run", *argv]).set_param or [])
    except DvcParserError:
        raise GridError(f"the arguments are not ones `dvc exp run` accepts: {' '.join(argv)}") from None


def problems(root: Path, overrides: list[str]) -> list[str]:
    """What ``validate`` would refuse in each point of ``overrides``, one line per problem."""
    from dvc.exceptions import DvcException
    from dvc.utils.hydra import apply_overrides

    from stages.validate import check

    found: list[str] = []
    for point in expand(overrides) if overrides else []:
        ours = [override for override in point if not override.partition("=")[0].count(":")]
        label = " ".join(f"-S {override}" for override in point)
        with tempfile.TemporaryDirectory() as folder:
            copy = Path(folder) / DEFAULT_PARAMS_FILE
            shutil.copyfile(root / DEFAULT_PARAMS_FILE, copy)
            try:
                apply_overrides(copy, ours)
                check(copy)
            except DvcException as error:
                cause = str(error.__cause__ or error).strip().splitlines()
                found.append(f"{label}: {cause[0] if cause else error}")
            except StageError as error:
                found.extend(f"{label}: {line.strip().replace(str(copy), DEFAULT_PARAMS_FILE)}"
                             for line in str(error).splitlines()[1:] or [str(error)])
    return found


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] in (["-h"], ["--help"]):
        print(f"{USAGE}\n\n{__doc__}")
        return 0
    root = Path.cwd()
    try:
        found = problems(root, set_params(arguments))
    except (GridError, StageError) as error:
        print(f"error: exp: {error}; params.yaml and the workspace were left untouched", file=sys.stderr)
        return 1
    if found:
        print(f"error: exp: refused before DVC touched the workspace ({len(found)} problem(s)); params.yaml and "
              "every output were left untouched:", file=sys.stderr)
        for line in found:
            print(f"  {line}", file=sys.stderr)
        return 1
    return subprocess.run([sys.executable, "-m", "dvc", "exp", "run", *arguments], check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
