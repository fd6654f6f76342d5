"""The study's answer in one picture: every model's BLEU-4, CIDEr-D and (on a shapes world) content
object F1 on every test set, each with its 95% bootstrap interval, the training seeds as dots,
and the baseline student, the teacher and the two baselines every model must beat (a constant
caption, the nearest neighbour) as reference lines; and the same numbers as a CSV for ``dvc plots``.

A model's scores come from its evaluations (``metrics/eval/<model>-<dataset>.json``): the score
(the mean over seeds where there are several), its interval (``bleu4_ci95``, ``cider_ci95``:
percentile bootstrap over the test images, capt.eval.bootstrap), and one value per seed.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from capt.errors import CaptError  # noqa: E402
from capt.files import atomic_output  # noqa: E402

METRICS = (("bleu4", "BLEU-4"), ("cider", "CIDEr-D"), ("object_f1", "object F1 (content)"))
OPTIONAL_METRICS = ("object_f1",)      # only a shapes world's evaluations have the content metric
REFERENCE_LINES = (("student_base", "baseline student", "tab:blue"), ("teacher", "teacher", "tab:red"),
                   ("constant", "constant caption", "0.45"), ("nearest", "nearest neighbour", "tab:green"))


@dataclass(frozen=True)
class ModelScore:
    """One model's score of one metric on one test set: ``value`` with its 95% interval
    ``ci95`` (low, high), and ``seeds``: the value of each training seed (one dot each)."""

    model: str
    dataset: str
    metric: str
    value: float
    ci95: tuple[float, float]
    seeds: tuple[float, ...] = field(default_factory=tuple)


def model_scores(metrics: dict[tuple[str, str], dict], seeds: dict | None = None) -> list[ModelScore]:
    """``metrics[(model, dataset)]``: an evaluation's metrics (``bleu4``, ``bleu4_ci95``, ``cider``,
    ``cider_ci95``) -> one ModelScore per model, test set and metric, in the given order. Its dots
    are ``seeds[(model, dataset, metric)]`` (every training seed's score) where given, else the
    one score."""
    out = []
    for (model, dataset), m in metrics.items():
        for metric, _ in METRICS:
            if metric in OPTIONAL_METRICS and m.get(metric) is None:
                continue
            if metric not in m or f"{metric}_ci95" not in m:
                raise CaptError(f"{model} on {dataset}: no {metric} or {metric}_ci95 in its evaluation's metrics")
            out.append(ModelScore(model, dataset, metric, float(m[metric]), tuple(m[f"{metric}_ci95"]),
                                  tuple((seeds or {}).get((model, dataset, metric), (float(m[metric]),)))))
    return out


def write_scores_csv(scores: list[ModelScore], dataset: str, path: Path) -> None:
    """One row per model on ``dataset``: ``model`` and, per metric, the value and its interval
    (``bleu4``, ``bleu4_low``, ``bleu4_high``, ...): what dvc.yaml's plots of the study read."""
    rows: dict[str, dict] = {}
    for s in scores:
        if s.dataset != dataset:
            continue
        row = rows.setdefault(s.model, {"model": s.model})
        row.update({s.metric: f"{s.value:.6g}", f"{s.metric}_low": f"{s.ci95[0]:.6g}",
                    f"{s.metric}_high": f"{s.ci95[1]:.6g}"})
    present = {s.metric for s in scores if s.dataset == dataset}
    fields = ["model", *(f"{m}{suffix}" for m, _ in METRICS if m in present for suffix in ("", "_low", "_high"))]
    with atomic_output(Path(path)) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows.values())


def plot_model_scores(scores: list[ModelScore], path: Path, title: str) -> None:
    """:func:`draw_model_scores` saved as a PNG whose "Title" text is ``title``."""
    fig = draw_model_scores(scores, title)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=100, metadata={"Title": title})
    plt.close(fig)


def draw_model_scores(scores: list[ModelScore], title: str) -> plt.Figure:
    """A panel per metric (rows) and test set (columns): each model a row of the panel, in the
    order of ``scores``, its interval a horizontal bar, its seeds dots, its score a tick; the
    baseline student's, the teacher's and the two baselines' (a constant caption, the nearest
    neighbour) scores vertical lines through the panel. A panel per metric of ``METRICS`` that
    some score has (the content metric: a shapes world's evaluations only)."""
    if not scores:
        raise CaptError("no model scores to plot")
    datasets = list(dict.fromkeys(s.dataset for s in scores))
    models = list(dict.fromkeys(s.model for s in scores))
    metrics = [(m, label) for m, label in METRICS if any(s.metric == m for s in scores)]
    fig, axes = plt.subplots(len(metrics), len(datasets), figsize=(4.8 * len(datasets), 0.42 * len(models) * len(metrics) + 2),
                             squeeze=False)
    for row, (metric, label) in enumerate(metrics):
        for col, dataset in enumerate(datasets):
            ax = axes[row][col]
            panel = {s.model: s for s in scores if s.metric == metric and s.dataset == dataset}
            for y, model in enumerate(models):
                s = panel.get(model)
                if s is None:
                    continue
                ax.hlines(y, *s.ci95, color="0.35", linewidth=2.5)
                ax.scatter(s.seeds, [y] * len(s.seeds), s=14, color="black", zorder=3)
                ax.plot([s.value], [y], marker="|", markersize=14, color="black", zorder=4)
            for model, name, colour in REFERENCE_LINES:
                if model in panel:
                    ax.axvline(panel[model].value, linestyle="--", linewidth=1, color=colour, label=name)
            ax.set_yticks(range(len(models)), models if col == 0 else [""] * len(models))
            ax.set_ylim(len(models) - 0.5, -0.5)                 # the first model on top
            ax.set_xlabel(label)
            ax.set_title(f"{label} on {dataset}")
            ax.grid(axis="x", alpha=0.3)
            if row == 0 and col == len(datasets) - 1 and ax.get_legend_handles_labels()[0]:
                ax.legend(loc="lower right", fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def write_figure1(evaluations: dict, test_sets: list[str], png: Path, plots_dir: Path,
                  seed_values: dict | None = None) -> tuple[Path, str]:
    """The report's lead figure (:func:`plot_model_scores`) from every evaluation's metrics (and each seed's
    score where students were replicated: ``seed_values``), and one CSV per test set,
    ``plots_dir/figure1-<dataset>.csv``, for dvc.yaml's plots. Returns (png, caption)."""
    scores = model_scores(evaluations, seed_values)
    plot_model_scores(scores, png, "Figure 1: every model's BLEU-4 and CIDEr-D with its 95% interval")
    for dataset in test_sets:
        write_scores_csv(scores, dataset, plots_dir / f"figure1-{dataset}.csv")
    return png, "BLEU-4 and CIDEr-D per model with 95% intervals; dashed: the baseline student and the teacher"
