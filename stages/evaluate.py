"""Stage evaluate@<model>: beam search on each test split, every metric.

``python -m stages.evaluate <model> <dataset>...`` evaluates on each dataset in turn, in one process
(dvc.yaml: both of ``study.test_sets``); ``--seed S`` evaluates the replicate student
``models/replicates/<model>-s<S>.pt`` instead (stage evaluate_replicate@<model>-<S>). The same
command scores BLIP (``evaluate_blip``), and stage baselines calls ``evaluate_on`` for the two baselines every model must beat (``constant`` and
``nearest``, whose captions it wrote to ``results/baselines/``; they have no maps, so no grounding,
but CHAIR and everything else).

Params: ``evaluate`` (beam_size, max_len, batch_size, meteor, tokenizer, gradcam_layer,
bootstrap_resamples, bootstrap_seed, faithfulness_images, faithfulness_steps, clipscore,
clip_model). Reads
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

On the first ``evaluate.faithfulness_images`` test images a model's maps also say whether they
explain it (capt.eval.faithfulness; BLIP's through capt.blip.faithfulness): ``faithfulness.<technique>``
(deletion and insertion AUCs against random and centre rankings, ``evaluate.faithfulness_steps``
steps, with intervals and mean curves) and ``sanity_check.<technique>`` (the maps' rank correlation
after randomising the decoder and the image encoder's last block). With ``evaluate.clipscore: on``, every
caption (the baselines' too) is scored by ``evaluate.clip_model``'s CLIP on ``test_blip.h5``'s
images: ``clip_s``, ``ref_clip_s`` and their intervals, per image under ``clipscore`` in
``results/content/<model>-<dataset>.json`` (capt.eval.clipscore).

Every evaluation goes through capt.eval.evaluation.evaluate_captions, whatever wrote the captions.
A replicate (``--seed``) answers "how much does another seed change the score?": the same scores
without maps (so no grounding, but CHAIR), in ``metrics/replicates/<model>-s<seed>-<dataset>.json``,
``results/scores/replicates/`` and ``results/content/replicates/``, and no captions file.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from pathlib import Path
from typing import Optional

import typer
from torch.utils.data import DataLoader

from capt.data.cache import BLIP_TEST_FILE, read_references
from capt.data.dataset import CaptionDataset
from capt.errors import CaptError
from capt.eval.baselines import BASELINE_MODELS
from capt.eval.evaluation import EvaluateConfig, Evaluation, evaluate_captions, test_instances
from capt.eval.faithfulness import explain_maps
from capt.eval.maps import write_word_maps
from capt.eval.metrics import ptb_tokenizer_available, write_coco_results
from capt.models.saved import load_captioner
from capt.train.distributed import resolve_device
from stages._common import read_config, stage_main, write_json

log = logging.getLogger("stages.evaluate")


def _lstm(path: Path, name: str, test_set: CaptionDataset, cfg: EvaluateConfig, maps: bool = True):
    """Hypotheses, (with ``maps``) per-word maps of a Show-Attend-Tell captioner file (its soft
    attention, and Grad-CAM on its encoder's last block for each word's logit) and what explains
    them (the faithfulness of each technique and its sanity check, on ``evaluate.faithfulness_images``
    test images; none without maps)."""
    captioner = load_captioner(path).to(resolve_device(cfg.device))
    hypotheses, word_maps = captioner.caption_dataset(test_set, beam_size=cfg.beam_size, max_len=cfg.max_len,
                                                      batch_size=cfg.batch_size, maps=maps,
                                                      desc=f"{name}: caption" + (" + Grad-CAM" if maps else ""))
    explained = {}
    if maps and cfg.faithfulness_images:
        explained = explain_maps(captioner, test_set.path, word_maps, max_images=cfg.faithfulness_images,
                                 steps=cfg.faithfulness_steps, resamples=cfg.bootstrap_resamples,
                                 seed=cfg.bootstrap_seed)
        _log_explained(explained)
    return hypotheses, word_maps, explained


def _log_explained(explained: dict) -> None:
    for technique, f in explained["faithfulness"].items():
        spearman = explained.get("sanity_check", {}).get(technique, {}).get("spearman_decoder")
        log.info("%s faithfulness on %d words of %d images: deletion AUC %.3f (random %.3f), insertion AUC %.3f "
                 "(random %.3f); maps after randomising the decoder: Spearman %s", technique, f["words"],
                 f["images"], f["deletion_auc"], f["deletion_auc_random"], f["insertion_auc"],
                 f["insertion_auc_random"], "-" if spearman is None else f"{spearman:.2f}")


def _blip(folder: Path, test_set: CaptionDataset, cfg: EvaluateConfig):
    """Captions (with the settings saved in the folder) and per-word Grad-CAM of a BLIP folder, on
    ``test_set`` (``test_blip.h5``: the test images at BLIP's input size, which it must be)."""
    from capt.blip.faithfulness import BlipWords, blip_sanity, blip_word_scorer
    from capt.blip.model import caption_dataset, input_size, load_blip, read_generation   # transformers: ~3 s

    model, processor = load_blip(folder)
    if test_set.image_size != (size := input_size(processor)):
        raise CaptError(f"{test_set.path}: {test_set.image_size} px images, and BLIP ({folder}) takes {size} px; "
                        f"set prepare.blip_image_size: {size} and rerun prepare")
    model.to(resolve_device(cfg.device))
    gen = read_generation(folder)
    out = caption_dataset(model, processor, test_set, gen, batch_size=cfg.batch_size, gradcam_layer=cfg.gradcam_layer)
    maps = {"gradcam_crossattn": {i: (tokens, m.reshape(len(tokens), math.prod(m.shape[1:])))
                                  for i, (_, tokens, m) in out.items()}}
    explained = {}
    if cfg.faithfulness_images:         # the deletion / insertion curves, and the sanity check
        table = sorted({w for words, _ in maps["gradcam_crossattn"].values() for w in words})
        scorer = blip_word_scorer(model, processor, gen.prompt, table)
        explained = explain_maps(scorer, test_set.path, maps, max_images=cfg.faithfulness_images,
                                 steps=cfg.faithfulness_steps, resamples=cfg.bootstrap_resamples,
                                 seed=cfg.bootstrap_seed, word_ids={w: k for k, w in enumerate(table)}.__getitem__,
                                 sanity=blip_sanity(BlipWords(model, processor, gen.prompt, table, cfg.gradcam_layer)))
        _log_explained(explained)
    return {i: caption for i, (caption, _, _) in out.items()}, maps, explained


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


@functools.cache
def _clip(name: str):
    """The CLIP that scores every caption (evaluate.clip_model), loaded once per process."""
    from capt.eval.clipscore import load_clip           # transformers: ~3 s

    return load_clip(name)


def _clip_scores(hypotheses: dict[int, str], references: dict[int, list[str]], dataset: str, cfg: EvaluateConfig):
    """CLIP-S and RefCLIP-S of the captions (evaluate.clipscore: on), on ``test_blip.h5``'s images
    (each original resized once, 384 px in the COCO profile: nearer CLIP's 224 than the models'
    cache), whoever wrote the captions; None when off."""
    if cfg.clipscore == "off":
        return None
    from capt.eval.clipscore import score_clip

    model, processor = _clip(cfg.clip_model)
    images = DataLoader(CaptionDataset(Path("data/prepared") / dataset / BLIP_TEST_FILE), batch_size=cfg.batch_size)
    return score_clip(model, processor, images, hypotheses, references, batch_size=cfg.batch_size,
                      device=resolve_device(cfg.device), clip_model=cfg.clip_model)


@stage_main
def main(model: str, datasets: list[str],
         seed: Optional[int] = typer.Option(None, help="a replicate student's training seed")) -> None:
    cfg = read_config(EvaluateConfig, "evaluate")
    if cfg.tokenizer == "ptb" and (why_not := ptb_tokenizer_available()) is not None:   # before any captioning
        raise CaptError(f"evaluate.tokenizer is ptb (coco-caption's PTBTokenizer), which cannot run: {why_not}")
    if len(set(datasets)) != len(datasets):
        raise CaptError(f"evaluate {model}: a test set named twice in {' '.join(datasets)}")
    if cfg.clipscore == "on":
        _clip(cfg.clip_model)          # before any captioning: the weights are there, or one line says what to fetch
    training = training_captions()
    for dataset in datasets:
        if seed is None:
            evaluate_on(model, dataset, cfg, training)
        else:
            evaluate_replicate_on(model, seed, dataset, cfg, training)


def training_captions() -> list[str]:
    """Every reference caption of the training split (teacher.dataset's): what the diagnostics
    call a caption seen in training."""
    train_h5 = Path("data/prepared") / read_config(str, "teacher", "dataset") / "train.h5"
    return [c for refs in read_references(train_h5).values() for c in refs]


def _score(hypotheses: dict[int, str], maps: dict, images: CaptionDataset | None, dataset: str, cfg: EvaluateConfig,
           training: list[str]) -> Evaluation:
    references = read_references(Path("data/prepared") / dataset / "test.h5")
    return evaluate_captions(hypotheses, references, cfg,
                             instances=test_instances(Path("data/raw") / dataset, hypotheses), maps=maps,
                             training=training, image_size=None if images is None else images.image_size,
                             clip=_clip_scores(hypotheses, references, dataset, cfg))


def _write_scores(evaluation: Evaluation, name: str, dataset: str, subfolder: str) -> None:
    """The metrics (``metrics/eval``, a replicate's ``metrics/replicates``), and the per-image
    statistics the report pairs models on (``results/{scores,content}/<subfolder>``)."""
    metrics = Path("metrics/replicates") if subfolder else Path("metrics/eval")
    write_json(metrics / f"{name}-{dataset}.json", evaluation.scores)
    evaluation.per_image.write(Path("results/scores") / subfolder / f"{name}-{dataset}.json", name, dataset)
    write_json(Path("results/content") / subfolder / f"{name}-{dataset}.json",
               {"model": name, "dataset": dataset, **{kind: c.to_json() for kind, c in evaluation.content.items()},
                **({"clipscore": evaluation.clip.to_json(name, dataset)} if evaluation.clip is not None else {})})


def evaluate_on(model: str, dataset: str, cfg: EvaluateConfig, training: list[str]) -> None:
    """Caption ``dataset``'s test split with ``model`` and write every score, caption and map of
    it; ``training``: the training captions (``training_captions``) its diagnostics compare with."""
    test_h5 = Path("data/prepared") / dataset / "test.h5"
    folder = Path("models") / model
    images: CaptionDataset | None = None    # what the model sees; a baseline sees no image
    explained: dict = {}                    # the maps' faithfulness and sanity check (LSTM models)
    if model in BASELINE_MODELS:
        hypotheses, maps = _baseline(model, dataset)
    elif folder.is_dir():
        images = CaptionDataset(test_h5.with_name(BLIP_TEST_FILE))
        hypotheses, maps, explained = _blip(folder, images, cfg)
    else:
        images = CaptionDataset(test_h5)
        hypotheses, maps, explained = _lstm(folder.with_suffix(".pt"), model, images, cfg)
    evaluation = _score(hypotheses, maps, images, dataset, cfg, training)
    evaluation.scores.update(explained)
    _write_scores(evaluation, model, dataset, "")
    if model not in BASELINE_MODELS:      # a baseline's captions are stage baselines' (results/baselines)
        write_coco_results(hypotheses, Path("results/captions") / f"{model}-{dataset}.json")
    for technique, technique_maps in maps.items():
        write_word_maps(Path("results/maps") / technique / f"{model}-{dataset}.h5", technique_maps, technique)
    scores = evaluation.scores
    log.info("%s on %s: %s", model, dataset,
             ", ".join(f"{k} {v:.4f}" for k, v in scores.items() if isinstance(v, (int, float))))
    log.info("95%% intervals over %d resamples of the test images: BLEU-4 [%.4f, %.4f], CIDEr-D [%.4f, %.4f]",
             cfg.bootstrap_resamples, *scores["bleu4_ci95"], *scores["cider_ci95"])
    log.info("%d distinct captions for %d images (%d words; %.1f%% not a training caption verbatim)%s",
             scores["distinct_captions"], scores["images"], scores["vocabulary_used"], 100 * scores["novel_share"],
             "".join(f", {k} {scores[k]:.3f}" for k in ("object_f1", "attribute_f1", "relation_accuracy", "coverage")
                     if scores.get(k) is not None))


def evaluate_replicate_on(variant: str, seed: int, dataset: str, cfg: EvaluateConfig, training: list[str]) -> None:
    """The replicate student ``<variant>-s<seed>`` (stage replicate) on ``dataset``: the same scores,
    without maps, under ``metrics/replicates`` and ``results/*/replicates``."""
    name = f"{variant}-s{seed}"
    images = CaptionDataset(Path("data/prepared") / dataset / "test.h5")
    hypotheses, maps, _ = _lstm(Path("models/replicates") / f"{name}.pt", name, images, cfg, maps=False)
    evaluation = _score(hypotheses, maps, images, dataset, cfg, training)
    _write_scores(evaluation, name, dataset, "replicates")
    log.info("%s on %s: BLEU-4 %.4f [%.4f, %.4f], CIDEr-D %.4f", name, dataset, evaluation.scores["bleu4"],
             *evaluation.scores["bleu4_ci95"], evaluation.scores["cider"])


if __name__ == "__main__":
    typer.run(main)
