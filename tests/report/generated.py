"""A generated, self-consistent workspace of everything the report reads, for any number of
frameworks and seeds: prepared test split, and per replicate run.json, the dvclive logs and
training summary, and the evaluation files, all written through the real schemas.

Framework ``f`` with seed ``s`` gets the test images in ``WRONG[f]`` (plus ``s``-dependent extras)
wrong, so disagreements and McNemar counts are known by construction. Its export on ONNX Runtime
(``eval/<arm>/<seed>/onnx.json``) has the figures of ``onnx_figures``, known by construction too;
the frameworks in ``NO_ROUTE`` (the toy numpy backend, as tests/numpy_backend.py) have no route.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from stages.common import metrics, paths, prepared, schemas
from stages.common.schemas import OnnxMetrics, PerClass, RunInfo, TestMetrics, TrainingSummary
from tests.support import project_params, synthetic_images

COUNT = 40
WRONG = {"keras": [1, 2, 3, 5], "torch": [3, 4, 5], "numpy": [0, 1]}
NORMALIZE = {"method": "standardize", "mean": 33.3, "std": 78.6}
NO_ROUTE = {"numpy": "the toy numpy framework has no ONNX exporter of its own"}
LATENCY_MS = 0.5  # every replicate's own single-image latency


def onnx_figures(framework: str, seed: int, throughput: float) -> dict[str, float | int]:
    """ONNX Runtime's figures for one replicate whose own inference runs at ``throughput``: per
    seed, (1.9 + 0.1 seed)x its throughput and (0.4 + 0.05 seed)x its latency; seed 3 classes one
    image differently; the largest probability difference is seed x 1e-7."""
    different = 1 if seed == 3 else 0
    return {"max_abs_probability_difference": seed * 1e-7, "same_class_share": (COUNT - different) / COUNT,
            "different_class_images": different,
            "test_accuracy": metrics.accuracy(labels(), probabilities(framework, seed).argmax(axis=1)),
            "throughput_images_per_second": (1.9 + 0.1 * seed) * throughput,
            "latency_ms_median": (0.4 + 0.05 * seed) * LATENCY_MS}


def labels() -> np.ndarray:
    return (np.arange(COUNT) % 10).astype(np.uint8)


def probabilities(framework: str, seed: int) -> np.ndarray:
    truth = labels().astype(np.int64)
    predicted = truth.copy()
    for index in WRONG[framework] + ([10 + seed] if seed > 1 else []):
        predicted[index] = (truth[index] + 1) % 10
    rng = np.random.default_rng(seed)
    confidence = rng.uniform(0.5, 0.99, size=COUNT)
    rows = np.repeat(((1 - confidence) / 9)[:, None], 10, axis=1)
    rows[np.arange(COUNT), predicted] = confidence
    return rows.astype(np.float32)


SEMANTICS = {"keras": {"moving_variance": "biased", "adam_epsilon": "uncorrected", "sgd_momentum": "weight_units",
                       "sgd_weight_decay": "decoupled", "gelu": "exact"},
             "torch": {"moving_variance": "unbiased", "adam_epsilon": "corrected", "sgd_momentum": "gradient_units",
                       "sgd_weight_decay": "coupled", "gelu": "exact"}}


def write_replicate(root: Path, framework: str, seed: int, train_seconds: float, throughput: float,
                    tuning: str = "stock") -> None:
    probs = probabilities(framework, seed)
    truth = labels()
    predicted = probs.argmax(axis=1)
    confusion = metrics.confusion_matrix(truth, predicted, 10)
    scores = metrics.per_class_scores(confusion)
    model = root / paths.model_dir(framework, seed, tuning)
    model.mkdir(parents=True, exist_ok=True)
    switches = {"switch_a": "what it does (https://example.org/guide)"} if tuning == "tuned" else {}
    environment = {f"{framework}_version": "1.0", "cpu": "test CPU", "threads": "2"}
    schemas.save(RunInfo(framework=framework, seed=seed, device="cpu", init="shared", input_scale=1.0,
                         tuning=tuning, switches=switches, description=f"{framework} as its guide writes it",
                         semantics=SEMANTICS.get(framework, SEMANTICS["torch"]), environment=environment),
                 model / paths.RUN_FILE)
    logs = root / paths.logs_dir(framework, seed, tuning)
    epochs = 3
    for name in ("train/loss", "val/loss", "train/accuracy", "val/accuracy", "epoch_seconds"):
        path = logs / "plots" / "metrics" / f"{name}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        column = name.rsplit("/", 1)[-1]
        values = [0.5 / (epoch + seed) if column == "loss" else train_seconds / epochs if column == "epoch_seconds"
                  else 0.9 + 0.02 * epoch for epoch in range(1, epochs + 1)]
        path.write_text(f"step\t{column}\n" + "".join(f"{epoch}\t{value}\n" for epoch, value in
                                                      enumerate(values, start=1)))
    schemas.save(TrainingSummary(epochs=epochs, train_loss=0.1, train_accuracy=0.97, val_loss=0.12, val_accuracy=0.96,
                                 best_val_accuracy=0.96, train_seconds=train_seconds,
                                 images_per_second=54_000 * epochs / train_seconds, parameters=1000,
                                 seconds_to_val_accuracy_98=None, seconds_to_val_accuracy_99=None),
                 logs / paths.METRICS_FILE)
    evaluation = root / paths.eval_dir(framework, seed, tuning)
    evaluation.mkdir(parents=True, exist_ok=True)
    np.save(evaluation / paths.PREDICTIONS_FILE, probs)
    schemas.save(PerClass(class_names=[f"class {i}" for i in range(10)], precision=scores["precision"].tolist(),
                          recall=scores["recall"].tolist(), f1=scores["f1"].tolist(),
                          support=scores["support"].tolist(), confusion=confusion.tolist()),
                 evaluation / paths.PER_CLASS_FILE)
    schemas.save(TestMetrics(test_images=COUNT, test_accuracy=metrics.accuracy(truth, predicted),
                             test_loss=metrics.cross_entropy(probs, truth),
                             macro_precision=float(scores["precision"].mean()),
                             macro_recall=float(scores["recall"].mean()), macro_f1=float(scores["f1"].mean()),
                             throughput_images_per_second=throughput,
                             throughput_images_per_second_min=throughput * 0.95,
                             throughput_images_per_second_max=throughput * 1.05, latency_ms_median=LATENCY_MS,
                             latency_ms_p95=0.9, tuning=tuning, switches=sorted(switches),
                             environment=environment, parameters=1000, model_bytes=4000),
                 evaluation / paths.METRICS_FILE)
    route = "stages.backends.example.export"
    if framework in NO_ROUTE:
        record = OnnxMetrics(route=route, error=NO_ROUTE[framework], onnx_bytes=None, test_images=COUNT,
                             **dict.fromkeys(("max_abs_probability_difference", "same_class_share",
                                              "different_class_images", "test_accuracy", "throughput_images_per_second",
                                              "throughput_images_per_second_min", "throughput_images_per_second_max",
                                              "latency_ms_median", "latency_ms_p95")), session={})
    else:
        figures = onnx_figures(framework, seed, throughput)
        record = OnnxMetrics(route=route, error=None, onnx_bytes=5000, test_images=COUNT, **figures,
                             throughput_images_per_second_min=0.95 * figures["throughput_images_per_second"],
                             throughput_images_per_second_max=1.05 * figures["throughput_images_per_second"],
                             latency_ms_p95=2 * figures["latency_ms_median"], session={"onnxruntime": "1.0"})
    schemas.save(record, evaluation / paths.ONNX_METRICS_FILE)


def write_workspace(root: Path, frameworks=("keras", "torch"), seeds=(1, 2, 3), tuned_seeds=None) -> Path:
    tuned_seeds = tuple(seeds[:2]) if tuned_seeds is None else tuned_seeds
    """Everything the report stage reads, under ``root``; returns ``root``."""
    rng = np.random.default_rng(0)
    truth = labels()
    images = ((synthetic_images(truth, 28, rng).astype(np.float32) - NORMALIZE["mean"]) / NORMALIZE["std"])[..., None]
    splits = {name: prepared.Split(images, truth) for name in ("train", "val", "test")}
    meta = prepared.build_meta(dataset="mnist", class_names=[f"class {i}" for i in range(10)],
                               image_shape=(28, 28, 1), normalize=NORMALIZE, splits=splits, sources={}, seed=42,
                               val_fraction=0.1)
    prepared.save_prepared(root / paths.PREPARED, splits, meta)
    for index, framework in enumerate(frameworks):
        for seed in seeds:
            write_replicate(root, framework, seed, train_seconds=20.0 + 5 * index + 0.1 * seed,
                            throughput=10_000.0 * (index + 1) + 10 * seed)
        for seed in tuned_seeds:  # tuned: 0.8x the time, 1.5x the throughput
            write_replicate(root, framework, seed, train_seconds=0.8 * (20.0 + 5 * index + 0.1 * seed),
                            throughput=1.5 * (10_000.0 * (index + 1) + 10 * seed), tuning="tuned")
    raw = project_params()
    raw["frameworks"] = list(frameworks)
    raw["replicates"]["seeds"] = list(seeds)
    raw["replicates"]["tuned_seeds"] = list(tuned_seeds)
    for framework in frameworks:
        raw.setdefault(framework, {})
    raw["report"].update(misclassified=4, disagreements=4, dpi=50, target_val_accuracy=0.93)  # reached at epoch 2
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return root
