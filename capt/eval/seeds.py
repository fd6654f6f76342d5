"""Is a student's difference to the baseline larger than what another training seed would give?

One training run per variant answers only for the test images (capt.eval.bootstrap): a second
seed may rank the variants differently. With every student trained on the same seeds (the
baseline too), each seed s gives a paired difference d_s = BLEU-4(variant, seed s) - BLEU-4(baseline,
seed s) on the whole test set; their mean is the effect, their standard deviation its spread over
training runs. Its 95% interval is a **two-level percentile bootstrap** (hierarchical: Davison &
Hinkley 1997, 2.4): each resample draws the test images with replacement (the same count matrix
for every model and seed, capt.eval.bootstrap.resample_counts) and the seeds with replacement,
and averages the drawn seeds' differences on the drawn images; so the interval widens both with
the images' noise and with the seeds'. With one seed it is the paired bootstrap interval of
capt.eval.bootstrap.paired_bleu4.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from capt.errors import CaptError
from capt.eval.bootstrap import (ImageScores, _rng, _same_test_set, bleu4_resampled, percentile_ci95,
                                 resample_counts)

_SEED_STREAM = 2          # capt.eval.bootstrap's streams are 0 (images) and 1 (randomisation)


@dataclass(frozen=True)
class SeedComparison:
    """A variant minus the baseline over training seeds, on one test set: ``deltas[k]`` the
    difference of the two trained with ``seeds[k]``, ``mean`` and ``sd`` (n - 1; None for one
    seed) over seeds, ``ci95`` the two-level bootstrap interval of the mean."""

    seeds: tuple[int, ...]
    deltas: tuple[float, ...]
    mean: float
    sd: float | None
    ci95: list[float]
    resamples: int


def mean_sd(values) -> tuple[float, float | None]:
    """The mean and the sample standard deviation (n - 1; None for one value)."""
    values = np.asarray(values, np.float64)
    return float(values.mean()), (float(values.std(ddof=1)) if len(values) > 1 else None)


def delta_resampled_over_seeds(students: dict[int, ImageScores], baselines: dict[int, ImageScores],
                               resamples: int, seed: int) -> np.ndarray:
    """(R,) the mean over resampled seeds of the resampled paired BLEU-4 differences.

    ``students[s]`` / ``baselines[s]``: per training seed s, the two models' per-image statistics on
    one test set. Resample r draws the images with counts ``resample_counts(...)[r]`` (shared by
    every seed) and S seeds with replacement (its own stream of ``seed`` and the image ids)."""
    seeds = sorted(students)
    if not seeds:
        raise CaptError("no training seed to compare")
    if sorted(baselines) != seeds:
        raise CaptError(f"the variant was trained with seeds {seeds} and the baseline with {sorted(baselines)}: "
                        "a comparison over seeds pairs the two trained with the same seed")
    ids = students[seeds[0]].image_ids
    for s in seeds:
        _same_test_set(students[s], students[seeds[0]])
        _same_test_set(students[s], baselines[s])
    counts = resample_counts(ids, resamples, seed)                                   # (R, N)
    per_seed = np.stack([bleu4_resampled(students[s], counts) - bleu4_resampled(baselines[s], counts)
                         for s in seeds])                                             # (S, R)
    drawn = _rng(ids, seed, _SEED_STREAM).integers(0, len(seeds), size=(resamples, len(seeds)))   # (R, S)
    return per_seed[drawn, np.arange(resamples)[:, None]].mean(axis=1)


def paired_bleu4_over_seeds(students: dict[int, ImageScores], baselines: dict[int, ImageScores],
                            resamples: int, seed: int) -> SeedComparison:
    """The variant's BLEU-4 minus the baseline's, per seed and over seeds, with the two-level
    bootstrap interval of the mean (:func:`delta_resampled_over_seeds`)."""
    boot = delta_resampled_over_seeds(students, baselines, resamples, seed)
    seeds = tuple(sorted(students))
    deltas = tuple(float(students[s].bleu4 - baselines[s].bleu4) for s in seeds)
    mean, sd = mean_sd(deltas)
    return SeedComparison(seeds, deltas, mean, sd, percentile_ci95(boot), resamples)
