"""Benchmark: what each tuning level and each switch buys, and what the pipeline costs a framework.

For every framework, in one run, the arms alternate within each of ``--repeats`` rounds:

- ``stock`` and ``tuned``: the real stages (``python -m stages.train <fw> <seed> [--tuning
  tuned]``, then ``python -m stages.evaluate``), each in its own process, as ``dvc repro`` runs
  them;
- ``+<switch>``: the tuned level with only that switch on (``--switches <switch>``), for a backend
  with more than one switch;
- ``bare``: the framework's own getting-started training script for the same model and recipe
  (``bench/bare/keras_fit.py``: ``Model.fit``; ``bench/bare/torch_loop.py``: the pytorch/examples
  MNIST loop), nothing from ``stages``; ``bare+det``: the same with the seeding and op
  determinism the pipeline needs for bitwise reruns.

Prints, per framework, medians over the rounds: training seconds (the epochs with their
validation, as the stage's ``train_seconds`` and the bare scripts' ``fit_seconds`` both count
them), inference images/s at ``evaluate.batch_size`` and single-image latency, each as a ratio
to ``stock`` taken within a round; and the pipeline's cost: stock stage training seconds over the
bare script's (target: at most 1.10, the pipeline must not slow a framework down).

    .venv/bin/python bench/fair_bench.py                              # both frameworks, 3 rounds
    .venv/bin/python bench/fair_bench.py --repeats 5 --json fair.json
    .venv/bin/python bench/fair_bench.py --frameworks torch -S train.epochs=2

Needs ``data/prepared`` from the real MNIST (``dvc repro preprocess`` with a mirror of it, e.g.
``../shared/datasets/mnist``); it runs in a scratch folder and leaves the project untouched.
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

from train_bench import apply_override, run_child  # noqa: E402

from stages.common import yamlfile  # noqa: E402
from stages.common.params import validate  # noqa: E402

BARE = {"keras": "keras_fit.py", "torch": "torch_loop.py"}


def tuned_switches(framework: str, work: Path) -> list[str]:
    """The backend's tuned switches (read in a child: this process imports no framework)."""
    probe = f"from stages import backends; print(','.join(backends.load({framework!r}).TUNED))"
    result = subprocess.run([sys.executable, "-c", probe], cwd=work, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            check=True, capture_output=True, text=True)
    return [name for name in result.stdout.strip().split(",") if name]


def arms(framework: str, switches: list[str]) -> list[dict]:
    """The arms of one framework, in the order a round runs them (stages and bare scripts alternate)."""
    rows = [{"name": "stock", "stage": ["--tuning", "stock"]}, {"name": "bare", "bare": []},
            {"name": "tuned", "stage": ["--tuning", "tuned"]}, {"name": "bare+det", "bare": ["--deterministic"]}]
    if len(switches) > 1:
        rows += [{"name": f"+{switch}", "stage": ["--tuning", "tuned", "--switches", switch]} for switch in switches]
    return [{**row, "framework": framework} for row in rows]


def run_arm(arm: dict, work: Path, seed: str, epochs: int, threads: int) -> dict:
    framework = arm["framework"]
    if "bare" in arm:
        command = [sys.executable, str(ROOT / "bench" / "bare" / BARE[framework]), str(work / "data" / "prepared"),
                   "--epochs", str(epochs), "--threads", str(threads), *arm["bare"]]
        result = subprocess.run(command, cwd=work, check=True, capture_output=True, text=True)
        figures = json.loads(result.stdout.strip().splitlines()[-1])
        return {"train_seconds": figures["fit_seconds"], "parameters": figures["parameters"]}
    tuning = arm["stage"][1]
    _, train_peak = run_child([sys.executable, "-m", "stages.train", framework, seed, *arm["stage"]], work)
    _, evaluate_peak = run_child([sys.executable, "-m", "stages.evaluate", framework, seed, *arm["stage"]], work)
    arm_folder = framework if tuning == "stock" else f"{framework}-tuned"
    summary = json.loads((work / "dvclive" / arm_folder / seed / "metrics.json").read_text())
    evaluation = json.loads((work / "eval" / arm_folder / seed / "metrics.json").read_text())
    return {"train_seconds": summary["train_seconds"], "parameters": summary["parameters"],
            "test_accuracy": evaluation["test_accuracy"],
            "inference_images_per_second": evaluation["throughput_images_per_second"],
            "latency_ms_median": evaluation["latency_ms_median"], "switches": evaluation["switches"],
            "peak_mb": round(max(train_peak, evaluate_peak))}


def ratio_medians(rounds: list[dict[str, dict]], name: str, key: str, base: str = "stock") -> float | None:
    """Median over rounds of ``name``'s ``key`` divided by ``base``'s in the same round."""
    ratios = [run[name][key] / run[base][key] for run in rounds if key in run[name] and key in run[base]]
    return round(statistics.median(ratios), 3) if ratios else None


def summarise(rounds: list[dict[str, dict]]) -> list[dict]:
    rows = []
    for name in rounds[0]:
        runs = [run[name] for run in rounds]
        row = {"arm": name, "train_seconds": round(statistics.median(run["train_seconds"] for run in runs), 1),
               "train_seconds_each": [run["train_seconds"] for run in runs],
               "train_ratio": ratio_medians(rounds, name, "train_seconds")}
        if "inference_images_per_second" in runs[0]:
            row.update(inference_images_per_second=round(statistics.median(
                           run["inference_images_per_second"] for run in runs)),
                       inference_ratio=ratio_medians(rounds, name, "inference_images_per_second"),
                       latency_ms_median=round(statistics.median(run["latency_ms_median"] for run in runs), 3),
                       latency_ratio=ratio_medians(rounds, name, "latency_ms_median"),
                       test_accuracy=runs[0]["test_accuracy"],
                       peak_mb=max(run["peak_mb"] for run in runs))
        rows.append(row)
    return rows


def print_framework(framework: str, rows: list[dict], rounds: list[dict[str, dict]]) -> None:
    print(f"\n{framework}: medians of {len(rounds)} rounds; ratios to stock taken within each round")
    print(f"{'arm':22} {'train s':>8} {'x stock':>8} {'inf img/s':>10} {'x stock':>8} {'lat ms':>7} {'x stock':>8} "
          f"{'test acc':>8} {'peak MB':>8}")
    for row in rows:
        inference = (f"{row['inference_images_per_second']:10d} {row['inference_ratio']:8.3f} "
                     f"{row['latency_ms_median']:7.3f} {row['latency_ratio']:8.3f} {100 * row['test_accuracy']:7.2f}% "
                     f"{row['peak_mb']:8d}"
                     if "inference_ratio" in row else f"{'':10} {'':8} {'':7} {'':8} {'':8} {'':8}")
        print(f"{row['arm']:22} {row['train_seconds']:8.1f} {row['train_ratio']:8.3f} {inference}")
    for bare in ("bare", "bare+det"):
        ratios = [run["stock"]["train_seconds"] / run[bare]["train_seconds"] for run in rounds]
        print(f"pipeline cost: stock stage / {bare} training seconds = {statistics.median(ratios):.3f} "
              f"(each round: {', '.join(f'{value:.3f}' for value in ratios)}; target <= 1.10)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frameworks", default="keras,torch")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; each runs every arm once")
    parser.add_argument("--seed", default="1", help="the replicate seed to train")
    parser.add_argument("-S", "--set", action="append", default=[], help="params override key=value, for all")
    parser.add_argument("--json", help="write the results here as JSON")
    parser.add_argument("--prepared", type=Path, default=ROOT / "data" / "prepared",
                        help="the prepared data to train on (default: data/prepared)")
    arguments = parser.parse_args()
    prepared = arguments.prepared.resolve()
    if not (prepared / "meta.json").is_file():
        raise SystemExit(f"{prepared} is missing: run `dvc repro preprocess` with a mirror of the real MNIST first")
    base = yamlfile.read(ROOT / "params.yaml")
    for assignment in arguments.set:
        apply_override(base, assignment)
    params = validate(base)
    results = {}
    with tempfile.TemporaryDirectory(prefix="fair-bench-") as scratch:
        work = Path(scratch)
        (work / "data").mkdir()
        os.symlink(prepared, work / "data" / "prepared")
        (work / "params.yaml").write_text(yaml.safe_dump(base, sort_keys=False))
        run_child([sys.executable, "-m", "stages.init", arguments.seed], work)
        for framework in arguments.frameworks.split(","):
            plan = arms(framework, tuned_switches(framework, work))
            rounds: list[dict[str, dict]] = []
            for round_number in range(arguments.repeats):
                rounds.append({})
                for arm in plan:
                    print(f"{framework} round {round_number + 1}/{arguments.repeats}: {arm['name']}", file=sys.stderr,
                          flush=True)
                    rounds[-1][arm["name"]] = run_arm(arm, work, arguments.seed, params.train.epochs,
                                                      params.train.threads)
            if len({run["parameters"] for run in rounds[0].values()}) != 1:
                raise SystemExit(f"{framework}: the bare script's model is not the pipeline's: "
                                 f"{ {name: run['parameters'] for name, run in rounds[0].items()} }")
            rows = summarise(rounds)
            print_framework(framework, rows, rounds)
            results[framework] = {"rows": rows, "rounds": rounds}
    if arguments.json:
        Path(arguments.json).write_text(json.dumps({"overrides": arguments.set, "epochs": params.train.epochs,
                                                    "threads": params.train.threads, "frameworks": results},
                                                   indent=2) + "\n")


if __name__ == "__main__":
    main()
