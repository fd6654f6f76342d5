"""Comparisons over training seeds (capt.eval.seeds): the two-level bootstrap equals a slow direct
computation (nltk on each resampled corpus of each drawn seed), reduces to the paired bootstrap
with one seed, and gives a model against itself exactly zero."""

from __future__ import annotations

import random

import numpy as np
import pytest
from nltk.translate.bleu_score import corpus_bleu

from capt.errors import CaptError
from capt.eval.bootstrap import _rng, image_scores, paired_bleu4, resample_indices
from capt.eval.seeds import _SEED_STREAM, delta_resampled_over_seeds, mean_sd, paired_bleu4_over_seeds
from capt.text import normalize_caption

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:nltk.translate.bleu_score")

WORDS = ["a", "red", "blue", "circle", "square", "above", "below", "the", "small", "big"]


def _refs(images: int) -> dict[int, list[str]]:
    rng = random.Random(0)
    return {10 + 3 * k: [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 9))) for _ in range(3)]
            for k in range(images)}


def _hyps(refs: dict[int, list[str]], seed: int, copy: float) -> dict[int, str]:
    """A model of one training seed: copies a reference with probability ``copy``."""
    rng = random.Random(seed)
    return {i: (r[rng.randrange(3)] if rng.random() < copy else
                " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9)))) for i, r in refs.items()}


def test_two_level_bootstrap_is_nltk_on_each_resampled_corpus_of_each_drawn_seed():
    refs = _refs(12)
    seeds = (0, 3, 7)
    hyps = {("s", s): _hyps(refs, 100 + s, 0.6) for s in seeds} | {("b", s): _hyps(refs, 200 + s, 0.3) for s in seeds}
    scores = {key: image_scores(refs, h) for key, h in hyps.items()}
    students, bases = {s: scores[("s", s)] for s in seeds}, {s: scores[("b", s)] for s in seeds}
    R = 40
    fast = delta_resampled_over_seeds(students, bases, R, seed=5)

    ids = students[0].image_ids
    images = resample_indices(ids, R, 5)                                              # (R, N)
    drawn = _rng(ids, 5, _SEED_STREAM).integers(0, len(seeds), size=(R, len(seeds)))  # (R, S)
    tok_refs = {i: [normalize_caption(c) for c in refs[i]] for i in ids}

    def bleu(model, r):
        picked = [ids[k] for k in images[r]]
        return corpus_bleu([tok_refs[i] for i in picked], [normalize_caption(hyps[model][i]) for i in picked])

    slow = [np.mean([bleu(("s", seeds[j]), r) - bleu(("b", seeds[j]), r) for j in drawn[r]]) for r in range(R)]
    assert fast == pytest.approx(slow, abs=1e-12)

    result = paired_bleu4_over_seeds(students, bases, R, seed=5)
    assert result.seeds == seeds and len(result.deltas) == 3
    assert result.deltas[1] == pytest.approx(students[3].bleu4 - bases[3].bleu4)
    assert (result.mean, result.sd) == pytest.approx(mean_sd(result.deltas))
    assert result.ci95 == pytest.approx(list(np.percentile(slow, [2.5, 97.5])))


def test_one_seed_is_the_paired_bootstrap_and_a_model_against_itself_is_zero():
    refs = _refs(30)
    a, b = image_scores(refs, _hyps(refs, 1, 0.7)), image_scores(refs, _hyps(refs, 2, 0.4))
    one = paired_bleu4_over_seeds({0: a}, {0: b}, 1000, seed=0)
    assert one.ci95 == paired_bleu4(a, b, 1000, seed=0).ci95 and one.sd is None
    itself = paired_bleu4_over_seeds({0: a, 1: b}, {0: a, 1: b}, 1000, seed=0)
    assert itself.ci95 == [0.0, 0.0] and itself.deltas == (0.0, 0.0) and itself.sd == 0.0


def test_seeds_must_pair_up():
    refs = _refs(5)
    a = image_scores(refs, _hyps(refs, 1, 0.5))
    with pytest.raises(CaptError, match=r"seeds \[0, 1\] and the baseline with \[0\]"):
        paired_bleu4_over_seeds({0: a, 1: a}, {0: a}, 1000, seed=0)
