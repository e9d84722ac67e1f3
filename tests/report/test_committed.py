"""The committed reports, recomputed independently with scipy from the committed per-seed files
(``eval/<fw>/<seed>/metrics.json``, ``dvclive/<fw>/<seed>/metrics.json``) and the report's own
``metrics.json``: for the Keras-PyTorch comparison the paired differences and ratios, their t
intervals, the raw p-values and their Holm adjustment over the report's one family (every
metric's paired test and TOST, time to accuracy), the TOST across seeds, the detectable difference
at 80% power and the seeds the verdict within reach needs; where DVC's cache holds the per-image
predictions (after `make run` or `dvc pull`), the seeds-and-test-set intervals and TOST by a
two-level bootstrap written by hand. And for every committed report (``reports/``,
``results/every-framework/``): no "Equivalent" quality verdict whose 90% interval over seeds and
test images crosses its margin, and one Holm family that covers every pair."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from scipy import integrate, optimize, stats

from tests.support import PROJECT_ROOT, made_by_current_report_code, project_params

SEEDS = project_params()["replicates"]["seeds"]
MARGINS = project_params()["report"]["equivalence"]
MARGIN_PP = MARGINS["accuracy_pp"]
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
QUALITY = {"Test accuracy": "accuracy_tost_p", "Test loss (cross-entropy)": "test_loss_tost_p",
           "Macro F1": "macro_f1_tost_p"}  # row -> its seeds-and-test TOST p in metrics.json
# columns of the pair table
ESTIMATE, CI_SEEDS, CI_BOTH, CI90_BOTH, P, HOLM, MARGIN, TOST_SEEDS, TOST_BOTH, TOST_HOLM, DETECTABLE, SEEDS_NEEDED = \
    range(2, 14)
# Every committed report that the current report code wrote: a results folder from an earlier revision
# keeps that revision's rules, and the README says so (tests/test_results.py).
REPORTS = tuple(folder for folder in ("reports", "results/every-framework")
                if made_by_current_report_code(PROJECT_ROOT / folder))


def per_seed(folder: str, framework: str, key: str) -> np.ndarray:
    return np.array([json.loads((PROJECT_ROOT / folder / framework / str(seed) / "metrics.json").read_text())[key]
                     for seed in SEEDS], dtype=float)


def paired(row: str) -> np.ndarray:
    """Per-seed Keras - PyTorch differences (scaled), or log ratios."""
    folder, key, scale = ROWS[row]
    keras, torch = per_seed(folder, "keras", key), per_seed(folder, "torch", key)
    return (keras - torch) * scale if scale is not None else np.log(keras) - np.log(torch)


def table(folder: str = "reports", heading: str = "Keras vs PyTorch") -> dict[str, list[str]]:
    text = (PROJECT_ROOT / folder / "report.md").read_text(encoding="utf-8")
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if cells and cells[0] in ROWS:
            rows[cells[0]] = cells
    assert set(rows) == set(ROWS)
    return rows


def summary(folder: str = "reports") -> dict:
    return json.loads((PROJECT_ROOT / folder / "metrics.json").read_text(encoding="utf-8"))


def number(cell: str) -> float:
    return float(re.search(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?", cell.replace(",", ""))[0])  # 3.5e-05 too


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


def holm_by_hand(raw: dict) -> dict:
    """The k-th smallest of m times (m - k + 1), kept monotone, capped at 1."""
    ordered, adjusted, running = sorted(raw, key=raw.get), {}, 0.0
    for k, key in enumerate(ordered):
        running = max(running, min(1.0, (len(raw) - k) * raw[key]))
        adjusted[key] = running
    return adjusted


def tost_seeds(values: np.ndarray, margin: float) -> float:
    return float(max(stats.ttest_1samp(values, -margin, alternative="greater").pvalue,
                     stats.ttest_1samp(values, margin, alternative="less").pvalue))


def test_raw_p_values_and_their_holm_adjustment_over_the_reports_family_are_scipys():
    rows, numbers = table(), summary()
    raw = {("t", row): float(stats.ttest_rel(paired(row), np.zeros(len(SEEDS))).pvalue) for row in ROWS}
    for row in ROWS:
        assert close(rows[row][P], raw["t", row]), (row, rows[row][P], raw["t", row])
    # the family: the quality verdicts' paired tests and TOSTs (over seeds and test images: the report's own
    # full-precision values); speeds over seeds are shown, not tested (their verdicts come from the sittings)
    pair = numbers["keras_vs_torch"]
    family = {("t", row): raw["t", row] for row in QUALITY} | {("tost", row): pair[key] for row, key in QUALITY.items()}
    assert numbers["holm_family"] == len(family) == 6
    adjusted = holm_by_hand(family)
    for row in QUALITY:
        assert close(rows[row][HOLM], adjusted["t", row]), (row, rows[row][HOLM], adjusted["t", row])
        assert close(rows[row][TOST_HOLM], adjusted["tost", row]), (row, rows[row][TOST_HOLM], adjusted["tost", row])
        assert close(rows[row][TOST_BOTH], family["tost", row])
    for row in list(ROWS)[3:7]:
        assert rows[row][HOLM] == "-" and close(rows[row][TOST_SEEDS],
                                                tost_seeds(paired(row), math.log(MARGINS["speed_ratio"])))
    assert pair["accuracy_tost_p_holm"] == pytest.approx(adjusted["tost", "Test accuracy"], rel=1e-5)


def test_the_accuracy_difference_its_interval_and_the_tost_across_seeds_are_scipys():
    cells, differences = table()["Test accuracy"], paired("Test accuracy")
    n, mean, sem = len(differences), differences.mean(), stats.sem(differences)
    low, high = stats.t.interval(0.95, n - 1, loc=mean, scale=sem)
    assert number(cells[ESTIMATE]) == pytest.approx(round(mean, 2), abs=1e-9)
    low_shown, high_shown = (float(value) for value in re.findall(r"[-+]?\d+\.\d+", cells[CI_SEEDS]))
    assert (low_shown, high_shown) == pytest.approx((round(low, 2), round(high, 2)), abs=1e-9)
    assert close(cells[TOST_SEEDS], tost_seeds(differences, MARGIN_PP)), (cells[TOST_SEEDS],)
    assert cells[MARGIN] == f"±{MARGIN_PP:.2f} pp"


def tost_power(delta: float, sd: float, n: int, margin: float) -> float:
    """TOST at 5% over n seeds: the chance the 90% t interval lies inside the margin, integrated over
    the sample standard deviation s (s * sqrt(df) / sd follows the chi distribution)."""
    df, error = n - 1, sd / math.sqrt(n)
    critical = stats.t.ppf(0.95, df)

    def inside(s: float) -> float:
        half = critical * s / math.sqrt(n)
        if half >= margin:
            return 0.0
        probability = stats.norm.cdf((margin - half - delta) / error) - stats.norm.cdf((-margin + half - delta) / error)
        return float(probability * stats.chi.pdf(s * math.sqrt(df) / sd, df) * math.sqrt(df) / sd)
    return integrate.quad(inside, 0, margin * math.sqrt(n) / critical, limit=200)[0]


def test_the_detectable_difference_and_the_seeds_needed_are_scipys():
    cells, differences = table()["Test accuracy"], paired("Test accuracy")
    n, sd, mean = len(differences), float(np.std(differences, ddof=1)), float(differences.mean())
    detectable = optimize.brentq(lambda delta: power(delta, sd, n) - 0.8, 1e-9, 12 * sd / math.sqrt(n))
    assert number(cells[DETECTABLE]) == pytest.approx(round(detectable, 2), abs=1e-9)
    spreads = [sd * math.sqrt((n - 1) / stats.chi2.ppf(q, n - 1)) for q in (0.975, 0.025)]  # chi-square 95% of sd
    if abs(mean) < MARGIN_PP:  # equivalence is within reach: TOST power
        def enough(count: int, spread: float) -> bool:
            return tost_power(mean, spread, count, MARGIN_PP) >= 0.8
        sought = "equivalence"
    else:
        def enough(count: int, spread: float) -> bool:
            return power(mean, spread, count) >= 0.8
        sought = "difference"
    seeds = [next((count for count in range(2, 1001) if enough(count, spread)), None)
             for spread in (sd, *spreads)]
    shown = re.fullmatch(r"(\w+): (\S+) \((\S+)-(\S+)\)", cells[SEEDS_NEEDED])
    assert shown[1] == sought
    assert [None if value.startswith(">") else int(value.replace(",", "")) for value in shown.groups()[1:]] == seeds


def test_the_seeds_and_test_set_intervals_and_tost_are_a_two_level_bootstrap():
    """Recomputed by hand (numpy, another random stream): resample the seeds and, with them, the
    test images within each class; the percentile intervals of the mean accuracy difference and the
    TOST p (the larger share of resamples beyond either end of the margin) agree with the committed
    ones to within the Monte Carlo error of 2,000 resamples. Needs the per-image predictions, which
    DVC's cache holds (after `make run` or `dvc pull`)."""
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
    cells, pair = table()["Test accuracy"], summary()["keras_vs_torch"]
    for column, level in ((CI_BOTH, 95), (CI90_BOTH, 90)):
        shown = [float(value) for value in re.findall(r"[-+]?\d+\.\d+", cells[column])]
        assert shown == pytest.approx(np.percentile(means, [50 - level / 2, 50 + level / 2]), abs=0.02)
    means = np.array(means)
    tail = max(np.mean(means <= -MARGIN_PP), np.mean(means >= MARGIN_PP))
    assert pair["accuracy_tost_p"] == pytest.approx(tail, abs=0.015)


# ---------------------------------------------------------------- every committed report
EQUIVALENT = re.compile(r"^- Equivalent: .* in (test accuracy|test loss|macro F1) by more than ±(\S+?)( pp)? "
                        r"\(90% interval over seeds and test images (\S+?)(?: pp)? to (\S+?)(?: pp)?, TOST p")


@pytest.mark.parametrize("folder", REPORTS)
def test_no_equivalent_quality_verdict_has_a_seeds_and_test_interval_crossing_its_margin(folder):
    """Read from the report itself (runs in a fresh clone): each "Equivalent" sentence on accuracy,
    loss or macro F1 must state its 90% interval over seeds and test images, inside its margin."""
    text = (PROJECT_ROOT / folder / "report.md").read_text(encoding="utf-8")
    conclusions = text.split("## Conclusions\n", 1)[1].split("\n## ", 1)[0]
    verdicts = [line for line in conclusions.splitlines()
                if line.startswith("- Equivalent:") and re.search(r" in (test accuracy|test loss|macro F1) by", line)]
    for line in verdicts:
        found = EQUIVALENT.match(line)
        assert found, f"{folder}: an Equivalent quality verdict without its seeds-and-test interval: {line[:160]}"
        margin, low, high = (float(found[index]) for index in (2, 4, 5))
        assert -margin < low and high < margin, line[:200]
    numbers = summary(folder)
    for key, entry in numbers.items():
        if "_vs_" in key and "accuracy_ci90_seeds_test_low_pp" in entry and entry.get("accuracy_tost_p_holm", 1) < 0.05:
            assert -MARGIN_PP < entry["accuracy_ci90_seeds_test_low_pp"] <= \
                entry["accuracy_ci90_seeds_test_high_pp"] < MARGIN_PP, key


@pytest.mark.parametrize("folder", REPORTS)
def test_the_holm_family_covers_every_pair_of_the_report_and_says_so(folder):
    text = (PROJECT_ROOT / folder / "report.md").read_text(encoding="utf-8")
    frameworks = len(re.match(r"# (.*) on ", text)[1].split(" vs "))
    pairs = frameworks * (frameworks - 1) // 2
    size = summary(folder)["holm_family"]
    assert size == pairs * 6  # 3 quality metrics' paired tests and TOSTs (speed verdicts: from the sittings)
    assert (f"one family of {size} tests over the whole report: {pairs} pair{'s' if pairs > 1 else ''} of "
            "frameworks") in text
