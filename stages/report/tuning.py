"""What tuning buys, how each framework ran, and where the frameworks' semantics differ.

The primary comparison is stock against stock. This module adds, per framework, the tuned level
against its own stock level on the seeds both ran (``replicates.tuned_seeds``): tuned/stock
ratios for the speed metrics and the tuned - stock difference in test accuracy, each paired by
seed with its 95% interval over those seeds. It also tables every replicate's environment and
the semantic conventions each backend recorded (``RunInfo.semantics``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stages import backends
from stages.common import paths
from stages.common.semantics import SEMANTIC_CHOICES
from stages.report import stats
from stages.report.inputs import Replicate
from stages.report.measures import METRIC

# The speed metrics of measures.METRICS that tuning moves, with their column headings here.
SPEED = ((METRIC["train_seconds"], "Training time"), (METRIC["inference_images_per_second"], "Inference throughput"),
         (METRIC["latency_ms"], "Latency, one image"))


@dataclass(frozen=True)
class TuningResult:
    framework: str
    seeds: list[int]
    switches: list[str]
    ratios: dict[str, stats.Paired]  # speed metric key -> tuned / stock
    accuracy: stats.Paired  # tuned - stock test accuracy


def tuning_effects(stock: dict[str, list[Replicate]], tuned: dict[str, list[Replicate]]) -> list[TuningResult]:
    """Per framework with a tuned arm: tuned against stock, paired on the seeds both ran."""
    results = []
    for tuned_items in tuned.values():
        framework = tuned_items[0].framework
        by_seed = {replicate.seed: replicate for replicate in stock[paths.arm_name(framework)]}
        pairs = [(by_seed[r.seed], r) for r in tuned_items if r.seed in by_seed]
        if not pairs:
            continue
        ratios = {metric.key: stats.paired_ratio([metric.value(t) for _, t in pairs],
                                                 [metric.value(s) for s, _ in pairs]) for metric, _ in SPEED}
        accuracy = stats.paired_difference([t.evaluation.test_accuracy for _, t in pairs],
                                           [s.evaluation.test_accuracy for s, _ in pairs])
        results.append(TuningResult(framework, [s.seed for s, _ in pairs], list(tuned_items[0].run.switches),
                                    ratios, accuracy))
    return results


def _ratio_cell(paired: stats.Paired) -> str:
    interval = f" [{paired.ci.low:.2f}, {paired.ci.high:.2f}]" if paired.ci else ""
    return f"{paired.estimate:.2f}x{interval}"


def _accuracy_cell(paired: stats.Paired) -> str:
    interval = f" [{100 * paired.ci.low:+.2f}, {100 * paired.ci.high:+.2f}]" if paired.ci else ""
    return f"{100 * paired.estimate:+.2f} pp{interval}"


def _accuracy_verdict(paired: stats.Paired) -> str:
    if all(value == 0 for value in paired.per_seed):
        return "unchanged (the same accuracy on every seed)"
    if paired.ci is None:
        return "one seed: no interval"
    if paired.ci.low <= 0 <= paired.ci.high:
        return "within the noise (the interval includes 0)"
    return "moved beyond the noise (the interval excludes 0)"


def section(effects: Sequence[TuningResult], table) -> list[str]:
    """``## What tuning buys``: one row per framework."""
    lines = ["## What tuning buys", ""]
    if not effects:
        return lines + ["No tuned arm ran (`replicates.tuned_seeds` is empty).", ""]
    seeds = sorted({seed for effect in effects for seed in effect.seeds})
    lines += [
        "Each framework's `tuned` level against its own `stock` level, paired by seed on seed(s) "
        f"{', '.join(map(str, seeds))} (`replicates.tuned_seeds`; fewer seeds than the stock comparison, so these "
        "intervals are wider). Speed: tuned / stock, geometric mean over seeds [95% interval over seeds, one "
        "sitting]; below 1 is faster for time and latency, above 1 for throughput. Accuracy: tuned - stock "
        "[95% interval over seeds]; tuning must not move it beyond the noise.",
        "",
        table(["Framework", "Switches", *(heading for _, heading in SPEED), "Test accuracy", "Accuracy moved?"],
              [[backends.label(effect.framework), ", ".join(f"`{name}`" for name in effect.switches) or "none",
                *(_ratio_cell(effect.ratios[metric.key]) for metric, _ in SPEED), _accuracy_cell(effect.accuracy),
                _accuracy_verdict(effect.accuracy)] for effect in effects],
              ["left", "left"] + ["right"] * (len(SPEED) + 1) + ["left"]),
        "",
    ]
    return lines


def environment_section(results: dict[str, list[Replicate]], table) -> list[str]:
    """``## Environment``: what every arm ran on, from its replicates' run.json and metrics.json;
    one row per recorded fact, one column per arm."""
    keys: list[str] = ["tuning", "switches"]
    columns = {}
    for arm, items in results.items():
        environment = {"tuning": items[0].run.tuning, "switches": ", ".join(sorted(items[0].run.switches)) or "none",
                       **items[0].run.environment, **items[0].evaluation.environment}
        for replicate in items[1:]:
            for key, value in {**replicate.run.environment, **replicate.evaluation.environment}.items():
                if environment.get(key) != value:
                    environment[key] = f"{environment.get(key)} / {value} (differs across seeds)"
        keys += [key for key in environment if key not in keys]
        columns[arm] = environment
    body = [[key, *(columns[arm].get(key, "-") for arm in columns)] for key in keys]
    return ["## Environment", "",
            "Recorded by every replicate (training in run.json, evaluation in metrics.json): framework versions and "
            "build, the CPU, the thread count, the tuning level and its switches.", "",
            table(["", *(backends.label(arm) for arm in columns)], body, ["left"] * (len(columns) + 1)), ""]


def semantics_section(results: dict[str, list[Replicate]], table) -> list[str]:
    """``## Semantic differences``: each recipe point the frameworks express differently."""
    frameworks: dict[str, dict[str, str]] = {}
    for items in results.values():
        frameworks.setdefault(items[0].framework, items[0].run.semantics)
    differing = [key for key in SEMANTIC_CHOICES
                 if len({semantics.get(key) for semantics in frameworks.values()}) > 1]
    lines = ["## Semantic differences", "",
             "Where the frameworks' public APIs implement a recipe point differently, each runs its own convention "
             "(at both levels); the report lists them instead of hiding them (docs/fairness.md measures their "
             "effect).", ""]
    rows = [[key.replace("_", " "), *(f"{semantics.get(key, '-')}" for semantics in frameworks.values()),
             "differs" if key in differing else "same"] for key in SEMANTIC_CHOICES]
    lines += [table(["Recipe point", *(backends.label(name) for name in frameworks), ""], rows,
                    ["left"] * (len(frameworks) + 2)), ""]
    meanings = {(key, value) for semantics in frameworks.values() for key, value in semantics.items()
                if key in differing}
    lines += [f"- {key.replace('_', ' ')} `{value}`: {SEMANTIC_CHOICES[key][value]}" for key, value in sorted(meanings)
              if value in SEMANTIC_CHOICES.get(key, {})]
    return lines + [""]


def summary_metrics(effects: Sequence[TuningResult]) -> dict[str, float]:
    """Flat numbers for reports/metrics.json: per framework the tuned/stock ratios."""
    flat: dict[str, float] = {}
    for effect in effects:
        for key, paired in effect.ratios.items():
            flat[f"tuning.{effect.framework}.{key}_ratio"] = round(float(paired.estimate), 4)
        flat[f"tuning.{effect.framework}.test_accuracy_difference"] = round(float(effect.accuracy.estimate), 6)
    return {key: value for key, value in flat.items() if np.isfinite(value)}
