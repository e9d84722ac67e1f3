"""Benchmark: how far the speed ratios between frameworks move from one sitting to the next.

The report's speed intervals cover training randomness within one sitting (one `dvc repro` on
one machine). This script reruns the stock training and evaluation timings over several
sittings, each in a fresh scratch folder, with the order of the (framework, seed) runs
randomised in every sitting (seeded by the sitting's number, so a run of the script is
repeatable in its order), and reports per sitting the geometric-mean ratio of each framework's
training seconds, inference throughput and single-image latency to the first framework's, and
across sittings the range of each ratio and its spread (largest / smallest).

    .venv/bin/python bench/sittings_bench.py                                  # 3 sittings, seed 1
    .venv/bin/python bench/sittings_bench.py --sittings 4 --seeds 1,2 -S train.epochs=2 \\
        --json bench/results/sittings.json

The report quotes ``bench/results/sittings.json`` (the spread when last measured) where it
says that its speed intervals cover one sitting. Needs ``data/prepared`` from the real MNIST
(``dvc repro preprocess`` with a mirror of it); the project itself is left untouched.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import random
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from train_bench import apply_override, run_child  # noqa: E402

from stages.common import yamlfile  # noqa: E402
from stages.common.params import validate  # noqa: E402

MEASURES = {"train_seconds": ("dvclive", "train_seconds"),
            "inference_images_per_second": ("eval", "throughput_images_per_second"),
            "latency_ms_median": ("eval", "latency_ms_median")}


def sitting(number: int, frameworks: list[str], seeds: list[str], base: dict, prepared: Path) -> dict:
    """One sitting: every (framework, seed) trained and evaluated once, in a shuffled order."""
    runs = [(framework, seed) for framework in frameworks for seed in seeds]
    random.Random(number).shuffle(runs)
    figures: dict[str, dict[str, dict[str, float]]] = {framework: {} for framework in frameworks}
    with tempfile.TemporaryDirectory(prefix="sittings-bench-") as scratch:
        work = Path(scratch)
        (work / "data").mkdir()
        os.symlink(prepared, work / "data" / "prepared")
        (work / "params.yaml").write_text(yaml.safe_dump(base, sort_keys=False))
        for seed in seeds:
            run_child([sys.executable, "-m", "stages.init", seed], work)
        for framework, seed in runs:
            print(f"sitting {number}: {framework} seed {seed}", file=sys.stderr, flush=True)
            run_child([sys.executable, "-m", "stages.train", framework, seed], work)
            run_child([sys.executable, "-m", "stages.evaluate", framework, seed], work)
            files = {"dvclive": json.loads((work / "dvclive" / framework / seed / "metrics.json").read_text()),
                     "eval": json.loads((work / "eval" / framework / seed / "metrics.json").read_text())}
            figures[framework][seed] = {name: files[source][key] for name, (source, key) in MEASURES.items()}
    return {"sitting": number, "order": [f"{framework}-{seed}" for framework, seed in runs], "figures": figures}


def ratios(record: dict, frameworks: list[str], seeds: list[str]) -> dict[str, dict[str, float]]:
    """Per other framework and measure: the geometric mean over seeds of its value / the first's."""
    first, figures = frameworks[0], record["figures"]
    return {framework: {name: round(math.exp(statistics.mean(
        math.log(figures[framework][seed][name] / figures[first][seed][name]) for seed in seeds)), 4)
        for name in MEASURES} for framework in frameworks[1:]}


def spread(per_sitting: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    result: dict[str, dict[str, dict[str, float]]] = {}
    for framework in per_sitting[0]:
        result[framework] = {}
        for name in MEASURES:
            values = [sitting[framework][name] for sitting in per_sitting]
            result[framework][name] = {"low": min(values), "high": max(values),
                                       "spread": round(max(values) / min(values), 3)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frameworks", default="keras,torch", help="the first is the ratios' denominator")
    parser.add_argument("--sittings", type=int, default=3)
    parser.add_argument("--seeds", default="1", help="replicate seeds trained in every sitting, comma-separated")
    parser.add_argument("-S", "--set", action="append", default=[], help="params override key=value, for all")
    parser.add_argument("--json", help="write the results here as JSON")
    arguments = parser.parse_args()
    prepared = ROOT / "data" / "prepared"
    if not (prepared / "meta.json").is_file():
        raise SystemExit(f"{prepared} is missing: run `dvc repro preprocess` with a mirror of the real MNIST first")
    base = yamlfile.read(ROOT / "params.yaml")
    for assignment in arguments.set:
        apply_override(base, assignment)
    validate(base)
    frameworks, seeds = arguments.frameworks.split(","), arguments.seeds.split(",")
    records = [sitting(number, frameworks, seeds, base, prepared) for number in range(1, arguments.sittings + 1)]
    per_sitting = [ratios(record, frameworks, seeds) for record in records]
    result = {"date": datetime.date.today().isoformat(), "machine": f"{platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} cores", "overrides": arguments.set, "frameworks": frameworks, "seeds": seeds,
              "sittings": records, "ratios": per_sitting, "spread": spread(per_sitting)}
    first = frameworks[0]
    for framework, measures in result["spread"].items():
        print(f"{framework} / {first} over {len(records)} sittings (seeds {', '.join(seeds)}):")
        for name, values in measures.items():
            each = ", ".join(f"{sitting[framework][name]:.3f}" for sitting in per_sitting)
            print(f"  {name:28} {values['low']:.3f}-{values['high']:.3f}x, spread {values['spread']:.3f} ({each})")
    if arguments.json:
        Path(arguments.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
