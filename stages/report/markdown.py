"""``reports/report.md``: every number from the comparison or the input files, every interval
labelled with the variation it covers."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import yaml

from stages import backends
from stages.common.params import Params, as_dict
from stages.report import stats, tuning
from stages.report.compare import METRICS, Comparison, per_seed_rows, percent, sentences
from stages.report.figures import FIGURES
from stages.report.inputs import Replicate

DATASET_NAMES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}


def table(header: Sequence[str], rows: Sequence[Sequence[str]], align: Sequence[str]) -> str:
    def cell(text: Any) -> str:
        return str(text).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(item) for item in header) + " |",
             "|" + "|".join({"left": ":---", "right": "---:"}[side] for side in align) + "|"]
    lines += ["| " + " | ".join(cell(item) for item in row) + " |" for row in rows]
    return "\n".join(lines)


def spread_cell(spread: stats.Spread, text: Any) -> str:
    if spread.ci is None:
        return text(spread.mean)
    return f"{text(spread.mean)} ± {text(spread.sd)} [{text(spread.ci.low)}, {text(spread.ci.high)}]"


def params_used(params: Params) -> dict[str, Any]:
    """The params that produced the report's numbers (the report stage's own are left out)."""
    return {
        "seed": params.seed,
        "frameworks": list(params.frameworks),
        "replicates": as_dict(params.replicates),
        "data": {"dataset": params.data.dataset},
        "preprocess": as_dict(params.preprocess),
        "model": as_dict(params.model),
        "train": as_dict(params.train),
        **{framework: as_dict(params.overrides.get(framework, {})) for framework in params.frameworks},
        "evaluate": as_dict(params.evaluate),
    }


def render(comparison: Comparison, results: dict[str, list[Replicate]], params: Params,
           meta: dict[str, Any], tuned: dict[str, list[Replicate]] | None = None) -> str:
    """The report: the stock comparison, then what tuning buys (``tuned``: the tuned arms), then
    the environment and semantic differences, per-seed detail, figures and params."""
    frameworks = comparison.frameworks
    names = [backends.label(framework) for framework in frameworks]
    dataset = DATASET_NAMES.get(meta.get("dataset", ""), meta.get("dataset") or "custom data")
    first = {framework: results[framework][0] for framework in frameworks}
    devices = ", ".join(f"{backends.label(f)} `{first[f].run.device}`" for f in frameworks)
    execution = "; ".join(f"{backends.label(f)}: {modes(r.run.tuning for r in results[f])} ("
                          f"{', '.join(first[f].run.switches) or 'no switches'})" for f in frameworks)
    init = params.replicates.init
    init_text = ("identical initial weights for every framework (one framework-neutral draw per seed), so each "
                 "seed is a matched pair" if init == "shared" else
                 "each framework drew its own initial weights (same Glorot distribution) from the seed")
    n = comparison.n
    lines = [
        f"# {' vs '.join(names)} on {dataset}",
        "",
        f"Dataset: **{dataset}**, {comparison.test_images:,} test images in {len(meta['class_names'])} classes, one "
        f"fixed data split (seed {params.seed}). Replicates: **{n} seed(s)** ({', '.join(map(str, comparison.seeds))})"
        f" per framework; per seed, {init_text}, and the same batch order. Device: {devices}.",
        "",
        f"Tuning levels: {execution}.",
        "",
    ]
    if n < 2:
        lines += ["**One seed only**: intervals over training randomness need at least two seeds "
                  "(`replicates.seeds`). The Wilson intervals and McNemar tests below cover only the sampling of "
                  "the test set.", ""]
    lines += ["## Conclusions", "",
              "Each sentence rests on its own test at the 5% level, with no correction for the several comparisons "
              "made per pair: among many comparisons without a real difference, about one in twenty would still "
              "read as significant.", ""]
    for pair in comparison.pairs:
        lines += [f"**{backends.label(pair.first)} vs {backends.label(pair.second)}**", ""]
        lines += [f"- {sentence}" for sentence in sentences(comparison, pair)]
        lines.append("")
    if not comparison.pairs:
        lines += ["Only one framework: nothing to compare.", ""]
    lines += [
        "## Every framework",
        "",
        f"Mean ± standard deviation [95% confidence interval of the mean] over {n} seed(s): the interval covers "
        "training randomness across seeds (initialisation, batch order, dropout), not the sampling of the test set."
        if n > 1 else "One seed: the value of that run.",
        "",
        table(["", *names], [[metric.label, *(spread_cell(comparison.spreads[f][metric.key], metric.text)
                                             for f in frameworks)] for metric in METRICS],
              ["left"] + ["right"] * len(frameworks)),
        "",
        "Training time includes validation after each epoch; training throughput counts optimisation only. "
        f"Inference throughput is the median of {params.evaluate.throughput_repeats} timed passes over the test set "
        f"at batch size {params.evaluate.batch_size}; latency one image at a time. Timings are of this machine.",
        "",
    ]
    for pair in comparison.pairs:
        lines += pair_section(comparison, pair)
    tuned = tuned or {}
    lines += tuning.section(tuning.tuning_effects(results, tuned), table)
    lines += tuning.environment_section({**results, **tuned}, table)
    lines += tuning.semantics_section(results, table)
    lines += per_seed_section(comparison, results)
    lines += per_class_section(results, list(meta["class_names"]))
    for figure in FIGURES:
        lines += [f"![{figure.caption}]({figure.file})", ""]
    lines += ["## Parameters", "", "The `params.yaml` values that produced these results:", "", "```yaml",
              yaml.safe_dump(params_used(params), sort_keys=False, default_flow_style=False).rstrip(), "```", ""]
    return "\n".join(lines)


def modes(found: Iterable[str]) -> str:
    """The distinct execution modes replicates ran in, as Markdown."""
    return " and ".join(f"`{mode}`" for mode in sorted(set(found)))


def pair_section(comparison: Comparison, pair: Any) -> list[str]:
    first, second = backends.label(pair.first), backends.label(pair.second)
    rows = []
    for metric in METRICS:
        result = pair.paired[metric.key]
        if metric.compare == "difference":
            scale, unit, digits = (100.0, " pp", 2) if metric.text is percent else (1.0, "", 4)
            estimate = f"{scale * result.estimate:+.{digits}f}{unit}"
            interval = "" if result.ci is None else \
                f"{scale * result.ci.low:+.{digits}f} to {scale * result.ci.high:+.{digits}f}{unit}"
            kind = f"{first} - {second}"
        else:
            estimate = f"{result.estimate:.3f}x"
            interval = "" if result.ci is None else f"{result.ci.low:.3f}x to {result.ci.high:.3f}x"
            kind = f"{first} / {second}"
        p_value = "" if result.p_value is None else f"{result.p_value:.2g}"
        rows.append([metric.label, kind, estimate, interval or "needs 2+ seeds", p_value or "-"])
    lines = [f"## {first} vs {second}", "",
             "Paired over seeds (the primary comparison): each seed trains both frameworks from the same starting "
             "point, so the per-seed differences cancel what the seeds share. 95% CI and paired t-test over "
             "training randomness across seeds; ratios are geometric means (t interval on log ratios).", "",
             table(["Metric", "Compared as", "Estimate", "95% CI", "p"], rows, ["left", "left", "right", "right",
                                                                                "right"]), "",
             "Per seed, on the same test images (exact McNemar test; the interval of each accuracy is Wilson's, "
             "covering the sampling of the test set). The seeds share one test set, so their counts are not "
             "pooled into one test.", ""]
    seed_rows = []
    for index, (seed, test) in enumerate(zip(comparison.seeds, pair.mcnemar)):
        wilson_first = comparison.wilson[pair.first][index]
        wilson_second = comparison.wilson[pair.second][index]
        seed_rows.append([str(seed), f"{pair.disagreements[index]:,}", f"{test.only_first_right:,}",
                          f"{test.only_second_right:,}", f"{test.p_value:.2g}",
                          f"{percent(wilson_first.low)}-{percent(wilson_first.high)}",
                          f"{percent(wilson_second.low)}-{percent(wilson_second.high)}"])
    lines += [table(["Seed", "Predictions differ", f"Only {first} right", f"Only {second} right", "McNemar p",
                     f"{first} accuracy 95% CI", f"{second} accuracy 95% CI"], seed_rows,
                    ["left"] + ["right"] * 6), ""]
    return lines


def per_seed_section(comparison: Comparison, results: dict[str, list[Replicate]]) -> list[str]:
    keys = [metric.key for metric in METRICS]
    rows = per_seed_rows(comparison, results, keys)
    extra = [[*row, "not reached" if r.training.seconds_to_val_accuracy_99 is None
              else f"{r.training.seconds_to_val_accuracy_99:.1f}", f"{r.evaluation.parameters:,}",
              f"{r.evaluation.model_bytes / 1e6:.2f}"]
             for row, r in zip(rows, [r for items in results.values() for r in items])]
    header = ["Framework", "Seed", *(metric.label for metric in METRICS), "Time to 99% val. accuracy (s)",
              "Parameters", "Model file (MB)"]
    return ["## Every replicate", "", table(header, extra, ["left"] + ["right"] * (len(header) - 1)), ""]


def per_class_section(results: dict[str, list[Replicate]], class_names: list[str]) -> list[str]:
    """Precision, recall and F1 per class, mean over seeds."""
    header = ["Class", "Test images"]
    for framework in results:
        label = backends.label(framework)
        header += [f"{label} precision", f"{label} recall", f"{label} F1"]
    support = next(iter(results.values()))[0].per_class.support
    rows = []
    for index, name in enumerate(class_names):
        row = [name, f"{support[index]:,}"]
        for items in results.values():
            row += [percent(sum(r.per_class.precision[index] for r in items) / len(items)),
                    percent(sum(r.per_class.recall[index] for r in items) / len(items)),
                    f"{sum(r.per_class.f1[index] for r in items) / len(items):.4f}"]
        rows.append(row)
    return ["## Per class (mean over seeds)", "", table(header, rows, ["left"] + ["right"] * (len(header) - 1)), ""]
