"""The pointing game's mask dilation (capt.eval.grounding.dilate: scipy's exact Euclidean distance
transform, thresholded) against the FFT disk convolution it replaced, same masks, same process.

A pointing hit lands within ``evaluate.grounding_tolerance`` pixels (15) of a category's mask; each
evaluation of a shapes test set dilates ~380 masks (each image's categories, once). Prints the
median milliseconds per mask of each over --repeats, their ratio, and whether every mask's pixels
agree.

    python benchmarks/bench_dilate.py                   # the shapes world's 128 px images
    python benchmarks/bench_dilate.py --size 480        # a COCO-sized image
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from capt.eval.grounding import dilate  # noqa: E402


def fft_dilate(mask: np.ndarray, radius: float) -> np.ndarray:
    """The count of mask pixels under a disk centred on each pixel, as one FFT product (the baseline)."""
    r = int(math.floor(radius))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    disk = torch.from_numpy((yy ** 2 + xx ** 2 <= radius ** 2).astype(np.float64))
    H, W = mask.shape
    size = (H + 2 * r, W + 2 * r)
    counts = torch.fft.irfft2(torch.fft.rfft2(torch.from_numpy(mask.astype(np.float64)), s=size)
                              * torch.fft.rfft2(disk, s=size), s=size)
    return (counts[r:r + H, r:r + W] > 0.5).numpy()


def random_masks(n: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """Filled ellipses of random place and size, as the shapes world's objects."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    masks = []
    for _ in range(n):
        cy, cx = rng.uniform(0, size, 2)
        ry, rx = rng.uniform(size / 20, size / 5, 2)
        masks.append(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1)
    return masks


def per_mask_ms(fn, masks, radius) -> float:
    t = time.perf_counter()
    for m in masks:
        fn(m, radius)
    return 1000 * (time.perf_counter() - t) / len(masks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--masks", type=int, default=100)
    parser.add_argument("--radius", type=float, default=15.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    masks = random_masks(args.masks, args.size)
    same = all(np.array_equal(dilate(m, args.radius), fft_dilate(m, args.radius)) for m in masks)
    naive = statistics.median(per_mask_ms(fft_dilate, masks, args.radius) for _ in range(args.repeats))
    ours = statistics.median(per_mask_ms(dilate, masks, args.radius) for _ in range(args.repeats))
    print(f"{args.masks} masks of {args.size}x{args.size}, radius {args.radius}: FFT convolution {naive:.2f} ms "
          f"a mask, distance transform {ours:.2f} ms a mask: {naive / ours:.1f}x; same pixels: {same}")


if __name__ == "__main__":
    main()
