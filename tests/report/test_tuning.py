"""What tuning buys (stages/report/tuning.py): the verdict on accuracy, the ratios' direction."""

from __future__ import annotations

from stages.report import stats, tuning


def test_tuning_that_leaves_every_seed_alone_is_unchanged():
    assert tuning._accuracy_verdict(stats.paired_difference([0.99, 0.98], [0.99, 0.98])).startswith("unchanged")


def test_a_difference_whose_interval_includes_zero_is_within_the_noise():
    paired = stats.paired_difference([0.991, 0.989, 0.990], [0.990, 0.990, 0.9905])
    assert paired.ci.low < 0 < paired.ci.high
    assert tuning._accuracy_verdict(paired).startswith("within the noise")


def test_a_difference_whose_interval_excludes_zero_moved_beyond_the_noise():
    paired = stats.paired_difference([0.995, 0.996, 0.9955], [0.990, 0.9905, 0.9901])
    assert paired.ci.low > 0
    assert tuning._accuracy_verdict(paired).startswith("moved beyond the noise")


def test_ratio_cells_read_tuned_over_stock():
    paired = stats.paired_ratio([8.0, 8.0], [10.0, 10.0])  # tuned 8 s, stock 10 s
    assert tuning._ratio_cell(paired).startswith("0.80x")
