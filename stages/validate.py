"""Stage ``validate``: check all of ``params.yaml`` before any other stage runs.

Reads ``params.yaml`` (every key). Writes ``data/params.ok``, whose content never changes, so
a valid edit reruns only the stages whose own params changed. Every other stage depends on it:
under ``dvc repro`` a refused params file stops the pipeline here, before DVC removes any
stage's previous outputs, so nothing is lost. Prints one line per problem and exits 1.
"""

from __future__ import annotations

import sys

from stages.common import atomic, cli, paths
from stages.common.errors import run_stage
from stages.common.params import load_params

CONTENT = "params.yaml passed validation\n"  # constant: downstream stages see no change


def main(argv: list[str] | None = None) -> None:
    cli.parser("stages.validate", __doc__).parse_args(argv)
    load_params(paths.PARAMS)
    if not paths.VALIDATED.exists() or paths.VALIDATED.read_text(encoding="utf-8") != CONTENT:
        atomic.write_text(paths.VALIDATED, CONTENT)


if __name__ == "__main__":
    run_stage(lambda: main(sys.argv[1:]), "validate")
