"""Where a model looks for each word: the attention map of every generated word, upsampled
smoothly onto the image."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def upsample_attention(alphas: np.ndarray, size: int) -> np.ndarray:
    """alphas (T, P) over a square grid of P cells -> (T, size, size), bicubic, clipped at 0,
    each map rescaled to [0, 1] for display."""
    T, P = alphas.shape
    grid = math.isqrt(P)
    if grid * grid != P:
        raise ValueError(f"attention over {P} cells is not a square grid")
    maps = torch.as_tensor(alphas, dtype=torch.float32).view(T, 1, grid, grid)
    up = F.interpolate(maps, size=(size, size), mode="bicubic", align_corners=False).clamp_min(0).squeeze(1)
    peak = up.flatten(1).max(dim=1).values.clamp_min(1e-12)
    return (up / peak[:, None, None]).numpy()


def plot_attention(image: np.ndarray, words: list[str], alphas: np.ndarray, path: Path, title: str,
                   columns: int = 6) -> None:
    """image uint8 (3, S, S); words[i] was generated while attending alphas[i] (P,).
    One panel for the image with the caption, one per word with its map over the image."""
    rgb = image.transpose(1, 2, 0)
    size = rgb.shape[0]
    maps = upsample_attention(alphas, size) if len(words) else np.zeros((0, size, size))
    panels = 1 + len(words)
    rows = math.ceil(panels / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.0 * columns, 2.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    axes.flat[0].imshow(rgb)
    axes.flat[0].set_title("image", fontsize=9)
    for k, (word, heat) in enumerate(zip(words, maps), start=1):
        ax = axes.flat[k]
        ax.imshow(rgb)
        ax.imshow(heat, cmap="jet", alpha=0.5, vmin=0, vmax=1)
        ax.set_title(word, fontsize=10)
    fig.suptitle(f"{title}\n{' '.join(words)}", fontsize=10)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.6 / fig.get_figheight(),
                        wspace=0.05, hspace=0.25)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_comparison(image: np.ndarray, rows: list[tuple[str, list[str], np.ndarray]], path: Path,
                    title: str, max_words: int = 12) -> None:
    """Every model on one image: a row per model and technique (its label, caption and score in
    the first cell, then each word's map), a column per word position, the same colour scale and
    the same upsampling in every cell.

    image uint8 (3, S, S); rows: (label, words, maps (len(words), P)); the label may hold several
    lines (model, caption, BLEU-4); maps over any square grid (8x8 attention or BLIP's patch grid
    alike), each rescaled to [0, 1] as in plot_attention.
    """
    rgb = image.transpose(1, 2, 0)
    size = rgb.shape[0]
    words_shown = min(max_words, max((len(w) for _, w, _ in rows), default=0))
    columns = 2 + words_shown                       # a text column, the image, one per word
    cell = 1.3
    fig, axes = plt.subplots(len(rows), columns, figsize=(cell * (columns + 1), cell * 1.25 * len(rows) + 0.5),
                             squeeze=False, gridspec_kw={"width_ratios": [2, *[1] * (columns - 1)]})
    for ax in axes.flat:
        ax.axis("off")
    for r, (label, words, maps) in enumerate(rows):
        axes[r, 0].text(0, 0.5, label, fontsize=7, va="center", ha="left", wrap=True,
                        transform=axes[r, 0].transAxes)
        axes[r, 1].imshow(rgb)
        heat = upsample_attention(np.asarray(maps)[:max_words], size) if len(words) else []
        for c, (word, h) in enumerate(zip(words[:max_words], heat), start=2):
            axes[r, c].imshow(rgb)
            axes[r, c].imshow(h, cmap="jet", alpha=0.5, vmin=0, vmax=1)
            axes[r, c].set_title(word, fontsize=8, pad=2)
    height = fig.get_figheight()
    fig.suptitle(title, fontsize=10, y=1 - 0.12 / height, va="top")
    # fixed margins, not tight_layout: the same look for every figure, and several times faster;
    # the title gets its own strip above the first row's word labels
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.75 / height, wspace=0.05, hspace=0.3)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
