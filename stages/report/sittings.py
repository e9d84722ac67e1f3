"""The spread of the speed ratios between sittings, as ``bench/sittings_bench.py`` last measured it.

The report's speed intervals cover one sitting; the sentence built here says how far the same
ratios moved across several sittings, from ``bench/results/sittings.json`` (committed with the
benchmark's figures). Without that file the report only says that the spread is not covered.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stages import backends
from stages.common.errors import StageError

SITTINGS_FILE = Path("bench/results/sittings.json")
MEASURE_NAMES = {"train_seconds": "training time", "inference_images_per_second": "inference throughput",
                 "latency_ms_median": "single-image latency"}


def load(path: Path = SITTINGS_FILE) -> dict[str, Any] | None:
    """The benchmark's record, or None where there is none; StageError naming the file if unreadable."""
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        frameworks, spread = record["frameworks"], record["spread"]
        for framework in frameworks[1:]:
            for name in MEASURE_NAMES:
                float(spread[framework][name]["low"]), float(spread[framework][name]["high"])
        record["date"], len(record["sittings"])
    except (OSError, ValueError, KeyError, TypeError, IndexError) as error:
        raise StageError(f"{path}: not a bench/sittings_bench.py record ({type(error).__name__}: {error}); "
                         "rerun bench/sittings_bench.py --json or restore it with git checkout") from None
    return dict(record)


def sentence(record: dict[str, Any] | None) -> str:
    """What the report says about sittings."""
    if record is None:
        return ("Speed intervals cover one sitting on this machine, not the spread between sittings "
                "(`bench/sittings_bench.py` measures it).")
    first = backends.label(record["frameworks"][0])
    parts = []
    for framework in record["frameworks"][1:]:
        ranges = ", ".join(f"{MEASURE_NAMES[name]} {values['low']:.2f}-{values['high']:.2f}x"
                           for name, values in record["spread"][framework].items() if name in MEASURE_NAMES)
        parts.append(f"{backends.label(framework)} / {first}: {ranges}")
    return (f"Speed intervals cover one sitting on this machine. Between sittings the ratios move further: over "
            f"{len(record['sittings'])} sittings on {record['date']} (`bench/sittings_bench.py`, seed(s) "
            f"{', '.join(record['seeds'])}, {record['machine']}), {'; '.join(parts)}.")
