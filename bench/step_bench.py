"""Benchmark: training time per step of variants of the recipe, A/B within one process.

Whole-stage timings on this noisy machine move by up to 2x from one process to the next, which
hides a 20-30% difference between two settings. This benchmark trains each ``--variant`` (a set
of params overrides) with the framework's real ``fit`` on the first ``--images`` prepared training
images, the variants alternating within each of ``--rounds`` rounds in one process per framework
(one framework per process), and reports per variant the median milliseconds per optimizer step
of the second epoch (the first includes tracing and warm-up), its images/s, and the median over
the rounds of its same-round ratio to the first variant. It also prints each variant's final
validation accuracy, as a check that the run trained (not a measure of the recipe's accuracy:
the subset and two epochs are too small for that; use ``bench/fair_bench.py``).

    .venv/bin/python bench/step_bench.py --variant default= \\
        --variant classic=model.block_order=conv-norm-act-pool --rounds 5

A variant is ``name=key=value[,key=value...]`` (``name=`` alone: params.yaml as it is).
Needs ``data/prepared`` from the real MNIST (``dvc repro preprocess``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from train_bench import apply_override  # noqa: E402

from stages.common import yamlfile  # noqa: E402
from stages.common.params import validate  # noqa: E402

PREPARED = ROOT / "data" / "prepared"


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, separator, assignments = text.partition("=")
    if not separator or not name:
        raise SystemExit(f"--variant {text!r}: expected name=key=value[,key=value...] or name=")
    return name, [item for item in assignments.split(",") if item]


def variant_params(assignments: list[str]):
    raw = yamlfile.read(ROOT / "params.yaml")
    for assignment in assignments:
        apply_override(raw, assignment)
    raw["train"]["epochs"] = 2
    return validate(raw)


def child(framework: str, variants: list[tuple[str, list[str]]], images: int, rounds: int,
          before_variant=None) -> dict:
    """Runs in its own process: every variant once per round, alternating.

    ``before_variant(backend, name)``, if given, runs before each variant's model is built (for
    A/B tests of code rather than params, e.g. ``bench/keras_batch_norm_bench.py``)."""
    import numpy as np

    from stages import backends
    from stages.common.architecture import build_spec, initial_weights
    from stages.common.params import effective_train
    from stages.common.prepared import Split, load_prepared
    from stages.common.runtime import derive_seed, seed_python_and_numpy
    from stages.common.schedules import learning_rates

    data = load_prepared(PREPARED)
    train, val = data.splits["train"], data.splits["val"]
    train = Split(np.asarray(train.images[:images]), np.asarray(train.labels[:images]))
    backend = backends.load(framework)
    configured = False
    results: dict[str, dict] = {name: {"ms_per_step": [], "val_accuracy": None} for name, _ in variants}
    for _ in range(rounds):
        for name, assignments in variants:
            params = variant_params(assignments)
            settings = effective_train(params, framework)
            if not configured:  # threads and determinism are per process: the first variant's stay
                backend.configure(settings, 1)
                configured = True
            seed_python_and_numpy(1)
            if before_variant is not None:
                before_variant(backend, name)
            spec = build_spec(params.model, data.image_shape, data.num_classes)
            model = backend.build_model(spec, 1)  # configure's seed
            backend.set_weights(model, initial_weights(spec, np.random.default_rng(derive_seed(1, "init"))))
            steps = -(-images // settings.batch_size)
            records: list = []
            backend.fit(model, train, val, settings, learning_rates(settings, steps), 1, records.append)
            results[name]["ms_per_step"].append(1000 * records[-1].train_seconds / steps)
            results[name]["val_accuracy"] = records[-1].val_accuracy
            results[name]["batch_size"] = settings.batch_size
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", required=True, help="name=key=value[,key=value...]")
    add_run_arguments(parser, rounds=5)
    arguments = parser.parse_args()
    variants = [parse_variant(text) for text in arguments.variant]
    if arguments.child:
        print(json.dumps(child(arguments.child, variants, arguments.images, arguments.rounds)))
        return
    if not PREPARED.is_dir():
        raise SystemExit(f"{PREPARED} is missing: run `dvc repro preprocess` on the real MNIST first")
    for _, assignments in variants:
        variant_params(assignments)  # a bad override fails here, before any training
    table = run_children(__file__, arguments.frameworks.split(","),
                         ["--images", str(arguments.images), "--rounds", str(arguments.rounds),
                          *[f"--variant={text}" for text in arguments.variant]])
    report(table, variants, arguments.json, {"variants": arguments.variant, "images": arguments.images,
                                             "rounds": arguments.rounds})


def add_run_arguments(parser: argparse.ArgumentParser, rounds: int) -> None:
    """The options every per-step A/B shares: frameworks, images, rounds, JSON output, child."""
    parser.add_argument("--frameworks", default="keras,torch")
    parser.add_argument("--images", type=int, default=12_800, help="training images per epoch")
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--json", help="write the results here as JSON")
    parser.add_argument("--child", help=argparse.SUPPRESS)


def run_children(script: str, frameworks: list[str], arguments: list[str]) -> dict:
    """Run ``script --child <framework> *arguments`` per framework, each in its own process (one
    framework per process); return each child's result, the JSON on its last line of output."""
    table = {}
    for framework in frameworks:
        command = [sys.executable, script, "--child", framework, *arguments]
        output = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True).stdout
        table[framework] = json.loads(output.strip().splitlines()[-1])
    return table


def report(table: dict, variants: list[tuple[str, list[str]]], json_path: str | None, settings: dict) -> None:
    """Print per framework and variant the median ms/step and same-round ratio to the first; write JSON."""
    first = variants[0][0]
    print(f"{'framework':9} {'variant':16} {'ms/step':>8} {'images/s':>9} {'x ' + first:>12} {'val acc':>8}  "
          "rounds (ms/step)")
    for framework, results in table.items():
        baseline = results[first]["ms_per_step"]
        for name, result in results.items():
            times = result["ms_per_step"]
            median = statistics.median(times)
            ratio = statistics.median(time / base for time, base in zip(times, baseline))
            result.update(median_ms_per_step=median, median_ratio_to_first=ratio)
            print(f"{framework:9} {name:16} {median:8.2f} {result['batch_size'] * 1000 / median:9.0f} {ratio:12.3f} "
                  f"{100 * result['val_accuracy']:7.2f}%  {' '.join(f'{time:.1f}' for time in times)}")
    if json_path:
        Path(json_path).write_text(json.dumps({**settings, "results": table}, indent=2) + "\n")


if __name__ == "__main__":
    main()
