"""Stage report: the study's Table 1, our way, its grounding and hallucination numbers, and an
HTML page with all of it.

One row per model of ``study.models`` (teacher, each student) and BLIP: encoder, LSTM (BLIP: text
decoder) width, parameters, checkpoint MB, CPU ms per image at ``report.beam_size`` (BLIP: its own
caption settings; the median and quartiles of ``report.timing_repeats`` passes over
``report.timing_images`` test images on ``report.timing_threads`` threads, capt.eval.table), BLEU-4
and CIDEr on every test set of
``study.test_sets``, the share of the human ceiling there (``bleu4_loo / ceiling_bleu4``: the
model and the humans scored on the same leave-one-out folds, capt.eval.metrics), and the seed
study's BLEU-4 (``report.seed_bleu4``) beside ours where it had the variant. Then, for every test set with instance masks, each model's grounding per technique
(pointing game and mass in mask with their centre and uniform baselines) and CHAIR. Reads
``metrics/eval/<model>-<dataset>.json``, ``metrics/train/<model>.json``, ``params.yaml``'s
``distill`` section (each student's loss), ``models/<model>.pt``, the training curves
(``results/curves``) and the comparison figures (``results/attention/compare``); writes
``metrics/summary.json``, ``results/table1.md`` and ``results/report/index.html`` (with its images
in ``results/report/img/``: the folder opens offline, anywhere).

The CPU timings are wall-clock and differ on every run, so they go to ``results/latency.json``
and the tables, never to ``metrics/summary.json``: after a change to one student,
``dvc metrics diff`` lists that student's numbers alone.

Does distillation help? metrics/summary.json also compares every student (``study.models`` but the
teacher) with the baseline (``student_base``) and with the teacher on every test set, paired on the
same images (capt.eval.bootstrap, from the per-image statistics ``results/scores/<model>-<dataset>.json``
the evaluations wrote): ``delta_bleu4_vs_base_<dataset>`` (the student's BLEU-4 minus the
baseline's), ``delta_bleu4_vs_base_ci95_<dataset>`` (its paired percentile bootstrap interval, the
same ``evaluate.bootstrap_resamples`` resamples of ``evaluate.bootstrap_seed`` as the evaluations'
intervals) and ``p_bleu4_vs_base_<dataset>`` (a paired approximate randomisation test), and the same
``..._vs_teacher_...``. A student whose variant freezes its encoder (``fine_tune: false``, the
follow-ups of ``conf/followups/seed_study.yaml``) is also paired with its fine-tuned twin, the
student of the same loss (``..._vs_finetuned_...``, and Table 1's fine-tuning x KD section).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import torch
import typer

from capt.errors import CaptError
from capt.eval.baselines import BASELINE_MODELS
from capt.eval.bootstrap import format_p, paired_bleu4
from capt.eval.per_image import ImageScores
from capt.eval.compare import COMPARED_METRICS, METRIC_NAMES, PerImage, compare_models, evaluation_statistics
from capt.eval.grounding import CHAIR_KEYS
from capt.eval.seeds import compare_over_seeds, mean_sd, paired_bleu4_over_seeds
from capt.blip.model import PRETRAINED, caption_images, load_blip, read_generation
from capt.eval.table import folder_mb, markdown_table, model_size, time_per_image
from capt.models.saved import load_captioner
from capt.viz.report import Figures, Table, write_report
from capt.viz.scores import model_scores, plot_model_scores, write_scores_csv
from stages._common import BLIP_MODEL, make_config, read_params, stage_main, study_models, write_json

log = logging.getLogger("stages.report")


@dataclass(frozen=True)
class ReportConfig:
    timing_images: int = 8                 # test images captioned one at a time for the CPU latency
    timing_repeats: int = 3                # timed passes over them: the median and quartiles
    timing_threads: int = 1                # torch CPU threads while timing: the same on every machine
    beam_size: int = 3
    max_len: int = 20
    seed_bleu4: dict = field(default_factory=dict)   # model -> the seed study's BLEU-4 (its Table 1)
    published: list = field(default_factory=list)    # {model, dataset, scores: {metric: value}, source}: what the
                                                     # literature reports, printed beside our score of that metric

    def __post_init__(self):
        for name in ("timing_images", "timing_repeats", "timing_threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise CaptError(f"report.{name} must be a positive integer, got {value!r}")
        for i, entry in enumerate(self.published):
            where = f"report.published[{i}]"
            if not isinstance(entry, dict) or set(entry) != {"model", "dataset", "scores", "source"}:
                raise CaptError(f"{where} must have exactly model, dataset, scores and source, got {entry!r}")
            unknown = set(entry["scores"]) - set(PUBLISHED_METRICS)
            if not entry["scores"] or unknown:
                raise CaptError(f"{where}.scores: metrics among {', '.join(PUBLISHED_METRICS)}, got {entry['scores']!r}")


# The scores report.published may name, as metrics/eval has them: nltk BLEU-4 (as sgrvinod's tutorial
# reports it) or coco-caption's (as papers do), CIDEr-D, METEOR, ROUGE-L.
PUBLISHED_METRICS = ("bleu4", "bleu4_coco", "cider", "meteor", "rouge_l")


PUBLISHED_COLUMNS = [("model", "model"), ("dataset", "test set"), ("metric", "metric"), ("published", "published", "{:.3f}"),
                     ("ours", "ours", "{:.3f}"), ("source", "source")]
PUBLISHED_NOTE = ("What the source reports for the model this study runs (or the one it reimplements) on that test "
                  "set, and our score of the same metric: a run far from them is not calibrated (image size, beam, "
                  "tokenizer, training), whatever its comparisons say.")


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


# What each pretrained BLIP checkpoint is (its model card): Table 1 says so beside its scores.
BLIP_CHECKPOINTS = {
    PRETRAINED: "the COCO-finetuned captioning checkpoint",
    "Salesforce/blip-image-captioning-large": "the COCO-finetuned captioning checkpoint",
}


def blip_loss(source: str, pretrained: str, trained: bool) -> str:
    """Table 1's loss cell of BLIP: what it was trained on, here and before (blip.source: small is
    built and trained here; pretrained starts from ``pretrained``, tuned here only if ``trained``)."""
    if source != "pretrained":
        return "LM (trained here)" if trained else "LM (untrained)"
    what = f"{pretrained}, {BLIP_CHECKPOINTS.get(pretrained, 'a pretrained checkpoint')}"
    return f"LM, {what}, fine-tuned further here" if trained else f"zero-shot: {what}, used without further tuning"


def _loss(variant: dict | None) -> str:
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


@stage_main
def main() -> None:
    cfg = make_config(ReportConfig, read_params("report"), "report")
    test_sets = read_params("study", "test_sets")
    variants = read_params("distill")
    timing_set = Path("data/prepared") / test_sets[0] / "test.h5"
    with h5py.File(timing_set, "r") as f:
        images = torch.from_numpy(f["images"][: cfg.timing_images])
    rows, captioners, evaluations = [], {}, {}
    for model in study_models():
        path = Path("models") / model
        if path.is_dir():                      # BLIP
            blip, processor = load_blip(path)
            gen = read_generation(path)
            trained = json.loads(Path("metrics/train/blip.json").read_text())["epochs_run"] > 0
            row = {"model": model, "loss": blip_loss(read_params("blip", "source"), read_params("blip", "pretrained"),
                                                     trained),
                   "encoder": f"ViT/{blip.config.vision_config.patch_size} (BLIP)", "fine_tuned": True,
                   "hidden": blip.config.text_config.hidden_size,
                   "parameters": sum(p.numel() for p in blip.parameters()), "checkpoint_mb": folder_mb(path)}
            captioners[model] = lambda im, blip=blip, processor=processor, gen=gen: caption_images(
                blip, processor, im, gen)
        else:
            captioner = load_captioner(path.with_suffix(".pt"))
            row = {"model": model, "loss": _loss(variants.get(model)), **model_size(captioner, path.with_suffix(".pt"))}
            captioners[model] = lambda im, captioner=captioner: captioner.caption(
                im, beam_size=cfg.beam_size, max_len=cfg.max_len)
        row["checkpoint_mb"] = round(row["checkpoint_mb"], 2)
        row.update(evaluation_cells(model, test_sets, evaluations))
        row["seed_bleu4"] = cfg.seed_bleu4.get(model)
        rows.append(row)
        log.info("%s: %s", model, row)
    for baseline in BASELINE_MODELS:           # what every model must beat, scored as the models are
        rows.append({"model": baseline, "loss": BASELINE_LOSS[baseline],
                     **evaluation_cells(baseline, test_sets, evaluations)})
    for row in rows:
        row.update(above_constant_cells(row, next(r for r in rows if r["model"] == "constant"), test_sets))

    summary = {"models": {r["model"]: {k: v for k, v in r.items() if k != "model"} for r in rows}}
    latency = write_latency(captioners, images, cfg, test_sets[0], Path("results/latency.json"))
    for row in rows:                           # the tables show it; metrics/summary.json never does
        if row["model"] in captioners:
            row["cpu_ms_per_image"] = latency_cell(latency[row["model"]])
            row["epochs"] = epochs_cell(row["model"])
    resamples, boot_seed = read_params("evaluate", "bootstrap_resamples"), read_params("evaluate", "bootstrap_seed")
    study = read_params("study", "models")
    for m, name in BASELINES.items():
        if name not in study:
            log.info("%s is not in study.models: no comparisons with it", name)
    students = [m for m in study if m != BASELINES["teacher"]]
    for student, cells in paired_cells(students, {n: m for n, m in BASELINES.items() if m in study}, test_sets,
                                       resamples, boot_seed, content_dir=Path("results/content")).items():
        summary["models"][student].update(cells)
    for model, cells in paired_cells(study_models(), CAPTION_BASELINES, test_sets, resamples, boot_seed,
                                     content_dir=Path("results/content")).items():
        summary["models"][model].update(cells)
    replicate_seeds = read_params("study", "replicate_seeds")
    seeds = [read_params("students", "train")["seed"], *replicate_seeds]
    twins = finetuning_twins(variants, read_params("study", "models"), read_params("students", "encoder")["fine_tune"])
    twin_values = twin_cells(twins, test_sets, seeds, read_params("evaluate", "bootstrap_resamples"),
                             read_params("evaluate", "bootstrap_seed"))
    for student, cells in twin_values.items():
        summary["models"][student].update(cells)
    seed_values: dict = {}
    if replicate_seeds:
        for student, cells in seed_cells(read_params("study", "models"), test_sets, seeds,
                                         read_params("evaluate", "bootstrap_resamples"),
                                         read_params("evaluate", "bootstrap_seed"), seed_values,
                                         content_dir=Path("results/content")).items():
            summary["models"][student].update(cells)
            next(r for r in rows if r["model"] == student).update(seed_table_cells(cells, test_sets))
    write_json(Path("metrics/summary.json"), summary, sort_keys=False)   # rows in study order
    columns = [("model", "model"), ("loss", "loss"), ("encoder", "encoder"), ("fine_tuned", "encoder fine-tuned"),
               ("hidden", "LSTM"),
               ("parameters", "parameters"), ("checkpoint_mb", "checkpoint MB", "{:.2f}"),
               ("cpu_ms_per_image", "CPU ms/image"), ("epochs", "epoch chosen"),
               *[(f"{key}_{d}", f"{header} {d}", *fmt) for d in test_sets for key, header, *fmt in
                 (("bleu4", "BLEU-4"), ("cider", "CIDEr"), *content_columns(rows, d),
                  ("ceiling_share", "share of ceiling", "{:.1%}"), ("above_constant", "above constant", "{:.1%}"),
                  ("distinct_captions", "distinct captions"))],
               *(seed_columns(rows, test_sets) if replicate_seeds else []),
               ("seed_bleu4", "seed BLEU-4 (COCO)")]
    table1_note = (f"BLEU-4 (nltk corpus BLEU against every reference) and CIDEr on each test split "
                   f"(beam {read_params('evaluate', 'beam_size')}, {read_params('evaluate', 'tokenizer')} tokenizer). "
                   f"{ceiling_note(rows, test_sets)} CPU ms per image: one {test_sets[0]} test image at a time, beam "
                   f"{cfg.beam_size}, {cfg.timing_threads} thread(s); the median (quartiles) of {cfg.timing_repeats} "
                   f"passes over {len(images)} images, every model timed in turn in each pass (a wall-clock "
                   "time: results/latency.json, not the metrics). Epoch chosen: the best of the epochs run on the "
                   "val score of train.select_on (metrics/train); a model whose last epoch is its best was still "
                   "improving when its epochs ran out. The seed's BLEU-4 is on COCO, beside ours for the variants it had. "
                   f"{BASELINES_NOTE} {CONTENT_NOTE} Distinct captions: how many different captions a model writes for the "
                   + ", ".join(f"{evaluations[(rows[0]['model'], d)]['images']} {d}" for d in test_sets)
                   + " test images; its vocabulary and the share of its captions that are no training caption "
                   "verbatim are in metrics/eval (vocabulary_used, novel_share).")
    text = f"# Table 1: teacher, students, BLIP and the baselines\n\n{table1_note}\n\n" + markdown_table(rows, columns)
    seed_note = (f"One training run per model: each interval is a 95% paired percentile bootstrap over the test images "
                 f"({resamples} resamples) and p an approximate randomisation test on the same images; they say how "
                 "sure the difference is for these trained weights, not for the method: another training seed can "
                 "change it as much (dvc exp run -S seeds=five replicates every student).")
    vs_baselines = comparison_rows(summary["models"], study_models(), list(CAPTION_BASELINES), test_sets, resamples)
    vs_students = comparison_rows(summary["models"], students, [n for n, m in BASELINES.items() if m in study],
                                  test_sets, resamples)
    text += ("\n## Against the baselines\n\nEach model minus the constant caption and minus the nearest neighbour, "
             "paired on the same test images. " + seed_note + "\n\n"
             + markdown_table(vs_baselines, comparison_columns(vs_baselines, test_sets)))
    text += ("\n## Students against the baseline student and the teacher\n\n" + seed_note + "\n\n"
             + markdown_table(vs_students, comparison_columns(vs_students, test_sets)))
    published = published_rows(cfg.published, summary["models"])
    if published:
        text += f"\n## Published numbers beside ours\n\n{PUBLISHED_NOTE}\n\n" + markdown_table(published, PUBLISHED_COLUMNS)
    grounding, chair = grounding_rows(rows), chair_rows(rows)
    grounding_note = ("Each mention of an object category in a model's own test captions whose category is in the "
                      "image, scored on that word's map upsampled to the image's original size. Pointing game: the "
                      f"map's maximum within {read_params('evaluate', 'grounding_tolerance'):g} px of the category's "
                      "mask; mass: the share of the map inside the mask. Baselines on the same words: the image's "
                      "centre point, and a uniform map.")
    chair_note = ("CHAIR (Rohrbach et al. 2018, their synonym table and rules): a mention is hallucinated when its "
                  "category is neither annotated in the image nor named by one of its reference captions. CHAIR-i: "
                  "hallucinated mentions / mentions; CHAIR-s: captions with one / captions. The instances-only "
                  "columns take the annotated instances alone as the truth. Object coverage, its other side: the "
                  "share of each image's annotated categories the caption names (capt.eval.content).")
    twin_table = twin_rows(twins, twin_values, summary["models"], test_sets, resamples)
    twin_note = ("The seed study's follow-up (a): its students, fine-tuned, beat its teacher, whose encoder was "
                 "frozen. Each student with a frozen encoder (distill.<variant>.fine_tune: false) beside the "
                 "student with the same loss and a fine-tuned encoder; frozen - fine-tuned is paired on the same "
                 "test images (95% bootstrap interval, p from approximate randomisation). With the baseline and "
                 "decoder KD, the two rows are a 2x2: fine-tuning's effect with and without KD.")
    if twin_table:
        text += ("\n## Encoder fine-tuning x KD\n\n" + twin_note + "\n\n"
                 + markdown_table(twin_table, twin_columns(test_sets, len(seeds) > 1)))
    text += ("\n## Grounding\n\n" + grounding_note + "\n\n" + markdown_table(grounding, GROUNDING_COLUMNS)
             + "\n## Hallucination\n\n" + chair_note + "\n\n" + markdown_table(chair, CHAIR_COLUMNS))
    out = Path("results/table1.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)

    figure = write_figure1(evaluations, test_sets, Path("results/figure1.png"), Path("results/plots"), seed_values)
    curves = [(Path("results/curves") / f"{r['model']}.png", f"{r['model']}: training curves") for r in rows
              if (Path("results/curves") / f"{r['model']}.png").exists()]
    compare = [(p, f"test image {p.stem}") for p in sorted(Path("results/attention/compare").glob("*.png"),
                                                           key=lambda p: int(p.stem) if p.stem.isdigit() else p.stem)]
    page = write_report(Path("results/report"), "capt: the study", (
        f"Every model of the study on {', '.join(test_sets)}: the numbers of metrics/summary.json and the figures "
        "of the DAG, made by the report stage."), [
        Figures("Figure 1: does distillation help?", [figure], FIGURE1_NOTE, width="100%"),
        Table("Table 1: teacher, students, BLIP and the baselines", rows, columns, table1_note),
        Table("Against the baselines", vs_baselines, comparison_columns(vs_baselines, test_sets), seed_note),
        Table("Students against the baseline student and the teacher", vs_students,
              comparison_columns(vs_students, test_sets), seed_note),
        *([Table("Encoder fine-tuning x KD", twin_table, twin_columns(test_sets, len(seeds) > 1), twin_note)]
          if twin_table else []),
        Table("Grounding: does each word's map land on what it names?", grounding, GROUNDING_COLUMNS, grounding_note,
              digits=3),
        Table("Hallucination", chair, CHAIR_COLUMNS, chair_note, digits=3),
        *([Table("Published numbers beside ours", published, PUBLISHED_COLUMNS, PUBLISHED_NOTE)] if published else []),
        Figures("Training curves", curves, "Per epoch: training and validation loss, validation BLEU-4."),
        Figures("Where each model looks, word by word", compare,
                "A row per model and technique (soft attention and Grad-CAM on the encoder's last block for the "
                "LSTM models, Grad-CAM on a cross-attention layer for BLIP), with its caption and sentence BLEU-4; the same colour scale in every cell.", width="100%"),
    ])
    log.info("table of %d models -> %s, metrics/summary.json, %s", len(rows), out, page)


def evaluation_cells(model: str, test_sets: list[str], evaluations: dict) -> dict:
    """A Table 1 row's cells from a model's evaluations on every test set (:func:`score_cells`),
    with ``chair`` (CHAIR and coverage per test set) and ``grounding`` (per test set and
    technique) where the evaluations have them; each evaluation's metrics go to
    ``evaluations[(model, dataset)]``."""
    cells, chair, grounding = {}, {}, {}
    for dataset in test_sets:
        scores_path = Path("metrics/eval") / f"{model}-{dataset}.json"
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
    return {**cells, **({"chair": chair} if chair else {}), **({"grounding": grounding} if grounding else {})}


def write_latency(captioners: dict, images: torch.Tensor, cfg: ReportConfig, dataset: str, path: Path) -> dict:
    """Time every model (capt.eval.table.time_per_image) and write ``path``: the settings and, per
    model, ``median_ms``, ``p25_ms``, ``p75_ms``. Returns model -> Latency."""
    latency = time_per_image(captioners, images, repeats=cfg.timing_repeats, threads=cfg.timing_threads)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "what": "wall-clock CPU milliseconds to caption one image, one at a time (not a deterministic metric)",
        "test_set": dataset, "images": len(images), "repeats": cfg.timing_repeats, "threads": cfg.timing_threads,
        "beam_size": cfg.beam_size, "models": {m: t.to_json() for m, t in latency.items()}}, indent=2) + "\n")
    for m, t in latency.items():
        log.info("%s: %.1f ms per image on the CPU (quartiles %.1f-%.1f over %d passes, %d thread(s))",
                 m, t.median_ms, t.p25_ms, t.p75_ms, t.repeats, t.threads)
    return latency


def epochs_cell(model: str) -> str:
    """Table 1's "epoch chosen" cell: ``<best> of <run> (<metric>)`` from ``metrics/train/<model>.json``;
    ``0 epochs`` for a model that was not trained here (zero-shot BLIP)."""
    path = Path("metrics/train") / f"{model}.json"
    try:
        t = json.loads(path.read_text())
    except FileNotFoundError:
        raise CaptError(f"{path}: missing; run the stage that trains {model}") from None
    if not t.get("epochs_run"):
        return "0 epochs"
    return f"{t['best_epoch']} of {t['epochs_run']} ({t.get('selected_on', 'bleu4')})"


def latency_cell(t) -> str:
    """A table's CPU ms cell: the median and, in brackets, the quartiles of the passes."""
    return f"{t.median_ms:.1f} ({t.p25_ms:.1f}-{t.p75_ms:.1f})"


FIGURE1_NOTE = ("Each model's BLEU-4 and CIDEr-D on each test set: the bar is its 95% percentile bootstrap interval "
                "over the test images, the tick its score, the dots its training seeds; dashed lines: the baseline "
                "student and the teacher. metrics/summary.json pairs every student with both on the same resamples.")


def write_figure1(evaluations: dict, test_sets: list[str], png: Path, plots_dir: Path,
                  seed_values: dict | None = None) -> tuple[Path, str]:
    """The report's lead figure (capt.viz.scores) from every evaluation's metrics (and each seed's
    score where students were replicated: ``seed_values``), and one CSV per test set,
    ``plots_dir/figure1-<dataset>.csv``, for dvc.yaml's plots. Returns (png, caption)."""
    scores = model_scores(evaluations, seed_values)
    plot_model_scores(scores, png, "Figure 1: every model's BLEU-4 and CIDEr-D with its 95% interval")
    for dataset in test_sets:
        write_scores_csv(scores, dataset, plots_dir / f"figure1-{dataset}.csv")
    return png, "BLEU-4 and CIDEr-D per model with 95% intervals; dashed: the baseline student and the teacher"


# What each row keeps of an evaluation's metrics, per test set (metrics/summary.json): nltk and
# coco-caption BLEU-4, CIDEr, and the leave-one-out pair behind the share of the ceiling.
SCORE_KEYS = ("bleu4", "bleu4_coco", "cider", "bleu4_loo", "ceiling_bleu4", "ceiling_folds")
# ... and, where the evaluation has them: the content metric (capt.eval.content; object F1 and its
# interval on a shapes world, coverage wherever there are instances) and what the captions look
# like as a set (capt.eval.baselines.caption_diagnostics).
CONTENT_KEYS = ("object_f1", "object_f1_ci95", "attribute_f1", "relation_accuracy", "coverage", "coverage_ci95",
                "distinct_captions", "vocabulary_used", "novel_share")

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


BASELINES_NOTE = ("The baselines: `constant`, one training caption (of the most frequent, the best on val "
                  "CIDEr-D) for every test image; `nearest`, each test image the first reference caption of its "
                  "nearest training image in the teacher's frozen trunk (cosine of the mean-pooled features). A "
                  "score a baseline also reaches is no evidence that a model looks at the image. Above constant: "
                  "(bleu4_loo - the constant's) / (ceiling - the constant's), 0 the constant caption, 1 the humans.")
CONTENT_NOTE = ("Object F1 (shapes worlds; capt.eval.content): the objects a caption states, each matched to a "
                "true object with its shape and every colour or size it names, F1 over the test set's stated and "
                "true objects, with its 95% bootstrap interval in metrics/eval (object_f1_ci95); coverage "
                "(datasets with instances): the share of each image's annotated categories the caption names.")


def content_columns(rows: list[dict], dataset: str) -> list[tuple]:
    """Table 1's content column on a test set: object F1 where the evaluations have it (a shapes
    world), else object coverage where they have that, else none."""
    for key, header in (("object_f1", "object F1"), ("coverage", "coverage")):
        if any(r.get(f"{key}_{dataset}") is not None for r in rows):
            return [(key, header, "{:.3f}")]
    return []


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


def comparison_rows(summary: dict, subjects: list[str], names: list[str], test_sets: list[str],
                    resamples: int) -> list[dict]:
    """A row per subject and reference name: per test set and metric, ``delta [low, high], p``."""
    rows = []
    for subject in subjects:
        for name in names:
            cells = summary[subject]
            row = {"model": subject, "against": {**BASELINES, **CAPTION_BASELINES}[name]}
            if row["against"] == subject:         # student_base against itself: 0 [0, 0], p 1, in the JSON alone
                continue
            for d in test_sets:
                for metric in COMPARED_METRICS:
                    key = f"delta_{metric}_vs_{name}_{d}"
                    if key in cells:
                        low, high = cells[f"delta_{metric}_vs_{name}_ci95_{d}"]
                        row[f"{metric}_{d}"] = (f"{cells[key]:+.3f} [{low:+.3f}, {high:+.3f}], "
                                                f"{format_p(cells[f'p_{metric}_vs_{name}_{d}'], resamples)}")
            if len(row) > 2:
                rows.append(row)
    return rows


def comparison_columns(rows: list[dict], test_sets: list[str]) -> list[tuple]:
    return [("model", "model"), ("against", "against"),
            *[(f"{m}_{d}", f"{METRIC_NAMES[m]} {d}") for d in test_sets for m in COMPARED_METRICS
              if any(f"{m}_{d}" in r for r in rows)]]


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


def twin_rows(twins: dict[str, str], cells: dict[str, dict], summary: dict, test_sets: list[str],
              resamples: int = 1000) -> list[dict]:
    """The fine-tuning x KD table: one row per frozen student, beside its fine-tuned twin."""
    rows = []
    for frozen, twin in twins.items():
        row = {"loss": summary[frozen]["loss"], "frozen": frozen, "finetuned": twin}
        for d in test_sets:
            low, high = cells[frozen][f"delta_bleu4_vs_finetuned_ci95_{d}"]
            row[f"bleu4_frozen_{d}"] = summary[frozen][f"bleu4_{d}"]
            row[f"bleu4_finetuned_{d}"] = summary[twin][f"bleu4_{d}"]
            row[f"delta_{d}"] = (f"{cells[frozen][f'delta_bleu4_vs_finetuned_{d}']:+.3f} [{low:+.3f}, {high:+.3f}], "
                                 f"{format_p(cells[frozen][f'p_bleu4_vs_finetuned_{d}'], resamples)}")
            if f"delta_bleu4_vs_finetuned_mean_{d}" in cells[frozen]:
                low, high = cells[frozen][f"delta_bleu4_vs_finetuned_mean_ci95_{d}"]
                row[f"delta_seeds_{d}"] = f"{cells[frozen][f'delta_bleu4_vs_finetuned_mean_{d}']:+.3f} [{low:+.3f}, {high:+.3f}]"
        rows.append(row)
    return rows


def twin_columns(test_sets: list[str], over_seeds: bool) -> list[tuple]:
    return [("loss", "loss"), ("frozen", "frozen encoder"), ("finetuned", "fine-tuned encoder"),
            *[c for d in test_sets for c in (
                (f"bleu4_frozen_{d}", f"BLEU-4 {d}, frozen"), (f"bleu4_finetuned_{d}", f"BLEU-4 {d}, fine-tuned"),
                (f"delta_{d}", f"frozen - fine-tuned {d}"),
                *([(f"delta_seeds_{d}", f"frozen - fine-tuned {d} over seeds")] if over_seeds else []))]]


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


def seed_table_cells(cells: dict, test_sets: list[str]) -> dict:
    """Table 1's text cells from :func:`seed_cells`, per test set and metric: the mean +- sd over
    the seeds (``<metric>_over_seeds_<dataset>``), and the mean paired difference to the baseline
    with its t-interval and the number of seeds (``delta_<metric>_over_seeds_<dataset>``)."""
    out = {}
    n = len(cells["seeds"])
    for d in test_sets:
        for metric in COMPARED_METRICS:
            if f"{metric}_mean_{d}" not in cells:
                continue
            sd = cells[f"{metric}_sd_{d}"]
            out[f"{metric}_over_seeds_{d}"] = (f"{cells[f'{metric}_mean_{d}']:.3f} ± {sd:.3f} ({n} seeds)"
                                               if sd is not None else f"{cells[f'{metric}_mean_{d}']:.3f}")
            ci95 = cells.get(f"delta_{metric}_vs_base_mean_ci95_{d}")
            if ci95 is not None:
                out[f"delta_{metric}_over_seeds_{d}"] = (f"{cells[f'delta_{metric}_vs_base_mean_{d}']:+.3f} "
                                                         f"[{ci95[0]:+.3f}, {ci95[1]:+.3f}] ({n} seeds)")
    return out


def seed_columns(rows: list[dict], test_sets: list[str]) -> list[tuple]:
    """Table 1's columns over seeds: each metric's mean +- sd and its difference to student_base."""
    return [(f"{key}_{d}", f"{METRIC_NAMES[m]} {header} {d}") for d in test_sets for m in COMPARED_METRICS
            for key, header in ((f"{m}_over_seeds", "over seeds"), (f"delta_{m}_over_seeds", "vs student_base over seeds"))
            if any(f"{key}_{d}" in r for r in rows)]


def ceiling_note(rows: list[dict], test_sets: list[str]) -> str:
    """What the share of the ceiling is, and the human ceiling of each test set (one value for
    every model: it depends on the references only)."""
    ceilings = ", ".join(f"{d} {rows[0][f'ceiling_bleu4_{d}']:.4f} ({rows[0][f'ceiling_folds_{d}']} folds)"
                         for d in test_sets) if rows else "-"
    return ("Share of ceiling: bleu4_loo / ceiling_bleu4, the model's BLEU-4 over the humans', both on the same "
            "leave-one-out folds (fold k: each image's reference k is the human caption and its other references "
            "the references of both; the mean over the folds), not the BLEU-4 column, which is against every "
            f"reference; human ceiling BLEU-4: {ceilings}.")


GROUNDING_COLUMNS = [("model", "model"), ("dataset", "test set"), ("technique", "technique"),
                     ("grounded_words", "words"), ("pointing_game", "pointing game"),
                     ("pointing_game_centre", "centre"), ("pointing_game_uniform", "uniform"),
                     ("mass_in_mask", "mass in mask"), ("mass_in_mask_centre", "centre"),
                     ("mass_in_mask_uniform", "uniform")]
CHAIR_COLUMNS = [("model", "model"), ("dataset", "test set"), ("object_mentions", "object mentions"),
                 ("chair_i", "CHAIR-i"), ("chair_s", "CHAIR-s"),
                 ("chair_i_instances", "CHAIR-i (instances only)"), ("chair_s_instances", "CHAIR-s (instances only)"),
                 ("coverage", "object coverage", "{:.3f}")]


def grounding_rows(rows: list[dict]) -> list[dict]:
    return [{"model": r["model"], "dataset": d, "technique": t, **g}
            for r in rows for d, by_technique in r.get("grounding", {}).items() for t, g in by_technique.items()]


def chair_rows(rows: list[dict]) -> list[dict]:
    return [{"model": r["model"], "dataset": d, **c} for r in rows for d, c in r.get("chair", {}).items()]


if __name__ == "__main__":
    typer.run(main)
