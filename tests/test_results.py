"""The committed run of every registered framework (``make every-framework``, linked from the
README): its report compares every pair, stock and tuned, from one experiment."""

from __future__ import annotations

import itertools
import json
import subprocess

from stages.common import frameworks
from tests.support import PROJECT_ROOT, made_by_current_report_code, results_revision

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


def test_the_every_framework_report_holds_its_revisions_default_keras_and_pytorch_replicates():
    """Its Keras and PyTorch stages are the default run's at the revision that made it
    (``results/every-framework/revision``), so their per-replicate accuracies are that revision's
    committed default report's."""
    revision = results_revision(EVERY)
    every = json.loads((EVERY / "metrics.json").read_text(encoding="utf-8"))
    shown = subprocess.run(["git", "show", f"{revision}:reports/metrics.json"], cwd=PROJECT_ROOT,
                           capture_output=True, text=True, check=True)
    default = json.loads(shown.stdout)
    for framework in ("keras", "torch"):
        assert every[framework]["test_accuracy"] == default[framework]["test_accuracy"], framework


def test_an_every_framework_report_from_earlier_code_is_named_as_such_in_the_readme():
    """Where the report code changed since the revision that made the five-framework results, the
    README's section says that they predate it, naming the revision and the command that
    regenerates them."""
    if made_by_current_report_code(EVERY):
        return
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Every framework", 1)[1].split("\n## ", 1)[0]
    assert results_revision(EVERY)[:7] in section and "make every-framework" in section
    assert "predate" in section
