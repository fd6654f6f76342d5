"""Grounding scores and CHAIR on hand-made maps, masks and captions with known answers."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from capt.errors import CaptError
from capt.eval.grounding import (
    CHAIR_KEYS,
    CHAIR_SYNONYMS,
    ChairLexicon,
    Instances,
    dataset_lexicon,
    dilate,
    is_degenerate,
    lexicon_for,
    mass_in_mask,
    plural,
    pointing_hit,
    score_grounding,
    score_techniques,
    singular,
    upsample_map,
)


def box_instances(boxes: dict[int, list[tuple[str, list[float]]]], size=(100, 100),
                  categories=("circle", "square", "triangle")) -> Instances:
    """COCO instances JSON with one polygon box per (category, [x, y, w, h])."""
    cats = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(categories)]
    cid = {c["name"]: c["id"] for c in cats}
    images, anns = [], []
    for image_id, objs in boxes.items():
        images.append({"id": image_id, "height": size[0], "width": size[1], "file_name": f"{image_id}.jpg"})
        for name, (x, y, w, h) in objs:
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cid[name], "iscrowd": 0,
                         "bbox": [x, y, w, h], "area": w * h,
                         "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]})
    data = {"images": images, "annotations": anns, "categories": cats}
    return Instances(io.BytesIO(json.dumps(data).encode()), "instances.json")


def peak_map(grid: int, row: int, col: int) -> np.ndarray:
    m = np.zeros((grid, grid), np.float32)
    m[row, col] = 1.0
    return m


def test_plural_and_multi_word_synonyms_map_to_their_category():
    lex = lexicon_for(CHAIR_SYNONYMS, use_coco_synonyms=True)
    assert lex.find("two hot dogs on a plate".split()) == [(1, 3, "hot dog")]
    assert lex.find("a traffic light above the street".split()) == [(1, 3, "traffic light")]
    assert lex.find("three traffic lights".split()) == [(1, 3, "traffic light")]
    # longest match first: "teddy bear" is not a "bear"; "people" and "men" are persons
    assert [c for *_, c in lex.find("a teddy bear and a bear".split())] == ["teddy bear", "bear"]
    assert [c for *_, c in lex.find("two men and some people with buses".split())] == ["person", "person", "bus"]
    assert lex.find("a sunny day".split()) == []
    assert plural("bus") == "buses" and plural("puppy") == "puppies" and plural("toy") == "toys"
    assert len(CHAIR_SYNONYMS) == 80


def test_shapes_lexicon_is_the_shape_names_with_plurals():
    lex = lexicon_for(["circle", "cross"], use_coco_synonyms=False)
    assert lex.find("two red crosses and a circle".split()) == [(2, 3, "cross"), (5, 6, "circle")]
    with pytest.raises(CaptError, match="no entry for categories \\['circle'\\]"):
        lexicon_for(["circle"], use_coco_synonyms=True)


def test_upsampling_from_grid_to_image_size_keeps_the_peak_in_place():
    up = upsample_map(peak_map(4, 1, 3), 100, 80)        # cell (1, 3) of a 4x4 grid over 100 x 80 px
    assert up.shape == (100, 80) and up.min() >= 0
    y, x = np.unravel_index(up.argmax(), up.shape)
    assert 25 <= y < 50 and 60 <= x < 80


def test_pointing_hit_miss_and_the_15_px_tolerance():
    mask = np.zeros((100, 100), bool)
    mask[40:60, 40:60] = True
    near = dilate(mask, 15)
    on = np.zeros((100, 100))
    on[50, 50] = 1
    assert pointing_hit(on, near)
    just_in, just_out = np.zeros((100, 100)), np.zeros((100, 100))
    just_in[50, 74] = 1          # 15 px right of the mask's last column (59)
    just_out[50, 75] = 1         # 16 px
    assert pointing_hit(just_in, near) and not pointing_hit(just_out, near)
    diagonal = np.zeros((100, 100))
    diagonal[70, 70] = 1         # 11 px down and 11 right of the corner (59, 59): 15.6 px away
    assert not pointing_hit(diagonal, near)


def test_mass_in_mask():
    mask = np.zeros((10, 10), bool)
    mask[:, :5] = True
    m = np.zeros((10, 10))
    m[0, 0], m[0, 9] = 3.0, 1.0
    assert mass_in_mask(m, mask) == pytest.approx(0.75)
    m[5, 2] = 4.0                # inside the mask
    assert mass_in_mask(m, mask) == pytest.approx(7 / 8)
    # a constant map singles out nothing: no mass, not the uniform baseline's half (see the degenerate maps' test)
    assert mass_in_mask(np.ones((10, 10)), mask) == 0.0
    assert mass_in_mask(np.zeros((10, 10)), mask) == 0.0


def test_score_grounding_pointing_mass_baselines_and_chair():
    # image 1: a circle top-left, a square bottom-right (100 x 100 px); image 2: a triangle in the centre
    inst = box_instances({1: [("circle", [0, 0, 30, 30]), ("square", [70, 70, 30, 30])],
                          2: [("triangle", [35, 35, 30, 30])]})
    lex = lexicon_for(inst.categories, use_coco_synonyms=False)
    captions = {
        # "circle" looks top-left (hit), "square" looks top-left too (miss), "triangle" is absent
        1: ("a circle and a square and a triangle".split(),
            np.stack([peak_map(4, 0, 0)] * 2 + [peak_map(4, 0, 0)] * 1 + [peak_map(4, 0, 0)] * 5)),
        # "triangles" (plural) looks at the centre: hit, all the mass near it
        2: ("two triangles".split(), np.stack([peak_map(4, 0, 0), np.pad(np.ones((2, 2)), 1)])),
    }
    s = score_grounding(captions, inst, lex, tolerance=15)
    assert s["grounded_words"] == 3
    assert s["pointing_game"] == pytest.approx(2 / 3)
    assert s["object_mentions"] == 4
    assert s["chair_i"] == pytest.approx(1 / 4)          # "triangle" in image 1
    assert s["chair_s"] == pytest.approx(1 / 2)
    # centre (49, 49): within 15 px of the square (70..99)? no (21 px); of the circle? no; in the triangle: yes
    assert s["pointing_game_centre"] == pytest.approx(1 / 3)
    assert s["mass_in_mask_centre"] == pytest.approx(1 / 3)
    # uniform: each mask is 9% of the image
    assert s["mass_in_mask_uniform"] == pytest.approx(0.09, abs=1e-6)
    assert 0.09 < s["pointing_game_uniform"] < 0.5
    assert 0 < s["mass_in_mask"] < 1


def test_bad_instances_file_names_the_file_and_the_key():
    with pytest.raises(CaptError, match="instances.json: an instances file needs a list under 'annotations'"):
        Instances(io.BytesIO(b'{"images": [], "categories": []}'), "instances.json")
    with pytest.raises(CaptError, match="instances.json: not valid JSON"):
        Instances(io.BytesIO(b"{"), "instances.json")


# Evaluation's grounding on a COCO-like dataset: instances split into a train and a val file inside
# the annotations zip, the test images all in val (as Karpathy's COCO test images are).
CATEGORIES = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(("circle", "square", "triangle"))]


def instances_json(boxes: dict[int, list[tuple[str, list[float]]]], first_ann: int) -> dict:
    cid = {c["name"]: c["id"] for c in CATEGORIES}
    images = [{"id": i, "height": 100, "width": 100, "file_name": f"{i}.jpg"} for i in boxes]
    anns = [{"id": first_ann + k, "image_id": i, "category_id": cid[name], "iscrowd": 0, "bbox": [x, y, w, h],
             "area": w * h, "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]}
            for k, (i, name, (x, y, w, h)) in enumerate((i, n, b) for i, objs in boxes.items() for n, b in objs)]
    return {"info": {}, "images": images, "licenses": [], "annotations": anns, "categories": CATEGORIES}


TRAIN_BOXES = {10: [("circle", [0, 0, 50, 50])], 11: [("square", [10, 10, 30, 30])]}
VAL_BOXES = {1: [("circle", [0, 0, 30, 30]), ("square", [70, 70, 30, 30])],
             2: [("triangle", [35, 35, 30, 30]), ("triangle", [0, 60, 20, 20])],
             3: [("square", [40, 0, 20, 20])]}          # in val, not a test image


def coco_like_dataset(root, train_is_malformed: bool):
    """data/raw/<name> with manifest.json and annotations.zip holding instances_{train,val}.json;
    a malformed train file is valid only as far as the end of its images list."""
    import zipfile

    train = json.dumps(instances_json(TRAIN_BOXES, 100))
    if train_is_malformed:
        train = train[:train.index('"licenses"')] + '"annotations": [{"id": oops, not json'
    root.mkdir(parents=True)
    with zipfile.ZipFile(root / "annotations.zip", "w") as zf:
        zf.writestr("annotations/instances_train.json", train)
        zf.writestr("annotations/instances_val.json", json.dumps(instances_json(VAL_BOXES, 1)))
    (root / "manifest.json").write_text(json.dumps({
        "name": root.name, "images": ["images.zip"], "splits": {"file": "split.json", "member": None},
        "captions": {"format": "coco", "files": []},
        "instances": [{"file": "annotations.zip", "member": f"annotations/instances_{s}.json"} for s in ("train", "val")]}))


def test_maps(techniques=("attention", "gradcam")) -> dict[str, dict]:
    """Each technique's maps of the test images 1 and 2 (same words, different maps)."""
    rng = np.random.default_rng(0)
    captions = {1: "a circle and a square and a circle and a triangle".split(), 2: "two triangles".split()}
    return {t: {i: (w, rng.random((len(w), 16)).astype(np.float32)) for i, w in captions.items()}
            for t in techniques}


test_maps.__test__ = False       # a helper, not a test


def _evaluate_grounding(dataset: str, maps: dict) -> dict:
    """The evaluation's grounding and CHAIR (capt.eval.evaluation) of the captions whose words ``maps``
    holds (the captions of the first technique; with no maps, those of ``test_maps()``, scored
    without maps), on the instances of ``data/raw/<dataset>``."""
    from capt.eval.evaluation import EvaluateConfig, ground_captions, test_instances

    words = next(iter((maps or test_maps()).values()))
    hypotheses = {i: " ".join(w) for i, (w, _) in words.items()}
    return ground_captions(test_instances(Path("data/raw") / dataset, hypotheses), hypotheses, maps,
                           EvaluateConfig().grounding_tolerance)


def test_evaluation_reads_only_the_instances_file_of_its_test_images(tmp_path, monkeypatch):
    from capt.data.manifest import load_manifest
    from capt.eval.grounding import load_instances
    coco_like_dataset(tmp_path / "data/raw/coco", train_is_malformed=True)
    coco_like_dataset(tmp_path / "data/raw/coco_whole", train_is_malformed=False)
    monkeypatch.chdir(tmp_path)
    maps = test_maps()
    # everything loaded, as before: the same scores, technique by technique
    everything = load_instances(load_manifest(tmp_path / "data/raw/coco_whole"))
    assert sorted(everything.coco.imgs) == [1, 2, 3, 10, 11]
    lexicon = lexicon_for(everything.categories, use_coco_synonyms=False)
    expected = {t: score_grounding(m, everything, lexicon, tolerance=15) for t, m in maps.items()}

    out = _evaluate_grounding("coco", maps)              # the train file's annotations: never parsed
    assert out == _evaluate_grounding("coco_whole", maps)
    # a baseline's captions have no maps: CHAIR alone, the same as the models' on the same words
    chair_only = _evaluate_grounding("coco", {})
    assert "grounding" not in chair_only and {k: out[k] for k in CHAIR_KEYS} == chair_only
    for t, s in expected.items():
        assert out["grounding"][t] == {k: v for k, v in s.items() if k not in CHAIR_KEYS}
        assert (out["chair_i"], out["chair_s"], out["object_mentions"]) == (s["chair_i"], s["chair_s"],
                                                                             s["object_mentions"])
    assert out["grounding"]["attention"]["grounded_words"] == 4 and out["object_mentions"] == 5   # a triangle absent
    # only the test images' records reach pycocotools
    only_test = load_instances(load_manifest(tmp_path / "data/raw/coco"), image_ids=[1, 2])
    assert sorted(only_test.coco.imgs) == [1, 2] and len(only_test.coco.anns) == 4
    assert only_test.categories == ["circle", "square", "triangle"]


def test_a_test_image_in_a_malformed_file_is_one_clear_error(tmp_path):
    from capt.data.manifest import load_manifest
    from capt.eval.grounding import load_instances

    coco_like_dataset(tmp_path / "coco", train_is_malformed=True)
    with pytest.raises(CaptError, match="instances_train.json: not valid JSON"):
        load_instances(load_manifest(tmp_path / "coco"), image_ids=[1, 10])


def test_each_mask_is_dilated_once_per_image_whatever_the_words_and_techniques(tmp_path, monkeypatch):
    import capt.eval.grounding as grounding

    coco_like_dataset(tmp_path / "data/raw/coco", train_is_malformed=False)
    monkeypatch.chdir(tmp_path)
    calls = []
    dilate_once = grounding.dilate
    monkeypatch.setattr(grounding, "dilate", lambda mask, radius: calls.append(mask.sum()) or dilate_once(mask, radius))
    _evaluate_grounding("coco", test_maps(("attention", "gradcam", "third")))
    # image 1: circle (twice) and square; image 2: triangle (its two instances, one mask)
    assert len(calls) == 3


@pytest.mark.parametrize("shape, radius", [((128, 128), 15.0), ((333, 500), 15.0), ((40, 30), 7.5), ((9, 13), 0.0)])
def test_dilate_is_the_direct_disk_convolution(shape, radius):
    import math

    import torch
    import torch.nn.functional as F

    from capt.eval.grounding import dilate

    rng = np.random.default_rng(0)
    mask = np.zeros(shape, bool)
    mask[rng.integers(0, shape[0], 6), rng.integers(0, shape[1], 6)] = True
    mask[: shape[0] // 4, -shape[1] // 5:] = True                       # a block at the border
    r = int(math.floor(radius))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    disk = torch.from_numpy((yy ** 2 + xx ** 2 <= radius ** 2).astype(np.float32))[None, None]
    direct = (F.conv2d(torch.from_numpy(mask.astype(np.float32))[None, None], disk, padding=r)[0, 0] > 0.5).numpy()
    got = dilate(mask, radius)
    assert got.dtype == bool and got.shape == shape
    assert np.array_equal(got, direct) and got.sum() > mask.sum() or radius == 0
    assert np.array_equal(dilate(np.zeros(shape, bool), radius), np.zeros(shape, bool))


# CHAIR's words as Rohrbach et al.'s code reads them (LisaAnne/Hallucination utils/chair.py, data/synonyms.txt).

def chair_lexicon() -> ChairLexicon:
    return lexicon_for(CHAIR_SYNONYMS, use_coco_synonyms=True)


def mentioned(caption: str) -> list[tuple[str, str]]:
    """(the mention's words, its category) for each mention in a caption."""
    words = caption.split()
    return [(" ".join(words[start:end]), category) for start, end, category in chair_lexicon().find(words)]


def test_the_chair_table_is_the_references():
    from importlib import resources

    text = resources.files("capt.eval").joinpath("chair_synonyms.txt").read_text()
    assert "https://github.com/LisaAnne/Hallucination" in text and "data/synonyms.txt" in text
    assert len([line for line in text.splitlines() if line and not line.startswith("#")]) == 80
    assert list(CHAIR_SYNONYMS)[:3] == ["person", "bicycle", "car"] and list(CHAIR_SYNONYMS)[-1] == "toothbrush"
    assert CHAIR_SYNONYMS["sports ball"] == ["sports ball", "ball"]
    assert CHAIR_SYNONYMS["toilet"] == ["toilet", "urinal", "commode", "lavatory", "potty"]   # its repeat once
    # read as the reference reads them (split on ", "): its double space and capital are kept
    assert " motor bike" in CHAIR_SYNONYMS["motorcycle"] and " cheesecake" in CHAIR_SYNONYMS["cake"]
    assert "iPhone" in CHAIR_SYNONYMS["cell phone"]
    every_word = [w for words in CHAIR_SYNONYMS.values() for w in words]
    assert len(every_word) == len(set(every_word))                     # no word names two categories


def test_singular_keeps_every_table_word_and_undoes_its_plural():
    category = chair_lexicon().word_category
    for name, words in CHAIR_SYNONYMS.items():
        for word in (w for w in words if " " not in w):
            assert category.get(singular(word)) == name, word
            assert category.get(singular(plural(word))) == name, plural(word)
    irregular = {"men": "man", "women": "woman", "children": "child", "mice": "mouse", "knives": "knife",
                 "geese": "goose", "oxen": "ox", "feet": "foot", "teeth": "tooth", "policemen": "policeman",
                 "grandchildren": "grandchild", "pocketknives": "pocketknife", "calves": "calf", "thieves": "thief"}
    regular = {"buses": "bus", "minibuses": "minibus", "glasses": "glass", "skis": "ski", "puppies": "puppy",
               "lorries": "lorry", "ties": "tie", "collies": "collie", "magpies": "magpie", "canoes": "canoe",
               "buffaloes": "buffalo", "flamingos": "flamingo", "couches": "couch", "sandwiches": "sandwich",
               "toothbrushes": "toothbrush", "boxes": "box", "vases": "vase", "horses": "horse", "taxis": "taxi",
               "tvs": "tv", "turkeys": "turkey", "boys": "boy", "stoves": "stove", "microwaves": "microwave",
               "gloves": "glove", "zebus": "zebu", "headaches": "headache", "beaches": "beach"}
    for plural_form, singular_form in {**irregular, **regular}.items():
        assert singular(plural_form) == singular_form, plural_form
    for already in ("bus", "minibus", "glass", "grass", "canvas", "scissors", "tennis", "lens", "sheep", "cattle",
                    "people", "person", "ox", "species", "series", "famous", "this", "has"):
        assert singular(already) == already


def test_chair_person_words_and_singular_persons():
    assert mentioned("a chef , an officer and a rider") == [("chef", "person"), ("officer", "person"),
                                                            ("rider", "person")]
    assert mentioned("two Men with three children") == [("Men", "person"), ("children", "person")]
    assert [w for *_, w in chair_lexicon().merged_words("two Men with three children".split())] == \
        ["two", "man", "with", "three", "child"]


def test_baby_and_adult_animals_are_animals_not_persons():
    assert mentioned("a baby elephant in the water") == [("baby elephant", "elephant")]
    assert mentioned("an adult giraffe and two baby giraffes") == [("adult giraffe", "giraffe"),
                                                                   ("baby giraffes", "giraffe")]
    assert mentioned("a baby cub") == []                                 # "cub" is in no category
    assert mentioned("a baby with a dog") == [("baby", "person"), ("dog", "dog")]   # a baby alone is a person


def test_passenger_jets_and_trains_are_vehicles_not_persons():
    assert mentioned("a passenger jet on the runway") == [("passenger jet", "airplane")]
    assert mentioned("a passenger train at the station") == [("passenger train", "train")]
    assert mentioned("a passenger on a bus") == [("passenger", "person"), ("bus", "bus")]


def test_bow_tie_is_a_tie_and_a_toilet_seat_is_no_chair():
    assert mentioned("a man in a bow tie") == [("man", "person"), ("bow tie", "tie")]
    assert mentioned("a white toilet seat") == [("toilet seat", "toilet")]
    assert mentioned("a toilet with the seat up") == [("toilet", "toilet")]
    assert mentioned("a chair with a red seat") == [("chair", "chair"), ("seat", "chair")]   # no toilet: a seat


@pytest.mark.parametrize("phrase, category", [("hot dogs", "hot dog"), ("teddy bear", "teddy bear"),
                                              ("stop sign", "stop sign"), ("cell phones", "cell phone"),
                                              ("laptop computer", "laptop"),
                                              ("wine glasses", "wine glass"), ("sports ball", "sports ball"),
                                              ("air plane", "airplane"), ("motor cycle", "motorcycle")])
def test_double_words_are_one_mention(phrase, category):
    """One mention spanning both words (its map: the second's), whatever the first would be alone."""
    words = f"a {phrase} on the table".split()
    assert chair_lexicon().find(words) == [(1, 3, category), (5, 6, "dining table")]


def test_a_motor_bike_is_merged_and_names_nothing_as_in_the_reference():
    """The reference merges "motor bike" into one word, whose table entry (" motor bike", after a
    double space) it can never match: published CHAIR numbers count no motorcycle there, nor a bike."""
    lexicon = chair_lexicon()
    assert [w for *_, w in lexicon.merged_words("a motor bike".split())] == ["a", "motor bike"]
    assert lexicon.find("a motor bike and a motorbike".split()) == [(5, 6, "motorcycle")]
    assert lexicon.find("an iphone and a cheesecake".split()) == []


def test_chair_counts_what_the_references_name_as_present_and_the_instances_variant_does_not():
    """Rohrbach et al.'s truth is the annotated instances and the objects the reference captions
    name; ``_instances`` takes the instances alone."""
    inst = box_instances({1: [("person", [0, 0, 30, 60])]}, categories=("person", "dog", "cat"))
    lexicon = dataset_lexicon(inst.categories)
    words = "a man with a dog and a cat".split()
    captions = {1: (words, np.random.default_rng(0).random((len(words), 16)).astype(np.float32))}
    references = {1: ["a person walks a puppy".split(), "a man and his dogs".split()]}
    s = score_techniques({"attention": captions}, inst, lexicon, 15, references)["attention"]
    assert s["object_mentions"] == 3
    assert s["chair_i"] == pytest.approx(1 / 3) and s["chair_s"] == 1        # the cat: in no reference
    assert s["chair_i_instances"] == pytest.approx(2 / 3)                  # the dog too: not annotated
    assert s["grounded_words"] == 1                                        # maps are scored on instances only
    without = score_techniques({"attention": captions}, inst, lexicon, 15)["attention"]
    assert without["chair_i"] == without["chair_i_instances"] == pytest.approx(2 / 3)


def test_chair_rules_in_hallucination_counts():
    """CHAIR-i / CHAIR-s through score_grounding, COCO categories, captions using the rules above."""
    inst = box_instances({1: [("person", [0, 0, 30, 60]), ("toilet", [50, 50, 30, 30])],
                          2: [("elephant", [20, 20, 60, 60])]},
                         categories=("person", "toilet", "chair", "elephant"))
    lexicon = dataset_lexicon(inst.categories)
    assert isinstance(lexicon, ChairLexicon)
    rng = np.random.default_rng(0)
    captions = {
        # officer (person) and toilet are there; the toilet's seat is no chair
        1: "an officer stands by a toilet with the seat up".split(),
        # the baby elephant is there and is no person; the rider is not
        2: "a baby elephant with a rider".split(),
    }
    s = score_grounding({i: (w, rng.random((len(w), 16)).astype(np.float32)) for i, w in captions.items()},
                        inst, lexicon, tolerance=15)
    assert s["object_mentions"] == 4                     # officer, toilet; elephant, rider
    assert s["chair_i"] == pytest.approx(1 / 4)          # the rider
    assert s["chair_s"] == pytest.approx(1 / 2)
    assert s["grounded_words"] == 3


# Degenerate maps: constant or not finite after upsampling, they point nowhere.

def test_a_degenerate_map_is_a_miss_with_no_mass_and_is_counted():
    # a circle in the top-left corner, so that a map's argmax at pixel (0, 0) would land on it
    inst = box_instances({1: [("circle", [0, 0, 30, 30])]})
    lex = lexicon_for(inst.categories, use_coco_synonyms=False)
    words = "a circle".split()
    nan_map = np.zeros((4, 4), np.float32)
    nan_map[2, 2] = np.nan
    maps = {"zero": np.zeros((2, 4, 4), np.float32), "constant": np.full((2, 4, 4), 0.3, np.float32),
            "negative": np.full((2, 4, 4), -1.0, np.float32),            # zero once clamped
            "nan": np.stack([nan_map] * 2), "normal": np.stack([peak_map(4, 0, 0)] * 2)}
    scores = score_techniques({t: {1: (words, m)} for t, m in maps.items()}, inst, lex, tolerance=15)
    for technique in ("zero", "constant", "negative", "nan"):
        s = scores[technique]
        assert (s["grounded_words"], s["degenerate_maps"]) == (1, 1), technique
        assert s["pointing_game"] == 0.0 and s["mass_in_mask"] == 0.0, technique
        assert s["pointing_game_centre"] == scores["normal"]["pointing_game_centre"]   # baselines as ever
    normal = scores["normal"]
    assert normal["degenerate_maps"] == 0 and normal["pointing_game"] == 1.0 and normal["mass_in_mask"] > 0.5
    # the parts, on upsampled maps
    near = dilate(np.pad(np.ones((30, 30), bool), ((0, 70), (0, 70))), 15)
    for grid in (np.zeros((4, 4)), np.full((4, 4), 0.3)):
        up = upsample_map(grid, 100, 100)
        assert is_degenerate(up) and not pointing_hit(up, near)
    assert not is_degenerate(upsample_map(peak_map(4, 0, 0), 100, 100))
    assert is_degenerate(np.full((3, 3), np.inf)) and is_degenerate(nan_map)
