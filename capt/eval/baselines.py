"""What a captioner must beat before its score means anything: two baselines that look at the
image little or not at all, and the diagnostics that tell a template-writer from a describer.

BLEU rewards templates: on ``shapes`` one fixed sentence scores more than half the human ceiling,
because many test references repeat training sentences word for word. So every study reports,
scored with the same metrics and intervals as the models:

- the **constant caption** (:func:`best_constant_caption`): the one training caption that, given
  to every validation image, scores the highest CIDEr-D there. It never looks at the image, so a
  model that does not beat it clearly has learned the language of the captions, not the images.
  The candidates are the ``candidates`` most frequent distinct training captions (after the
  evaluation's tokenizer): scoring all of COCO's ~400k distinct captions on 5,000 images would
  take hours, and a caption written once is never the best constant anyway.
- the **nearest neighbour** (:func:`nearest_neighbour_captions`, the standard retrieval baseline,
  e.g. Devlin et al. 2015 "Exploring Nearest Neighbor Approaches for Image Captioning" in its
  1-NN form): each test image takes the first reference caption of its nearest training image,
  nearest by cosine similarity of the frozen trunk's features averaged over its cells. It looks
  at the image only through the trunk a model starts from, and writes only human sentences.

:func:`caption_diagnostics` counts what the scores hide: how many distinct captions a model
writes for how many images, how many distinct words it uses, and how many of its captions are
not a training caption verbatim (a degenerate captioner writes a handful of memorised sentences).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from pycocoevalcap.cider.cider import Cider

from capt.errors import CaptError
from capt.eval.metrics import tokenize_captions
from capt.eval.per_image import sort_key

__all__ = ["BASELINE_MODELS", "best_constant_caption", "nearest_neighbour_captions", "pooled_features", "caption_diagnostics"]

BASELINE_MODELS = ("constant", "nearest")     # their names where models have theirs (metrics/eval/<name>-<dataset>.json)


def best_constant_caption(train_captions: list[str], val_references: dict[int, list[str]], *,
                          candidates: int = 100, tokenizer: str = "simple") -> tuple[str, float, int]:
    """The training caption with the highest val CIDEr-D when given to every val image.

    ``train_captions``: every raw training caption (repeats count: frequency picks the
    candidates); ``val_references``: val image id -> raw references. Candidates are the
    ``candidates`` most frequent distinct token sequences (ties: the sequence, alphabetically),
    each scored with pycocoevalcap's CIDEr-D on the same tokens as the evaluation. Returns
    (the caption as its first raw spelling in the training set, its val CIDEr-D, candidates
    scored); ties in CIDEr-D go to the more frequent caption.
    """
    if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1:
        raise CaptError(f"the constant baseline needs a positive number of candidates, got {candidates!r}")
    if not train_captions:
        raise CaptError("no training captions to choose the constant baseline from")
    if not val_references:
        raise CaptError("no val images to choose the constant baseline on")
    val_ids = sorted(val_references, key=sort_key)
    flat = list(train_captions) + [r for i in val_ids for r in val_references[i]]
    tokens = tokenize_captions(flat, tokenizer)            # one batch: one JVM for ptb
    train_tokens, ref_tokens = tokens[:len(train_captions)], iter(tokens[len(train_captions):])
    gts = {i: [" ".join(next(ref_tokens)) for _ in val_references[i]] for i in val_ids}
    gts = {i: [r for r in refs if r] for i, refs in gts.items()}

    first_spelling: dict[str, str] = {}
    counts: Counter[str] = Counter()
    for raw, toks in zip(train_captions, train_tokens):
        if toks:                                           # a blank caption is no candidate
            joined = " ".join(toks)
            counts[joined] += 1
            first_spelling.setdefault(joined, raw)
    if not counts:
        raise CaptError("every training caption is blank: no constant baseline")
    ranked = sorted(counts, key=lambda c: (-counts[c], c))[:candidates]
    best, best_cider = ranked[0], -1.0
    for candidate in ranked:                               # most frequent first: it keeps a tie
        cider, _ = Cider().compute_score(gts, {i: [candidate] for i in val_ids})
        if cider > best_cider:
            best, best_cider = candidate, float(cider)
    return first_spelling[best], best_cider, len(ranked)


def pooled_features(cells: np.ndarray) -> np.ndarray:
    """(N, P, D) trunk cells (any float dtype, the cache's fp16 too) -> (N, D) float32, their mean
    over the P cells, L2-normalised (a zero vector stays zero): dot products are then cosines."""
    pooled = np.asarray(cells, np.float32).mean(axis=1)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return pooled / np.where(norms > 0, norms, 1.0)


def nearest_neighbour_captions(train_features: np.ndarray, train_ids: list[int],
                               train_references: dict[int, list[str]], test_features: np.ndarray,
                               test_ids: list[int]) -> dict[int, str]:
    """Each test image -> the first reference of its nearest training image.

    ``train_features`` (N_train, D) and ``test_features`` (N_test, D): :func:`pooled_features`
    (unit vectors), in the order of ``train_ids`` / ``test_ids``. Nearest: the highest cosine
    similarity; a tie goes to the training image listed first (``argmax``), so the result is
    deterministic.
    """
    train_features, test_features = np.asarray(train_features), np.asarray(test_features)
    if train_features.ndim != 2 or test_features.ndim != 2 or train_features.shape[1] != test_features.shape[1]:
        raise CaptError(f"nearest neighbour: features of shapes {train_features.shape} (train) and "
                        f"{test_features.shape} (test) are not (N, D) of one width D")
    if len(train_ids) != len(train_features) or len(test_ids) != len(test_features):
        raise CaptError(f"nearest neighbour: {len(train_ids)} train ids for {len(train_features)} feature rows, "
                        f"{len(test_ids)} test ids for {len(test_features)}")
    if not len(train_ids):
        raise CaptError("nearest neighbour: no training images to retrieve from")
    captions = {}
    for start in range(0, len(test_ids), 1024):            # (1024, N_train) similarities at a time
        nearest = (test_features[start:start + 1024] @ train_features.T).argmax(axis=1)
        for image_id, k in zip(test_ids[start:start + 1024], nearest.tolist()):
            refs = train_references.get(train_ids[k])
            if not refs:
                raise CaptError(f"nearest neighbour: training image {train_ids[k]} has no reference caption")
            captions[image_id] = refs[0]
    return captions


def caption_diagnostics(hypotheses: dict[int, str], train_captions: list[str]) -> dict[str, float | int]:
    """What a model's captions look like as a set, on the project's normalised tokens:
    ``distinct_captions`` (of ``images``), ``distinct_share`` (distinct / images),
    ``vocabulary_used`` (distinct words over all captions) and ``novel_share`` (the share of
    captions that are no training caption verbatim)."""
    if not hypotheses:
        raise CaptError("no captions to describe")
    seen = {" ".join(t) for t in tokenize_captions(list(train_captions))}
    captions = [" ".join(t) for t in tokenize_captions([hypotheses[i] for i in sorted(hypotheses, key=sort_key)])]
    distinct = len(set(captions))
    return {"images": len(captions), "distinct_captions": distinct, "distinct_share": distinct / len(captions),
            "vocabulary_used": len({w for c in captions for w in c.split()}),
            "novel_share": sum(c not in seen for c in captions) / len(captions)}
