"""Grounding and hallucination: does each word's map land on the thing the word names, and does
a caption name things that are not in the image?

Words are mapped to object categories as CHAIR does for COCO (:class:`ChairLexicon`: Rohrbach et
al.'s synonym table, ``chair_synonyms.txt``, and the rules of their code, LisaAnne/Hallucination
``utils/chair.py``: singular words, their "double words" such as "hot dog" and "baby elephant",
no chair for a toilet's seat), and for other datasets by the category names themselves with their
plurals (:class:`Lexicon`; ``shapes``: "circle", "crosses"). For every mention whose category is in
the image (by its instance masks, through pycocotools), the mention's map (that of its last word,
the noun) is upsampled bicubically from the model's grid to the image's original size and scored:

- **pointing game** (Zhang et al., ECCV 2016): a hit when the map's maximum lies within
  ``tolerance`` pixels (15) of the category's mask (all its instances together);
- **mass in mask**: the share of the map's (non-negative) mass inside that mask.

A map that is constant after upsampling and clamping (all zero, as Grad-CAM's can be after its
ReLU) or not finite points nowhere: it is a miss and has no mass in the mask, and the mentions
with one are counted (``degenerate_maps``, per technique), rather than letting its ``argmax``,
pixel (0, 0), hit any mask that reaches that corner.

Two baselines are scored on the same mentions: the image's centre point (pointing: is the
centre within tolerance; mass: 1 if the centre pixel is in the mask) and a uniform map
(pointing: the expected hit rate of a point drawn uniformly, i.e. the share of pixels within
tolerance; mass: the mask's share of the image).

**CHAIR** (Rohrbach et al., EMNLP 2018), as their code computes it: a mention is hallucinated
when its category is neither annotated in the image (an instance) nor named by one of its
reference captions (read by the same rules). CHAIR-i (``chair_i``) = hallucinated mentions /
mentions; CHAIR-s (``chair_s``) = captions with at least one hallucinated mention / captions.
Beside them, ``chair_i_instances``/``chair_s_instances`` take the annotated instances alone as
the truth (stricter: an object the annotators named in words but did not segment counts as
hallucinated). Where the words are read differently from the reference: the captions come as the
model's tokens (the reference tokenises the caption string with NLTK; the two differ only on
punctuation and apostrophes, which name no object), and words are singularised by
:func:`singular`, not pattern.en (which this project does not use; pattern.en turns "glass" into
"glas", hence the reference's extra "wine glas" rule, not needed here).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from typing import IO

import ijson
import numpy as np
import torch
import torch.nn.functional as F
from pycocotools.coco import COCO
from scipy.ndimage import distance_transform_edt

from capt.data.manifest import Manifest
from capt.errors import CaptError


def read_synonym_table(text: str, source: str) -> dict[str, list[str]]:
    """CHAIR's synonym table: one line per category, ``category, word, word, ...``; ``#`` comments.

    -> category -> its words, the category's own name first, each once, read as the reference
    reads them: the line stripped, then split on ``", "``. So its entries " motor bike" and
    " cheesecake" (written after a double space) keep their leading space and "iPhone" its capital,
    and none of the three ever equals a caption word: a "motor bike" is merged into one word, as a
    double word, and then names nothing, as in published CHAIR numbers."""
    table: dict[str, list[str]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        words = line.strip().split(", ")
        if words[0] in table:
            raise CaptError(f"{source}:{number}: category {words[0]!r} has a second line")
        table[words[0]] = list(dict.fromkeys(words))
    return table


# Rohrbach et al.'s table (https://github.com/LisaAnne/Hallucination data/synonyms.txt), shipped as
# package data: the 80 COCO categories and the words that name each. No word names two categories.
CHAIR_SYNONYMS: dict[str, list[str]] = read_synonym_table(
    resources.files("capt.eval").joinpath("chair_synonyms.txt").read_text(encoding="utf-8"),
    "capt/eval/chair_synonyms.txt")

# The reference's "double words": two caption words (each singularised) read as one, which then
# maps through the table. Its list, in its order; "stove top oven" has three words and the reference
# merges two at a time, so it never matches there or here ("stove", "top", "oven": two oven
# mentions), and "home plate" is in no category (merged, it just hides "plate").
CHAIR_DOUBLE_WORDS = ["motor bike", "motor cycle", "air plane", "traffic light", "street light", "traffic signal",
                      "stop light", "fire hydrant", "stop sign", "parking meter", "suit case", "sports ball",
                      "baseball bat", "baseball glove", "tennis racket", "wine glass", "hot dog", "cell phone",
                      "mobile phone", "teddy bear", "hair drier", "potted plant", "bow tie", "laptop computer",
                      "stove top oven", "home plate"]
# "baby"/"adult" and "passenger" name persons on their own; before these words they qualify an
# animal or a vehicle ("baby elephant" is an elephant, not a person), as in the reference.
CHAIR_YOUNG_OR_GROWN_ANIMALS = ["bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe",
                                "animal", "cub"]
CHAIR_PASSENGER_VEHICLES = ["jet", "train"]


# Plurals that the suffix rules below do not undo, whole words.
_IRREGULAR_SINGULARS = {"mice": "mouse", "geese": "goose", "oxen": "ox", "feet": "foot", "teeth": "tooth",
                        "dice": "die", "gases": "gas", "lenses": "lens", "canvases": "canvas", "atlases": "atlas",
                        "irises": "iris", "cactuses": "cactus", "cacti": "cactus", "walruses": "walrus",
                        "octopuses": "octopus", "viruses": "virus", "circuses": "circus", "campuses": "campus",
                        "bonuses": "bonus", "quizzes": "quiz"}
# Irregular endings, so that compounds follow their last word (policemen, grandchildren, pocketknives).
_IRREGULAR_SUFFIXES = [("children", "child"), ("men", "man"), ("knives", "knife"), ("wives", "wife"),
                       ("shelves", "shelf"), ("leaves", "leaf"), ("calves", "calf"), ("halves", "half"),
                       ("wolves", "wolf"), ("loaves", "loaf"), ("scarves", "scarf"), ("thieves", "thief"),
                       ("hooves", "hoof"), ("buses", "bus"), ("busses", "bus")]
# Words ending in "men" that are not plurals of "-man".
_NOT_PLURAL_MEN = {"amen", "omen", "semen", "specimen", "abdomen", "hymen", "ramen", "stamen", "regimen", "acumen",
                   "albumen", "bitumen", "rumen", "yemen"}
# Words ending in "s" that are already singular, or have no singular to go to.
_UNINFLECTED = {"is", "was", "has", "his", "this", "its", "us", "as", "yes", "does", "plus", "always", "perhaps",
                "across", "towards", "sometimes", "besides", "whereas", "unless", "thus", "canvas", "gas",
                "atlas", "lens", "tennis", "iris", "chassis", "christmas", "species", "series", "news",
                "scissors", "pants", "jeans", "shorts", "trousers", "tongs", "pliers", "clothes", "binoculars",
                "goggles", "tweezers", "headquarters", "means", "physics", "mathematics", "measles", "overalls",
                "pajamas", "pyjamas", "bias", "alias"}
# Nouns in "-ie" (their plural "-ies" is not a "-y" word's) and in "-u" (their plural ends in "-us").
_IE_NOUNS = {"tie", "necktie", "bowtie", "pie", "magpie", "potpie", "lie", "die", "cookie", "movie", "doggie",
             "collie", "zombie", "brownie", "goalie", "selfie", "hippie", "smoothie", "veggie", "birdie", "budgie",
             "rookie", "calorie", "prairie", "hoodie", "beanie", "pixie", "genie", "sweetie", "cutie", "auntie",
             "walkie", "talkie", "bootie", "nightie", "boogie", "newbie", "yuppie", "aussie", "kiddie"}
_U_NOUNS = {"menu", "emu", "gnu", "zebu", "tutu", "tofu", "haiku", "guru", "tiramisu", "kudzu", "caribou", "bayou"}
# Nouns in "-o" whose plural is "-oes" (others, like canoe's "canoes", only add "s").
_O_NOUNS_TAKING_ES = {"tomato", "potato", "hero", "mango", "buffalo", "volcano", "domino", "mosquito", "echo",
                      "torpedo", "veto", "cargo", "tornado", "flamingo", "embargo", "tuxedo", "avocado"}
# Nouns in "-che" (their plural "-ches" is not a "-ch" word's "-es").
_CHE_NOUNS = ("headache", "toothache", "stomachache", "backache", "earache", "heartache", "mustache", "moustache",
              "niche", "cache", "avalanche", "quiche", "cliche", "psyche", "microfiche", "creche")


def singular(word: str) -> str:
    """The singular of a lower-case caption word, for CHAIR's table.

    The reference singularises every word with pattern.en's ``singularize``, which this project
    does not depend on; this covers the table's words and their plurals (tests/test_grounding.py:
    every table word keeps its category, and so does its plural): irregulars (men, children, mice,
    geese, oxen, knives, compounds like policemen), then the rules for "-ies", "-oes", the
    sibilants' "-es" and a plain "-s", sparing words that end in "s" in the singular (bus, glass,
    grass, canvas, scissors). pattern.en turns "glass" into "glas", which is why the reference also
    merges "wine glas"; here "glass" stays whole and that rule is not needed. Non-nouns may come
    out wrong ("has" is spared, "sits" -> "sit"): they are in no category either way.
    """
    if len(word) < 3 or word in _UNINFLECTED:
        return word
    if word in _IRREGULAR_SINGULARS:
        return _IRREGULAR_SINGULARS[word]
    for plural_end, singular_end in _IRREGULAR_SUFFIXES:
        if word.endswith(plural_end) and not (plural_end == "men" and word in _NOT_PLURAL_MEN):
            return word[:-len(plural_end)] + singular_end
    if not word.endswith("s") or word.endswith(("ss", "sis")):
        return word
    if word.endswith("us"):                              # bus, minibus, cactus, famous; but menus, zebus
        return word[:-1] if word[:-1] in _U_NOUNS else word
    if word.endswith("ies"):                             # puppies, lorries; but ties, collies, cookies
        return word[:-1] if word[:-1] in _IE_NOUNS else word[:-3] + "y"
    if word.endswith("oes"):                             # buffaloes, tomatoes; but canoes, shoes
        return word[:-2] if word[:-2] in _O_NOUNS_TAKING_ES else word[:-1]
    if word.endswith(("sses", "shes", "xes", "zzes")):  # glasses, toothbrushes, boxes
        return word[:-2]
    if word.endswith("ches"):                            # couches, sandwiches; but headaches, niches
        return word[:-1] if word[:-1].endswith(_CHE_NOUNS) else word[:-2]
    return word[:-1]


_IRREGULAR_PLURALS = {"man": "men", "woman": "women", "child": "children", "person": "people", "mouse": "mice",
                      "knife": "knives", "sheep": "sheep", "people": "people", "men": "men", "women": "women",
                      "children": "children", "skis": "skis", "scissors": "scissors", "cattle": "cattle",
                      "luggage": "luggage", "broccoli": "broccoli", "goose": "geese", "ox": "oxen", "bus": "buses"}


def plural(word: str) -> str:
    """English plural of a (lower-case) noun: the irregulars this vocabulary needs, then the rules."""
    if word in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[word]
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and len(word) > 1 and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


@dataclass
class Lexicon:
    """Phrases (singular, plural, multi-word) -> category. ``find`` matches the longest phrase first.

    For datasets other than COCO (``shapes``: each category named by itself)."""

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


@dataclass
class ChairLexicon:
    """COCO mentions as Rohrbach et al.'s CHAIR finds them, with the words each spans.

    The reference's steps, in its order: every word lower-cased and singularised
    (:func:`singular`); left to right, a pair of words that is one of its double words becomes one
    word (:data:`CHAIR_DOUBLE_WORDS`; "baby"/"adult" + an animal and "passenger" + jet/train become
    the animal or vehicle; "bow tie" becomes "tie", "toilet seat" "toilet"), else the word stays
    alone; if a caption then holds both "toilet" and "seat", its seats are dropped (a toilet's seat
    is no chair); each remaining word that the table lists names its category. Only ``categories``
    are found (all 80 for COCO). A mention spans its words, both of a merged pair, so that its last
    word (``end - 1``), the noun, is the one whose map is scored.
    """

    categories: list[str]
    word_category: dict[str, str] = field(init=False)
    double_words: dict[tuple[str, ...], str] = field(init=False)

    def __post_init__(self):
        missing = sorted(set(self.categories) - set(CHAIR_SYNONYMS))
        if missing:
            raise CaptError(f"the COCO synonym table has no entry for categories {missing}")
        self.word_category = {word: category for category in self.categories for word in CHAIR_SYNONYMS[category]}
        merged = {phrase: phrase for phrase in CHAIR_DOUBLE_WORDS}
        merged |= {f"{age} {animal}": animal for animal in CHAIR_YOUNG_OR_GROWN_ANIMALS for age in ("baby", "adult")}
        merged |= {f"passenger {vehicle}": vehicle for vehicle in CHAIR_PASSENGER_VEHICLES}
        merged |= {"bow tie": "tie", "toilet seat": "toilet"}
        # keyed by the singularised words, as the caption's are ("hot dogs" -> ("hot", "dog"))
        self.double_words = {tuple(singular(w) for w in phrase.split()): word for phrase, word in merged.items()}

    def merged_words(self, words: list[str]) -> list[tuple[int, int, str]]:
        """A caption's words as the reference reads them: ``(start, end, word)``, a merged pair
        spanning two, every word singular, before the table is consulted."""
        stems = [singular(w.lower()) for w in words]
        out, i = [], 0
        while i < len(stems):
            pair = self.double_words.get(tuple(stems[i:i + 2]))     # never a 1-word key at the end
            if pair is not None:
                out.append((i, i + 2, pair))
                i += 2
            else:
                out.append((i, i + 1, stems[i]))
                i += 1
        read = {w for *_, w in out}
        if "toilet" in read and "seat" in read:
            out = [u for u in out if u[2] != "seat"]
        return out

    def find(self, words: list[str]) -> list[tuple[int, int, str]]:
        """Mentions in a caption's words: ``(start, end, category)``, left to right."""
        return [(start, end, self.word_category[w]) for start, end, w in self.merged_words(words)
                if w in self.word_category]


def dataset_lexicon(categories: list[str]) -> Lexicon | ChairLexicon:
    """CHAIR's rules when every category is a COCO category, else the names themselves."""
    return lexicon_for(categories, use_coco_synonyms=set(categories) <= set(CHAIR_SYNONYMS))


def lexicon_for(categories: Iterable[str], use_coco_synonyms: bool) -> Lexicon | ChairLexicon:
    """CHAIR's table and rules for COCO, or each category named by itself (``shapes``: circle, square, ...)."""
    categories = list(categories)
    if use_coco_synonyms:
        return ChairLexicon(categories)
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

    scipy's exact Euclidean distance transform of the background, thresholded: the same pixels as a
    direct convolution with the disk (tests/test_grounding.py), 7x faster than an FFT product at 128 px
    and 1.3x at 480 px (benchmarks/bench_dilate.py); a shapes evaluation dilates ~380 masks."""
    if not mask.any():
        return np.zeros(mask.shape, bool)
    # distance from each pixel to the nearest mask pixel: sqrt of an integer, exact at every
    # integer radius, so the threshold is the disk's yy**2 + xx**2 <= radius**2
    return distance_transform_edt(~mask) <= radius


# A map whose values spread over less than this share of its largest magnitude is constant: a
# constant grid comes out of the float32 bicubic upsampling uneven by about 2e-6 of its value.
CONSTANT_MAP_RTOL = 1e-4


def is_degenerate(up_map: np.ndarray) -> bool:
    """Does an upsampled (H, W) map point nowhere: constant (all zero, as Grad-CAM can be after its
    ReLU, or any one value, up to :data:`CONSTANT_MAP_RTOL`) or not finite anywhere?

    Such a map has no maximum to point with: ``argmax`` would return its first pixel, (0, 0), and
    score a hit whenever a mask reaches that corner."""
    if not np.isfinite(up_map).all():
        return True
    top, bottom = float(up_map.max()), float(up_map.min())
    return top - bottom <= CONSTANT_MAP_RTOL * max(abs(top), abs(bottom))


def pointing_hit(up_map: np.ndarray, near_mask: np.ndarray) -> bool:
    """Is the (H, W) map's maximum (the first, in row-major order, on ties) in the (H, W) dilated
    mask? Never for a degenerate map (:func:`is_degenerate`), whose "maximum" is any pixel."""
    if is_degenerate(up_map):
        return False
    y, x = np.unravel_index(int(np.argmax(up_map)), up_map.shape)
    return bool(near_mask[y, x])


def mass_in_mask(up_map: np.ndarray, mask: np.ndarray) -> float:
    """The share of the (H, W) map's mass inside the (H, W) mask; 0 for a degenerate map, which
    singles out nothing (a constant one would otherwise score the uniform baseline's share)."""
    if is_degenerate(up_map):
        return 0.0
    total = float(up_map.sum())
    return float(up_map[mask].sum()) / total if total > 0 else 0.0


# The CHAIR numbers of a caption set (the same for every technique's maps of it).
CHAIR_KEYS = ("chair_i", "chair_s", "chair_i_instances", "chair_s_instances", "object_mentions")


@dataclass
class GroundingScores:
    """Per-mention scores, summed; ``summary`` gives the means."""

    mentions: int = 0                  # every mention of a category, present or not
    hallucinated: int = 0              # in no instance and no reference caption of the image (CHAIR)
    captions: int = 0
    captions_hallucinating: int = 0
    hallucinated_instances: int = 0    # in no instance of the image (the instances alone)
    captions_hallucinating_instances: int = 0
    scored: int = 0                    # mentions of a category present in the image
    hits: float = 0.0
    mass: float = 0.0
    centre_hits: float = 0.0
    centre_mass: float = 0.0
    uniform_hits: float = 0.0
    uniform_mass: float = 0.0
    degenerate_maps: int = 0           # scored mentions whose map was constant or not finite: misses, no mass

    def summary(self) -> dict[str, float | int]:
        n = max(self.scored, 1)
        return {
            "pointing_game": self.hits / n, "pointing_game_centre": self.centre_hits / n,
            "pointing_game_uniform": self.uniform_hits / n,
            "mass_in_mask": self.mass / n, "mass_in_mask_centre": self.centre_mass / n,
            "mass_in_mask_uniform": self.uniform_mass / n,
            "grounded_words": self.scored, "degenerate_maps": self.degenerate_maps,
            "chair_i": self.hallucinated / max(self.mentions, 1),
            "chair_s": self.captions_hallucinating / max(self.captions, 1),
            "chair_i_instances": self.hallucinated_instances / max(self.mentions, 1),
            "chair_s_instances": self.captions_hallucinating_instances / max(self.captions, 1),
            "object_mentions": self.mentions,
        }


class ImageMasks:
    """One image's category masks and, made on first use, their dilations by the pointing game's
    tolerance: every word and every technique scored on the image shares them (a dilation at
    COCO's size is a convolution over ~300k pixels, the dearest step of the scoring)."""

    def __init__(self, instances: Instances, image_id: int, tolerance: float, named: set[str] = frozenset()):
        self.height, self.width = instances.size(image_id)
        self.masks = instances.masks(image_id)
        self.named = set(named)        # categories the image's reference captions name (CHAIR's other truth)
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


def _score_caption(s: GroundingScores, words: list[str], maps: np.ndarray | None, image: ImageMasks,
                   lexicon: Lexicon | ChairLexicon) -> None:
    """Add one caption's mentions to ``s``: CHAIR for all of them, the pointing game and mass in
    mask (with their baselines) for those whose category is in the image. ``maps`` None: a
    caption without maps (a baseline's), CHAIR alone."""
    H, W, masks = image.height, image.width, image.masks
    mentions = lexicon.find(list(words))
    s.captions += 1
    s.mentions += len(mentions)
    absent = [c for _, _, c in mentions if c not in masks and c not in image.named]
    s.hallucinated += len(absent)
    s.captions_hallucinating += bool(absent)
    unannotated = [c for _, _, c in mentions if c not in masks]
    s.hallucinated_instances += len(unannotated)
    s.captions_hallucinating_instances += bool(unannotated)
    if maps is None:
        return
    maps = _as_grids(maps)
    cy, cx = (H - 1) // 2, (W - 1) // 2
    for _, end, category in mentions:
        if category not in masks:
            continue
        mask, near = masks[category], image.near(category)
        up = upsample_map(maps[end - 1], H, W)
        s.scored += 1
        s.degenerate_maps += is_degenerate(up)
        s.hits += pointing_hit(up, near)
        s.mass += mass_in_mask(up, mask)
        s.centre_hits += bool(near[cy, cx])
        s.centre_mass += float(mask[cy, cx])
        s.uniform_hits += float(near.mean())
        s.uniform_mass += float(mask.mean())


def score_techniques(maps: dict[str, dict[int, tuple[list[str], np.ndarray]]], instances: Instances,
                     lexicon: Lexicon | ChairLexicon, tolerance: float = 15.0,
                     references: dict[int, list[list[str]]] | None = None) -> dict[str, dict[str, float | int]]:
    """``maps``: technique -> its ``captions`` as :func:`score_grounding` takes them;
    ``references``: image id -> its reference captions as word lists, whose objects (found by the
    same lexicon) count as present for CHAIR, as in Rohrbach et al. (``chair_i``/``chair_s``;
    ``chair_i_instances``/``chair_s_instances`` count the annotated instances alone).

    Image by image, so that an image's masks and dilations are made once for all its words and
    all techniques, and only one image's are held at a time. Each technique's sums run over its
    images in the order given, so its scores equal those of :func:`score_grounding` alone.
    """
    scores = {technique: GroundingScores() for technique in maps}
    for image_id in dict.fromkeys(i for captions in maps.values() for i in captions):
        named = {c for words in (references or {}).get(image_id, []) for _, _, c in lexicon.find(list(words))}
        image = ImageMasks(instances, image_id, tolerance, named)
        for technique, captions in maps.items():
            if image_id in captions:
                words, word_maps = captions[image_id]
                _score_caption(scores[technique], words, word_maps, image, lexicon)
    return {technique: s.summary() for technique, s in scores.items()}


def score_grounding(captions: dict[int, tuple[list[str], np.ndarray]], instances: Instances,
                    lexicon: Lexicon | ChairLexicon, tolerance: float = 15.0) -> dict[str, float | int]:
    """``captions``: image id -> (words, maps (len(words), G, G) or (len(words), G*G)).

    Returns the pointing game, mass in mask (each with its two baselines), the number of mentions
    scored and how many of their maps were degenerate, and CHAIR-i / CHAIR-s over every caption.
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
