"""Benchmark: train and evaluate each framework on the real MNIST, report speed, memory, accuracy.

Runs the real stage modules (``python -m stages.preprocess``, ``python -m stages.init <seed>``,
then ``python -m stages.train <fw> <seed>`` and ``python -m stages.evaluate <fw> <seed>``) in a
scratch folder that reuses the project's downloaded ``data/raw``, with optional params overrides,
and prints one row per framework: training seconds, images/second, seconds to 99% validation
accuracy, peak memory of the training process, test accuracy.

    .venv/bin/python bench/train_bench.py                       # defaults, both frameworks
    .venv/bin/python bench/train_bench.py --preset tutorial     # the classic tutorial recipe
    .venv/bin/python bench/train_bench.py -S train.epochs=6 -S train.batch_size=256 --frameworks torch

Needs ``data/raw`` from the real MNIST (``dvc repro download`` with a mirror of it, e.g.
``../shared/datasets/mnist``). Each stage runs in its own process, one framework per process.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stages.common import yamlfile  # noqa: E402
from stages.common.params import validate  # noqa: E402


def apply_override(raw: dict, assignment: str) -> None:
    key, _, value = assignment.partition("=")
    node = raw
    *parents, leaf = key.lstrip("+").split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = yamlfile.loads(value, "-S")


def preset_overrides(name: str) -> list[str]:
    """The key=value items of presets/<name>.args (shell-quoted `-S key=value` pairs)."""
    words = shlex.split((ROOT / "presets" / f"{name}.args").read_text())
    return [word for word in words if word != "-S"]


def run_child(command: list[str], cwd: Path) -> tuple[float, float]:
    """Run a stage; return (wall seconds, peak RSS in MB of that process alone)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT)})
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed")
    return time.perf_counter() - started, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-S", "--set", action="append", default=[], help="params override key=value")
    parser.add_argument("--preset", help="presets/<name>.args overrides applied first")
    parser.add_argument("--frameworks", default="keras,torch")
    parser.add_argument("--seed", type=int, default=1, help="the replicate seed to train (default 1)")
    parser.add_argument("--json", help="write the results here as JSON")
    arguments = parser.parse_args()
    raw_folder = ROOT / "data" / "raw"
    if not raw_folder.is_dir():
        raise SystemExit(f"{raw_folder} is missing: run `dvc repro download` with a mirror of the real MNIST first")
    raw = yamlfile.read(ROOT / "params.yaml")
    for assignment in (preset_overrides(arguments.preset) if arguments.preset else []) + arguments.set:
        apply_override(raw, assignment)
    validate(raw)
    rows = []
    with tempfile.TemporaryDirectory(prefix="train-bench-") as scratch:
        work = Path(scratch)
        (work / "data").mkdir()
        os.symlink(raw_folder, work / "data" / "raw")
        (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        # Preprocess here too: a preset may change preprocess params (the tutorial's inputs).
        run_child([sys.executable, "-m", "stages.preprocess"], work)
        seed = str(arguments.seed)
        run_child([sys.executable, "-m", "stages.init", seed], work)
        for framework in arguments.frameworks.split(","):
            train_wall, train_peak = run_child([sys.executable, "-m", "stages.train", framework, seed], work)
            eval_wall, eval_peak = run_child([sys.executable, "-m", "stages.evaluate", framework, seed], work)
            summary = json.loads((work / "dvclive" / framework / seed / "metrics.json").read_text())
            metrics = json.loads((work / "eval" / framework / seed / "metrics.json").read_text())
            rows.append({
                "framework": framework, "train_seconds": summary["train_seconds"],
                "images_per_second": summary["images_per_second"],
                "seconds_to_val_99": summary["seconds_to_val_accuracy_99"],
                "train_process_seconds": round(train_wall, 1), "train_peak_mb": round(train_peak),
                "evaluate_peak_mb": round(eval_peak), "test_accuracy": metrics["test_accuracy"],
                "inference_images_per_second": metrics["throughput_images_per_second"],
                "latency_ms_median": metrics["latency_ms_median"],
            })
        shutil.rmtree(work / "dvclive", ignore_errors=True)
    header = (f"{'framework':9} {'train s':>8} {'img/s':>7} {'s to 99%':>8} {'process s':>9} {'peak MB':>8} "
              f"{'test acc':>8}")
    print(header)
    for row in rows:
        to_99 = "-" if row["seconds_to_val_99"] is None else f"{row['seconds_to_val_99']:.1f}"
        print(f"{row['framework']:9} {row['train_seconds']:8.1f} {row['images_per_second']:7.0f} {to_99:>8} "
              f"{row['train_process_seconds']:9.1f} {row['train_peak_mb']:8d} {100 * row['test_accuracy']:7.2f}%")
    if arguments.json:
        Path(arguments.json).write_text(json.dumps({"overrides": arguments.set, "preset": arguments.preset,
                                                    "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
