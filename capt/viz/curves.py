"""Training curves: the per-epoch history as CSV (for `dvc plots`) and as a PNG (for people)."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from capt.files import atomic_output  # noqa: E402


def write_history_csv(history: list[dict], path: Path, columns: tuple[str, ...] = ()) -> None:
    """One row per epoch. ``columns`` head the file even when there are no rows (a run of 0
    epochs), so `dvc plots` sees the same fields as in a trained run's history."""
    keys = list(dict.fromkeys([*columns, *(k for row in history for k in row)]))
    with atomic_output(Path(path)) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        for row in history:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def plot_history(history: list[dict], path: Path, title: str) -> None:
    """Loss, top-5 accuracy and val BLEU-4 against epochs, side by side. An empty history (a run of
    0 epochs) draws the same panels, each saying so. The title is also the PNG's "Title" text."""
    epochs = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for ax, (name, keys) in zip(axes, [("loss", ("train_loss", "val_loss")), ("top-5 accuracy", ("train_top5", "val_top5")),
                                       ("val BLEU-4", ("val_bleu4",))]):
        for k in keys:
            if history and all(k in r for r in history):
                ax.plot(epochs, [r[k] for r in history], marker="o", label=k)
        if not history:
            ax.text(0.5, 0.5, "0 epochs", ha="center", va="center", transform=ax.transAxes, color="grey")
        elif ax.lines:
            ax.legend()
        ax.set_title(name)
        ax.set_xlabel("epoch")
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=100, metadata={"Title": title})
    plt.close(fig)
