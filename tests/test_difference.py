"""Why model A beats model B (capt.eval.difference): the ranking by per-image CIDEr-D, the
content words that differ between two captions and whether each is right, and the summary per
shape, colour, size and relation, on hand-made scenes whose truth is written out here."""

from __future__ import annotations

import json

import numpy as np
import pytest

from capt.errors import CaptError
from capt.eval.content import CONTENT_STATISTICS, content_statistics, image_truth, parse_caption
from capt.eval.difference import (CategoryTruth, ModelOutputs, Ranked, caption_claims, difference_examples,
                                  difference_summary, image_truths, rank_by_difference, shared_claims,
                                  word_differences)
from capt.eval.grounding import ChairLexicon, Instances
from capt.eval.per_image import BLEU_STATISTICS, ImageScores

# The scenes of tests/test_content.py (its comments draw them out), and its instances builder.
from tests.test_content import SCENE_1, SCENE_2, SHAPE_NAMES, SIDE  # noqa: E402,F401
from tests.test_content import _instances as shapes_instances  # noqa: E402


@pytest.fixture(scope="module")
def truths() -> dict:
    return image_truths(shapes_instances({1: SCENE_1, 2: SCENE_2}), [1, 2])


def scores(ids, cider, tokenizer="simple") -> ImageScores:
    return ImageScores(tuple(ids), np.zeros((len(ids), len(BLEU_STATISTICS)), np.int64),
                       np.asarray(cider, np.float64), tokenizer)


# --------------------------------------------------------------------------- ranking


def test_images_rank_by_their_cider_difference_ties_by_id():
    a = scores([1, 2, 3, 4, 5], [1.0, 0.5, 2.0, 0.25, 1.5])
    b = scores([1, 2, 3, 4, 5], [0.5, 0.5, 0.0, 1.25, 1.0])
    assert rank_by_difference(a, b) == [Ranked(3, 2.0, 0.0, 2.0), Ranked(1, 1.0, 0.5, 0.5), Ranked(5, 1.5, 1.0, 0.5),
                                        Ranked(2, 0.5, 0.5, 0.0), Ranked(4, 0.25, 1.25, -1.0)]
    # B against A: the same images, the other way round (ties still by id)
    assert [r.image_id for r in rank_by_difference(b, a)] == [4, 2, 1, 5, 3]


def test_scores_of_other_images_or_tokens_are_not_compared():
    a = scores([1, 2, 3], [1.0, 1.0, 1.0])
    with pytest.raises(CaptError, match=r"teacher and blip: per-image scores of different images: 1 \(3\) only in "
                                        r"teacher, 1 \(4\) only in blip"):
        rank_by_difference(a, scores([1, 2, 4], [1.0, 1.0, 1.0]), ("teacher", "blip"))
    with pytest.raises(CaptError, match="'simple' and 'ptb' tokens"):
        rank_by_difference(a, scores([1, 2, 3], [1.0, 1.0, 1.0], "ptb"))


# --------------------------------------------------------------------------- word differences


def _claims(side: dict, shared: bool | None = None) -> list[tuple]:
    return [(c["kind"], c["word"], c["about"], tuple(c["span"]), c["verdict"]) for c in side["claims"]
            if shared is None or c["shared"] == shared]


def test_a_true_object_and_a_wrong_colour_are_reported_right_and_wrong(truths):
    d = word_differences("a large red circle above a small blue square", "a large green circle", truths[1])
    assert d["a"]["words"] == ["a", "large", "red", "circle", "above", "a", "small", "blue", "square"]
    # what only A states: the circle's true colour, the relation, and the whole square, all true
    assert _claims(d["a"], shared=False) == [
        ("colour", "red", "circle", (2, 3), "right"),
        ("relation", "above", "circle > square", (4, 5), "right"),
        ("size", "small", "square", (6, 7), "right"),
        ("colour", "blue", "square", (7, 8), "right"),
        ("shape", "square", "", (8, 9), "right")]
    # what only B states: a colour the circle does not have
    assert _claims(d["b"], shared=False) == [("colour", "green", "circle", (2, 3), "wrong")]
    # both state a large circle, which is there
    assert _claims(d["a"], shared=True) == [("size", "large", "circle", (1, 2), "right"),
                                            ("shape", "circle", "", (3, 4), "right")]
    assert _claims(d["b"], shared=True) == [("size", "large", "circle", (1, 2), "right"),
                                            ("shape", "circle", "", (3, 4), "right")]
    json.dumps(d)                                                   # JSON-able as it is


def test_an_absent_object_is_wrong_and_its_attributes_unjudged(truths):
    claims = caption_claims("a small purple triangle", truths[1])
    assert [(c.kind, c.word, c.verdict) for c in claims] == [
        ("size", "small", "unjudged"), ("colour", "purple", "unjudged"), ("shape", "triangle", "wrong")]
    # a count states as many objects as its number: one circle is there, the second is not
    claims = caption_claims("two circles", truths[1])
    assert [(c.word, c.span, c.verdict) for c in claims] == [("circle", (1, 2), "right"), ("circle", (1, 2), "wrong")]
    # a relation that does not hold is wrong; the objects it joins are still right
    claims = caption_claims("a red circle below a blue square", truths[1])
    assert [(c.kind, c.verdict) for c in claims if c.kind in ("relation", "shape")] == [
        ("shape", "right"), ("relation", "wrong"), ("shape", "right")]


def test_spans_index_the_words_given_even_with_stutters():
    truth = image_truths(shapes_instances({1: SCENE_1}), [1])[1]
    words = ["a", "red", "red", "circle", "circle", "to", "the", "left", "of", "a", "green", "cross"]
    claims = caption_claims(words, truth)
    assert [(c.kind, c.word, c.span, c.verdict) for c in claims] == [
        ("colour", "red", (2, 3), "right"), ("shape", "circle", (3, 4), "right"),
        ("relation", "to the left of", (5, 9), "right"),
        ("colour", "green", (10, 11), "right"), ("shape", "cross", (11, 12), "right")]


@pytest.mark.parametrize("caption", [
    "a large red circle above a small blue square and a small green cross",
    "a large green circle and a small blue square", "a red circle and a red circle and a red circle",
    "there are two circles and a square", "a small red circle above a", "a red blue circle next to a green cross",
    "a small purple triangle to the right of a large circle", "three squares", "", "a large",
    "a red red circle circle below below a blue square",
])
def test_claims_sum_to_the_content_statistics(caption):
    """Each caption's claims count what capt.eval.content counts: shapes matched, attributes stated
    and correct, relations stated and correct."""
    instances = shapes_instances({1: SCENE_1})
    truth = image_truths(instances, [1])[1]
    objects, side = image_truth(instances, 1)
    row = dict(zip(CONTENT_STATISTICS, content_statistics(parse_caption(caption), objects, side).tolist()))
    claims = caption_claims(caption, truth)
    count = lambda kinds, *verdicts: sum(c.kind in kinds and c.verdict in verdicts for c in claims)  # noqa: E731
    assert count(("shape",), "right", "wrong") == row["objects_stated"]
    assert count(("shape",), "right") == row["shapes_matched"]
    assert count(("colour", "size"), "right", "wrong") == row["attributes_stated"]
    assert count(("colour", "size"), "right") == row["attributes_correct"]
    assert count(("relation",), "right", "wrong") == row["relations_stated"]
    assert count(("relation",), "right") == row["relations_correct"]


def test_shared_claims_match_as_multisets_in_caption_order(truths):
    a = caption_claims("a circle and a circle and a square", truths[2])
    b = caption_claims("a circle and a square and a square", truths[2])
    assert shared_claims(a, b) == [True, False, True]
    assert shared_claims(b, a) == [True, True, False]


def test_coco_words_are_judged_by_chairs_lexicon():
    truth = CategoryTruth(frozenset({"person", "dog"}), ChairLexicon(["person", "dog", "cat", "couch"]))
    d = word_differences("a man walking two dogs", "a cat on a couch next to a dog", truth)
    assert _claims(d["a"], shared=False) == [("object", "person", "", (1, 2), "right")]
    assert _claims(d["b"], shared=False) == [("object", "cat", "", (1, 2), "wrong"),
                                             ("object", "couch", "", (4, 5), "wrong")]
    assert _claims(d["b"], shared=True) == [("object", "dog", "", (8, 9), "right")]


def test_coco_truth_is_the_instances_and_what_the_references_name():
    data = {"images": [{"id": 5, "width": 40, "height": 30}],
            "annotations": [{"id": 1, "image_id": 5, "category_id": 1, "bbox": [0, 0, 5, 5], "area": 25, "iscrowd": 0}],
            "categories": [{"id": 1, "name": "dog"}, {"id": 2, "name": "cat"}, {"id": 3, "name": "person"}]}
    instances = Instances(data, "coco-instances")
    assert image_truths(instances, [5])[5].present == {"dog"}
    assert image_truths(instances, [5], {5: ["A woman and her dog."]})[5].present == {"dog", "person"}
    with pytest.raises(CaptError, match="coco-instances: no image with id 6"):
        image_truths(instances, [6])


# --------------------------------------------------------------------------- the summary


def test_summary_counts_each_item_exactly(truths):
    captions_a = {1: "a large red circle", 2: "two circles and a small red square"}
    captions_b = {1: "a green circle", 2: "a red triangle"}
    rows = difference_summary(captions_a, captions_b, truths)
    assert [(r["kind"], r["item"]) for r in rows] == [
        ("shape", "circle"), ("shape", "square"), ("shape", "triangle"), ("shape", "cross"),
        ("size", "small"), ("size", "large"),
        ("colour", "red"), ("colour", "green"), ("colour", "blue"), ("colour", "yellow"),
        ("relation", "above"), ("relation", "below"), ("relation", "to the left of"),
        ("relation", "to the right of"), ("relation", "next to")]
    row = {(r["kind"], r["item"]): r for r in rows}
    # circles: in both images; A names them in both (three claims, all right), B in one
    assert row["shape", "circle"] == {
        "kind": "shape", "item": "circle", "images_true": 2,
        "a_images": 2, "a_stated": 3, "a_judged": 3, "a_right": 3, "a_precision": 1.0, "a_named": 2, "a_recall": 1.0,
        "b_images": 1, "b_stated": 1, "b_judged": 1, "b_right": 1, "b_precision": 1.0, "b_named": 1, "b_recall": 0.5,
        "precision_delta": 0.0, "recall_delta": 0.5}
    # red: A says it twice (right of image 1's circle, wrong of image 2's yellow square); B once,
    # of a triangle that is not there: unjudged
    assert row["colour", "red"] == {
        "kind": "colour", "item": "red", "images_true": 2,
        "a_images": 2, "a_stated": 2, "a_judged": 2, "a_right": 1, "a_precision": 0.5, "a_named": 1, "a_recall": 0.5,
        "b_images": 1, "b_stated": 1, "b_judged": 0, "b_right": 0, "b_precision": None, "b_named": 0, "b_recall": 0.0,
        "precision_delta": None, "recall_delta": 0.5}
    # a triangle is in neither image: only B states one, wrongly; no recall to speak of
    assert row["shape", "triangle"] == {
        "kind": "shape", "item": "triangle", "images_true": 0,
        "a_images": 0, "a_stated": 0, "a_judged": 0, "a_right": 0, "a_precision": None, "a_named": 0, "a_recall": None,
        "b_images": 1, "b_stated": 1, "b_judged": 1, "b_right": 0, "b_precision": 0.0, "b_named": 0, "b_recall": None,
        "precision_delta": None, "recall_delta": None}
    assert (row["colour", "green"]["b_judged"], row["colour", "green"]["b_right"]) == (1, 0)    # green circle: wrong
    assert row["shape", "square"]["a_named"] == 1 and row["shape", "square"]["images_true"] == 2
    assert row["relation", "next to"]["images_true"] == 1 and row["relation", "above"]["images_true"] == 2
    assert all(r["a_stated"] == r["b_stated"] == 0 for r in rows if r["kind"] == "relation")


def test_summary_needs_the_same_images_and_their_truth(truths):
    with pytest.raises(CaptError, match="captions of different images: 1 only in A, 0 only in B"):
        difference_summary({1: "a circle", 2: "a circle"}, {1: "a circle"}, truths)
    with pytest.raises(CaptError, match=r"no truth for images \[3\]"):
        difference_summary({3: "a circle"}, {3: "a circle"}, truths)


# --------------------------------------------------------------------------- the report's examples


def test_examples_are_the_top_and_bottom_images_with_their_maps(truths):
    def maps(n_words: int, seed: int) -> np.ndarray:
        return np.random.default_rng(seed).random((n_words, 4, 4)).astype(np.float32)

    captions_a = {1: "a large red circle", 2: "a red square", 3: "a cross"}
    captions_b = {1: "a green circle", 2: "a red circle", 3: "a blue cross"}
    maps_a = {"attention": {i: (c.split(), maps(len(c.split()), i)) for i, c in captions_a.items()}}
    a = ModelOutputs("a", captions_a, maps_a, scores([1, 2, 3], [2.0, 1.0, 0.0]))
    b = ModelOutputs("b", captions_b, {}, scores([1, 2, 3], [1.0, 1.0, 1.0]))
    examples = difference_examples(a, b, k=1, truths=truths | {3: truths[1]})
    assert [(e.image_id, e.side, e.rank, e.delta) for e in examples] == [(1, "top", 1, 1.0), (3, "bottom", 1, -1.0)]
    top = examples[0]
    assert top.words_a == ["a", "large", "red", "circle"] and top.words_b == ["a", "green", "circle"]
    assert np.array_equal(top.maps_a["attention"], a.maps["attention"][1][1]) and top.maps_b == {}
    assert _claims(top.differences["b"], shared=False) == [("colour", "green", "circle", (1, 2), "wrong")]
    data = json.loads(json.dumps(top.to_json()))
    assert data["techniques_a"] == ["attention"] and data["techniques_b"] == [] and "maps_a" not in data
    # k larger than half the images: the bottom never repeats the top
    examples = difference_examples(a, b, k=2)
    assert [(e.image_id, e.side) for e in examples] == [(1, "top"), (2, "top"), (3, "bottom")]
    assert examples[0].differences is None
