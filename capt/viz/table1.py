"""Table 1 and its companion tables: their columns, their text cells and their notes, and the
Markdown of ``results/table1.md`` (the HTML page, capt.viz.report, shows the same tables).

Table 1 has one row per model (capt.eval.study): encoder, LSTM (BLIP: text decoder) width,
parameters, checkpoint MB, CPU ms per image (the median and quartiles of the timed passes,
capt.eval.table), the epoch its training chose, BLEU-4 and CIDEr on every test set, its content
metric, the share of the human ceiling there, how far above the constant caption, how many
distinct captions, the scores over training seeds where students were replicated, and the seed
study's BLEU-4 beside ours where it had the variant. Its companions: every model against the
baselines, the students against the baseline student and the teacher, the fine-tuning x KD pairs,
grounding per technique and CHAIR per test set with instance masks, and the published numbers
beside ours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from annotated_types import Len

from capt.config import CHECKED, ConfigError, Count, Real, with_config
from capt.eval.bootstrap import format_p
from capt.eval.compare import COMPARED_METRICS, METRIC_NAMES
from capt.eval.study import BASELINES, CAPTION_BASELINES, PUBLISHED_METRICS
from capt.eval.table import markdown_table
from capt.viz.report import Table


@with_config(CHECKED)
@dataclass(frozen=True)
class ReportConfig:
    """The ``report`` section: how Table 1 times the models (its CPU ms column), the seed study's
    BLEU-4 (its seed column) and the published numbers beside ours (their table)."""

    timing_images: Count = 8               # test images captioned one at a time for the CPU latency
    timing_repeats: Count = 3              # timed passes over them: the median and quartiles
    timing_threads: Count = 1              # torch CPU threads while timing: the same on every machine
    beam_size: Count = 3
    max_len: Count = 20
    seed_bleu4: dict[str, Real] = field(default_factory=dict)   # model -> the seed study's BLEU-4 (its Table 1)
    published: list[dict] = field(default_factory=list)   # {model, dataset, scores: {metric: value}, source}: what
                                                     # the literature reports, printed beside our score of that metric
    difference_pairs: list[Annotated[list[str], Len(2, 2)]] = field(default_factory=list)  # [[A, B], ...]: the
                                                     # difference view's pairs; empty: each student against
                                                     # student_base, the teacher against BLIP
    difference_examples: Count = 2         # the images where A beats B most, and as many where B beats A most
    viewer_images: Count = 20              # test images in the viewer: the difference view's, then the first others

    def __post_init__(self):
        for i, entry in enumerate(self.published):
            where = f"published[{i}]"
            if set(entry) != {"model", "dataset", "scores", "source"}:
                raise ConfigError(f"{where} must have exactly model, dataset, scores and source, got {entry!r}")
            unknown = set(entry["scores"]) - set(PUBLISHED_METRICS)
            if not entry["scores"] or unknown:
                raise ConfigError(f"{where}.scores: metrics among {', '.join(PUBLISHED_METRICS)}, got {entry['scores']!r}")


def table1_columns(rows: list[dict], test_sets: list[str], over_seeds: bool) -> list[tuple]:
    """Table 1's columns: a model's size, speed and chosen epoch, its scores on each test set, and
    with ``over_seeds`` (students replicated over training seeds) its scores over the seeds."""
    return [("model", "model"), ("loss", "loss"), ("encoder", "encoder"), ("fine_tuned", "encoder fine-tuned"),
            ("hidden", "LSTM"),
            ("parameters", "parameters"), ("checkpoint_mb", "checkpoint MB", "{:.2f}"),
            ("cpu_ms_per_image", "CPU ms/image"), ("epochs", "epoch chosen"),
            *[(f"{key}_{d}", f"{header} {d}", *fmt) for d in test_sets for key, header, *fmt in
              (("bleu4", "BLEU-4"), ("cider", "CIDEr"), *content_columns(rows, d),
               ("ceiling_share", "share of ceiling", "{:.1%}"), ("above_constant", "above constant", "{:.1%}"),
               ("distinct_captions", "distinct captions"))],
            *(seed_columns(rows, test_sets) if over_seeds else []),
            ("seed_bleu4", "seed BLEU-4 (COCO)")]


def content_columns(rows: list[dict], dataset: str) -> list[tuple]:
    """Table 1's content columns on a test set: object F1 where the evaluations have it (a shapes
    world), else object coverage where they have that; and CLIP-S where they have it."""
    columns = []
    for key, header in (("object_f1", "object F1"), ("coverage", "coverage")):
        if any(r.get(f"{key}_{dataset}") is not None for r in rows):
            columns = [(key, header, "{:.3f}")]
            break
    if any(r.get(f"clip_s_{dataset}") is not None for r in rows):        # evaluate.clipscore: on
        columns.append(("clip_s", "CLIP-S", "{:.3f}"))
    return columns


def seed_columns(rows: list[dict], test_sets: list[str]) -> list[tuple]:
    """Table 1's columns over seeds: each metric's mean +- sd and its difference to student_base."""
    return [(f"{key}_{d}", f"{METRIC_NAMES[m]} {header} {d}") for d in test_sets for m in COMPARED_METRICS
            for key, header in ((f"{m}_over_seeds", "over seeds"), (f"delta_{m}_over_seeds", "vs student_base over seeds"))
            if any(f"{key}_{d}" in r for r in rows)]


def seed_table_cells(cells: dict, test_sets: list[str]) -> dict:
    """Table 1's text cells from capt.eval.study.seed_cells, per test set and metric: the mean +- sd over
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


FAITHFULNESS_COLUMNS = [("model", "model"), ("dataset", "test set"), ("technique", "technique"),
                        ("words", "words (images)"), ("deletion", "deletion AUC"),
                        ("deletion_auc_random", "random", "{:.3f}"), ("deletion_auc_centre", "centre", "{:.3f}"),
                        ("deletion_vs_random", "deletion - random"), ("insertion", "insertion AUC"),
                        ("insertion_auc_random", "random", "{:.3f}"), ("insertion_auc_centre", "centre", "{:.3f}"),
                        ("insertion_vs_random", "insertion - random"),
                        ("spearman_decoder", "maps vs randomised decoder"),
                        ("spearman_last_block", "maps vs randomised last block")]


def _interval(value: float | None, ci95: list | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    fmt = "{:+.3f}" if signed else "{:.3f}"
    return fmt.format(value) + ("" if not ci95 else f" [{fmt.format(ci95[0])}, {fmt.format(ci95[1])}]")


def faithfulness_rows(rows: list[dict]) -> list[dict]:
    """One row per model, test set and technique whose maps were explained (capt.eval.study's
    ``explained`` cells): each AUC with its interval, the baselines', the paired difference to the
    random ranking, and the sanity check's rank correlations."""
    out = []
    for r in rows:
        for d, by_technique in r.get("explained", {}).items():
            for t, e in by_technique.items():
                row = {"model": r["model"], "dataset": d, "technique": t, "words": f"{e['words']} ({e['images']})"}
                for c in ("deletion", "insertion"):
                    row[c] = _interval(e[f"{c}_auc"], e.get(f"{c}_auc_ci95"))
                    row[f"{c}_auc_random"], row[f"{c}_auc_centre"] = e[f"{c}_auc_random"], e[f"{c}_auc_centre"]
                    row[f"{c}_vs_random"] = _interval(e[f"{c}_auc_vs_random"], e.get(f"{c}_auc_vs_random_ci95"), True)
                for v in ("decoder", "last_block"):
                    row[f"spearman_{v}"] = _interval(e.get(f"spearman_{v}"), e.get(f"spearman_{v}_ci95"), True)
                out.append(row)
    return out


def faithfulness_note(steps: int) -> str:
    return ("Does a word's map explain the model? (capt.eval.faithfulness) For each word of a model's own caption, "
            "teacher-forced, the grid cells are removed (replaced by a Gaussian blur of the image) in the order its "
            f"map ranks them, in {steps} steps, or revealed from the blurred image in that order, and the word's "
            "probability recorded: the area under the deletion curve is lower, under the insertion curve higher, "
            "the more the map's top cells are what the word depends on (Petsiuk et al. 2018). Beside them the same "
            "words with the cells in a random order and nearest the centre first; each difference to random is "
            "paired on the same words, with a 95% bootstrap interval over the images. The sanity check (Adebayo et "
            "al. 2018): the mean Spearman correlation of each word's map with the map of the same word after the "
            "decoder's (or the encoder's last block's) weights are redrawn at random: near 1, the map does not "
            "depend on what the model learned, and explains nothing about it.")


def chair_rows(rows: list[dict]) -> list[dict]:
    return [{"model": r["model"], "dataset": d, **c} for r in rows for d, c in r.get("chair", {}).items()]


PUBLISHED_COLUMNS = [("model", "model"), ("dataset", "test set"), ("metric", "metric"), ("published", "published", "{:.3f}"),
                     ("ours", "ours", "{:.3f}"), ("source", "source")]


def latency_cell(t) -> str:
    """A table's CPU ms cell: the median and, in brackets, the quartiles of the passes."""
    return f"{t.median_ms:.1f} ({t.p25_ms:.1f}-{t.p75_ms:.1f})"


BASELINES_NOTE = ("The baselines: `constant`, one training caption (of the most frequent, the best on val "
                  "CIDEr-D) for every test image; `nearest`, each test image the first reference caption of its "
                  "nearest training image in the teacher's frozen trunk (cosine of the mean-pooled features). A "
                  "score a baseline also reaches is no evidence that a model looks at the image. Above constant: "
                  "(bleu4_loo - the constant's) / (ceiling - the constant's), 0 the constant caption, 1 the humans.")
CONTENT_NOTE = ("Object F1 (shapes worlds; capt.eval.content): the objects a caption states, each matched to a "
                "true object with its shape and every colour or size it names, F1 over the test set's stated and "
                "true objects, with its 95% bootstrap interval in metrics/eval (object_f1_ci95); coverage "
                "(datasets with instances): the share of each image's annotated categories the caption names.")


PUBLISHED_NOTE = ("What the source reports for the model this study runs (or the one it reimplements) on that test "
                  "set, and our score of the same metric: a run far from them is not calibrated (image size, beam, "
                  "tokenizer, training), whatever its comparisons say.")


FIGURE1_NOTE = ("Each model's BLEU-4 and CIDEr-D on each test set: the bar is its 95% percentile bootstrap interval "
                "over the test images, the tick its score, the dots its training seeds; dashed lines: the baseline "
                "student and the teacher. metrics/summary.json pairs every student with both on the same resamples.")


def ceiling_note(rows: list[dict], test_sets: list[str]) -> str:
    """What the share of the ceiling is, and the human ceiling of each test set (one value for
    every model: it depends on the references only)."""
    ceilings = ", ".join(f"{d} {rows[0][f'ceiling_bleu4_{d}']:.4f} ({rows[0][f'ceiling_folds_{d}']} folds)"
                         for d in test_sets) if rows else "-"
    return ("Share of ceiling: bleu4_loo / ceiling_bleu4, the model's BLEU-4 over the humans', both on the same "
            "leave-one-out folds (fold k: each image's reference k is the human caption and its other references "
            "the references of both; the mean over the folds), not the BLEU-4 column, which is against every "
            f"reference; human ceiling BLEU-4: {ceilings}.")


def table1_note(rows: list[dict], test_sets: list[str], evaluations: dict, cfg: ReportConfig, *, timed_images: int,
                beam_size: int, tokenizer: str) -> str:
    """Table 1's note: how each column was measured. ``cfg`` and ``timed_images``: the CPU timing's;
    ``beam_size`` and ``tokenizer``: the evaluations' (``evaluate``); ``evaluations``
    (capt.eval.study.evaluation_cells) give the number of test images."""
    return (f"BLEU-4 (nltk corpus BLEU against every reference) and CIDEr on each test split "
            f"(beam {beam_size}, {tokenizer} tokenizer). "
            f"{ceiling_note(rows, test_sets)} CPU ms per image: one {test_sets[0]} test image at a time, beam "
            f"{cfg.beam_size}, {cfg.timing_threads} thread(s); the median (quartiles) of {cfg.timing_repeats} "
            f"passes over {timed_images} images, every model timed in turn in each pass (a wall-clock "
            "time: results/latency.json, not the metrics). Epoch chosen: the best of the epochs run on the "
            "val score of train.select_on (metrics/train); a model whose last epoch is its best was still "
            "improving when its epochs ran out. The seed's BLEU-4 is on COCO, beside ours for the variants it had. "
            f"{BASELINES_NOTE} {CONTENT_NOTE} Distinct captions: how many different captions a model writes for the "
            + ", ".join(f"{evaluations[(rows[0]['model'], d)]['images']} {d}" for d in test_sets)
            + " test images; its vocabulary and the share of its captions that are no training caption "
            "verbatim are in metrics/eval (vocabulary_used, novel_share).")


def seed_note(resamples: int) -> str:
    """The comparisons' note: their intervals are over the test images of one training run."""
    return (f"One training run per model: each interval is a 95% paired percentile bootstrap over the test images "
            f"({resamples} resamples) and p an approximate randomisation test on the same images; they say how "
            "sure the difference is for these trained weights, not for the method: another training seed can "
            "change it as much (dvc exp run -S seeds=five replicates every student).")


def grounding_note(tolerance: float) -> str:
    """The grounding table's note; ``tolerance``: the pointing game's, in pixels (``evaluate.grounding_tolerance``)."""
    return ("Each mention of an object category in a model's own test captions whose category is in the "
            "image, scored on that word's map upsampled to the image's original size. Pointing game: the "
            f"map's maximum within {tolerance:g} px of the category's "
            "mask; mass: the share of the map inside the mask. Baselines on the same words: the image's "
            "centre point, and a uniform map.")


CHAIR_NOTE = ("CHAIR (Rohrbach et al. 2018, their synonym table and rules): a mention is hallucinated when its "
              "category is neither annotated in the image nor named by one of its reference captions. CHAIR-i: "
              "hallucinated mentions / mentions; CHAIR-s: captions with one / captions. The instances-only "
              "columns take the annotated instances alone as the truth. Object coverage, its other side: the "
              "share of each image's annotated categories the caption names (capt.eval.content).")
TWIN_NOTE = ("The seed study's follow-up (a): its students, fine-tuned, beat its teacher, whose encoder was "
             "frozen. Each student with a frozen encoder (distill.<variant>.fine_tune: false) beside the "
             "student with the same loss and a fine-tuned encoder; frozen - fine-tuned is paired on the same "
             "test images (95% bootstrap interval, p from approximate randomisation). With the baseline and "
             "decoder KD, the two rows are a 2x2: fine-tuning's effect with and without KD.")


def table1_markdown(table1: Table, vs_baselines: Table, vs_students: Table, published: Table | None,
                    twins: Table | None, grounding: Table, chair: Table, faithfulness: Table | None = None) -> str:
    """The text of ``results/table1.md``: Table 1 and its companions (the page's tables: their rows,
    columns and notes; Markdown has its own headings), a section left out where its table is None."""
    text = f"# Table 1: teacher, students, BLIP and the baselines\n\n{table1.note}\n\n" + markdown_table(
        table1.rows, table1.columns)
    text += ("\n## Against the baselines\n\nEach model minus the constant caption and minus the nearest neighbour, "
             "paired on the same test images. " + vs_baselines.note + "\n\n"
             + markdown_table(vs_baselines.rows, vs_baselines.columns))
    text += ("\n## Students against the baseline student and the teacher\n\n" + vs_students.note + "\n\n"
             + markdown_table(vs_students.rows, vs_students.columns))
    if published is not None:
        text += f"\n## Published numbers beside ours\n\n{published.note}\n\n" + markdown_table(published.rows,
                                                                                                  published.columns)
    if twins is not None:
        text += "\n## Encoder fine-tuning x KD\n\n" + twins.note + "\n\n" + markdown_table(twins.rows, twins.columns)
    text += "\n## Grounding\n\n" + grounding.note + "\n\n" + markdown_table(grounding.rows, grounding.columns)
    if faithfulness is not None:
        text += ("\n### Faithfulness and the sanity check\n\n" + faithfulness.note + "\n\n"
                 + markdown_table(faithfulness.rows, faithfulness.columns))
    text += ("\n## Hallucination\n\n" + chair.note + "\n\n" + markdown_table(chair.rows, chair.columns))
    return text
