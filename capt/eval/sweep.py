"""A sweep over two params of one student, read back from its experiments: the seed study's
follow-up (c), ``w_enc`` x ``w_dec``.

Each point of the grid is an experiment of its own (DVC's queue runs them: every point is the
whole study with one student changed), so no stage of one experiment sees the others. This module
turns the experiments' params and ``metrics/summary.json`` into one grid per test set: the
student's BLEU-4 at every (x, y) and its paired difference to ``student_base`` with the 95%
interval and p that the report computed in that experiment (and, with replicate seeds, the mean
difference over seeds with its t-interval, capt.eval.seeds). It reads plain dicts; fetching them from DVC
is the caller's (stages/sweep.py).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

from capt.errors import CaptError
from capt.eval.table import markdown_table

log = logging.getLogger(__name__)


def dotted(tree: dict, key: str) -> Any:
    """``tree["a"]["b"]`` for ``key`` ``"a.b"``; None where a part is missing."""
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


@dataclass(frozen=True)
class SweepPoint:
    """One experiment of the sweep: its name, the two swept values and the student's entry of
    its ``metrics/summary.json`` (``models.<student>``)."""

    experiment: str
    x: float
    y: float
    scores: dict


def without(tree: dict, *keys: str) -> dict:
    """A copy of ``tree`` without the dotted ``keys``."""
    tree = copy.deepcopy(tree)
    for key in keys:
        *path, last = key.split(".")
        parent = dotted(tree, ".".join(path)) if path else tree
        if isinstance(parent, dict):
            parent.pop(last, None)
    return tree


def sweep_points(experiments: list[dict], student: str, x_key: str, y_key: str,
                 reference: dict | None = None) -> list[SweepPoint]:
    """The points of a sweep, sorted by (x, y), from ``experiments``: dicts with ``name``,
    ``params`` (params.yaml) and ``summary`` (metrics/summary.json, None for an experiment that
    failed or never ran). With ``reference`` params (the workspace's: what the sweep was queued
    from), an experiment whose params differ from them elsewhere than at x and y belongs to
    another study and is left out. An experiment without the student's scores is left out too;
    both are counted in the log. Of experiments at the same point the first is kept (the same
    params give the same metrics on one machine); a later one that disagrees is an error."""
    points: dict[tuple[float, float], SweepPoint] = {}
    skipped, other = [], []
    ref = None if reference is None else without(reference, x_key, y_key)
    for exp in experiments:
        x, y = dotted(exp["params"], x_key), dotted(exp["params"], y_key)
        scores = dotted(exp.get("summary") or {}, f"models.{student}")
        if x is None or y is None or scores is None:
            skipped.append(exp["name"])
            continue
        if ref is not None and without(exp["params"], x_key, y_key) != ref:
            other.append(exp["name"])
            continue
        point = SweepPoint(exp["name"], float(x), float(y), scores)
        seen = points.setdefault((point.x, point.y), point)
        if seen is not point and seen.scores != point.scores:
            raise CaptError(f"experiments {seen.experiment} and {point.experiment} both ran {x_key}={x:g}, "
                            f"{y_key}={y:g} and disagree on {student}'s scores: remove one (dvc exp remove)")
    if other:
        log.info("%d experiment(s) differ from the workspace's params elsewhere than %s and %s, left out: %s",
                 len(other), x_key, y_key, ", ".join(other))
    if skipped:
        log.info("%d experiment(s) without %s or %s, or without %s's scores, left out: %s", len(skipped), x_key,
                 y_key, student, ", ".join(skipped))
    if not points:
        raise CaptError(f"no experiment has {x_key}, {y_key} and {student}'s scores in metrics/summary.json"
                        f"{'' if ref is None else ' with the workspace params otherwise'}: queue the sweep (dvc exp run --queue -S ...) and run it (dvc queue start) first")
    return [points[k] for k in sorted(points)]


def point_cell(scores: dict, dataset: str) -> str:
    """``BLEU-4 (delta to the baseline [95% interval], p)`` at one point; over seeds when the
    experiment had replicate seeds; what the experiment's summary lacks is left out."""
    bleu = scores.get(f"bleu4_{dataset}")
    if bleu is None:
        return "-"

    def interval(key: str) -> str:
        ci = scores.get(key)
        return f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else ""

    if f"delta_bleu4_vs_base_mean_{dataset}" in scores:
        return (f"{bleu:.3f} ({scores[f'delta_bleu4_vs_base_mean_{dataset}']:+.3f}"
                f"{interval(f'delta_bleu4_vs_base_mean_ci95_{dataset}')} over {len(scores.get('seeds', []))} seeds)")
    if f"delta_bleu4_vs_base_{dataset}" in scores:
        p = scores.get(f"p_bleu4_vs_base_{dataset}")
        return (f"{bleu:.3f} ({scores[f'delta_bleu4_vs_base_{dataset}']:+.3f}"
                f"{interval(f'delta_bleu4_vs_base_ci95_{dataset}')}{'' if p is None else f', p {p:.3f}'})")
    return f"{bleu:.3f}"


def sweep_grid(points: list[SweepPoint], dataset: str, x_name: str, y_name: str) -> str:
    """A markdown grid: a row per x value, a column per y value, :func:`point_cell` in each
    (``-`` where the sweep has no such point)."""
    xs, ys = sorted({p.x for p in points}), sorted({p.y for p in points})
    at = {(p.x, p.y): p for p in points}
    columns = [("x", f"{x_name} \\ {y_name}"), *[(f"y{j}", f"{y:g}") for j, y in enumerate(ys)]]
    rows = [{"x": f"{x:g}", **{f"y{j}": point_cell(at[x, y].scores, dataset) if (x, y) in at else None
                               for j, y in enumerate(ys)}} for x in xs]
    return markdown_table(rows, columns)
