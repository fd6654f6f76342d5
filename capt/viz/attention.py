"""Where a model looks for each word: the attention map of every generated word, upsampled
smoothly onto the image.

A figure is one picture, not a grid of matplotlib axes: each word's map is blended onto the image
in numpy (:func:`overlay`), the cells are laid into one canvas (:func:`mosaic`) drawn by a single
``imshow``, and the words are text over it. A comparison of 9 models x 2 techniques x 12 words
was 240 axes and ~10 s to draw; as one canvas it is well under a second
(benchmarks/bench_figures.py).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from capt.files import atomic_output  # noqa: E402

ALPHA = 0.5          # the map's weight in a cell; the image shows through with the rest
CELL_PX = 128        # a cell's pixels in the canvas: a little above what a 1.3-2 in cell shows at 80 dpi
GAP = 4              # white pixels between cells


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


def overlay(rgb: np.ndarray, heat: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """rgb uint8 (S, S, 3), heat (S, S) in [0, 1] -> float (S, S, 3) in [0, 1]: the map in the
    jet colour map (blue 0, red 1) blended over the image with weight ``alpha``."""
    colours = matplotlib.colormaps["jet"](heat)[..., :3]
    return (1 - alpha) * rgb.astype(np.float64) / 255 + alpha * colours


def mosaic(cells: list[list[np.ndarray | None]], size: int, gap: int = GAP, band: int = 0) -> np.ndarray:
    """Rows of cells, each float (size, size, 3) in [0, 1] or None (left white) -> one white canvas
    float (rows * (band + size + gap) - gap, columns * (size + gap) - gap, 3) with cell (r, c) at
    pixel (r * (band + size + gap) + band, c * (size + gap)): ``band`` white pixels above each row
    hold its words."""
    columns = max((len(row) for row in cells), default=0)
    step_y, step_x = band + size + gap, size + gap
    canvas = np.ones((max(len(cells) * step_y - gap, 1), max(columns * step_x - gap, 1), 3), np.float32)
    for r, row in enumerate(cells):
        for c, cell in enumerate(row):
            if cell is not None:
                canvas[r * step_y + band:r * step_y + band + size, c * step_x:c * step_x + size] = cell
    return canvas


def display_image(image: np.ndarray, size: int = CELL_PX) -> np.ndarray:
    """uint8 (3, S, S) -> uint8 (size, size, 3), antialiased when smaller: what a cell shows
    (drawing a 256 px image into a 104 px cell would only make matplotlib resample it)."""
    if image.shape[1] == size:
        return image.transpose(1, 2, 0)
    t = torch.as_tensor(image, dtype=torch.float32)[None]
    t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return t[0].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def _word_cells(rgb: np.ndarray, alphas: np.ndarray, n_words: int) -> list[np.ndarray]:
    """The image's own cell, then one overlay per word (maps as in :func:`upsample_attention`,
    upsampled straight to the cell's size)."""
    size = rgb.shape[0]
    heat = upsample_attention(np.asarray(alphas)[:n_words], size) if n_words else []
    return [rgb / 255, *(overlay(rgb, h) for h in heat)]


def _draw(fig: plt.Figure, rect: list[float], cells: list[list[np.ndarray]], titles: list[list[str]],
          fontsize: float) -> None:
    """The cells as one canvas (:func:`mosaic`) in one axes at ``rect`` (figure fractions; its
    aspect is the canvas's, so cells stay square), titles[r][c] in the band above cell (r, c)."""
    size = cells[0][0].shape[0]
    band = size // 5
    canvas = mosaic(cells, size, GAP, band)
    ax = fig.add_axes(rect)
    ax.imshow(canvas, interpolation="antialiased", aspect="auto")
    ax.axis("off")
    for r, row in enumerate(titles):
        for c, text in enumerate(row):
            if text:
                ax.text(c * (size + GAP) + size / 2, r * (band + size + GAP) + band - 2, text, ha="center",
                        va="bottom", fontsize=fontsize, clip_on=False)


def _canvas_inches(rows: int, columns: int, cell: float) -> tuple[float, float]:
    """(width, height) in inches of a :func:`mosaic` of rows x columns cells of ``cell`` inches."""
    px = cell / CELL_PX                             # inches per canvas pixel, at a cell's CELL_PX pixels
    band = CELL_PX // 5
    return (columns * (CELL_PX + GAP) - GAP) * px, (rows * (band + CELL_PX + GAP) - GAP) * px


def plot_attention(image: np.ndarray, words: list[str], alphas: np.ndarray, path: Path, title: str,
                   columns: int = 6) -> None:
    """image uint8 (3, S, S); words[i] was generated while attending alphas[i] (P,).
    One panel for the image, one per word with its map over the image; the caption in the title."""
    rgb = display_image(image)
    cells = _word_cells(rgb, alphas, len(words))
    labels = ["image", *words]
    rows = math.ceil(len(cells) / columns)
    grid = [cells[r * columns:(r + 1) * columns] for r in range(rows)]
    grid[0] += [None] * (columns - len(grid[0]))    # the canvas is always ``columns`` cells wide
    titles = [labels[r * columns:(r + 1) * columns] for r in range(rows)]
    w, h = _canvas_inches(rows, columns, cell=2.0)      # the full width, so that the title fits
    margin, head = 0.1, 0.55                        # inches: around the canvas, and the title above it
    fig = plt.figure(figsize=(w + 2 * margin, h + margin + head))
    W, H = fig.get_figwidth(), fig.get_figheight()
    _draw(fig, [margin / W, margin / H, w / W, h / H], grid, titles, fontsize=10)
    fig.suptitle(f"{title}\n{' '.join(words)}", fontsize=10, y=1 - 0.05 / H, va="top")
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)


def plot_comparison(image: np.ndarray, rows: list[tuple[str, list[str], np.ndarray]], path: Path,
                    title: str, max_words: int = 12) -> None:
    """Every model on one image: a row per model and technique (its label, caption and score at
    the left, then the image, then each word's map), a column per word position, the same colour
    scale and the same upsampling in every cell.

    image uint8 (3, S, S); rows: (label, words, maps (len(words), P)); the label may hold several
    lines (model, caption, BLEU-4); maps over any square grid (8x8 attention or BLIP's patch grid
    alike), each rescaled to [0, 1] as in plot_attention.
    """
    rgb = display_image(image)
    words_shown = min(max_words, max((len(w) for _, w, _ in rows), default=0))
    cells = [_word_cells(rgb, maps, min(len(words), max_words)) for _, words, maps in rows]
    titles = [["", *words[:max_words]] for _, words, _ in rows]
    w, h = _canvas_inches(len(rows), 1 + words_shown, cell=1.3)
    label_w, margin, head = 2.4, 0.1, 0.45          # inches: the label column, the margins, the title
    fig = plt.figure(figsize=(label_w + w + margin, h + margin + head))
    W, H = fig.get_figwidth(), fig.get_figheight()
    _draw(fig, [label_w / W, margin / H, w / W, h / H], cells, titles, fontsize=8)
    row_h = h / len(rows)
    for r, (label, _, _) in enumerate(rows):        # beside its row's cells (below the row's word band)
        y = margin + h - r * row_h - row_h * 0.6
        fig.text(0.05 / W, y / H, label, fontsize=7, va="center", ha="left", wrap=True)
    fig.suptitle(title, fontsize=10, y=1 - 0.1 / H, va="top")
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
