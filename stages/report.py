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
from capt.eval.bootstrap import ImageScores, paired_bleu4
from capt.eval.grounding import CHAIR_KEYS
from capt.eval.seeds import mean_sd, paired_bleu4_over_seeds
from capt.blip.model import caption_images, load_blip, read_generation
from capt.eval.table import folder_mb, markdown_table, model_size, time_per_image
from capt.models.saved import load_captioner
from capt.viz.report import Figures, Table, write_report
from capt.viz.scores import model_scores, plot_model_scores, write_scores_csv
from stages._common import make_config, read_params, stage_main, study_models

log = logging.getLogger("stages.report")


@dataclass(frozen=True)
class ReportConfig:
    timing_images: int = 8                 # test images captioned one at a time for the CPU latency
    timing_repeats: int = 3                # timed passes over them: the median and quartiles
    timing_threads: int = 1                # torch CPU threads while timing: the same on every machine
    beam_size: int = 3
    max_len: int = 20
    seed_bleu4: dict = field(default_factory=dict)   # model -> the seed study's BLEU-4 (its Table 1)

    def __post_init__(self):
        for name in ("timing_images", "timing_repeats", "timing_threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise CaptError(f"report.{name} must be a positive integer, got {value!r}")


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
            row = {"model": model, "loss": "LM (fine-tuned)" if trained else "zero-shot",
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
        chair, grounding = {}, {}
        for dataset in test_sets:
            scores_path = Path("metrics/eval") / f"{model}-{dataset}.json"
            try:
                scores = json.loads(scores_path.read_text())
            except FileNotFoundError:
                raise CaptError(f"{scores_path}: missing; run evaluate@{model}-{dataset}") from None
            row.update(score_cells(scores, dataset, f"{scores_path} (evaluate@{model}-{dataset})"))
            evaluations[(model, dataset)] = scores
            if "grounding" in scores:
                chair[dataset] = {k: scores[k] for k in CHAIR_KEYS}
                grounding[dataset] = scores["grounding"]
        row["seed_bleu4"] = cfg.seed_bleu4.get(model)
        if grounding:
            row["chair"], row["grounding"] = chair, grounding
        rows.append(row)
        log.info("%s: %s", model, row)

    summary = {"models": {r["model"]: {k: v for k, v in r.items() if k != "model"} for r in rows}}
    latency = write_latency(captioners, images, cfg, test_sets[0], Path("results/latency.json"))
    for row in rows:                           # the tables show it; metrics/summary.json never does
        row["cpu_ms_per_image"] = latency_cell(latency[row["model"]])
        row["epochs"] = epochs_cell(row["model"])
    for student, cells in paired_cells(read_params("study", "models"), test_sets,
                                       read_params("evaluate", "bootstrap_resamples"),
                                       read_params("evaluate", "bootstrap_seed")).items():
        summary["models"][student].update(cells)
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
                                         read_params("evaluate", "bootstrap_seed"), seed_values).items():
            summary["models"][student].update(cells)
            next(r for r in rows if r["model"] == student).update(seed_table_cells(cells, test_sets))
    Path("metrics/summary.json").write_text(json.dumps(summary, indent=2) + "\n")   # rows in study order
    columns = [("model", "model"), ("loss", "loss"), ("encoder", "encoder"), ("fine_tuned", "encoder fine-tuned"),
               ("hidden", "LSTM"),
               ("parameters", "parameters"), ("checkpoint_mb", "checkpoint MB", "{:.2f}"),
               ("cpu_ms_per_image", "CPU ms/image"), ("epochs", "epoch chosen"),
               *[(f"{key}_{d}", f"{header} {d}", *fmt) for d in test_sets for key, header, *fmt in
                 (("bleu4", "BLEU-4"), ("cider", "CIDEr"), ("ceiling_share", "share of ceiling", "{:.1%}"))],
               *([(f"{key}_{d}", f"{header} {d}") for d in test_sets for key, header in
                  (("bleu4_over_seeds", "BLEU-4 over seeds"), ("delta_over_seeds", "vs student_base over seeds"))]
                 if replicate_seeds else []),
               ("seed_bleu4", "seed BLEU-4 (COCO)")]
    table1_note = (f"BLEU-4 (nltk corpus BLEU against every reference) and CIDEr on each test split "
                   f"(beam {read_params('evaluate', 'beam_size')}, {read_params('evaluate', 'tokenizer')} tokenizer). "
                   f"{ceiling_note(rows, test_sets)} CPU ms per image: one {test_sets[0]} test image at a time, beam "
                   f"{cfg.beam_size}, {cfg.timing_threads} thread(s); the median (quartiles) of {cfg.timing_repeats} "
                   f"passes over {len(images)} images, every model timed in turn in each pass (a wall-clock "
                   "time: results/latency.json, not the metrics). Epoch chosen: the best of the epochs run on the "
                   "val score of train.select_on (metrics/train); a model whose last epoch is its best was still "
                   "improving when its epochs ran out. The seed's BLEU-4 is on COCO, beside ours for the variants it had.")
    text = f"# Table 1: teacher and students\n\n{table1_note}\n\n" + markdown_table(rows, columns)
    grounding, chair = grounding_rows(rows), chair_rows(rows)
    grounding_note = ("Each mention of an object category in a model's own test captions whose category is in the "
                      "image, scored on that word's map upsampled to the image's original size. Pointing game: the "
                      f"map's maximum within {read_params('evaluate', 'grounding_tolerance'):g} px of the category's "
                      "mask; mass: the share of the map inside the mask. Baselines on the same words: the image's "
                      "centre point, and a uniform map.")
    chair_note = ("CHAIR (Rohrbach et al. 2018, their synonym table and rules): a mention is hallucinated when its "
                  "category is neither annotated in the image nor named by one of its reference captions. CHAIR-i: "
                  "hallucinated mentions / mentions; CHAIR-s: captions with one / captions. The instances-only "
                  "columns take the annotated instances alone as the truth.")
    twin_table = twin_rows(twins, twin_values, summary["models"], test_sets)
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
        Table("Table 1: teacher, students and BLIP", rows, columns, table1_note),
        *([Table("Encoder fine-tuning x KD", twin_table, twin_columns(test_sets, len(seeds) > 1), twin_note)]
          if twin_table else []),
        Table("Grounding: does each word's map land on what it names?", grounding, GROUNDING_COLUMNS, grounding_note,
              digits=3),
        Table("Hallucination", chair, CHAIR_COLUMNS, chair_note, digits=3),
        Figures("Training curves", curves, "Per epoch: training and validation loss, validation BLEU-4."),
        Figures("Where each model looks, word by word", compare,
                "A row per model and technique (soft attention and Grad-CAM on the encoder's last block for the "
                "LSTM models, Grad-CAM on a cross-attention layer for BLIP), with its caption and sentence BLEU-4; the same colour scale in every cell.", width="100%"),
    ])
    log.info("table of %d models -> %s, metrics/summary.json, %s", len(rows), out, page)


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

def score_cells(scores: dict, dataset: str, where: str) -> dict:
    """A Table 1 row's cells for one test set, from its evaluation's metrics: ``SCORE_KEYS`` and
    ``ceiling_share``, ``bleu4_loo / ceiling_bleu4``. Both on the same leave-one-out folds: the
    model's ``bleu4`` (all n references) over the ceiling (n-1) would overstate the gap to humans."""
    missing = [k for k in SCORE_KEYS if k not in scores]
    if missing:
        raise CaptError(f"{where}: no {', '.join(missing)} in its metrics (an older evaluation); run it again")
    cells = {f"{k}_{dataset}": scores[k] for k in SCORE_KEYS}
    cells[f"ceiling_share_{dataset}"] = scores["bleu4_loo"] / scores["ceiling_bleu4"] if scores["ceiling_bleu4"] else None
    return cells


# What each student is compared with (metrics/summary.json): the name in its keys -> the model.
BASELINES = {"base": "student_base", "teacher": "teacher"}


def paired_cells(models: list[str], test_sets: list[str], resamples: int, seed: int,
                 scores_dir: Path = Path("results/scores")) -> dict[str, dict]:
    """Student -> its paired comparisons with each of ``BASELINES`` on each test set:
    ``delta_bleu4_vs_<name>_<dataset>`` (observed), ``delta_bleu4_vs_<name>_ci95_<dataset>``
    (``[low, high]``) and ``p_bleu4_vs_<name>_<dataset>``, from the per-image statistics in
    ``scores_dir``. Every model of ``models`` but the teacher is a student, the baseline too (its
    comparison with itself reads 0, [0, 0], p 1: every student has the same keys); a baseline not
    in ``models`` is left out, with a log line."""
    baselines = {name: m for name, m in BASELINES.items() if m in models}
    for name, m in BASELINES.items():
        if name not in baselines:
            log.info("%s is not in study.models: no comparisons with it", m)
    students = [m for m in models if m != BASELINES["teacher"]]
    cells: dict[str, dict] = {m: {} for m in students}
    for dataset in test_sets:
        loaded = {m: ImageScores.read(scores_dir / f"{m}-{dataset}.json", f"evaluate@{m}-{dataset}")
                  for m in dict.fromkeys([*students, *baselines.values()])}
        for student in students:
            for name, baseline in baselines.items():
                try:
                    c = paired_bleu4(loaded[student], loaded[baseline], resamples, seed)
                except CaptError as e:
                    raise CaptError(f"{student} against {baseline} on {dataset} ({scores_dir}): {e}") from None
                cells[student].update({f"delta_bleu4_vs_{name}_{dataset}": c.delta,
                                       f"delta_bleu4_vs_{name}_ci95_{dataset}": c.ci95,
                                       f"p_bleu4_vs_{name}_{dataset}": c.p_value})
                log.info("%s - %s on %s: BLEU-4 %+.4f [%+.4f, %+.4f], p %.4f (%d resamples)", student, baseline,
                         dataset, c.delta, *c.ci95, c.p_value, resamples)
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
        loaded = {m: {s: ImageScores.read(scores_dir / f"{m}-{dataset}.json", f"evaluate@{m}-{dataset}")
                      if s == seeds[0] else
                      ImageScores.read(scores_dir / "replicates" / f"{m}-s{s}-{dataset}.json",
                                       f"evaluate_replicate@{m}-{s}-{dataset}") for s in seeds} for m in models}
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


def twin_rows(twins: dict[str, str], cells: dict[str, dict], summary: dict, test_sets: list[str]) -> list[dict]:
    """The fine-tuning x KD table: one row per frozen student, beside its fine-tuned twin."""
    rows = []
    for frozen, twin in twins.items():
        row = {"loss": summary[frozen]["loss"], "frozen": frozen, "finetuned": twin}
        for d in test_sets:
            low, high = cells[frozen][f"delta_bleu4_vs_finetuned_ci95_{d}"]
            row[f"bleu4_frozen_{d}"] = summary[frozen][f"bleu4_{d}"]
            row[f"bleu4_finetuned_{d}"] = summary[twin][f"bleu4_{d}"]
            row[f"delta_{d}"] = (f"{cells[frozen][f'delta_bleu4_vs_finetuned_{d}']:+.3f} [{low:+.3f}, {high:+.3f}], "
                                 f"p {cells[frozen][f'p_bleu4_vs_finetuned_{d}']:.3f}")
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
               seed_values: dict, scores_dir: Path = Path("results/scores")) -> dict[str, dict]:
    """Student -> its scores over the training ``seeds`` (the study's own first, then
    ``study.replicate_seeds``) on each test set (capt.eval.seeds): ``bleu4_seeds_<dataset>`` (per
    seed), ``bleu4_mean_<dataset>``, ``bleu4_sd_<dataset>``, and against the baseline trained with
    the same seed ``delta_bleu4_vs_base_seeds_<dataset>``, ``..._mean_<dataset>``, ``..._sd_<dataset>``
    and ``delta_bleu4_vs_base_mean_ci95_<dataset>`` (the two-level bootstrap over images and
    seeds). Fills ``seed_values[(model, dataset, metric)]`` with each seed's BLEU-4 and CIDEr-D."""
    students = [m for m in models if m != BASELINES["teacher"]]
    cells: dict[str, dict] = {m: {"seeds": list(seeds)} for m in students}
    for dataset in test_sets:
        by_seed = {}
        for m in students:
            by_seed[m] = {seeds[0]: ImageScores.read(scores_dir / f"{m}-{dataset}.json", f"evaluate@{m}-{dataset}")}
            for s in seeds[1:]:
                by_seed[m][s] = ImageScores.read(scores_dir / "replicates" / f"{m}-s{s}-{dataset}.json",
                                                 f"evaluate_replicate@{m}-{s}-{dataset}")
            bleu = [by_seed[m][s].bleu4 for s in seeds]
            mean, sd = mean_sd(bleu)
            cells[m].update({f"bleu4_seeds_{dataset}": bleu, f"bleu4_mean_{dataset}": mean, f"bleu4_sd_{dataset}": sd})
            seed_values[(m, dataset, "bleu4")] = tuple(bleu)
            seed_values[(m, dataset, "cider")] = tuple(by_seed[m][s].cider_mean for s in seeds)
        if BASELINES["base"] not in by_seed:
            continue
        for m in students:
            c = paired_bleu4_over_seeds(by_seed[m], by_seed[BASELINES["base"]], resamples, seed)
            cells[m].update({f"delta_bleu4_vs_base_seeds_{dataset}": list(c.deltas),
                             f"delta_bleu4_vs_base_mean_{dataset}": c.mean,
                             f"delta_bleu4_vs_base_sd_{dataset}": c.sd,
                             f"delta_bleu4_vs_base_mean_ci95_{dataset}": c.ci95})
            log.info("%s - student_base on %s over seeds %s: BLEU-4 %+.4f (sd %s) [%+.4f, %+.4f]", m, dataset,
                     seeds, c.mean, "-" if c.sd is None else f"{c.sd:.4f}", *c.ci95)
    return cells


def seed_table_cells(cells: dict, test_sets: list[str]) -> dict:
    """Table 1's text cells from :func:`seed_cells`: BLEU-4 mean +- sd (n seeds), and the mean
    difference to the baseline with its interval."""
    out = {}
    for d in test_sets:
        sd = cells[f"bleu4_sd_{d}"]
        out[f"bleu4_over_seeds_{d}"] = (f"{cells[f'bleu4_mean_{d}']:.3f} ± {sd:.3f} ({len(cells['seeds'])} seeds)"
                                        if sd is not None else f"{cells[f'bleu4_mean_{d}']:.3f}")
        if f"delta_bleu4_vs_base_mean_{d}" in cells:
            low, high = cells[f"delta_bleu4_vs_base_mean_ci95_{d}"]
            out[f"delta_over_seeds_{d}"] = f"{cells[f'delta_bleu4_vs_base_mean_{d}']:+.3f} [{low:+.3f}, {high:+.3f}]"
    return out


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
                 ("chair_i_instances", "CHAIR-i (instances only)"), ("chair_s_instances", "CHAIR-s (instances only)")]


def grounding_rows(rows: list[dict]) -> list[dict]:
    return [{"model": r["model"], "dataset": d, "technique": t, **g}
            for r in rows for d, by_technique in r.get("grounding", {}).items() for t, g in by_technique.items()]


def chair_rows(rows: list[dict]) -> list[dict]:
    return [{"model": r["model"], "dataset": d, **c} for r in rows for d, c in r.get("chair", {}).items()]


if __name__ == "__main__":
    typer.run(main)
