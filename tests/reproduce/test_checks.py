"""The reproduction's checks one by one (stages/reproduce/checks.py, verdict.py): the environment
diff, the speed rule, params, verdict words, DVC's hashes, and the summary line."""

from __future__ import annotations

import dataclasses
import json

import pytest

from stages.common import schemas
from stages.common.schemas import TestMetrics
from stages.report import __main__ as report
from stages.report import stats
from stages.report.conclusions import VERDICTS
from stages.reproduce import checks, sources
from stages.reproduce.verdict import Reproduction
from tests.report import generated
from tests.support import PROJECT_ROOT
from tests.timing.test_speed import sitting

COMMITTED = PROJECT_ROOT / "eval/keras/1/metrics.json"


def evaluation(**environment: str) -> TestMetrics:
    record = schemas.from_dict(TestMetrics, json.loads(COMMITTED.read_text()), str(COMMITTED))
    return dataclasses.replace(record, environment={**record.environment, **environment})


def test_another_cpu_names_only_the_environment_fields_that_differ():
    old = checks.environments({"keras": {1: evaluation(cpu="AMD EPYC"), 2: evaluation(cpu="AMD EPYC")}})
    new = checks.environments({"keras": {1: evaluation(cpu="Intel Xeon", threads="4"),
                                         2: evaluation(cpu="Intel Xeon", threads="4")}})
    assert checks.environment_diff(old, new) == [("keras", "cpu", "AMD EPYC", "Intel Xeon"),
                                                 ("keras", "threads", old["keras"]["threads"], "4")]
    assert checks.environment_diff(old, old) == []
    tuned = checks.environments({"keras": {1: dataclasses.replace(evaluation(cpu="AMD EPYC"), tuning="tuned",
                                                                  switches=["onednn"])}})
    assert [row[1] for row in checks.environment_diff(old, tuned)] == ["tuning", "switches"]


def test_speed_on_another_machine_is_not_comparable_and_on_the_same_one_is_judged_by_the_sittings():
    assert checks.speed_judgement(False, 3.0, 1.2) == "not comparable: another machine"
    assert checks.speed_judgement(True, 1.1, 1.2).endswith("within the spread between sittings (1.20x)")
    assert checks.speed_judgement(True, 1.3, 1.2).endswith("beyond the spread between sittings (1.20x)")
    assert "no sittings record" in checks.speed_judgement(True, 1.3, None)
    old = {"keras": {1: evaluation(cpu="AMD EPYC")}, "torch": {1: evaluation(cpu="AMD EPYC")}}
    new = {"keras": {1: evaluation(cpu="Intel Xeon")}, "torch": {1: evaluation(cpu="Intel Xeon")}}
    assert checks.machines(old) != checks.machines(new)
    # the timing stage's record: Keras' latency 2.0x then 2.5x PyTorch's over two sittings moved 1.25x
    record = {"sittings": [sitting([2.0, 2.0, 2.0]), sitting([2.5, 2.5, 2.5])]}
    assert checks.sittings_spread(record, "keras_vs_torch", "latency_ms") == pytest.approx(1.25)
    assert checks.sittings_spread(record, "keras_vs_torch", "train_seconds") == pytest.approx(1.25)  # step time
    assert checks.sittings_spread(record, "jax_vs_torch", "latency_ms") is None
    assert checks.sittings_spread({"sittings": record["sittings"][:1]}, "keras_vs_torch", "latency_ms") is None


def reproduction(conclusions: list[checks.Conclusion], machines: tuple[str, str]) -> Reproduction:
    paired = stats.paired_difference([0.99, 0.98], [0.99, 0.98])
    margin = checks.Margin("keras", "test_accuracy", (1, 2), 0.985, 0.985, paired, stats.tost([0.0, 0.0], 0.001),
                           0.001)
    artifact = checks.Artifact("models/keras/1", "models", "keras", "a.dir", "a.dir")
    return Reproduction("HEAD", [artifact], [margin], [], conclusions, [], [], [], machines)


def test_a_changed_speed_verdict_never_fails_a_reproduction_a_changed_quality_verdict_does():
    speed = checks.Conclusion("keras_vs_torch", "inference_images_per_second", "inconclusive", "different")
    assert reproduction([speed], ("AMD EPYC, 2 cores", "Intel Xeon, 2 cores")).summary() == "reproduced bitwise"
    quality = checks.Conclusion("keras_vs_torch", "test_accuracy", "equivalent", "inconclusive")
    assert reproduction([speed, quality], ("x", "x")).summary() == (
        "not reproduced: conclusion changed: Keras vs PyTorch test accuracy equivalent -> inconclusive")


def test_a_metric_beyond_its_margin_is_named_in_the_summary():
    paired = stats.paired_difference([0.95, 0.96], [0.99, 0.98])
    margin = checks.Margin("torch", "test_accuracy", (1, 2), 0.985, 0.955, paired,
                           stats.tost(list(paired.per_seed), 0.001), 0.001)
    result = dataclasses.replace(reproduction([], ("x", "x")), margins=[margin])
    assert result.summary().startswith("not reproduced: PyTorch test accuracy moved -3.00 pp, not within ±0.10 pp "
                                       "(TOST p = ")


def test_params_are_compared_as_the_stages_recorded_them():
    old = sources.Lock({}, sources.flatten({"train": {"epochs": 1, "rates": [1, 2]}, "seed": 42}))
    new = sources.Lock({}, sources.flatten({"train": {"epochs": 2, "rates": [1, 2]}, "keras": {"batch_size": 16}}))
    assert checks.params_diff(old, new) == ["train.epochs: 1 -> 2", "seed: 42 -> -", "keras.batch_size: - -> 16"]
    assert checks.params_diff(old, old) == []


def test_the_workspace_is_hashed_as_dvc_records_it(monkeypatch):

    monkeypatch.chdir(PROJECT_ROOT)
    recorded = sources.read_lock(sources.Workspace()).outputs
    for path in ("dvclive/keras/1", "eval/keras/1/metrics.json", "reports"):
        assert sources.workspace_md5(path) == recorded[path], path
    assert sources.workspace_md5("models/no-such-arm/1") is None


@pytest.mark.parametrize(("path", "kind", "arm"), [
    ("models/init/1.npz", "initial weights", ""), ("models/keras-tuned/2", "models", "keras-tuned"),
    ("eval/torch/1/predictions.npy", "predictions", "torch"), ("eval/torch/1/confusion.csv", "test metrics", "torch"),
    ("dvclive/keras/3", "training logs", "keras"), ("data/prepared", "data", ""), ("reports", "report", "")])
def test_outputs_are_classified_by_their_paths(path, kind, arm):
    assert checks.classify(path) == (kind, arm)


def test_the_verdict_words_of_a_report_are_those_its_sentences_say(tmp_path, monkeypatch):
    """reports/verdicts.json and the words read back from report.md's Conclusions (for revisions
    before verdicts.json) agree, on a report the report stage wrote."""
    generated.write_workspace(tmp_path, ("keras", "torch"), (1, 2, 3))
    monkeypatch.chdir(tmp_path)
    report.main([])
    recorded = json.loads((tmp_path / "reports/verdicts.json").read_text())
    # quality only: without a sitting of the timing stage the report states no speed verdict
    assert set(recorded["keras_vs_torch"]) == {"test_accuracy", "test_loss", "macro_f1"}
    parsed = checks.parse_conclusions((tmp_path / "reports/report.md").read_text(), ["keras", "torch"])
    assert parsed == recorded


def test_the_committed_reports_conclusions_are_read_word_by_word():
    text = (PROJECT_ROOT / "reports/report.md").read_text()
    words = checks.parse_conclusions(text, ["keras", "torch"])["keras_vs_torch"]
    bullets = [line[2:] for line in text.split("## Every framework")[0].splitlines()
               if line.startswith("- ") and not line.startswith("- Time to")]
    # every bullet is read, quality and speed, and gives the word reports/verdicts.json records
    assert len(words) == len(bullets) == 7 and set(words.values()) <= set(VERDICTS)
    assert words == json.loads((PROJECT_ROOT / "reports/verdicts.json").read_text())["keras_vs_torch"]
    for word, bullet in zip(words.values(), bullets):
        opening = bullet.split()[0].rstrip(":").lower()
        assert word == opening or opening not in VERDICTS, bullet
