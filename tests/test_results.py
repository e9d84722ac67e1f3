"""The committed run of every registered framework (``make every-framework``, linked from the
README): its report compares every pair, stock and tuned, from one experiment."""

from __future__ import annotations

import itertools
import json

from stages.common import frameworks
from tests.support import PROJECT_ROOT

EVERY = PROJECT_ROOT / "results" / "every-framework"


def test_the_every_framework_report_compares_every_pair_of_registered_frameworks():
    """Fails when a framework is registered without rerunning ``make every-framework``."""
    text = (EVERY / "report.md").read_text(encoding="utf-8")
    headings = set(text.splitlines())
    for left, right in itertools.combinations(frameworks.names(), 2):
        assert f"## {frameworks.label(left)} vs {frameworks.label(right)}" in headings, (
            f"results/every-framework/report.md has no comparison of {left} and {right}: run `make every-framework`")
    metrics = json.loads((EVERY / "metrics.json").read_text(encoding="utf-8"))
    assert set(frameworks.names()) <= set(metrics)
    assert "## What tuning buys" in headings


def test_the_every_framework_report_holds_the_default_runs_keras_and_pytorch_replicates():
    """Its Keras and PyTorch stages are the default run's (they match the committed dvc.lock), so their
    per-replicate accuracies are the committed default report's."""
    every = json.loads((EVERY / "metrics.json").read_text(encoding="utf-8"))
    default = json.loads((PROJECT_ROOT / "reports" / "metrics.json").read_text(encoding="utf-8"))
    for framework in ("keras", "torch"):
        assert every[framework]["test_accuracy"] == default[framework]["test_accuracy"], framework
