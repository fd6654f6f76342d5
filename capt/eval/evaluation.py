"""One evaluation of one captioner on one test set: every score of its captions, from the captions.

Whatever wrote the captions (a Show-Attend-Tell model with its maps, BLIP, a baseline, a
replicate student without maps), :func:`evaluate_captions` scores them the same way:

- the caption metrics and the human ceiling (capt.eval.metrics, on ``EvaluateConfig.tokenizer``'s
  tokens) and the per-image statistics behind every interval (capt.eval.per_image);
- 95% percentile bootstrap intervals of BLEU-4 and CIDEr-D over the test images
  (capt.eval.bootstrap: ``bootstrap_resamples`` resamples of ``bootstrap_seed`` and the image ids
  alone, so every model on a test set gets the same ones);
- what the captions look like as a set, against the training captions
  (capt.eval.baselines.caption_diagnostics), where those are given;
- CLIP-S and RefCLIP-S (capt.eval.clipscore), where the caller scored the captions with a CLIP;
- where the test set has instance masks: CHAIR of the captions and the grounding of each
  technique's maps (capt.eval.grounding), object coverage, and on a shapes world the content
  metric against the truth (capt.eval.content), each headline with its interval on the same
  resamples.

It writes nothing: the stage that called it decides where the scores go.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
from annotated_types import Ge

from capt.config import CHECKED, AutoOnOff, Count, Device, Int, NonNegative, NonNegativeInt, OnOff, with_config
from capt.data.manifest import load_manifest
from capt.eval.baselines import caption_diagnostics
from capt.eval.bootstrap import MIN_RESAMPLES, confidence_intervals, resample_counts
from capt.eval.clipscore import PRETRAINED, ClipScores, clipscore_cells
from capt.eval.content import is_shapes_world, score_content, score_coverage
from capt.eval.grounding import CHAIR_KEYS, Instances, dataset_lexicon, load_instances, score_techniques
from capt.eval.metrics import Tokenizer, score_captions_per_image
from capt.eval.per_image import ImageScores
from capt.text import normalize_caption

log = logging.getLogger(__name__)

# The content scores given an interval in the metrics (capt.eval.content has more, in the per-image file).
CONTENT_INTERVALS = {"coverage": ("coverage",),
                     "content": ("object_f1", "shape_f1", "attribute_f1", "relation_accuracy")}
# Per image and word: (the caption's words, (T, P) maps), keyed by image id, for one technique.
WordMaps = dict[int, tuple[list[str], np.ndarray]]


@with_config(CHECKED)
@dataclass(frozen=True)
class EvaluateConfig:
    beam_size: Count = 3
    max_len: Count = 20
    batch_size: Count = 32
    meteor: AutoOnOff = "auto"  # auto (when Java is present) | on | off
    tokenizer: Tokenizer = "simple"   # simple (capt.text.normalize_caption) | ptb (coco-caption's, needs Java)
    gradcam_layer: Int = -1     # BLIP: the cross-attention layer whose maps Grad-CAM weighs
    grounding_tolerance: NonNegative = 15.0   # pointing game: pixels (at the original image size) around the mask
    device: Device = "auto"     # auto (a GPU where there is one) | cpu | cuda
    # Percentile bootstrap over the test images (95% intervals); fewer resamples make the interval's
    # percentiles themselves noisy.
    bootstrap_resamples: Annotated[Int, Ge(MIN_RESAMPLES)] = 1000
    bootstrap_seed: NonNegativeInt = 0  # with the test set's image ids, all the resamples depend on
    faithfulness_images: NonNegativeInt = 0  # a Show-Attend-Tell model's maps explained on this many test images:
                                      # deletion / insertion curves and the sanity check (capt.eval.faithfulness); 0: not at all
    faithfulness_steps: Count = 8     # points of each curve after the first: steps + 1 fractions of cells removed
    clipscore: OnOff = "off"          # on: CLIP-S and RefCLIP-S of every caption (capt.eval.clipscore) | off
    clip_model: str = PRETRAINED      # the CLIP that scores them: a Hugging Face repo id in the local cache, or a folder

    @property
    def meteor_wanted(self) -> bool | None:
        """capt.eval.metrics' ``meteor``: None (where Java is), True (required) or False."""
        return {"auto": None, "on": True, "off": False}[self.meteor]


@dataclass(frozen=True)
class Evaluation:
    """``scores``: what ``metrics/eval/<model>-<dataset>.json`` holds; ``per_image``: the BLEU
    statistics and CIDEr-D behind its intervals; ``content``: the per-image content counts
    (``{"coverage": CoverageScores, "content": ContentScores}``, what the test set allows);
    ``clip``: the per-image CLIP scores, where they were computed."""

    scores: dict
    per_image: ImageScores
    content: dict
    clip: ClipScores | None = None


def test_instances(raw_dir: Path, image_ids) -> Instances | None:
    """The instances of a test set's images (its downloaded folder ``raw_dir``), None where it has
    none. Only the scored images': COCO's train file holds none of Karpathy's test images."""
    manifest = load_manifest(raw_dir)
    if not manifest.instances:
        log.info("%s has no instance masks: no grounding, CHAIR or content scores", raw_dir)
        return None
    return load_instances(manifest, image_ids=set(image_ids))


def caption_content(hypotheses: dict[int, str], instances: Instances | None) -> dict:
    """The captions' per-image content statistics (capt.eval.content): object coverage on every
    dataset with instances, objects, attributes and relations on a shapes world;
    ``{"coverage": CoverageScores, "content": ContentScores}``, what there is of them."""
    if instances is None:
        return {}
    per_image = {"coverage": score_coverage(hypotheses, instances)}
    if is_shapes_world(instances):
        per_image["content"] = score_content(hypotheses, instances)
    return per_image


def ground_captions(instances: Instances | None, hypotheses: dict[int, str], maps: dict[str, WordMaps],
                    tolerance: float, references: dict[int, list[str]] | None = None) -> dict:
    """CHAIR of the captions and the grounding of each technique's maps, where the dataset has
    instance masks (a model without maps, a baseline: CHAIR alone). ``references`` (image id -> raw
    reference captions): the objects they name count as present for CHAIR, as in Rohrbach et al.'s
    code (the ``_instances`` variants ignore them)."""
    if instances is None:
        return {}
    lexicon = dataset_lexicon(instances.categories)
    out: dict = {"grounding": {}}
    reference_words = {i: [normalize_caption(c) for c in refs] for i, refs in (references or {}).items()}
    captions_only = {None: {i: (normalize_caption(h), None) for i, h in hypotheses.items()}}   # CHAIR alone
    for technique, s in score_techniques(maps or captions_only, instances, lexicon, tolerance,
                                         reference_words).items():
        out.update({k: s.pop(k) for k in CHAIR_KEYS})   # the same captions for every technique
        if technique is None:
            del out["grounding"]
            break
        out["grounding"][technique] = s
        log.info("%s grounding (%d words): pointing game %.3f (centre %.3f, uniform %.3f), "
                 "mass in mask %.3f (centre %.3f, uniform %.3f)", technique, s["grounded_words"],
                 s["pointing_game"], s["pointing_game_centre"], s["pointing_game_uniform"], s["mass_in_mask"],
                 s["mass_in_mask_centre"], s["mass_in_mask_uniform"])
    log.info("CHAIR-i %.3f, CHAIR-s %.3f (instances alone: %.3f, %.3f; %d object mentions)", out["chair_i"],
             out["chair_s"], out["chair_i_instances"], out["chair_s_instances"], out["object_mentions"])
    return out


def content_cells(per_image: dict, resamples: int, seed: int) -> dict:
    """The content scores of the captions (capt.eval.content) with a 95% percentile bootstrap
    interval, on the same resamples as BLEU's, for each of ``CONTENT_INTERVALS`` (None where
    undefined: no relation stated)."""
    cells = {}
    for kind, scores in per_image.items():
        cells.update(scores.summary())
        resampled = scores.resampled(resample_counts(scores.image_ids, resamples, seed))
        for name in CONTENT_INTERVALS[kind]:
            if cells[name] is None:
                cells[f"{name}_ci95"] = None
                continue
            low, high = np.nanpercentile(resampled[name], (2.5, 97.5))
            cells[f"{name}_ci95"] = [float(low), float(high)]
    return cells


def evaluate_captions(hypotheses: dict[int, str], references: dict[int, list[str]], cfg: EvaluateConfig, *,
                      instances: Instances | None, maps: dict[str, WordMaps] | None = None,
                      training: list[str] | None = None, image_size: int | None = None,
                      clip: ClipScores | None = None) -> Evaluation:
    """Every score of one caption per test image (``hypotheses``, image id -> caption) against the
    test set's raw ``references``: see the module docstring. ``instances``: the test set's
    (:func:`test_instances`, None without masks); ``maps``: technique -> its word maps (none for
    a baseline or a replicate: CHAIR alone); ``training``: the training captions the diagnostics
    compare with; ``image_size``: what the model saw, recorded as is; ``clip``: the captions' CLIP
    scores (capt.eval.clipscore.score_clip), given an interval on the same resamples."""
    scores, per_image = score_captions_per_image(references, hypotheses, tokenizer=cfg.tokenizer, human_ceiling=True,
                                                 meteor=cfg.meteor_wanted)
    scores["images"] = len(hypotheses)
    if image_size is not None:
        scores["image_size"] = image_size
    if training is not None:
        scores.update(caption_diagnostics(hypotheses, training))
    scores.update(confidence_intervals(per_image, cfg.bootstrap_resamples, cfg.bootstrap_seed))
    scores.update(ground_captions(instances, hypotheses, maps or {}, cfg.grounding_tolerance, references))
    content = caption_content(hypotheses, instances)
    scores.update(content_cells(content, cfg.bootstrap_resamples, cfg.bootstrap_seed))
    if clip is not None:
        scores.update(clipscore_cells(clip, cfg.bootstrap_resamples, cfg.bootstrap_seed), clip_model=clip.clip_model)
    return Evaluation(scores, per_image, content, clip)
