"""Stage ``init@<seed>``: framework-neutral initial weights for one replicate seed.

Reads ``data/prepared/meta.json`` (image shape, classes) and ``params.yaml`` (``model``).
Writes ``models/init/<seed>.npz``: every weight of the shared architecture in the canonical
layout (see ``stages/backends/base.py``), Glorot-uniform kernels and zero biases drawn with
numpy from the seed. With ``replicates.init: shared`` every framework starts from these exact
weights, so the replicates of one seed differ only by the framework. No framework is imported.
"""

from __future__ import annotations

import logging
import sys

import numpy as np

from stages.common import cli, paths, prepared
from stages.common.architecture import build_spec, initial_weights, save_initial_weights
from stages.common.errors import run_stage
from stages.common.params import load_params
from stages.common.runtime import derive_seed

log = logging.getLogger("init")


def main(argv: list[str] | None = None) -> None:
    arguments = cli.parser("stages.init", __doc__)
    arguments.add_argument("seed", type=cli.seed_argument, help="the replicate seed (one of replicates.seeds)")
    args = arguments.parse_args(argv)
    params = load_params()
    meta = prepared.load_meta(paths.PREPARED)
    height, width, channels = meta["image_shape"]
    spec = build_spec(params.model, (height, width, channels), len(meta["class_names"]))
    weights = initial_weights(spec, np.random.default_rng(derive_seed(args.seed, "init")))
    save_initial_weights(paths.init_weights(args.seed), weights)
    log.info("seed %d: %d initial weight arrays (%d values) in %s", args.seed, len(weights),
             sum(weight.size for weight in weights), paths.init_weights(args.seed))


if __name__ == "__main__":
    run_stage(lambda: main(sys.argv[1:]), "init")
