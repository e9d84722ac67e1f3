"""stages/report/compare.py: what is compared, the sentences, and the top-level metrics."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from stages import backends
from stages.common import paths
from stages.common.params import load_params
from stages.report import arms, compare, conclusions, inputs, markdown, measures, power, resampling, stats
from tests.report import generated


def settings(root):
    return load_params(root / "params.yaml").report


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    monkeypatch.setitem(backends.REGISTRY, "numpy", ("tests.numpy_backend", "NumPy"))
    return generated.write_workspace(tmp_path, ("keras", "torch", "numpy"), (1, 2, 3))


def load(root, frameworks, seeds, monkeypatch):
    monkeypatch.chdir(root)
    return inputs.load_all(frameworks, seeds, generated.labels().astype(np.int64), [f"class {i}" for i in range(10)])


def test_every_pair_is_compared_with_known_mcnemar_counts(workspace, monkeypatch):
    results = load(workspace, ["keras", "torch", "numpy"], [1, 2, 3], monkeypatch)
    comparison = compare.compare(results, generated.labels().astype(np.int64), settings(workspace))
    assert [(pair.first, pair.second) for pair in comparison.pairs] == [("keras", "torch"), ("keras", "numpy"),
                                                                         ("torch", "numpy")]
    keras_torch = comparison.pairs[0]
    # keras wrong on 1, 2, 3, 5; torch on 3, 4, 5: only keras right on 4, only torch right on 1, 2.
    assert [(test.only_first_right, test.only_second_right) for test in keras_torch.mcnemar] == [(1, 2)] * 3
    assert keras_torch.disagreements == [3, 3, 3]  # 1, 2 and 4; on 3 and 5 both give the same wrong answer
    accuracy = keras_torch.paired["test_accuracy"]
    assert accuracy.estimate == pytest.approx(-1 / generated.COUNT)
    assert comparison.spreads["keras"]["test_accuracy"].values == pytest.approx(
        ((40 - 4) / 40, (40 - 5) / 40, (40 - 5) / 40))


def test_training_time_is_compared_as_a_ratio(workspace, monkeypatch):
    results = load(workspace, ["keras", "torch"], [1, 2, 3], monkeypatch)
    comparison = compare.compare(results, generated.labels().astype(np.int64), settings(workspace))
    ratio = comparison.pairs[0].paired["train_seconds"]
    expected = [(20.0 + 0.1 * seed) / (25.0 + 0.1 * seed) for seed in (1, 2, 3)]
    assert ratio.per_seed == pytest.approx(expected)
    # described over seeds in the pair's table, but judged only from the timing stage's sittings
    assert all(metric.compare == "difference" for metric, _ in conclusions.judged(comparison))
    assert "train_seconds" not in conclusions.verdicts(comparison)["keras_vs_torch"]
    assert comparison.pairs[0].metrics["train_seconds"].holm_p is None


def pair_with(workspace, monkeypatch, key, **changes):
    """The generated keras-vs-torch pair, with ``changes`` applied to one metric's comparison."""
    results = load(workspace, ["keras", "torch"], [1, 2, 3], monkeypatch)
    pair = compare.compare(results, generated.labels().astype(np.int64), settings(workspace)).pairs[0]
    metrics = dict(pair.metrics)
    metrics[key] = dataclasses.replace(metrics[key], **changes)
    return dataclasses.replace(pair, metrics=metrics)


def paired(estimate, low, high, p_value):
    return stats.Paired((estimate,) * 3, estimate, stats.Interval(low, high), p_value)


def seeds_and_test(low, high, p_value, margin=0.001):
    return resampling.Equivalence(margin, stats.Interval(low, high), p_value)


def test_equivalent_is_accepted_when_the_seeds_and_test_interval_lies_inside_the_margin(workspace, monkeypatch):
    pair = pair_with(workspace, monkeypatch, "test_accuracy", paired=paired(0.0002, -0.0003, 0.0007, 0.4),
                     holm_p=0.9, tost=stats.Tost(0.001, 0.01), equivalence=seeds_and_test(-0.0004, 0.0008, 0.004),
                     tost_holm_p=0.02)
    text = conclusions.difference_sentence(measures.METRIC["test_accuracy"], pair, 3, 10_000)
    assert text.startswith("Equivalent: Keras and PyTorch do not differ in test accuracy by more than ±0.10 pp "
                           "(90% interval over seeds and test images -0.04 pp to +0.08 pp, TOST p = 0.004, "
                           "Holm-adjusted 0.02;")
    assert "paired t-test p = 0.4 (Holm-adjusted 0.9)" in text


def test_equivalent_is_refused_when_the_seeds_and_test_interval_crosses_the_margin(workspace, monkeypatch):
    """The seeds-only TOST passes (p = 0.01) and even the adjusted bootstrap p is small, but the 90%
    interval over seeds and test images reaches +0.12 pp, past the 0.10 pp margin: not equivalent."""
    pair = pair_with(workspace, monkeypatch, "test_accuracy", paired=paired(0.0003, -0.0006, 0.0012, 0.27),
                     holm_p=0.9, tost=stats.Tost(0.001, 0.01), equivalence=seeds_and_test(-0.0006, 0.0012, 0.03),
                     tost_holm_p=0.03, test_error=0.00034)
    item = pair.metrics["test_accuracy"]
    assert not conclusions.equivalent(item)
    text = conclusions.difference_sentence(measures.METRIC["test_accuracy"], pair, 3, 10_000)
    assert not text.startswith("Equivalent")
    # the resolution: 1.645 x the test set's standard error (0.034 pp) = 0.056 pp
    assert text.startswith("Inconclusive for test accuracy: equivalent across seeds on this test set; the test set "
                           "cannot resolve differences below 0.06 pp, and over seeds and test images together "
                           "equivalence within ±0.10 pp is not shown (90% interval over seeds and test images "
                           "-0.06 pp to +0.12 pp")
    assert "TOST across seeds p = 0.01" in text


def test_equivalent_is_refused_when_the_holm_adjusted_tost_is_not_below_5_percent(workspace, monkeypatch):
    pair = pair_with(workspace, monkeypatch, "test_loss", paired=paired(0.0002, -0.0003, 0.0007, 0.4), holm_p=0.9,
                     tost=stats.Tost(0.005, 0.01), equivalence=seeds_and_test(-0.001, 0.002, 0.004, 0.005),
                     tost_holm_p=0.06, margin=0.005)
    assert not conclusions.equivalent(pair.metrics["test_loss"])
    text = conclusions.difference_sentence(measures.METRIC["test_loss"], pair, 3, 10_000)
    assert text.startswith("Inconclusive for test loss")
    assert conclusions.equivalent(dataclasses.replace(pair.metrics["test_loss"], tost_holm_p=0.04))


def test_a_different_metric_names_the_better_arm_by_direction_using_the_adjusted_p(workspace, monkeypatch):
    pair = pair_with(workspace, monkeypatch, "test_loss", paired=paired(-0.003, -0.005, -0.001, 0.01), holm_p=0.03,
                     tost=stats.Tost(0.005, 0.6))
    loss = conclusions.difference_sentence(measures.METRIC["test_loss"], pair, 3)
    assert loss.startswith("Different: Keras has the better test loss than PyTorch")  # lower loss is better
    adjusted_away = pair_with(workspace, monkeypatch, "test_loss", paired=paired(-0.003, -0.005, -0.001, 0.01),
                              holm_p=0.07, tost=stats.Tost(0.005, 0.6))
    assert conclusions.difference_sentence(measures.METRIC["test_loss"], adjusted_away, 3).startswith("Inconclusive")


def test_an_inconclusive_difference_says_what_would_settle_it(workspace, monkeypatch):
    needed = power.SeedsForVerdict("equivalence", 6, 3, 40)
    pair = pair_with(workspace, monkeypatch, "test_accuracy", paired=paired(-0.0002, -0.001, 0.0006, 0.4),
                     holm_p=0.9, tost=stats.Tost(0.001, 0.13), detectable=0.001, seeds=needed,
                     equivalence=seeds_and_test(-0.0011, 0.0007, 0.2), tost_holm_p=1.0,
                     floor=power.Floor(0.0002, 0.00056), test_error=0.0002)
    text = conclusions.difference_sentence(measures.METRIC["test_accuracy"], pair, 3, 10_000)
    assert text.startswith("Inconclusive for test accuracy: not shown different, nor equivalent within ±0.10 pp")
    assert "only a difference of 0.10 pp or more is detected at 80% power" in text
    assert ("about 6 seeds (3 to 40 over the 95% interval of the seed-to-seed spread) would show equivalence with "
            "80% power") in text
    assert "no number of seeds" not in text  # 0.02 pp + 1.645 x 0.02 pp = 0.053 pp, inside the 0.10 pp margin
    floored = pair_with(workspace, monkeypatch, "test_accuracy", paired=paired(-0.0002, -0.001, 0.0006, 0.4),
                        holm_p=0.9, tost=stats.Tost(0.0005, 0.5), margin=0.0005, seeds=needed,
                        equivalence=seeds_and_test(-0.0011, 0.0007, 0.5, 0.0005), tost_holm_p=1.0,
                        floor=power.Floor(0.00035, 0.00098), test_error=0.00035)
    assert ("no number of seeds shows equivalence within ±0.05 pp: the test set cannot resolve differences below "
            "0.06 pp") in conclusions.difference_sentence(measures.METRIC["test_accuracy"], floored, 3, 10_000)
    beyond = dataclasses.replace(needed, verdict="difference", high=None)
    detect = pair_with(workspace, monkeypatch, "test_accuracy", paired=paired(-0.0008, -0.002, 0.0004, 0.2),
                       holm_p=0.9, seeds=beyond, floor=power.Floor(0.00035, 0.00098))
    assert ("(3 to more than 1,000 over the 95% interval of the seed-to-seed spread) would detect the difference"
            in (text := conclusions.difference_sentence(measures.METRIC["test_accuracy"], detect, 3, 10_000)))
    assert "no number of seeds detects less than 0.10 pp (the test set's floor)" in text


def test_one_seed_says_intervals_need_two(workspace, monkeypatch):
    pair = pair_with(workspace, monkeypatch, "test_accuracy",
                     paired=stats.Paired((0.001,), 0.001, None, None), holm_p=None, tost=None)
    text = conclusions.difference_sentence(measures.METRIC["test_accuracy"], pair, 1)
    assert "from one seed" in text and "at least two seeds" in text


def test_one_holm_family_covers_every_pair_metric_and_tost_of_the_report(workspace, monkeypatch):
    results = load(workspace, ["keras", "torch", "numpy"], [1, 2, 3], monkeypatch)
    comparison = compare.compare(results, generated.labels().astype(np.int64), settings(workspace))
    raw, adjusted = [], []
    for pair in comparison.pairs:
        quality = [item for key, item in pair.metrics.items() if measures.METRIC[key].compare == "difference"]
        raw += [item.paired.p_value for item in quality] + [item.verdict_tost_p for item in quality]
        adjusted += [item.holm_p for item in quality] + [item.tost_holm_p for item in quality]
        for item in quality:  # the quality verdicts rest on the seeds-and-test TOST
            assert item.equivalence is not None and item.verdict_tost_p == item.equivalence.p_value != item.tost.p_value
        # speeds over seeds are not tested: speed verdicts come from the timing stage's sittings
        assert all(item.holm_p is None for key, item in pair.metrics.items() if measures.METRIC[key].compare == "ratio")
        assert pair.time_to_target_holm_p is None
    assert len(raw) == comparison.family == 3 * 2 * 3 == 18
    assert adjusted == pytest.approx(stats.holm(raw))
    # per pair only, the smallest p would be multiplied by 6, not 18: the family is the whole report
    smallest = min(range(len(raw)), key=raw.__getitem__)
    assert adjusted[smallest] == pytest.approx(min(1.0, 18 * raw[smallest]))
    text = markdown.family_text(comparison)
    assert "one family of 18 tests over the whole report: 3 pairs of frameworks" in text


def test_the_bootstrap_resamples_grow_with_the_family():
    assert resampling.resamples_for(6) == resampling.RESAMPLES
    assert arms.tests_per_pair(measures.METRICS) == 6  # a paired test and a TOST per quality metric
    # forty pairs of 6 tests: the smallest bootstrap p, 1 / (resamples + 1), times 240 stays below 0.025
    resamples = resampling.resamples_for(40 * arms.tests_per_pair(measures.METRICS))
    assert 240 / (resamples + 1) < 0.025 <= 240 / resamples


def test_time_to_target_is_compared_and_censoring_is_shown(workspace, monkeypatch):
    results = load(workspace, ["keras", "torch"], [1, 2, 3], monkeypatch)
    pair = compare.compare(results, generated.labels().astype(np.int64), settings(workspace)).pairs[0]
    ttt = pair.time_to_target  # target 0.93: reached at epoch 2 of 3 (20 + 0.1 s and 25 + 0.1 s per 3 epochs)
    assert [item.epochs for item in ttt.first] == [2, 2, 2]
    assert ttt.seconds.per_seed == pytest.approx([(20 + 0.1 * s) / (25 + 0.1 * s) for s in (1, 2, 3)])
    strict = dataclasses.replace(settings(workspace), target_val_accuracy=0.95)  # epoch 3 reaches 0.96 ...
    curve = workspace / paths.logs_dir("torch", 2) / "plots/metrics/val/accuracy.tsv"
    curve.write_text("step\taccuracy\n1\t0.90\n2\t0.92\n3\t0.94\n")  # ... except torch seed 2
    results = load(workspace, ["keras", "torch"], [1, 2, 3], monkeypatch)
    pair = compare.compare(results, generated.labels().astype(np.int64), strict).pairs[0]
    assert pair.time_to_target.seconds is None and pair.time_to_target_holm_p is None
    assert pair.time_to_target.second[1].text() == "not reached in 3 epochs (> 25.2 s)"
    assert pair.time_to_target.bounds[1] == f"< {20.2 / 25.2:.2f}"


def test_summary_metrics_are_few_and_numeric(workspace, monkeypatch):
    results = load(workspace, ["keras", "torch"], [1, 2, 3], monkeypatch)
    comparison = compare.compare(results, generated.labels().astype(np.int64), settings(workspace))
    summary = compare.summary_metrics(comparison)
    assert set(summary) == {"seeds", "holm_family", "keras", "torch", "keras_vs_torch"}
    assert summary["holm_family"] == 2 * 3  # a paired test and a TOST per quality metric
    assert set(summary["keras"]) == {"test_accuracy", "test_accuracy_ci95", "train_seconds", "train_seconds_ci_low",
                                     "train_seconds_ci_high"}
    assert 0 < summary["keras"]["train_seconds_ci_low"] < summary["keras"]["train_seconds_ci_high"]
    assert set(summary["keras_vs_torch"]) == {"accuracy_diff_pp", "accuracy_diff_pp_ci95", "accuracy_diff_p",
                                              "accuracy_diff_p_holm", "accuracy_ci90_seeds_test_low_pp",
                                              "accuracy_ci90_seeds_test_high_pp", "accuracy_tost_p",
                                              "accuracy_tost_p_holm", "test_loss_tost_p", "macro_f1_tost_p",
                                              "train_time_ratio", "train_time_ratio_ci_low", "train_time_ratio_ci_high"}
    entry, accuracy = summary["keras_vs_torch"], comparison.pairs[0].metrics["test_accuracy"]
    assert entry["accuracy_diff_pp"] == pytest.approx(-2.5)
    assert entry["accuracy_tost_p"] == pytest.approx(accuracy.equivalence.p_value, rel=1e-5)  # seeds + test
    assert entry["accuracy_ci90_seeds_test_high_pp"] == pytest.approx(100 * accuracy.equivalence.interval.high,
                                                                      rel=1e-5)


def test_summary_metrics_of_one_seed_carry_no_intervals(workspace, monkeypatch):
    results = load(workspace, ["keras", "torch"], [1], monkeypatch)
    comparison = compare.compare(results, generated.labels().astype(np.int64), settings(workspace))
    summary = compare.summary_metrics(comparison)
    assert set(summary["keras"]) == {"test_accuracy", "train_seconds"}
    assert summary["holm_family"] == 0
    assert set(summary["keras_vs_torch"]) == {"accuracy_diff_pp", "train_time_ratio"}


def test_a_quality_difference_the_test_set_cannot_tell_says_so(workspace, monkeypatch):
    pair = pair_with(workspace, monkeypatch, "macro_f1", paired=paired(0.0001, 0.00005, 0.00015, 0.02), holm_p=0.04,
                     resampled=stats.Interval(-0.002, 0.003))
    text = conclusions.difference_sentence(measures.METRIC["macro_f1"], pair, 3)
    assert text.startswith("Different: Keras has the better macro F1")
    assert "over seeds and test images together -0.0020 to +0.0030" in text
    assert "the interval includes 0: the test set cannot tell the difference from chance" in text
    clear = pair_with(workspace, monkeypatch, "macro_f1", paired=paired(0.0001, 0.00005, 0.00015, 0.02), holm_p=0.04,
                      resampled=stats.Interval(0.00001, 0.0003))
    assert "cannot tell" not in conclusions.difference_sentence(measures.METRIC["macro_f1"], clear, 3)
