"""Stage ``evaluate@<seed>-<framework>`` (stock) or ``evaluate-tuned@<seed>-<framework>``: test-set
metrics, predictions and speed of one trained model, run at the same tuning level as it was trained.

Reads ``models/<arm>/<seed>/`` (model, architecture.json, run.json; ``<arm>`` is ``<framework>``
or ``<framework>-tuned``), ``data/prepared/`` (test split, meta.json) and ``params.yaml``
(``evaluate``, and the framework's ``threads`` and ``device``). Writes, in ``eval/<arm>/<seed>/``:

- ``metrics.json`` (``TestMetrics``): test accuracy and loss, macro precision/recall/F1,
  inference throughput at ``evaluate.batch_size`` (the images of ``evaluate.throughput_repeats``
  timed passes over their total time, and the slowest and fastest pass), single-image latency (median, 95th
  percentile), the tuning level and its switches, the environment, parameter count, model file size;
- ``predictions.npy``: float32 class probabilities, one row per test image;
- ``per_class.json`` (``PerClass``): per-class precision, recall, F1, support, confusion matrix;
- ``confusion.csv``: one ``actual,predicted`` row (class names) per test image, the input of
  DVC's ``confusion`` plot template.

The model is loaded only through the framework's safe loader (Keras ``safe_mode``, PyTorch
``weights_only=True``). Only the named framework is imported.
"""

from __future__ import annotations

import csv
import io
import logging
import sys

import numpy as np

from stages import backends
from stages.backends.base import configure_machine
from stages.common import atomic, cli, metrics, paths, prepared, schemas
from stages.common.errors import StageError, run_stage
from stages.common.metrics import measure_latency, measure_throughput
from stages.common.params import TUNING_LEVELS, effective_train, load_params
from stages.common.runtime import (
    configure_threads,
    machine_environment,
    relative_spread,
    seed_python_and_numpy,
)
from stages.common.schemas import PerClass, TestMetrics
from stages.common.trained import load_trained

log = logging.getLogger("evaluate")


def classification_metrics(probabilities: np.ndarray, labels: np.ndarray,
                           class_names: list[str]) -> tuple[dict[str, float], PerClass]:
    """Accuracy, loss and macro scores; per-class scores with the confusion matrix."""
    predicted = probabilities.argmax(axis=1)
    confusion = metrics.confusion_matrix(labels, predicted, len(class_names))
    scores = metrics.per_class_scores(confusion)
    summary = {
        "test_accuracy": metrics.accuracy(labels, predicted),
        "test_loss": metrics.cross_entropy(probabilities, labels),
        "macro_precision": float(scores["precision"].mean()),
        "macro_recall": float(scores["recall"].mean()),
        "macro_f1": float(scores["f1"].mean()),
    }
    per_class = PerClass(class_names=list(class_names), precision=scores["precision"].tolist(),
                         recall=scores["recall"].tolist(), f1=scores["f1"].tolist(),
                         support=scores["support"].tolist(), confusion=confusion.tolist())
    return summary, per_class


def confusion_csv(labels: np.ndarray, predicted: np.ndarray, class_names: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["actual", "predicted"])
    writer.writerows((class_names[int(true)], class_names[int(guess)]) for true, guess in zip(labels, predicted))
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> None:
    arguments = cli.parser("stages.evaluate", __doc__)
    arguments.add_argument("framework", help=f"one of: {', '.join(backends.names())}")
    arguments.add_argument("seed", type=cli.seed_argument, help="the replicate seed (one of replicates.seeds)")
    cli.add_tuning(arguments, TUNING_LEVELS)
    args = arguments.parse_args(argv)
    framework, seed, tuning = args.framework, args.seed, args.tuning
    params = load_params()
    settings = params.evaluate
    # effective_train twice, as in train: threads before the framework's import, switches after it.
    train_settings = effective_train(params, framework, tuning)
    configure_threads(train_settings.threads)
    seed_python_and_numpy(seed)
    backend = backends.load(framework, tuning, args.switches, train_settings.device)
    train_settings = effective_train(params, framework, tuning,
                                     cli.switches(framework, tuning, args.switches, backend.TUNED))
    configure_machine(backend, train_settings, seed,  # threads, determinism and device as trained
                      paths.restore_hint("evaluate", framework, seed, tuning))
    data = prepared.load_prepared(paths.PREPARED, splits=("test",))
    test = data.splits["test"]
    folder = paths.model_dir(framework, seed, tuning)
    model, spec, info, model_path = load_trained(backend, folder,
                                                 f"dvc repro {paths.stage('train', framework, seed, tuning)}")
    if spec.input_shape != data.image_shape or spec.num_classes != data.num_classes:
        raise StageError(f"{model_path}: built for {spec.input_shape} images and {spec.num_classes} classes, but "
                         f"{paths.PREPARED} holds {data.image_shape} and {data.num_classes}; retrain it")

    model = backend.for_inference(model, train_settings.switches)

    def predict_all() -> np.ndarray:
        return backend.predict(model, test.images, settings.batch_size, info.input_scale)

    probabilities, rates = measure_throughput(predict_all, test.labels.shape[0], settings.throughput_repeats)
    latency = measure_latency(lambda image: backend.predict(model, image, 1, info.input_scale), test.images,
                              settings)
    scores, per_class = classification_metrics(probabilities, test.labels, data.class_names)
    summary = TestMetrics(
        test_images=int(test.labels.shape[0]), **scores,
        throughput_images_per_second=round(metrics.overall_rate(rates), 1),
        throughput_images_per_second_min=round(min(rates), 1),
        throughput_images_per_second_max=round(max(rates), 1),
        latency_ms_median=round(metrics.percentile_ms(latency, 50), 4),
        latency_ms_p95=round(metrics.percentile_ms(latency, 95), 4),
        tuning=tuning, switches=list(train_settings.switches),
        environment={**backend.environment(), **machine_environment(train_settings.threads)},
        parameters=backend.count_parameters(model), model_bytes=model_path.stat().st_size,
        timing_spread=relative_spread(1 / rate for rate in rates))
    output = paths.eval_dir(framework, seed, tuning)
    atomic.write_npy(output / paths.PREDICTIONS_FILE, probabilities)
    schemas.save(per_class, output / paths.PER_CLASS_FILE)
    atomic.write_text(output / paths.CONFUSION_FILE,
                      confusion_csv(test.labels, probabilities.argmax(axis=1), data.class_names))
    schemas.save(summary, output / paths.METRICS_FILE)
    log.info("%s (%s) seed %d: test accuracy %.2f%%, loss %.4f, %.0f images/s at batch %d (%d passes), latency "
             "median %.2f ms p95 %.2f ms", backends.label(framework), tuning, seed, 100 * summary.test_accuracy,
             summary.test_loss, summary.throughput_images_per_second, settings.batch_size, len(rates),
             summary.latency_ms_median, summary.latency_ms_p95)


if __name__ == "__main__":
    run_stage(lambda: main(sys.argv[1:]), "evaluate")
