"""The reproduction's verdict: one summary line, and ``reports/reproduction.md``.

``reproduced bitwise``: the params are the same, every data file, initial weight, model and
prediction is byte-identical, and so are the test figures; ``reproduced within margins``: the
params are the same and, per arm, old against new test accuracy, loss and macro F1 are
equivalent within the study's margins, and no quality conclusion changed its word; otherwise
``not reproduced: ...``, naming each thing that failed. Speed is one machine's, one sitting's: its
verdicts are compared, never failed.
"""

from __future__ import annotations

from dataclasses import dataclass

from stages import backends
from stages.report.conclusions import difference_text
from stages.report.measures import METRIC
from stages.reproduce import checks
from stages.reproduce.checks import BITWISE_KINDS, KINDS, Artifact, Conclusion, Margin, Speed


@dataclass(frozen=True)
class Reproduction:
    against: str  # the revision, described
    artifacts: list[Artifact]
    margins: list[Margin]
    missing: list[str]  # old replicates the workspace lacks
    conclusions: list[Conclusion]
    speeds: list[Speed]
    environment: list[tuple[str, str, str, str]]
    params: list[str]
    machines: tuple[str, str]  # old, new

    def failures(self) -> list[str]:
        failed = []
        if self.params:
            failed.append(f"params differ ({', '.join(self.params)})")
        if self.missing:
            failed.append(f"not in the workspace: {', '.join(self.missing)}")
        for item in self.margins:
            if not item.within:
                p = "one seed" if item.tost is None else f"TOST p = {item.tost.p_value:.2g}"
                failed.append(f"{backends.label(item.arm)} {METRIC[item.key].noun} moved "
                              f"{difference_text(METRIC[item.key], item.paired.estimate)}, not within "
                              f"{item.margin_text()} ({p})")
        failed += [f"conclusion changed: {pair_label(item.pair)} {checks.noun(item.key)} {item.old or '-'} -> "
                   f"{item.new or '-'}" for item in self.conclusions if item.changed and not item.speed]
        return failed

    @property
    def same_machine(self) -> bool:
        return self.machines[0] == self.machines[1]

    def absent(self) -> list[Artifact]:
        return [item for item in self.artifacts if item.kind in BITWISE_KINDS and item.new is None]

    def summary(self) -> str:
        failed = self.failures()
        if failed:
            return "not reproduced: " + "; ".join(failed)
        bitwise = [item for item in self.artifacts if item.kind in BITWISE_KINDS]
        if bitwise and all(item.identical for item in bitwise) and all(item.identical for item in self.margins):
            return "reproduced bitwise"
        absent = self.absent()
        if absent:
            return (f"reproduced within margins ({len(absent)} of {len(bitwise)} data files, weights, models and "
                    "predictions not in the workspace, so not compared byte for byte)")
        return "reproduced within margins"


def pair_label(pair: str) -> str:
    first, _, second = pair.partition("_vs_")
    return f"{backends.label(first)} vs {backends.label(second)}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(":---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def bitwise_rows(artifacts: list[Artifact]) -> list[list[str]]:
    groups: dict[tuple[str, str], list[Artifact]] = {}
    for item in artifacts:
        groups.setdefault((item.kind, item.arm), []).append(item)
    rows = []
    order = {kind: index for index, kind in enumerate((*KINDS, "other"))}
    for (kind, arm), items in sorted(groups.items(), key=lambda entry: (order[entry[0][0]], entry[0][1])):
        same = sum(item.identical for item in items)
        absent = [item for item in items if item.new is None]
        differ = [item.path for item in items if not item.identical and item.new is not None]
        rows.append([kind, arm or "-", f"{same} of {len(items)}", ", ".join(differ) or "-",
                     str(len(absent)) if absent else "-"])
    return rows


def summary_bullets(result: Reproduction) -> list[str]:
    bitwise = [item for item in result.artifacts if item.kind in BITWISE_KINDS]
    quality_same = sum(item.identical for item in result.margins)
    changed = [item for item in result.conclusions if item.changed]
    within = sum("within the spread" in item.judged for item in result.speeds)
    beyond = sum("beyond the spread" in item.judged for item in result.speeds)
    speed = ("no pair to compare" if not result.speeds else checks.ANOTHER_MACHINE if not result.same_machine
             else f"{within} of {len(result.speeds)} ratios moved within the spread between sittings, {beyond} beyond")
    return [
        f"- Bitwise: {sum(item.identical for item in bitwise)} of {len(bitwise)} data files, initial weights, models "
        f"and predictions byte-identical ({len(result.absent())} not in the workspace).",
        f"- Within the study's margins: {sum(item.within for item in result.margins)} of {len(result.margins)} "
        f"arm-metric pairs ({quality_same} identical on every seed).",
        f"- Conclusions: {len(result.conclusions) - len(changed)} of {len(result.conclusions)} verdicts kept their "
        f"word{'' if not changed else '; changed: ' + ', '.join(conclusion_text(item) for item in changed)}.",
        f"- Speed: {speed}.",
        f"- Environment: {len(result.environment)} recorded field(s) differ"
        f"{'' if not result.environment else ' (' + ', '.join(sorted({row[1] for row in result.environment})) + ')'}"
        f"; params: {'the same' if not result.params else ', '.join(result.params)}.",
    ]


def conclusion_text(item: Conclusion) -> str:
    return f"{pair_label(item.pair)} {checks.noun(item.key)} {item.old or '-'} -> {item.new or '-'}"


def mark(item: Conclusion, same_machine: bool) -> str:
    """A conclusion's note: a speed verdict of another machine is no evidence either way."""
    if item.speed and not same_machine:
        return checks.ANOTHER_MACHINE
    return "**changed**" if item.changed else ""


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}x"


def render(result: Reproduction) -> str:
    lines = [f"# Reproduction of the results of {result.against}", "",
             "The workspace's results against that revision's committed ones (`python -m stages.reproduce`).",
             "", "## Summary", "", f"**{result.summary()}**", "", *summary_bullets(result), "",
             "## Bitwise", "",
             "Each output the revision's `dvc.lock` records, against the md5 of the workspace's copy. Test "
             "metrics, training logs and the report hold timings, which differ on every run.", "",
             *_table(["Outputs", "Arm", "Byte-identical", "Differ", "Not in the workspace"],
                     bitwise_rows(result.artifacts)), "",
             "## Within the study's margins", "",
             "New minus old, paired by seed, with the report's rule: equivalent when both one-sided tests (TOST) "
             "reject a difference as large as the margin of the revision's `report.equivalence` at 5%.", ""]
    rows = [[backends.label(item.arm), METRIC[item.key].noun, METRIC[item.key].text(item.old_mean),
             METRIC[item.key].text(item.new_mean), difference_text(METRIC[item.key], item.paired.estimate),
             "-" if item.tost is None else f"{item.tost.p_value:.2g} ({item.margin_text()})",
             "identical" if item.identical else "equivalent" if item.within else "not shown equivalent"]
            for item in result.margins]
    lines += _table(["Arm", "Metric", "Old", "New", "New - old", "TOST p (margin)", "Verdict"], rows) if rows \
        else ["No replicate on both sides."]
    lines += ["", "## Conclusions", "", "Each verdict word of the old report against the new one (`reports/"
              "verdicts.json`, or the Conclusions of `reports/report.md` where a revision predates it).", ""]
    rows = [[pair_label(item.pair), checks.noun(item.key), item.old or "-", item.new or "-",
             mark(item, result.same_machine)] for item in result.conclusions]
    lines += _table(["Pair", "Metric", "Old", "New", ""], rows) if rows else ["Neither report records verdicts."]
    lines += ["", "## Speed", "",
              f"Old: {result.machines[0] or '-'}. New: {result.machines[1] or '-'}. A ratio is first / second "
              "(geometric mean over seeds), judged against how far it moved between sittings "
              "(`timing/sittings.json`).", ""]
    rows = [[pair_label(item.pair), METRIC[item.key].noun, _ratio(item.old_ratio), _ratio(item.new_ratio),
             item.judged] for item in result.speeds]
    lines += _table(["Pair", "Metric", "Old ratio", "New ratio", "Judged"], rows) if rows else ["No pair."]
    lines += ["", "## Why they might differ", "",
              "The environment each arm's replicates recorded, only the fields that differ; then the params that "
              "the stages recorded in `dvc.lock`.", ""]
    lines += _table(["Arm", "Field", "Old", "New"], [[backends.label(arm), field, old, new]
                                                      for arm, field, old, new in result.environment]) \
        if result.environment else ["The recorded environments are the same."]
    lines += ["", *(f"- `{line}`" for line in result.params)] if result.params else ["", "The params are the same."]
    return "\n".join(lines) + "\n"
