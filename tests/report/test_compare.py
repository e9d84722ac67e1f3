"""stages/report/compare.py: what is compared, the sentences, and the top-level metrics."""

from __future__ import annotations

import numpy as np
import pytest

from stages import backends
from stages.report import compare, inputs, stats
from tests.report import generated


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    monkeypatch.setitem(backends.REGISTRY, "numpy", ("tests.numpy_backend", "NumPy"))
    return generated.write_workspace(tmp_path, ("keras", "torch", "numpy"), (1, 2, 3))


def load(root, frameworks, seeds, monkeypatch):
    monkeypatch.chdir(root)
    return inputs.load_all(frameworks, seeds, generated.labels().astype(np.int64), [f"class {i}" for i in range(10)])


def test_every_pair_is_compared_with_known_mcnemar_counts(workspace, monkeypatch):
    results = load(workspace, ["keras", "torch", "numpy"], [1, 2, 3], monkeypatch)
    comparison = compare.compare(results, generated.labels().astype(np.int64))
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
    comparison = compare.compare(results, generated.labels().astype(np.int64))
    ratio = comparison.pairs[0].paired["train_seconds"]
    expected = [(20.0 + 0.1 * seed) / (25.0 + 0.1 * seed) for seed in (1, 2, 3)]
    assert ratio.per_seed == pytest.approx(expected)
    sentence = compare.ratio_sentence(compare.METRIC["train_seconds"], comparison.pairs[0], 3)
    assert sentence.startswith("Keras is 1.2") and "as fast as PyTorch in training time" in sentence
    assert "95% CI" in sentence and "on this machine" in sentence


def paired_result(estimate, low, high, p_value, first="keras", second="torch", key="test_accuracy"):
    paired = stats.Paired((estimate,), estimate, None if low is None else stats.Interval(low, high, "x"), p_value)
    return compare.PairResult(first, second, {key: paired}, [], [])


def test_a_difference_whose_interval_covers_zero_is_reported_as_no_difference():
    text = compare.difference_sentence(compare.METRIC["test_accuracy"], paired_result(0.0005, -0.001, 0.002, 0.4), 3)
    assert text.startswith("No significant difference in test accuracy between Keras and PyTorch: +0.05 pp")
    assert "95% CI -0.10 to +0.20 pp across 3 seeds" in text and "p = 0.4" in text


def test_a_significant_difference_names_the_better_framework_by_direction():
    accuracy = compare.difference_sentence(compare.METRIC["test_accuracy"],
                                           paired_result(-0.003, -0.005, -0.001, 0.01), 3)
    assert accuracy.startswith("PyTorch has the better test accuracy than Keras")
    loss = compare.difference_sentence(compare.METRIC["test_loss"],
                                       paired_result(-0.003, -0.005, -0.001, 0.01, key="test_loss"), 3)
    assert loss.startswith("Keras has the better test loss")  # lower loss is better


def test_one_seed_says_intervals_need_two():
    text = compare.difference_sentence(compare.METRIC["test_accuracy"], paired_result(0.001, None, None, None), 1)
    assert "from one seed" in text and "at least two seeds" in text


def test_a_speed_difference_within_the_timing_noise_names_no_winner():
    pair = paired_result(1.08, 1.05, 1.11, 0.001, key="inference_images_per_second")
    noisy = compare.ratio_sentence(compare.METRIC["inference_images_per_second"], pair, 3, noise=0.10)
    assert "within the 10% spread between repeated timings: no winner" in noisy
    quiet = compare.ratio_sentence(compare.METRIC["inference_images_per_second"], pair, 3, noise=0.02)
    assert quiet.startswith("Keras is 1.08x as fast as PyTorch in inference throughput")


def test_summary_metrics_are_few_and_numeric(workspace, monkeypatch):
    results = load(workspace, ["keras", "torch"], [1, 2, 3], monkeypatch)
    summary = compare.summary_metrics(compare.compare(results, generated.labels().astype(np.int64)))
    assert set(summary) == {"seeds", "keras", "torch", "keras_vs_torch"}
    assert set(summary["keras"]) == {"test_accuracy", "test_accuracy_ci95", "train_seconds", "train_seconds_ci95"}
    assert set(summary["keras_vs_torch"]) == {"accuracy_diff_pp", "accuracy_diff_pp_ci95", "accuracy_diff_p",
                                              "train_time_ratio", "train_time_ratio_ci_low",
                                              "train_time_ratio_ci_high"}
    assert summary["keras_vs_torch"]["accuracy_diff_pp"] == pytest.approx(-2.5)


def test_summary_metrics_of_one_seed_carry_no_intervals(workspace, monkeypatch):
    results = load(workspace, ["keras", "torch"], [1], monkeypatch)
    summary = compare.summary_metrics(compare.compare(results, generated.labels().astype(np.int64)))
    assert set(summary["keras"]) == {"test_accuracy", "train_seconds"}
    assert set(summary["keras_vs_torch"]) == {"accuracy_diff_pp", "train_time_ratio"}


def test_a_quality_difference_the_test_set_cannot_tell_says_so():
    pair = paired_result(0.0001, 0.00005, 0.00015, 0.02, key="macro_f1")
    pair.mcnemar.extend([stats.McNemar(2, 1, 1.0), stats.McNemar(1, 0, 1.0)])
    text = compare.test_set_caveat(pair)
    assert "in no seed does the exact McNemar test" in text and "at most 3 discordant" in text
    pair.mcnemar.append(stats.McNemar(30, 5, 0.0001))
    assert compare.test_set_caveat(pair) == ""
