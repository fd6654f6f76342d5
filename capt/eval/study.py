"""The study's comparisons: what metrics/summary.json says of every model, and what Table 1's
rows hold (capt.viz.table1 lays them out).

A row per model: its loss (the variant's, ``distill.<variant>``; BLIP's checkpoint; the
baselines'), its scores on every test set from its evaluations (``metrics/eval/<model>-<dataset>.json``:
BLEU-4 and CIDEr, the share of the human ceiling, ``bleu4_loo / ceiling_bleu4``, the model and the
humans scored on the same leave-one-out folds, capt.eval.metrics; how far above the constant
caption; the content metric, CHAIR and grounding where the evaluations have them) and the epoch
its training chose (``metrics/train/<model>.json``).

Does distillation help? Every student (``study.models`` but the teacher) is compared with the
baseline (``student_base``) and with the teacher on every test set, paired on the same images
(capt.eval.bootstrap, from the per-image statistics ``results/scores/<model>-<dataset>.json`` the
evaluations wrote): ``delta_bleu4_vs_base_<dataset>`` (the student's BLEU-4 minus the baseline's),
``delta_bleu4_vs_base_ci95_<dataset>`` (its paired percentile bootstrap interval, the same
``evaluate.bootstrap_resamples`` resamples of ``evaluate.bootstrap_seed`` as the evaluations'
intervals) and ``p_bleu4_vs_base_<dataset>`` (a paired approximate randomisation test), and the
same ``..._vs_teacher_...``. A student whose variant freezes its encoder (``fine_tune: false``,
the follow-ups of ``conf/followups/seed_study.yaml``) is also paired with its fine-tuned twin,
the student of the same loss (``..._vs_finetuned_...``, and Table 1's fine-tuning x KD section).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from capt.errors import CaptError
from capt.eval.baselines import BASELINE_MODELS
from capt.eval.bootstrap import format_p, paired_bleu4
from capt.eval.compare import COMPARED_METRICS, METRIC_NAMES, PerImage, compare_models, evaluation_statistics
from capt.eval.grounding import CHAIR_KEYS
from capt.eval.per_image import ImageScores
from capt.eval.seeds import compare_over_seeds, mean_sd, paired_bleu4_over_seeds

log = logging.getLogger(__name__)

BLIP_MODEL = "blip"     # the BLIP folder models/blip/, in every study beside study.models


# What each student is compared with (metrics/summary.json): the name in its keys -> the model.
BASELINES = {"base": "student_base", "teacher": "teacher"}
# What every model is compared with: the baselines of stage baselines, by their names.
CAPTION_BASELINES = {b: b for b in BASELINE_MODELS}
# Table 1's rows for the baselines: what each is.
BASELINE_LOSS = {"constant": "baseline: one training caption for every image (best val CIDEr-D)",
                 "nearest": "baseline: the caption of the nearest training image (1-NN, teacher's trunk)"}


def evaluation_stage(model: str, dataset: str) -> str:
    """The stage whose outputs hold a model's evaluation on a test set, for error lines."""
    if model == BLIP_MODEL:
        return "evaluate_blip"
    if model in BASELINE_MODELS:
        return "baselines"
    return f"evaluate@{model}"


# What each row keeps of an evaluation's metrics, per test set (metrics/summary.json): nltk and
# coco-caption BLEU-4, CIDEr, and the leave-one-out pair behind the share of the ceiling.
SCORE_KEYS = ("bleu4", "bleu4_coco", "cider", "bleu4_loo", "ceiling_bleu4", "ceiling_folds")
# ... and, where the evaluation has them: the content metric (capt.eval.content; object F1 and its
# interval on a shapes world, coverage wherever there are instances) and what the captions look
# like as a set (capt.eval.baselines.caption_diagnostics).
CONTENT_KEYS = ("object_f1", "object_f1_ci95", "attribute_f1", "relation_accuracy", "coverage", "coverage_ci95",
                "distinct_captions", "vocabulary_used", "novel_share", "clip_s", "clip_s_ci95", "ref_clip_s",
                "ref_clip_s_ci95")


def score_cells(scores: dict, dataset: str, where: str) -> dict:
    """A Table 1 row's cells for one test set, from its evaluation's metrics: ``SCORE_KEYS`` and
    ``ceiling_share``, ``bleu4_loo / ceiling_bleu4``. Both on the same leave-one-out folds: the
    model's ``bleu4`` (all n references) over the ceiling (n-1) would overstate the gap to humans."""
    missing = [k for k in SCORE_KEYS if k not in scores]
    if missing:
        raise CaptError(f"{where}: no {', '.join(missing)} in its metrics (an older evaluation); run it again")
    cells = {f"{k}_{dataset}": scores[k] for k in SCORE_KEYS}
    cells[f"ceiling_share_{dataset}"] = scores["bleu4_loo"] / scores["ceiling_bleu4"] if scores["ceiling_bleu4"] else None
    cells.update({f"{k}_{dataset}": scores[k] for k in CONTENT_KEYS if k in scores})
    return cells


def evaluation_cells(model: str, test_sets: list[str], evaluations: dict,
                     eval_dir: Path = Path("metrics/eval")) -> dict:
    """A Table 1 row's cells from a model's evaluations on every test set (:func:`score_cells`;
    ``eval_dir/<model>-<dataset>.json``), with ``chair`` (CHAIR and coverage per test set) and
    ``grounding`` (per test set and technique) where the evaluations have them; each evaluation's
    metrics go to ``evaluations[(model, dataset)]``; and ``explained`` (per test set and technique: the
    maps' faithfulness with their sanity check, :func:`explained_cells`) where the evaluation has it."""
    cells, chair, grounding, explained = {}, {}, {}, {}
    for dataset in test_sets:
        scores_path = eval_dir / f"{model}-{dataset}.json"
        try:
            scores = json.loads(scores_path.read_text())
        except FileNotFoundError:
            raise CaptError(f"{scores_path}: missing; run {evaluation_stage(model, dataset)}") from None
        cells.update(score_cells(scores, dataset, f"{scores_path} ({evaluation_stage(model, dataset)})"))
        evaluations[(model, dataset)] = scores
        if "chair_i" in scores:
            chair[dataset] = {k: scores.get(k) for k in (*CHAIR_KEYS, "coverage")}
        if "grounding" in scores:
            grounding[dataset] = scores["grounding"]
        if "faithfulness" in scores:
            explained[dataset] = explained_cells(scores["faithfulness"], scores.get("sanity_check", {}))
    return {**cells, **({"chair": chair} if chair else {}), **({"grounding": grounding} if grounding else {}),
            **({"explained": explained} if explained else {})}


def explained_cells(faithfulness: dict, sanity: dict) -> dict:
    """Technique -> the numbers of its maps' faithfulness (capt.eval.faithfulness: the deletion and
    insertion AUCs with their intervals, the random and centre rankings', the paired difference to
    random) and sanity check (the maps' rank correlation after randomising the decoder and the
    encoder's last block); the mean curves stay in metrics/eval."""
    keep = lambda k: not k.endswith(("_curve", "_curve_random", "_curve_centre")) and k != "fractions"  # noqa: E731
    return {t: {**{k: v for k, v in f.items() if keep(k)},
                **{k: v for k, v in sanity.get(t, {}).items() if k.startswith("spearman_")}}
            for t, f in faithfulness.items()}


def above_constant_cells(row: dict, constant: dict, test_sets: list[str]) -> dict:
    """``above_constant_<dataset>``: how much of the way from the constant caption to the humans a
    model goes, ``(bleu4_loo - constant's) / (ceiling_bleu4 - constant's)``, all on the same
    leave-one-out folds: 0 is the constant caption, 1 the humans, below 0 worse than one caption
    for every image. The share of the ceiling alone flatters template-writers: on shapes one fixed
    sentence reaches half of it."""
    out = {}
    for d in test_sets:
        floor, ceiling = constant[f"bleu4_loo_{d}"], constant[f"ceiling_bleu4_{d}"]
        out[f"above_constant_{d}"] = ((row[f"bleu4_loo_{d}"] - floor) / (ceiling - floor)
                                      if ceiling is not None and floor is not None and ceiling > floor else None)
    return out


def epochs_cell(model: str, train_dir: Path = Path("metrics/train")) -> str:
    """Table 1's "epoch chosen" cell: ``<best> of <run> (<metric>)`` from ``train_dir/<model>.json``;
    ``0 epochs`` for a model that was not trained here (zero-shot BLIP)."""
    path = train_dir / f"{model}.json"
    try:
        t = json.loads(path.read_text())
    except FileNotFoundError:
        raise CaptError(f"{path}: missing; run the stage that trains {model}") from None
    if not t.get("epochs_run"):
        return "0 epochs"
    return f"{t['best_epoch']} of {t['epochs_run']} ({t.get('selected_on', 'bleu4')})"


def loss_cell(variant: dict | None) -> str:
    """Table 1's loss cell of a Show-Attend-Tell model: its variant's loss (``distill.<variant>``),
    ``task`` for a model without one (the teacher)."""
    if variant is None:
        return "task"
    if variant.get("targets") == "teacher":
        return "task on teacher captions (seq-KD)"
    beta = variant.get("beta", 0.0)
    if beta == 0:
        return "task"
    terms = [t for t, w in (("enc", variant.get("w_enc", 0)), ("dec", variant.get("w_dec", 0))) if w]
    temp = f", T={variant['temperature']:g}" if "dec" in terms else ""
    projected = " through a 1x1 projection" if "enc" in terms and variant.get("projection") == "always" else ""
    return f"task + KD {'+'.join(terms)} (beta={beta:g}{temp}){projected}"


# What each pretrained BLIP checkpoint is (its model card): Table 1 says so beside its scores.
BLIP_CHECKPOINTS = {
    "Salesforce/blip-image-captioning-base": "the COCO-finetuned captioning checkpoint",   # capt.blip.model.PRETRAINED
    "Salesforce/blip-image-captioning-large": "the COCO-finetuned captioning checkpoint",
}


def blip_loss(source: str, pretrained: str, trained: bool) -> str:
    """Table 1's loss cell of BLIP: what it was trained on, here and before (blip.source: small is
    built and trained here; pretrained starts from ``pretrained``, tuned here only if ``trained``)."""
    if source != "pretrained":
        return "LM (trained here)" if trained else "LM (untrained)"
    what = f"{pretrained}, {BLIP_CHECKPOINTS.get(pretrained, 'a pretrained checkpoint')}"
    return f"LM, {what}, fine-tuned further here" if trained else f"zero-shot: {what}, used without further tuning"


# The scores report.published may name, as metrics/eval has them: nltk BLEU-4 (as sgrvinod's tutorial
# reports it) or coco-caption's (as papers do), CIDEr-D, METEOR, ROUGE-L.
PUBLISHED_METRICS = ("bleu4", "bleu4_coco", "cider", "meteor", "rouge_l")


def published_rows(published: list[dict], models: dict) -> list[dict]:
    """One row per published score of a model the study has: the source's value and ours on the
    same test set (None where our evaluation lacks that metric: METEOR without Java)."""
    rows = []
    for entry in published:
        if entry["model"] not in models:
            continue
        for metric, value in entry["scores"].items():
            rows.append({"model": entry["model"], "dataset": entry["dataset"], "metric": metric,
                         "published": value, "ours": models[entry["model"]].get(f"{metric}_{entry['dataset']}"),
                         "source": entry["source"]})
    return rows


def finetuning_twins(variants: dict, models: list[str], fine_tune: bool = True) -> dict[str, str]:
    """Each student of ``models`` whose encoder is frozen (its variant's ``fine_tune``, else
    ``students.encoder.fine_tune``: ``fine_tune``) -> the first student of ``models`` with the same
    loss and a fine-tuned encoder: the two cells of one row of the seed study's fine-tuning x KD
    comparison. A frozen student without such a twin is left out, with a log line."""
    def tuned(m: str) -> bool:
        value = variants[m].get("fine_tune")
        return fine_tune if value is None else value

    def loss(m: str) -> dict:
        return {k: x for k, x in variants[m].items() if k != "fine_tune"}

    students = [m for m in models if m in variants]
    twins = {}
    for m in (m for m in students if not tuned(m)):
        twin = next((t for t in students if tuned(t) and loss(t) == loss(m)), None)
        if twin is None:
            log.info("%s: no student in study.models has its loss with a fine-tuned encoder: no twin", m)
        else:
            twins[m] = twin
    return twins


def paired_cells(subjects: list[str], references: dict[str, str], test_sets: list[str], resamples: int, seed: int,
                 scores_dir: Path = Path("results/scores"), content_dir: Path | None = None) -> dict[str, dict]:
    """Model -> its paired comparisons with each of ``references`` (name in the keys -> model) on each
    test set, by every metric both evaluations have (capt.eval.compare: BLEU-4, CIDEr-D and, with
    ``content_dir``, the content metric): ``delta_<metric>_vs_<name>_<dataset>`` (observed, the
    subject minus the reference), ``delta_<metric>_vs_<name>_ci95_<dataset>`` (``[low, high]``, the
    paired percentile bootstrap over the test images) and ``p_<metric>_vs_<name>_<dataset>`` (paired
    approximate randomisation), from the per-image statistics in ``scores_dir`` and ``content_dir``.
    A model compared with itself reads 0, [0, 0], p 1, so every subject has the same keys."""
    cells: dict[str, dict] = {m: {} for m in subjects}
    for dataset in test_sets:
        loaded = {m: evaluation_statistics(scores_dir / f"{m}-{dataset}.json",
                                           content_dir / f"{m}-{dataset}.json" if content_dir else None,
                                           evaluation_stage(m, dataset))
                  for m in dict.fromkeys([*subjects, *references.values()])}
        for subject in subjects:
            for name, reference in references.items():
                try:
                    compared = compare_models(loaded[subject], loaded[reference], resamples, seed)
                except CaptError as e:
                    raise CaptError(f"{subject} against {reference} on {dataset} ({scores_dir}): {e}") from None
                for metric, c in compared.items():
                    cells[subject].update({f"delta_{metric}_vs_{name}_{dataset}": c.delta,
                                           f"delta_{metric}_vs_{name}_ci95_{dataset}": c.ci95,
                                           f"p_{metric}_vs_{name}_{dataset}": c.p_value})
                    log.info("%s - %s on %s: %s %+.4f [%+.4f, %+.4f], %s (%d resamples)", subject, reference, dataset,
                             METRIC_NAMES[metric], c.delta, *c.ci95, format_p(c.p_value, resamples), resamples)
    return cells


def twin_cells(twins: dict[str, str], test_sets: list[str], seeds: list[int], resamples: int, seed: int,
               scores_dir: Path = Path("results/scores")) -> dict[str, dict]:
    """Frozen-encoder student -> what fine-tuning its encoder changes (:func:`finetuning_twins`),
    paired on the same images: ``finetuned_twin``, and per test set ``delta_bleu4_vs_finetuned_<dataset>``
    (the frozen student's BLEU-4 minus its fine-tuned twin's), ``..._ci95_<dataset>`` and
    ``p_bleu4_vs_finetuned_<dataset>``; with replicate ``seeds`` (more than one) also
    ``delta_bleu4_vs_finetuned_mean_<dataset>`` and ``..._mean_ci95_<dataset>`` over them, each
    seed's frozen student against the twin trained with the same seed."""
    cells: dict[str, dict] = {m: {"finetuned_twin": t} for m, t in twins.items()}
    models = dict.fromkeys(m for pair in twins.items() for m in pair)
    for dataset in test_sets:
        loaded = {m: {s: ImageScores.read(scores_dir / f"{m}-{dataset}.json", f"evaluate@{m}")
                      if s == seeds[0] else
                      ImageScores.read(scores_dir / "replicates" / f"{m}-s{s}-{dataset}.json",
                                       f"evaluate_replicate@{m}-{s}") for s in seeds} for m in models}
        for frozen, twin in twins.items():
            c = paired_bleu4(loaded[frozen][seeds[0]], loaded[twin][seeds[0]], resamples, seed)
            cells[frozen].update({f"delta_bleu4_vs_finetuned_{dataset}": c.delta,
                                  f"delta_bleu4_vs_finetuned_ci95_{dataset}": c.ci95,
                                  f"p_bleu4_vs_finetuned_{dataset}": c.p_value})
            log.info("%s - %s on %s (the encoder frozen - fine-tuned): BLEU-4 %+.4f [%+.4f, %+.4f], p %.4f",
                     frozen, twin, dataset, c.delta, *c.ci95, c.p_value)
            if len(seeds) > 1:
                over = paired_bleu4_over_seeds(loaded[frozen], loaded[twin], resamples, seed)
                cells[frozen].update({f"delta_bleu4_vs_finetuned_mean_{dataset}": over.mean,
                                      f"delta_bleu4_vs_finetuned_mean_ci95_{dataset}": over.ci95})
    return cells


def seed_cells(models: list[str], test_sets: list[str], seeds: list[int], resamples: int, seed: int,
               seed_values: dict, scores_dir: Path = Path("results/scores"),
               content_dir: Path | None = None) -> dict[str, dict]:
    """Student -> its scores over the training ``seeds`` (the study's own first, then
    ``study.replicate_seeds``; ``seeds`` in the cells says how many) on each test set, by every
    metric of capt.eval.compare its evaluations have (BLEU-4, CIDEr-D, and with ``content_dir``
    the content metric): ``<metric>_seeds_<dataset>`` (per seed), ``<metric>_mean_<dataset>``,
    ``<metric>_sd_<dataset>``, and against the baseline trained with the same seed
    ``delta_<metric>_vs_base_seeds_<dataset>`` (the per-seed paired differences),
    ``..._mean_<dataset>``, ``..._sd_<dataset>`` and ``delta_<metric>_vs_base_mean_ci95_<dataset>``
    (capt.eval.seeds: a Student t-interval on the per-seed differences, None for one seed).
    ``resamples`` and ``seed`` are unused (the t-interval draws nothing); kept for the callers.
    Fills ``seed_values[(model, dataset, metric)]`` with each seed's score (Figure 1's dots)."""
    students = [m for m in models if m != BASELINES["teacher"]]
    cells: dict[str, dict] = {m: {"seeds": list(seeds)} for m in students}

    def evaluation(m: str, s: int, dataset: str) -> dict[str, PerImage]:
        if s == seeds[0]:
            name, stage, folder = m, f"evaluate@{m}", ""
        else:
            name, stage, folder = f"{m}-s{s}", f"evaluate_replicate@{m}-{s}", "replicates"
        return evaluation_statistics(scores_dir / folder / f"{name}-{dataset}.json",
                                     content_dir / folder / f"{name}-{dataset}.json" if content_dir else None, stage)

    for dataset in test_sets:
        by_seed = {m: {s: evaluation(m, s, dataset) for s in seeds} for m in students}
        metrics = [k for k in COMPARED_METRICS if all(k in by_seed[m][s] for m in students for s in seeds)]
        for m in students:
            for metric in metrics:
                values = [by_seed[m][s][metric].score for s in seeds]
                mean, sd = mean_sd(values)
                cells[m].update({f"{metric}_seeds_{dataset}": values, f"{metric}_mean_{dataset}": mean,
                                 f"{metric}_sd_{dataset}": sd})
                seed_values[(m, dataset, metric)] = tuple(values)
        base = by_seed.get(BASELINES["base"])
        if base is None:
            continue
        for m in students:
            for metric in metrics:
                for s in seeds:
                    if by_seed[m][s][metric].image_ids != base[s][metric].image_ids:
                        raise CaptError(f"{m} and {BASELINES['base']} (seed {s}) were scored on different images of "
                                        f"{dataset}: a comparison over seeds pairs them on the same test set")
                c = compare_over_seeds({s: by_seed[m][s][metric].score - base[s][metric].score for s in seeds})
                cells[m].update({f"delta_{metric}_vs_base_seeds_{dataset}": list(c.deltas),
                                 f"delta_{metric}_vs_base_mean_{dataset}": c.mean,
                                 f"delta_{metric}_vs_base_sd_{dataset}": c.sd,
                                 f"delta_{metric}_vs_base_mean_ci95_{dataset}": c.ci95})
                log.info("%s - student_base on %s over %d seeds: %s %+.4f (sd %s), 95%% t-interval %s", m, dataset,
                         len(seeds), METRIC_NAMES[metric], c.mean, "-" if c.sd is None else f"{c.sd:.4f}",
                         "-" if c.ci95 is None else f"[{c.ci95[0]:+.4f}, {c.ci95[1]:+.4f}]")
    return cells


def difference_pairs(models: list[str]) -> list[tuple[str, str]]:
    """The difference view's default pairs (A, B) among ``models``: each student against the
    baseline student, and the teacher against BLIP, where both are there."""
    base, teacher = BASELINES["base"], BASELINES["teacher"]
    pairs = [(m, base) for m in models if m not in (base, teacher, BLIP_MODEL) and base in models]
    return pairs + ([(teacher, BLIP_MODEL)] if teacher in models and BLIP_MODEL in models else [])
