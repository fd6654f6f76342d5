"""Faithfulness: does a word's map explain what the *model* did, or only what the image holds?

Grounding (capt.eval.grounding) asks whether a map lands on the object a word names; a map can
do that and still say nothing about the model (an edge detector lands on objects too). Two tests
from the literature ask the model itself:

**Deletion and insertion curves** (Petsiuk et al., BMVC 2018, "RISE"). For each word of an image's
caption (the model's own, teacher-forced), the G x G grid cells are ranked by the word's map,
highest first. *Deletion* blurs the top-ranked cells of the image step by step until every cell
is blurred; *insertion* starts from the blurred image and reveals the top-ranked cells' original
pixels step by step. At each of ``steps + 1`` points (``cells_at_steps``: round(k P / steps)
cells, k = 0..steps) the word's log-probability is read, teacher-forced on the same caption. The
score is the area under the curve of the word's *probability* over the fraction of cells
(trapezoid): deletion lower = more faithful (the word dies as soon as its evidence goes),
insertion higher = more faithful. Two rankings of the same words are the baselines: **random**
(a permutation per word from a generator seeded by the seed and the image id, never by the
model or the technique) and **centre** (cells by distance from the grid's centre, nearest first).

*Removing* a cell means replacing the pixels it covers by those of a blurred copy of the whole
image (``blurred``: torchvision's Gaussian blur, sigma = ``blur_sigma`` x the image side, 1/8 by
default: 8 px at the embedded world's 64 px, one cell of its 8 x 8 grid; kernel +-3 sigma). Blur
rather than black or grey: a constant patch is itself a strong, out-of-distribution signal (a
black square may well read as "a square"), while a blurred one keeps the colours and removes the
shapes. Cell c covers the pixels that the encoder's cell c pools, S/G x S/G of them for an image
of S px; when G does not divide S each pixel goes to its nearest cell (``cell_pixels``).

Cost: every distinct (word, set of blurred cells) is one image through the encoder and one
teacher-forced decode of the caption through that word. A word needs at most
2 + 2 (K + 2)(steps - 1) of them for K techniques (the intact and the fully blurred image are
shared by every ranking; random and centre are shared by every technique): 58 for the two LSTM
techniques at 8 steps. They are batched across words, rankings and images
(``deletion_insertion_curves``, ``batch_size`` rows per forward). The model enters through a
small interface, :class:`WordScorer` (``word_log_probs`` and ``grid``), so that BLIP can plug
in; :func:`lstm_word_scorer` is Show-Attend-Tell's.

**Model randomisation** (Adebayo et al., NeurIPS 2018, "Sanity checks for saliency maps"). The
decoder's weights (``randomised_decoder``), or the encoder's last block's
(``randomised_last_block``), are re-drawn, in a deep copy, and every technique's maps are
recomputed for the same captions and images. A map that barely changes (Spearman rank
correlation, word by word, near 1) does not depend on what the model learnt. Each parameter
tensor is replaced by normal draws with its own mean and standard deviation (a seeded
generator), so the activations keep their scale and lose their structure; BatchNorm running
statistics, which are buffers, are kept. A constant (or not finite) map has no ranks: such
words are counted (``constant_maps_<variant>``) and left out.

Every mean has a 95% percentile bootstrap interval over images (capt.eval.bootstrap; per-image
sums and word counts, the mean = sum / count on every resample); images whose caption has no
word hold nothing to score and take no part.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from pathlib import Path
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from capt.errors import CaptError
from capt.eval.bootstrap import corpus_score, paired_statistic, statistic_ci95
from capt.eval.difference import read_images
from capt.eval.per_image import sort_key
from capt.models.gradcam import lstm_word_gradcam
from capt.models.saved import Captioner

__all__ = ["WordScorer", "lstm_word_scorer", "BLUR_SIGMA", "blurred", "cell_pixels", "cells_at_steps",
           "map_ranking", "random_ranking", "centre_ranking", "deletion_insertion_curves", "curve_auc",
           "faithfulness", "lstm_attention_maps", "lstm_gradcam_maps", "LSTM_MAP_FUNCTIONS",
           "randomise_parameters", "randomised_decoder", "randomised_last_block", "RANDOMISATIONS",
           "spearman_per_word", "sanity_check"]

CURVES = ("deletion", "insertion")
BASELINES = ("random", "centre")
BLUR_SIGMA = 0.125          # the blur's sigma as a share of the image side: one cell of an 8 x 8 grid

# (word ids of a caption without <start>/<end>, position of the word in it)
Rows = Sequence[tuple[Sequence[int], int]]


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class WordScorer:
    """What the curves need of a captioner, whichever it is.

    ``word_log_probs(images, rows)``: images uint8 (R, 3, S, S); ``rows[r] = (words, t)``, the
    word ids of a caption (no <start>/<end>) and a position in it -> (R,) float tensor, row r's
    log p(words[t] | image r, words[:t]), teacher-forced. Rows must not interact.
    ``grid``: G; a map's P = G * G cells lie row-major on a G x G grid over the image.
    """

    word_log_probs: Callable[[torch.Tensor, Rows], torch.Tensor]
    grid: int


def lstm_word_scorer(captioner: Captioner) -> WordScorer:
    """Show-Attend-Tell's :class:`WordScorer`: one encoder forward of the R images and one
    teacher-forced decode, row r decoded through its word's step only. Puts the captioner in
    eval mode (dropout off)."""
    captioner.eval()
    encoder, decoder, vocab = captioner.encoder, captioner.decoder, captioner.vocab

    @torch.no_grad()
    def word_log_probs(images: torch.Tensor, rows: Rows) -> torch.Tensor:
        features = encoder(images)                                            # (R, P, D)
        dev = features.device
        L = max(len(words) for words, _ in rows) + 2
        tokens = torch.zeros(len(rows), L, dtype=torch.long)
        for r, (words, _) in enumerate(rows):
            tokens[r, :len(words) + 2] = torch.tensor([vocab.start, *map(int, words), vocab.end])
        tokens = tokens.to(dev)
        step = torch.tensor([int(t) for _, t in rows], device=dev)            # (R,)
        # step t reads tokens 0..t and predicts token t + 1 (word t): decoding through step t
        # gives its logits, and the decoder's length-sorted batch skips the later steps
        logits, _ = decoder(features, tokens, step + 2)                       # (R, T, V)
        r = torch.arange(len(rows), device=dev)
        return logits[r, step].log_softmax(dim=-1)[r, tokens[r, step + 1]]   # (R,)

    return WordScorer(word_log_probs, captioner.encoder.cfg.encoded_size)


# --------------------------------------------------------------------------- perturbations


def blur_kernel(size: int, blur_sigma: float = BLUR_SIGMA) -> tuple[int, float]:
    """(odd kernel size, sigma in px) of the blur for an image side of ``size`` px: +-3 sigma,
    cut at ``size - 1`` px, the most that reflect padding allows."""
    sigma = blur_sigma * size
    radius = min(math.ceil(3 * sigma), size - 1)
    return 2 * radius + 1, sigma


def blurred(images: torch.Tensor, blur_sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """uint8 (..., 3, H, W) -> the Gaussian-blurred copy, uint8 (rounded), same shape: what a
    removed cell's pixels become."""
    (ky, sy), (kx, sx) = blur_kernel(images.shape[-2], blur_sigma), blur_kernel(images.shape[-1], blur_sigma)
    out = gaussian_blur(images.float(), [kx, ky], [sx, sy])
    return out.round().clamp(0, 255).to(torch.uint8)


def cell_pixels(cells: torch.Tensor, grid: int, height: int, width: int) -> torch.Tensor:
    """bool (n, P) cells of a G x G grid -> bool (n, 1, height, width): the pixels they cover,
    blocks of S/G x S/G when G divides S; otherwise each pixel goes to the cell its centre lies
    in ("nearest-exact": plain "nearest" would shift the blocks by half a pixel)."""
    masks = cells.reshape(len(cells), 1, grid, grid).float()
    return F.interpolate(masks, size=(height, width), mode="nearest-exact").bool()


def cells_at_steps(cells: int, steps: int) -> np.ndarray:
    """(steps + 1,) int64: round(k * cells / steps) for k = 0..steps, halves up (in integers)."""
    k = np.arange(steps + 1, dtype=np.int64)
    return (2 * k * cells + steps) // (2 * steps)


# --------------------------------------------------------------------------- rankings


def map_ranking(maps: np.ndarray) -> np.ndarray:
    """float (T, P) maps -> int64 (T, P): each word's cells, highest value first. A stable sort:
    ties (an all-zero Grad-CAM map ties everywhere) keep the cells' row-major order, and values
    that are not finite go last, so every word gets one ranking, always the same."""
    maps = np.asarray(maps, np.float64)
    maps = np.where(np.isfinite(maps), maps, -np.inf)
    return np.argsort(-maps, axis=1, kind="stable")


def _image_rng(image_id, seed: int) -> np.random.Generator:
    """A generator seeded by ``seed`` and the image id alone: an image's random rankings do not
    depend on the technique, the model or which other images are scored."""
    digest = np.frombuffer(hashlib.sha256(json.dumps(str(image_id)).encode()).digest(), dtype="<u4")
    return np.random.default_rng(np.random.SeedSequence([int(seed), *digest.tolist()]))


def random_ranking(image_id, words: int, cells: int, seed: int) -> np.ndarray:
    """int64 (words, cells): a random permutation of the cells per word, the image's own stream."""
    rng = _image_rng(image_id, seed)
    return np.stack([rng.permutation(cells) for _ in range(words)]) if words else np.zeros((0, cells), np.int64)


def centre_ranking(grid: int) -> np.ndarray:
    """int64 (G * G,): cells by distance from the grid's centre, nearest first; equal distances
    in row-major order."""
    y, x = np.divmod(np.arange(grid * grid), grid)
    twice = (2 * y - (grid - 1)) ** 2 + (2 * x - (grid - 1)) ** 2        # 4 x squared distance, exact
    return np.argsort(twice, kind="stable")


# --------------------------------------------------------------------------- curves


class _ImageCurves:
    """One image's curves: every distinct (word, blurred cells) pair that its rankings need, the
    perturbed images made on demand, and the log-probs once scored.

    ``orders`` int (K, T, P): K rankings of the cells for each of the T words. Curve point k of
    deletion blurs the cells ranked < cells[k], of insertion those ranked >= cells[k].
    """

    def __init__(self, image: torch.Tensor, words: list[int], orders: np.ndarray, cells: np.ndarray,
                 grid: int, blur_sigma: float):
        K, T, P = orders.shape
        self.image, self.blurred, self.words, self.grid = image, blurred(image, blur_sigma), words, grid
        place = np.empty_like(orders)
        np.put_along_axis(place, orders, np.arange(P)[None, None, :], axis=2)    # place[k, t, c]: rank of cell c
        removed = place[:, :, None, :] < cells[None, None, :, None]                # (K, T, steps + 1, P)
        hidden = np.stack([removed, ~removed], axis=1)                             # (K, 2, T, steps + 1, P)
        word = np.broadcast_to(np.arange(T)[None, None, :, None, None], (*hidden.shape[:4], 1))
        table = np.concatenate([word, hidden.astype(np.int64)], axis=-1).reshape(-1, P + 1)
        unique, inverse = np.unique(table, axis=0, return_inverse=True)
        self.word_of_row = unique[:, 0]                                             # (U,)
        self.hidden = torch.from_numpy(unique[:, 1:].astype(bool))                  # (U, P)
        self.point_row = inverse.reshape(hidden.shape[:4])                          # (K, 2, T, steps + 1) -> row
        self.log_probs = np.full(len(unique), np.nan)
        self.left = len(unique)

    def perturbed(self, rows: np.ndarray) -> torch.Tensor:
        """uint8 (n, 3, H, W): the image with row j's hidden cells blurred, for each row j."""
        H, W = self.image.shape[-2:]
        pixels = cell_pixels(self.hidden[torch.from_numpy(rows)], self.grid, H, W)   # (n, 1, H, W)
        return torch.where(pixels, self.blurred[None], self.image[None])

    def curves(self) -> np.ndarray:
        """float64 (K, 2, T, steps + 1) log-probs."""
        return self.log_probs[self.point_row]


def deletion_insertion_curves(scorer: WordScorer, images: Mapping, captions: Mapping,
                              rankings: Mapping[str, Mapping], *, steps: int = 8, batch_size: int = 256,
                              blur_sigma: float = BLUR_SIGMA) -> dict[str, dict]:
    """Every word's deletion and insertion curves under every ranking.

    ``images``: image id -> uint8 (3, S, S); ``captions``: image id -> word ids (no <start>/<end>);
    ``rankings``: name -> image id -> int (T_i, P) cell orders (:func:`map_ranking`), for every
    image of ``captions``. Returns name -> image id -> float64 (2, T_i, steps + 1): the log-prob
    of each word (row 0 deletion, row 1 insertion) after removing / revealing
    :func:`cells_at_steps` of its top-ranked cells.

    Rows of all images go to ``scorer`` in batches of ``batch_size``, in image order; an image's
    copies are dropped as soon as its last row is scored, so memory stays at one batch.
    """
    names = list(rankings)
    cells = cells_at_steps(scorer.grid ** 2, steps)
    out: dict[str, dict] = {name: {} for name in names}
    queue: list[tuple[_ImageCurves, int]] = []         # rows waiting for a forward
    open_images: list[tuple[object, _ImageCurves]] = []

    def score(batch: list[tuple[_ImageCurves, int]]) -> None:
        groups: dict[_ImageCurves, list[int]] = {}
        for plan, j in batch:
            groups.setdefault(plan, []).append(j)
        pixels = torch.cat([plan.perturbed(np.array(rows)) for plan, rows in groups.items()])
        spec = [(plan.words, int(plan.word_of_row[j])) for plan, rows in groups.items() for j in rows]
        log_probs = scorer.word_log_probs(pixels, spec)
        if tuple(log_probs.shape) != (len(spec),):
            raise CaptError(f"word_log_probs gave shape {tuple(log_probs.shape)} for {len(spec)} rows: one "
                            "log-prob a row")
        log_probs = log_probs.detach().double().cpu().numpy()
        done = 0
        for plan, rows in groups.items():
            plan.log_probs[rows] = log_probs[done:done + len(rows)]
            plan.left -= len(rows)
            done += len(rows)

    def finish_scored() -> None:
        while open_images and open_images[0][1].left == 0:
            image_id, plan = open_images.pop(0)
            curves = plan.curves()
            for k, name in enumerate(names):
                out[name][image_id] = curves[k]

    for image_id, words in captions.items():
        orders = np.stack([np.asarray(rankings[name][image_id], np.int64).reshape(len(words), scorer.grid ** 2)
                           for name in names])
        plan = _ImageCurves(images[image_id], list(words), orders, cells, scorer.grid, blur_sigma)
        open_images.append((image_id, plan))
        queue.extend((plan, j) for j in range(len(plan.log_probs)))
        while len(queue) >= batch_size:
            score(queue[:batch_size])
            del queue[:batch_size]
            finish_scored()
        finish_scored()                               # an image without words has no rows
    if queue:
        score(queue)
    finish_scored()
    return out


def curve_auc(log_probs: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """float (..., steps + 1) log-probs at ``fractions`` (steps + 1,) of the cells -> (...): the
    trapezoid area under the *probability* curve."""
    p = np.exp(np.asarray(log_probs, np.float64))
    return ((p[..., 1:] + p[..., :-1]) / 2 * np.diff(np.asarray(fractions, np.float64))).sum(axis=-1)


# --------------------------------------------------------------------------- inputs


def _check_positive(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise CaptError(f"faithfulness {name} must be a positive integer, got {value!r}")


def _chosen_images(captions: Mapping, max_images: int | None) -> list:
    """The first ``max_images`` image ids of ``captions`` in sorted order (all of them for None)."""
    if max_images is not None:
        _check_positive("max_images", max_images)
    ids = sorted(captions, key=sort_key)
    if not ids:
        raise CaptError("faithfulness: no captions to score")
    return ids[:max_images]


def _word_ids(caption, image_id) -> list[int]:
    words = [int(w) for w in (caption.tolist() if hasattr(caption, "tolist") else caption)]
    if any(w < 0 for w in words):
        raise CaptError(f"image {image_id!r}: the caption holds a negative word id ({words})")
    return words


def _image(images: Mapping, image_id, size: tuple[int, int] | None) -> torch.Tensor:
    """Image ``image_id`` as uint8 (3, H, W), checked against the others' size."""
    if image_id not in images:
        raise CaptError(f"image {image_id!r} has a caption but no image")
    image = torch.as_tensor(images[image_id])
    if image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
        raise CaptError(f"image {image_id!r}: an image must be uint8 (3, S, S), got {image.dtype} "
                        f"{tuple(image.shape)}")
    if size is not None and tuple(image.shape[1:]) != size:
        raise CaptError(f"image {image_id!r} is {tuple(image.shape[1:])} px, the others {size}: one size for all")
    return image


def _images(images: Mapping, ids: list) -> dict:
    out, size = {}, None
    for image_id in ids:
        out[image_id] = _image(images, image_id, size)
        size = tuple(out[image_id].shape[1:])
    return out


def _word_maps(technique_maps: Mapping, image_id, technique: str, words: int, grid: int) -> np.ndarray:
    """One image's maps of one technique as float (T, P), checked against its caption's words.
    A value may be the array or (words, array) as ``Captioner.caption_dataset`` gives them."""
    if image_id not in technique_maps:
        raise CaptError(f"technique {technique!r} has no maps of image {image_id!r}")
    maps = technique_maps[image_id]
    if isinstance(maps, tuple):
        maps = maps[1]
    maps = np.asarray(maps.detach().cpu() if isinstance(maps, torch.Tensor) else maps, np.float64)
    P = grid * grid
    if maps.ndim == 3 and maps.shape[1:] == (grid, grid):
        maps = maps.reshape(len(maps), P)
    if maps.ndim != 2 or maps.shape != (words, P):
        raise CaptError(f"technique {technique!r}, image {image_id!r}: {words} words on a {grid} x {grid} grid "
                        f"need maps of shape ({words}, {P}), got {maps.shape}")
    return maps


# --------------------------------------------------------------------------- summaries


def _mean_of_sums(sums: np.ndarray) -> np.ndarray:
    """(..., 2) summed (value, count) -> (...) means."""
    return sums[..., 0] / sums[..., 1]


def _sums(per_image: list[np.ndarray]) -> np.ndarray:
    """Per image (T_i,) values -> float64 (N, 2): their sum and count."""
    return np.array([[float(v.sum()), len(v)] for v in per_image], np.float64).reshape(-1, 2)


def _mean_ci95(ids: list, per_image: list[np.ndarray], resamples: int, seed: int) -> tuple[float, list[float]]:
    """The mean over all values of all images and its bootstrap interval over images."""
    stats = _sums(per_image)
    return corpus_score(ids, stats, _mean_of_sums), statistic_ci95(ids, stats, _mean_of_sums, resamples, seed)


def faithfulness(model: Captioner | WordScorer, images: Mapping, captions: Mapping, maps: Mapping[str, Mapping], *,
                 steps: int = 8, batch_size: int = 256, resamples: int = 1000, seed: int = 0,
                 max_images: int | None = None, blur_sigma: float = BLUR_SIGMA) -> dict[str, dict]:
    """Deletion and insertion AUCs of each technique's maps, against random and centre rankings.

    ``model``: a Show-Attend-Tell :class:`Captioner` or any :class:`WordScorer`; ``images``:
    image id -> uint8 (3, S, S), one size for all; ``captions``: image id -> the model's word ids
    (no <start>/<end>); ``maps``: technique -> image id -> float (T_i, P) or (T_i, G, G), one map
    per word of the caption (or (words, maps) pairs). ``max_images``: only the first N image ids
    of ``captions`` in sorted order. ``seed`` draws the random rankings and the bootstrap.

    Returns technique -> JSON-able dict: for c in deletion, insertion, ``{c}_auc`` (mean over words),
    ``{c}_auc_ci95``, ``{c}_auc_random``/``_centre`` (each with ``_ci95``), ``{c}_auc_vs_random``
    (technique minus random on the same words, paired over images) with ``_ci95`` and ``_p``,
    and ``{c}_curve``, ``{c}_curve_random``, ``{c}_curve_centre``: the mean log-prob at each of
    the ``fractions``; and ``words``, ``images`` (those with words), ``steps``, ``fractions``,
    ``perturbation``.
    """
    scorer = lstm_word_scorer(model) if isinstance(model, Captioner) else model
    if not isinstance(scorer, WordScorer):
        raise CaptError(f"faithfulness needs a Captioner or a WordScorer, got {type(model).__name__}")
    for name, value in (("steps", steps), ("batch_size", batch_size), ("grid", scorer.grid)):
        _check_positive(name, value)
    if not maps:
        raise CaptError("faithfulness: no technique's maps to score")
    clash = set(maps) & set(BASELINES)
    if clash:
        raise CaptError(f"a technique may not be named {', '.join(sorted(clash))}: that is a baseline's name")
    if not 0 < blur_sigma:
        raise CaptError(f"faithfulness blur_sigma must be > 0, got {blur_sigma!r}")
    ids = _chosen_images(captions, max_images)
    words = {i: _word_ids(captions[i], i) for i in ids}
    pixels = _images(images, ids)
    G, P = scorer.grid, scorer.grid ** 2
    centre = centre_ranking(G)
    rankings = {t: {i: map_ranking(_word_maps(maps[t], i, t, len(words[i]), G)) for i in ids} for t in maps}
    rankings["random"] = {i: random_ranking(i, len(words[i]), P, seed) for i in ids}
    rankings["centre"] = {i: np.tile(centre, (len(words[i]), 1)) for i in ids}
    curves = deletion_insertion_curves(scorer, pixels, words, rankings, steps=steps, batch_size=batch_size,
                                       blur_sigma=blur_sigma)
    fractions = cells_at_steps(P, steps) / P
    scored = [i for i in ids if words[i]]
    n_words = sum(len(words[i]) for i in scored)
    if not scored:
        raise CaptError(f"faithfulness: the captions of all {len(ids)} images are empty; no word to score")

    size = tuple(pixels[ids[0]].shape[1:])
    kernel, sigma = blur_kernel(size[0], blur_sigma)
    common = {"words": n_words, "images": len(scored), "steps": steps, "fractions": fractions.tolist(),
              "perturbation": f"cells replaced by a gaussian blur of the whole image, sigma={sigma:g} px "
                              f"({blur_sigma:g} of the {size[0]} px side), kernel {kernel} px"}
    summaries: dict[str, dict] = {}
    baseline_auc = {b: [curve_auc(curves[b][i], fractions) for i in scored] for b in BASELINES}   # (2, T_i) each
    for technique in maps:
        auc = [curve_auc(curves[technique][i], fractions) for i in scored]
        s: dict = {}
        for c, curve in enumerate(CURVES):
            per_image = [a[c] for a in auc]
            s[f"{curve}_auc"], s[f"{curve}_auc_ci95"] = _mean_ci95(scored, per_image, resamples, seed)
            for b in BASELINES:
                s[f"{curve}_auc_{b}"], s[f"{curve}_auc_{b}_ci95"] = _mean_ci95(
                    scored, [a[c] for a in baseline_auc[b]], resamples, seed)
            random_stats = _sums([a[c] for a in baseline_auc["random"]])
            paired = paired_statistic(scored, _sums(per_image), scored, random_stats, _mean_of_sums, resamples, seed)
            s[f"{curve}_auc_vs_random"], s[f"{curve}_auc_vs_random_ci95"] = paired.delta, paired.ci95
            s[f"{curve}_auc_vs_random_p"] = paired.p_value
            for name, key in ((technique, f"{curve}_curve"), ("random", f"{curve}_curve_random"),
                              ("centre", f"{curve}_curve_centre")):
                total = sum(curves[name][i][c].sum(axis=0) for i in scored)          # (steps + 1,)
                s[key] = (total / n_words).tolist()
        summaries[technique] = {**s, **common}
    return summaries


# --------------------------------------------------------------------------- model randomisation

# A map function: (captioner, uint8 images (B, 3, S, S), word ids per image) -> per image float (T_i, P).
MapFunction = Callable[[Captioner, torch.Tensor, list[list[int]]], list[np.ndarray]]


def lstm_attention_maps(captioner: Captioner, images: torch.Tensor, captions: list[list[int]]) -> list[np.ndarray]:
    """Soft attention of the teacher-forced decoder on the captions: per image float32 (T_i, P),
    the map that produced each word (as beam search keeps them for its own caption)."""
    captioner.eval()
    start, end = captioner.vocab.start, captioner.vocab.end
    L = max((len(words) for words in captions), default=0) + 2
    tokens = torch.zeros(len(captions), L, dtype=torch.long)
    for i, words in enumerate(captions):
        tokens[i, :len(words) + 2] = torch.tensor([start, *words, end])
    lengths = torch.tensor([len(words) + 2 for words in captions])
    with torch.no_grad():
        features = captioner.encoder(images)                                  # (B, P, D)
        dev = features.device
        _, alphas = captioner.decoder(features, tokens.to(dev), lengths.to(dev))   # (B, T, P)
    alphas = alphas.float().cpu().numpy()
    return [alphas[i, :len(words)].copy() for i, words in enumerate(captions)]


def lstm_gradcam_maps(captioner: Captioner, images: torch.Tensor, captions: list[list[int]]) -> list[np.ndarray]:
    """Grad-CAM on the encoder's last block (capt.models.gradcam): per image float32 (T_i, P)."""
    captioner.eval()
    cams = lstm_word_gradcam(captioner.encoder, captioner.decoder, images, captions,
                             captioner.vocab.start, captioner.vocab.end)
    return [cam.reshape(len(cam), -1) for cam in cams]


LSTM_MAP_FUNCTIONS: dict[str, MapFunction] = {"attention": lstm_attention_maps, "gradcam_encoder": lstm_gradcam_maps}


@torch.no_grad()
def randomise_parameters(module: nn.Module, seed: int) -> None:
    """Replace every parameter tensor of ``module`` (in place) by normal draws with that tensor's
    own mean and (population) standard deviation, from a generator seeded by ``seed``; buffers
    (BatchNorm running statistics) stay."""
    g = torch.Generator().manual_seed(int(seed))
    for p in module.parameters():
        mean, std = p.float().mean(), p.float().std(unbiased=False)
        draw = torch.randn(p.shape, generator=g, dtype=torch.float32) * std.cpu() + mean.cpu()
        p.copy_(draw.to(p.device, p.dtype))


def randomised_decoder(captioner: Captioner, seed: int) -> Captioner:
    """A deep copy of ``captioner`` with every decoder weight re-drawn (:func:`randomise_parameters`)."""
    twin = copy.deepcopy(captioner)
    randomise_parameters(twin.decoder, seed)
    return twin.eval()


def randomised_last_block(captioner: Captioner, seed: int) -> Captioner:
    """A deep copy of ``captioner`` with the encoder's last block re-drawn (the last ResNet stage
    of its trunk; ``layer1``, the stem's last, for a one-stage trunk)."""
    twin = copy.deepcopy(captioner)
    encoder = twin.encoder
    randomise_parameters(encoder.blocks[-1] if len(encoder.blocks) else encoder.stem[-1], seed)
    return twin.eval()


RANDOMISATIONS: dict[str, Callable[[Captioner, int], Captioner]] = {
    "decoder": randomised_decoder, "last_block": randomised_last_block}


def spearman_per_word(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """float (n, P) maps before and after -> float64 (n,): each word's Spearman rank correlation
    (Pearson's of the average ranks, as scipy.stats.spearmanr); NaN where either map is constant
    or not finite (it has no ranks)."""
    before, after = np.asarray(before, np.float64), np.asarray(after, np.float64)
    undefined = ~(np.isfinite(before).all(axis=1) & np.isfinite(after).all(axis=1))
    undefined |= (before == before[:, :1]).all(axis=1) | (after == after[:, :1]).all(axis=1)
    rho = np.full(len(before), np.nan)
    if (~undefined).any():
        a = rankdata(before[~undefined], axis=1)
        b = rankdata(after[~undefined], axis=1)
        a -= a.mean(axis=1, keepdims=True)
        b -= b.mean(axis=1, keepdims=True)
        rho[~undefined] = (a * b).sum(axis=1) / np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    return rho


def _all_maps(map_function: MapFunction, captioner: Captioner, pixels: dict, words: dict, ids: list,
              technique: str, batch_size: int) -> dict:
    """image id -> float (T_i, P) from ``map_function``, ``batch_size`` images a call, checked."""
    out = {}
    for k in range(0, len(ids), batch_size):
        chunk = ids[k:k + batch_size]
        maps = map_function(captioner, torch.stack([pixels[i] for i in chunk]), [words[i] for i in chunk])
        for image_id, m in zip(chunk, maps, strict=True):
            m = np.asarray(m, np.float64)
            if m.ndim != 2 or len(m) != len(words[image_id]):
                raise CaptError(f"technique {technique!r}, image {image_id!r}: {len(words[image_id])} words need "
                                f"maps of shape ({len(words[image_id])}, P), got {m.shape}")
            out[image_id] = m
    return out


def sanity_check(captioner: Captioner, images: Mapping, captions: Mapping,
                 map_functions: Mapping[str, MapFunction] | None = None, *, batch_size: int = 32,
                 resamples: int = 1000, seed: int = 0, max_images: int | None = None,
                 randomisations: Mapping[str, Callable] | None = None) -> dict[str, dict]:
    """How much each technique's maps change when the model is randomised (Adebayo et al. 2018).

    ``map_functions``: technique -> :data:`MapFunction` (default :data:`LSTM_MAP_FUNCTIONS`);
    ``images``, ``captions``, ``max_images`` as for :func:`faithfulness`; ``batch_size`` images a
    map-function call; ``randomisations``: variant -> (model, seed) -> a randomised copy (default
    :data:`RANDOMISATIONS`, the Show-Attend-Tell captioner's; another model passes its own, e.g.
    capt.blip.faithfulness's, with the map functions that read it). The caller's model is never
    changed (the randomised ones are copies).

    Returns technique -> for each v in :data:`RANDOMISATIONS` (``decoder``, ``last_block``):
    ``spearman_{v}`` (mean over words; None if no word has two non-constant maps),
    ``spearman_{v}_ci95``, ``words_{v}`` (the words compared), ``constant_maps_{v}`` (left out:
    a constant or non-finite map before or after); and ``words``, ``images``, ``randomisation``.
    """
    _check_positive("batch_size", batch_size)
    ids = _chosen_images(captions, max_images)
    words = {i: _word_ids(captions[i], i) for i in ids}
    pixels = _images(images, ids)
    map_functions = dict(LSTM_MAP_FUNCTIONS if map_functions is None else map_functions)
    twins = {v: randomise(captioner, seed) for v, randomise in (randomisations or RANDOMISATIONS).items()}
    out: dict[str, dict] = {}
    for technique, map_function in map_functions.items():
        before = _all_maps(map_function, captioner, pixels, words, ids, technique, batch_size)
        s: dict = {"words": sum(len(w) for w in words.values()), "images": len(ids),
                   "randomisation": "every parameter tensor re-drawn from a normal with its own mean and std "
                                    f"(seed {seed}): the (text) decoder, or the image encoder's last block"}
        for variant, twin in twins.items():
            after = _all_maps(map_function, twin, pixels, words, ids, technique, batch_size)
            rho = {i: spearman_per_word(before[i], after[i]) for i in ids if words[i]}
            valid = {i: r[np.isfinite(r)] for i, r in rho.items()}
            scored = [i for i in valid if len(valid[i])]
            s[f"constant_maps_{variant}"] = int(sum(np.count_nonzero(~np.isfinite(r)) for r in rho.values()))
            s[f"words_{variant}"] = int(sum(len(v) for v in valid.values()))
            if scored:
                s[f"spearman_{variant}"], s[f"spearman_{variant}_ci95"] = _mean_ci95(
                    scored, [valid[i] for i in scored], resamples, seed)
            else:
                s[f"spearman_{variant}"], s[f"spearman_{variant}_ci95"] = None, None
        out[technique] = s
    return out


def explain_maps(model: Captioner | WordScorer, test_h5: Path, maps: Mapping[str, Mapping], *, max_images: int,
                 steps: int = 8, batch_size: int = 256, resamples: int = 1000, seed: int = 0,
                 word_ids: Callable[[str], int] | None = None, sanity: dict | None = None) -> dict:
    """The evaluation's questions of a model's maps, on the first ``max_images`` test images
    (sorted ids) of ``test_h5``: ``{"faithfulness": faithfulness(...), "sanity_check":
    sanity_check(...)}``, each technique -> its dict. ``maps``: technique -> image id -> (words,
    (T, P) maps), the evaluation's own; ``word_ids``: a word -> the id the model's scorer reads
    (default: a captioner's vocabulary); ``sanity``: what :func:`sanity_check` needs of a model
    that is not a Show-Attend-Tell :class:`Captioner` (``model``, ``map_functions``,
    ``randomisations``), None to leave it out."""
    first = next(iter(maps.values()), {})
    ids = sorted(first, key=sort_key)[:max_images]
    if word_ids is None:
        word_ids = model.vocab.word_map.__getitem__
    captions = {i: [word_ids(w) for w in first[i][0]] for i in ids}
    images = {i: torch.as_tensor(image) for i, image in read_images(test_h5, ids).items()}
    chosen = {t: {i: m[i] for i in ids} for t, m in maps.items()}
    out = {"faithfulness": faithfulness(model, images, captions, chosen, steps=steps, batch_size=batch_size,
                                        resamples=resamples, seed=seed)}
    if isinstance(model, Captioner):
        out["sanity_check"] = sanity_check(model, images, captions, resamples=resamples, seed=seed)
    elif sanity is not None:
        out["sanity_check"] = sanity_check(sanity["model"], images, captions, sanity["map_functions"],
                                           randomisations=sanity["randomisations"], resamples=resamples, seed=seed)
    return out
