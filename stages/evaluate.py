"""Stage evaluate@<model>: beam search on each test split, every metric.

``python -m stages.evaluate <model> <dataset>...`` evaluates on each dataset in turn, in one process
(dvc.yaml: both of ``study.test_sets``). The same command scores BLIP (``evaluate_blip``), and stage
baselines calls ``evaluate_on`` for the two baselines every model must beat (``constant`` and
``nearest``, whose captions it wrote to ``results/baselines/``; they have no maps, so no grounding,
but CHAIR and everything else).

Params: ``evaluate`` (beam_size, max_len, batch_size, meteor, tokenizer, gradcam_layer,
bootstrap_resamples, bootstrap_seed). Reads
``models/<model>.pt`` (a Show-Attend-Tell captioner: beam search, attention maps) or the folder
``models/<model>/`` (BLIP: its own caption settings, Grad-CAM maps), and
``data/prepared/<dataset>/test.h5``; writes ``metrics/eval/<model>-<dataset>.json`` (BLEU-1..4 as
nltk's corpus BLEU, ``bleu1_coco``..``bleu4_coco`` as coco-caption's, CIDEr-D, ROUGE-L, METEOR
where Java is, all on the tokens of ``evaluate.tokenizer``: ``simple``, the project's normaliser,
or ``ptb``, coco-caption's PTBTokenizer as published COCO results use; and the human ceiling on
leave-one-out folds: ``ceiling_bleu4`` for the humans, ``bleu4_loo`` for the model on the same
folds, ``ceiling_folds`` their count; capt.eval.metrics), the captions in COCO results format,
``results/captions/<model>-<dataset>.json``, and every word's maps on every test image,
``results/maps/<technique>/<model>-<dataset>.h5`` (capt.eval.maps: what the figures read; its
TECHNIQUES says what each is): soft ``attention`` and ``gradcam_encoder`` (Grad-CAM on the
encoder's last block) for the LSTM models, ``gradcam_crossattn`` (Grad-CAM on a cross-attention
layer) for BLIP. Where the dataset has instance masks (``data/raw/<dataset>``), the metrics also hold the
grounding of those maps (pointing game and mass in mask, with the centre and uniform baselines, under
``grounding.<technique>``) and the captions' hallucination rates ``chair_i`` / ``chair_s``
(capt.eval.grounding).

Every evaluation carries 95% percentile bootstrap intervals over the test images,
``bleu4_ci95`` and ``cider_ci95`` (``[low, high]``; ``evaluate.bootstrap_resamples`` resamples
drawn from ``evaluate.bootstrap_seed`` and the test set's image ids alone, so every model on a test
set gets the same resamples; capt.eval.bootstrap), and writes the per-image statistics behind them,
``results/scores/<model>-<dataset>.json`` (the image ids in order, each image's BLEU statistics and
CIDEr-D), from which the report pairs models on the same resamples without scoring again.

What the captions say (capt.eval.content), where the dataset has instances: ``coverage`` (the
share of each image's annotated categories the caption names) and, on a shapes world, the
content metric against the truth: ``object_f1`` (objects stated with their shape and every colour
or size named, matched to true objects), ``shape_f1``, ``attribute_f1``, ``relation_accuracy``
(None when no relation is stated), their precisions, recalls and count totals, each headline
with its ``_ci95`` on the same resamples; the per-image counts go to
``results/content/<model>-<dataset>.json`` for the report's paired comparisons. And what the
captions look like as a set (capt.eval.baselines.caption_diagnostics, against the training
captions of ``teacher.dataset``): ``distinct_captions``, ``distinct_share``, ``vocabulary_used``,
``novel_share`` (not a training caption verbatim).
"""

from __future__ import annotations

import json
import math
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import typer
from torch.utils.data import DataLoader
from tqdm import tqdm

from capt.data.cache import BLIP_TEST_FILE, read_references
from capt.data.dataset import CaptionDataset
from capt.data.manifest import load_manifest
from capt.errors import CaptError
from capt.eval.baselines import BASELINE_MODELS, caption_diagnostics
from capt.eval.bootstrap import MIN_RESAMPLES, confidence_intervals, resample_counts
from capt.eval.content import is_shapes_world, score_content, score_coverage
from capt.eval.grounding import CHAIR_KEYS, Instances, dataset_lexicon, load_instances, score_techniques
from capt.eval.maps import write_word_maps
from capt.eval.metrics import TOKENIZERS, ptb_tokenizer_available, score_captions_per_image, write_coco_results
from capt.models.gradcam import lstm_word_gradcam
from capt.text import normalize_caption
from capt.models.saved import load_captioner
from capt.train.distributed import resolve_device
from stages._common import make_config, read_params, stage_main, write_json

log = logging.getLogger("stages.evaluate")
# The content scores given an interval in the metrics (capt.eval.content has more, in the per-image file).
CONTENT_INTERVALS = {"coverage": ("coverage",),
                     "content": ("object_f1", "shape_f1", "attribute_f1", "relation_accuracy")}


@dataclass(frozen=True)
class EvaluateConfig:
    beam_size: int = 3
    max_len: int = 20
    batch_size: int = 32
    meteor: str = "auto"        # auto (when Java is present) | on | off
    tokenizer: str = "simple"   # simple (capt.text.normalize_caption) | ptb (coco-caption's, needs Java)
    gradcam_layer: int = -1     # BLIP: the cross-attention layer whose maps Grad-CAM weighs
    grounding_tolerance: float = 15.0   # pointing game: pixels (at the original image size) around the mask
    device: str = "auto"        # auto (a GPU where there is one) | cpu | cuda
    bootstrap_resamples: int = 1000   # percentile bootstrap over the test images (95% intervals)
    bootstrap_seed: int = 0           # with the test set's image ids, all the resamples depend on

    def __post_init__(self):
        # YAML 1.1 readers (PyYAML) read a bare on/off as a boolean; a YAML 1.2 writer (DVC's
        # `exp run -S`) leaves them bare. Both spellings mean the same here.
        if isinstance(self.meteor, bool):
            object.__setattr__(self, "meteor", "on" if self.meteor else "off")
        if self.meteor not in ("auto", "on", "off"):
            raise CaptError(f"evaluate.meteor must be auto, on or off, got {self.meteor!r}")
        if self.tokenizer not in TOKENIZERS:
            raise CaptError(f"evaluate.tokenizer must be {' or '.join(TOKENIZERS)}, got {self.tokenizer!r}")
        if (isinstance(self.bootstrap_resamples, bool) or not isinstance(self.bootstrap_resamples, int)
                or self.bootstrap_resamples < MIN_RESAMPLES):
            raise CaptError(f"evaluate.bootstrap_resamples must be an integer of at least {MIN_RESAMPLES} (fewer makes "
                            f"the interval's percentiles noisy), got {self.bootstrap_resamples!r}")
        if isinstance(self.bootstrap_seed, bool) or not isinstance(self.bootstrap_seed, int) or self.bootstrap_seed < 0:
            raise CaptError(f"evaluate.bootstrap_seed must be a non-negative integer, got {self.bootstrap_seed!r}")


def _lstm(model: str, test_set: CaptionDataset, cfg: EvaluateConfig):
    """Hypotheses and per-word maps of a Show-Attend-Tell captioner (models/<model>.pt): its soft
    attention, and Grad-CAM on its encoder's last block for each word's logit."""
    captioner = load_captioner(Path("models") / f"{model}.pt").to(resolve_device(cfg.device))
    vocab = captioner.vocab
    hypotheses, maps = {}, {"attention": {}, "gradcam_encoder": {}}
    for batch in tqdm(DataLoader(test_set, batch_size=cfg.batch_size), desc=f"{model}: caption + Grad-CAM",
                      unit="batch"):
        decoded = captioner.caption(batch["image"], beam_size=cfg.beam_size, max_len=cfg.max_len)
        cams = lstm_word_gradcam(captioner.encoder, captioner.decoder, batch["image"],
                                 [d.tokens for d in decoded], vocab.start, vocab.end)
        for image_id, d, cam in zip(batch["image_id"].tolist(), decoded, cams):
            words = [vocab.words[t] for t in d.tokens]
            hypotheses[image_id] = captioner.words(d)
            maps["attention"][image_id] = (words, d.alphas.numpy())
            maps["gradcam_encoder"][image_id] = (words, cam.reshape(len(words), math.prod(cam.shape[1:])))   # 0 words: (0, P)
    return hypotheses, maps


def _blip(folder: Path, test_set: CaptionDataset, cfg: EvaluateConfig):
    """Captions (with the settings saved in the folder) and per-word Grad-CAM of a BLIP folder, on
    ``test_set`` (``test_blip.h5``: the test images at BLIP's input size, which it must be)."""
    from capt.blip.model import caption_dataset, input_size, load_blip, read_generation   # transformers: ~3 s

    model, processor = load_blip(folder)
    if test_set.image_size != (size := input_size(processor)):
        raise CaptError(f"{test_set.path}: {test_set.image_size} px images, and BLIP ({folder}) takes {size} px; "
                        f"set prepare.blip_image_size: {size} and rerun prepare")
    model.to(resolve_device(cfg.device))
    out = caption_dataset(model, processor, test_set, read_generation(folder), batch_size=cfg.batch_size,
                          gradcam_layer=cfg.gradcam_layer)
    maps = {i: (tokens, m.reshape(len(tokens), math.prod(m.shape[1:]))) for i, (_, tokens, m) in out.items()}
    return {i: caption for i, (caption, _, _) in out.items()}, {"gradcam_crossattn": maps}


def _baseline(model: str, dataset: str):
    """A baseline's captions (stage baselines) and no maps: it attends to nothing."""
    path = Path("results/baselines") / f"{model}-{dataset}.json"
    try:
        rows = json.loads(path.read_text())
        return {int(r["image_id"]): r["caption"] for r in rows}, {}
    except FileNotFoundError:
        raise CaptError(f"{path}: missing; run stage baselines") from None
    except (json.JSONDecodeError, TypeError, KeyError, ValueError) as e:
        raise CaptError(f"{path}: not COCO results ({e}); run stage baselines again") from None


def test_instances(dataset: str, image_ids) -> Instances | None:
    """The instances of a test set's images (data/raw/<dataset>), None where it has none. Only the
    scored images': COCO's train file holds none of Karpathy's test images."""
    manifest = load_manifest(Path("data/raw") / dataset)
    if not manifest.instances:
        log.info("%s has no instance masks: no grounding, CHAIR or content scores", dataset)
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


def _grounding(instances: Instances | None, hypotheses: dict[int, str], maps: dict[str, dict], cfg: EvaluateConfig,
               references: dict[int, list[str]] | None = None) -> dict:
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
    for technique, s in score_techniques(maps or captions_only, instances, lexicon, cfg.grounding_tolerance,
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


def content_cells(per_image: dict, cfg: EvaluateConfig) -> dict:
    """The content scores of the captions (capt.eval.content) with a 95% percentile bootstrap
    interval, on the same resamples as BLEU's, for each of ``CONTENT_INTERVALS`` (None where
    undefined: no relation stated)."""
    cells = {}
    for kind, scores in per_image.items():
        cells.update(scores.summary())
        resampled = scores.resampled(resample_counts(scores.image_ids, cfg.bootstrap_resamples, cfg.bootstrap_seed))
        for name in CONTENT_INTERVALS[kind]:
            if cells[name] is None:
                cells[f"{name}_ci95"] = None
                continue
            low, high = np.nanpercentile(resampled[name], (2.5, 97.5))
            cells[f"{name}_ci95"] = [float(low), float(high)]
    return cells


@stage_main
def main(model: str, datasets: list[str]) -> None:
    cfg = make_config(EvaluateConfig, read_params("evaluate"), "evaluate")
    if cfg.tokenizer == "ptb" and (why_not := ptb_tokenizer_available()) is not None:   # before any captioning
        raise CaptError(f"evaluate.tokenizer is ptb (coco-caption's PTBTokenizer), which cannot run: {why_not}")
    if len(set(datasets)) != len(datasets):
        raise CaptError(f"evaluate {model}: a test set named twice in {' '.join(datasets)}")
    training = training_captions()
    for dataset in datasets:
        evaluate_on(model, dataset, cfg, training)


def training_captions() -> list[str]:
    """Every reference caption of the training split (teacher.dataset's): what the diagnostics
    call a caption seen in training."""
    train_h5 = Path("data/prepared") / read_params("teacher", "dataset") / "train.h5"
    return [c for refs in read_references(train_h5).values() for c in refs]


def evaluate_on(model: str, dataset: str, cfg: EvaluateConfig, training: list[str]) -> None:
    """Caption ``dataset``'s test split with ``model`` and write every score, caption and map of
    it; ``training``: the training captions (``training_captions``) its diagnostics compare with."""
    test_h5 = Path("data/prepared") / dataset / "test.h5"
    folder = Path("models") / model
    images: CaptionDataset | None = None    # what the model sees; a baseline sees no image
    if model in BASELINE_MODELS:
        hypotheses, maps = _baseline(model, dataset)
    elif folder.is_dir():
        images = CaptionDataset(test_h5.with_name(BLIP_TEST_FILE))
        hypotheses, maps = _blip(folder, images, cfg)
    else:
        images = CaptionDataset(test_h5)
        hypotheses, maps = _lstm(model, images, cfg)
    references = read_references(test_h5)
    scores, per_image = score_captions_per_image(references, hypotheses, tokenizer=cfg.tokenizer, human_ceiling=True,
                                                 meteor={"auto": None, "on": True, "off": False}[cfg.meteor])
    scores["images"] = len(hypotheses)
    if images is not None:                  # BLIP: its own input size (test_blip.h5); the others test.h5's
        scores["image_size"] = images.image_size
    scores.update(caption_diagnostics(hypotheses, training))
    scores.update(confidence_intervals(per_image, cfg.bootstrap_resamples, cfg.bootstrap_seed))
    instances = test_instances(dataset, hypotheses)
    scores.update(_grounding(instances, hypotheses, maps, cfg, references))
    content = caption_content(hypotheses, instances)
    scores.update(content_cells(content, cfg))
    write_json(Path("metrics/eval") / f"{model}-{dataset}.json", scores)
    if model not in BASELINE_MODELS:      # a baseline's captions are stage baselines' (results/baselines)
        write_coco_results(hypotheses, Path("results/captions") / f"{model}-{dataset}.json")
    per_image.write(Path("results/scores") / f"{model}-{dataset}.json", model, dataset)
    write_json(Path("results/content") / f"{model}-{dataset}.json",
               {"model": model, "dataset": dataset, **{kind: c.to_json() for kind, c in content.items()}})
    for technique, technique_maps in maps.items():
        write_word_maps(Path("results/maps") / technique / f"{model}-{dataset}.h5", technique_maps, technique)
    log.info("%s on %s: %s", model, dataset,
             ", ".join(f"{k} {v:.4f}" for k, v in scores.items() if isinstance(v, (int, float))))
    log.info("95%% intervals over %d resamples of the test images: BLEU-4 [%.4f, %.4f], CIDEr-D [%.4f, %.4f]",
             cfg.bootstrap_resamples, *scores["bleu4_ci95"], *scores["cider_ci95"])
    log.info("%d distinct captions for %d images (%d words; %.1f%% not a training caption verbatim)%s",
             scores["distinct_captions"], scores["images"], scores["vocabulary_used"], 100 * scores["novel_share"],
             "".join(f", {k} {scores[k]:.3f}" for k in ("object_f1", "attribute_f1", "relation_accuracy", "coverage")
                     if scores.get(k) is not None))


if __name__ == "__main__":
    typer.run(main)
