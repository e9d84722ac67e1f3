"""What a reproduction checks, each a pure function of the two result sets' files.

- **bitwise**: each output that the old ``dvc.lock`` records, against the workspace's copy;
- **within the study's margins**: per arm, old against new test accuracy, loss and macro F1,
  paired by seed, with the report's own rule (``stats.tost`` against ``arms.margin`` of the
  old revision's ``report.equivalence``);
- **the conclusions**: each verdict word of the old report against the new one;
- **speed**: the speed ratios of each pair against the spread between sittings, or "not
  comparable: another machine" where the recorded CPU differs;
- **why they might differ**: the recorded environments, only the fields that differ; and the
  params each side's stages recorded (as ``dvc params diff`` names them).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stages import backends
from stages.common import paths, schemas
from stages.common.errors import StageError
from stages.common.params import ReportParams
from stages.common.schemas import TestMetrics, TrainingSummary
from stages.report import stats
from stages.report.arms import margin as metric_margin
from stages.report.conclusions import VERDICTS, difference_text
from stages.report.measures import METRIC
from stages.report.speed import SPEED_METRICS, sitting_ratio
from stages.reproduce.sources import Lock, Source
from stages.timing.record import SITTINGS

QUALITY = ("test_accuracy", "test_loss", "macro_f1")
# outputs that a deterministic rerun reproduces byte for byte (metric files and logs hold timings)
BITWISE_KINDS = ("data", "initial weights", "models", "predictions")
KINDS = (*BITWISE_KINDS, "test metrics", "training logs", "report")
ANOTHER_MACHINE = "not comparable: another machine"
# reproduce's speed keys (figures of the replicates) -> the sittings record's (timing stage)
SITTINGS_MEASURE = {"train_seconds": "step_seconds", "inference_images_per_second": "inference_images_per_second",
                    "latency_ms": "latency_ms"}
# every metric key a verdict may be recorded for, with its noun: quality (and old speed-over-seeds
# verdicts) from measures.METRIC, speed from the sittings (report/speed.py)
NOUNS = {**{key: metric.noun for key, metric in METRIC.items()},
         **{metric.key: metric.noun for metric in SPEED_METRICS}}
SPEED_WORDS = (*VERDICTS, "no data")


def noun(key: str) -> str:
    return NOUNS[key]


# --------------------------------------------------------------------------------------------
# bitwise
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Artifact:
    path: str
    kind: str  # one of KINDS, or "other"
    arm: str  # "" where the output belongs to no arm
    old: str  # md5 in the old dvc.lock
    new: str | None  # md5 of the workspace's copy; None: not in the workspace

    @property
    def identical(self) -> bool:
        return self.new == self.old


def classify(path: str) -> tuple[str, str]:
    """An output's kind and arm, from its path (stages/common/paths.py)."""
    parts = path.split("/")
    if path.startswith(f"{paths.INIT}/"):
        return "initial weights", ""
    if parts[0] == str(paths.MODELS) and len(parts) == 3:
        return "models", parts[1]
    if parts[0] == str(paths.EVAL) and len(parts) == 4:
        return ("predictions" if parts[3] == paths.PREDICTIONS_FILE else "test metrics"), parts[1]
    if parts[0] == str(paths.LOGS) and len(parts) == 3:
        return "training logs", parts[1]
    if parts[0] == "data":
        return "data", ""
    return ("report", "") if path == str(paths.REPORTS) else ("other", "")


def artifacts(old: Lock, hashes: Mapping[str, str | None]) -> list[Artifact]:
    """Every output of the old dvc.lock with the workspace's md5 of it (``hashes``)."""
    return [Artifact(path, *classify(path), md5, hashes.get(path)) for path, md5 in sorted(old.outputs.items())]


# --------------------------------------------------------------------------------------------
# per-replicate records
# --------------------------------------------------------------------------------------------
def records(source: Source, kind: str) -> dict[str, dict[int, Any]]:
    """arm -> seed -> the ``eval`` (TestMetrics) or ``dvclive`` (TrainingSummary) record of ``source``."""
    cls: type = TestMetrics if kind == "eval" else TrainingSummary
    found: dict[str, dict[int, Any]] = {}
    for file_kind, arm, seed, path in source.replicate_files():
        if file_kind == kind:
            try:
                found.setdefault(arm, {})[seed] = schemas.from_dict(cls, source.json(path), f"{source.name}:{path}")
            except ValueError as error:
                raise StageError(str(error)) from None
    return found


def report_settings(source: Source) -> ReportParams:
    """The old revision's ``report`` params: its margins are the study's."""
    from stages.common.params import parse_section

    raw = source.yaml(str(paths.PARAMS))
    if not isinstance(raw, dict) or not isinstance(raw.get("report"), dict):
        raise StageError(f"{source.name}:{paths.PARAMS}: no report section; expected the study's params.yaml")
    try:
        return parse_section(ReportParams, raw["report"], "report")
    except StageError as error:
        raise StageError(f"{source.name}:{paths.PARAMS}: {error}") from None


# --------------------------------------------------------------------------------------------
# within the study's margins
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Margin:
    arm: str
    key: str  # QUALITY
    seeds: tuple[int, ...]
    old_mean: float
    new_mean: float
    paired: stats.Paired  # new minus old, per seed
    tost: stats.Tost | None  # None: one seed
    margin: float

    @property
    def identical(self) -> bool:
        return all(value == 0 for value in self.paired.per_seed)

    @property
    def within(self) -> bool:
        return self.identical or (self.tost is not None and self.tost.equivalent)

    def margin_text(self) -> str:
        return f"±{difference_text(METRIC[self.key], self.margin, signed=False)}"


def margins(old: Mapping[str, Mapping[int, TestMetrics]], new: Mapping[str, Mapping[int, TestMetrics]],
            settings: ReportParams) -> tuple[list[Margin], list[str]]:
    """Per arm of the old results and quality metric, new minus old on their common seeds; and the
    old replicates that the workspace lacks."""
    compared, missing = [], []
    for arm, old_seeds in sorted(old.items()):
        missing += [str(paths.EVAL / arm / str(seed) / paths.METRICS_FILE) for seed in sorted(old_seeds)
                    if seed not in new.get(arm, {})]
        seeds = tuple(seed for seed in sorted(old_seeds) if seed in new.get(arm, {}))
        if not seeds:
            continue
        for key in QUALITY:
            metric = METRIC[key]
            before = [metric_value(old_seeds[seed], key) for seed in seeds]
            after = [metric_value(new[arm][seed], key) for seed in seeds]
            paired = stats.paired_difference(after, before)
            limit = metric_margin(metric, settings)
            compared.append(Margin(arm, key, seeds, sum(before) / len(seeds), sum(after) / len(seeds), paired,
                                   stats.tost(list(paired.per_seed), limit), limit))
    return compared, missing


def metric_value(record: TestMetrics, key: str) -> float:
    return float(getattr(record, key))


# --------------------------------------------------------------------------------------------
# the conclusions
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Conclusion:
    pair: str  # keras_vs_torch
    key: str  # metric key
    old: str | None  # verdict word; None: not in that report
    new: str | None

    @property
    def changed(self) -> bool:
        return self.old != self.new

    @property
    def speed(self) -> bool:
        return self.key not in METRIC or METRIC[self.key].compare == "ratio"


BULLET_VERDICT = (("Different:", "different"), ("Equivalent:", "equivalent"), ("Inconclusive for ", "inconclusive"))


def parse_conclusions(report: str, arms: Sequence[str]) -> dict[str, dict[str, str]]:
    """The verdict words of a ``report.md`` written before ``verdicts.json`` existed: each bullet of
    its Conclusions section under its bold ``**A vs B**`` pair line."""
    names = {backends.label(arm): arm for arm in arms}
    found: dict[str, dict[str, str]] = {}
    lines = report.splitlines()
    body = lines[lines.index("## Conclusions") + 1:] if "## Conclusions" in lines else []
    pair = None
    for line in body:
        if line.startswith("## "):
            break
        heading = re.fullmatch(r"\*\*(.+) vs (.+)\*\*", line)
        if heading:
            first, second = names.get(heading[1]), names.get(heading[2])
            pair = f"{first}_vs_{second}" if first and second else None
        elif line.startswith("- ") and pair is not None:
            claim = line[2:].split(" (")[0].lower()
            keys = [key for key in NOUNS if NOUNS[key].lower() in claim and key != "train_images_per_second"]
            word = next((word for prefix, word in BULLET_VERDICT if line[2:].startswith(prefix)), None)
            word = word or ("no winner" if "no winner." in line else "one seed" if "from one seed" in line else None)
            if keys and word and not line[2:].startswith("Time to"):
                found.setdefault(pair, {})[keys[0]] = word
    return found


def recorded_verdicts(source: Source, arms: Sequence[str]) -> dict[str, dict[str, str]] | None:
    """``reports/verdicts.json``, or the words of ``reports/report.md`` where the revision predates it."""
    recorded = source.json(str(paths.VERDICTS))
    if isinstance(recorded, dict):
        return {pair: {key: str(word) for key, word in words.items() if key in NOUNS and word in SPEED_WORDS}
                for pair, words in recorded.items() if isinstance(words, dict)}
    report = source.text(str(paths.REPORTS / "report.md"))
    return None if report is None else parse_conclusions(report, arms)


def conclusions(old: Mapping[str, Mapping[str, str]] | None,
                new: Mapping[str, Mapping[str, str]] | None) -> list[Conclusion]:
    old, new = old or {}, new or {}
    pairs = list(old) + [pair for pair in new if pair not in old]
    return [Conclusion(pair, key, old.get(pair, {}).get(key), new.get(pair, {}).get(key))
            for pair in pairs for key in NOUNS
            if key in old.get(pair, {}) or key in new.get(pair, {})]


# --------------------------------------------------------------------------------------------
# speed, and why results might differ
# --------------------------------------------------------------------------------------------
def machines(evaluations: Mapping[str, Mapping[int, TestMetrics]]) -> set[str]:
    """The machines the replicates were evaluated on: CPU model and core count."""
    return {f"{record.environment.get('cpu', '?')}, {record.environment.get('cores', '?')} cores"
            for seeds in evaluations.values() for record in seeds.values()}


def speed_judgement(same_machine: bool, moved: float | None, spread: float | None) -> str:
    """How a speed ratio's move from the old run to the new one compares with the spread of that
    ratio between sittings (``timing/sittings.json``); a speed is of one machine only."""
    if not same_machine:
        return ANOTHER_MACHINE
    if moved is None:
        return "not measured on both sides"
    if spread is None:
        return f"moved {moved:.2f}x; no sittings record for this pair"
    return (f"moved {moved:.2f}x, {'within' if moved <= spread else 'beyond'} the spread between sittings "
            f"({spread:.2f}x)")


@dataclass(frozen=True)
class Speed:
    pair: str
    key: str
    old_ratio: float | None  # first / second, geometric mean over the common seeds
    new_ratio: float | None
    judged: str


def speed_values(key: str, evaluations: Mapping[int, TestMetrics], trainings: Mapping[int, TrainingSummary],
                 seeds: Sequence[int]) -> list[float] | None:
    source: Mapping[int, Any] = trainings if key == "train_seconds" else evaluations
    field = {"train_seconds": "train_seconds", "inference_images_per_second": "throughput_images_per_second",
             "latency_ms": "latency_ms_median"}[key]
    if not seeds or any(seed not in source for seed in seeds):
        return None
    return [float(getattr(source[seed], field)) for seed in seeds]


def ratio(key: str, pair: str, evaluations: Mapping[str, Mapping[int, TestMetrics]],
          trainings: Mapping[str, Mapping[int, TrainingSummary]]) -> float | None:
    first, _, second = pair.partition("_vs_")
    seeds = sorted(set(evaluations.get(first, {})) & set(evaluations.get(second, {})))
    a = speed_values(key, evaluations.get(first, {}), trainings.get(first, {}), seeds)
    b = speed_values(key, evaluations.get(second, {}), trainings.get(second, {}), seeds)
    return None if a is None or b is None else stats.paired_ratio(a, b).estimate


def sittings_spread(record: Any, pair: str, key: str) -> float | None:
    """The factor the ratio ``pair`` moved by between the sittings of ``timing/sittings.json``
    (largest / smallest sitting ratio, over the sittings poolable with its newest), where it has two."""
    first, _, second = pair.partition("_vs_")
    try:
        from stages.timing.record import pooled

        # the ratios alone: no margin, the sittings' own words unused
        ratios = [found.estimate for sitting in pooled(list(record["sittings"]))
                  if (found := sitting_ratio(sitting, first, second, SITTINGS_MEASURE[key], 0.95, 0.0)) is not None]
    except (KeyError, TypeError, IndexError, ValueError):
        return None
    return math.exp(max(ratios) - min(ratios)) if len(ratios) >= 2 else None


def speeds(pairs: Sequence[str], old: tuple[Any, Any], new: tuple[Any, Any], same_machine: bool,
           record: Any) -> list[Speed]:
    """Per pair and speed metric: old and new ratio, judged (``old``/``new``: evaluations, trainings)."""
    found = []
    for pair in pairs:
        for key in SITTINGS_MEASURE:
            before, after = ratio(key, pair, *old), ratio(key, pair, *new)
            moved = None if before is None or after is None else max(after / before, before / after)
            found.append(Speed(pair, key, before, after,
                               speed_judgement(same_machine, moved, sittings_spread(record, pair, key))))
    return found


def sittings_record(source: Source) -> Any:
    return source.json(str(SITTINGS))


def environments(evaluations: Mapping[str, Mapping[int, TestMetrics]]) -> dict[str, dict[str, str]]:
    """arm -> field -> the values its replicates recorded (environment, level, switches)."""
    found: dict[str, dict[str, str]] = {}
    for arm, seeds in evaluations.items():
        values: dict[str, set[str]] = {}
        for record in seeds.values():
            fields = {**record.environment, "tuning": record.tuning, "switches": ", ".join(record.switches) or "none"}
            for field, value in fields.items():
                values.setdefault(field, set()).add(str(value))
        found[arm] = {field: "; ".join(sorted(items)) for field, items in values.items()}
    return found


def environment_diff(old: Mapping[str, Mapping[str, str]], new: Mapping[str, Mapping[str, str]]
                     ) -> list[tuple[str, str, str, str]]:
    """(arm, field, old value, new value) for every recorded field that differs ("-": not recorded)."""
    rows = []
    for arm in sorted(set(old) & set(new)):
        for field in list(old[arm]) + [field for field in new[arm] if field not in old[arm]]:
            before, after = old[arm].get(field, "-"), new[arm].get(field, "-")
            if before != after:
                rows.append((arm, field, before, after))
    return rows


def params_diff(old: Lock, new: Lock) -> list[str]:
    """``key: old -> new`` for every param whose recorded value differs, as ``dvc params diff`` names them."""
    def shown(value: Any) -> str:
        return "-" if value is _ABSENT else json.dumps(value)

    keys = list(old.params) + [key for key in new.params if key not in old.params]
    return [f"{key}: {shown(old.params.get(key, _ABSENT))} -> {shown(new.params.get(key, _ABSENT))}"
            for key in keys if old.params.get(key, _ABSENT) != new.params.get(key, _ABSENT)]


_ABSENT = object()
