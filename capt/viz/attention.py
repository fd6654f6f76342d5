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
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
