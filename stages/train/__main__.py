"""Stage ``train@<seed>-<framework>`` (stock) or ``train-tuned@<seed>-<framework>``: one replicate
of the shared architecture, trained by one framework at one tuning level.

Reads ``data/prepared/`` (train and val splits, meta.json), ``models/init/<seed>.npz`` (when
``replicates.init`` is ``shared``) and ``params.yaml`` (``model``, ``train``, the framework's
override section, ``replicates.init``). Writes, where ``<arm>`` is ``<framework>`` (stock) or
``<framework>-tuned``:

- ``models/<arm>/<seed>/``: the model file (``model.keras`` / ``model.pt``),
  ``architecture.json`` and ``run.json`` (framework, seed, device, init, input scale, tuning
  level, its switches and the environment: framework versions and build, CPU, threads);
- ``dvclive/<arm>/<seed>/``: per-epoch metrics as dvclive TSVs, written as each epoch
  ends, and the training summary ``metrics.json``.

Tuning levels (docs/fairness.md): ``stock`` runs the framework as its getting-started guide
writes it; ``tuned`` adds the switches its own documentation recommends (the backend's TUNED).

The seed fixes initialisation (``replicates.init: framework``), batch order, dropout and
augmentation; every framework visits the same batches for the same seed. Only the named
framework is imported. Outputs appear only when training finished with finite losses.

Checked before any work, each in one line naming what to fix: the machine first (``train.device:
cuda`` without a GPU; ``dvc repro`` removed the outputs before the stage ran, and the line says
how to get them back), then the initial weights (one finite array per weight, of the spec's shape).
"""

from __future__ import annotations

import logging
import sys

from stages import backends
from stages.backends.base import configure_machine
from stages.common import cli, paths, prepared
from stages.common.architecture import build_spec, load_initial_weights
from stages.common.errors import run_stage
from stages.common.params import TUNING_LEVELS, effective_train, load_params
from stages.common.runtime import configure_threads, machine_environment, seed_python_and_numpy
from stages.common.schemas import RunInfo
from stages.train.training import (
    EpochLog,
    background_value,
    save_model,
    summarize,
    train_model,
)

log = logging.getLogger("train")


def main(argv: list[str] | None = None) -> None:
    arguments = cli.parser("stages.train", __doc__)
    arguments.add_argument("framework", help=f"one of: {', '.join(backends.names())}")
    arguments.add_argument("seed", type=cli.seed_argument, help="the replicate seed (one of replicates.seeds)")
    cli.add_tuning(arguments, TUNING_LEVELS)
    args = arguments.parse_args(argv)
    params = load_params()
    framework, seed, tuning = args.framework, args.seed, args.tuning
    # Twice, on purpose: the threads and device must be set before the framework is imported (its
    # thread pools read them once), and the switches are known only from the imported backend's TUNED.
    settings = effective_train(params, framework, tuning)
    configure_threads(settings.threads)
    seed_python_and_numpy(seed)
    backend = backends.load(framework, tuning, args.switches, settings.device)
    settings = effective_train(params, framework, tuning,
                               cli.switches(framework, tuning, args.switches, backend.TUNED))
    device = configure_machine(backend, settings, seed, paths.restore_hint("train", framework, seed, tuning))
    data = prepared.load_prepared(paths.PREPARED, splits=("train", "val"))
    spec = build_spec(params.model, data.image_shape, data.num_classes)
    initial = load_initial_weights(paths.init_weights(seed), spec) if params.replicates.init == "shared" else None
    train, val = data.splits["train"], data.splits["val"]
    name = f"{backends.label(framework)} ({tuning}) seed {seed}"
    log.info("%s: %d training and %d validation images, %d parameters, %d epochs of batch %d (%s, %s schedule, "
             "%s initial weights, %s, switches: %s)", name, train.labels.shape[0], val.labels.shape[0],
             spec.parameters, settings.epochs, settings.batch_size, settings.optimizer, settings.schedule,
             params.replicates.init, device, ", ".join(settings.switches) or "none")
    model_folder = paths.model_dir(framework, seed, tuning)
    logs_folder = paths.logs_dir(framework, seed, tuning)
    with EpochLog(name, settings.epochs, train.labels.shape[0], logs_folder) as epoch_log:
        model = train_model(backend, spec, train, val, settings, seed, epoch_log, initial,
                            background_value(data.meta, settings))
        summary = summarize(epoch_log.records, backend.count_parameters(model), train.labels.shape[0])
        info = RunInfo(framework=framework, seed=seed, device=device, init=params.replicates.init,
                       input_scale=settings.input_scale, tuning=tuning,
                       switches={switch: backend.SWITCHES[switch] for switch in settings.switches},
                       description=backend.DESCRIPTION, semantics=dict(backend.SEMANTICS),
                       environment={**backend.environment(), **machine_environment(settings.threads)})
        save_model(backend, model, spec, info, model_folder)
        epoch_log.finish(summary)
    log.info("%s: trained in %.1f s (%.0f images/s), final val accuracy %.2f%%; wrote %s and %s", name,
             summary.train_seconds, summary.images_per_second, 100 * summary.val_accuracy, model_folder,
             logs_folder)


if __name__ == "__main__":
    run_stage(lambda: main(sys.argv[1:]), "train")
