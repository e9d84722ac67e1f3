"""The committed report's Keras-PyTorch comparison, recomputed independently with scipy from the
committed per-seed files (``eval/<fw>/<seed>/metrics.json``, ``dvclive/<fw>/<seed>/metrics.json``):
the paired differences and ratios, their t intervals, the raw and Holm-adjusted p-values, the TOST
p-value at the default margin, the detectable difference at 80% power and the seeds the margin
needs; and, where DVC's cache holds the per-image predictions (after `make run` or `dvc pull`),
the seeds-and-test-set interval by a two-level bootstrap written by hand."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from scipy import optimize, stats

from tests.support import PROJECT_ROOT, project_params

SEEDS = project_params()["replicates"]["seeds"]
MARGIN_PP = project_params()["report"]["equivalence"]["accuracy_pp"]
# table row -> (file, key, compared as a difference (scale) or a ratio (None))
ROWS = {
    "Test accuracy": ("eval", "test_accuracy", 100.0),
    "Test loss (cross-entropy)": ("eval", "test_loss", 1.0),
    "Macro F1": ("eval", "macro_f1", 1.0),
    "Training time (s)": ("dvclive", "train_seconds", None),
    "Training throughput (images/s)": ("dvclive", "images_per_second", None),
    "Inference throughput (images/s)": ("eval", "throughput_images_per_second", None),
    "Latency, one image, median (ms)": ("eval", "latency_ms_median", None),
    "Time to 99% val. accuracy (s)": ("dvclive", "seconds_to_val_accuracy_99", None),
}


def per_seed(folder: str, framework: str, key: str) -> np.ndarray:
    return np.array([json.loads((PROJECT_ROOT / folder / framework / str(seed) / "metrics.json").read_text())[key]
                     for seed in SEEDS], dtype=float)


def paired(row: str) -> np.ndarray:
    """Per-seed Keras - PyTorch differences (scaled), or log ratios."""
    folder, key, scale = ROWS[row]
    keras, torch = per_seed(folder, "keras", key), per_seed(folder, "torch", key)
    return (keras - torch) * scale if scale is not None else np.log(keras) - np.log(torch)


def table() -> dict[str, list[str]]:
    text = (PROJECT_ROOT / "reports" / "report.md").read_text(encoding="utf-8")
    section = text.split("## Keras vs PyTorch\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if cells and cells[0] in ROWS:
            rows[cells[0]] = cells
    assert set(rows) == set(ROWS)
    return rows


def number(cell: str) -> float:
    return float(re.search(r"[-+]?\d+(?:\.\d+)?", cell.replace(",", ""))[0])


def close(shown: str, value: float, digits: int = 2) -> bool:
    """``shown`` is ``value`` as the report rounds it (2 significant digits for p-values)."""
    if value >= 0.9995 and number(shown) == 1:
        return True
    return math.isclose(number(shown), float(f"{value:.{digits}g}"), rel_tol=1e-9, abs_tol=1e-12)


def power(delta: float, sd: float, n: int) -> float:
    """Two-sided paired t-test at 5%, by the noncentral t distribution."""
    df, noncentrality = n - 1, delta / (sd / math.sqrt(n))
    critical = stats.t.ppf(0.975, df)
    upper = float(stats.nct.sf(critical, df, noncentrality))
    return (1.0 if math.isnan(upper) else upper) + float(np.nan_to_num(stats.nct.cdf(-critical, df, noncentrality)))


def test_raw_and_holm_adjusted_p_values_are_scipys():
    rows = table()
    raw = {row: float(stats.ttest_rel(paired(row), np.zeros(len(SEEDS))).pvalue) for row in ROWS}
    for row, p in raw.items():
        assert close(rows[row][5], p), (row, rows[row][5], p)
    # Holm over the table's rows, by hand: the k-th smallest times (m - k + 1), kept monotone, capped at 1.
    ordered, adjusted, running = sorted(raw, key=raw.get), {}, 0.0
    for k, row in enumerate(ordered):
        running = max(running, min(1.0, (len(raw) - k) * raw[row]))
        adjusted[row] = running
    for row in ROWS:
        assert close(rows[row][6], adjusted[row]), (row, rows[row][6], adjusted[row])


def test_the_accuracy_difference_its_interval_and_tost_are_scipys():
    cells, differences = table()["Test accuracy"], paired("Test accuracy")
    n, mean, sem = len(differences), differences.mean(), stats.sem(differences)
    low, high = stats.t.interval(0.95, n - 1, loc=mean, scale=sem)
    assert number(cells[2]) == pytest.approx(round(mean, 2), abs=1e-9)
    low_shown, high_shown = (float(value) for value in re.findall(r"[-+]?\d+\.\d+", cells[3]))
    assert (low_shown, high_shown) == pytest.approx((round(low, 2), round(high, 2)), abs=1e-9)
    tost = max(stats.ttest_1samp(differences, -MARGIN_PP, alternative="greater").pvalue,
               stats.ttest_1samp(differences, MARGIN_PP, alternative="less").pvalue)
    assert close(cells[8].split()[0], tost), (cells[8], tost)
    assert f"±{MARGIN_PP:.2f} pp" in cells[8]


def test_the_detectable_difference_and_the_seeds_for_the_margin_are_the_noncentral_ts():
    cells, differences = table()["Test accuracy"], paired("Test accuracy")
    n, sd = len(differences), float(np.std(differences, ddof=1))
    detectable = optimize.brentq(lambda delta: power(delta, sd, n) - 0.8, 1e-9, 12 * sd / math.sqrt(n))
    assert number(cells[9]) == pytest.approx(round(detectable, 2), abs=1e-9)
    seeds = next(count for count in range(2, 10_000) if power(MARGIN_PP, sd, count) >= 0.8)
    assert int(cells[10]) == seeds


def test_the_seeds_and_test_set_interval_is_a_two_level_bootstrap():
    """Recomputed by hand (numpy, another random stream): resample the seeds and, with them, the
    test images within each class; the percentile interval of the mean accuracy difference agrees
    with the committed one to within the Monte Carlo error of 2,000 resamples (0.02 pp). Needs the
    per-image predictions, which DVC's cache holds (after `make run` or `dvc pull`)."""
    paths = [PROJECT_ROOT / "eval" / framework / str(seed) / "predictions.npy"
             for framework in ("keras", "torch") for seed in SEEDS]
    labels_path = PROJECT_ROOT / "data" / "prepared" / "test_labels.npy"
    if not labels_path.is_file() or not all(path.is_file() for path in paths):
        pytest.skip("the per-image predictions are in DVC's cache, not in git: run `make run` or `dvc pull`")
    labels = np.load(labels_path)
    correct = {framework: np.stack([np.load(PROJECT_ROOT / "eval" / framework / str(seed) / "predictions.npy")
                                    .argmax(axis=1) == labels for seed in SEEDS]).astype(float)
               for framework in ("keras", "torch")}
    difference = 100 * (correct["keras"] - correct["torch"])  # (seeds, images), pp
    classes = [np.flatnonzero(labels == label) for label in np.unique(labels)]
    rng = np.random.default_rng(12345)
    means = []
    for _ in range(2000):
        seeds = rng.integers(0, len(SEEDS), len(SEEDS))
        images = np.concatenate([rng.choice(members, members.size) for members in classes])
        means.append(difference[np.ix_(seeds, images)].mean())
    low, high = np.percentile(means, [2.5, 97.5])
    shown = [float(value) for value in re.findall(r"[-+]?\d+\.\d+", table()["Test accuracy"][4])]
    assert shown == pytest.approx([low, high], abs=0.02)
