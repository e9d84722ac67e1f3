"""Stage ``report``: figures, a Markdown report and the top-level metrics comparing every framework.

Reads ``params.yaml`` (``frameworks``, ``replicates``, ``report``, and the sections quoted in the
report), ``data/prepared/`` (test images and labels, meta.json) and, for every framework and
seed of each arm (``<framework>`` stock, ``<framework>-tuned`` on ``replicates.tuned_seeds``):
``models/<arm>/<seed>/run.json``, ``dvclive/<arm>/<seed>/`` (training summary and per-epoch
curves) and ``eval/<arm>/<seed>/`` (metrics, per-class scores, predictions, and ``onnx.json``: the export on
ONNX Runtime, stages/export), and ``timing/sittings.json``
(the timing stage's sittings: the speed verdicts, contention and time to accuracy). Writes ``reports/``
as a whole (the previous folder survives a failed run):

- ``report.md``: conclusions per pair of frameworks, the table of every metric (mean, sd, 95% CI
  over seeds), paired differences and ratios with CIs and p-values, per-seed McNemar tests and
  Wilson intervals, every replicate's numbers, the figures, the params;
- ``metrics.json``: the top-level metrics of ``dvc metrics show`` / ``dvc exp show``, numbers
  only: per framework the mean test accuracy and training time with their 95% CI half-widths;
  per pair the accuracy difference with its CI and p-value and the training-time ratio with its CI;
  per stock framework with an ONNX export (``onnx.<framework>.*``) its agreement figures, ONNX Runtime's throughput
  and latency, and their ratios to the framework's own inference with CIs;
- ``verdicts.json``: per pair of frameworks (``keras_vs_torch``), each conclusion's word per metric
  (quality: different, equivalent, inconclusive, one seed; speed, from the sittings: different,
  equivalent, inconclusive, no data), which ``stages.reproduce`` compares;
- ``curves.csv``: validation accuracy per epoch, mean over seeds per framework (a DVC plot);
- the PNG figures listed in ``stages/report/figures.py``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import sys

import numpy as np

from stages import backends
from stages.common import atomic, cli, paths, prepared
from stages.common.errors import run_stage
from stages.common.params import load_params
from stages.report import compare, conclusions, figures, inputs, markdown, onnx, speed, tuning
from stages.timing import record

log = logging.getLogger("report")


def curves_csv(results: dict[str, list[inputs.Replicate]]) -> str:
    """Validation accuracy per epoch, mean over seeds, one column per framework."""
    columns = {}
    for framework, items in results.items():
        curves = [r.curves["val/accuracy"] for r in items]
        length = min(len(curve.values) for curve in curves)
        columns[framework] = np.mean([curve.values[:length] for curve in curves], axis=0)
    length = min(len(values) for values in columns.values())
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["epoch", *columns])
    for index in range(length):
        writer.writerow([index + 1, *(f"{values[index]:.6f}" for values in columns.values())])
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> None:
    cli.parser("stages.report", __doc__).parse_args(argv)
    params = load_params()
    data = prepared.load_prepared(paths.PREPARED, splits=("test",))
    test = data.splits["test"]
    labels = np.asarray(test.labels, dtype=np.int64)
    results = inputs.load_all(params.frameworks, params.replicates.seeds, labels, data.class_names)
    tuned = (inputs.load_all(params.frameworks, params.replicates.tuned_seeds, labels, data.class_names, "tuned")
             if params.replicates.tuned_seeds else {})
    exported = (onnx.summarise_all(results, inputs.load_exports(params.frameworks, params.replicates.seeds,
                                                                labels.shape[0])),
                onnx.summarise_all(tuned, inputs.load_exports(params.frameworks, params.replicates.tuned_seeds,
                                                              labels.shape[0], "tuned") if tuned else {}))
    comparison = compare.compare(results, labels, params.report)
    context = figures.Context(results, comparison, np.asarray(test.images), labels, data.meta, params.report)
    drawn = {spec.file: spec.draw(context) for spec in figures.FIGURES}
    recorded = record.load()
    pooled = record.pooled(recorded)
    report = markdown.render(comparison, results, params, data.meta, tuned, (pooled, len(recorded)), exported)
    words = conclusions.verdicts(comparison)
    for item in speed.verdicts(params.frameworks, pooled, params.report.equivalence.speed_ratio) if pooled else []:
        words.setdefault(f"{item.first}_vs_{item.second}", {})[item.metric.key] = item.word
    summary = {**compare.summary_metrics(comparison),
               **tuning.summary_metrics(tuning.tuning_effects(results, tuned)),
               **onnx.summary_metrics(exported[0])}
    with atomic.atomic_directory(paths.REPORTS) as temporary:
        for name, figure in drawn.items():
            figures.save_figure(figure, temporary / name)
        (temporary / "report.md").write_text(report, encoding="utf-8")
        (temporary / paths.SUMMARY_METRICS.name).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        (temporary / paths.VERDICTS.name).write_text(
            json.dumps(words, indent=2) + "\n", encoding="utf-8")
        (temporary / "curves.csv").write_text(curves_csv(results), encoding="utf-8")
    log.info("wrote %s: %d figures, report.md, metrics.json, verdicts.json; %s", paths.REPORTS, len(drawn), "; ".join(
        f"{backends.label(f)} test accuracy {100 * comparison.spreads[f]['test_accuracy'].mean:.2f}% "
        f"(mean of {comparison.n})" for f in comparison.frameworks))


if __name__ == "__main__":
    run_stage(lambda: main(sys.argv[1:]), "report")
