"""The report stage on small generated inputs: figures, numbers, disagreements, input errors.

``write_inputs`` lays out everything the earlier stages would have written (prepared test split,
metrics, predictions, per-class scores, dvclive logs) for a fake but self-consistent run, with
a hand-made set of mistakes: Keras is wrong on test images 1, 2, 3, 5 and PyTorch on 3, 4, 5;
on 3 both give the same wrong answer, on 5 different wrong answers. So the frameworks disagree
on 1, 2, 4, 5: Keras right once (4), PyTorch twice (1, 2), neither once (5).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

from stages import report
from stages.common import metrics, prepared
from stages.common.errors import StageError
from tests.support import PROJECT_ROOT, project_params

FASHION_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot"]
NORMALIZE = {"method": "standardize", "mean": 33.3, "std": 78.6}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
KERAS_WRONG = {1: 1, 2: 1, 3: 1, 5: 1}  # test image -> how many classes past the true one the answer is
TORCH_WRONG = {3: 1, 4: 2, 5: 2}


# --------------------------------------------------------------------------------------------
# Generated inputs
# --------------------------------------------------------------------------------------------
def glyph_images(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 (N, size, size) images showing each label's digit, shifted a little, with faint noise."""
    glyphs = []
    for digit in range(10):
        figure = Figure(figsize=(1, 1), dpi=size)
        canvas = FigureCanvasAgg(figure)
        figure.text(0.5, 0.5, str(digit), ha="center", va="center", fontsize=22, fontweight="bold")
        canvas.draw()
        glyphs.append(255 - np.asarray(canvas.buffer_rgba())[..., 0])  # white ink on black, like MNIST
    images = rng.integers(0, 25, size=(labels.shape[0], size, size)).astype(np.int64)
    for index, label in enumerate(labels):
        shifted = np.roll(glyphs[int(label) % 10], tuple(rng.integers(-2, 3, size=2)), axis=(0, 1))
        images[index] = np.maximum(images[index], shifted)
    return images.astype(np.uint8)


def probabilities_for(labels: np.ndarray, wrong: dict[int, int], num_classes: int,
                      rng: np.random.Generator) -> np.ndarray:
    """float32 probabilities whose argmax is the label except at ``wrong``; confidences vary."""
    predicted = labels.astype(np.int64).copy()
    for index, step in wrong.items():
        predicted[index] = (labels[index] + step) % num_classes
    confidence = rng.uniform(0.5, 0.999, size=labels.shape[0])
    rows = np.repeat(((1 - confidence) / (num_classes - 1))[:, None], num_classes, axis=1)
    rows[np.arange(labels.shape[0]), predicted] = confidence
    return rows.astype(np.float32)


def evaluation_files(framework: str, probabilities: np.ndarray, labels: np.ndarray,
                     class_names: list[str], seed: int) -> tuple[dict, dict]:
    """metrics/<framework>.json and eval/<framework>/per_class.json, as the evaluate stage computes them."""
    predicted = probabilities.argmax(axis=1)
    confusion = metrics.confusion_matrix(labels, predicted, len(class_names))
    scores = metrics.per_class_scores(confusion)
    rng = np.random.default_rng(seed)
    summary = {
        "framework": framework,
        "test_images": int(labels.shape[0]),
        "test_accuracy": metrics.accuracy(labels, predicted),
        "test_loss": metrics.cross_entropy(probabilities, labels),
        "macro_precision": float(scores["precision"].mean()),
        "macro_recall": float(scores["recall"].mean()),
        "macro_f1": float(scores["f1"].mean()),
        "throughput_images_per_second": round(float(rng.uniform(5_000, 40_000)), 1),
        "latency_ms_median": round(float(rng.uniform(0.3, 2.0)), 4),
        "latency_ms_p95": round(float(rng.uniform(2.0, 4.0)), 4),
        "parameters": 421_642,
        "model_bytes": int(rng.integers(1_600_000, 5_200_000)),
    }
    per_class = {"class_names": class_names, **{key: value.tolist() for key, value in scores.items()},
                 "confusion": confusion.tolist()}
    return summary, per_class


def write_training_logs(folder: Path, framework: str, epochs: int, rng: np.random.Generator,
                        reaches_99: bool) -> dict:
    """dvclive/<framework>/: one TSV per metric (header ``step<TAB>name``) and the summary."""
    epoch = np.arange(1, epochs + 1)
    curves = {
        "train/loss": 0.25 / epoch ** 1.5 + rng.uniform(0, 0.005, epochs),
        "val/loss": 0.08 / epoch + 0.02 + rng.uniform(0, 0.005, epochs),
        "train/accuracy": 1 - 0.06 / epoch ** 1.5 - rng.uniform(0, 0.002, epochs),
        "val/accuracy": 1 - 0.025 / epoch - 0.006 - rng.uniform(0, 0.002, epochs),
        "learning_rate": 0.003 * np.linspace(1, 0.01, epochs),
        "epoch_seconds": rng.uniform(18, 25, epochs),
    }
    for name, values in curves.items():
        path = folder / "plots" / "metrics" / f"{name}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        metric = name.rsplit("/", 1)[-1]
        path.write_text(f"step\t{metric}\n" + "".join(f"{step}\t{value!r}\n" for step, value in
                                                       zip(epoch.tolist(), values.tolist())), encoding="utf-8")
    train_seconds = float(curves["epoch_seconds"].sum())
    summary = {
        "framework": framework, "device": "cpu", "epochs": epochs,
        "train_loss": float(curves["train/loss"][-1]), "train_accuracy": float(curves["train/accuracy"][-1]),
        "val_loss": float(curves["val/loss"][-1]), "val_accuracy": float(curves["val/accuracy"][-1]),
        "best_val_accuracy": float(curves["val/accuracy"].max()),
        "train_seconds": round(train_seconds, 3), "images_per_second": round(54_000 * epochs / train_seconds, 1),
        "parameters": 421_642,
        "seconds_to_val_accuracy_98": round(float(curves["epoch_seconds"][0]), 3),
        "seconds_to_val_accuracy_99": round(train_seconds, 3) if reaches_99 else None,
        "step": epochs,
    }
    (folder / "metrics.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


def write_inputs(root: Path, *, count: int = 40, epochs: int = 3, class_names: list[str] = FASHION_NAMES,
                 perfect: bool = False, extra_errors: int = 0, seed: int = 0) -> None:
    """Everything the earlier stages write, for a fake run on ``count`` test images, under ``root``."""
    shutil.copy(PROJECT_ROOT / "params.yaml", root / "params.yaml")
    rng = np.random.default_rng(seed)
    num_classes = len(class_names)
    labels = (np.arange(count) % num_classes).astype(np.uint8)
    raw = glyph_images(labels, 28, rng)
    images = ((raw.astype(np.float32) - NORMALIZE["mean"]) / NORMALIZE["std"])[..., None].astype(np.float32)
    split = prepared.Split(images=images, labels=labels)
    meta = prepared.build_meta(dataset="fashion-mnist", class_names=class_names, image_shape=(28, 28, 1),
                               normalize=NORMALIZE, splits={"test": split}, sources={}, seed=42, val_fraction=0.1)
    prepared.save_prepared(root / "data" / "prepared", {"test": split}, meta)
    for index, (framework, wrong) in enumerate((("keras", KERAS_WRONG), ("torch", TORCH_WRONG))):
        wrong = {} if perfect else dict(wrong)
        # Realistic-looking extras for eyeballing figures: random further mistakes past image 10.
        for extra in rng.choice(np.arange(10, count), size=extra_errors, replace=False):
            wrong[int(extra)] = int(rng.integers(1, num_classes))
        probabilities = probabilities_for(labels, wrong, num_classes, rng)
        summary, per_class = evaluation_files(framework, probabilities, labels, class_names, seed + index)
        (root / "metrics").mkdir(exist_ok=True)
        (root / "metrics" / f"{framework}.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
        folder = root / "eval" / framework
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "predictions.npy", probabilities, allow_pickle=False)
        (folder / "per_class.json").write_text(json.dumps(per_class), encoding="utf-8")
        write_training_logs(root / "dvclive" / framework, framework, epochs, rng, reaches_99=framework == "keras")


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def read_metrics(root: Path, framework: str) -> dict:
    return json.loads((root / "metrics" / f"{framework}.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """One complete report, built once by the stage's main() for all the read-only tests."""
    root = tmp_path_factory.mktemp("project")
    write_inputs(root)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        report.main()
    return root


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """Fresh inputs and a previous reports/ folder, with the working directory set to them."""
    write_inputs(tmp_path)
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "report.md").write_text("# the previous report\n", encoding="utf-8")
    (tmp_path / "reports" / "training_curves.png").write_bytes(PNG_MAGIC + b"previous")
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", report.FIGURES)
def test_every_figure_is_a_modest_readable_png(built, name):
    path = built / "reports" / name
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    pixels = matplotlib.image.imread(path)
    height, width = pixels.shape[:2]
    assert width >= 600 and height >= 250, f"{name} is only {width}x{height} pixels"
    assert 10_000 < len(data) < 1_000_000, f"{name} is {len(data):,} bytes"


def test_reports_folder_holds_exactly_the_outputs(built):
    assert sorted(path.name for path in (built / "reports").iterdir()) == sorted(
        [*report.FIGURES, "report.md", "summary.json"])
    assert not list(built.glob(".reports.*")), "temporary folders left behind"


def test_summary_numbers_equal_the_metrics_files(built):
    summary = json.loads((built / "reports" / "summary.json").read_text(encoding="utf-8"))
    rows = {row["key"]: row for row in summary["comparison"]}
    for framework in ("keras", "torch"):
        evaluation = read_metrics(built, framework)
        training = json.loads((built / "dvclive" / framework / "metrics.json").read_text(encoding="utf-8"))
        for key in ("test_accuracy", "test_loss", "macro_f1", "latency_ms_median", "latency_ms_p95",
                    "parameters", "model_bytes"):
            assert rows[key]["values"][framework] == evaluation[key]
        assert rows["inference_images_per_second"]["values"][framework] == evaluation["throughput_images_per_second"]
        assert rows["train_seconds"]["values"][framework] == training["train_seconds"]
        assert rows["train_images_per_second"]["values"][framework] == training["images_per_second"]
        assert rows["seconds_to_val_accuracy_99"]["values"][framework] == training["seconds_to_val_accuracy_99"]


def test_report_table_prints_the_metrics_files_numbers(built):
    text = (built / "reports" / "report.md").read_text(encoding="utf-8")
    keras, torch = read_metrics(built, "keras"), read_metrics(built, "torch")
    assert f"| Test accuracy | {100 * keras['test_accuracy']:.2f}% | {100 * torch['test_accuracy']:.2f}% |" in text
    assert f"| Macro F1 | {keras['macro_f1']:.4f} | {torch['macro_f1']:.4f} |" in text
    assert (f"| Latency, median (ms) | {keras['latency_ms_median']:.2f} | {torch['latency_ms_median']:.2f} |"
            in text)
    assert f"| Model file size (MB) | {keras['model_bytes'] / 1e6:.2f} | {torch['model_bytes'] / 1e6:.2f} |" in text
    assert "| Parameters | 421,642 | 421,642 |" in text
    # Keras reaches 99% validation accuracy in the generated logs, PyTorch does not.
    keras_logs = json.loads((built / "dvclive" / "keras" / "metrics.json").read_text(encoding="utf-8"))
    assert (f"| Time to 99% validation accuracy (s) | {keras_logs['seconds_to_val_accuracy_99']:.1f} "
            "| not reached |") in text


def test_disagreements_are_counted_on_the_hand_made_case(built):
    summary = json.loads((built / "reports" / "summary.json").read_text(encoding="utf-8"))
    assert summary["disagreements"] == {"test_images": 40, "count": 4, "agreement_rate": 0.9,
                                        "keras_right": 1, "torch_right": 2, "neither_right": 1}
    text = (built / "reports" / "report.md").read_text(encoding="utf-8")
    assert "differ on **4** of 40 test images: agreement rate 90.00%" in text
    assert "Keras is right 1 time, PyTorch 2 times, and neither 1 time." in text


def test_report_names_the_classes_from_meta_and_embeds_figures(built):
    text = (built / "reports" / "report.md").read_text(encoding="utf-8")
    assert text.startswith("# Keras vs PyTorch on Fashion-MNIST\n")
    for name in FASHION_NAMES:
        assert f"| {name} |" in text
    for name in report.FIGURES:
        assert f"]({name})" in text


def test_report_quotes_the_params_that_produced_it(built):
    text = (built / "reports" / "report.md").read_text(encoding="utf-8")
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    quoted = yaml.safe_load(block)
    params = project_params()
    assert list(quoted) == ["seed", "data", "preprocess", "model", "train", "keras", "torch", "evaluate"]
    assert quoted["seed"] == params["seed"]
    assert quoted["data"] == {"dataset": params["data"]["dataset"]}
    for section in ("preprocess", "model", "train", "keras", "torch", "evaluate"):
        assert quoted[section] == params[section]


# --------------------------------------------------------------------------------------------
# Pure functions
# --------------------------------------------------------------------------------------------
def test_disagreement_summary_counts_who_was_right():
    labels = np.array([0, 1, 2, 3, 4])
    first = np.array([0, 9, 2, 7, 4])
    second = np.array([0, 1, 8, 6, 4])
    assert report.disagreement_indices(first, second).tolist() == [1, 2, 3]
    assert report.disagreement_summary(labels, first, second) == {
        "test_images": 5, "count": 3, "agreement_rate": 0.4, "first_right": 1, "second_right": 1,
        "neither_right": 1}


def test_most_confident_mistakes_come_first_and_are_limited():
    probabilities = np.array([[0.9, 0.1], [0.3, 0.7], [0.1, 0.9], [0.6, 0.4], [0.45, 0.55]], dtype=np.float32)
    labels = np.array([0, 0, 0, 1, 0])
    assert report.most_confident_mistakes(probabilities, labels, 10).tolist() == [2, 1, 3, 4]
    assert report.most_confident_mistakes(probabilities, labels, 2).tolist() == [2, 1]
    assert report.most_confident_mistakes(probabilities, labels, 0).tolist() == []


@pytest.mark.parametrize(("values", "floor"), [
    ([99.9, 99.5, 98.7], 98.0),  # all high: zoom in, but keep the lowest bar clearly visible
    ([97.2, 99.0], 95.0),
    ([80.0, 95.0], 70.0),
    ([30.0, 90.0], 0.0),  # poor classes: the full scale is the honest one
    ([100.0, 100.0], 99.0),
])
def test_accuracy_axis_is_zoomed_without_hiding_bars(values, floor):
    assert report.accuracy_axis_floor(np.array(values)) == floor
    assert floor < min(values)


def test_raw_pixels_undo_the_normalisation():
    raw = np.array([[0, 128], [255, 30]], dtype=np.float32)
    images = ((raw - NORMALIZE["mean"]) / NORMALIZE["std"])[None, ..., None]
    np.testing.assert_allclose(report.raw_pixels(images, NORMALIZE)[0], raw, atol=1e-3)


def test_no_mistakes_and_no_disagreements_draw_a_message(tmp_path, monkeypatch):
    write_inputs(tmp_path, perfect=True)
    monkeypatch.chdir(tmp_path)
    data = prepared.load_prepared("data/prepared", splits=("test",))
    labels = data.splits["test"].labels.astype(np.int64)
    results = {framework: report.load_results(framework, labels, data.class_names) for framework in ("keras", "torch")}
    images = data.splits["test"].images

    def texts(figure) -> str:
        return " ".join(text.get_text() for text in figure.findobj(Text))

    misclassified = report.plot_misclassified(results, images, data.meta["normalize"], labels, data.class_names,
                                              16, 110)
    assert texts(misclassified).count("no misclassified test images") == 2
    disagreements = report.plot_disagreements(results, images, data.meta["normalize"], labels, data.class_names,
                                              16, 110)
    assert "agree on all 40 test images" in texts(disagreements)
    for name, figure in (("misclassified", misclassified), ("disagreements", disagreements)):
        report.save_figure(figure, tmp_path / f"{name}.png")
        assert matplotlib.image.imread(tmp_path / f"{name}.png").shape[1] >= 600


# --------------------------------------------------------------------------------------------
# Input errors: one line naming the file; the previous reports/ stays as it was
# --------------------------------------------------------------------------------------------
def remove(path: str):
    return lambda root: (root / path).unlink()


def write(path: str, content: bytes):
    return lambda root: (root / path).write_bytes(content)


def edit_json(path: str, change):
    def apply(root: Path) -> None:
        payload = json.loads((root / path).read_text(encoding="utf-8"))
        change(payload)
        (root / path).write_text(json.dumps(payload), encoding="utf-8")
    return apply


def edit_predictions(path: str, change):
    def apply(root: Path) -> None:
        np.save(root / path, change(np.load(root / path)), allow_pickle=False)
    return apply


FAILURES = {
    "metrics missing": (remove("metrics/torch.json"), "metrics/torch.json: missing"),
    "metrics not json": (write("metrics/keras.json", b"{\"test_accuracy\": 0.9"), "metrics/keras.json: not valid JSON"),
    "metrics key missing": (edit_json("metrics/keras.json", lambda payload: payload.pop("latency_ms_p95")),
                            "metrics/keras.json: missing keys ['latency_ms_p95']"),
    "metrics value not a number": (edit_json("metrics/torch.json", lambda payload: payload.update(test_loss="low")),
                                   "metrics/torch.json: test_loss is 'low'"),
    "metrics of the other framework": (
        edit_json("metrics/torch.json", lambda payload: payload.update(framework="keras")),
        "metrics/torch.json: framework is 'keras'"),
    "accuracy disagrees with predictions": (
        edit_json("metrics/keras.json", lambda payload: payload.update(test_accuracy=0.5)),
        "metrics/keras.json: test_accuracy 0.5 disagrees with eval/keras/predictions.npy"),
    "predictions missing": (remove("eval/torch/predictions.npy"), "eval/torch/predictions.npy: missing"),
    "predictions too few rows": (edit_predictions("eval/keras/predictions.npy", lambda array: array[:39]),
                                 "eval/keras/predictions.npy: shape (39, 10); expected (40, 10)"),
    "predictions too few columns": (edit_predictions("eval/torch/predictions.npy", lambda array: array[:, :9]),
                                    "eval/torch/predictions.npy: shape (40, 9); expected (40, 10)"),
    "predictions wrong dtype": (edit_predictions("eval/keras/predictions.npy", lambda array: array.astype(np.float64)),
                                "eval/keras/predictions.npy: dtype float64; expected float32"),
    "predictions unreadable": (write("eval/keras/predictions.npy", b"not an array"),
                               "eval/keras/predictions.npy: not a valid .npy file"),
    "predictions pickled objects": (
        lambda root: np.save(root / "eval/keras/predictions.npy", np.array([{}], dtype=object), allow_pickle=True),
        "eval/keras/predictions.npy: not a valid .npy file"),
    "per-class confusion wrong shape": (
        edit_json("eval/torch/per_class.json", lambda payload: payload.update(confusion=[[1, 2], [3, 4]])),
        "eval/torch/per_class.json: confusion is not a 10x10 matrix"),
    "training summary missing": (remove("dvclive/torch/metrics.json"), "dvclive/torch/metrics.json: missing"),
    "training curve missing": (remove("dvclive/keras/plots/metrics/val/accuracy.tsv"),
                               "dvclive/keras/plots/metrics/val/accuracy.tsv: missing"),
    "training curve bad header": (write("dvclive/torch/plots/metrics/train/loss.tsv", b"epoch,loss\n1,0.2\n"),
                                  "dvclive/torch/plots/metrics/train/loss.tsv: expected a tab-separated header"),
    "training curve bad value": (write("dvclive/torch/plots/metrics/train/loss.tsv", b"step\tloss\n1\tnan?\n"),
                                 "dvclive/torch/plots/metrics/train/loss.tsv: expected an integer step and a number"),
    "prepared data missing": (remove("data/prepared/meta.json"), "data/prepared/meta.json: missing"),
}


@pytest.mark.parametrize("failure", list(FAILURES), ids=list(FAILURES))
def test_bad_input_stops_with_the_file_named_and_keeps_previous_reports(project, failure):
    corrupt, message = FAILURES[failure]
    corrupt(project)
    before = snapshot(project / "reports")
    with pytest.raises(StageError) as raised:
        report.main()
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)
    assert snapshot(project / "reports") == before
    assert not list(project.glob(".reports.*"))


def test_failure_while_writing_keeps_previous_reports(project, monkeypatch):
    saved = []

    def failing_save(figure, path):
        if len(saved) == 2:
            raise OSError("disk full")
        saved.append(path)
        figure.savefig(path, format="png")

    monkeypatch.setattr(report, "save_figure", failing_save)
    before = snapshot(project / "reports")
    with pytest.raises(OSError, match="disk full"):
        report.main()
    assert snapshot(project / "reports") == before
    assert not list(project.glob(".reports.*"))


def test_stage_runs_without_any_deep_learning_framework(tmp_path):
    """``python -m stages.report`` imports no framework, and a user error is one line, exit 1."""
    shutil.copy(PROJECT_ROOT / "params.yaml", tmp_path / "params.yaml")
    check = ("import sys, runpy; sys.argv = ['report']\n"
             "try:\n    runpy.run_module('stages.report', run_name='__main__')\n"
             "except SystemExit as exit:\n"
             "    loaded = [name for name in ('tensorflow', 'keras', 'torch') if name in sys.modules]\n"
             "    print('frameworks:', loaded); sys.exit(exit.code)\n")
    result = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                            env={"PYTHONPATH": str(PROJECT_ROOT), "HOME": str(tmp_path), "MPLBACKEND": "TkAgg"})
    assert result.returncode == 1, result.stderr
    assert "frameworks: []" in result.stdout
    assert result.stderr.strip().splitlines()[-1] == (
        "error: report: data/prepared/meta.json: missing; run the preprocess stage first (dvc repro preprocess)")
