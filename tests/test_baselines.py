"""The baselines every model must beat (capt.eval.baselines): the constant caption is the candidate
with the best val CIDEr-D (not merely the most frequent), the nearest neighbour retrieves by cosine
similarity of pooled features, and the diagnostics count what a degenerate captioner does."""

from __future__ import annotations

import numpy as np
import pytest
from pycocoevalcap.cider.cider import Cider

from capt.errors import CaptError
from capt.eval.baselines import (best_constant_caption, caption_diagnostics, nearest_neighbour_captions,
                                 pooled_features)


def _val() -> dict[int, list[str]]:
    # Most val images show a red circle; the most frequent training caption names a blue square.
    val = {i: ["a red circle", "there is a red circle", "a small red circle"] for i in range(1, 7)}
    val |= {i: ["a blue square", "a large blue square", "there is a blue square"] for i in range(7, 9)}
    return val


def test_constant_caption_is_the_candidate_with_the_best_val_cider_not_the_most_frequent():
    train = ["A blue square."] * 5 + ["A red circle."] * 3 + ["a green cross"] * 2
    caption, cider, scored = best_constant_caption(train, _val(), candidates=3)
    assert caption == "A red circle."          # its first raw spelling in the training set
    assert scored == 3
    gts = {i: refs for i, refs in _val().items()}
    expected, _ = Cider().compute_score(gts, {i: ["a red circle"] for i in gts})
    assert cider == pytest.approx(expected)
    blue, _ = Cider().compute_score(gts, {i: ["a blue square"] for i in gts})
    assert cider > blue


def test_constant_caption_candidates_are_the_most_frequent_only():
    train = ["A blue square."] * 5 + ["A red circle."] * 3
    caption, _, scored = best_constant_caption(train, _val(), candidates=1)
    assert (caption, scored) == ("A blue square.", 1)     # the better caption is not a candidate


@pytest.mark.parametrize("train, candidates, message", [
    ([], 3, "no training captions"),
    (["...", "!"], 3, "blank"),
    (["a red circle"], 0, "positive number of candidates"),
])
def test_constant_caption_refuses_what_it_cannot_choose_from(train, candidates, message):
    with pytest.raises(CaptError, match=message):
        best_constant_caption(train, _val(), candidates=candidates)


def test_pooled_features_are_unit_means_over_cells():
    cells = np.array([[[3.0, 0.0], [3.0, 8.0]], [[0.0, 0.0], [0.0, 0.0]]], np.float16)   # (2 images, 2 cells, D=2)
    pooled = pooled_features(cells)
    assert pooled.dtype == np.float32
    np.testing.assert_allclose(pooled[0], [0.6, 0.8], rtol=1e-6)   # mean (3, 4), normalised
    np.testing.assert_array_equal(pooled[1], [0.0, 0.0])           # a zero vector stays zero


def test_nearest_neighbour_takes_the_first_reference_of_the_most_similar_training_image():
    train = pooled_features(np.array([[[1.0, 0.0]], [[0.0, 1.0]], [[1.0, 1.0]]]))
    refs = {10: ["a red circle", "x"], 20: ["a blue square", "y"], 30: ["a red circle and a blue square", "z"]}
    # Cosine, not distance: (5, 0.2) points the way image 10 does, though it is far from it.
    test = pooled_features(np.array([[[5.0, 0.2]], [[0.1, 2.0]], [[2.0, 2.1]]]))
    assert nearest_neighbour_captions(train, [10, 20, 30], refs, test, [1, 2, 3]) == {
        1: "a red circle", 2: "a blue square", 3: "a red circle and a blue square"}


def test_nearest_neighbour_checks_its_inputs():
    train = pooled_features(np.ones((2, 1, 4)))
    with pytest.raises(CaptError, match="one width"):
        nearest_neighbour_captions(train, [1, 2], {1: ["a"], 2: ["b"]}, np.ones((1, 3)), [5])
    with pytest.raises(CaptError, match="2 train ids for 2 feature rows, 2 test ids for 1"):
        nearest_neighbour_captions(train, [1, 2], {1: ["a"], 2: ["b"]}, np.ones((1, 4)), [5, 6])


def test_diagnostics_count_distinct_captions_words_and_novelty():
    train = ["A red circle.", "a blue square"]
    hyps = {1: "a red circle", 2: "A red circle!", 3: "a green circle", 4: "a blue square"}
    d = caption_diagnostics(hyps, train)
    assert d == {"images": 4, "distinct_captions": 3, "distinct_share": 0.75, "vocabulary_used": 6,
                 "novel_share": 0.25}
