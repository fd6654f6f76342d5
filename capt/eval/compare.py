"""Is model A better than model B, by each metric, on the same test images?

An evaluation leaves per-image statistics behind (``results/scores/<model>-<dataset>.json``: BLEU's
counts and CIDEr-D, capt.eval.per_image.ImageScores; ``results/content/<model>-<dataset>.json``:
the content counts, capt.eval.content). Every corpus score the study compares is a function of
their sums, so one paired comparison (capt.eval.bootstrap.paired_statistic: a paired percentile
bootstrap interval and an approximate randomisation p-value) serves them all:

- ``bleu4``: nltk corpus BLEU-4 of the summed n-gram counts;
- ``cider``: CIDEr-D, the mean of the per-image scores (idf fixed from the whole test set);
- ``object_f1``: the content metric on a shapes world, objects stated right against the truth
  (strict: shape and every attribute named), F1 of the summed counts;
- ``coverage``: on any dataset with instances (COCO too), the share of annotated categories the
  captions name;
- ``clip_s``, ``ref_clip_s``: CLIPScore and RefCLIPScore (capt.eval.clipscore, where the
  evaluation ran it: ``evaluate.clipscore``), the mean of the per-image scores; two evaluations
  scored by different CLIPs are not compared.

BLEU-4 and CIDEr-D reward wording; ``object_f1`` and ``coverage`` what is said about the image,
CLIP-S how well the caption fits the image without references. A claim that one model is better
should hold on more than one kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from capt.errors import CaptError
from capt.eval.bootstrap import PairedComparison, paired_statistic
from capt.eval.clipscore import ClipScores, clip_s_statistics, corpus_mean, ref_clip_s_statistics
from capt.eval.per_image import ImageScores, cider_statistics, corpus_bleu4, corpus_cider, read_stage_json
from capt.eval.content import ContentScores, CoverageScores, content_metrics, coverage_metrics

__all__ = ["COMPARED_METRICS", "METRIC_NAMES", "PerImage", "evaluation_statistics", "compare_models"]

# What the study compares, in this order, where an evaluation has it.
COMPARED_METRICS = ("bleu4", "cider", "object_f1", "coverage", "clip_s", "ref_clip_s")
METRIC_NAMES = {"bleu4": "BLEU-4", "cider": "CIDEr-D", "object_f1": "object F1", "coverage": "object coverage",
                "clip_s": "CLIP-S", "ref_clip_s": "RefCLIP-S"}


@dataclass(frozen=True)
class PerImage:
    """One metric of one evaluation, per image: ``statistics`` (N, K), row k that of
    ``image_ids[k]``; ``corpus`` maps (..., K) sums to (...) corpus scores."""

    image_ids: tuple
    statistics: np.ndarray
    corpus: Callable[[np.ndarray], np.ndarray]
    tokens: str | None = None      # what the statistics were computed on, where it matters (tokens, the CLIP)

    @property
    def score(self) -> float:
        return float(self.corpus(self.statistics.sum(axis=0)))


def _content_metric(name: str) -> Callable[[np.ndarray], np.ndarray]:
    return lambda sums: content_metrics(sums)[name]


def evaluation_statistics(scores_path: Path, content_path: Path | None, stage: str) -> dict[str, PerImage]:
    """Metric -> its per-image statistics, for every metric of ``COMPARED_METRICS`` one evaluation
    has: BLEU-4 and CIDEr-D from ``scores_path``, the content metrics from ``content_path`` (where
    given and present in it). ``stage`` names the stage that writes them, for the error line."""
    scores = ImageScores.read(scores_path, stage)
    out = {"bleu4": PerImage(scores.image_ids, scores.bleu, corpus_bleu4, scores.tokenizer),
           "cider": PerImage(scores.image_ids, cider_statistics(scores), corpus_cider, scores.tokenizer)}
    if content_path is None:
        return out
    data = read_stage_json(content_path, stage)
    if "content" in data:
        content = ContentScores.from_json(data["content"], str(content_path))
        out["object_f1"] = PerImage(content.image_ids, content.statistics, _content_metric("object_f1"))
    if "coverage" in data:
        coverage = CoverageScores.from_json(data["coverage"], str(content_path))
        out["coverage"] = PerImage(coverage.image_ids, coverage.statistics,
                                   lambda sums: coverage_metrics(sums)["coverage"])
    if "clipscore" in data:
        clip = ClipScores.from_json(data["clipscore"], str(content_path), stage)
        out["clip_s"] = PerImage(clip.image_ids, clip_s_statistics(clip), corpus_mean, clip.clip_model)
        out["ref_clip_s"] = PerImage(clip.image_ids, ref_clip_s_statistics(clip), corpus_mean, clip.clip_model)
    return out


def compare_models(a: dict[str, PerImage], b: dict[str, PerImage], resamples: int,
                   seed: int) -> dict[str, PairedComparison]:
    """Metric -> a minus b, paired on the same test images (capt.eval.bootstrap.paired_statistic),
    for every metric of ``COMPARED_METRICS`` both evaluations have."""
    out = {}
    for metric in COMPARED_METRICS:
        if metric not in a or metric not in b:
            continue
        if a[metric].tokens != b[metric].tokens:
            raise CaptError(f"the two models' {METRIC_NAMES[metric]} were computed on different tokens or by different "
                            f"models ({a[metric].tokens} and {b[metric].tokens}): evaluate both with the same "
                            "evaluate.tokenizer and evaluate.clip_model")
        out[metric] = paired_statistic(a[metric].image_ids, a[metric].statistics, b[metric].image_ids,
                                       b[metric].statistics, a[metric].corpus, resamples, seed)
    return out
