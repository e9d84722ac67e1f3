"""Benchmark: each framework in each execution mode against what this machine can do.

Runs the real stages (``python -m stages.train <fw> <seed>``, ``python -m stages.evaluate <fw>
<seed>``, each in its own process) on the real MNIST in a scratch folder, for every framework x
execution mode (``train.execution`` and ``evaluate.execution.<framework>`` set alike), plus the
tutorial recipe (``presets/tutorial.args``, standard mode) in the same run, the configurations
interleaved within each of ``--repeats`` rounds. Prints, as medians over the rounds:

- training: optimisation seconds, images/s, the model's training FLOPs per epoch (3 x the
  forward FLOPs of its convolutions and dense layers, ``ArchitectureSpec.forward_flops``), the
  achieved GFLOP/s and its ratio to the machine's sgemm peak, and how many times the FLOP floor
  (the epochs' FLOPs at the sgemm peak) the optimisation took;
- inference: images/s at ``evaluate.batch_size`` and single-image latency (``evaluate``'s own
  measurements), test accuracy;
- peak RSS of every stage process (preprocess, init, train, evaluate).

The sgemm peak is a float32 ``numpy`` matrix product (2048 x 2048, the BLAS numpy ships with) on
``train.threads`` threads, best of five timed runs, measured before and after the series so a
machine that changed speed during the run shows.

    .venv/bin/python bench/fair_bench.py                          # both frameworks, both modes, 1 round
    .venv/bin/python bench/fair_bench.py --repeats 3 --json bench/results/fair.json
    .venv/bin/python bench/fair_bench.py --frameworks torch --modes compiled --no-tutorial

Needs ``data/raw`` from the real MNIST (``dvc repro download`` with a mirror of it, e.g.
``../shared/datasets/mnist``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from train_bench import apply_override, preset_overrides, run_child  # noqa: E402

from stages.common import yamlfile  # noqa: E402
from stages.common.architecture import build_spec  # noqa: E402
from stages.common.params import validate  # noqa: E402

SGEMM = """
import time, numpy as np
a = np.random.default_rng(0).random((2048, 2048), dtype=np.float32)
a @ a
best = 0.0
for _ in range(5):
    started = time.perf_counter()
    for _ in range(5):
        a @ a
    best = max(best, 5 * 2 * 2048 ** 3 / (time.perf_counter() - started))
print(best / 1e9)
"""


def sgemm_gflops(threads: int) -> float:
    """The machine's float32 matrix-product rate on ``threads`` threads, in GFLOP/s."""
    env = {**os.environ, **{name: str(threads) for name in
                            ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}}
    result = subprocess.run([sys.executable, "-c", SGEMM], env=env, check=True, capture_output=True, text=True)
    return float(result.stdout.strip())


def configurations(frameworks: list[str], modes: list[str], tutorial: bool) -> list[dict]:
    rows = [{"name": f"{framework} {mode}", "framework": framework, "mode": mode, "preset": None,
             "set": [f"train.execution={mode}", f"evaluate.execution.{framework}={mode}"]}
            for framework in frameworks for mode in modes]
    if tutorial:
        rows += [{"name": f"{framework} tutorial", "framework": framework, "mode": "standard", "preset": "tutorial",
                  "set": ["train.execution=standard", f"evaluate.execution.{framework}=standard"]}
                 for framework in frameworks]
    return rows


def prepare(base: dict, config: dict, scratch: Path, raw_folder: Path, seed: str) -> tuple[Path, dict]:
    """A folder with params.yaml, data/prepared and models/init for ``config``; peak RSS of those stages."""
    raw = json.loads(json.dumps(base))
    for assignment in (preset_overrides(config["preset"]) if config["preset"] else []) + config["set"]:
        apply_override(raw, assignment)
    params = validate(raw)
    work = scratch / config["name"].replace(" ", "-")
    if not work.exists():
        (work / "data").mkdir(parents=True)
        os.symlink(raw_folder, work / "data" / "raw")
        (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    peaks = {"preprocess": run_child([sys.executable, "-m", "stages.preprocess"], work)[1],
             "init": run_child([sys.executable, "-m", "stages.init", seed], work)[1]}
    return work, {"params": params, "peaks": peaks}


def measure(config: dict, work: Path, prepared: dict, seed: str) -> dict:
    framework = config["framework"]
    train_wall, train_peak = run_child([sys.executable, "-m", "stages.train", framework, seed], work)
    eval_wall, eval_peak = run_child([sys.executable, "-m", "stages.evaluate", framework, seed], work)
    summary = json.loads((work / "dvclive" / framework / seed / "metrics.json").read_text())
    evaluation = json.loads((work / "eval" / framework / seed / "metrics.json").read_text())
    meta = json.loads((work / "data" / "prepared" / "meta.json").read_text())
    params = prepared["params"]
    spec = build_spec(params.model, tuple(meta["image_shape"]), len(meta["class_names"]))
    ips = summary["images_per_second"]
    epoch_images = meta["splits"]["train"]["count"]
    return {
        "train_seconds": summary["train_seconds"], "images_per_second": ips,
        "optimisation_seconds": params.train.epochs * epoch_images / ips,
        "train_flops_per_image": 3 * spec.forward_flops(), "epoch_images": epoch_images,
        "epochs": params.train.epochs, "test_accuracy": evaluation["test_accuracy"],
        "inference_images_per_second": evaluation["throughput_images_per_second"],
        "latency_ms_median": evaluation["latency_ms_median"],
        "execution": [json.loads((work / "models" / framework / seed / "run.json").read_text())["execution"],
                      evaluation["execution"]],
        "train_process_seconds": train_wall, "evaluate_process_seconds": eval_wall,
        "peak_mb": {**prepared["peaks"], "train": train_peak, "evaluate": eval_peak},
    }


def summarise(name: str, runs: list[dict], peak: float) -> dict:
    def median(key: str) -> float:
        return statistics.median(run[key] for run in runs)

    first = runs[0]
    optimisation = median("optimisation_seconds")
    epoch_flops = first["train_flops_per_image"] * first["epoch_images"]
    achieved = epoch_flops * first["epochs"] / optimisation / 1e9
    floor = epoch_flops * first["epochs"] / (peak * 1e9)
    return {
        "name": name, "runs": len(runs), "optimisation_seconds": round(optimisation, 1),
        "optimisation_seconds_each": [round(run["optimisation_seconds"], 1) for run in runs],
        "train_seconds": round(median("train_seconds"), 1), "images_per_second": round(median("images_per_second")),
        "epoch_tflop": round(epoch_flops / 1e12, 3), "achieved_gflops": round(achieved, 1),
        "share_of_peak": round(achieved / peak, 3), "times_floor": round(optimisation / floor, 2),
        "floor_seconds": round(floor, 1), "test_accuracy": first["test_accuracy"],
        "inference_images_per_second": round(median("inference_images_per_second")),
        "latency_ms_median": round(median("latency_ms_median"), 3), "execution": first["execution"],
        "peak_mb": {stage: round(max(run["peak_mb"][stage] for run in runs)) for stage in first["peak_mb"]},
    }


def print_table(rows: list[dict], peaks: list[float]) -> None:
    print(f"sgemm peak (float32, numpy): {peaks[0]:.0f} GFLOP/s before, {peaks[1]:.0f} after; "
          f"ratios below use the mean, {statistics.mean(peaks):.0f}")
    header = (f"{'configuration':18} {'opt s':>6} {'img/s':>6} {'TFLOP/ep':>8} {'GFLOP/s':>7} {'of peak':>7} "
              f"{'x floor':>7} {'test acc':>8} {'inf img/s':>9} {'lat ms':>6} {'peak MB (train/eval)':>20}")
    print(header)
    for row in rows:
        print(f"{row['name']:18} {row['optimisation_seconds']:6.1f} {row['images_per_second']:6d} "
              f"{row['epoch_tflop']:8.3f} {row['achieved_gflops']:7.1f} {100 * row['share_of_peak']:6.1f}% "
              f"{row['times_floor']:7.2f} {100 * row['test_accuracy']:7.2f}% {row['inference_images_per_second']:9d} "
              f"{row['latency_ms_median']:6.2f} {row['peak_mb']['train']:9d}/{row['peak_mb']['evaluate']:<9d}")
    print("peak RSS of every stage (MB): " + "; ".join(
        f"{row['name']}: " + ", ".join(f"{stage} {mb}" for stage, mb in row["peak_mb"].items()) for row in rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frameworks", default="keras,torch")
    parser.add_argument("--modes", default="standard,compiled")
    parser.add_argument("--no-tutorial", action="store_true", help="leave out the tutorial recipe")
    parser.add_argument("--repeats", type=int, default=1, help="rounds; each runs every configuration once")
    parser.add_argument("--seed", default="1", help="the replicate seed to train")
    parser.add_argument("-S", "--set", action="append", default=[], help="params override key=value, for all")
    parser.add_argument("--json", help="write the results here as JSON")
    arguments = parser.parse_args()
    raw_folder = ROOT / "data" / "raw"
    if not raw_folder.is_dir():
        raise SystemExit(f"{raw_folder} is missing: run `dvc repro download` with a mirror of the real MNIST first")
    base = yamlfile.read(ROOT / "params.yaml")
    for assignment in arguments.set:
        apply_override(base, assignment)
    threads = validate(base).train.threads
    configs = configurations(arguments.frameworks.split(","), arguments.modes.split(","), not arguments.no_tutorial)
    peaks = [sgemm_gflops(threads)]
    runs: dict[str, list[dict]] = {config["name"]: [] for config in configs}
    with tempfile.TemporaryDirectory(prefix="fair-bench-") as scratch:
        for round_number in range(arguments.repeats):
            for config in configs:
                print(f"round {round_number + 1}/{arguments.repeats}: {config['name']}", file=sys.stderr, flush=True)
                work, prepared = prepare(base, config, Path(scratch), raw_folder, arguments.seed)
                runs[config["name"]].append(measure(config, work, prepared, arguments.seed))
    peaks.append(sgemm_gflops(threads))
    peak = statistics.mean(peaks)
    rows = [summarise(name, results, peak) for name, results in runs.items()]
    print_table(rows, peaks)
    if arguments.json:
        Path(arguments.json).write_text(json.dumps({"sgemm_gflops": peaks, "threads": threads,
                                                    "overrides": arguments.set, "rows": rows,
                                                    "runs": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()
