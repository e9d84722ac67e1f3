"""``reports/report.md``: every number from the comparison or the input files, every interval
labelled with the variation it covers."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import yaml

from stages import backends
from stages.common.params import Params, as_dict, effective_train
from stages.report import onnx, power, speed, stats, time_to_accuracy, tuning
from stages.report.arms import MetricComparison, PairResult
from stages.report.compare import Comparison, per_seed_rows
from stages.report.conclusions import difference_text, margin_text, sentences
from stages.report.figures import FIGURES
from stages.report.inputs import Replicate
from stages.report.measures import METRICS, p_text, percent

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
    if spread.log_scale:  # geometric mean, times/divided by the geometric sd
        return f"{text(spread.mean)} ×/÷ {spread.sd:.3f} [{text(spread.ci.low)}, {text(spread.ci.high)}]"
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
           meta: dict[str, Any], tuned: dict[str, list[Replicate]] | None = None,
           timings: tuple[list[dict[str, Any]], int] = ([], 0),
           exported: tuple[Sequence[onnx.Exported], Sequence[onnx.Exported]] = ((), ())) -> str:
    """The report: the stock comparison, then what tuning buys (``tuned``: the tuned arms), then
    the environment and semantic differences, per-seed detail, figures and params. ``timings``: the
    pooled sittings of the timing stage and how many the record holds (speed verdicts);
    ``exported``: the stock and tuned arms on ONNX Runtime (``onnx.summarise_all``)."""
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
    margins = params.report.equivalence
    lines += ["## Conclusions", "",
              "Each sentence says *different* (the paired test across seeds at the 5% level), *equivalent* (two "
              "one-sided tests, TOST, reject a difference as large as the margin of `report.equivalence`: "
              f"±{margins.accuracy_pp:g} pp accuracy, ±{margins.test_loss:g} loss, ±{margins.macro_f1:g} macro F1, "
              f"{1 / margins.speed_ratio:.3f}-{margins.speed_ratio:g}x for speeds) or *inconclusive* (neither, with "
              "the seeds the verdict within reach needs). For accuracy, loss and macro F1 the TOST rests on the "
              "bootstrap over seeds and test images, and *equivalent* needs its 90% interval inside the margin: "
              "where only the interval across seeds fits, the sentence says *equivalent across seeds on this test "
              f"set* and how small a difference the test set can resolve. {family_text(comparison)} Speed verdicts "
              "come from the timing stage's sittings, not from the seeds (see Speed below).", ""]
    pooled, recorded = timings
    speed_verdicts = speed.verdicts(frameworks, pooled, margins.speed_ratio) if pooled else []
    for pair in comparison.pairs:
        lines += [f"**{pair.first_label} vs {pair.second_label}**", ""]
        lines += [f"- {sentence}" for sentence in sentences(comparison, pair)]
        lines += [f"- {speed.sentence(item, margins.speed_ratio)}" for item in speed_verdicts
                  if (item.first, item.second) == (pair.first, pair.second)]
        lines.append("")
    if not comparison.pairs:
        lines += ["Only one framework: nothing to compare.", ""]
    lines += [
        "## Every framework",
        "",
        f"Quality: mean ± standard deviation [95% confidence interval of the mean] over {n} seed(s). Times, "
        "throughputs and latencies are positive, so their interval is built on the log scale: geometric mean ×/÷ "
        "geometric standard deviation [95% CI]. The intervals cover training randomness across seeds "
        "(initialisation, batch order, dropout), not the sampling of the test set, and timings one sitting."
        if n > 1 else "One seed: the value of that run.",
        "",
        table(["", *names], [[metric.label, *(spread_cell(comparison.spreads[f][metric.key], metric.text)
                                             for f in frameworks)] for metric in METRICS],
              ["left"] + ["right"] * len(frameworks)),
        "",
        "Training time includes validation after each epoch; training throughput counts optimisation only. "
        f"Inference throughput is the images of {params.evaluate.throughput_repeats} timed passes over the test set, "
        "over their total time, "
        f"at batch size {params.evaluate.batch_size}; latency one image at a time. Timings are of this machine.",
        "",
    ]
    target = params.report.target_val_accuracy
    lines += speed.section(frameworks, pooled, recorded, margins.speed_ratio,
                           {f: [speed.epoch_reached(list(r.curves["val/accuracy"].values), target)
                                for r in results[f]] for f in frameworks},
                           int(meta["splits"]["train"]["count"]),
                           {f: effective_train(params, f).batch_size for f in frameworks},
                           params.report.target_val_accuracy, table)
    for pair in comparison.pairs:
        lines += pair_section(comparison, pair)
    lines += onnx.section(*exported, params.evaluate.batch_size, table, spread_cell)
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


def family_text(comparison: Comparison) -> str:
    """Which family the Holm adjustment covers."""
    pairs = len(comparison.pairs)
    if comparison.family == 0:
        return "No p-value to adjust: the tests need at least two seeds."
    return (f"Every p-value a verdict rests on is Holm-adjusted in one family of {comparison.family} tests over the "
            f"whole report: {pairs} pair{'s' if pairs != 1 else ''} of frameworks, each with the paired test and "
            f"the TOST of each of its {len(METRICS)} metrics, and its time to accuracy. The tuning section is "
            "descriptive and outside it.")


def seeds_cell(item: MetricComparison) -> str:
    needed = item.seeds
    if needed is None:
        return "-"

    def count(value: int | None) -> str:
        return f">{power.MAX_SEEDS:,}" if value is None else f"{value:,}"
    return f"{needed.verdict}: {count(needed.seeds)} ({count(needed.low)}-{count(needed.high)})"


def modes(found: Iterable[str]) -> str:
    """The distinct tuning levels replicates ran at, as Markdown."""
    return " and ".join(f"`{mode}`" for mode in sorted(set(found)))


def pair_section(comparison: Comparison, pair: PairResult) -> list[str]:
    first, second = pair.first_label, pair.second_label
    rows = []
    for metric in METRICS:
        item = pair.metrics[metric.key]
        result = item.paired
        if metric.compare == "difference":
            estimate = difference_text(metric, result.estimate)
            interval = "" if result.ci is None else \
                f"{difference_text(metric, result.ci.low)} to {difference_text(metric, result.ci.high)}"
            both = "" if item.resampled is None else \
                f"{difference_text(metric, item.resampled.low)} to {difference_text(metric, item.resampled.high)}"
            close = None if item.equivalence is None else item.equivalence.interval
            ninety = "" if close is None else \
                f"{difference_text(metric, close.low)} to {difference_text(metric, close.high)}"
            detectable = "" if item.detectable is None else difference_text(metric, item.detectable, signed=False)
            kind = f"{first} - {second}"
        else:
            estimate = f"{result.estimate:.3f}x"
            interval = "" if result.ci is None else f"{result.ci.low:.3f}x to {result.ci.high:.3f}x"
            both = ninety = ""
            detectable = "" if item.detectable is None else f"{math.exp(item.detectable):.3f}x"
            kind = f"{first} / {second}"
        rows.append([metric.label, kind, estimate, interval or "needs 2+ seeds", both or "-", ninety or "-",
                     p_text(result.p_value), p_text(item.holm_p), margin_text(metric, item),
                     p_text(None if item.tost is None else item.tost.p_value),
                     p_text(None if item.equivalence is None else item.equivalence.p_value), p_text(item.tost_holm_p),
                     detectable or "-", seeds_cell(item), p_text(item.sign_flip_p)])
    ttt = pair.time_to_target
    target = f"Time to {100 * ttt.target:g}% val. accuracy (s)"
    if ttt.seconds is None:
        rows.append([target, f"{first} / {second}", f"not estimable ({ttt.censored} censored)"] + ["-"] * 12)
    else:
        ci = "needs 2+ seeds" if ttt.seconds.ci is None else f"{ttt.seconds.ci.low:.3f}x to {ttt.seconds.ci.high:.3f}x"
        rows.append([target, f"{first} / {second}", f"{ttt.seconds.estimate:.3f}x", ci, "-", "-",
                     p_text(ttt.seconds.p_value), p_text(pair.time_to_target_holm_p)] + ["-"] * 7)
    n = len(pair.seeds)
    lines = [f"## {first} vs {second}", "",
             f"Paired over {n} seed(s) (the primary comparison): each seed trains both arms from the same starting "
             "point, so the per-seed differences cancel what the seeds share. *95% CI (seeds)*: t interval over "
             "training randomness across seeds; ratios are geometric means (t interval on log ratios). *95% CI "
             "(seeds + test)*: paired two-level bootstrap, resampling seeds and, with them, the test images within "
             f"each class (percentile interval of {comparison.resamples:,} resamples): it covers training "
             "randomness and the sampling of the test images; *90% CI (seeds + test)*: the same bootstrap's 90% "
             "interval, which must lie inside the margin for *equivalent*. *p*: paired t-test across seeds; *Holm "
             f"p*: adjusted in the report's one family of {comparison.family} tests (every pair, every metric's "
             "paired test and TOST, time to accuracy); *TOST p (seeds)*: equivalence within the margin across "
             "seeds (t); *TOST p (seeds + test)*: the same on the bootstrap over seeds and test images (the larger "
             "share of resamples beyond either end of the margin), the one the quality verdicts rest on; *TOST Holm "
             "p*: the verdict's TOST, adjusted in the same family; *detectable*: the smallest true difference the "
             f"paired t-test over these seeds finds with {100 * power.TARGET_POWER:.0f}% power; *seeds needed*: "
             "for the verdict within reach (equivalence when the estimate lies inside the margin, by the power of "
             "TOST; a difference otherwise, by the paired t-test's), if the true difference is the one estimated, "
             "at the observed seed-to-seed spread (in brackets: at the ends of the spread's 95% chi-square "
             "interval); *sign-flip p (these models)*: a test of these trained models on this test set (per-image "
             "differences averaged over seeds, signs flipped at random): it holds the models fixed, covers only the "
             "sampling of the test images, and no verdict about the frameworks rests on it.", "",
             table(["Metric", "Compared as", "Estimate", "95% CI (seeds)", "95% CI (seeds + test)",
                    "90% CI (seeds + test)", "p", "Holm p", "Margin", "TOST p (seeds)", "TOST p (seeds + test)",
                    "TOST Holm p", "Detectable", "Seeds needed", "Sign-flip p (these models)"], rows,
                   ["left", "left"] + ["right"] * 13), ""]
    accuracy = pair.metrics["test_accuracy"]
    if accuracy.floor is not None:
        metric = METRICS[0]
        error = difference_text(metric, accuracy.floor.standard_error, False)
        lines += [f"The test set's floor: the sampling standard error of the seed-averaged accuracy difference over "
                  f"{comparison.test_images:,} test images is {error}; however many seeds are run, differences below "
                  f"{difference_text(metric, accuracy.floor.detectable, False)} are not detected with "
                  f"{100 * power.TARGET_POWER:.0f}% power on this test set.", ""]
    lines += [f"Time to {100 * ttt.target:g}% validation accuracy (`report.target_val_accuracy`), per seed: "
              "training seconds (validation included) and epochs until validation accuracy first reached it; "
              "a replicate that never did is censored at its whole run.", "",
              table(["Seed", first, second, f"{first} / {second} (s)"],
                    [[str(seed), a.text(), b.text(), bound] for seed, a, b, bound
                     in zip(pair.seeds, ttt.first, ttt.second, ttt.bounds)], ["left", "right", "right", "right"]),
              "",
              "Per seed, on the same test images: the exact McNemar test counts the discordant pairs, the images "
              "exactly one of the two models gets right (the two *only ... right* columns); *predictions differ* "
              "also counts images both get wrong with different answers. The interval of each accuracy is "
              "Wilson's, covering the sampling of the test set. The seeds share one test set, so their counts are "
              "not pooled into one McNemar test (the sign-flip test above pools them, for these trained models on this "
              "test set).", ""]
    seed_rows = []
    for index, (seed, test) in enumerate(zip(pair.seeds, pair.mcnemar)):
        wilson_first = comparison.wilson[pair.first][comparison.seeds.index(seed)]
        wilson_second = comparison.wilson[pair.second][comparison.seeds.index(seed)]
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
    target = comparison.settings.target_val_accuracy
    extra = [[*row, time_to_accuracy.reached(r.curves["val/accuracy"], r.curves["epoch_seconds"], target).text(),
              f"{r.evaluation.parameters:,}", f"{r.evaluation.model_bytes / 1e6:.2f}"]
             for row, r in zip(rows, [r for items in results.values() for r in items])]
    header = ["Framework", "Seed", *(metric.label for metric in METRICS),
              f"Time to {100 * target:g}% val. accuracy", "Parameters", "Model file (MB)"]
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
