"""The sittings record, ``timing/sittings.json``: one entry per run of the ``timing`` stage.

Each sitting records its date, the machine (CPU model, cores), an identity of what was timed
(the recipe: ``model``, each framework's ``train`` settings, ``evaluate.batch_size``, ``timing``;
what each figure is; the frameworks' versions and builds; each arm's switches), and per round
and arm the figures the worker measured.
The file is a DVC output with ``persist: true`` and ``cache: false``: DVC keeps it when the stage
reruns, the stage appends to it, and git keeps it, so sittings accumulate across runs and clones.

``pooled`` picks the sittings that may be pooled with the newest one: the same CPU model and core
count, and the same identity. Sittings of another machine, recipe or framework version stay in
the file but are never pooled.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from stages.common import atomic, paths
from stages.common.errors import StageError
from stages.common.params import Params, as_dict, effective_train

SITTINGS = paths.SITTINGS
# What each figure of an arm is (stages/timing/worker.py). Part of the identity: sittings that
# measured a figure another way are never pooled with those that measure it this way.
MEASURES = {"step_seconds": "median of the timed steps after the warm-up",
            "startup_seconds": "from the process's creation to its first step done",
            "inference_images_per_second": "the timed passes' images over their total seconds",
            "latency_ms": "median of the timed single-image calls"}
SPEEDS = tuple(MEASURES)


def recipe(params: Params) -> dict[str, Any]:
    """What the timings depend on, from params: pooled sittings must agree on all of it."""
    return {"model": as_dict(params.model), "evaluate_batch_size": params.evaluate.batch_size,
            "timing": as_dict(params.timing),
            "train": {name: as_dict(effective_train(params, name)) for name in params.frameworks}}


def identity(params: Params, versions: dict[str, dict[str, str]], switches: dict[str, list[str]]) -> str:
    """A short hash of the recipe, what each figure is (``MEASURES``), the frameworks' versions
    (``versions``: framework -> its backend's environment, machine keys left out) and each arm's
    switches (``switches``: arm -> the switches it ran with; a backend's tuned level is code, not
    params)."""
    text = json.dumps({"recipe": recipe(params), "measures": MEASURES, "versions": versions, "switches": switches},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load(path: Path = SITTINGS) -> list[dict[str, Any]]:
    """Every sitting, oldest first ([] where there is no record); StageError naming the file if it
    is not a sittings record."""
    if not path.is_file():
        return []
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        sittings = record["sittings"]
        for sitting in sittings:
            sitting["machine"]["cpu"], sitting["identity"], sitting["date"]
            for round_ in sitting["rounds"]:
                for arm in round_["arms"].values():
                    float(arm["step_seconds"]), float(arm["inference_images_per_second"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise StageError(f"{path}: not a sittings record ({type(error).__name__}: {error}); restore it with "
                         f"`git checkout -- {path}`") from None
    return list(sittings)


def append(sitting: dict[str, Any], path: Path = SITTINGS) -> int:
    """Add ``sitting`` (atomically: a failed write leaves the record as it was); its number."""
    sittings = load(path)
    sitting = {**sitting, "sitting": len(sittings) + 1}
    atomic.write_json(path, {"sittings": [*sittings, sitting]})
    return len(sittings) + 1


def pooled(sittings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The sittings poolable with the newest one: same CPU, cores and identity."""
    if not sittings:
        return []
    newest = sittings[-1]

    def key(sitting: dict[str, Any]) -> tuple[Any, ...]:
        return sitting["machine"]["cpu"], sitting["machine"].get("cores"), sitting["identity"]
    return [sitting for sitting in sittings if key(sitting) == key(newest)]
