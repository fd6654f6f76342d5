"""Bootstrap intervals and paired comparisons (capt.eval.bootstrap): the cached per-image
statistics give nltk's corpus BLEU-4 on every resample, the resamples depend on the test set and
never on the model, and the paired test says what it should on a model against itself and on a
clearly better one."""

from __future__ import annotations

import random

import numpy as np
import pytest
from nltk.translate.bleu_score import corpus_bleu

from capt.errors import CaptError
from capt.eval.bootstrap import (ImageScores, bleu4_resampled, cider_resampled, confidence_intervals, corpus_bleu4,
                                 image_scores, paired_bleu4, resample_counts, resample_indices)
from capt.eval.metrics import score_captions
from capt.text import normalize_caption

# nltk warns whenever an n-gram order has no match; the slow reference computations hit that.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:nltk.translate.bleu_score")

WORDS = ["a", "red", "blue", "circle", "square", "above", "below", "the", "small", "big"]


def _captions(images: int, seed: int, short: bool = True) -> tuple[dict[int, list[str]], dict[int, str]]:
    """Random references (three per image) and hypotheses from a small vocabulary: partial
    n-gram overlaps, some hypotheses shorter than 4 tokens (nltk counts one unmatched n-gram)."""
    rng = random.Random(seed)
    shortest = 1 if short else 5

    def sentence() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(shortest, 9)))

    refs = {1000 + 7 * k: [sentence() for _ in range(3)] for k in range(images)}
    hyps = {i: (r[0] if rng.random() < 0.3 else sentence()) for i, r in refs.items()}
    return refs, hyps


def test_every_resample_is_nltk_corpus_bleu_on_the_resampled_lists():
    refs, hyps = _captions(12, seed=1)
    scores = image_scores(refs, hyps)
    ids = list(scores.image_ids)
    ref_tokens = [[normalize_caption(c) for c in refs[i]] for i in ids]
    hyp_tokens = [normalize_caption(hyps[i]) for i in ids]
    indices = resample_indices(ids, 60, seed=3)                       # (R, N)
    fast = bleu4_resampled(scores, resample_counts(ids, 60, seed=3))  # (R,)
    slow = [corpus_bleu([ref_tokens[k] for k in row], [hyp_tokens[k] for k in row]) for row in indices]
    assert fast.shape == (60,)
    assert fast.tolist() == slow                                      # the same floats, not close ones
    assert len(set(fast.tolist())) > 30                               # the resamples do differ
    assert any(0 < s < 1e-60 for s in slow), "no resample without a 4-gram match: nltk's float_info.min path"


def test_full_set_statistics_are_score_captions_bleu4_and_cider():
    refs, hyps = _captions(30, seed=2)
    scores = image_scores(refs, hyps)
    want = score_captions(refs, hyps, meteor=False)
    assert scores.bleu4 == want["bleu4"]
    assert scores.cider_mean == pytest.approx(want["cider"], rel=1e-12)
    assert list(scores.image_ids) == sorted(refs)
    # Summed statistics: the same as nltk on the whole lists, here and on a degenerate corpus.
    none = np.zeros((1, 10), np.int64)
    none[0, 4:] = [3, 2, 1, 1, 3, 5]                                  # 3 tokens, no match
    assert corpus_bleu4(none.sum(axis=0)) == 0.0


def test_a_model_against_itself_differs_by_exactly_zero_with_p_one():
    refs, hyps = _captions(25, seed=4)
    scores = image_scores(refs, hyps)
    same = paired_bleu4(scores, scores, 1000, seed=0)
    assert same.delta == 0.0 and same.ci95 == [0.0, 0.0] and same.p_value == 1.0


def test_resamples_depend_on_the_test_set_and_seed_never_on_the_model():
    refs, hyps = _captions(20, seed=5)
    other = {i: "a big square" for i in hyps}
    a, b = image_scores(refs, hyps), image_scores(refs, other)
    assert a.bleu4 != b.bleu4
    counts = resample_counts(a.image_ids, 1000, seed=0)
    assert counts.shape == (1000, 20) and (counts.sum(axis=1) == 20).all()
    assert np.array_equal(counts, resample_counts(b.image_ids, 1000, seed=0))
    # Whatever order the ids come in, each image gets the same counts.
    shuffled = list(a.image_ids)[::-1]
    assert np.array_equal(resample_counts(shuffled, 1000, seed=0)[:, ::-1], counts)
    assert not np.array_equal(resample_counts(a.image_ids, 1000, seed=1), counts)
    assert not np.array_equal(resample_counts(list(a.image_ids)[1:] + [1], 1000, seed=0)[:, :-1], counts[:, 1:])
    with pytest.raises(CaptError, match="image ids repeat"):
        resample_counts([1, 1, 2], 10, seed=0)
    with pytest.raises(CaptError, match="positive integer"):
        resample_counts([1, 2], 0, seed=0)


def test_a_clearly_better_system_gets_a_small_p_value():
    refs, _ = _captions(60, seed=6, short=False)
    rng = random.Random(0)
    good = {i: r[0] for i, r in refs.items()}                         # a human caption: high BLEU
    bad = {i: " ".join(rng.sample(r[1].split(), len(r[1].split()))) for i, r in refs.items()}   # shuffled words
    better = paired_bleu4(image_scores(refs, good), image_scores(refs, bad), 1000, seed=0)
    assert better.delta > 0.2
    assert better.p_value < 0.01 and better.p_value >= 1 / 1001
    assert 0 < better.ci95[0] < better.delta < better.ci95[1]
    worse = paired_bleu4(image_scores(refs, bad), image_scores(refs, good), 1000, seed=0)
    assert worse.delta == -better.delta and worse.p_value == better.p_value


def test_intervals_contain_the_point_estimate():
    refs, hyps = _captions(40, seed=7)
    scores = image_scores(refs, hyps)
    ci = confidence_intervals(scores, 1000, seed=0)
    low, high = ci["bleu4_ci95"]
    assert 0 < low < scores.bleu4 < high < 1
    low, high = ci["cider_ci95"]
    assert low < scores.cider_mean < high
    counts = resample_counts(scores.image_ids, 5, seed=0)
    assert cider_resampled(scores, counts) == pytest.approx((counts @ scores.cider) / 40)


def test_scores_file_round_trip_and_mismatched_test_sets(tmp_path):
    refs, hyps = _captions(10, seed=8)
    scores = image_scores(refs, hyps)
    scores.write(tmp_path / "m-shapes.json", "m", "shapes")
    back = ImageScores.read(tmp_path / "m-shapes.json", "evaluate@m-shapes")
    assert back.image_ids == scores.image_ids and back.tokenizer == "simple"
    assert np.array_equal(back.bleu, scores.bleu) and np.array_equal(back.cider, scores.cider)
    with pytest.raises(CaptError, match="missing; run evaluate@x-shapes"):
        ImageScores.read(tmp_path / "x-shapes.json", "evaluate@x-shapes")
    fewer = image_scores({i: refs[i] for i in list(refs)[1:]}, {i: hyps[i] for i in list(refs)[1:]})
    with pytest.raises(CaptError, match="different images"):
        paired_bleu4(scores, fewer, 1000, seed=0)
