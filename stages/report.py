"""Stage report: the study's Table 1, our way, its grounding and hallucination numbers, and an
HTML page with all of it.

One row per model of ``study.models`` (teacher, each student), BLIP and the baselines (a row's
cells: capt.eval.study; Table 1's columns and notes: capt.viz.table1). Params: ``report`` (the CPU
timing, ``timing_repeats`` passes over ``timing_images`` images of ``study.test_sets[0]`` on
``timing_threads`` threads at ``beam_size`` and ``max_len``, BLIP at its own caption settings; the
seed study's BLEU-4 and the published scores shown beside ours), ``study``, ``distill`` (each
student's loss), ``blip.source`` and ``blip.pretrained`` (what BLIP's row says it is),
``students.train.seed`` and ``students.encoder.fine_tune`` (the seeds and the fine-tuning x KD
pairs compared), ``evaluate.beam_size``, ``.tokenizer`` and ``.grounding_tolerance`` (the notes),
``evaluate.bootstrap_resamples`` and ``.bootstrap_seed`` (the comparisons). Reads
``metrics/eval/<model>-<dataset>.json``, ``metrics/train/<model>.json``, ``models/``, the
per-image statistics (``results/scores``, ``results/content``), the training curves
(``results/curves``) and the comparison figures (``results/attention/compare``); writes
``metrics/summary.json`` (with every comparison of capt.eval.study), ``results/table1.md``,
``results/latency.json``, ``results/figure1.png`` (its numbers in ``results/plots/``) and
``results/report/index.html`` (its images in ``results/report/img/``: it opens offline, anywhere).

The CPU timings are wall-clock and differ on every run, so they go to ``results/latency.json``
and the tables, never to ``metrics/summary.json``: after a change to one student,
``dvc metrics diff`` lists that student's numbers alone.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
import typer

from capt.blip.model import BlipStudyConfig, caption_images, load_blip, read_generation
from capt.config import Flag, Int
from capt.eval.baselines import BASELINE_MODELS
from capt.data.cache import open_h5, read_references
from capt.eval.difference import image_truths, read_images, read_model_outputs
from capt.eval.evaluation import EvaluateConfig, test_instances
from capt.eval.study import (BASELINE_LOSS, BASELINES, CAPTION_BASELINES, above_constant_cells, blip_loss,
                             difference_pairs, epochs_cell, evaluation_cells, finetuning_twins, loss_cell, paired_cells,
                             published_rows, seed_cells, twin_cells)
from capt.eval.table import folder_mb, model_size, write_latency
from capt.models.saved import load_captioner
from capt.train.distill import DistillConfig
from capt.viz.difference import difference_view
from capt.viz.report import Figures, Link, Table, write_report
from capt.viz.viewer import write_viewer
from capt.viz.scores import write_figure1
from capt.viz.table1 import (CHAIR_COLUMNS, CHAIR_NOTE, FAITHFULNESS_COLUMNS, FIGURE1_NOTE, GROUNDING_COLUMNS,
                             PUBLISHED_COLUMNS, PUBLISHED_NOTE, TWIN_NOTE, ReportConfig, chair_rows, comparison_columns,
                             comparison_rows, faithfulness_note, faithfulness_rows, grounding_note, grounding_rows,
                             latency_cell, seed_note, seed_table_cells, table1_columns, table1_markdown, table1_note,
                             twin_columns, twin_rows)
from stages._common import (StudyConfig, make_config, read_config, read_params, stage_main, study_models,
                             write_atomic, write_json)

log = logging.getLogger("stages.report")


@stage_main
def main() -> None:
    cfg = read_config(ReportConfig, "report")
    study_cfg, evaluation = read_config(StudyConfig, "study"), read_config(EvaluateConfig, "evaluate")
    test_sets, study, replicate_seeds = study_cfg.test_sets, study_cfg.models, study_cfg.replicate_seeds
    variants = read_params("distill")
    make_config(dict[str, DistillConfig], variants, "distill")     # every variant's loss, as distill@<variant> checks it
    timing_set = Path("data/prepared") / test_sets[0] / "test.h5"
    with open_h5(timing_set, ("images",)) as f:
        images = torch.from_numpy(f["images"][: cfg.timing_images])
    rows, captioners, evaluations = [], {}, {}
    for model in study_models():
        path = Path("models") / model
        if path.is_dir():                      # BLIP
            blip, processor = load_blip(path)
            gen = read_generation(path)
            trained = json.loads(Path("metrics/train/blip.json").read_text())["epochs_run"] > 0
            blip_cfg = read_config(BlipStudyConfig, "blip")
            row = {"model": model, "loss": blip_loss(blip_cfg.source, blip_cfg.pretrained, trained),
                   "encoder": f"ViT/{blip.config.vision_config.patch_size} (BLIP)", "fine_tuned": True,
                   "hidden": blip.config.text_config.hidden_size,
                   "parameters": sum(p.numel() for p in blip.parameters()), "checkpoint_mb": folder_mb(path)}
            captioners[model] = lambda im, blip=blip, processor=processor, gen=gen: caption_images(
                blip, processor, im, gen)
        else:
            captioner = load_captioner(path.with_suffix(".pt"))
            row = {"model": model, "loss": loss_cell(variants.get(model)),
                   **model_size(captioner, path.with_suffix(".pt"))}
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
    latency = write_latency(captioners, images, Path("results/latency.json"), dataset=test_sets[0],
                            repeats=cfg.timing_repeats, threads=cfg.timing_threads, beam_size=cfg.beam_size)
    for row in rows:                           # the tables show it; metrics/summary.json never does
        if row["model"] in captioners:
            row["cpu_ms_per_image"] = latency_cell(latency[row["model"]])
            row["epochs"] = epochs_cell(row["model"])
    resamples, boot_seed = evaluation.bootstrap_resamples, evaluation.bootstrap_seed
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
    seeds = [read_config(Int, "students", "train", "seed"), *replicate_seeds]
    twins = finetuning_twins(variants, study, read_config(Flag, "students", "encoder", "fine_tune"))
    twin_values = twin_cells(twins, test_sets, seeds, resamples, boot_seed)
    for student, cells in twin_values.items():
        summary["models"][student].update(cells)
    seed_values: dict = {}
    if replicate_seeds:
        for student, cells in seed_cells(study, test_sets, seeds, resamples, boot_seed, seed_values,
                                         content_dir=Path("results/content")).items():
            summary["models"][student].update(cells)
            next(r for r in rows if r["model"] == student).update(seed_table_cells(cells, test_sets))
    write_json(Path("metrics/summary.json"), summary, sort_keys=False)   # rows in study order

    table1 = Table("Table 1: teacher, students, BLIP and the baselines", rows,
                   table1_columns(rows, test_sets, bool(replicate_seeds)),
                   table1_note(rows, test_sets, evaluations, cfg, timed_images=len(images),
                               beam_size=evaluation.beam_size, tokenizer=evaluation.tokenizer))
    vs_baselines = comparison_rows(summary["models"], study_models(), list(CAPTION_BASELINES), test_sets, resamples)
    vs_students = comparison_rows(summary["models"], students, [n for n, m in BASELINES.items() if m in study],
                                  test_sets, resamples)
    note = seed_note(resamples)
    against_baselines = Table("Against the baselines", vs_baselines, comparison_columns(vs_baselines, test_sets), note)
    against_students = Table("Students against the baseline student and the teacher", vs_students,
                             comparison_columns(vs_students, test_sets), note)
    published = published_rows(cfg.published, summary["models"])
    published_table = (Table("Published numbers beside ours", published, PUBLISHED_COLUMNS, PUBLISHED_NOTE)
                       if published else None)
    twin_table = twin_rows(twins, twin_values, summary["models"], test_sets, resamples)
    twin_section = (Table("Encoder fine-tuning x KD", twin_table, twin_columns(test_sets, len(seeds) > 1), TWIN_NOTE)
                    if twin_table else None)
    grounding = Table("Grounding: does each word's map land on what it names?", grounding_rows(rows),
                      GROUNDING_COLUMNS, grounding_note(evaluation.grounding_tolerance), digits=3)
    explained = faithfulness_rows(rows)
    faithfulness = (Table("Faithfulness: does each word's map explain the model?", explained, FAITHFULNESS_COLUMNS,
                          faithfulness_note(evaluation.faithfulness_steps), digits=3)
                    if explained else None)
    chair = Table("Hallucination", chair_rows(rows), CHAIR_COLUMNS, CHAIR_NOTE, digits=3)
    out = Path("results/table1.md")
    write_atomic(out, table1_markdown(table1, against_baselines, against_students, published_table, twin_section,
                                   grounding, chair, faithfulness))

    # Why A beats B, on the first test set: the images where the pair differ most, and every word's maps
    dataset = test_sets[0]
    test_h5 = Path("data/prepared") / dataset / "test.h5"
    outputs = {m: read_model_outputs(m, dataset) for m in study_models()}
    image_ids = outputs[study[0]].scores.image_ids
    instances = test_instances(Path("data/raw") / dataset, image_ids)
    truths = None if instances is None else image_truths(instances, image_ids, read_references(test_h5))
    pairs = [tuple(p) for p in cfg.difference_pairs] or difference_pairs(study_models())
    difference_sections, _, shown = difference_view(pairs, outputs, test_h5, truths, Path("results/difference"),
                                                    cfg.difference_examples)

    figure = write_figure1(evaluations, test_sets, Path("results/figure1.png"), Path("results/plots"), seed_values)
    curves = [(Path("results/curves") / f"{r['model']}.png", f"{r['model']}: training curves") for r in rows
              if (Path("results/curves") / f"{r['model']}.png").exists()]
    compare = [(p, f"test image {p.stem}") for p in sorted(Path("results/attention/compare").glob("*.png"),
                                                           key=lambda p: int(p.stem) if p.stem.isdigit() else p.stem)]
    page = write_report(Path("results/report"), "capt: the study", (
        f"Every model of the study on {', '.join(test_sets)}: the numbers of metrics/summary.json and the figures "
        "of the DAG, made by the report stage."), [
        Figures("Figure 1: does distillation help?", [figure], FIGURE1_NOTE, width="100%"),
        table1, against_baselines, against_students, *([twin_section] if twin_section else []), grounding,
        *([faithfulness] if faithfulness else []), chair,
        *([published_table] if published_table else []),
        Figures("Training curves", curves, "Per epoch: training and validation loss, validation BLEU-4."),
        Figures("Where each model looks, word by word", compare,
                "A row per model and technique (soft attention and Grad-CAM on the encoder's last block for the "
                "LSTM models, Grad-CAM on a cross-attention layer for BLIP), with its caption and sentence BLEU-4; the same colour scale in every cell.", width="100%"),
        Link("Every word's map, image by image: the viewer", "viewer/index.html",
             f"{min(cfg.viewer_images, len(image_ids))} {dataset} test images (first those of the difference view "
             "below), every model and technique: pick an image and a model, step through its words."),
        *difference_sections,
    ])
    viewer_ids = list(dict.fromkeys([*shown, *image_ids]))[:cfg.viewer_images]
    write_viewer(page.parent / "viewer", read_images(test_h5, viewer_ids), list(outputs.values()), truths=truths,
                 pair=pairs[0] if pairs else None, title=f"capt: every word's map on {dataset}")
    log.info("table of %d models -> %s, metrics/summary.json, %s", len(rows), out, page)


if __name__ == "__main__":
    typer.run(main)
