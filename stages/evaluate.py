"""Stage ``evaluate@<framework>``: test-set metrics, predictions and speed of one trained model.

Inputs: ``models/<framework>/`` (model, architecture.json, inference.json),
``data/prepared/`` (test split and meta.json), ``params.yaml`` (``evaluate:``).
Outputs:

- ``metrics/<framework>.json``: test accuracy and loss, macro precision/recall/F1, inference
  throughput (images/s at ``evaluate.batch_size``), batch-1 latency (median and 95th
  percentile, ms), parameter count, model file size. Not cached by DVC, so ``dvc metrics
  show/diff`` list both frameworks side by side from git.
- ``eval/<framework>/predictions.npy``: float32 class probabilities, one row per test image.
- ``eval/<framework>/per_class.json``: per-class precision, recall, F1, support and the
  confusion matrix, with class names.
- ``eval/<framework>/confusion.csv``: one ``actual,predicted`` row (class names) per test image,
  the input of DVC's ``confusion`` plot template.

The model is loaded only through the framework's safe loader (Keras ``safe_mode``, PyTorch
``weights_only=True``). Only the named framework is imported.

Run: ``python -m stages.evaluate keras`` (or ``dvc repro evaluate@keras``).
"""

from __future__ import annotations

import csv
import importlib
import io
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from stages.common import atomic, metrics, prepared
from stages.common.architecture import ArchitectureSpec
from stages.common.errors import StageError, run_stage
from stages.common.params import FRAMEWORKS, EvaluateParams, effective_train, load_params
from stages.common.runtime import configure_threads, seed_python_and_numpy
from stages.common.training import ARCHITECTURE_FILE, INFERENCE_FILE, MODELS_DIR, PREPARED_DIR

METRICS_DIR = Path("metrics")
EVAL_DIR = Path("eval")

log = logging.getLogger("evaluate")


def measure_latency(predict_one, images: np.ndarray, settings: EvaluateParams) -> list[float]:
    """Seconds per single-image call, after untimed warm-up calls."""
    count = images.shape[0]
    for index in range(settings.latency_warmup):
        predict_one(images[index % count: index % count + 1])
    seconds = []
    for index in range(settings.latency_samples):
        image = images[index % count: index % count + 1]
        started = time.perf_counter()
        predict_one(image)
        seconds.append(time.perf_counter() - started)
    return seconds


def classification_metrics(probabilities: np.ndarray, labels: np.ndarray, class_names: list[str]) -> dict:
    """Accuracy, loss, macro and per-class scores, confusion matrix."""
    predicted = probabilities.argmax(axis=1)
    confusion = metrics.confusion_matrix(labels, predicted, len(class_names))
    scores = metrics.per_class_scores(confusion)
    return {
        "accuracy": metrics.accuracy(labels, predicted),
        "loss": metrics.cross_entropy(probabilities, labels),
        "macro_precision": float(scores["precision"].mean()),
        "macro_recall": float(scores["recall"].mean()),
        "macro_f1": float(scores["f1"].mean()),
        "per_class": {
            "class_names": class_names,
            **{name: values.tolist() for name, values in scores.items()},
            "confusion": confusion.tolist(),
        },
    }


def confusion_csv(labels: np.ndarray, predicted: np.ndarray, class_names: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["actual", "predicted"])
    writer.writerows((class_names[int(true)], class_names[int(guess)]) for true, guess in zip(labels, predicted))
    return buffer.getvalue()


def load_trained(framework: str, backend) -> tuple[object, ArchitectureSpec, float, Path]:
    folder = MODELS_DIR / framework
    try:
        spec = ArchitectureSpec.from_json((folder / ARCHITECTURE_FILE).read_text(encoding="utf-8"))
        input_scale = float(json.loads((folder / INFERENCE_FILE).read_text(encoding="utf-8"))["input_scale"])
    except FileNotFoundError as error:
        raise StageError(f"{error.filename}: missing; run the training stage first (dvc repro train@{framework})") \
            from None
    except (ValueError, KeyError, TypeError) as error:
        raise StageError(f"{folder}: corrupt architecture.json or inference.json ({error})") from None
    path = folder / backend.MODEL_FILE
    return backend.load_model(path, spec), spec, input_scale, path


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] not in FRAMEWORKS:
        raise StageError(f"usage: python -m stages.evaluate {{{'|'.join(FRAMEWORKS)}}}")
    framework = sys.argv[1]
    params = load_params()
    settings = params.evaluate
    threads = effective_train(params, framework).threads
    configure_threads(threads)
    seed_python_and_numpy(params.seed)
    data = prepared.load_prepared(PREPARED_DIR, splits=("test",))
    test = data.splits["test"]
    backend = importlib.import_module(f"stages.train_{framework}")
    backend.configure(effective_train(params, framework), params.seed)
    model, spec, input_scale, model_path = load_trained(framework, backend)
    if spec.input_shape != data.image_shape or spec.num_classes != data.num_classes:
        raise StageError(f"{model_path}: built for {spec.input_shape} images and {spec.num_classes} classes, but "
                         f"{PREPARED_DIR} holds {data.image_shape} and {data.num_classes}; retrain it")

    # Warm-up batch first: tracing and allocation must not count against throughput.
    backend.predict(model, test.images[: settings.batch_size], settings.batch_size, input_scale)
    started = time.perf_counter()
    probabilities = backend.predict(model, test.images, settings.batch_size, input_scale)
    predict_seconds = time.perf_counter() - started
    latency = measure_latency(lambda image: backend.predict(model, image, 1, input_scale), test.images, settings)

    results = classification_metrics(probabilities, test.labels, data.class_names)
    per_class = results.pop("per_class")
    summary = {
        "framework": framework,
        "test_images": int(test.labels.shape[0]),
        "test_accuracy": results["accuracy"],
        "test_loss": results["loss"],
        "macro_precision": results["macro_precision"],
        "macro_recall": results["macro_recall"],
        "macro_f1": results["macro_f1"],
        "throughput_images_per_second": round(test.labels.shape[0] / predict_seconds, 1),
        "latency_ms_median": round(metrics.percentile_ms(latency, 50), 4),
        "latency_ms_p95": round(metrics.percentile_ms(latency, 95), 4),
        "parameters": backend.count_parameters(model),
        "model_bytes": model_path.stat().st_size,
    }
    folder = EVAL_DIR / framework
    atomic.write_npy(folder / "predictions.npy", probabilities)
    atomic.write_json(folder / "per_class.json", per_class)
    atomic.write_text(folder / "confusion.csv",
                      confusion_csv(test.labels, probabilities.argmax(axis=1), data.class_names))
    atomic.write_json(METRICS_DIR / f"{framework}.json", summary)
    log.info("%s: test accuracy %.2f%%, loss %.4f, %.0f images/s at batch %d, latency median %.2f ms p95 %.2f ms",
             framework, 100 * summary["test_accuracy"], summary["test_loss"],
             summary["throughput_images_per_second"], settings.batch_size, summary["latency_ms_median"],
             summary["latency_ms_p95"])


if __name__ == "__main__":
    run_stage(main, "evaluate")
