"""One arm's timings in a process of its own: ``python -m stages.timing.worker <framework>
<level> <output.json>``, started by the ``timing`` stage once per arm and round (never by DVC).

Reads ``data/prepared/`` (train, val and test splits), ``models/init/<seed>.npz`` (the shared
initial weights of the first replicate seed) and ``params.yaml`` (``train`` with the framework's
overrides, ``evaluate.batch_size``, ``timing``). Writes ``<output.json>``: the steady step time
(the median of the timed steps after ``timing.warmup_steps`` untimed ones, at ``train.batch_size``;
the first step of each epoch, which follows validation, and a short last batch are not timed),
start-up (from the process's creation to its first step done: imports, data, model, compilation),
inference throughput at ``evaluate.batch_size`` (the images of ``timing.inference_repeats`` passes,
after one untimed pass, over their total time: ``metrics.overall_rate``; each pass's rate is kept
too), single-image latency (median after ``timing.latency_warmup`` untimed calls), the busy check's
CPU accounting of the timed window, and, with ``--contended``, the steady step time again while
the standard spinning process holds one core (stages/timing/spinner.py).
Imports only the named framework.
"""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from stages import backends
from stages.backends.base import Backend, EpochRecord, StepRecord, configure_machine
from stages.common import atomic, cli, metrics, paths, prepared
from stages.common.architecture import ArchitectureSpec, build_spec, load_initial_weights
from stages.common.errors import run_stage
from stages.common.params import TUNING_LEVELS, EvaluateParams, Params, TrainParams, effective_train, load_params
from stages.common.runtime import configure_threads, machine_environment, seed_python_and_numpy
from stages.common.schedules import learning_rates
from stages.timing import spinner
from stages.timing.busy import BusyMeter


def epochs_needed(per_epoch: int, warmup: int, steps: int) -> int:
    """Epochs of ``per_epoch`` full batches that hold ``steps`` timed steps after ``warmup`` steps,
    the first step of each epoch not timed."""
    if per_epoch < 2:
        raise ValueError(f"an epoch of {per_epoch} batch(es) has no step to time; expected at least 2")
    timed = step = epochs = 0
    while timed < steps:
        epochs += 1
        for batch in range(1, per_epoch + 1):
            step += 1
            timed += batch > 1 and step > warmup
    return epochs


def steady_steps(backend: Backend, spec: ArchitectureSpec, initial: list[np.ndarray], train: prepared.Split,
                 val: prepared.Split, settings: TrainParams, warmup: int, steps: int,
                 first_step_done: list[float] | None = None) -> list[float]:
    """Seconds of each timed step: full batches are trained from ``initial`` on the first
    ``warmup + steps + 1`` batches' worth of training images, over as many epochs as it takes;
    the first ``warmup`` steps, the first step of each epoch (it follows validation) and short
    last batches are not timed."""
    count = min(train.labels.shape[0], (warmup + steps + 1) * settings.batch_size)
    train = prepared.Split(train.images[:count], train.labels[:count])
    settings = dataclasses.replace(settings, epochs=epochs_needed(count // settings.batch_size, warmup, steps))
    model = backend.build_model(spec, 0)  # every weight is then set from initial
    backend.set_weights(model, initial)
    durations: list[float] = []
    state = {"step": 0, "last": time.perf_counter()}

    def on_step(record: StepRecord) -> None:
        now = time.perf_counter()
        state["step"] += 1
        if first_step_done is not None and not first_step_done:
            first_step_done.append(time.time())
        full = len(record.rows) == settings.batch_size
        if record.batch > 1 and full and state["step"] > warmup and len(durations) < steps:
            durations.append(now - state["last"])
        state["last"] = time.perf_counter()

    def on_epoch(record: EpochRecord) -> None:
        state["last"] = time.perf_counter()

    rates = learning_rates(settings, math.ceil(count / settings.batch_size))
    backend.fit(model, train, val, settings, rates, 0, on_epoch, on_step_end=on_step)
    if len(durations) < steps:
        raise RuntimeError(f"timed {len(durations)} of {steps} steps")
    return durations


def measure(framework: str, level: str, params: Params, contended: bool) -> dict[str, Any]:
    created = psutil.Process().create_time()
    timing, seed = params.timing, params.replicates.seeds[0]
    settings = effective_train(params, framework, level)
    configure_threads(settings.threads)
    seed_python_and_numpy(seed)
    backend = backends.load(framework, level, device=settings.device)
    settings = effective_train(params, framework, level, backend.TUNED if level == "tuned" else ())
    configure_machine(backend, settings, seed, "rerun it: dvc repro timing")
    data = prepared.load_prepared(paths.PREPARED, splits=("train", "val", "test"))
    spec = build_spec(params.model, data.image_shape, data.num_classes)
    initial = load_initial_weights(paths.init_weights(seed), spec)
    train, test = data.splits["train"], data.splits["test"]
    val = data.splits["val"]
    val = prepared.Split(val.images[:settings.batch_size], val.labels[:settings.batch_size])
    first: list[float] = []
    with BusyMeter() as meter:
        steps = steady_steps(backend, spec, initial, train, val, settings, timing.warmup_steps, timing.steps, first)
        model = backend.build_model(spec, seed)
        backend.set_weights(model, initial)
        model = backend.for_inference(model, settings.switches)
        images = np.asarray(test.images[:timing.inference_images])
        batch = params.evaluate.batch_size
        _, rates = metrics.measure_throughput(lambda: backend.predict(model, images, batch, settings.input_scale),
                                              images.shape[0], timing.inference_repeats)
        latency = metrics.measure_latency(lambda image: backend.predict(model, image, 1, settings.input_scale),
                                          images, EvaluateParams(batch_size=1, throughput_repeats=1,
                                                                 latency_samples=timing.latency_samples,
                                                                 latency_warmup=timing.latency_warmup))
    assert meter.window is not None
    result: dict[str, Any] = {
        "framework": framework, "level": level, "switches": list(settings.switches), "pid": os.getpid(),
        "created": created,
        "step_seconds": statistics.median(steps), "steps": [round(value, 6) for value in steps],
        "startup_seconds": first[0] - created,
        "inference_images_per_second": metrics.overall_rate(rates),
        "inference_passes": [round(rate, 1) for rate in rates],
        "latency_ms": metrics.percentile_ms(latency, 50),
        "window": meter.window.to_dict(), "contended": None,
        "environment": {**backend.environment(), **machine_environment(settings.threads)}}
    if contended:
        spinning = spinner.start()
        try:
            with BusyMeter() as loaded:
                slow = steady_steps(backend, spec, initial, train, val, settings, timing.warmup_steps, timing.steps)
        finally:
            spinner.stop(spinning)
        assert loaded.window is not None
        result["contended"] = {"step_seconds": statistics.median(slow), "spinner_pid": spinning.pid,
                               "window": loaded.window.to_dict()}
    return result


def main(argv: list[str] | None = None) -> None:
    arguments = cli.parser("stages.timing.worker", __doc__)
    arguments.add_argument("framework", help=f"one of: {', '.join(backends.names())}")
    arguments.add_argument("level", choices=TUNING_LEVELS)
    arguments.add_argument("output", type=Path, help="where to write the JSON result")
    arguments.add_argument("--contended", action="store_true", help="also time steps with one core taken")
    args = arguments.parse_args(argv)
    params = load_params()
    atomic.write_json(args.output, measure(args.framework, args.level, params, args.contended))


if __name__ == "__main__":
    run_stage(lambda: main(sys.argv[1:]), "timing")
