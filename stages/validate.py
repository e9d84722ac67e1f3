"""Stage ``validate``: check all of ``params.yaml`` before any other stage runs.

Reads ``params.yaml`` (every key). Writes ``data/params.ok``, whose content never changes, so
a valid edit reruns only the stages whose own params changed. Every other stage depends on it:
under ``dvc repro`` a refused params file stops the pipeline here, before DVC removes any
stage's previous outputs, so nothing is lost. Prints one line per problem and exits 1.

Besides the schema (``stages/common/params.py``), it refuses what params alone decide that a
later stage would refuse, with that stage's own function: a model whose convolutions or pools
shrink a known dataset's images to nothing (``build_spec``, as init, train and evaluate build
it), and a ``preprocess.max_train`` that can leave the validation split empty (the split rule
of ``stages/common/splits.py``). What depends on the data files (a custom dataset's image
size, how many images it has) or on the machine (``train.device: cuda`` without a GPU) is
left to the stage that reads them.

It also sweeps the pipeline's outputs (``data/``, ``models/``, ``eval/``, ``dvclive/``,
``reports/``) for temporaries that a killed stage left and no live process holds
(``atomic.sweep_tree``): DVC restores a stage it has run before from its run cache without running
it, so the stage itself may never come back to remove them. ``dvc.yaml`` marks ``validate``
``always_changed`` so that it runs, first, on every ``dvc repro``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from stages.common import atomic, cli, paths, splits
from stages.common.architecture import build_spec
from stages.common.datasets import resolve_dataset
from stages.common.errors import StageError, run_stage
from stages.common.params import Params, load_params

CONTENT = "params.yaml passed validation\n"  # constant: downstream stages see no change


def decidable_problems(params: Params) -> list[str]:
    """What a later stage would refuse in ``params`` without reading anything else, one line each."""
    problems = []
    dataset = resolve_dataset(params.data)
    if dataset.image_shape is not None:
        try:
            build_spec(params.model, dataset.image_shape, len(dataset.class_names))
        except StageError as error:
            problems.append(str(error))
    if params.preprocess.max_train is not None:
        problem = splits.pool_problem(params.preprocess.max_train, len(dataset.class_names),
                                      params.preprocess.val_fraction)
        if problem is not None:
            problems.append(problem)
    return problems


OUTPUT_ROOTS = (paths.RAW.parent, paths.MODELS, paths.EVAL, paths.LOGS, paths.REPORTS)


def check(source: Path) -> Params:
    """The params in ``source``, if valid; otherwise one ``StageError`` listing every problem."""
    params = load_params(source)
    problems = decidable_problems(params)
    if problems:
        raise StageError(f"{len(problems)} problem(s) in {source}:\n" + "\n".join(f"  {source}: {p}" for p in problems))
    return params


def main(argv: list[str] | None = None) -> None:
    cli.parser("stages.validate", __doc__).parse_args(argv)
    for root in OUTPUT_ROOTS:
        atomic.sweep_tree(root)
    check(paths.PARAMS)
    if not paths.VALIDATED.exists() or paths.VALIDATED.read_text(encoding="utf-8") != CONTENT:
        atomic.write_text(paths.VALIDATED, CONTENT)


if __name__ == "__main__":
    run_stage(lambda: main(sys.argv[1:]), "validate")
