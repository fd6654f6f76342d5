"""One model's per-image statistics on one test set: what corpus BLEU-4 and CIDEr-D sum over
the images, so that every interval and paired comparison (capt.eval.bootstrap, capt.eval.compare,
capt.eval.seeds) recomputes a corpus score from sums without scoring again.

Corpus BLEU is not a mean of per-image scores, but it is a function of sums: per image, the
clipped n-gram matches and the hypothesis n-gram counts for n = 1..4 (nltk's own
``modified_precision``), the hypothesis length and the closest reference length (nltk's
``closest_ref_length``); :func:`corpus_bleu4` recomputes nltk's ``corpus_bleu`` (no smoothing)
from their sums with nltk's own arithmetic, so it is the same float. CIDEr-D is the mean of
pycocoevalcap's per-image scores, each with the idf of the whole test set
(:func:`cider_statistics`, :func:`corpus_cider`).

capt.eval.metrics computes these statistics while it scores (``score_captions_per_image``);
this module holds only what both it and the resampling need, so neither imports the other.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from nltk.translate.bleu_score import brevity_penalty, closest_ref_length, modified_precision

from capt.errors import CaptError
from capt.files import write_atomic

BLEU_ORDERS = 4
# The columns of the per-image BLEU statistics, in order: what corpus BLEU-4 sums over images.
BLEU_STATISTICS = (*(f"matches_{n}" for n in range(1, BLEU_ORDERS + 1)),      # clipped n-gram matches
                   *(f"ngrams_{n}" for n in range(1, BLEU_ORDERS + 1)),       # hypothesis n-grams (at least 1)
                   "hyp_len", "closest_ref_len")
_MATCHES = slice(0, BLEU_ORDERS)
_NGRAMS = slice(BLEU_ORDERS, 2 * BLEU_ORDERS)
_HYP_LEN, _REF_LEN = 2 * BLEU_ORDERS, 2 * BLEU_ORDERS + 1
_BLEU4_WEIGHT = 1.0 / BLEU_ORDERS      # capt.eval.metrics.BLEU_WEIGHTS["bleu4"]: uniform
# The columns of the per-image CIDEr-D statistics: the image's score, and 1 (the mean's count).
CIDER_STATISTICS = ("cider", "images")

# A corpus score from summed per-image statistics: (..., K) sums -> (...) float64 scores.
CorpusFunction = Callable[[np.ndarray], np.ndarray]

# A corpus score from summed per-image statistics: (..., K) sums -> (...) float64 scores.
CorpusFunction = Callable[[np.ndarray], np.ndarray]


def sort_key(image_id):
    """The one order of image ids everywhere (scores, resamples, files): integers by value, then
    any other id by its repr."""
    return (0, image_id, "") if isinstance(image_id, (int, np.integer)) else (1, 0, repr(image_id))


def bleu_statistics(references: list[list[list[str]]], hypotheses: list[list[str]]) -> np.ndarray:
    """Per image, what nltk's ``corpus_bleu`` sums: (N, 10) int64, columns ``BLEU_STATISTICS``.

    ``references[k]``: image k's reference token lists, ``hypotheses[k]``: its hypothesis tokens.
    nltk builds ``modified_precision``'s Fraction with ``_normalize=False`` and reads its
    ``numerator`` / ``denominator`` as the raw match and n-gram counts; a normalised fraction
    (2/4 read as 1/2) would change the corpus sums, so the denominator is checked against the
    hypothesis's n-gram count (nltk's ``max(1, ...)``: a hypothesis shorter than n counts one).
    """
    if len(references) != len(hypotheses):
        raise CaptError(f"{len(references)} reference lists for {len(hypotheses)} hypotheses")
    stats = np.zeros((len(hypotheses), len(BLEU_STATISTICS)), np.int64)
    for k, (refs, hyp) in enumerate(zip(references, hypotheses)):
        for n in range(1, BLEU_ORDERS + 1):
            p = modified_precision(refs, hyp, n)
            ngrams = max(1, len(hyp) - n + 1)
            if p.denominator != ngrams:   # pragma: no cover - an nltk that normalises the Fraction
                raise RuntimeError(f"nltk's modified_precision returned {p.numerator}/{p.denominator} for "
                                   f"{ngrams} hypothesis {n}-grams: a normalised Fraction, not the counts")
            stats[k, n - 1] = p.numerator
            stats[k, BLEU_ORDERS + n - 1] = p.denominator
        stats[k, _HYP_LEN] = len(hyp)
        stats[k, _REF_LEN] = closest_ref_length(refs, len(hyp))
    return stats


def _bleu4_of_sums(row: list[int]) -> float:
    """nltk ``corpus_bleu`` (uniform BLEU-4 weights, no smoothing) from summed statistics, with
    nltk's arithmetic step by step so the float is the same: 0 without a unigram match; an order
    without a match gets ``sys.float_info.min`` as its precision (nltk's method0: the score is
    then about 1e-77, 0 in every printed digit); brevity penalty from the summed lengths."""
    matches, ngrams = row[_MATCHES], row[_NGRAMS]
    if matches[0] == 0:
        return 0.0
    bp = brevity_penalty(row[_REF_LEN], row[_HYP_LEN])
    # int / int is correctly rounded: the float nltk's math.log reads from its Fraction.
    precisions = [m / d if m else sys.float_info.min for m, d in zip(matches, ngrams)]
    return float(bp * math.exp(math.fsum(_BLEU4_WEIGHT * math.log(p) for p in precisions if p > 0)))


def corpus_bleu4(sums: np.ndarray) -> np.ndarray:
    """Corpus BLEU-4 of summed statistics: (..., 10) -> (...) float64, equal to nltk's
    ``corpus_bleu`` on the corpus whose per-image statistics were summed. A Python loop over
    rows (math.log, math.fsum, as nltk): numpy's vectorised log may differ in the last bit, and
    1,000 rows take milliseconds."""
    sums = np.asarray(sums)
    if sums.shape[-1:] != (len(BLEU_STATISTICS),):
        raise CaptError(f"BLEU statistics have {len(BLEU_STATISTICS)} columns, got shape {sums.shape}")
    rows = sums.reshape(-1, len(BLEU_STATISTICS)).tolist()
    return np.array([_bleu4_of_sums(r) for r in rows], np.float64).reshape(sums.shape[:-1])


def corpus_cider(sums: np.ndarray) -> np.ndarray:
    """CIDEr-D of summed :func:`cider_statistics`: (..., 2) -> (...) float64, the summed per-image
    scores over the number of images summed (a resample's or a swapped corpus's N)."""
    sums = np.asarray(sums, np.float64)
    if sums.shape[-1:] != (len(CIDER_STATISTICS),):
        raise CaptError(f"CIDEr-D statistics have {len(CIDER_STATISTICS)} columns, got shape {sums.shape}")
    return sums[..., 0] / sums[..., 1]


@dataclass(frozen=True)
class ImageScores:
    """One model's per-image statistics on one test set: what every interval and paired
    comparison needs, without re-scoring (``results/scores/<model>-<dataset>.json``).

    ``image_ids``: N ids, sorted by :func:`sort_key`; ``bleu``: (N, 10) int64,
    columns ``BLEU_STATISTICS``; ``cider``: (N,) float64, each image's CIDEr-D with the idf of the
    whole test set; ``tokenizer``: the tokens both were computed on.
    """

    image_ids: tuple
    bleu: np.ndarray
    cider: np.ndarray
    tokenizer: str

    def __post_init__(self):
        n = len(self.image_ids)
        if self.bleu.shape != (n, len(BLEU_STATISTICS)) or self.cider.shape != (n,):
            raise CaptError(f"per-image scores of {n} images with BLEU statistics {self.bleu.shape} "
                            f"and CIDEr-D {self.cider.shape}")

    @property
    def bleu4(self) -> float:
        """The full test set's corpus BLEU-4: score_captions' ``bleu4``."""
        return float(corpus_bleu4(self.bleu.sum(axis=0)))

    @property
    def cider_mean(self) -> float:
        """The full test set's CIDEr-D: score_captions' ``cider``."""
        return float(self.cider.mean())

    def to_json(self, model: str, dataset: str) -> dict:
        return {"model": model, "dataset": dataset, "tokenizer": self.tokenizer,
                "image_ids": [int(i) if isinstance(i, np.integer) else i for i in self.image_ids],
                "bleu_statistics": list(BLEU_STATISTICS),
                "bleu": self.bleu.tolist(), "cider": self.cider.tolist()}

    def write(self, path: Path, model: str, dataset: str) -> None:
        """One JSON file; an image's row of statistics per line (5,000 COCO images: ~300 KB)."""
        data = self.to_json(model, dataset)
        head = {k: v for k, v in data.items() if k not in ("image_ids", "bleu", "cider")}
        lines = [json.dumps(head)[:-1] + ","]
        lines.append(f' "image_ids": {json.dumps(data["image_ids"])},')
        lines.append(' "bleu": [\n  ' + ",\n  ".join(json.dumps(r) for r in data["bleu"]) + "\n ],")
        lines.append(f' "cider": {json.dumps(data["cider"])}' + "\n}\n")
        write_atomic(Path(path), "\n".join(lines))

    @classmethod
    def read(cls, path: Path, stage: str) -> "ImageScores":
        """The scores an evaluation wrote (``stage`` names it, for the error line)."""
        data = read_stage_json(path, stage)
        if not isinstance(data, dict) or any(k not in data for k in ("image_ids", "bleu", "cider", "tokenizer")):
            raise CaptError(f"{path}: not per-image scores (image_ids, bleu, cider, tokenizer); run {stage} again")
        if data.get("bleu_statistics") != list(BLEU_STATISTICS):
            raise CaptError(f"{path}: BLEU statistics {data.get('bleu_statistics')}, not {list(BLEU_STATISTICS)}; "
                            f"run {stage} again")
        bleu = np.asarray(data["bleu"], np.int64).reshape(-1, len(BLEU_STATISTICS))
        return cls(tuple(data["image_ids"]), bleu, np.asarray(data["cider"], np.float64), data["tokenizer"])


def read_stage_json(path: Path, stage: str):
    """The JSON a stage wrote, or one error line naming the file and the stage to run."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CaptError(f"{path}: missing; run {stage}") from None
    except json.JSONDecodeError as e:
        raise CaptError(f"{path}: not JSON ({e}); run {stage} again") from None


def cider_statistics(scores: ImageScores) -> np.ndarray:
    """Per image, what the test set's CIDEr-D sums: (N, 2) float64, columns ``CIDER_STATISTICS``
    (the image's CIDEr-D with the whole test set's idf, and 1), so that CIDEr-D is a function of
    sums like every other metric here: :func:`corpus_cider` of their sum is ``scores.cider_mean`` (up
    to the order of the float additions)."""
    return np.stack([scores.cider, np.ones_like(scores.cider)], axis=1)


