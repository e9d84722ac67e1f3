"""How many validation images each class gives (``stages/preprocess/__main__.py`` carves the split with
it), and what params alone decide about the split (``stages/validate.py`` refuses it first).

The validation split is stratified: a class of ``n`` training images gives ``round(n *
val_fraction)`` of them. Which classes the ``preprocess.max_train`` images fall into depends on
the data, but not whether the split can come out empty: that takes every class one image short
of a validation image, so a pool of one image more than that always gives one.
"""

from __future__ import annotations


def val_count(members: int, fraction: float) -> int:
    """Validation images taken from a class of ``members`` training images."""
    return int(round(members * fraction))


def _largest_class_without_validation(fraction: float) -> int:
    size = int(0.5 / fraction) + 2  # (0.5 / f + 1) * f > 0.5: at least one validation image
    while size > 0 and val_count(size, fraction) > 0:
        size -= 1
    return size


def smallest_safe_pool(num_classes: int, fraction: float) -> int:
    """The fewest training images that give the validation split an image however they fall into
    ``num_classes`` classes."""
    return num_classes * _largest_class_without_validation(fraction) + 1


def pool_problem(pool: int, num_classes: int, fraction: float) -> str | None:
    """Why ``preprocess.max_train: pool`` can leave the validation split empty, or None."""
    need = smallest_safe_pool(num_classes, fraction)
    if pool >= need:
        return None
    return (f"preprocess.max_train: {pool} training images over {num_classes} classes can leave the validation "
            f"split empty (at val_fraction {fraction} a class needs {_largest_class_without_validation(fraction) + 1} "
            f"images for one validation image); use at least {need}, or a larger preprocess.val_fraction")
