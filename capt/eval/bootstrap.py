"""How sure is a corpus score, and is one model really better than another on the same images?

A test set of a few hundred (or 5,000) images is a sample: a BLEU-4 difference of 0.005 between
two students may be noise. Two tools answer that, both resampling the *images* of the test set
(the unit the test set samples), both on corpus-level metrics recomputed on every resample:

- a 95% **percentile bootstrap** interval (:func:`confidence_intervals` for BLEU-4 and CIDEr-D,
  :func:`statistic_ci95` for any other): draw N images with replacement, R times; the corpus
  metric on each draw; the 2.5th and 97.5th percentiles;
- a **paired** comparison of two models on one test set (:func:`paired_statistic`; for BLEU-4
  :func:`paired_bleu4`, for CIDEr-D :func:`paired_cider`): the observed difference, the
  percentile interval of the difference on the *same* resamples for both models (pairing removes
  the images' shared difficulty from the noise), and the p-value of a paired approximate
  randomisation test, as in MT significance testing (Riezler & Maxwell 2005; sacreBLEU's
  ``--paired-ar``): swap each image's statistics between the two systems with probability 1/2,
  R times; ``p = (count(|delta| >= |observed|) + 1) / (R + 1)``. The observed split counts as
  one of the R + 1, so no p is below 1/(R + 1): :func:`format_p` prints a p at that floor as
  ``p <= 0.001`` (R = 999 or 1,000), a bound, not an estimate.

Every metric here is a **function of sums**: per image an (N, K) array of statistics, and a
corpus function mapping their (..., K) sums to (...) scores. A resample is a multinomial count vector
over the images, so R resampled sums are one (R, N) @ (N, K) product and the corpus function
runs on R rows, never R re-scorings: seconds for 1,000 resamples of 5,000 images. Integer
statistics are summed in int64, so the sums are exact.

The per-image statistics and the corpus functions of BLEU-4 and CIDEr-D are capt.eval.per_image's
(nltk's corpus BLEU recomputed exactly from summed counts; CIDEr-D as the mean of per-image scores
whose idf is **fixed from the whole test set's references**, not recomputed per resample: the
question is which images the test set holds, not a different idf).

Other metrics (say a content metric whose per-image integer counts sum to precision, recall and
F1) need only their (N, K) statistics and a corpus function over (..., K) to get the same
interval (:func:`statistic_ci95`) and paired comparison (:func:`paired_statistic`).

The resamples (and the randomisation test's swaps) depend only on the seed and the test set's
sorted image ids, never on the model or the metric: two models on one test set get the same
resamples, so their intervals are comparable and the paired comparison is paired.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from capt.errors import CaptError
from capt.eval.per_image import CorpusFunction, ImageScores, cider_statistics, corpus_bleu4, corpus_cider, sort_key

__all__ = ["PairedComparison", "corpus_score", "resample_indices", "resample_counts", "statistic_resampled",
           "bleu4_resampled", "cider_resampled", "percentile_ci95", "statistic_ci95", "confidence_intervals",
           "paired_statistic", "paired_bleu4", "paired_cider", "p_value_floor", "format_p", "MIN_RESAMPLES"]

MIN_RESAMPLES = 1000      # fewer makes the 2.5th/97.5th percentiles themselves noisy
CI_PERCENTILES = (2.5, 97.5)

# Independent random streams from one seed: what each draw is for.
_BOOTSTRAP_STREAM, _RANDOMISATION_STREAM = 0, 1


# --------------------------------------------------------------------------- resamples


def _check_draws(resamples: int, seed: int) -> None:
    if isinstance(resamples, bool) or not isinstance(resamples, (int, np.integer)) or resamples < 1:
        raise CaptError(f"bootstrap resamples must be a positive integer, got {resamples!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise CaptError(f"the bootstrap seed must be a non-negative integer, got {seed!r}")


def _sorted_positions(image_ids) -> np.ndarray:
    """(N,) positions into ``image_ids`` in sorted-id order; CaptError on duplicates or none."""
    ids = list(image_ids)
    if not ids:
        raise CaptError("no images to resample")
    if len(set(ids)) != len(ids):
        raise CaptError(f"image ids repeat ({len(ids)} ids, {len(set(ids))} distinct): one score per image")
    return np.array(sorted(range(len(ids)), key=lambda k: sort_key(ids[k])), np.int64)


def _rng(image_ids, seed: int, stream: int) -> np.random.Generator:
    """A generator seeded by (``stream``, ``seed``, the sorted image ids): never by a model."""
    ids = json.dumps([str(i) for i in sorted(image_ids, key=sort_key)])
    digest = np.frombuffer(hashlib.sha256(ids.encode()).digest(), dtype="<u4")
    return np.random.default_rng(np.random.SeedSequence([stream, int(seed), *digest.tolist()]))


def resample_indices(image_ids, resamples: int, seed: int) -> np.ndarray:
    """(R, N) int64: resample r draws the images ``image_ids[resample_indices[r]]``, N with
    replacement. Drawn over the sorted ids, then mapped to the given order, so an image's draws
    depend only on ``seed`` and the test set's ids, whatever order a caller holds them in."""
    _check_draws(resamples, seed)
    order = _sorted_positions(image_ids)
    drawn = _rng(image_ids, seed, _BOOTSTRAP_STREAM).integers(0, len(order), size=(resamples, len(order)))
    return order[drawn]


def resample_counts(image_ids, resamples: int, seed: int) -> np.ndarray:
    """(R, N) int64: how often resample r draws image k (``image_ids[k]``); each row sums to N.
    A multinomial count vector per resample: resampled sums are ``counts @ per_image``."""
    indices = resample_indices(image_ids, resamples, seed)
    n = indices.shape[1]
    flat = (indices + n * np.arange(resamples)[:, None]).ravel()
    return np.bincount(flat, minlength=resamples * n).reshape(resamples, n)


def _image_statistics(image_ids: Sequence, stats: np.ndarray) -> np.ndarray:
    """``stats`` checked to be (N, K) for the N ``image_ids``: int64 where they are counts (their
    sums stay exact, however many resamples), else float64."""
    stats = np.asarray(stats)
    if stats.ndim != 2 or stats.shape[0] != len(image_ids) or stats.shape[1] < 1:
        raise CaptError(f"per-image statistics of {len(image_ids)} images must be an (N, K) array with "
                        f"N = {len(image_ids)}, got shape {stats.shape}")
    if stats.dtype.kind in "biu":
        return stats.astype(np.int64, copy=False)
    if stats.dtype.kind == "f":
        return stats.astype(np.float64, copy=False)
    raise CaptError(f"per-image statistics must be integer or float numbers, got dtype {stats.dtype}")


def _corpus_scores(corpus_fn: CorpusFunction, sums: np.ndarray) -> np.ndarray:
    """``corpus_fn(sums)`` as float64, checked to map (..., K) sums to (...) scores: a corpus
    function that returned one score for a stack of resamples would otherwise broadcast silently."""
    scores = np.asarray(corpus_fn(sums), np.float64)
    if scores.shape != sums.shape[:-1]:
        raise CaptError(f"a corpus function maps summed statistics (..., K) to scores (...): "
                        f"it gave shape {scores.shape} for sums of shape {sums.shape}")
    return scores


def corpus_score(image_ids: Sequence, stats: np.ndarray, corpus_fn: CorpusFunction) -> float:
    """The whole test set's corpus score: ``corpus_fn`` of the (K,) sum of ``stats`` (N, K)."""
    return float(_corpus_scores(corpus_fn, _image_statistics(image_ids, stats).sum(axis=0)))


def statistic_resampled(stats: np.ndarray, counts: np.ndarray, corpus_fn: CorpusFunction) -> np.ndarray:
    """(R,) corpus score of each resample: ``counts`` (R, N) @ ``stats`` (N, K) (in integers for
    integer statistics), then ``corpus_fn`` on the (R, K) sums."""
    return _corpus_scores(corpus_fn, np.asarray(counts, np.int64) @ stats)


def bleu4_resampled(scores: ImageScores, counts: np.ndarray) -> np.ndarray:
    """(R,) corpus BLEU-4 of each resample: ``counts`` (R, N) @ ``scores.bleu`` (N, 10), in
    integers, then :func:`corpus_bleu4`."""
    return statistic_resampled(scores.bleu, counts, corpus_bleu4)


def cider_resampled(scores: ImageScores, counts: np.ndarray) -> np.ndarray:
    """(R,) CIDEr-D of each resample: the count-weighted mean of the per-image scores (idf fixed)."""
    counts = np.asarray(counts)
    return (counts @ scores.cider) / counts.sum(axis=1)


def percentile_ci95(values: np.ndarray) -> list[float]:
    """``[low, high]``: the 2.5th and 97.5th percentiles of (R,) resampled values."""
    low, high = np.percentile(np.asarray(values, np.float64), CI_PERCENTILES)
    return [float(low), float(high)]


def statistic_ci95(image_ids: Sequence, stats: np.ndarray, corpus_fn: CorpusFunction,
                   resamples: int, seed: int) -> list[float]:
    """``[low, high]``: the percentile bootstrap interval over the test images of the corpus score
    ``corpus_fn`` of per-image ``stats`` (N, K), row k that of ``image_ids[k]``; the resamples of
    every metric and model on this test set (:func:`resample_counts`)."""
    stats = _image_statistics(image_ids, stats)
    return percentile_ci95(statistic_resampled(stats, resample_counts(image_ids, resamples, seed), corpus_fn))


def confidence_intervals(scores: ImageScores, resamples: int, seed: int) -> dict[str, list[float]]:
    """``bleu4_ci95`` and ``cider_ci95``: percentile bootstrap intervals over the test images."""
    counts = resample_counts(scores.image_ids, resamples, seed)
    return {"bleu4_ci95": percentile_ci95(bleu4_resampled(scores, counts)),
            "cider_ci95": percentile_ci95(cider_resampled(scores, counts))}


# --------------------------------------------------------------------------- paired comparison


@dataclass(frozen=True)
class PairedComparison:
    """A corpus score of model a minus model b on one test set: ``delta`` observed on the whole
    set, ``ci95`` its paired percentile bootstrap interval, ``p_value`` the paired approximate
    randomisation test's (two-sided; at least 1/(R + 1), :func:`format_p`), both from
    ``resamples`` draws."""

    delta: float
    ci95: list[float]
    p_value: float
    resamples: int


def _same_images(a_ids: Sequence, b_ids: Sequence) -> None:
    a_ids, b_ids = tuple(a_ids), tuple(b_ids)
    if a_ids != b_ids:
        only_a, only_b = set(a_ids) - set(b_ids), set(b_ids) - set(a_ids)
        raise CaptError(f"the two models were scored on different images ({len(a_ids)} and "
                        f"{len(b_ids)} images; {len(only_a)} and {len(only_b)} not in the other): "
                        "a paired comparison needs the same test set")


def _same_test_set(a: ImageScores, b: ImageScores) -> None:
    _same_images(a.image_ids, b.image_ids)
    if a.tokenizer != b.tokenizer:
        raise CaptError(f"the two models were scored on different tokens ({a.tokenizer} and {b.tokenizer}): "
                        "evaluate both with the same evaluate.tokenizer")


def paired_statistic(a_ids: Sequence, a_stats: np.ndarray, b_ids: Sequence, b_stats: np.ndarray,
                     corpus_fn: CorpusFunction, resamples: int, seed: int) -> PairedComparison:
    """Is a's corpus score higher than b's on this test set, beyond the images it happens to hold?

    ``a_stats``, ``b_stats``: (N, K) per-image statistics of the two models, row k that of image
    ``a_ids[k]`` (the same ids in the same order for both, and the same tokens wherever the
    statistics depend on them: the caller knows, :func:`paired_bleu4` checks); ``corpus_fn``:
    (..., K) summed statistics -> (...) scores.

    Bootstrap: the same (R, N) count matrix for both models (it depends on the ids only), the
    difference of their corpus scores per resample, its 2.5th and 97.5th percentiles.
    Randomisation: an (R, N) mask swaps image k's statistics between a and b where true (each
    with probability 1/2, its own seeded stream); the difference of the swapped corpora per
    round; ``p = (count(|delta_r| >= |delta|) + 1) / (R + 1)``. A model against itself: every
    difference is 0, so the interval is [0, 0] and p is 1.
    """
    _same_images(a_ids, b_ids)
    a_stats, b_stats = _image_statistics(a_ids, a_stats), _image_statistics(b_ids, b_stats)
    if a_stats.shape != b_stats.shape:
        raise CaptError(f"the two models have different per-image statistics ({a_stats.shape} and "
                        f"{b_stats.shape}): a paired comparison needs the same metric")
    counts = resample_counts(a_ids, resamples, seed)
    deltas = statistic_resampled(a_stats, counts, corpus_fn) - statistic_resampled(b_stats, counts, corpus_fn)
    total_a, total_b = a_stats.sum(axis=0), b_stats.sum(axis=0)
    observed = float(_corpus_scores(corpus_fn, total_a)) - float(_corpus_scores(corpus_fn, total_b))

    order = _sorted_positions(a_ids)
    swap_sorted = _rng(a_ids, seed, _RANDOMISATION_STREAM).random((resamples, len(order))) < 0.5
    swap = np.empty_like(swap_sorted)
    swap[:, order] = swap_sorted                      # image k's coin, whatever order the ids are in
    difference = b_stats - a_stats
    moved = swap.astype(difference.dtype) @ difference   # (R, K): what swapping adds to a's sums
    shuffled = _corpus_scores(corpus_fn, total_a + moved) - _corpus_scores(corpus_fn, total_b - moved)
    # A swap that reproduces the observed split sums the same floats in another order (CIDEr-D's
    # per-image scores), and may land an ulp below |observed|: a tie must count as one.
    tie = 1e-9 * max(1.0, abs(observed))
    extreme = int(np.count_nonzero(np.abs(shuffled) >= abs(observed) - tie))
    return PairedComparison(delta=observed, ci95=percentile_ci95(deltas),
                            p_value=(extreme + 1) / (resamples + 1), resamples=resamples)


def paired_bleu4(a: ImageScores, b: ImageScores, resamples: int, seed: int) -> PairedComparison:
    """Corpus BLEU-4 of a minus b, paired on their shared test set (:func:`paired_statistic` on
    ``bleu``, :func:`corpus_bleu4`); both scored on the same images and tokens."""
    _same_test_set(a, b)
    return paired_statistic(a.image_ids, a.bleu, b.image_ids, b.bleu, corpus_bleu4, resamples, seed)


def paired_cider(a: ImageScores, b: ImageScores, resamples: int, seed: int) -> PairedComparison:
    """CIDEr-D of a minus b, paired on their shared test set (:func:`paired_statistic` on
    :func:`cider_statistics`, :func:`corpus_cider`): each image's score keeps the whole test
    set's idf; both scored on the same images and tokens."""
    _same_test_set(a, b)
    return paired_statistic(a.image_ids, cider_statistics(a), b.image_ids, cider_statistics(b), corpus_cider,
                            resamples, seed)


# --------------------------------------------------------------------------- reporting p


def p_value_floor(resamples: int) -> float:
    """1/(R + 1): the smallest p the randomisation test gives in R rounds (none as extreme)."""
    _check_draws(resamples, 0)
    return 1 / (resamples + 1)


def format_p(p: float, resamples: int) -> str:
    """``"p 0.034"``, or ``"p <= 0.001"`` where p is at the floor 1/(R + 1) of R rounds: there the
    test says only that p is at most that, so the bound is printed, not a made-up exact value.

    The floor is rounded *up* to one significant digit, so the bound stays true (R = 999 or
    1,000: ``p <= 0.001``; R = 2,000: ``p <= 0.0005``); every p is printed with as many decimals
    as the floor needs, at least 3. A p below the floor, or outside (0, 1], is no p of R rounds.
    """
    floor = p_value_floor(resamples)
    p = float(p)
    if not floor * (1 - 1e-9) <= p <= 1 + 1e-9:
        raise CaptError(f"p = {p!r} is no p-value of {resamples} randomisation rounds (those lie in "
                        f"[1/{resamples + 1}, 1])")
    # The floor rounded up to one significant digit, digit / 10**places, in integers: a float
    # log10 of 1/1000 may land a hair either side of -3 and misplace the digit.
    places = len(str(resamples))                          # the fewest with 10**places >= R + 1
    digit = -(-10 ** places // (resamples + 1))           # ceil(10**places / (R + 1)), 1..10
    if digit == 10:
        digit, places = 1, places - 1
    if p <= floor * (1 + 1e-9):
        return f"p <= {digit / 10 ** places:.{places}f}"
    return f"p {p:.{max(3, places)}f}"
