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
from capt.eval.bootstrap import (_RANDOMISATION_STREAM, _rng, _sorted_positions, bleu4_resampled, cider_resampled,
                                 confidence_intervals, corpus_score, format_p, p_value_floor, paired_bleu4, paired_cider,
                                 paired_statistic, percentile_ci95, resample_counts, resample_indices, statistic_ci95)
from capt.eval.metrics import image_scores, score_captions
from capt.eval.per_image import ImageScores, cider_statistics, corpus_bleu4, corpus_cider
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
    back = ImageScores.read(tmp_path / "m-shapes.json", "evaluate@m")
    assert back.image_ids == scores.image_ids and back.tokenizer == "simple"
    assert np.array_equal(back.bleu, scores.bleu) and np.array_equal(back.cider, scores.cider)
    with pytest.raises(CaptError, match="missing; run evaluate@x"):
        ImageScores.read(tmp_path / "x-shapes.json", "evaluate@x")
    fewer = image_scores({i: refs[i] for i in list(refs)[1:]}, {i: hyps[i] for i in list(refs)[1:]})
    with pytest.raises(CaptError, match="different images"):
        paired_bleu4(scores, fewer, 1000, seed=0)


# --------------------------------------------------------------------------- any ratio of sums


def _paired_bleu4_before_paired_statistic(a: ImageScores, b: ImageScores, resamples: int, seed: int):
    """paired_bleu4 as it was written before paired_statistic took its place, line for line:
    (delta, ci95, p)."""
    counts = resample_counts(a.image_ids, resamples, seed)
    deltas = bleu4_resampled(a, counts) - bleu4_resampled(b, counts)
    observed = a.bleu4 - b.bleu4
    order = _sorted_positions(a.image_ids)
    swap_sorted = _rng(a.image_ids, seed, _RANDOMISATION_STREAM).random((resamples, len(order))) < 0.5
    swap = np.empty_like(swap_sorted)
    swap[:, order] = swap_sorted
    moved = swap.astype(np.int64) @ (b.bleu - a.bleu)
    total_a, total_b = a.bleu.sum(axis=0), b.bleu.sum(axis=0)
    shuffled = corpus_bleu4(total_a + moved) - corpus_bleu4(total_b - moved)
    extreme = int(np.count_nonzero(np.abs(shuffled) >= abs(observed)))
    return float(observed), percentile_ci95(deltas), (extreme + 1) / (resamples + 1)


def test_paired_bleu4_through_paired_statistic_is_the_old_algorithm_bit_for_bit():
    refs, hyps = _captions(50, seed=9)
    rng = random.Random(1)
    other = {i: (h if rng.random() < 0.9 else refs[i][1]) for i, h in hyps.items()}   # close: p not at its floor
    a, b = image_scores(refs, hyps), image_scores(refs, other)
    for seed in (0, 7):
        got = paired_bleu4(a, b, 1000, seed)
        assert (got.delta, got.ci95, got.p_value) == _paired_bleu4_before_paired_statistic(a, b, 1000, seed)
        assert got.resamples == 1000 and 1 / 1001 < got.p_value < 1
    # The generic percentile interval is the evaluations' BLEU-4 interval, to the bit.
    assert statistic_ci95(a.image_ids, a.bleu, corpus_bleu4, 1000, 0) == confidence_intervals(a, 1000, 0)["bleu4_ci95"]
    assert corpus_score(a.image_ids, a.bleu, corpus_bleu4) == a.bleu4


def _shifted(scores: ImageScores, cider: np.ndarray) -> ImageScores:
    return ImageScores(scores.image_ids, scores.bleu, np.asarray(cider, np.float64), scores.tokenizer)


def test_paired_cider_against_itself_and_a_model_better_by_c_on_every_image():
    refs, hyps = _captions(60, seed=10)
    a = image_scores(refs, hyps)
    same = paired_cider(a, a, 1000, seed=0)
    assert same.delta == 0.0 and same.ci95 == [0.0, 0.0] and same.p_value == 1.0
    assert corpus_cider(cider_statistics(a).sum(axis=0)) == pytest.approx(a.cider_mean, rel=1e-14)

    better = paired_cider(_shifted(a, a.cider + 0.25), a, 1000, seed=0)
    assert better.delta == pytest.approx(0.25, abs=1e-12)
    assert better.ci95 == pytest.approx([0.25, 0.25], abs=1e-12)
    # Swapping k of 60 images gives 0.25 (60 - 2k) / 60: as extreme only with none or all swapped.
    assert better.p_value == p_value_floor(1000) and format_p(better.p_value, 1000) == "p <= 0.001"
    worse = paired_cider(a, _shifted(a, a.cider + 0.25), 1000, seed=0)
    assert worse.delta == pytest.approx(-0.25, abs=1e-12) and worse.p_value == better.p_value


def test_a_swap_that_reproduces_the_observed_split_counts_as_extreme():
    """Two models that differ on one image: every swap gives exactly +-delta, so p is 1. CIDEr-D's
    float sums land an ulp off in another order; those ties must still count."""
    refs, hyps = _captions(60, seed=12)
    a = image_scores(refs, hyps)
    for k, bump in ((55, 0.729286101959233), (48, 0.2668641420200003), (45, 0.5609154760541797), (3, 0.1)):
        cider = a.cider.copy()
        cider[k] += bump
        assert paired_cider(_shifted(a, cider), a, 1000, seed=0).p_value == 1.0


def test_the_swap_test_tells_a_consistent_difference_from_noise():
    refs, hyps = _captions(100, seed=11)
    a = image_scores(refs, hyps)
    rng = np.random.default_rng(0)
    consistent = paired_cider(_shifted(a, a.cider + rng.normal(0.1, 0.05, 100)), a, 1000, seed=0)
    assert consistent.p_value < 0.01 and 0 < consistent.ci95[0] < consistent.delta < consistent.ci95[1]
    # Zero-mean noise per image: p spreads over (0, 1] as a p-value should under no difference.
    noise = [paired_cider(_shifted(a, a.cider + rng.normal(0.0, 0.3, 100)), a, 1000, seed=0).p_value
             for _ in range(20)]
    assert 0.3 < np.mean(noise) < 0.7 and sum(p < 0.05 for p in noise) <= 3


def _f1_statistics(images: int, seed: int, hit: float) -> np.ndarray:
    """(N, 3) int64 per-image counts of a content metric: matched, predicted, reference items."""
    rng = np.random.default_rng(seed)
    predicted = rng.integers(1, 6, images)
    reference = rng.integers(1, 6, images)
    matched = rng.binomial(np.minimum(predicted, reference), hit)
    return np.stack([matched, predicted, reference], axis=1).astype(np.int64)


def corpus_f1(sums: np.ndarray) -> np.ndarray:
    """(..., 3) summed counts -> (...) F1 = 2 matched / (predicted + reference)."""
    sums = np.asarray(sums)
    return 2 * sums[..., 0] / (sums[..., 1] + sums[..., 2])


def test_any_ratio_of_sums_gets_the_interval_and_paired_comparison_of_its_resampled_corpora():
    ids = [50 + 3 * k for k in range(40)]
    a, b = _f1_statistics(40, seed=1, hit=0.8), _f1_statistics(40, seed=2, hit=0.4)
    indices = resample_indices(ids, 200, seed=3)                          # (R, N)
    slow_a = [float(corpus_f1(a[row].sum(axis=0))) for row in indices]
    slow_b = [float(corpus_f1(b[row].sum(axis=0))) for row in indices]
    assert statistic_ci95(ids, a, corpus_f1, 200, seed=3) == pytest.approx(list(np.percentile(slow_a, [2.5, 97.5])))
    paired = paired_statistic(ids, a, ids, b, corpus_f1, 200, seed=3)
    assert paired.delta == pytest.approx(float(corpus_f1(a.sum(axis=0)) - corpus_f1(b.sum(axis=0))))
    assert paired.ci95 == pytest.approx(list(np.percentile(np.subtract(slow_a, slow_b), [2.5, 97.5])))
    assert paired.delta > 0 and paired.p_value < 0.05
    same = paired_statistic(ids, a, ids, a, corpus_f1, 200, seed=3)
    assert (same.delta, same.ci95, same.p_value) == (0.0, [0.0, 0.0], 1.0)
    # Rows in another order, with their ids: the same draws for each image, so the same result.
    order = np.random.default_rng(0).permutation(40)
    shuffled = paired_statistic([ids[k] for k in order], a[order], [ids[k] for k in order], b[order], corpus_f1,
                                200, seed=3)
    assert shuffled == paired


def test_paired_statistic_refuses_what_cannot_be_paired():
    ids = list(range(10))
    a, b = _f1_statistics(10, seed=1, hit=0.5), _f1_statistics(10, seed=2, hit=0.5)
    with pytest.raises(CaptError, match="different images"):
        paired_statistic(ids, a, ids[::-1], b, corpus_f1, 100, seed=0)
    with pytest.raises(CaptError, match="same metric"):
        paired_statistic(ids, a, ids, b[:, :2], corpus_f1, 100, seed=0)
    with pytest.raises(CaptError, match=r"\(N, K\) array with N = 10"):
        statistic_ci95(ids, a[:9], corpus_f1, 100, seed=0)
    with pytest.raises(CaptError, match="maps summed statistics"):
        statistic_ci95(ids, a, lambda sums: float(np.sum(sums)), 100, seed=0)
    refs, hyps = _captions(10, seed=12)
    simple, ptb = image_scores(refs, hyps), image_scores(refs, hyps)
    ptb = ImageScores(ptb.image_ids, ptb.bleu, ptb.cider, "ptb")
    with pytest.raises(CaptError, match="different tokens"):
        paired_cider(simple, ptb, 100, seed=0)


def test_p_values_at_the_floor_print_as_a_bound():
    assert format_p(1 / 1001, 1000) == "p <= 0.001"                     # 0.000999..., rounded up
    assert format_p(1 / 1000, 999) == "p <= 0.001"
    assert format_p(1 / 2001, 2000) == "p <= 0.0005"
    assert format_p(1 / 10001, 10000) == "p <= 0.0001"
    assert format_p(1 / 101, 100) == "p <= 0.01"
    assert format_p(0.034, 1000) == "p 0.034"
    assert format_p(2 / 1001, 1000) == "p 0.002"
    assert format_p(3 / 10001, 10000) == "p 0.0003"                     # as many digits as the floor
    assert format_p(1.0, 1000) == "p 1.000"
    assert p_value_floor(1000) == 1 / 1001
    with pytest.raises(CaptError, match="no p-value of 1000"):
        format_p(0.0001, 1000)
    with pytest.raises(CaptError, match="no p-value"):
        format_p(1.5, 1000)
    with pytest.raises(CaptError, match="positive integer"):
        format_p(0.5, 0)


def test_a_stage_output_that_is_missing_or_not_json_is_one_line_naming_it_and_its_stage(tmp_path):
    from capt.eval.per_image import read_stage_json

    with pytest.raises(CaptError, match=r"gone.json: missing; run evaluate@m$"):
        read_stage_json(tmp_path / "gone.json", "evaluate@m")
    (tmp_path / "half.json").write_text('{"image_ids": [1, 2')
    with pytest.raises(CaptError, match=r"half.json: not JSON \(.*\); run evaluate@m again"):
        read_stage_json(tmp_path / "half.json", "evaluate@m")
    (tmp_path / "ok.json").write_text('{"a": [1]}')
    assert read_stage_json(tmp_path / "ok.json", "evaluate@m") == {"a": [1]}
