"""stages/report/figures.py: every figure draws for one to three frameworks and one or more
seeds, sizes itself to what it shows, and draws strokes dark whichever way a dataset stores them."""

from __future__ import annotations

import numpy as np
import pytest

from stages import backends
from stages.common import prepared
from stages.common.params import load_params
from stages.report import compare, figures, inputs
from tests.report import generated


def context(root, frameworks, seeds, monkeypatch, **report):
    monkeypatch.chdir(root)
    params = load_params()
    data = prepared.load_prepared("data/prepared", splits=("test",))
    labels = data.splits["test"].labels.astype(np.int64)
    results = inputs.load_all(frameworks, seeds, labels, data.class_names)
    settings = params.report if not report else type(params.report)(**{**vars(params.report), **report})
    return figures.Context(results, compare.compare(results, labels, settings),
                           np.asarray(data.splits["test"].images), labels, data.meta, settings)


@pytest.mark.parametrize(("frameworks", "seeds"), [(("keras",), (1,)), (("keras", "torch"), (1, 2, 3)),
                                                   (("keras", "torch", "numpy"), (1, 2))])
def test_every_figure_draws_and_saves_a_png(tmp_path, monkeypatch, frameworks, seeds):
    monkeypatch.setitem(backends.REGISTRY, "numpy", ("tests.numpy_backend", "NumPy"))
    generated.write_workspace(tmp_path, frameworks, seeds)
    drawn = context(tmp_path, list(frameworks), list(seeds), monkeypatch)
    for spec in figures.FIGURES:
        figure = spec.draw(drawn)
        path = tmp_path / spec.file
        figures.save_figure(figure, path)
        assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n"), spec.file


def test_confusion_figure_widens_with_the_number_of_frameworks(tmp_path, monkeypatch):
    monkeypatch.setitem(backends.REGISTRY, "numpy", ("tests.numpy_backend", "NumPy"))
    generated.write_workspace(tmp_path, ("keras", "torch", "numpy"), (1,))
    two = figures.plot_confusion_matrices(context(tmp_path, ["keras", "torch"], [1], monkeypatch))
    three = figures.plot_confusion_matrices(context(tmp_path, ["keras", "torch", "numpy"], [1], monkeypatch))
    assert three.get_figwidth() > two.get_figwidth()
    assert len(three.axes) == 4  # three matrices and a colour bar


def test_image_figures_are_as_tall_as_the_rows_they_show(tmp_path, monkeypatch):
    generated.write_workspace(tmp_path, ("keras", "torch"), (1,))
    # keras and torch disagree on 3 test images: one row of tiles however many the limit allows.
    few = figures.plot_disagreements(context(tmp_path, ["keras", "torch"], [1], monkeypatch, disagreements=2))
    many = figures.plot_disagreements(context(tmp_path, ["keras", "torch"], [1], monkeypatch, disagreements=24))
    assert few.get_figheight() == many.get_figheight() == pytest.approx(1.75 + 0.8)  # no empty band
    none = figures.plot_misclassified(context(tmp_path, ["keras", "torch"], [1], monkeypatch, misclassified=0))
    assert none.get_figheight() == pytest.approx(2 * 0.9)  # a message line per framework
    # keras is wrong on 4 images, torch on 3: with 9 allowed (3 columns), 2 rows and 1 row.
    grid = figures.plot_misclassified(context(tmp_path, ["keras", "torch"], [1], monkeypatch, misclassified=9))
    assert grid.get_figheight() == pytest.approx((2 * 1.5 + 0.7) + (1 * 1.5 + 0.7))


@pytest.mark.parametrize(("background", "expected"), [(0, "gray_r"), (255, "gray")])
def test_strokes_are_drawn_dark_whichever_way_the_dataset_stores_them(background, expected):
    pixels = np.full((2, 28, 28), background, np.float32)
    pixels[:, 10:14, 5:20] = 255 - background  # the strokes
    assert figures.stroke_colourmap(pixels) == expected


def test_ranking_puts_images_wrong_in_more_seeds_first():
    counts = np.array([0, 2, 1, 2, 0])
    confidence = np.array([0.9, 0.5, 0.99, 0.8, 0.1])
    assert figures._ranked(counts, confidence, 10).tolist() == [3, 1, 2]


def test_disagreements_show_each_frameworks_answer_in_every_seed(tmp_path, monkeypatch):
    generated.write_workspace(tmp_path, ("keras", "torch"), (1, 2, 3))
    figure = figures.plot_disagreements(context(tmp_path, ["keras", "torch"], [1, 2, 3], monkeypatch, disagreements=3))
    titles = [axes.get_title() for axes in figure.axes if axes.get_title()]
    # image 1 (true class 1): keras answers class 2 in every seed, torch class 1 (generated.WRONG).
    assert "true class 1 (3/3 differ)\nKeras: class 2, class 2, class 2\nPyTorch: class 1, class 1, class 1" in titles
    caption = figure.subfigs[0]._suptitle.get_text()
    assert "each framework's answer in seed 1, 2, 3, in that order" in caption
