"""Figure 1 (capt.viz.scores): each model's score with its interval, seeds as dots, the baseline
and the teacher as reference lines, and the CSV that dvc.yaml's plots read."""

import csv

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from capt.errors import CaptError
from capt.viz.scores import ModelScore, draw_model_scores, model_scores, plot_model_scores, write_scores_csv

EVALUATIONS = {
    ("teacher", "shapes"): {"bleu4": 0.50, "bleu4_ci95": [0.47, 0.53], "cider": 2.6, "cider_ci95": [2.4, 2.9]},
    ("student_base", "shapes"): {"bleu4": 0.45, "bleu4_ci95": [0.42, 0.48], "cider": 2.1, "cider_ci95": [1.9, 2.3]},
    ("student_t5", "shapes"): {"bleu4": 0.40, "bleu4_ci95": [0.36, 0.44], "cider": 1.5, "cider_ci95": [1.3, 1.7]},
    ("teacher", "shift"): {"bleu4": 0.30, "bleu4_ci95": [0.27, 0.33], "cider": 1.0, "cider_ci95": [0.9, 1.1]},
    ("student_base", "shift"): {"bleu4": 0.25, "bleu4_ci95": [0.22, 0.28], "cider": 0.8, "cider_ci95": [0.7, 0.9]},
    ("student_t5", "shift"): {"bleu4": 0.20, "bleu4_ci95": [0.18, 0.23], "cider": 0.5, "cider_ci95": [0.4, 0.6]},
}


def test_each_panel_draws_every_interval_and_the_reference_lines_where_the_scores_are():
    scores = model_scores(EVALUATIONS)
    scores = [s if s.model != "student_t5" or s.metric != "bleu4" or s.dataset != "shapes"
              else ModelScore(s.model, s.dataset, s.metric, s.value, s.ci95, (0.38, 0.40, 0.42)) for s in scores]
    fig = draw_model_scores(scores, "t")
    axes = np.array(fig.axes).reshape(2, 2)                      # rows: BLEU-4, CIDEr-D; columns: test sets
    bleu_shapes = axes[0][0]
    assert bleu_shapes.get_title() == "BLEU-4 on shapes" and axes[1][1].get_title() == "CIDEr-D on shift"
    from matplotlib.collections import LineCollection, PathCollection

    bars = [c.get_segments()[0] for c in bleu_shapes.collections if isinstance(c, LineCollection)]
    assert len(bars) == 3 and np.allclose(bars[2], [[0.36, 2], [0.44, 2]])   # the third model's row
    seed_dots = [c.get_offsets() for c in bleu_shapes.collections
                 if isinstance(c, PathCollection) and len(c.get_offsets()) == 3]
    assert len(seed_dots) == 1 and np.allclose(seed_dots[0], [[0.38, 2], [0.40, 2], [0.42, 2]])
    reference = {line.get_label(): line.get_xdata()[0] for line in bleu_shapes.lines if line.get_linestyle() == "--"}
    assert reference == {"baseline student": 0.45, "teacher": 0.50}
    cider_shift = {line.get_label(): line.get_xdata()[0] for line in axes[1][1].lines if line.get_linestyle() == "--"}
    assert cider_shift == {"baseline student": 0.8, "teacher": 1.0}
    assert [t.get_text() for t in bleu_shapes.get_yticklabels()] == ["teacher", "student_base", "student_t5"]
    plt.close(fig)


def test_the_png_and_the_csv_per_test_set(tmp_path):
    scores = model_scores(EVALUATIONS)
    plot_model_scores(scores, tmp_path / "f.png", "Figure 1: t")
    with Image.open(tmp_path / "f.png") as im:
        assert im.info["Title"] == "Figure 1: t" and im.width > 600
    write_scores_csv(scores, "shift", tmp_path / "shift.csv")
    with open(tmp_path / "shift.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["model"] for r in rows] == ["teacher", "student_base", "student_t5"]
    assert rows[2] == {"model": "student_t5", "bleu4": "0.2", "bleu4_low": "0.18", "bleu4_high": "0.23",
                       "cider": "0.5", "cider_low": "0.4", "cider_high": "0.6"}


def test_an_evaluation_without_its_interval_is_named():
    with pytest.raises(CaptError, match="student_t5 on shapes: no cider or cider_ci95"):
        model_scores({("student_t5", "shapes"): {"bleu4": 0.4, "bleu4_ci95": [0.3, 0.5], "cider": 1.0}})
