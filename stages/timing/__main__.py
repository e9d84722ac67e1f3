"""Stage ``timing``: speed measured for the questions the report asks, apart from the training
that produces the models. One run of this stage is one sitting.

Reads ``params.yaml`` (``frameworks``, ``replicates.seeds`` (the first seed's initial weights),
``model``, ``train`` and each framework's section, ``evaluate.batch_size``, ``timing``),
``data/prepared/`` and ``models/init/<seed>.npz``. Appends one sitting to ``timing/sittings.json``
(``stages/timing/record.py``): its date, machine and identity, and per round and arm the worker's
figures and the busy check's accounting, with the number of arms repeated and dropped.

In each of ``timing.rounds`` rounds every arm (each framework of ``frameworks`` at ``stock`` and
``tuned``) runs once, each in a fresh process (``python -m stages.timing.worker``: one framework
per process), in an order rotated from round to round, so that drift in the machine's speed hits
every arm alike and ratios pair within a round. Stock arms also time their steady step with the
standard spinning process holding one core (``timing.contention``). Every timed window goes
through the busy check (``stages/timing/busy.py``): where other processes used more than
``timing.busy_cores`` cores, the arm is rerun up to ``timing.retries`` times, then dropped from
its round; the sitting counts both.
"""

from __future__ import annotations

import datetime
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stages import backends
from stages.common import cli, paths
from stages.common.errors import StageError, run_stage
from stages.common.params import TUNING_LEVELS, Params, load_params
from stages.common.runtime import machine_environment
from stages.timing import record

log = logging.getLogger("timing")
WORKER = (sys.executable, "-m", "stages.timing.worker")
MACHINE_KEYS = ("cpu", "cores", "threads", "python", "os")


def arms(frameworks: Sequence[str]) -> list[tuple[str, str]]:
    return [(framework, level) for framework in frameworks for level in TUNING_LEVELS]


def round_order(all_arms: list[tuple[str, str]], number: int) -> list[tuple[str, str]]:
    """Round ``number`` (0-based) starts ``number`` arms further along: every arm takes every place."""
    shift = number % len(all_arms)
    return all_arms[shift:] + all_arms[:shift]


def run_worker(framework: str, level: str, contended: bool, folder: Path,
               worker: Sequence[str] = WORKER) -> dict[str, Any]:
    output = folder / f"{framework}-{level}-{time.monotonic_ns()}.json"
    command = [*worker, framework, level, str(output), *(["--contended"] if contended else [])]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0 or not output.is_file():
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise StageError(f"timing {framework} ({level}) failed (exit {result.returncode}): "
                         f"{lines[-1] if lines else 'no output'}")
    import json

    figures: dict[str, Any] = json.loads(output.read_text(encoding="utf-8"))
    output.unlink()
    return figures


def contaminated(figures: dict[str, Any], limit: float) -> bool:
    windows = [figures["window"]] + ([figures["contended"]["window"]] if figures.get("contended") else [])
    return any(window["others_cores"] > limit for window in windows)


def sitting(params: Params, worker: Sequence[str] = WORKER) -> dict[str, Any]:
    """Run the rounds; the sitting's entry for the record."""
    settings = params.timing
    started = time.monotonic()
    order = arms(params.frameworks)
    rounds, repeated, dropped = [], 0, 0
    versions: dict[str, dict[str, str]] = {}
    switches: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="timing-") as scratch:
        for number in range(settings.rounds):
            measured: dict[str, Any] = {}
            for framework, level in round_order(order, number):
                arm = paths.arm_name(framework, level)
                for attempt in range(settings.retries + 1):
                    figures = run_worker(framework, level, settings.contention and level == "stock",
                                         Path(scratch), worker)
                    if not contaminated(figures, settings.busy_cores):
                        break
                    log.info("round %d, %s: other processes used %.2f cores while it was timed; %s", number + 1,
                             backends.label(arm), figures["window"]["others_cores"],
                             "rerunning it" if attempt < settings.retries else "dropped from this round")
                    repeated += attempt < settings.retries
                else:
                    dropped += 1
                    continue
                environment = figures.pop("environment")
                versions[framework] = {key: value for key, value in environment.items() if key not in MACHINE_KEYS}
                switches[arm] = figures["switches"]
                measured[arm] = figures
                log.info("round %d, %s: step %.2f ms, start-up %.1f s, %.0f images/s, latency %.3f ms%s",
                         number + 1, backends.label(arm), 1000 * figures["step_seconds"], figures["startup_seconds"],
                         figures["inference_images_per_second"], figures["latency_ms"],
                         f", contended step {1000 * figures['contended']['step_seconds']:.2f} ms"
                         if figures["contended"] else "")
            rounds.append({"round": number + 1, "order": [paths.arm_name(*arm) for arm in round_order(order, number)],
                           "arms": measured})
    machine = machine_environment(params.train.threads)
    return {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": {"cpu": machine["cpu"], "cores": machine["cores"]},
            "identity": record.identity(params, versions, switches), "frameworks": list(params.frameworks),
            "versions": versions, "busy_cores": settings.busy_cores, "repeated": repeated, "dropped": dropped,
            "wall_seconds": round(time.monotonic() - started, 1), "rounds": rounds}


def main(argv: list[str] | None = None) -> None:
    cli.parser("stages.timing", __doc__).parse_args(argv)
    params = load_params()
    if not paths.init_weights(params.replicates.seeds[0]).is_file():
        raise StageError(f"{paths.init_weights(params.replicates.seeds[0])}: missing; run "
                         f"`dvc repro init@{params.replicates.seeds[0]}`")
    record.load()  # refuse an unreadable record before an hour's work, not after
    entry = sitting(params, WORKER)
    number = record.append(entry)
    log.info("sitting %d: %d rounds of %d arms in %.0f s (%d arm(s) rerun, %d dropped: other processes busy); "
             "appended to %s", number, len(entry["rounds"]), 2 * len(params.frameworks), entry["wall_seconds"],
             entry["repeated"], entry["dropped"], record.SITTINGS)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    run_stage(lambda: main(sys.argv[1:]), "timing")
