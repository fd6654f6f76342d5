"""Is a student's difference to the baseline larger than what another training seed would give?

One training run per variant answers only for the test images (capt.eval.bootstrap): a second
seed may rank the variants differently. With every student trained on the same seeds (the
baseline too), each seed s gives a paired difference d_s = score(variant, seed s) - score(baseline,
seed s) on the whole test set, for BLEU-4, CIDEr-D or any corpus score of summed per-image
statistics; their mean is the effect, their standard deviation (S - 1) its spread over the S
training runs.

The 95% interval of the mean is a **Student t-interval** on the S paired differences,
``mean ± t_{0.975, S-1} · sd / sqrt(S)``, with no interval for one seed. Seeds are few (3 to 5),
and a percentile bootstrap over so few values under-covers: its resampled means spread with the
plug-in sd (divisor S, not S - 1) and follow normal rather than t quantiles, both of which
narrow it in small samples (the percentile interval's "narrowness bias": Hesterberg 2015, "What
teachers should know about the bootstrap", The American Statistician 69(4)). With 5 seeds the
two-level percentile bootstrap this module used before covered 77% at nominal 95% in review (a
percentile bootstrap of 5 normal values alone covers about 84%), the t-interval 89-95%; it is
exact for normal differences.

The interval is over training seeds on this test set: every d_s is measured on the same
images, so it does not widen with the images' sampling noise; that is the paired bootstrap's
answer for one seed (capt.eval.bootstrap.paired_bleu4 and its kin).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from capt.errors import CaptError
from capt.eval.bootstrap import _same_images, _same_test_set, corpus_score
from capt.eval.per_image import CorpusFunction, ImageScores

CI_LEVEL = 0.95


@dataclass(frozen=True)
class SeedComparison:
    """A variant minus the baseline over the S = ``len(seeds)`` training seeds, on one test set:
    ``deltas[k]`` the difference of the two trained with ``seeds[k]``, ``mean`` and ``sd``
    (S - 1; None for one seed) over seeds, ``ci95`` the Student t-interval of the mean
    (:func:`t_interval95`; None for one seed)."""

    seeds: tuple[int, ...]
    deltas: tuple[float, ...]
    mean: float
    sd: float | None
    ci95: list[float] | None


def mean_sd(values) -> tuple[float, float | None]:
    """The mean and the sample standard deviation (n - 1; None for one value)."""
    values = np.asarray(values, np.float64)
    return float(values.mean()), (float(values.std(ddof=1)) if len(values) > 1 else None)


def t_interval95(deltas: np.ndarray) -> np.ndarray:
    """(..., 2) ``[low, high]``: the 95% Student t-interval of the mean of (..., S) per-seed
    differences, ``mean ± t_{0.975, S-1} · sd / sqrt(S)`` over the last axis; S >= 2."""
    from scipy.stats import t     # half a second to import: only intervals over seeds need it

    deltas = np.asarray(deltas, np.float64)
    seeds = deltas.shape[-1] if deltas.ndim else 0
    if seeds < 2:
        raise CaptError(f"a t-interval over seeds needs at least two seeds, got {seeds}")
    mean = deltas.mean(axis=-1)
    half = t.ppf(0.5 + CI_LEVEL / 2, seeds - 1) * deltas.std(axis=-1, ddof=1) / np.sqrt(seeds)
    return np.stack([mean - half, mean + half], axis=-1)


def compare_over_seeds(deltas: Mapping[int, float]) -> SeedComparison:
    """The comparison over seeds of per-seed differences, ``deltas[s]`` that of the two models
    trained with seed s (any metric): mean, sd and the t-interval, both None for one seed."""
    seeds = tuple(sorted(deltas))
    if not seeds:
        raise CaptError("no training seed to compare")
    values = tuple(float(deltas[s]) for s in seeds)
    mean, sd = mean_sd(values)
    ci95 = [float(v) for v in t_interval95(values)] if len(seeds) > 1 else None
    return SeedComparison(seeds, values, mean, sd, ci95)


def _paired_seeds(students: Mapping, baselines: Mapping) -> list[int]:
    """The seeds both were trained with: every one, or CaptError."""
    seeds = sorted(students)
    if not seeds:
        raise CaptError("no training seed to compare")
    if sorted(baselines) != seeds:
        raise CaptError(f"the variant was trained with seeds {seeds} and the baseline with {sorted(baselines)}: "
                        "a comparison over seeds pairs the two trained with the same seed")
    return seeds


def _scores_over_seeds(students: Mapping[int, ImageScores], baselines: Mapping[int, ImageScores]) -> list[int]:
    """The paired seeds, every model of every seed scored on one test set with one tokenizer."""
    seeds = _paired_seeds(students, baselines)
    for s in seeds:
        _same_test_set(students[s], students[seeds[0]])
        _same_test_set(students[s], baselines[s])
    return seeds


def paired_bleu4_over_seeds(students: Mapping[int, ImageScores], baselines: Mapping[int, ImageScores],
                            resamples: int | None = None, seed: int | None = None) -> SeedComparison:
    """Corpus BLEU-4 of the variant minus the baseline's, per seed (``students[s]`` against
    ``baselines[s]``, on one test set) and over seeds, with the t-interval of the mean.

    ``resamples`` and ``seed`` were the two-level bootstrap's; the t-interval draws nothing, and
    they are accepted, unused, for the callers that still pass them."""
    seeds = _scores_over_seeds(students, baselines)
    return compare_over_seeds({s: float(students[s].bleu4 - baselines[s].bleu4) for s in seeds})


def paired_cider_over_seeds(students: Mapping[int, ImageScores],
                            baselines: Mapping[int, ImageScores]) -> SeedComparison:
    """CIDEr-D (each image's with the whole test set's idf) of the variant minus the baseline's,
    per seed and over seeds, with the t-interval of the mean."""
    seeds = _scores_over_seeds(students, baselines)
    return compare_over_seeds({s: float(students[s].cider_mean - baselines[s].cider_mean) for s in seeds})


def paired_statistic_over_seeds(students: Mapping[int, tuple[Sequence, np.ndarray]],
                                baselines: Mapping[int, tuple[Sequence, np.ndarray]],
                                corpus_fn: CorpusFunction) -> SeedComparison:
    """Any corpus score of summed per-image statistics, the variant minus the baseline, per seed
    and over seeds, with the t-interval of the mean.

    ``students[s]`` / ``baselines[s]``: ``(image_ids, stats)`` of the model trained with seed s,
    stats (N, K) with row k that of ``image_ids[k]``, the same ids for every model and seed;
    ``corpus_fn``: (..., K) sums -> (...) scores (capt.eval.bootstrap.paired_statistic's)."""
    seeds = _paired_seeds(students, baselines)
    ids = students[seeds[0]][0]
    for s in seeds:
        _same_images(students[s][0], ids)
        _same_images(baselines[s][0], ids)
    return compare_over_seeds({s: corpus_score(*students[s], corpus_fn) - corpus_score(*baselines[s], corpus_fn)
                               for s in seeds})
