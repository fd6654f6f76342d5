"""Why does model A beat model B on a test set? The images where they differ most, and the
content words that make the difference.

Three views, from what the evaluations left on disk (``results/captions``, ``results/scores``,
``results/maps``; :func:`read_model_outputs`) and the test set's instances:

- :func:`rank_by_difference`: every image by its CIDEr-D difference A - B (the per-image scores
  of capt.eval.per_image), largest first;
- :func:`word_differences`: on one image, the content words of each caption, judged against the
  image (:func:`caption_claims`), and which of them the other caption does not state. On a shapes
  world a word is judged by the content metric (capt.eval.content: its reading of the caption,
  its object matching, the generator's relation rule); elsewhere (COCO) by CHAIR's lexicon (a
  named category is right when the image has it, hallucinated when not);
- :func:`difference_summary`: over the test set, per shape, colour, size and relation (COCO: per
  category) how often each model states it, how often rightly, and how often it names it where
  it is true; counts beside every rate.

:func:`difference_examples` gathers what the report shows for a pair: the top and bottom images by
the difference, with both captions, both models' per-word maps and the word differences.

A **claim** is one thing a caption states, tied to the words that state it. On a shapes world:
one ``shape`` claim per stated object (its shape word; "two circles" states two), a ``colour``
and a ``size`` claim per colour and size word of a stated object, a ``relation`` claim per "A
<relation> B". Verdicts, as the content metric counts them: a shape claim is ``right`` when the
object is matched by shape (``shapes_matched``); a colour or size claim is ``right`` or ``wrong``
when its object is matched (``attributes_correct`` of ``attributes_stated``), else ``unjudged``
(an object that is not there has no colour to get wrong); a relation claim is ``right`` when the
rule gives it between two true objects that fit its ends (``relations_correct``). So a caption's
claims sum to its content statistics (tests/test_difference.py checks it). On COCO: one
``object`` claim per CHAIR mention, ``right`` when the category is in the image's instances (or
named by its references, when given), else ``wrong`` (hallucinated).

Two captions **share** a claim when both state it: claims are keyed by (kind, word, what it is
about: the shape an attribute qualifies, the two shapes a relation joins) and matched as
multisets, in caption order; the rest differ. The viewer (capt.viz.viewer) marks words by the
same rule.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import NamedTuple

import numpy as np

from capt.data.cache import open_h5
from capt.data.shapes import COLOURS, RELATIONS, SHAPES, SIZES, relations_between
from capt.errors import CaptError
from capt.eval.content import (CONTENT_STATISTICS, StatedContent, TrueObject, content_statistics, image_truth,
                               is_shapes_world, match_objects, parse_caption)
from capt.eval.grounding import ChairLexicon, Instances, Lexicon, dataset_lexicon
from capt.eval.maps import TECHNIQUES, read_word_maps
from capt.eval.per_image import ImageScores, sort_key
from capt.text import normalize_caption

RIGHT, WRONG, UNJUDGED = "right", "wrong", "unjudged"
# The order of the summary's rows: shapes world kinds, then COCO's.
KINDS = ("shape", "size", "colour", "relation", "object")
# Each kind's items in the world's own order (anything else, COCO's categories: alphabetical).
_ITEM_ORDER = {"shape": SHAPES, "size": SIZES, "colour": tuple(COLOURS), "relation": RELATIONS}
_RELATIONS_CORRECT = CONTENT_STATISTICS.index("relations_correct")


# --------------------------------------------------------------------------- one model's outputs


@dataclass
class ModelOutputs:
    """What an evaluation of one model on one test set left: its captions (image id -> caption
    string), its per-word maps (technique -> image id -> (words, maps (T, G, G)); none for a
    model without maps, a baseline) and its per-image scores (None where not read)."""

    name: str
    captions: dict
    maps: dict[str, dict] = field(default_factory=dict)
    scores: ImageScores | None = None

    def words(self, image_id) -> list[str]:
        """The caption's words as the metrics and the maps read them (capt.text.normalize_caption)."""
        return normalize_caption(self.captions[image_id])


def read_captions(path: Path) -> dict:
    """image id -> caption, from a COCO results file ([{image_id, caption}])."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CaptError(f"{path}: missing; run the evaluation that writes it") from None
    except json.JSONDecodeError as e:
        raise CaptError(f"{path}: not JSON ({e})") from None
    is_result = lambda c: isinstance(c, dict) and "image_id" in c and isinstance(c.get("caption"), str)  # noqa: E731
    if not isinstance(data, list) or not all(is_result(c) for c in data):
        raise CaptError(f"{path}: not COCO results (a list of {{image_id, caption}})")
    return {c["image_id"]: c["caption"] for c in data}


def check_map_words(outputs: ModelOutputs, where: str) -> None:
    """Each map file's words must be the caption's words, one map per word, or the viewer and the
    figures would show a word with another word's map. ``where`` names the files, for the error."""
    for technique, maps in outputs.maps.items():
        for image_id, (words, _) in maps.items():
            if image_id in outputs.captions and list(words) != outputs.words(image_id):
                raise CaptError(f"{where}: {technique} maps of image {image_id!r} are for the words "
                                f"{' '.join(words)!r}, but {outputs.name}'s caption reads "
                                f"{outputs.captions[image_id]!r}; rerun its evaluation")


def read_model_outputs(model: str, dataset: str, results: Path = Path("results")) -> ModelOutputs:
    """``results/captions/<model>-<dataset>.json``, ``results/scores/<model>-<dataset>.json`` and
    every ``results/maps/<technique>/<model>-<dataset>.h5`` there is."""
    results = Path(results)
    name = f"{model}-{dataset}"
    stage = f"the evaluation of {model} on {dataset}"
    captions = read_captions(results / "captions" / f"{name}.json")
    scores = ImageScores.read(results / "scores" / f"{name}.json", stage)
    maps = {}
    for technique in TECHNIQUES:
        path = results / "maps" / technique / f"{name}.h5"
        if path.exists():
            made_by, maps[technique] = read_word_maps(path)
            if made_by != technique:
                raise CaptError(f"{path}: holds {made_by} maps, not {technique}; rerun {stage}")
    outputs = ModelOutputs(model, captions, maps, scores)
    check_map_words(outputs, str(results / "maps" / "*" / f"{name}.h5"))
    return outputs


def read_images(path: Path, image_ids: Sequence) -> dict:
    """image id -> uint8 (3, S, S): the given test images of a prepared split file (``images``,
    ``image_ids``), in the order asked."""
    with open_h5(path, ("image_ids", "images"), what="images") as f:
        index = {int(i): k for k, i in enumerate(f["image_ids"][:])}
        missing = [i for i in image_ids if i not in index]
        if missing:
            raise CaptError(f"{path}: no test images with ids {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        # h5py reads a sorted list of rows at once; put them back in the order asked
        rows = sorted({index[i] for i in image_ids})
        images = dict(zip(rows, f["images"][rows]))
    return {i: images[index[i]] for i in image_ids}


# --------------------------------------------------------------------------- ranking images


class Ranked(NamedTuple):
    """One image's CIDEr-D under A and B, and A - B."""

    image_id: object
    cider_a: float
    cider_b: float
    delta: float


def rank_by_difference(a: ImageScores, b: ImageScores, names: tuple[str, str] = ("A", "B")) -> list[Ranked]:
    """Every image by its CIDEr-D difference A - B, largest first (ties by image id, capt's one
    order). ``names`` name the two score files in the error line when they were not scored on
    the same images or with the same tokens (their CIDEr-D would not be comparable)."""
    only_a = set(a.image_ids) - set(b.image_ids)
    only_b = set(b.image_ids) - set(a.image_ids)
    if only_a or only_b:
        def some(ids):
            ids = sorted(ids, key=sort_key)
            return f"{len(ids)} ({', '.join(map(str, ids[:3]))}{', ...' if len(ids) > 3 else ''})"
        raise CaptError(f"{names[0]} and {names[1]}: per-image scores of different images: {some(only_a)} only in "
                        f"{names[0]}, {some(only_b)} only in {names[1]}; score both on the same test set")
    if a.tokenizer != b.tokenizer:
        raise CaptError(f"{names[0]} and {names[1]}: scored on {a.tokenizer!r} and {b.tokenizer!r} tokens; "
                        "score both with the same evaluate.tokenizer")
    cider_b = dict(zip(b.image_ids, b.cider.tolist()))
    rows = [Ranked(i, ca, cider_b[i], ca - cider_b[i]) for i, ca in zip(a.image_ids, a.cider.tolist())]
    return sorted(rows, key=lambda r: (-r.delta, sort_key(r.image_id)))


# --------------------------------------------------------------------------- the truth of an image


@dataclass(frozen=True)
class ShapesTruth:
    """A shapes image's objects (capt.eval.content.image_truth) and its side in pixels."""

    objects: tuple[TrueObject, ...]
    side: float


@dataclass(frozen=True)
class CategoryTruth:
    """A COCO-like image's categories (annotated, or named by its references) and the lexicon
    that finds them in a caption (CHAIR's for COCO)."""

    present: frozenset
    lexicon: Lexicon | ChairLexicon = field(compare=False)


Truth = ShapesTruth | CategoryTruth


def image_truths(instances: Instances, image_ids, references: Mapping | None = None) -> dict:
    """image id -> its truth: a :class:`ShapesTruth` on a shapes world, else a
    :class:`CategoryTruth`, whose present categories are those annotated and, with
    ``references`` (image id -> reference captions), those the references name, as CHAIR reads
    them (Rohrbach et al.)."""
    if is_shapes_world(instances):
        out = {}
        for image_id in image_ids:
            objects, side = image_truth(instances, image_id)
            out[image_id] = ShapesTruth(tuple(objects), side)
        return out
    lexicon = dataset_lexicon(instances.categories)
    out = {}
    for image_id in image_ids:
        if image_id not in instances.coco.imgs:
            raise CaptError(f"{instances.source}: no image with id {image_id!r}")
        anns = instances.coco.loadAnns(instances.coco.getAnnIds(imgIds=[image_id]))
        present = {instances.names[a["category_id"]] for a in anns if a.get("category_id") in instances.names}
        for ref in (references or {}).get(image_id, []):
            present |= {c for _, _, c in lexicon.find(normalize_caption(ref) if isinstance(ref, str) else list(ref))}
        out[image_id] = CategoryTruth(frozenset(present), lexicon)
    return out


def true_items(truth: Truth) -> set[tuple[str, str]]:
    """What is true of the image, as (kind, item): its shapes, colours, sizes and the relations
    that hold between two of its objects (shapes); its categories (COCO)."""
    if isinstance(truth, CategoryTruth):
        return {("object", c) for c in truth.present}
    items = {("shape", o.shape) for o in truth.objects}
    items |= {("colour", o.colour) for o in truth.objects} | {("size", o.size) for o in truth.objects}
    for i, a in enumerate(truth.objects):
        for j, b in enumerate(truth.objects):
            if i != j:
                items |= {("relation", r) for r in relations_between(a.box, b.box, truth.side)}
    return items


# --------------------------------------------------------------------------- claims of one caption


@dataclass(frozen=True)
class Claim:
    """One thing a caption states: ``kind`` (shape, colour, size, relation; COCO: object), the
    ``word`` (the shape, colour, size, relation phrase or category), what it is ``about`` (an
    attribute's shape, "circle > square" for a relation, "" otherwise), the caption's words
    ``span`` = (start, end) that state it, and its ``verdict`` (right, wrong, unjudged)."""

    kind: str
    word: str
    about: str
    span: tuple[int, int]
    verdict: str

    @property
    def key(self) -> tuple[str, str, str]:
        """What two captions must both state to share the claim."""
        return self.kind, self.word, self.about


def _caption_words(caption) -> list[str]:
    if isinstance(caption, str):
        return normalize_caption(caption)
    return [str(w) for w in caption]


def _shape_positions(tokens: list[str], n_objects: int) -> list[int]:
    """The token of each stated object's shape word (a count phrase's objects share one).
    parse_caption reads left to right, so the objects of a prefix of the words are a prefix of
    the objects: object j's shape word is where the prefixes first state j + 1 objects. Reading
    every prefix (20 words: 20 short parses) keeps the grammar in capt.eval.content alone."""
    at: list[int] = []
    for k in range(1, len(tokens) + 1):
        n = len(parse_caption(tokens[:k]).objects)
        at += [k - 1] * (n - len(at))
    return at + [len(tokens) - 1] * (n_objects - len(at))     # never short, whatever the words


def _nearest_before(tokens: list[str], word: str, end: int) -> int:
    """The last position before ``end`` holding ``word``: the one the grammar reads (the word
    nearest the shape wins), inside the shape's own phrase."""
    for k in range(end - 1, -1, -1):
        if tokens[k] == word:
            return k
    return end


def _find_phrase(tokens: list[str], phrase: list[str], start: int, end: int) -> tuple[int, int]:
    """Where ``phrase`` first occurs in tokens[start:end]; all of it where it does not (a stutter
    inside it, "to the the left of", which the grammar reads once)."""
    for k in range(start, end - len(phrase) + 1):
        if tokens[k:k + len(phrase)] == phrase:
            return k, k + len(phrase)
    return start, max(end, start + 1)


def _shapes_claims(words: list[str], truth: ShapesTruth) -> list[Claim]:
    # Each word normalised alone, so that every token knows the word it came from (``owner``).
    tokens, owner = [], []
    for i, w in enumerate(words):
        for t in normalize_caption(w):
            tokens.append(t)
            owner.append(i)
    if not tokens:
        return []
    content = parse_caption(tokens)
    stated, objects = content.objects, list(truth.objects)
    shape_at = _shape_positions(tokens, len(stated))
    _, by_shape = match_objects(stated, objects)

    def span(start: int, end: int) -> tuple[int, int]:
        return owner[start], owner[end - 1] + 1

    claims: list[tuple[int, Claim]] = []
    for s, obj in enumerate(stated):
        k = shape_at[s]
        claims.append((k, Claim("shape", obj.shape, "", span(k, k + 1), RIGHT if s in by_shape else WRONG)))
        for attribute in ("size", "colour"):
            said = getattr(obj, attribute)
            if said is None:
                continue
            if s in by_shape:
                verdict = RIGHT if said == getattr(objects[by_shape[s]], attribute) else WRONG
            else:
                verdict = UNJUDGED
            j = _nearest_before(tokens, said, k)
            claims.append((j, Claim(attribute, said, obj.shape, span(j, j + 1), verdict)))
    for relation in content.relations:
        # The content metric's own judgement of this one relation: its relations_correct count.
        alone = StatedContent(stated, (relation,))
        right = content_statistics(alone, objects, truth.side)[_RELATIONS_CORRECT] == 1
        start, end = _find_phrase(tokens, relation.relation.split(), shape_at[relation.subject] + 1,
                                  shape_at[relation.object])
        about = f"{stated[relation.subject].shape} > {stated[relation.object].shape}"
        claims.append((start, Claim("relation", relation.relation, about, span(start, end), RIGHT if right else WRONG)))
    return [c for _, c in sorted(claims, key=lambda kc: kc[0])]     # caption order (a stable sort)


def caption_claims(caption, truth: Truth) -> list[Claim]:
    """What a caption (a string, or its words) states, in caption order, each judged against the
    image (the module docstring has the rules). Spans index the caption's words: the list given,
    or normalize_caption of the string."""
    words = _caption_words(caption)
    if isinstance(truth, ShapesTruth):
        return _shapes_claims(words, truth)
    return [Claim("object", category, "", (start, end), RIGHT if category in truth.present else WRONG)
            for start, end, category in truth.lexicon.find([w.lower() for w in words])]


def shared_claims(claims: Sequence[Claim], other: Sequence[Claim]) -> list[bool]:
    """For each claim, whether the other caption states it too: keys matched as multisets, in
    caption order (two "circle"s against one: the first is shared, the second is not)."""
    left = Counter(c.key for c in other)
    out = []
    for c in claims:
        out.append(left[c.key] > 0)
        left[c.key] -= 1
    return out


def word_differences(caption_a, caption_b, truth: Truth) -> dict:
    """Both captions' claims about one image, judged, each marked shared or not:
    ``{"a": {"words": [...], "claims": [{kind, word, about, span, verdict, shared}, ...]}, "b": ...}``
    (JSON-able). The claims with ``shared`` false are the content words that differ."""
    claims_a, claims_b = caption_claims(caption_a, truth), caption_claims(caption_b, truth)
    out = {}
    for side, caption, claims, other in (("a", caption_a, claims_a, claims_b), ("b", caption_b, claims_b, claims_a)):
        out[side] = {"words": _caption_words(caption),
                     "claims": [{**asdict(c), "span": list(c.span), "shared": s}
                                for c, s in zip(claims, shared_claims(claims, other))]}
    return out


# --------------------------------------------------------------------------- over the test set


def _rate(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _delta(x: float | None, y: float | None) -> float | None:
    return None if x is None or y is None else x - y


def difference_summary(captions_a: Mapping, captions_b: Mapping, truths: Mapping) -> list[dict]:
    """Where A beats B, item by item: a row per (kind, item) that is true in some image or stated
    by either model, in the world's order (shapes, sizes, colours, relations; COCO's categories
    alphabetically). ``captions_*``: image id -> caption (string or words), on the same images;
    ``truths``: image id -> :data:`Truth` (:func:`image_truths`) for each of them.

    Columns: ``kind``, ``item``, ``images_true`` (images where it is true), then for each model
    m in (a, b): ``m_images`` (images whose caption states it), ``m_stated`` (its claims),
    ``m_judged`` (claims judged: all but the attributes of an object that is not there),
    ``m_right``, ``m_precision`` = right / judged, ``m_named`` (images where it is true and the
    caption states it rightly), ``m_recall`` = named / images_true; and ``precision_delta``,
    ``recall_delta`` (a - b). A rate with a zero denominator is None.
    """
    ids_a, ids_b = set(captions_a), set(captions_b)
    if ids_a != ids_b:
        raise CaptError(f"captions of different images: {len(ids_a - ids_b)} only in A, {len(ids_b - ids_a)} only in B")
    missing = [i for i in captions_a if i not in truths]
    if missing:
        raise CaptError(f"no truth for images {sorted(missing, key=sort_key)[:5]}: the instances lack them")
    counts: dict[tuple[str, str], Counter] = {}

    def row(key) -> Counter:
        return counts.setdefault(key, Counter())

    for image_id in sorted(captions_a, key=sort_key):
        truth = truths[image_id]
        true_here = true_items(truth)
        for key in true_here:
            row(key)["images_true"] += 1
        for m, captions in (("a", captions_a), ("b", captions_b)):
            claims = caption_claims(captions[image_id], truth)
            for key in {(c.kind, c.word) for c in claims}:
                row(key)[f"{m}_images"] += 1
            for c in claims:
                r = row((c.kind, c.word))
                r[f"{m}_stated"] += 1
                r[f"{m}_judged"] += c.verdict != UNJUDGED
                r[f"{m}_right"] += c.verdict == RIGHT
            for key in {(c.kind, c.word) for c in claims if c.verdict == RIGHT} & true_here:
                row(key)[f"{m}_named"] += 1

    def order(key):
        kind, item = key
        known = _ITEM_ORDER.get(kind, ())
        return KINDS.index(kind), known.index(item) if item in known else len(known), item

    rows = []
    for kind, item in sorted(counts, key=order):
        c = counts[kind, item]
        r = {"kind": kind, "item": item, "images_true": c["images_true"]}
        for m in ("a", "b"):
            r |= {f"{m}_images": c[f"{m}_images"], f"{m}_stated": c[f"{m}_stated"], f"{m}_judged": c[f"{m}_judged"],
                  f"{m}_right": c[f"{m}_right"], f"{m}_precision": _rate(c[f"{m}_right"], c[f"{m}_judged"]),
                  f"{m}_named": c[f"{m}_named"], f"{m}_recall": _rate(c[f"{m}_named"], c["images_true"])}
        r["precision_delta"] = _delta(r["a_precision"], r["b_precision"])
        r["recall_delta"] = _delta(r["a_recall"], r["b_recall"])
        rows.append(r)
    return rows


# --------------------------------------------------------------------------- what the report shows


@dataclass
class Example:
    """One image of the difference view: its place (``side`` "top": A beats B most; "bottom": B
    beats A most; ``rank`` 1 first), the scores, both captions' words, both models' maps
    (technique -> (T, G, G), a word each) and, where the truth is known, :func:`word_differences`."""

    image_id: object
    side: str
    rank: int
    cider_a: float
    cider_b: float
    delta: float
    words_a: list[str]
    words_b: list[str]
    maps_a: dict[str, np.ndarray]
    maps_b: dict[str, np.ndarray]
    differences: dict | None = None

    def to_json(self) -> dict:
        """Everything but the maps (which techniques there are, instead)."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("maps_a", "maps_b")}
        return data | {"techniques_a": list(self.maps_a), "techniques_b": list(self.maps_b)}


def difference_examples(a: ModelOutputs, b: ModelOutputs, k: int = 5, truths: Mapping | None = None) -> list[Example]:
    """The ``k`` images where A beats B most (by per-image CIDEr-D), then the ``k`` where B beats A
    most (the most negative first; none of the first ``k`` again, on a test set of fewer than 2k
    images), each with its captions, maps and, with ``truths``, its word differences."""
    if a.scores is None or b.scores is None:
        raise CaptError(f"{a.name} and {b.name}: per-image scores are needed to rank the images")
    ranked = rank_by_difference(a.scores, b.scores, (a.name, b.name))
    top = ranked[:k]
    chosen = {r.image_id for r in top}
    bottom = [r for r in reversed(ranked) if r.image_id not in chosen][:k]
    examples = []
    for side, rows in (("top", top), ("bottom", bottom)):
        for rank, r in enumerate(rows, 1):
            for m in (a, b):
                if r.image_id not in m.captions:
                    raise CaptError(f"{m.name}: scores image {r.image_id!r} but has no caption of it; "
                                    "rerun its evaluation")
            words_a, words_b = a.words(r.image_id), b.words(r.image_id)
            differences = None
            if truths is not None:
                differences = word_differences(words_a, words_b, truths[r.image_id])
            examples.append(Example(
                r.image_id, side, rank, r.cider_a, r.cider_b, r.delta, words_a, words_b,
                {t: m[r.image_id][1] for t, m in a.maps.items() if r.image_id in m},
                {t: m[r.image_id][1] for t, m in b.maps.items() if r.image_id in m},
                differences))
    return examples
