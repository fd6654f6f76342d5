"""The shapes world: deterministic, in the real formats, and true of its pixels.

The checks here read the files the way a downstream stage would (zipfile, json, pycocotools)
and judge every caption with a parser of their own: nothing below imports the generator's
templates, palette or geometry, so a bug there cannot hide behind itself.
"""

from __future__ import annotations

import io
import json
import string
import zipfile
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from capt.config import build_config
from capt.data.shapes import ShapesConfig, generate_shapes
from capt.errors import CaptError

FILES = ("images.zip", "captions.json", "instances.json", "dataset_shapes.json", "manifest.json")

# The words a caption may use, written out here rather than taken from the generator.
SHAPE_WORDS = {"circle", "square", "triangle", "diamond", "cross"}
PLURAL = {"circles": "circle", "squares": "square", "triangles": "triangle",
          "diamonds": "diamond", "crosses": "cross"}  # fmt: skip
# Textbook RGB for each colour word: a pixel must be nearest to its object's word.
CANONICAL = {
    "red": (255, 0, 0),
    "green": (0, 160, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "purple": (128, 0, 128),
    "orange": (255, 140, 0),
}
# ...and its textbook hue, in degrees.
HUES = {"red": 0, "orange": 30, "yellow": 55, "green": 120, "blue": 230, "purple": 285}
SIZE_WORDS = {"small", "large"}
NUMBER = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4}
VOCAB = (
    SHAPE_WORDS | set(PLURAL) | set(CANONICAL) | SIZE_WORDS | set(NUMBER)
    | {"there", "is", "are", "picture", "of", "and", "the", "in", "at", "on", "to", "next"}
    | {"top", "bottom", "left", "right", "corner", "centre", "above", "below"}
)  # fmt: skip

# pycocotools' mask decoding predates numpy 2's copy keyword: its warning is not ours.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

SMALL = ShapesConfig(seed=3, n_train=24, n_val=8, n_test=8, image_size=96)


def _generate(cfg: ShapesConfig, out: Path) -> Path:
    generate_shapes(cfg, out, progress=False)
    return out


@pytest.fixture(scope="module")
def default_dir(tmp_path_factory) -> Path:
    return _generate(SMALL, tmp_path_factory.mktemp("default"))


@pytest.fixture(scope="module")
def shift_dir(tmp_path_factory) -> Path:
    return _generate(replace(SMALL, world="shift"), tmp_path_factory.mktemp("shift"))


def _load(folder: Path, name: str) -> dict:
    return json.loads((folder / name).read_text())


def _coco(folder: Path, name: str) -> COCO:
    coco = COCO()
    coco.dataset = _load(folder, name)
    coco.createIndex()
    return coco


def _scenes(folder: Path) -> dict[int, list[dict]]:
    """image id -> its instance annotations, each with the shape word added as "shape"."""
    instances = _load(folder, "instances.json")
    names = {c["id"]: c["name"] for c in instances["categories"]}
    scenes: dict[int, list[dict]] = {im["id"]: [] for im in instances["images"]}
    for ann in instances["annotations"]:
        scenes[ann["image_id"]].append({**ann, "shape": names[ann["category_id"]]})
    return scenes


def _decoded(folder: Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(folder / "images.zip") as archive:
        return {
            n: np.asarray(Image.open(io.BytesIO(archive.read(n))).convert("RGB"), dtype=np.float32)
            for n in archive.namelist()
        }


def _hue(rgb: np.ndarray) -> np.ndarray:
    """Hue in degrees of (n, 3) RGB pixels."""
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    return np.degrees(np.arctan2(np.sqrt(3) * (g - b), 2 * r - g - b)) % 360


# ----------------------------------------------------------------------------- determinism


def test_same_config_writes_identical_files_and_another_seed_does_not(default_dir, tmp_path):
    again = _generate(SMALL, tmp_path / "again")
    assert sorted(p.name for p in again.iterdir()) == sorted(FILES)
    for name in FILES:
        assert (again / name).read_bytes() == (default_dir / name).read_bytes(), name

    other = _generate(replace(SMALL, seed=4), tmp_path / "other")
    assert (other / "images.zip").read_bytes() != (default_dir / "images.zip").read_bytes()
    assert _load(other, "captions.json")["annotations"] != _load(default_dir, "captions.json")["annotations"]


def test_zip_entries_have_a_fixed_date_and_id_order(default_dir):
    with zipfile.ZipFile(default_dir / "images.zip") as archive:
        infos = archive.infolist()
    assert [i.filename for i in infos] == [f"images/shapes_{k:012d}.jpg" for k in range(1, 41)]
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}


def test_json_keys_are_sorted(default_dir):
    for name in FILES[1:]:
        text = (default_dir / name).read_text()
        data = json.loads(text)
        assert text.strip() == json.dumps(data, sort_keys=True, indent=2 if name == "manifest.json" else None)


# ----------------------------------------------------------------------------- formats


def test_manifest_is_exactly_the_spec(default_dir):
    assert _load(default_dir, "manifest.json") == {
        "name": "shapes",
        "images": ["images.zip"],
        "splits": {"file": "dataset_shapes.json", "member": None},
        "captions": {"format": "coco", "files": [{"file": "captions.json", "member": None}]},
        "instances": [{"file": "instances.json", "member": None}],
    }


def test_name_goes_into_every_file_name(tmp_path):
    cfg = replace(SMALL, n_train=2, n_val=1, n_test=1)
    summary = generate_shapes(cfg, tmp_path, name="shapes-shift", progress=False)
    assert summary["images"] == {"train": 2, "val": 1, "test": 1}
    manifest = _load(tmp_path, "manifest.json")
    assert manifest["name"] == "shapes-shift"
    assert manifest["splits"]["file"] == "dataset_shapes-shift.json"
    karpathy = _load(tmp_path, "dataset_shapes-shift.json")
    assert karpathy["dataset"] == "shapes-shift"
    with zipfile.ZipFile(tmp_path / "images.zip") as archive:
        assert archive.namelist()[0] == "images/shapes-shift_000000000001.jpg"


def test_coco_files_load_with_pycocotools(default_dir):
    captions = _coco(default_dir, "captions.json")
    instances = _coco(default_dir, "instances.json")
    ids = list(range(1, 41))
    assert sorted(captions.getImgIds()) == ids
    assert sorted(instances.getImgIds()) == ids
    cats = instances.loadCats(instances.getCatIds())
    assert {c["name"] for c in cats} == SHAPE_WORDS
    assert {c["supercategory"] for c in cats} == {"shape"}
    for image_id in ids:
        image = captions.loadImgs(image_id)[0]
        assert image == {"id": image_id, "file_name": f"shapes_{image_id:012d}.jpg", "width": 96, "height": 96}
        texts = [a["caption"] for a in captions.loadAnns(captions.getAnnIds(imgIds=image_id))]
        assert len(texts) == 5 and len(set(texts)) == 5
        anns = instances.loadAnns(instances.getAnnIds(imgIds=image_id))
        assert 1 <= len(anns) <= 3
        for ann in anns:
            assert ann["iscrowd"] == 0
            assert all(isinstance(v, float) for v in ann["bbox"])
            assert ann["color"] in CANONICAL and ann["size"] in SIZE_WORDS
            mask = instances.annToMask(ann)
            assert mask.shape == (96, 96)
            assert abs(mask.sum() - ann["area"]) <= 0.15 * ann["area"] + 4
            # The polygon's own bbox is the annotated bbox.
            x, y, w, h = ann["bbox"]
            bx, by, bw, bh = mask_utils.toBbox(mask_utils.encode(np.asfortranarray(mask)))
            assert abs(bx - x) <= 1.5 and abs(by - y) <= 1.5 and abs(bw - w) <= 2 and abs(bh - h) <= 2


def test_ids_agree_across_the_four_files_and_the_zip(default_dir):
    captions = _load(default_dir, "captions.json")
    instances = _load(default_dir, "instances.json")
    karpathy = _load(default_dir, "dataset_shapes.json")
    assert captions["images"] == instances["images"]
    assert karpathy["dataset"] == "shapes"
    with zipfile.ZipFile(default_dir / "images.zip") as archive:
        members = archive.namelist()
    assert members == [f"images/{im['file_name']}" for im in captions["images"]]

    by_image: dict[int, list[str]] = {}
    for ann in captions["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann["caption"])
    assert len({a["id"] for a in captions["annotations"]}) == len(captions["annotations"])
    assert len({a["id"] for a in instances["annotations"]}) == len(instances["annotations"])

    sentids = []
    for index, (entry, image) in enumerate(zip(karpathy["images"], captions["images"], strict=True)):
        assert entry["imgid"] == index
        assert entry["cocoid"] == image["id"]
        assert f"{entry['filepath']}/{entry['filename']}" == members[index]
        assert [s["raw"] for s in entry["sentences"]] == by_image[image["id"]]
        assert entry["sentids"] == [s["sentid"] for s in entry["sentences"]]
        assert {s["imgid"] for s in entry["sentences"]} == {index}
        sentids += entry["sentids"]
    assert len(set(sentids)) == len(sentids) == 200


def test_karpathy_splits_follow_position(default_dir):
    splits = [e["split"] for e in _load(default_dir, "dataset_shapes.json")["images"]]
    assert splits == ["train"] * 24 + ["val"] * 8 + ["test"] * 8


def test_tokens_are_the_lowercased_raw_without_punctuation(default_dir):
    for entry in _load(default_dir, "dataset_shapes.json")["images"]:
        for sentence in entry["sentences"]:
            raw = sentence["raw"]
            expected = "".join(c for c in raw.lower() if c not in string.punctuation).split()
            assert sentence["tokens"] == expected
            assert all(t.isalpha() and t.islower() for t in sentence["tokens"])


def test_summary_counts(tmp_path):
    cfg = replace(SMALL, n_train=5, n_val=3, n_test=2, captions_per_image=4)
    summary = generate_shapes(cfg, tmp_path, progress=False)
    instances = _load(tmp_path, "instances.json")
    assert summary == {
        "images": {"train": 5, "val": 3, "test": 2},
        "captions": 40,
        "objects": len(instances["annotations"]),
    }


# ----------------------------------------------------------------------------- truth
#
# An independent reading of the captions. Grammar the parser accepts:
#   caption  := prefix? item (("," | "and") item)*          (colour words present)
#             | ("there is" | "there are")? count ("," | "and") count ...   (no colour words)
#   item     := np position? | np relation np
#   np       := ("a" | "an") size? colour shape
# Meanings, judged on the boxes (centre = box centre, S = image side):
#   top/bottom/left/right: centre in that outer third; centre: centre in the middle third of both
#   above: centre higher, vertical offset larger than horizontal, boxes apart vertically; etc.
#   next to: the boxes are within S/5 of each other
#   counts: exact for every shape mentioned, and all objects counted

POSITIONS = {
    ("in", "the", "top", "left", "corner"): ("top", "left"),
    ("in", "the", "top", "right", "corner"): ("top", "right"),
    ("in", "the", "bottom", "left", "corner"): ("bottom", "left"),
    ("in", "the", "bottom", "right", "corner"): ("bottom", "right"),
    ("at", "the", "top"): ("top",),
    ("at", "the", "bottom"): ("bottom",),
    ("on", "the", "left"): ("left",),
    ("on", "the", "right"): ("right",),
    ("in", "the", "centre"): ("centre",),
}
RELATIONS = {
    ("above",): "above",
    ("below",): "below",
    ("to", "the", "left", "of"): "left of",
    ("to", "the", "right", "of"): "right of",
    ("next", "to"): "next to",
}


def _centre(obj: dict) -> tuple[float, float]:
    x, y, w, h = obj["bbox"]
    return x + w / 2, y + h / 2


def _holds_position(obj: dict, parts: tuple[str, ...], side: int) -> bool:
    cx, cy = _centre(obj)
    third = side / 3
    tests = {
        "top": cy < third,
        "bottom": cy > 2 * third,
        "left": cx < third,
        "right": cx > 2 * third,
        "centre": third < cx < 2 * third and third < cy < 2 * third,
    }
    return all(tests[p] for p in parts)


def _holds_relation(a: dict, b: dict, relation: str, side: int) -> bool:
    ax, ay, aw, ah = a["bbox"]
    bx, by, bw, bh = b["bbox"]
    (acx, acy), (bcx, bcy) = _centre(a), _centre(b)
    dx, dy = bcx - acx, bcy - acy
    if relation == "above":
        return dy > abs(dx) and ay + ah <= by
    if relation == "below":
        return -dy > abs(dx) and by + bh <= ay
    if relation == "left of":
        return dx > abs(dy) and ax + aw <= bx
    if relation == "right of":
        return -dx > abs(dy) and bx + bw <= ax
    if relation == "next to":
        gap = max(bx - (ax + aw), ax - (bx + bw), by - (ay + ah), ay - (by + bh))
        return gap <= side / 5
    raise AssertionError(relation)


def _match(tokens: list[str], start: int, table: dict) -> tuple[object, int] | None:
    for words, meaning in table.items():
        if tuple(tokens[start : start + len(words)]) == words:
            return meaning, start + len(words)
    return None


def _parse_np(tokens: list[str], i: int, caption: str) -> tuple[dict, int]:
    article = tokens[i]
    assert article in ("a", "an"), f"expected an article at {i}: {caption}"
    i += 1
    assert article == ("an" if tokens[i][0] in "aeiou" else "a"), f"wrong article: {caption}"
    size = None
    if tokens[i] in SIZE_WORDS:
        size, i = tokens[i], i + 1
    assert tokens[i] in CANONICAL, f"expected a colour at {i}: {caption}"
    assert tokens[i + 1] in SHAPE_WORDS, f"expected a shape at {i + 1}: {caption}"
    return {"size": size, "color": tokens[i], "shape": tokens[i + 1]}, i + 2


def _referents(np_: dict, objects: list[dict]) -> list[dict]:
    return [
        o for o in objects
        if o["color"] == np_["color"] and o["shape"] == np_["shape"] and np_["size"] in (None, o["size"])
    ]  # fmt: skip


def _check_counts(tokens: list[str], objects: list[dict], caption: str) -> set[int]:
    i = 0
    if tokens[:2] in (["there", "is"], ["there", "are"]):
        i = 2
    counted: Counter = Counter()
    first = True
    while i < len(tokens):
        number, noun = tokens[i], tokens[i + 1]
        n = NUMBER[number]
        shape = noun if n == 1 else PLURAL[noun]
        assert (noun in SHAPE_WORDS) == (n == 1), f"number agreement: {caption}"
        if first and tokens[:1] == ["there"]:
            assert tokens[1] == ("is" if n == 1 else "are"), f"there is/are agreement: {caption}"
        first = False
        assert shape not in counted, f"shape counted twice: {caption}"
        counted[shape] = n
        i += 2
        if i < len(tokens):
            assert tokens[i] in (",", "and"), f"expected a separator at {i}: {caption}"
            i += 1
    actual = Counter(o["shape"] for o in objects)
    assert counted == actual, f"counts {dict(counted)} but image has {dict(actual)}: {caption}"
    return {o["id"] for o in objects}


def check_caption(caption: str, objects: list[dict], side: int) -> set[int]:
    """Assert the caption is well formed and true; return the ids of the objects it mentions."""
    assert caption[0].isupper() and caption.endswith("."), caption
    tokens = caption[:-1].lower().replace(",", " ,").split()
    words = [t for t in tokens if t != ","]
    assert set(words) <= VOCAB, f"unknown words {set(words) - VOCAB}: {caption}"
    assert len(words) <= 18, caption
    if not any(t in CANONICAL for t in tokens):
        return _check_counts(tokens, objects, caption)

    i = 0
    if tokens[:2] == ["there", "is"]:
        i = 2
    elif tokens[:3] == ["a", "picture", "of"]:
        i = 3
    mentioned: list[int] = []
    while True:
        np_, i = _parse_np(tokens, i, caption)
        candidates = _referents(np_, objects)
        assert candidates, f"no {np_} in the image: {caption}"
        if (pos := _match(tokens, i, POSITIONS)) is not None:
            parts, i = pos
            candidates = [o for o in candidates if _holds_position(o, parts, side)]
            assert candidates, f"position {' '.join(parts)} is false: {caption}"
            mentioned.append(candidates[0]["id"])
        elif (rel := _match(tokens, i, RELATIONS)) is not None:
            relation, i = rel
            other, i = _parse_np(tokens, i, caption)
            pairs = [
                (a, b) for a in candidates for b in _referents(other, objects)
                if a is not b and _holds_relation(a, b, relation, side)
            ]  # fmt: skip
            assert pairs, f"relation {relation!r} is false: {caption}"
            mentioned += [pairs[0][0]["id"], pairs[0][1]["id"]]
        else:
            mentioned.append(candidates[0]["id"])
        if i == len(tokens):
            break
        assert tokens[i] in (",", "and"), f"unexpected {tokens[i]!r} at {i}: {caption}"
        i += 1
    assert len(set(mentioned)) == len(mentioned), f"one object named twice: {caption}"
    return set(mentioned)


def _check_world(folder: Path, cfg: ShapesConfig) -> dict:
    """Check every caption of every image; return some statistics about them."""
    scenes = _scenes(folder)
    captions = _load(folder, "captions.json")["annotations"]
    by_image: dict[int, list[str]] = {}
    for ann in captions:
        by_image.setdefault(ann["image_id"], []).append(ann["caption"])
    stats = Counter()
    for image_id, texts in by_image.items():
        objects = scenes[image_id]
        assert len(texts) == cfg.captions_per_image == len(set(texts))
        # Referents are unambiguous: no two objects share colour and shape.
        assert len({(o["color"], o["shape"]) for o in objects}) == len(objects)
        for text in texts:
            mentioned = check_caption(text, objects, cfg.image_size)
            stats[f"captions_{len(objects)}"] += 1
            stats[f"all_mentioned_{len(objects)}"] += mentioned == {o["id"] for o in objects}
            tokens = set(text.lower().split())
            stats["relation"] += bool(tokens & {"above", "below", "next", "to"})
            stats["position"] += bool(tokens & {"corner", "top", "bottom", "centre"})
            stats["count"] += not bool(tokens & set(CANONICAL))
    return stats


def test_every_caption_is_true_of_its_image(default_dir):
    stats = _check_world(default_dir, SMALL)
    # Lone objects are always named; pairs mostly in full.
    assert stats["all_mentioned_1"] == stats["captions_1"] > 0
    assert stats["all_mentioned_2"] >= 0.6 * stats["captions_2"] > 0
    # Every kind of sentence occurs: the captions are varied, not one template.
    assert min(stats["relation"], stats["position"], stats["count"]) >= 10


def test_captions_are_true_in_the_shift_world(shift_dir):
    _check_world(shift_dir, replace(SMALL, world="shift"))


@pytest.mark.parametrize(
    "cfg",
    [
        ShapesConfig(seed=5, n_train=30, n_val=0, n_test=0, image_size=64, max_objects=1, captions_per_image=8),
        ShapesConfig(seed=6, n_train=30, n_val=0, n_test=0, image_size=128, max_objects=4, captions_per_image=8),
    ],
    ids=["one-object-8-captions", "four-objects-8-captions"],
)
def test_captions_are_true_at_the_extremes(cfg, tmp_path):
    stats = _check_world(_generate(cfg, tmp_path), cfg)
    assert sum(stats[f"captions_{n}"] for n in range(1, 5)) == 30 * 8


def test_vocabulary_is_small_and_sentences_short(default_dir, shift_dir):
    words: Counter = Counter()
    for folder in (default_dir, shift_dir):
        for entry in _load(folder, "dataset_shapes.json")["images"]:
            for sentence in entry["sentences"]:
                assert 1 <= len(sentence["tokens"]) <= 18
                words.update(sentence["tokens"])
    assert 30 <= len(words) <= 60
    assert set(words) <= VOCAB


# ----------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("world", ["default", "shift"])
def test_objects_are_inside_apart_and_one_to_max(world, default_dir, shift_dir):
    folder = default_dir if world == "default" else shift_dir
    side = SMALL.image_size
    counts = Counter()
    for objects in _scenes(folder).values():
        counts[len(objects)] += 1
        for o in objects:
            x, y, w, h = o["bbox"]
            assert 0 <= x and 0 <= y and x + w <= side and y + h <= side, o
        for a in objects:
            for b in objects:
                if a is b:
                    continue
                ax, ay, aw, ah = a["bbox"]
                bx, by, bw, bh = b["bbox"]
                assert ax + aw < bx or bx + bw < ax or ay + ah < by or by + bh < ay, (a, b)
    assert set(counts) == {1, 2, 3}


@pytest.mark.parametrize("world", ["default", "shift"])
def test_size_words_match_clearly_separated_sizes(world, default_dir, shift_dir):
    objects = [o for scene in _scenes(default_dir if world == "default" else shift_dir).values() for o in scene]
    small = [o["bbox"][2] for o in objects if o["size"] == "small"]
    large = [o["bbox"][2] for o in objects if o["size"] == "large"]
    assert small and large
    assert min(small) >= 0.11 * SMALL.image_size  # still clearly visible
    assert max(small) * 1.2 < min(large)


@pytest.mark.parametrize("world", ["default", "shift"])
def test_the_pixels_inside_each_object_have_its_colour(world, default_dir, shift_dir):
    folder = default_dir if world == "default" else shift_dir
    coco = _coco(folder, "instances.json")
    pixels = _decoded(folder)
    palette_names = list(CANONICAL)
    palette = np.array([CANONICAL[c] for c in palette_names], dtype=np.float32)

    def nearest(rgb: np.ndarray) -> np.ndarray:
        return np.argmin(((rgb[..., None, :] - palette) ** 2).sum(-1), axis=-1)

    for ann in coco.loadAnns(coco.getAnnIds()):
        image = pixels[f"images/{coco.imgs[ann['image_id']]['file_name']}"]
        mask = coco.annToMask(ann).astype(bool)
        ys, xs = np.nonzero(mask)
        cy, cx = int(round(ys.mean())), int(round(xs.mean()))
        assert mask[cy, cx], ann  # the centroid of each of these shapes lies inside it
        patch = image[cy - 1 : cy + 2, cx - 1 : cx + 2].reshape(-1, 3).mean(0)
        assert palette_names[int(nearest(patch))] == ann["color"], (ann, patch)
        # The mask and the drawn shape coincide: nearly all of the mask, its antialiased rim
        # aside, has the colour's hue (hue, because a rim blended with a dark background is a
        # darker shade of the colour, not another colour).
        inner = mask.copy()
        inner[1:] &= mask[:-1]
        inner[:-1] &= mask[1:]
        inner[:, 1:] &= mask[:, :-1]
        inner[:, :-1] &= mask[:, 1:]
        hues = _hue(image[inner])
        distance = np.abs((hues[:, None] - np.array(list(HUES.values()))[None] + 180) % 360 - 180)
        share = np.mean(distance.argmin(1) == list(HUES).index(ann["color"]))
        assert share >= 0.9, (ann, share)


# ----------------------------------------------------------------------------- the two worlds


def _background_luminance(folder: Path) -> float:
    scenes = _scenes(folder)
    images = _load(folder, "instances.json")["images"]
    pixels = _decoded(folder)
    means = []
    for image in images:
        rgb = pixels[f"images/{image['file_name']}"]
        keep = np.ones(rgb.shape[:2], dtype=bool)
        for o in scenes[image["id"]]:
            x, y, w, h = (int(v) for v in o["bbox"])
            keep[max(0, y - 2) : y + h + 2, max(0, x - 2) : x + w + 2] = False
        means.append((rgb[keep] @ np.array([0.299, 0.587, 0.114])).mean())
    return float(np.mean(means))


def test_shift_world_has_the_same_words_and_other_backgrounds(default_dir, shift_dir):
    default_instances = _load(default_dir, "instances.json")
    shift_instances = _load(shift_dir, "instances.json")
    assert default_instances["categories"] == shift_instances["categories"]
    for key in ("color", "size"):
        assert {a[key] for a in default_instances["annotations"]} <= set(CANONICAL) | SIZE_WORDS
        assert {a[key] for a in shift_instances["annotations"]} <= set(CANONICAL) | SIZE_WORDS
    assert _background_luminance(default_dir) - _background_luminance(shift_dir) > 50
    # And the images themselves differ, not just their seed.
    assert (default_dir / "images.zip").read_bytes() != (shift_dir / "images.zip").read_bytes()


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "field, value",
    [
        ("n_train", -1),
        ("n_val", 1.5),
        ("image_size", 8),
        ("world", "mars"),
        ("captions_per_image", 0),
        ("captions_per_image", 50),
        ("max_objects", 0),
        ("jpeg_quality", 101),
        ("seed", -3),
        ("seed", True),
    ],
)
def test_bad_config_raises_one_line_naming_the_field(field, value):
    with pytest.raises(CaptError) as info:
        build_config(ShapesConfig, {field: value}, "download.shapes")
    message = str(info.value)
    assert message.startswith(f"params.yaml: download.shapes.{field}: must be ") and "\n" not in message
    assert message.endswith(f"got {json.dumps(value)}"), message


def test_no_images_at_all_is_an_error():
    with pytest.raises(CaptError, match=r"^params.yaml: download.shapes: n_train \+ n_val \+ n_test must be at least 1"):
        build_config(ShapesConfig, {"n_train": 0, "n_val": 0, "n_test": 0}, "download.shapes")


@pytest.mark.parametrize("name", ["", "a/b", "../up", "with space"])
def test_bad_name_is_an_error(name, tmp_path):
    with pytest.raises(CaptError, match="name"):
        generate_shapes(replace(SMALL, n_train=1, n_val=0, n_test=0), tmp_path, name=name, progress=False)
