"""The content metric (capt.eval.content): a caption's objects, attributes and relations judged
against the instances, on hand-made scenes whose truth is written out here, and on a generated
shapes world whose reference captions are true by construction."""

from __future__ import annotations

import json

import numpy as np
import pytest

from capt.data.shapes import ShapesConfig, generate_shapes, relations_between
from capt.errors import CaptError
from capt.eval.bootstrap import resample_counts
from capt.eval.content import (CONTENT_STATISTICS, COVERAGE_STATISTICS, ContentScores, CoverageScores,
                               StatedObject, StatedRelation, content_metrics, parse_caption, score_content,
                               score_coverage)
from capt.eval.grounding import Instances

SHAPE_NAMES = ["circle", "square", "triangle", "diamond", "cross"]     # the world's categories, ids 1..5
SIDE = 100

# Image 1, drawn out (x, y, width, height; y down):
#   A large red circle   (10, 10, 30, 30): centre (25, 25)
#   B small blue square  (12, 60, 20, 20): centre (22, 70), straight below A, 20 px apart
#   C small green cross  (50, 14, 20, 20): centre (60, 24), right of A, 10 px apart
# So: A above B, B below A; A left of C, C right of A; A next to C (10 <= 0.12 * 100), not to B.
SCENE_1 = [("circle", "red", "large", (10, 10, 30, 30)),
           ("square", "blue", "small", (12, 60, 20, 20)),
           ("cross", "green", "small", (50, 14, 20, 20))]
# Image 2: two circles and a square, for counts and for mentions that fit several objects.
SCENE_2 = [("circle", "red", "large", (5, 5, 30, 30)),
           ("circle", "blue", "large", (60, 5, 30, 30)),
           ("square", "yellow", "small", (40, 70, 20, 20))]


def _instances_dict(scenes: dict[int, list[tuple]], side: int = SIDE) -> dict:
    anns = []
    for image_id, objects in scenes.items():
        for shape, colour, size, bbox in objects:
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": SHAPE_NAMES.index(shape) + 1,
                         "bbox": [float(v) for v in bbox], "area": float(bbox[2] * bbox[3]), "iscrowd": 0,
                         "color": colour, "size": size})
    return {"images": [{"id": i, "file_name": f"{i}.jpg", "width": side, "height": side} for i in scenes],
            "annotations": anns,
            "categories": [{"id": k + 1, "name": s, "supercategory": "shape"} for k, s in enumerate(SHAPE_NAMES)]}


def _instances(scenes: dict[int, list[tuple]], side: int = SIDE) -> Instances:
    return Instances(_instances_dict(scenes, side), "test-instances")


@pytest.fixture(scope="module")
def scenes() -> Instances:
    return _instances({1: SCENE_1, 2: SCENE_2})


def _row(scores: ContentScores, image_id=None) -> dict[str, int]:
    k = 0 if image_id is None else scores.image_ids.index(image_id)
    return dict(zip(CONTENT_STATISTICS, scores.statistics[k].tolist()))


def _one(caption, instances: Instances, image_id: int = 1) -> tuple[dict[str, int], dict]:
    scores = score_content({image_id: caption}, instances)
    return _row(scores), scores.summary()


# --------------------------------------------------------------------------- reading captions


def test_the_grammar_reads_into_objects_and_relations():
    read = parse_caption("A small red circle above a blue square.")
    assert read.objects == (StatedObject("circle", "red", "small"), StatedObject("square", "blue", None))
    assert read.relations == (StatedRelation(0, "above", 1),)
    # List and position captions: one object per noun phrase, positions claim nothing.
    read = parse_caption("a picture of a large blue square in the top left corner and an orange diamond on the right")
    assert read.objects == (StatedObject("square", "blue", "large"), StatedObject("diamond", "orange", None))
    assert read.relations == ()
    # Counts: as many shape-only objects as the number says.
    read = parse_caption("there are two circles and a square")
    assert read.objects == (StatedObject("circle"),) * 2 + (StatedObject("square"),)
    assert parse_caption("there is one cross").objects == (StatedObject("cross"),)
    assert parse_caption("three triangles").objects == (StatedObject("triangle"),) * 3
    # Chains relate neighbours; "the" is a determiner, not the end of a phrase.
    read = parse_caption("a red circle to the left of the green cross next to a blue square")
    assert read.relations == (StatedRelation(0, "to the left of", 1), StatedRelation(1, "next to", 2))


@pytest.mark.parametrize("caption", [
    "", "a", "a large", "and and and", "circle circle circle", "a red red red circle above above",
    "above a blue square", "a blue square above", "a red circle to the left", "two", "<unk> <end> <pad>",
    "a small large red blue circle circles two three", "there are are two two circles and and a",
    "a " * 200 + "circle", ("a red circle and " * 40).strip(), "!!! ... ,,,", "4 circles 1 square",
])
def test_broken_output_never_crashes(caption, scenes):
    read = parse_caption(caption)
    assert all(o.shape in SHAPE_NAMES for o in read.objects)
    row, summary = _one(caption, scenes)
    assert 0 <= row["objects_matched"] <= row["shapes_matched"] <= min(row["objects_stated"], row["objects_true"])
    assert 0 <= row["attributes_correct"] <= row["attributes_stated"]
    assert 0 <= row["relations_correct"] <= row["relations_stated"]


def test_broken_output_reads_what_is_there():
    assert parse_caption("a large").objects == ()                                   # dangling: nothing
    assert parse_caption("a red red circle circle").objects == (StatedObject("circle", "red"),)   # a stutter
    assert parse_caption("a red circle and a red circle").objects == (StatedObject("circle", "red"),) * 2
    assert parse_caption("a red blue circle").objects == (StatedObject("circle", "blue"),)        # nearest wins
    read = parse_caption("a small red circle above a")                               # truncated
    assert read.objects == (StatedObject("circle", "red", "small"),) and read.relations == ()
    # A model's tokens, in any case, read like the string.
    assert parse_caption(["A", "Red", "circle"]) == parse_caption("a red circle")


# --------------------------------------------------------------------------- objects and attributes


def test_a_true_caption_scores_one_everywhere(scenes):
    row, summary = _one("A large red circle above a small blue square and a small green cross.", scenes)
    assert row == {"objects_stated": 3, "objects_true": 3, "objects_matched": 3, "shapes_matched": 3,
                   "attributes_stated": 6, "attributes_correct": 6, "attributes_true": 6,
                   "relations_stated": 1, "relations_correct": 1}
    for name in ("object", "shape", "attribute"):
        assert summary[f"{name}_precision"] == summary[f"{name}_recall"] == summary[f"{name}_f1"] == 1.0
    assert summary["relation_accuracy"] == 1.0


def test_a_wrong_colour_lowers_attribute_precision_not_shape_matching(scenes):
    right, _ = _one("a large red circle and a small blue square", scenes)
    wrong, summary = _one("a large green circle and a small blue square", scenes)
    assert right["objects_matched"] == right["shapes_matched"] == 2
    assert wrong["shapes_matched"] == 2                         # the circle is still the circle
    assert wrong["objects_matched"] == 1                        # but not a green one
    assert (wrong["attributes_stated"], wrong["attributes_correct"]) == (4, 3)
    assert summary["shape_precision"] == 1.0
    assert summary["attribute_precision"] == 0.75
    assert summary["object_precision"] == 0.5


def test_a_wrong_shape_is_an_object_miss_whose_attributes_are_not_judged(scenes):
    row, summary = _one("a large red triangle", scenes)
    assert row["objects_stated"] == 1 and row["objects_matched"] == row["shapes_matched"] == 0
    assert row["attributes_stated"] == 0                        # no object there to have a colour
    assert summary["object_precision"] == summary["shape_precision"] == 0.0
    assert summary["attribute_precision"] is None               # nothing judged: undefined, not 0
    assert summary["attribute_f1"] == 0.0 and summary["object_f1"] == 0.0


def test_each_true_object_is_matched_once(scenes):
    row, _ = _one("a red circle and a red circle and a red circle", scenes)
    assert (row["objects_stated"], row["objects_matched"]) == (3, 1)


def test_matching_finds_the_most_matches_whatever_the_caption_order(scenes):
    # Image 2's circles are both large: "a large circle" taken first by the red one would leave
    # "a red circle" nothing; the maximum matching gives the large one the blue circle.
    for caption in ("a large circle and a red circle", "a red circle and a large circle"):
        row, _ = _one(caption, scenes, image_id=2)
        assert row["objects_matched"] == 2, caption


def test_counts_state_their_number_of_objects(scenes):
    row, summary = _one("there are two circles and a square", scenes, image_id=2)
    assert (row["objects_stated"], row["objects_matched"], row["objects_true"]) == (3, 3, 3)
    assert row["attributes_stated"] == 0 and summary["attribute_recall"] == 0.0
    row, _ = _one("there are three circles and one square", scenes, image_id=2)
    assert (row["objects_stated"], row["objects_matched"]) == (4, 3)
    row, _ = _one("there are two squares", scenes, image_id=2)
    assert (row["objects_stated"], row["objects_matched"]) == (2, 1)
    row, _ = _one("there is a square", scenes, image_id=2)
    assert (row["objects_stated"], row["objects_matched"]) == (1, 1)


# --------------------------------------------------------------------------- relations


def test_the_hand_made_scene_holds_what_its_comment_says():
    boxes = {name: (x, y, x + w, y + h) for name, (_, _, _, (x, y, w, h)) in zip("ABC", SCENE_1)}
    assert relations_between(boxes["A"], boxes["B"], SIDE) == ["above"]
    assert relations_between(boxes["B"], boxes["A"], SIDE) == ["below"]
    assert relations_between(boxes["A"], boxes["C"], SIDE) == ["to the left of", "next to"]
    assert relations_between(boxes["C"], boxes["A"], SIDE) == ["to the right of", "next to"]


@pytest.mark.parametrize("caption, correct", [
    ("a large red circle above a small blue square", 1),
    ("a small blue square below a red circle", 1),
    ("a red circle below a blue square", 0),                   # above and below swapped
    ("a blue square above a red circle", 0),
    ("a red circle to the left of a green cross", 1),
    ("a green cross to the left of a red circle", 0),
    ("a green cross to the right of a red circle", 1),
    ("a red circle next to a green cross", 1),
    ("a red circle next to a blue square", 0),                 # 20 px apart: not next to
    ("a purple circle above a blue square", 0),                # an end that is not there
    ("a small red circle above a blue square", 0),             # nor is a small red circle
    ("a circle above a square", 1),                            # ends with fewer words still resolve
])
def test_a_relation_is_right_when_the_generator_rule_holds(caption, correct, scenes):
    row, summary = _one(caption, scenes)
    assert (row["relations_stated"], row["relations_correct"]) == (1, correct)
    assert summary["relation_accuracy"] == float(correct)


def test_relation_accuracy_is_undefined_without_relations(scenes):
    _, summary = _one("a red circle and a blue square", scenes)
    assert summary["relation_accuracy"] is None
    assert np.isnan(content_metrics(np.zeros(len(CONTENT_STATISTICS), np.int64))["relation_accuracy"])


# --------------------------------------------------------------------------- corpus


def _varied_scenes() -> dict[int, list[tuple]]:
    """Ten images of two objects each, every one different; one holds a small orange diamond."""
    colours = ["red", "green", "blue", "yellow", "purple", "orange"]
    scenes = {}
    for i in range(10):
        first = (SHAPE_NAMES[i % 5], colours[i % 6], "small" if i % 2 else "large", (10, 10, 30, 30))
        second = (SHAPE_NAMES[(i + 2) % 5], colours[(i + 3) % 6], "large" if i % 3 else "small", (60, 60, 30, 30))
        scenes[100 + i] = [first, second]
    scenes[100][1] = ("diamond", "orange", "small", (60, 60, 20, 20))
    return scenes


def test_a_constant_caption_scores_near_zero_where_true_captions_score_one():
    scenes = _varied_scenes()
    instances = _instances(scenes)
    true = {i: " and ".join(f"a {size} {colour} {shape}" for shape, colour, size, _ in objects)
            for i, objects in scenes.items()}
    constant = {i: "a picture of a small orange diamond" for i in scenes}
    right, wrong = score_content(true, instances).summary(), score_content(constant, instances).summary()
    assert right["object_f1"] == right["attribute_f1"] == 1.0
    assert wrong["object_f1"] < 0.2 and wrong["object_precision"] == 0.1       # the one image it fits
    assert wrong["attribute_f1"] < 0.2


def test_statistics_sum_and_resample_like_the_bleu_statistics(scenes):
    captions = {2: "there are two circles and a square", 1: "a red circle below a blue square"}
    scores = score_content(captions, scenes)
    assert scores.image_ids == (1, 2)                          # sorted, as capt.eval.metrics sorts
    assert scores.statistics.shape == (2, len(CONTENT_STATISTICS)) and scores.statistics.dtype == np.int64
    assert scores.summary()["objects_stated"] == 5
    counts = resample_counts(scores.image_ids, 50, seed=0)     # (R, N)
    resampled = scores.resampled(counts)
    assert set(resampled) == set(content_metrics(scores.statistics.sum(0)))
    assert all(v.shape == (50,) for v in resampled.values())
    once = scores.resampled(np.ones((1, 2), np.int64))         # the whole set, once: the summary
    assert once["object_precision"][0] == scores.summary()["object_precision"]
    again = ContentScores.from_json(json.loads(json.dumps(scores.to_json())), "roundtrip")
    assert again.image_ids == scores.image_ids and np.array_equal(again.statistics, scores.statistics)


def test_bad_input_is_one_clear_error(scenes):
    with pytest.raises(CaptError, match="no image with id 7"):
        score_content({7: "a red circle"}, scenes)
    with pytest.raises(CaptError, match="not a caption string"):
        score_content({1: 3.5}, scenes)
    with pytest.raises(CaptError, match="no captions"):
        score_content({}, scenes)
    with pytest.raises(CaptError, match="columns"):
        content_metrics(np.zeros((3, 4)))
    with pytest.raises(CaptError, match="int64"):
        ContentScores((1, 2), np.zeros((2, len(CONTENT_STATISTICS)), np.int64)[:1])
    data = _instances_dict({1: SCENE_1})
    del data["annotations"][0]["color"]
    with pytest.raises(CaptError, match="color None"):
        score_content({1: "a red circle"}, Instances(data, "no-colours"))
    with pytest.raises(CaptError, match="score_coverage"):
        score_content({1: "a dog"}, _coco_like())
    with pytest.raises(CaptError, match="square"):
        score_content({1: "a red circle"}, Instances({**_instances_dict({1: SCENE_1}), "images": [
            {"id": 1, "file_name": "1.jpg", "width": 100, "height": 80}]}, "oblong"))


# --------------------------------------------------------------------------- coverage


def _coco_like() -> Instances:
    cats = [{"id": 1, "name": "person", "supercategory": "person"},
            {"id": 17, "name": "cat", "supercategory": "animal"},
            {"id": 18, "name": "dog", "supercategory": "animal"}]
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10], "area": 100.0, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 18, "bbox": [20, 20, 10, 10], "area": 100.0, "iscrowd": 0},
            {"id": 3, "image_id": 1, "category_id": 18, "bbox": [40, 40, 10, 10], "area": 100.0, "iscrowd": 0},
            {"id": 4, "image_id": 2, "category_id": 1, "bbox": [1, 1, 10, 10], "area": 100.0, "iscrowd": 0},
            {"id": 5, "image_id": 2, "category_id": 17, "bbox": [20, 20, 10, 10], "area": 100.0, "iscrowd": 0}]
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 64, "height": 64} for i in (1, 2, 3)]
    return Instances({"images": images, "annotations": anns, "categories": cats}, "coco-like")


def test_coverage_names_coco_categories_by_chair_synonyms():
    scores = score_coverage({1: "A man with a dog.", 2: "a man on a sofa", 3: "an empty room"}, _coco_like())
    assert isinstance(scores, CoverageScores) and scores.columns == COVERAGE_STATISTICS
    rows = dict(zip(scores.image_ids, scores.statistics.tolist()))
    assert rows == {1: [2, 2], 2: [1, 2], 3: [0, 0]}           # two dogs are one category
    assert scores.summary() == {"coverage": 0.75, "categories_named": 3, "categories_annotated": 4}


def test_coverage_works_on_shapes(scenes):
    scores = score_coverage({1: "there are two circles", 2: "a red circle and a yellow square"}, scenes)
    assert scores.statistics.tolist() == [[1, 3], [2, 2]]
    assert scores.summary()["coverage"] == 0.6


# --------------------------------------------------------------------------- a generated world


def test_every_reference_of_a_generated_world_is_true_and_fully_read(tmp_path):
    cfg = ShapesConfig(seed=11, n_train=40, n_val=0, n_test=0, image_size=64, max_objects=4, captions_per_image=8)
    generate_shapes(cfg, tmp_path, progress=False)
    instances = Instances(json.loads((tmp_path / "instances.json").read_text()), "generated")
    by_image: dict[int, list[str]] = {}
    for ann in json.loads((tmp_path / "captions.json").read_text())["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann["caption"])
    colours = {"red", "green", "blue", "yellow", "purple", "orange"}
    # "above", "below", "next to", or the "of" of "to the left of" (the only other "of" is "a picture of");
    # "left" and "right" alone are also positions.
    relation_words = {"above", "below", "next"}
    relations = 0
    for k in range(cfg.captions_per_image):
        captions = {i: texts[k] for i, texts in by_image.items()}
        scores = score_content(captions, instances)
        summary = scores.summary()
        assert summary["object_precision"] == summary["attribute_precision"] == 1.0, k
        assert summary["relation_accuracy"] in (1.0, None), k
        relations += summary["relations_stated"]
        for image_id, stats in zip(scores.image_ids, scores.statistics.tolist()):
            row = dict(zip(CONTENT_STATISTICS, stats))
            words = set(captions[image_id].lower().strip(".").replace(",", "").split())
            assert row["objects_stated"] >= 1, captions[image_id]
            if not words & colours:         # a count caption counts every object, exactly
                assert row["objects_stated"] == row["objects_matched"] == row["objects_true"], captions[image_id]
            if words & relation_words or ("of" in words and "picture" not in words):
                assert row["relations_stated"] == 1, captions[image_id]
    assert relations >= 20
    constant = score_content({i: "a picture of a small orange diamond" for i in by_image}, instances).summary()
    assert constant["object_f1"] < 0.2


def test_a_shapes_world_is_told_from_coco_by_its_instances(tmp_path):
    """The evaluation scores objects and relations only where the truth has them: a shapes world's
    instances (every category a shape, every object with its colour and size words)."""
    from capt.data.shapes import ShapesConfig, generate_shapes
    from capt.eval.content import is_shapes_world

    generate_shapes(ShapesConfig(n_train=0, n_val=0, n_test=3), tmp_path, progress=False)
    data = json.loads((tmp_path / "instances.json").read_text())
    assert is_shapes_world(Instances(data, "shapes"))
    del data["annotations"][0]["color"]
    assert not is_shapes_world(Instances(data, "shapes, a colour missing"))
    coco_like = {"images": [{"id": 1, "height": 10, "width": 10}], "categories": [{"id": 1, "name": "dog"}],
                 "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 2, 2], "area": 4,
                                  "iscrowd": 0, "segmentation": [[0, 0, 2, 0, 2, 2]]}]}
    assert not is_shapes_world(Instances(coco_like, "coco"))


def test_the_evaluations_content_cells_bracket_each_score_on_the_shared_resamples():
    """capt.eval.evaluation.content_cells: each headline score with a 95% interval from the same
    resamples as BLEU's (resample_counts of the image ids), None where undefined."""
    from capt.eval.evaluation import content_cells

    scenes = _varied_scenes()
    captions = {i: (f"a {objects[0][2]} {objects[0][1]} {objects[0][0]}" if i % 3 else "a large red cross")
                for i, objects in scenes.items()}
    scores = score_content(captions, _instances(scenes))
    cells = content_cells({"content": scores}, 1000, 3)
    expected = np.nanpercentile(scores.resampled(resample_counts(scores.image_ids, 1000, 3))["object_f1"], (2.5, 97.5))
    assert cells["object_f1_ci95"] == [float(expected[0]), float(expected[1])]
    assert cells["object_f1_ci95"][0] <= cells["object_f1"] <= cells["object_f1_ci95"][1]
    assert cells["object_f1_ci95"][0] < cells["object_f1_ci95"][1]               # the images differ
    assert cells["relation_accuracy"] is None and cells["relation_accuracy_ci95"] is None   # none stated
    assert set(cells) >= {"shape_f1_ci95", "attribute_f1_ci95"}
