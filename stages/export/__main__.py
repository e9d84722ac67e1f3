"""Stage ``export@<seed>-<framework>`` (stock) or ``export-tuned@<seed>-<framework>``: the trained
replicate exported to ONNX through its framework's own documented route, then run on ONNX Runtime.

Reads ``models/<arm>/<seed>/`` (model, architecture.json, run.json), ``eval/<arm>/<seed>/predictions.npy``
(the framework's own probabilities, written by evaluate), ``data/prepared/`` (test split) and
``params.yaml`` (``evaluate``, the framework's ``threads`` and ``device``). Writes:

- ``onnx/<arm>/<seed>/model.onnx``: the export (NHWC float32 images in, logits out, any batch
  size), checked by ``onnx.checker``; or, for a framework without a working route on these
  package versions, ``onnx/<arm>/<seed>/no-route.txt`` saying why;
- ``eval/<arm>/<seed>/onnx.json`` (``OnnxMetrics``): agreement with the framework on the whole
  test set (largest absolute difference in probabilities, share of images with the same class,
  accuracy) and ONNX Runtime's throughput and single-image latency, timed as evaluate times the
  framework (same threads, batch size, warm-up and repeats; ONNX Runtime's default session options).
"""

from __future__ import annotations

import logging
import sys

import numpy as np

from stages import backends
from stages.backends.base import NoExportRoute, configure_machine
from stages.common import atomic, cli, npfile, paths, prepared, schemas
from stages.common.errors import StageError, run_stage
from stages.common.params import TUNING_LEVELS, effective_train, load_params
from stages.common.runtime import configure_threads, seed_python_and_numpy
from stages.common.schemas import OnnxMetrics
from stages.common.trained import load_trained
from stages.export import runtime
from stages.export.agreement import agreement, fields

log = logging.getLogger("export")


def framework_probabilities(framework: str, seed: int, tuning: str, count: int) -> np.ndarray:
    """evaluate's probabilities for this replicate; ``StageError`` naming the file otherwise."""
    path = paths.eval_dir(framework, seed, tuning) / paths.PREDICTIONS_FILE
    rerun = f"run `dvc repro {paths.stage('evaluate', framework, seed, tuning)}`"
    try:
        npfile.check(path, rerun)
        probabilities = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise StageError(f"{path}: missing; {rerun}") from None
    if probabilities.ndim != 2 or probabilities.shape[0] != count:
        raise StageError(f"{path}: shape {probabilities.shape}, expected one row per test image ({count}); {rerun}")
    return probabilities


def main(argv: list[str] | None = None) -> None:
    arguments = cli.parser("stages.export", __doc__)
    arguments.add_argument("framework", help=f"one of: {', '.join(backends.names())}")
    arguments.add_argument("seed", type=cli.seed_argument, help="the replicate seed (one of replicates.seeds)")
    arguments.add_argument("--tuning", choices=TUNING_LEVELS, default="stock",
                           help="the arm whose model is exported (default: stock)")
    args = arguments.parse_args(argv)
    framework, seed, tuning = args.framework, args.seed, args.tuning
    params = load_params()
    train_settings = effective_train(params, framework, tuning)
    configure_threads(train_settings.threads)
    seed_python_and_numpy(seed)
    # the export is of the trained weights: the stock process suffices
    backend = backends.load(framework, device=train_settings.device)
    configure_machine(backend, train_settings, seed, paths.restore_hint("export", framework, seed, tuning))
    test = prepared.load_prepared(paths.PREPARED, splits=("test",)).splits["test"]
    model, spec, info, _ = load_trained(backend, paths.model_dir(framework, seed, tuning),
                                        f"dvc repro {paths.stage('train', framework, seed, tuning)}")
    reference = framework_probabilities(framework, seed, tuning, test.labels.shape[0])
    route = f"{backends.REGISTRY[framework][0]}.export"
    with atomic.atomic_directory(paths.onnx_dir(framework, seed, tuning)) as folder:
        try:
            backend.export(model, spec, folder / paths.ONNX_FILE)
        except NoExportRoute as reason:
            (folder / paths.NO_ROUTE_FILE).write_text(f"{reason}\n", encoding="utf-8")
            record = OnnxMetrics(route=route, error=str(reason), onnx_bytes=None, test_images=int(test.labels.size),
                                 **dict.fromkeys(("max_abs_probability_difference", "same_class_share",
                                                  "different_class_images", "test_accuracy",
                                                  "throughput_images_per_second", "throughput_images_per_second_min",
                                                  "throughput_images_per_second_max", "latency_ms_median",
                                                  "latency_ms_p95")), session={})
        else:
            import onnx

            onnx.checker.check_model(str(folder / paths.ONNX_FILE))
            timed = runtime.measure(folder / paths.ONNX_FILE, test.images, params.evaluate, train_settings.threads,
                                    info.input_scale)
            (overall, low, high), (latency, p95) = timed.throughput, timed.latency_ms
            record = OnnxMetrics(route=route, error=None, onnx_bytes=(folder / paths.ONNX_FILE).stat().st_size,
                                 test_images=int(test.labels.size),
                                 **fields(agreement(timed.probabilities, reference, test.labels)),
                                 throughput_images_per_second=round(overall, 1),
                                 throughput_images_per_second_min=round(low, 1),
                                 throughput_images_per_second_max=round(high, 1),
                                 latency_ms_median=round(latency, 4), latency_ms_p95=round(p95, 4),
                                 session=timed.session,
                                 timing_spread=timed.timing_spread)
    schemas.save(record, paths.eval_dir(framework, seed, tuning) / paths.ONNX_METRICS_FILE)
    if record.error is not None:
        log.warning("%s (%s) seed %d: no ONNX export: %s", backends.label(framework), tuning, seed, record.error)
        return
    log.info("%s (%s) seed %d on ONNX Runtime: %d of %d test images classed as by the framework, probabilities "
             "within %.2g, accuracy %.2f%%, %.0f images/s at batch %d, latency median %.2f ms",
             backends.label(framework), tuning, seed, record.test_images - (record.different_class_images or 0),
             record.test_images,
             record.max_abs_probability_difference, 100 * (record.test_accuracy or 0),
             record.throughput_images_per_second, params.evaluate.batch_size, record.latency_ms_median)


if __name__ == "__main__":
    run_stage(lambda: main(sys.argv[1:]), "export")
