"""The w_enc x w_dec sweep read back from its experiments (capt.eval.sweep; stages/sweep.py reads
them from `dvc exp show`, tests/test_pipeline.py runs it on a real queue)."""

from __future__ import annotations

import pytest

from capt.errors import CaptError
from capt.eval.sweep import point_cell, sweep_grid, sweep_points


def _exp(name, w_enc, w_dec, bleu, delta=None):
    scores = {"bleu4_shapes": bleu}
    if delta is not None:
        scores.update(delta_bleu4_vs_base_shapes=delta, delta_bleu4_vs_base_ci95_shapes=[delta - 0.02, delta + 0.01],
                      p_bleu4_vs_base_shapes=0.25)
    return {"name": name, "params": {"distill": {"student_t20": {"w_enc": w_enc, "w_dec": w_dec}}},
            "summary": {"models": {"student_t20": scores}}}


X, Y = "distill.student_t20.w_enc", "distill.student_t20.w_dec"


def test_points_are_one_per_param_pair_and_skip_what_has_no_scores():
    exps = [_exp("workspace", 1.0, 1.0, 0.40, -0.01), _exp("a", 1.0, 1.0, 0.40, -0.01),   # HEAD again: one point
            _exp("b", 0.5, 2, 0.42, 0.01), _exp("c", 0, 0.5, 0.38, -0.03),
            {"name": "failed", "params": {"distill": {"student_t20": {"w_enc": 2, "w_dec": 2}}}, "summary": None},
            {"name": "old", "params": {}, "summary": {"models": {}}}]
    points = sweep_points(exps, "student_t20", X, Y)
    assert [(p.x, p.y, p.experiment) for p in points] == [(0.0, 0.5, "c"), (0.5, 2.0, "b"), (1.0, 1.0, "workspace")]
    elsewhere = _exp("other T", 0.5, 2, 0.30)
    elsewhere["params"]["distill"]["student_t20"]["temperature"] = 30
    reference = {"distill": {"student_t20": {"w_enc": 9, "w_dec": 9}}}          # the workspace: x and y aside
    assert [p.experiment for p in sweep_points([elsewhere, *exps], "student_t20", X, Y, reference)] == \
        ["c", "b", "workspace"]
    with pytest.raises(CaptError, match="with the workspace params otherwise"):
        sweep_points([elsewhere], "student_t20", X, Y, reference)
    clash = [*exps, _exp("d", 0.5, 2, 0.45, 0.04)]
    with pytest.raises(CaptError, match=r"experiments b and d both ran .*w_enc=0.5.* disagree"):
        sweep_points(clash, "student_t20", X, Y)
    with pytest.raises(CaptError, match="no experiment has .*student_base's scores.*dvc queue start"):
        sweep_points(exps, "student_base", X, Y)


def test_grid_has_a_row_per_x_a_column_per_y_and_each_points_numbers():
    points = sweep_points([_exp("a", 1.0, 1.0, 0.40, -0.01), _exp("b", 0.5, 2, 0.42, 0.013), _exp("c", 0.5, 1, 0.5)],
                          "student_t20", X, Y)
    lines = sweep_grid(points, "shapes", "w_enc", "w_dec").splitlines()
    assert lines[0] == "| w_enc \\ w_dec | 1 | 2 |"
    assert lines[2] == "| 0.5 | 0.500 | 0.420 (+0.013 [-0.007, +0.023], p 0.250) |"
    assert lines[3] == "| 1 | 0.400 (-0.010 [-0.030, +0.000], p 0.250) | - |"              # no (1, 2) point
    over_seeds = {"bleu4_shapes": 0.4, "seeds": [0, 1, 2], "delta_bleu4_vs_base_shapes": 0.1,
                  "delta_bleu4_vs_base_ci95_shapes": [0, 0.2], "p_bleu4_vs_base_shapes": 0.1,
                  "delta_bleu4_vs_base_mean_shapes": 0.02, "delta_bleu4_vs_base_mean_ci95_shapes": [-0.01, 0.05]}
    assert point_cell(over_seeds, "shapes") == "0.400 (+0.020 [-0.010, +0.050] over 3 seeds)"
    assert point_cell(over_seeds, "coco") == "-"
    assert point_cell({"bleu4_shapes": 0.4, "delta_bleu4_vs_base_shapes": 0.1}, "shapes") == "0.400 (+0.100)"
