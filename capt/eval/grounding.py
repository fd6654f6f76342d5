"""Grounding and hallucination: does each word's map land on the thing the word names, and does
a caption name things that are not in the image?

Words are mapped to object categories by a :class:`Lexicon` (COCO: the synonym table below,
written for this project; `shapes`: its shape names), plurals and multi-word names included
("hot dogs", "traffic lights"). For every mention whose category is in the image (by its
instance masks, through pycocotools), the mention's map (that of its last word, the noun) is
upsampled bicubically from the model's grid to the image's original size and scored:

- **pointing game** (Zhang et al., ECCV 2016): a hit when the map's maximum lies within
  ``tolerance`` pixels (15) of the category's mask (all its instances together);
- **mass in mask**: the share of the map's (non-negative) mass inside that mask.

Two baselines are scored on the same mentions: the image's centre point (pointing: is the
centre within tolerance; mass: 1 if the centre pixel is in the mask) and a uniform map
(pointing: the expected hit rate of a point drawn uniformly, i.e. the share of pixels within
tolerance; mass: the mask's share of the image).

**CHAIR** (Rohrbach et al., EMNLP 2018), the instances-only variant: a mention is hallucinated
when its category has no instance in the image (the original also accepts categories named by
the reference captions; we use the annotated instances alone). CHAIR-i = hallucinated mentions /
mentions; CHAIR-s = captions with at least one hallucinated mention / captions.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO

import ijson
import numpy as np
import torch
import torch.nn.functional as F
from pycocotools.coco import COCO

from capt.data.manifest import Manifest
from capt.errors import CaptError

# The 80 COCO categories and the words captions use for them (singular; plurals are derived).
# Written for this project from the category names and common caption vocabulary.
COCO_SYNONYMS: dict[str, list[str]] = {
    "person": ["person", "people", "man", "men", "woman", "women", "boy", "girl", "child", "children",
               "kid", "guy", "lady", "player", "skier", "surfer", "skateboarder", "snowboarder",
               "baby", "toddler", "adult", "rider", "pedestrian", "batter", "catcher", "pitcher",
               "gentleman", "teenager", "tennis player", "baseball player", "young man", "young woman"],
    "bicycle": ["bicycle", "bike", "cycle"],
    "car": ["car", "automobile", "sedan", "taxi", "cab", "suv", "van"],
    "motorcycle": ["motorcycle", "motorbike", "motor bike", "scooter", "moped", "dirt bike"],
    "airplane": ["airplane", "plane", "jet", "aircraft", "airliner", "jetliner", "passenger jet"],
    "bus": ["bus", "double decker", "school bus", "trolley"],
    "train": ["train", "locomotive", "tram", "subway"],
    "truck": ["truck", "pickup", "pickup truck", "lorry", "fire truck", "semi"],
    "boat": ["boat", "ship", "sailboat", "canoe", "kayak", "yacht", "ferry", "raft"],
    "traffic light": ["traffic light", "stop light", "street light", "traffic signal"],
    "fire hydrant": ["fire hydrant", "hydrant"],
    "stop sign": ["stop sign"],
    "parking meter": ["parking meter", "meter"],
    "bench": ["bench"],
    "bird": ["bird", "pigeon", "seagull", "gull", "duck", "parrot", "goose", "swan", "owl", "eagle"],
    "cat": ["cat", "kitten", "kitty"],
    "dog": ["dog", "puppy", "pup", "doggy"],
    "horse": ["horse", "pony", "foal"],
    "sheep": ["sheep", "lamb", "ram"],
    "cow": ["cow", "cattle", "bull", "calf", "ox"],
    "elephant": ["elephant"],
    "bear": ["bear", "teddy", "polar bear", "grizzly"],
    "zebra": ["zebra"],
    "giraffe": ["giraffe"],
    "backpack": ["backpack", "knapsack"],
    "umbrella": ["umbrella", "parasol"],
    "handbag": ["handbag", "purse", "hand bag"],
    "tie": ["tie", "necktie", "bow tie"],
    "suitcase": ["suitcase", "luggage", "suit case"],
    "frisbee": ["frisbee"],
    "skis": ["ski", "skis"],
    "snowboard": ["snowboard"],
    "sports ball": ["ball", "soccer ball", "tennis ball", "baseball", "football", "basketball"],
    "kite": ["kite"],
    "baseball bat": ["baseball bat", "bat"],
    "baseball glove": ["baseball glove", "glove", "mitt"],
    "skateboard": ["skateboard", "skate board"],
    "surfboard": ["surfboard", "surf board", "board"],
    "tennis racket": ["tennis racket", "racket", "racquet"],
    "bottle": ["bottle"],
    "wine glass": ["wine glass"],
    "cup": ["cup", "mug", "coffee cup"],
    "fork": ["fork"],
    "knife": ["knife", "knives"],
    "spoon": ["spoon"],
    "bowl": ["bowl"],
    "banana": ["banana"],
    "apple": ["apple"],
    "sandwich": ["sandwich", "burger", "sub", "hamburger"],
    "orange": ["orange"],
    "broccoli": ["broccoli"],
    "carrot": ["carrot"],
    "hot dog": ["hot dog", "hotdog"],
    "pizza": ["pizza"],
    "donut": ["donut", "doughnut"],
    "cake": ["cake", "cupcake"],
    "chair": ["chair", "stool"],
    "couch": ["couch", "sofa"],
    "potted plant": ["potted plant", "plant", "houseplant", "house plant"],
    "bed": ["bed"],
    "dining table": ["dining table", "table", "desk"],
    "toilet": ["toilet"],
    "tv": ["tv", "television", "monitor", "screen"],
    "laptop": ["laptop", "computer", "notebook"],
    "mouse": ["mouse"],
    "remote": ["remote", "remote control", "controller"],
    "keyboard": ["keyboard"],
    "cell phone": ["cell phone", "phone", "cellphone", "smartphone", "mobile phone"],
    "microwave": ["microwave"],
    "oven": ["oven", "stove"],
    "toaster": ["toaster"],
    "sink": ["sink"],
    "refrigerator": ["refrigerator", "fridge"],
    "book": ["book"],
    "clock": ["clock"],
    "vase": ["vase"],
    "scissors": ["scissors"],
    "teddy bear": ["teddy bear", "stuffed animal"],
    "hair drier": ["hair drier", "hair dryer", "hairdryer", "blow dryer"],
    "toothbrush": ["toothbrush", "tooth brush"],
}

_IRREGULAR = {"man": "men", "woman": "women", "child": "children", "person": "people", "mouse": "mice",
              "knife": "knives", "sheep": "sheep", "people": "people", "men": "men", "women": "women",
              "children": "children", "skis": "skis", "scissors": "scissors", "cattle": "cattle",
              "luggage": "luggage", "broccoli": "broccoli", "goose": "geese", "ox": "oxen", "bus": "buses"}


def plural(word: str) -> str:
    """English plural of a (lower-case) noun: the irregulars this vocabulary needs, then the rules."""
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and len(word) > 1 and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


@dataclass
class Lexicon:
    """Phrases (singular, plural, multi-word) -> category. ``find`` matches the longest phrase first."""

    synonyms: dict[str, list[str]]
    phrases: dict[tuple[str, ...], str] = field(init=False)

    def __post_init__(self):
        self.phrases = {}
        for category, names in self.synonyms.items():
            for name in [category, *names]:
                words = name.lower().split()
                for form in (words, [*words[:-1], plural(words[-1])]):
                    self.phrases.setdefault(tuple(form), category)
        self.longest = max((len(p) for p in self.phrases), default=1)

    def find(self, words: list[str]) -> list[tuple[int, int, str]]:
        """Mentions in a caption's words: ``(start, end, category)`` with words[start:end] the
        phrase, left to right, longest match first, never overlapping."""
        out, i = [], 0
        while i < len(words):
            for n in range(min(self.longest, len(words) - i), 0, -1):
                category = self.phrases.get(tuple(words[i:i + n]))
                if category is not None:
                    out.append((i, i + n, category))
                    i += n
                    break
            else:
                i += 1
        return out


def dataset_lexicon(categories: list[str]) -> Lexicon:
    """COCO's synonym table when every category is a COCO category, else the names themselves."""
    return lexicon_for(categories, use_coco_synonyms=set(categories) <= set(COCO_SYNONYMS))


def lexicon_for(categories: Iterable[str], use_coco_synonyms: bool) -> Lexicon:
    """COCO's synonym table, or each category named by itself (``shapes``: circle, square, ...)."""
    categories = list(categories)
    if use_coco_synonyms:
        missing = sorted(set(categories) - set(COCO_SYNONYMS))
        if missing:
            raise CaptError(f"the COCO synonym table has no entry for categories {missing}")
        return Lexicon({c: COCO_SYNONYMS[c] for c in categories})
    return Lexicon({c: [] for c in categories})


def read_instances_json(f: IO[bytes], source: str) -> dict:
    """A COCO instances file, parsed whole and checked for its three lists."""
    try:
        data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CaptError(f"{source}: not valid JSON ({e})") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(data, dict) or not isinstance(data.get(key), list):
            raise CaptError(f"{source}: an instances file needs a list under {key!r}")
    return data


class Instances:
    """Instance masks per image and category, at each image's original size (pycocotools)."""

    def __init__(self, f: IO[bytes] | dict, source: str):
        data = f if isinstance(f, dict) else read_instances_json(f, source)
        self.source = source
        self.coco = COCO()
        self.coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):     # pycocotools prints its progress
            self.coco.createIndex()
        self.names = {c["id"]: c["name"] for c in self.coco.loadCats(self.coco.getCatIds())}

    @property
    def categories(self) -> list[str]:
        return [self.names[i] for i in sorted(self.names)]

    def size(self, image_id: int) -> tuple[int, int]:
        img = self.coco.imgs.get(image_id)
        if img is None:
            raise CaptError(f"{self.source}: no image with id {image_id}")
        return int(img["height"]), int(img["width"])

    def masks(self, image_id: int) -> dict[str, np.ndarray]:
        """category name -> bool (H, W): the union of that category's instances in the image."""
        H, W = self.size(image_id)
        out: dict[str, np.ndarray] = {}
        for ann in self.coco.loadAnns(self.coco.getAnnIds(imgIds=[image_id], iscrowd=None)):
            name = self.names[ann["category_id"]]
            m = self.coco.annToMask(ann).astype(bool)
            out[name] = out[name] | m if name in out else m
        return {k: v for k, v in out.items() if v.shape == (H, W)}


def upsample_map(grid_map: np.ndarray, height: int, width: int) -> np.ndarray:
    """A (G, G) map -> (height, width), bicubic as in the figures, clipped at 0 (not rescaled)."""
    m = torch.as_tensor(np.asarray(grid_map, np.float32))[None, None]
    return F.interpolate(m, size=(height, width), mode="bicubic", align_corners=False).clamp_min(0)[0, 0].numpy()


def dilate(mask: np.ndarray, radius: float) -> np.ndarray:
    """bool (H, W) -> the pixels within ``radius`` (Euclidean) of any mask pixel.

    The count of mask pixels under a disk centred on each pixel, as one FFT product: a direct
    convolution with a 31 x 31 disk took ~0.1 s per 128 px mask on this project's CPU (most of
    an evaluation's time). The counts are integers and float64 rounding is far below 0.5, so the
    threshold gives exactly the direct convolution's pixels (tests/test_grounding.py)."""
    r = int(math.floor(radius))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    disk = torch.from_numpy((yy ** 2 + xx ** 2 <= radius ** 2).astype(np.float64))
    H, W = mask.shape
    size = (H + 2 * r, W + 2 * r)                          # the full linear convolution, no wrap-around
    counts = torch.fft.irfft2(torch.fft.rfft2(torch.from_numpy(mask.astype(np.float64)), s=size)
                              * torch.fft.rfft2(disk, s=size), s=size)
    return (counts[r:r + H, r:r + W] > 0.5).numpy()        # the disk is symmetric: correlation = convolution


def pointing_hit(up_map: np.ndarray, near_mask: np.ndarray) -> bool:
    """Is the map's maximum (the first, in row-major order, on ties) in the dilated mask?"""
    y, x = np.unravel_index(int(np.argmax(up_map)), up_map.shape)
    return bool(near_mask[y, x])


def mass_in_mask(up_map: np.ndarray, mask: np.ndarray) -> float:
    total = float(up_map.sum())
    return float(up_map[mask].sum()) / total if total > 0 else 0.0


@dataclass
class GroundingScores:
    """Per-mention scores, summed; ``summary`` gives the means."""

    mentions: int = 0                  # every mention of a category, present or not
    hallucinated: int = 0
    captions: int = 0
    captions_hallucinating: int = 0
    scored: int = 0                    # mentions of a category present in the image
    hits: float = 0.0
    mass: float = 0.0
    centre_hits: float = 0.0
    centre_mass: float = 0.0
    uniform_hits: float = 0.0
    uniform_mass: float = 0.0

    def summary(self) -> dict[str, float | int]:
        n = max(self.scored, 1)
        return {
            "pointing_game": self.hits / n, "pointing_game_centre": self.centre_hits / n,
            "pointing_game_uniform": self.uniform_hits / n,
            "mass_in_mask": self.mass / n, "mass_in_mask_centre": self.centre_mass / n,
            "mass_in_mask_uniform": self.uniform_mass / n,
            "grounded_words": self.scored,
            "chair_i": self.hallucinated / max(self.mentions, 1),
            "chair_s": self.captions_hallucinating / max(self.captions, 1),
            "object_mentions": self.mentions,
        }


class ImageMasks:
    """One image's category masks and, made on first use, their dilations by the pointing game's
    tolerance: every word and every technique scored on the image shares them (a dilation at
    COCO's size is a convolution over ~300k pixels, the dearest step of the scoring)."""

    def __init__(self, instances: Instances, image_id: int, tolerance: float):
        self.height, self.width = instances.size(image_id)
        self.masks = instances.masks(image_id)
        self.tolerance = tolerance
        self._near: dict[str, np.ndarray] = {}

    def near(self, category: str) -> np.ndarray:
        """The category's mask dilated by the tolerance: the pixels where a pointing hit lands."""
        if category not in self._near:
            self._near[category] = dilate(self.masks[category], self.tolerance)
        return self._near[category]


def _as_grids(maps: np.ndarray) -> np.ndarray:
    """(n, G*G) or (n, G, G) -> (n, G, G)."""
    maps = np.asarray(maps)
    if maps.ndim == 2:
        G = math.isqrt(maps.shape[1])
        maps = maps.reshape(len(maps), G, G)
    return maps


def _score_caption(s: GroundingScores, words: list[str], maps: np.ndarray, image: ImageMasks,
                   lexicon: Lexicon) -> None:
    """Add one caption's mentions to ``s``: CHAIR for all of them, the pointing game and mass in
    mask (with their baselines) for those whose category is in the image."""
    maps = _as_grids(maps)
    H, W, masks = image.height, image.width, image.masks
    mentions = lexicon.find(list(words))
    s.captions += 1
    s.mentions += len(mentions)
    absent = [c for _, _, c in mentions if c not in masks]
    s.hallucinated += len(absent)
    s.captions_hallucinating += bool(absent)
    cy, cx = (H - 1) // 2, (W - 1) // 2
    for _, end, category in mentions:
        if category not in masks:
            continue
        mask, near = masks[category], image.near(category)
        up = upsample_map(maps[end - 1], H, W)
        s.scored += 1
        s.hits += pointing_hit(up, near)
        s.mass += mass_in_mask(up, mask)
        s.centre_hits += bool(near[cy, cx])
        s.centre_mass += float(mask[cy, cx])
        s.uniform_hits += float(near.mean())
        s.uniform_mass += float(mask.mean())


def score_techniques(maps: dict[str, dict[int, tuple[list[str], np.ndarray]]], instances: Instances,
                     lexicon: Lexicon, tolerance: float = 15.0) -> dict[str, dict[str, float | int]]:
    """``maps``: technique -> its ``captions`` as :func:`score_grounding` takes them.

    Image by image, so that an image's masks and dilations are made once for all its words and
    all techniques, and only one image's are held at a time. Each technique's sums run over its
    images in the order given, so its scores equal those of :func:`score_grounding` alone.
    """
    scores = {technique: GroundingScores() for technique in maps}
    for image_id in dict.fromkeys(i for captions in maps.values() for i in captions):
        image = ImageMasks(instances, image_id, tolerance)
        for technique, captions in maps.items():
            if image_id in captions:
                words, word_maps = captions[image_id]
                _score_caption(scores[technique], words, word_maps, image, lexicon)
    return {technique: s.summary() for technique, s in scores.items()}


def score_grounding(captions: dict[int, tuple[list[str], np.ndarray]], instances: Instances, lexicon: Lexicon,
                    tolerance: float = 15.0) -> dict[str, float | int]:
    """``captions``: image id -> (words, maps (len(words), G, G) or (len(words), G*G)).

    Returns the pointing game, mass in mask (each with its two baselines), the number of mentions
    scored, and CHAIR-i / CHAIR-s over every caption.
    """
    return score_techniques({"": captions}, instances, lexicon, tolerance)[""]


def lists_any_image(f: IO[bytes], image_ids: set[int], source: str) -> bool:
    """Does an instances file's ``images`` list hold one of ``image_ids``?

    Read as it streams, and no further than the first such image or the list's end: COCO writes
    ``images`` before ``annotations``, so learning that ``instances_train2014.json`` (450 MB)
    holds none of Karpathy's test images costs its images list, never its annotations.
    """
    try:
        for prefix, event, value in ijson.parse(f):
            if prefix == "images.item.id" and value in image_ids:
                return True
            if prefix == "images" and event == "end_array":
                return False
    except ijson.JSONError as e:
        raise CaptError(f"{source}: malformed JSON ({str(e).splitlines()[0]})") from None
    raise CaptError(f"{source}: an instances file needs a list under 'images'")


def only_images(data: dict, image_ids: set[int]) -> dict:
    """An instances file's images and annotations cut down to ``image_ids`` (order kept)."""
    return {"images": [i for i in data["images"] if i.get("id") in image_ids],
            "annotations": [a for a in data["annotations"] if a.get("image_id") in image_ids],
            "categories": data["categories"]}


def load_instances(manifest: Manifest, image_ids: Iterable[int] | None = None) -> Instances:
    """The instances files a downloaded dataset lists (COCO splits them into train and val, each
    inside the annotations zip), merged; the categories are those of the first file read.

    With ``image_ids`` (an evaluation's test images), only the files whose images list holds one
    of them are parsed (:func:`lists_any_image`: Karpathy's COCO test images all come from val2014,
    so the train file's annotations are never read), and only those images' records are kept, so
    pycocotools indexes the test set alone.
    """
    if not manifest.instances:
        raise CaptError(f"{manifest.root}/manifest.json: dataset {manifest.name!r} lists no instances file; "
                        "grounding and CHAIR need one")
    wanted = None if image_ids is None else {int(i) for i in image_ids}
    merged: dict = {"images": [], "annotations": [], "categories": []}
    read = []
    for ref in manifest.instances:
        if wanted is not None:
            with manifest.open(ref) as f:
                if not lists_any_image(f, wanted, manifest.where(ref)):
                    continue
        with manifest.open(ref) as f:
            part = read_instances_json(f, manifest.where(ref))
        if wanted is not None:
            part = only_images(part, wanted)
        merged["images"] += part["images"]
        merged["annotations"] += part["annotations"]
        merged["categories"] = merged["categories"] or part["categories"]
        read.append(manifest.where(ref))
    return Instances(merged, ", ".join(read) or ", ".join(manifest.where(r) for r in manifest.instances))
