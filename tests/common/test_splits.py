"""The validation split's count rule, and the smallest pool that guarantees it an image."""

from __future__ import annotations

import numpy as np
import pytest

from stages.common.errors import StageError
from stages.common.splits import pool_problem, smallest_safe_pool, val_count
from stages.preprocess.__main__ import stratified_split


@pytest.mark.parametrize(("members", "fraction", "count"), [(10, 0.1, 1), (5, 0.1, 0), (6, 0.1, 1), (15, 0.1, 2),
                                                            (1, 0.5, 0), (3, 0.5, 2), (60000, 0.1, 6000)])
def test_val_count_rounds_each_class_share(members, fraction, count):
    assert val_count(members, fraction) == count


@pytest.mark.parametrize(("classes", "fraction"), [(10, 0.1), (10, 0.5), (2, 0.25), (3, 0.01), (10, 1e-6), (7, 0.3)])
def test_the_safe_pool_is_exactly_the_fewest_images_that_always_give_a_validation_image(classes, fraction):
    need = smallest_safe_pool(classes, fraction)
    short = (need - 1) // classes  # one image short of a validation image in every class: empty
    labels = np.repeat(np.arange(classes), short)
    with pytest.raises(StageError, match="empty split"):
        stratified_split(labels, fraction, np.random.default_rng(0), classes)
    rng = np.random.default_rng(1)
    for _ in range(20):  # however `need` images fall into the classes, the validation split has one
        labels = rng.integers(0, classes, size=need)
        if rng.random() < 0.5:
            labels[:-1] = np.repeat(np.arange(classes), short)
        _, val = stratified_split(labels, fraction, rng, classes)
        assert val.size >= 1
    assert pool_problem(need, classes, fraction) is None
    assert pool_problem(need - 1, classes, fraction) is not None
