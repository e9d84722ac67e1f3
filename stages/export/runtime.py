"""ONNX Runtime inference of an exported model, timed as the evaluate stage times a framework's.

``measure`` is the one function that times an export (the export stage calls it; a timing stage
can call it in its own rounds): ONNX Runtime on the CPU with ``threads`` intra-op threads and
otherwise its default session options, whole test-set passes at ``evaluate.batch_size`` and
single-image calls, with evaluate's warm-up and repeats (``measure_throughput``,
``measure_latency``). Like the frameworks' ``predict``, it multiplies the images by the model's
``input_scale`` and turns the logits into probabilities per batch.

ONNX Runtime's performance guide names its defaults as the fast settings for the CPU provider (all
graph optimisations on, sequential execution); the parallel executor it suggests for graphs with
many branches does not fit a chain of layers, and this wheel has no other CPU provider. So it has
no tuned switch here: ``SWITCHES`` is empty and a tuned arm's export runs at the defaults too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.common import metrics
from stages.common.metrics import measure_latency, measure_throughput
from stages.common.params import EvaluateParams
from stages.common.runtime import relative_spread

SWITCHES: dict[str, str] = {}  # none: see the module docstring
PROVIDER = "CPUExecutionProvider"


@dataclass(frozen=True)
class Timed:
    probabilities: np.ndarray  # float32, one row per image
    throughput: tuple[float, float, float]  # images per second: over all the passes (overall_rate), min, max
    latency_ms: tuple[float, float]  # single image: median, 95th percentile
    timing_spread: float | None
    session: dict[str, str]


def session(path: Path, threads: int):
    """An ``InferenceSession`` for ``path`` on the CPU: ``threads`` intra-op threads, the rest default."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), options, providers=[PROVIDER])


def describe(inference, threads: int) -> dict[str, str]:
    import onnxruntime

    return {"onnxruntime": onnxruntime.__version__, "provider": ", ".join(inference.get_providers()),
            "intra_op_num_threads": str(threads), "other_session_options": "defaults"}


def predict(inference, images: np.ndarray, batch_size: int, input_scale: float = 1.0) -> np.ndarray:
    """Class probabilities (float32, N x classes), batch by batch."""
    name = inference.get_inputs()[0].name
    outputs = []
    for start in range(0, images.shape[0], batch_size):
        batch = np.asarray(images[start:start + batch_size], dtype=np.float32) * np.float32(input_scale)
        logits = inference.run(None, {name: batch})[0]
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        outputs.append(shifted / shifted.sum(axis=1, keepdims=True))
    return np.concatenate(outputs).astype(np.float32)


def measure(path: Path, images: np.ndarray, settings: EvaluateParams, threads: int,
            input_scale: float = 1.0) -> Timed:
    """Time ONNX Runtime on ``path`` over ``images`` with evaluate's design (see the module docstring)."""
    inference = session(path, threads)
    probabilities, rates = measure_throughput(
        lambda: predict(inference, images, settings.batch_size, input_scale), images.shape[0],
        settings.throughput_repeats)
    latency = measure_latency(lambda image: predict(inference, image, 1, input_scale), images, settings)
    return Timed(probabilities=probabilities,
                 throughput=(metrics.overall_rate(rates), min(rates), max(rates)),
                 latency_ms=(metrics.percentile_ms(latency, 50), metrics.percentile_ms(latency, 95)),
                 timing_spread=relative_spread(1 / rate for rate in rates),
                 session=describe(inference, threads))
