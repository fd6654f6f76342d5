"""Comparisons over training seeds (capt.eval.seeds): the per-seed paired differences of any
metric, their mean and sd, and the Student t-interval of the mean, which covers 95% of the time
with few seeds; one seed gives no interval, and a model against itself exactly zero."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from capt.errors import CaptError
from capt.eval.metrics import image_scores
from capt.eval.per_image import cider_statistics, corpus_bleu4, corpus_cider
from capt.eval.seeds import (compare_over_seeds, mean_sd, paired_bleu4_over_seeds, paired_cider_over_seeds,
                             paired_statistic_over_seeds, t_interval95)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:nltk.translate.bleu_score")

WORDS = ["a", "red", "blue", "circle", "square", "above", "below", "the", "small", "big"]
T_975 = {2: 4.302652729749464, 4: 2.776445105197793}      # t_{0.975, df}: statistical tables


def _refs(images: int) -> dict[int, list[str]]:
    rng = random.Random(0)
    return {10 + 3 * k: [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 9))) for _ in range(3)]
            for k in range(images)}


def _hyps(refs: dict[int, list[str]], seed: int, copy: float) -> dict[int, str]:
    """A model of one training seed: copies a reference with probability ``copy``."""
    rng = random.Random(seed)
    return {i: (r[rng.randrange(3)] if rng.random() < copy else
                " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9)))) for i, r in refs.items()}


def test_the_interval_over_seeds_is_the_t_interval_of_the_per_seed_differences():
    result = compare_over_seeds({7: 0.02, 0: 0.01, 3: 0.03})
    assert result.seeds == (0, 3, 7) and result.deltas == (0.01, 0.03, 0.02)
    assert result.mean == pytest.approx(0.02) and result.sd == pytest.approx(0.01)
    half = T_975[2] * 0.01 / math.sqrt(3)
    assert result.ci95 == pytest.approx([0.02 - half, 0.02 + half], rel=1e-12, abs=0)
    assert t_interval95(np.zeros(5)).tolist() == [0.0, 0.0]


def test_the_t_interval_covers_the_mean_95_percent_of_the_time_with_five_seeds():
    """2,000 studies of 5 seeds, each seed's difference normal around a known mean: the share of
    intervals holding that mean is 0.95 up to the simulation's own noise (sd 0.005)."""
    rng = np.random.default_rng(0)
    deltas = rng.normal(0.02, 0.01, size=(2000, 5))                    # (studies, seeds)
    low, high = t_interval95(deltas).T
    assert T_975[4] * 0.01 / math.sqrt(5) == pytest.approx(np.median(high - low) / 2, rel=0.2)
    covered = np.mean((low <= 0.02) & (0.02 <= high))
    assert 0.93 <= covered <= 0.97


def test_each_metric_pairs_the_models_of_each_seed():
    refs = _refs(30)
    seeds = (0, 3, 7)
    students = {s: image_scores(refs, _hyps(refs, 100 + s, 0.6)) for s in seeds}
    bases = {s: image_scores(refs, _hyps(refs, 200 + s, 0.3)) for s in seeds}

    bleu = paired_bleu4_over_seeds(students, bases, 1000, 0)             # the report's call
    assert bleu.seeds == seeds
    assert bleu.deltas == tuple(students[s].bleu4 - bases[s].bleu4 for s in seeds)
    assert (bleu.mean, bleu.sd) == mean_sd(bleu.deltas)
    assert bleu.ci95 == t_interval95(bleu.deltas).tolist() and bleu.ci95[0] < bleu.mean < bleu.ci95[1]
    by_statistics = paired_statistic_over_seeds({s: (students[s].image_ids, students[s].bleu) for s in seeds},
                                                {s: (bases[s].image_ids, bases[s].bleu) for s in seeds}, corpus_bleu4)
    assert by_statistics == bleu

    cider = paired_cider_over_seeds(students, bases)
    assert cider.deltas == pytest.approx([students[s].cider_mean - bases[s].cider_mean for s in seeds], rel=1e-12)
    by_statistics = paired_statistic_over_seeds(
        {s: (students[s].image_ids, cider_statistics(students[s])) for s in seeds},
        {s: (bases[s].image_ids, cider_statistics(bases[s])) for s in seeds}, corpus_cider)
    assert by_statistics.ci95 == pytest.approx(cider.ci95, rel=1e-12)


def test_one_seed_has_no_interval_and_a_model_against_itself_is_zero():
    refs = _refs(30)
    a, b = image_scores(refs, _hyps(refs, 1, 0.7)), image_scores(refs, _hyps(refs, 2, 0.4))
    one = paired_bleu4_over_seeds({0: a}, {0: b}, 1000, seed=0)
    assert one.seeds == (0,) and one.deltas == (a.bleu4 - b.bleu4,) and one.mean == one.deltas[0]
    assert one.sd is None and one.ci95 is None
    assert paired_cider_over_seeds({0: a}, {0: b}).ci95 is None
    with pytest.raises(CaptError, match="at least two seeds, got 1"):
        t_interval95([0.01])
    itself = paired_bleu4_over_seeds({0: a, 1: b}, {0: a, 1: b})
    assert itself.ci95 == [0.0, 0.0] and itself.deltas == (0.0, 0.0) and itself.sd == 0.0


def test_seeds_must_pair_up_on_one_test_set():
    refs = _refs(5)
    a = image_scores(refs, _hyps(refs, 1, 0.5))
    with pytest.raises(CaptError, match=r"seeds \[0, 1\] and the baseline with \[0\]"):
        paired_bleu4_over_seeds({0: a, 1: a}, {0: a}, 1000, seed=0)
    with pytest.raises(CaptError, match="no training seed"):
        compare_over_seeds({})
    fewer = image_scores({i: refs[i] for i in list(refs)[1:]}, {i: "a red circle" for i in list(refs)[1:]})
    with pytest.raises(CaptError, match="different images"):
        paired_cider_over_seeds({0: a, 1: fewer}, {0: a, 1: fewer})
    with pytest.raises(CaptError, match="different images"):
        paired_statistic_over_seeds({0: (a.image_ids, a.bleu)}, {0: (fewer.image_ids, fewer.bleu)}, corpus_bleu4)
