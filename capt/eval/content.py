"""Content: does a caption state true things about its image, whatever its wording?

BLEU rewards templates: on ``shapes`` the constant caption "a picture of a small orange diamond"
scores like a trained model, because the references share its words. The shapes world knows the
truth of every image (its COCO instances: each object's shape, ``color``, ``size`` and box), and
its captions use a small grammar (capt.data.shapes, "the captions"), so a caption's claims can be
read off its words and checked against the truth:

- **objects** (:func:`parse_caption`): every noun phrase "[a|an|one|two..] [small|large]
  [colour] <shape>" states as many objects as its number ("two circles": two circles; "a square",
  "one square", a bare "square": one; a plural without a number: two, the least it claims), each
  with the shape and the colour and size it names (None where it names none). Count captions
  ("there are two circles and a square") state shapes only.
- **relations**: "A <rel> B" with A and B single-object noun phrases and <rel> one of
  :data:`capt.data.shapes.RELATIONS` right between them ("a red circle above a blue square";
  chains relate each neighbouring pair). A relation with a counted end ("two circles above a
  square") is not read: the grammar never writes one, and it has no single truth.
- **position phrases** ("in the top left corner", "at the bottom") are **ignored**: they are read
  as words that end a noun phrase and claim nothing here.

The reader is a scanner, not a grammar, so that a model's broken output scores what it does say
and never raises: number, size and colour words (and "the") gather until a shape word closes the
phrase; any other word drops what has gathered ("a large" left dangling states nothing); when one
phrase repeats a kind of word ("a red blue circle") the one nearest the shape counts; a word
repeated back to back ("a red red circle circle") is read once, a decoder's stutter being no
second claim, while a repeated phrase ("a red circle and a red circle") states two objects.

Scoring, per image, against its true objects (:func:`content_statistics`):

- stated objects are matched one-to-one to true objects. A **strict** match needs the true
  object's shape and every attribute the mention states; the matching is a maximum one (fewest
  misses), built by augmenting paths over the mentions most specific first (two attributes,
  then one, then none; ties in caption order), each trying the true objects in annotation order,
  so a mention that states more is never left out for one that states less. Object precision and
  recall count these.
- mentions left over are then matched **by shape alone** to true objects left over, each (most
  specific first) to the one agreeing with the most attributes it states (ties: annotation order).
  Shape precision and recall count both kinds of match: a wrong colour is then still the right
  shape.
- **attributes** are judged on every shape match: each colour or size word stated about a matched
  object is right when it is that object's. So a wrong colour lowers attribute precision (and
  strict object precision) but not shape precision; the attributes of an object that is not
  there at all are not judged (shape precision already counts it). Recall: of the true objects'
  colours and sizes (two per object), how many were stated right.
- a **relation** is right when its two ends can denote two distinct true objects (each with its
  end's shape and stated attributes) for which the generator's own rule,
  :func:`capt.data.shapes.relations_between`, gives its phrase: read existentially, as a reader
  would, and independently of which true object the object matching chose.

Every number is an integer count per image (:data:`CONTENT_STATISTICS`), and every corpus score
a ratio of sums (:func:`content_metrics`), so the per-image counts can be summed over a test set
and resampled as capt.eval.bootstrap resamples BLEU's: ``resample_counts(...) @ statistics``.

**Coverage** (:func:`score_coverage`) gives COCO a content number too: per image, how many of the
annotated categories the caption names, found by the same lexicon as CHAIR
(:func:`capt.eval.grounding.dataset_lexicon`: Rohrbach et al.'s synonyms for COCO, the category
names and their plurals for ``shapes``); corpus coverage = named / annotated, summed over images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from capt.data.shapes import COLOURS, NUMBERS, PLURALS, RELATIONS, SHAPES, SIZES, relations_between
from capt.errors import CaptError
from capt.eval.grounding import ChairLexicon, Instances, Lexicon, dataset_lexicon
from capt.eval.per_image import sort_key
from capt.text import normalize_caption

__all__ = ["CONTENT_STATISTICS", "COVERAGE_STATISTICS", "StatedObject", "is_shapes_world", "StatedRelation", "StatedContent",
           "TrueObject", "ContentScores", "CoverageScores", "parse_caption", "image_truth", "match_objects",
           "content_statistics", "content_metrics", "score_content", "coverage_statistics", "coverage_metrics",
           "score_coverage"]

# The columns of the per-image content statistics, in order: what the corpus scores sum.
CONTENT_STATISTICS = (
    "objects_stated",        # objects the caption states (a count phrase: as many as its number)
    "objects_true",          # objects in the image
    "objects_matched",       # stated objects matched one-to-one to a true object with their shape and attributes
    "shapes_matched",        # stated objects matched one-to-one to a true object of their shape (strict or not)
    "attributes_stated",     # colour and size words stated about shape-matched objects
    "attributes_correct",    # ... that are their matched object's
    "attributes_true",       # the true objects' colours and sizes: two per object
    "relations_stated",      # "A <rel> B" relations read from the caption
    "relations_correct",     # ... that hold between true objects by the generator's rule
)
_COLUMN = {name: k for k, name in enumerate(CONTENT_STATISTICS)}

# The columns of the per-image coverage statistics.
COVERAGE_STATISTICS = (
    "categories_named",      # annotated categories of the image that the caption names
    "categories_annotated",  # categories with at least one instance in the image
)

# --------------------------------------------------------------------------- the words

_SHAPE_OF = {**{s: s for s in SHAPES}, **{p: s for s, p in PLURALS.items()}}
_COUNT_OF = {"a": 1, "an": 1, **{word: n for n, word in NUMBERS.items()}}
_DETERMINERS = {"the"}                   # gathers with a noun phrase, states no number
_RELATION_WORDS = {tuple(r.split()): r for r in RELATIONS}
_ATTRIBUTES = ("colour", "size")
_INSTANCE_ATTRIBUTE = {"colour": "color", "size": "size"}    # the instances file's field names


# --------------------------------------------------------------------------- what a caption states


@dataclass(frozen=True)
class StatedObject:
    """One object a caption states: its shape, and the colour and size it names (None: not named)."""

    shape: str
    colour: str | None = None
    size: str | None = None

    @property
    def attributes(self) -> int:
        """How many attributes the mention states (0..2): its specificity."""
        return (self.colour is not None) + (self.size is not None)


@dataclass(frozen=True)
class StatedRelation:
    """"A <relation> B": ``subject`` and ``object`` index :attr:`StatedContent.objects`."""

    subject: int
    relation: str
    object: int


@dataclass(frozen=True)
class StatedContent:
    """What one caption states: its objects in caption order, and its relations between them."""

    objects: tuple[StatedObject, ...]
    relations: tuple[StatedRelation, ...]


@dataclass
class _Phrase:
    """A noun phrase being read: words[start:end] (end set when its shape word closes it)."""

    start: int
    end: int = -1
    count: int | None = None
    colour: str | None = None
    size: str | None = None
    shape: str | None = None
    plural: bool = False


def _caption_words(caption, what: str) -> list[str]:
    """A caption as normalised words: a string through capt.text.normalize_caption, a list of
    words (a model's tokens) joined and normalised the same way, so both read alike."""
    if isinstance(caption, str):
        return normalize_caption(caption)
    if isinstance(caption, Sequence) and all(isinstance(w, str) for w in caption):
        return normalize_caption(" ".join(caption))
    raise CaptError(f"{what} is a {type(caption).__name__}, not a caption string or a list of words")


def parse_caption(words: Sequence[str] | str) -> StatedContent:
    """The objects and relations a caption states (the module docstring has the rules).

    ``words``: the caption's words as :func:`capt.text.normalize_caption` returns them (a string is
    normalised first). Never raises on the words themselves: anything the grammar does not
    expect ends the phrase being read, and what was read so far stands.
    """
    raw = _caption_words(words, "the caption")
    # A word repeated back to back is read once: "a red red circle circle" is one red circle.
    tokens = [w for k, w in enumerate(raw) if k == 0 or w != raw[k - 1]]

    phrases: list[_Phrase] = []
    pending: _Phrase | None = None
    for k, word in enumerate(tokens):
        is_modifier = word in _COUNT_OF or word in _DETERMINERS or word in COLOURS or word in SIZES
        if word in _SHAPE_OF:
            phrase = pending or _Phrase(start=k)
            phrase.end, phrase.shape, phrase.plural = k + 1, _SHAPE_OF[word], word != _SHAPE_OF[word]
            phrases.append(phrase)
            pending = None
        elif is_modifier:
            pending = pending or _Phrase(start=k)
            # The word nearest the shape wins: a later word of a kind replaces an earlier one.
            if word in _COUNT_OF:
                pending.count = _COUNT_OF[word]
            elif word in COLOURS:
                pending.colour = word
            elif word in SIZES:
                pending.size = word
        else:
            pending = None          # "there", "of", a position or relation word, an unknown word

    objects: list[StatedObject] = []
    first: list[int] = []           # phrase i states objects[first[i]:first[i] + counts[i]]
    counts: list[int] = []
    for phrase in phrases:
        n = phrase.count if phrase.count is not None else (2 if phrase.plural else 1)
        first.append(len(objects))
        counts.append(n)
        objects += [StatedObject(phrase.shape, phrase.colour, phrase.size)] * n

    relations = []
    for i in range(len(phrases) - 1):
        between = tuple(tokens[phrases[i].end:phrases[i + 1].start])
        if between in _RELATION_WORDS and counts[i] == 1 and counts[i + 1] == 1:
            relations.append(StatedRelation(first[i], _RELATION_WORDS[between], first[i + 1]))
    return StatedContent(tuple(objects), tuple(relations))


# --------------------------------------------------------------------------- the truth


@dataclass(frozen=True)
class TrueObject:
    """One annotated object: shape (category name), colour, size and box (x0, y0, x1, y1), pixels."""

    shape: str
    colour: str
    size: str
    box: tuple[float, float, float, float]


def is_shapes_world(instances: Instances) -> bool:
    """Whether the instances are a shapes world's, whose truth the content metric reads: every
    category a shape of capt.data.shapes, every annotation with its ``color`` and ``size`` words."""
    anns = instances.coco.dataset.get("annotations", [])
    return (bool(instances.categories) and set(instances.categories) <= set(SHAPES)
            and all("color" in a and "size" in a for a in anns))


def image_truth(instances: Instances, image_id) -> tuple[list[TrueObject], float]:
    """An image's objects, in annotation order, and its side in pixels (shapes images are square).

    CaptError when the image is not in ``instances`` or is not a shapes world's: a category that
    is not a shape, an annotation without a known ``color`` or ``size`` word, a non-square image
    (the generator's relation rule is defined on the square's side).
    """
    source = instances.source
    height, width = instances.size(image_id)
    if height != width:
        raise CaptError(f"{source}: image {image_id!r} is {width}x{height}; the content metric reads "
                        "shapes images, which are square (their relation rule is defined on the side)")
    objects = []
    for ann in instances.coco.loadAnns(instances.coco.getAnnIds(imgIds=[image_id])):
        shape = instances.names.get(ann.get("category_id"))
        if shape not in SHAPES:
            raise CaptError(f"{source}: image {image_id!r} has an object of category {shape!r}, not one of "
                            f"the shapes world's {', '.join(SHAPES)}; for other datasets use score_coverage")
        colour, size = ann.get("color"), ann.get("size")
        if colour not in COLOURS or size not in SIZES:
            raise CaptError(f"{source}: annotation {ann.get('id')!r} of image {image_id!r} has color {colour!r} "
                            f"and size {size!r}; the shapes world's are {', '.join(COLOURS)} and "
                            f"{', '.join(SIZES)}")
        bbox = ann.get("bbox")
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
            raise CaptError(f"{source}: annotation {ann.get('id')!r} of image {image_id!r} has bbox {bbox!r}, "
                            "not [x, y, width, height]")
        x, y, w, h = (float(v) for v in bbox)
        objects.append(TrueObject(shape, colour, size, (x, y, x + w, y + h)))
    return objects, float(width)


# --------------------------------------------------------------------------- one image


def _fits(stated: StatedObject, true: TrueObject) -> bool:
    """Has the true object the mention's shape and every attribute it states?"""
    return (stated.shape == true.shape and stated.colour in (None, true.colour)
            and stated.size in (None, true.size))


def _agreement(stated: StatedObject, true: TrueObject) -> int:
    return sum(getattr(stated, a) == getattr(true, a) for a in _ATTRIBUTES if getattr(stated, a) is not None)


def match_objects(stated: Sequence[StatedObject], truth: Sequence[TrueObject]) -> tuple[dict[int, int], dict[int, int]]:
    """One-to-one matches of stated to true objects, as index maps stated -> true:
    ``(strict, by_shape)``; ``by_shape`` holds every strict match and the shape-only matches of
    the mentions left over (the module docstring has the order and the tie rules)."""
    order = sorted(range(len(stated)), key=lambda s: (-stated[s].attributes, s))
    candidates = {s: [t for t in range(len(truth)) if _fits(stated[s], truth[t])] for s in order}
    owner: dict[int, int] = {}      # true index -> the stated index it is matched to

    def augment(s: int, seen: set[int]) -> bool:
        # Kuhn's augmenting path: take a free fitting true object, or move its owner to another.
        for t in candidates[s]:
            if t not in seen:
                seen.add(t)
                if t not in owner or augment(owner[t], seen):
                    owner[t] = s
                    return True
        return False

    for s in order:
        augment(s, set())
    strict = {s: t for t, s in owner.items()}
    by_shape = dict(strict)
    free = [t for t in range(len(truth)) if t not in owner]
    for s in order:
        if s in by_shape:
            continue
        same_shape = [t for t in free if truth[t].shape == stated[s].shape]
        if same_shape:
            best = max(same_shape, key=lambda t: (_agreement(stated[s], truth[t]), -t))
            by_shape[s] = best
            free.remove(best)
    return strict, by_shape


def content_statistics(content: StatedContent, truth: Sequence[TrueObject], image_size: float) -> np.ndarray:
    """One image's counts: (K,) int64, columns :data:`CONTENT_STATISTICS`.

    ``content``: what the caption states (:func:`parse_caption`); ``truth``: the image's objects;
    ``image_size``: the side of the square image, in the boxes' pixels."""
    stated = content.objects
    strict, by_shape = match_objects(stated, truth)
    row = np.zeros(len(CONTENT_STATISTICS), np.int64)
    row[_COLUMN["objects_stated"]] = len(stated)
    row[_COLUMN["objects_true"]] = len(truth)
    row[_COLUMN["objects_matched"]] = len(strict)
    row[_COLUMN["shapes_matched"]] = len(by_shape)
    for s, t in by_shape.items():
        for attribute in _ATTRIBUTES:
            said = getattr(stated[s], attribute)
            if said is not None:
                row[_COLUMN["attributes_stated"]] += 1
                row[_COLUMN["attributes_correct"]] += said == getattr(truth[t], attribute)
    row[_COLUMN["attributes_true"]] = len(_ATTRIBUTES) * len(truth)

    holds: dict[tuple[int, int], list[str]] = {}     # the rule on each ordered pair, computed once
    for relation in content.relations:
        subjects = [t for t in range(len(truth)) if _fits(stated[relation.subject], truth[t])]
        objects = [t for t in range(len(truth)) if _fits(stated[relation.object], truth[t])]
        right = False
        for a in subjects:
            for b in objects:
                if a != b:
                    if (a, b) not in holds:
                        holds[a, b] = relations_between(truth[a].box, truth[b].box, image_size)
                    right = right or relation.relation in holds[a, b]
        row[_COLUMN["relations_stated"]] += 1
        row[_COLUMN["relations_correct"]] += right
    return row


# --------------------------------------------------------------------------- corpus scores


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator elementwise, float64; nan where the denominator is 0."""
    numerator, denominator = np.asarray(numerator, np.float64), np.asarray(denominator, np.float64)
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _check_sums(sums, columns: tuple[str, ...], what: str) -> np.ndarray:
    sums = np.asarray(sums)
    if sums.shape[-1:] != (len(columns),):
        raise CaptError(f"{what} statistics have {len(columns)} columns ({', '.join(columns)}), got shape {sums.shape}")
    return sums


def content_metrics(sums) -> dict[str, np.ndarray]:
    """Corpus content scores of summed statistics: (..., K) -> name -> (...) float64.

    K = len(:data:`CONTENT_STATISTICS`); (K,) sums give 0-d arrays, (R, K) resampled sums (R,).

    - ``object_precision`` = objects_matched / objects_stated, ``object_recall`` = objects_matched
      / objects_true, ``object_f1`` = 2 objects_matched / (objects_stated + objects_true) (their
      harmonic mean where both exist; 0, not undefined, for captions that state nothing);
    - ``shape_precision``, ``shape_recall``, ``shape_f1``: the same with shapes_matched;
    - ``attribute_precision`` = attributes_correct / attributes_stated, ``attribute_recall`` =
      attributes_correct / attributes_true, ``attribute_f1`` in the same form as object_f1;
    - ``relation_accuracy`` = relations_correct / relations_stated.

    A ratio whose denominator is 0 is nan: above all ``relation_accuracy`` when no relation is
    stated (a caption set of lists and counts says nothing about relations, which is not 0).
    """
    sums = _check_sums(sums, CONTENT_STATISTICS, "content")
    c = {name: sums[..., k] for k, name in enumerate(CONTENT_STATISTICS)}
    out = {}
    for prefix, matched in (("object", c["objects_matched"]), ("shape", c["shapes_matched"])):
        out[f"{prefix}_precision"] = _ratio(matched, c["objects_stated"])
        out[f"{prefix}_recall"] = _ratio(matched, c["objects_true"])
        out[f"{prefix}_f1"] = _ratio(2 * matched, c["objects_stated"] + c["objects_true"])
    out["attribute_precision"] = _ratio(c["attributes_correct"], c["attributes_stated"])
    out["attribute_recall"] = _ratio(c["attributes_correct"], c["attributes_true"])
    out["attribute_f1"] = _ratio(2 * c["attributes_correct"], c["attributes_stated"] + c["attributes_true"])
    out["relation_accuracy"] = _ratio(c["relations_correct"], c["relations_stated"])
    return out


def coverage_metrics(sums) -> dict[str, np.ndarray]:
    """Corpus coverage of summed statistics: (..., 2) -> ``{"coverage": (...)}`` float64,
    categories_named / categories_annotated (nan where no image has an annotated category)."""
    sums = _check_sums(sums, COVERAGE_STATISTICS, "coverage")
    return {"coverage": _ratio(sums[..., 0], sums[..., 1])}


@dataclass(frozen=True)
class _ImageCounts:
    """Per-image integer statistics of one caption per image: ``image_ids`` N ids, sorted as
    capt.eval.metrics sorts them; ``statistics`` (N, K) int64, columns ``columns``. A corpus score
    is a function of the column sums (``metrics_of``), so a bootstrap resample is
    ``capt.eval.bootstrap.resample_counts(image_ids, R, seed)`` (R, N) @ ``statistics``."""

    image_ids: tuple
    statistics: np.ndarray
    columns: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self):
        n = len(self.image_ids)
        if self.statistics.shape != (n, len(self.columns)) or self.statistics.dtype != np.int64:
            raise CaptError(f"per-image statistics of {n} images must be ({n}, {len(self.columns)}) int64 "
                            f"(columns {', '.join(self.columns)}), got {self.statistics.shape} {self.statistics.dtype}")

    @staticmethod
    def metrics_of(sums) -> dict[str, np.ndarray]:      # pragma: no cover - each subclass has its own
        raise NotImplementedError

    @property
    def totals(self) -> dict[str, int]:
        """Each column summed over the images."""
        return dict(zip(self.columns, self.statistics.sum(axis=0).tolist()))

    def summary(self) -> dict[str, float | int | None]:
        """The corpus scores of the whole set (None where undefined, for JSON), then the totals."""
        scores = {name: float(v) for name, v in self.metrics_of(self.statistics.sum(axis=0)).items()}
        return {**{k: (None if np.isnan(v) else v) for k, v in scores.items()}, **self.totals}

    def resampled(self, counts: np.ndarray) -> dict[str, np.ndarray]:
        """The corpus scores of each resample: ``counts`` (R, N), how often resample r draws each
        image (capt.eval.bootstrap.resample_counts) -> name -> (R,) float64 (nan where undefined)."""
        counts = np.asarray(counts, np.int64)
        if counts.ndim != 2 or counts.shape[1] != len(self.image_ids):
            raise CaptError(f"resample counts must be (R, {len(self.image_ids)}), got shape {counts.shape}")
        return self.metrics_of(counts @ self.statistics)

    def to_json(self) -> dict:
        return {"columns": list(self.columns),
                "image_ids": [int(i) if isinstance(i, np.integer) else i for i in self.image_ids],
                "statistics": self.statistics.tolist()}

    @classmethod
    def from_json(cls, data: dict, source: str):
        """What :meth:`to_json` wrote (``source`` names it, for the error line)."""
        if not isinstance(data, dict) or data.get("columns") != list(cls.columns):
            got = data.get("columns") if isinstance(data, dict) else type(data).__name__
            raise CaptError(f"{source}: statistics with columns {got}, not {list(cls.columns)}")
        stats = np.asarray(data.get("statistics", []), np.int64).reshape(-1, len(cls.columns))
        return cls(tuple(data.get("image_ids", [])), stats)


@dataclass(frozen=True)
class ContentScores(_ImageCounts):
    """Per-image content statistics (:data:`CONTENT_STATISTICS`); scores by :func:`content_metrics`."""

    columns: ClassVar[tuple[str, ...]] = CONTENT_STATISTICS
    metrics_of = staticmethod(content_metrics)


@dataclass(frozen=True)
class CoverageScores(_ImageCounts):
    """Per-image coverage statistics (:data:`COVERAGE_STATISTICS`); score by :func:`coverage_metrics`."""

    columns: ClassVar[tuple[str, ...]] = COVERAGE_STATISTICS
    metrics_of = staticmethod(coverage_metrics)


def _sorted_ids(hypotheses: Mapping, what: str) -> list:
    if not isinstance(hypotheses, Mapping):
        raise CaptError(f"{what} takes image id -> caption, got a {type(hypotheses).__name__}")
    if not hypotheses:
        raise CaptError(f"no captions to score for {what}")
    return sorted(hypotheses, key=sort_key)


def score_content(hypotheses: Mapping, instances: Instances) -> ContentScores:
    """Per-image content statistics of one caption per image of a shapes world.

    ``hypotheses``: image id -> caption (a string, or a list of words); ``instances``: the world's
    instances (capt.eval.grounding.Instances of its instances.json). CaptError for an image the
    instances lack or that is not a shapes world's (:func:`image_truth`)."""
    ids = _sorted_ids(hypotheses, "the content metric")
    rows = []
    for image_id in ids:
        truth, side = image_truth(instances, image_id)
        content = parse_caption(_caption_words(hypotheses[image_id], f"the caption of image {image_id!r}"))
        rows.append(content_statistics(content, truth, side))
    return ContentScores(tuple(ids), np.stack(rows).astype(np.int64))


# --------------------------------------------------------------------------- coverage (any dataset)


def coverage_statistics(words: Sequence[str], annotated: set[str], lexicon: Lexicon | ChairLexicon) -> np.ndarray:
    """One image's (2,) int64, columns :data:`COVERAGE_STATISTICS`: of the ``annotated``
    categories, how many the caption's words name (by ``lexicon.find``), and how many there are."""
    named = {category for _, _, category in lexicon.find(list(words))}
    return np.array([len(named & annotated), len(annotated)], np.int64)


def score_coverage(hypotheses: Mapping, instances: Instances,
                   lexicon: Lexicon | ChairLexicon | None = None) -> CoverageScores:
    """Per-image coverage of one caption per image: the share of each image's annotated
    categories (every instance, crowd or not) that the caption names.

    ``hypotheses``: image id -> caption (a string, or a list of words); ``lexicon``: how words
    name categories, by default CHAIR's for the instances' categories
    (:func:`capt.eval.grounding.dataset_lexicon`)."""
    ids = _sorted_ids(hypotheses, "object coverage")
    if lexicon is None:
        lexicon = dataset_lexicon(instances.categories)
    rows = []
    for image_id in ids:
        if image_id not in instances.coco.imgs:
            raise CaptError(f"{instances.source}: no image with id {image_id!r}")
        anns = instances.coco.loadAnns(instances.coco.getAnnIds(imgIds=[image_id]))
        annotated = {instances.names[a["category_id"]] for a in anns if a.get("category_id") in instances.names}
        words = _caption_words(hypotheses[image_id], f"the caption of image {image_id!r}")
        rows.append(coverage_statistics(words, annotated, lexicon))
    return CoverageScores(tuple(ids), np.stack(rows).astype(np.int64))
