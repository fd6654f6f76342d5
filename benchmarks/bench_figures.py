"""Why the attention figures are one canvas: the attention stage's side-by-side comparison (every
model and technique of the COCO profile: 9 models, 17 rows, 12 words, 256 px images) drawn as
capt.viz.attention draws it, against the naive way (a matplotlib axes per cell, the map imshown
with alpha over the image in each, as the project drew it before), in the same process. Prints
the median seconds of each over --repeats and their ratio.

    python benchmarks/bench_figures.py
    python benchmarks/bench_figures.py --rows 17 --words 12 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from capt.viz.attention import plot_comparison, plt, upsample_attention  # noqa: E402


def naive_comparison(image: np.ndarray, rows: list, path: Path, title: str) -> None:
    """A grid of axes, two imshows per word cell (the baseline)."""
    rgb = image.transpose(1, 2, 0)
    size = rgb.shape[0]
    columns = 2 + max(len(w) for _, w, _ in rows)
    fig, axes = plt.subplots(len(rows), columns, figsize=(1.3 * (columns + 1), 1.3 * 1.25 * len(rows) + 0.5),
                             squeeze=False, gridspec_kw={"width_ratios": [2, *[1] * (columns - 1)]})
    for ax in axes.flat:
        ax.axis("off")
    for r, (label, words, maps) in enumerate(rows):
        axes[r, 0].text(0, 0.5, label, fontsize=7, va="center", transform=axes[r, 0].transAxes)
        axes[r, 1].imshow(rgb)
        for c, (word, h) in enumerate(zip(words, upsample_attention(maps, size)), start=2):
            axes[r, c].imshow(rgb)
            axes[r, c].imshow(h, cmap="jet", alpha=0.5, vmin=0, vmax=1)
            axes[r, c].set_title(word, fontsize=8, pad=2)
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.95, wspace=0.05, hspace=0.3)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def median_seconds(draw, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        draw()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=17)
    parser.add_argument("--words", type=int, default=12)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (3, args.image_size, args.image_size), dtype=np.uint8)
    words = [f"word{i}" for i in range(args.words)]
    rows = [(f"model {r}\n“a caption”\nBLEU-4 0.10", words, rng.random((args.words, 64))) for r in range(args.rows)]
    with tempfile.TemporaryDirectory() as tmp:
        canvas = median_seconds(lambda: plot_comparison(image, rows, Path(tmp) / "c.png", "bench"), args.repeats)
        naive = median_seconds(lambda: naive_comparison(image, rows, Path(tmp) / "n.png", "bench"), args.repeats)
    print(f"{args.rows} rows x {args.words} words, {args.image_size} px images, median of {args.repeats}")
    print(f"  axes per cell (naive): {naive:.2f} s")
    print(f"  one canvas (capt):     {canvas:.2f} s")
    print(f"  speed-up: x{naive / canvas:.1f}")


if __name__ == "__main__":
    main()
