"""The HTML report: written offline-ready, rendered in headless Chromium, its tables and every
image there; a missing image shows as missing."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from capt.config import build_config
from capt.viz.report import Figures, Table, write_report
from tests.browser import rendered_dom


def _png(path: Path, colour) -> Path:
    Image.fromarray(np.full((20, 30, 3), colour, np.uint8)).save(path)
    return path


@pytest.fixture
def report(tmp_path) -> Path:
    curves = [_png(tmp_path / "teacher.png", (200, 0, 0)), _png(tmp_path / "student.png", (0, 200, 0))]
    compare = [_png(tmp_path / "7.png", (0, 0, 200))]
    rows = [{"model": "teacher", "bleu4": 0.5123456, "parameters": 2040816, "seed": None},
            {"model": "student <b>", "bleu4": 0.25, "parameters": 923120, "seed": 0.1207}]
    cols = [("model", "model"), ("parameters", "parameters"), ("bleu4", "BLEU-4"), ("seed", "seed BLEU-4")]
    return write_report(tmp_path / "report", "capt: the study", "intro", [
        Table("Table 1", rows, cols, "a note"),
        Figures("Training curves", [(p, p.stem) for p in curves]),
        Figures("Comparisons", [(p, "image 7") for p in compare], width="100%"),
    ])


def test_report_is_self_contained(report):
    text = report.read_text()
    assert "http://" not in text and "https://" not in text             # nothing from the network
    srcs = re.findall(r'<img src="([^"]+)"', text)
    assert srcs == ["img/001-teacher.png", "img/002-student.png", "img/003-7.png"]
    assert all((report.parent / s).is_file() for s in srcs)
    assert "student &lt;b&gt;" in text and "0.5123" in text and "2,040,816" in text and "<td>-</td>" in text


def test_report_renders_in_headless_chromium_with_its_table_and_every_image(report):
    dom = rendered_dom(report)
    assert 'data-images-loaded="3"' in dom and 'data-images-broken="0"' in dom, dom[:2000]
    table = re.search(r"<table>.*?</table>", dom, re.S).group(0)
    assert len(re.findall(r"<tr>", table)) == 3                        # header + two models
    assert "<td>0.5123</td>" in table and "student &lt;b&gt;" in table


def test_a_missing_image_shows_in_the_rendered_page(report):
    (report.parent / "img/002-student.png").unlink()
    dom = rendered_dom(report)
    assert 'data-images-broken="1"' in dom and "1 image(s) missing from this report" in dom


def test_an_image_missing_when_writing_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png: missing"):
        write_report(tmp_path / "r", "t", "i", [Figures("f", [(tmp_path / "nope.png", "x")])])


def test_markdown_and_html_tables_format_each_column():
    from capt.eval.table import markdown_table

    rows = [{"model": "teacher", "mb": 7.83, "ms": 24.7, "bleu4": 0.5, "n": 2040816, "seed": None}]
    cols = [("model", "model"), ("mb", "checkpoint MB", "{:.2f}"), ("ms", "CPU ms", "{:.1f}"),
            ("bleu4", "BLEU-4"), ("n", "parameters"), ("seed", "seed")]
    lines = markdown_table(rows, cols).splitlines()
    assert lines[1] == "|---|---:|---:|---:|---:|---:|"
    assert lines[2] == "| teacher | 7.83 | 24.7 | 0.5000 | 2,040,816 | - |"
    text = markdown_table([{"model": "a", "loss": "task"}], [("model", "model"), ("loss", "loss")]).splitlines()
    assert text[1] == "|---|---|"                          # text columns stay left-aligned
    html_table = Table("t", rows, cols, digits=3).html()
    assert "<td>7.83</td><td>24.7</td><td>0.500</td><td>2,040,816</td><td>-</td>" in html_table


def test_share_of_the_ceiling_is_bleu4_loo_over_ceiling_bleu4():
    from capt.errors import CaptError
    from capt.eval.study import score_cells
    from capt.viz.table1 import ceiling_note

    scores = {"bleu4": 0.52, "bleu4_coco": 0.53, "cider": 2.7, "bleu4_loo": 0.45, "ceiling_bleu4": 0.6,
              "ceiling_folds": 5, "images": 250}
    cells = score_cells(scores, "shapes", "metrics/eval/teacher-shapes.json")
    assert cells["ceiling_share_shapes"] == pytest.approx(0.75)        # not bleu4 / ceiling (0.867)
    assert (cells["bleu4_shapes"], cells["bleu4_coco_shapes"], cells["ceiling_folds_shapes"]) == (0.52, 0.53, 5)
    assert "images_shapes" not in cells
    note = ceiling_note([cells], ["shapes"])
    assert "bleu4_loo / ceiling_bleu4" in note and "same leave-one-out folds" in note
    assert "shapes 0.6000 (5 folds)" in note
    old = {k: v for k, v in scores.items() if k != "bleu4_loo"}       # an evaluation before the LOO folds
    with pytest.raises(CaptError, match="no bleu4_loo"):
        score_cells(old, "shapes", "metrics/eval/teacher-shapes.json")


def test_every_student_is_compared_with_the_baseline_and_the_teacher_on_every_test_set(tmp_path):
    import json

    from capt.errors import CaptError
    from capt.eval.metrics import image_scores
    from capt.eval.study import paired_cells

    refs = {i: [f"a {c} circle above a {d} square" for c, d in (("red", "blue"), ("big", "small"))]
            for i in range(1, 31)}
    hyps = {"teacher": {i: r[0] for i, r in refs.items()},                       # the best captions
            "student_base": {i: "a circle above a square" for i in refs},
            "student_kd": {i: (r[1] if i % 2 else "a circle above a square") for i, r in refs.items()}}
    for model, h in hyps.items():
        for dataset in ("shapes", "shapes-shift"):
            image_scores(refs, h).write(tmp_path / f"{model}-{dataset}.json", model, dataset)
    students, references = ["student_base", "student_kd"], {"base": "student_base", "teacher": "teacher"}
    cells = paired_cells(students, references, ["shapes", "shapes-shift"], 1000, 0, tmp_path)
    assert set(cells) == {"student_base", "student_kd"}
    kd, base = cells["student_kd"], cells["student_base"]
    assert set(kd) == {f"{k}_{metric}_vs_{b}{ci}_{d}" for k, ci in (("delta", ""), ("delta", "_ci95"), ("p", ""))
                       for metric in ("bleu4", "cider") for b in ("base", "teacher") for d in ("shapes", "shapes-shift")}
    assert (base["delta_bleu4_vs_base_shapes"], base["delta_bleu4_vs_base_ci95_shapes"],
            base["p_bleu4_vs_base_shapes"]) == (0.0, [0.0, 0.0], 1.0)
    want = image_scores(refs, hyps["student_kd"]).bleu4 - image_scores(refs, hyps["student_base"]).bleu4
    assert kd["delta_bleu4_vs_base_shapes"] == pytest.approx(want, abs=1e-15) and want > 0.1
    low, high = kd["delta_bleu4_vs_base_ci95_shapes"]
    assert 0 < low < want < high and kd["p_bleu4_vs_base_shapes"] < 0.01
    assert kd["delta_bleu4_vs_teacher_shapes"] < 0 and kd["p_bleu4_vs_teacher_shapes"] < 0.01
    want = image_scores(refs, hyps["student_kd"]).cider_mean - image_scores(refs, hyps["student_base"]).cider_mean
    assert kd["delta_cider_vs_base_shapes"] == pytest.approx(want)     # every image's references alike: idf 0
    shifted = {k.removesuffix("_shapes-shift"): v for k, v in kd.items() if k.endswith("_shapes-shift")}
    assert shifted == {k.removesuffix("_shapes"): v for k, v in kd.items() if k.endswith("_shapes")}   # same images
    json.dumps(cells)                                                            # summary.json takes it as is
    from capt.viz.table1 import comparison_rows
    rows = comparison_rows(cells, students, list(references), ["shapes", "shapes-shift"], 1000)
    assert [(r["model"], r["against"]) for r in rows] == [("student_base", "teacher"), ("student_kd", "student_base"),
                                                           ("student_kd", "teacher")]    # no row of the base against itself
    assert rows[1]["cider_shapes"].startswith(f"{kd['delta_cider_vs_base_shapes']:+.3f} [")

    only_teacher = paired_cells(["student_kd"], {"teacher": "teacher"}, ["shapes"], 1000, 0, tmp_path)
    assert set(only_teacher["student_kd"]) == {f"{k}_{m}_vs_teacher{ci}_shapes" for m in ("bleu4", "cider")
                                               for k, ci in (("delta", ""), ("delta", "_ci95"), ("p", ""))}
    (tmp_path / "student_kd-shapes-shift.json").unlink()
    with pytest.raises(CaptError, match=r"student_kd-shapes-shift.json: missing; run evaluate@student_kd"):
        paired_cells(students, references, ["shapes", "shapes-shift"], 1000, 0, tmp_path)


def test_blips_row_says_which_checkpoint_it_is_and_whether_it_was_tuned_here():
    from capt.eval.study import blip_loss

    base = "Salesforce/blip-image-captioning-base"
    assert blip_loss("pretrained", base, False) == (f"zero-shot: {base}, the COCO-finetuned captioning checkpoint, "
                                                    "used without further tuning")
    assert blip_loss("pretrained", base, True).endswith("the COCO-finetuned captioning checkpoint, fine-tuned further here")
    assert blip_loss("pretrained", "me/my-blip", False) == ("zero-shot: me/my-blip, a pretrained checkpoint, "
                                                            "used without further tuning")
    assert blip_loss("small", base, True) == "LM (trained here)"


def test_published_numbers_sit_beside_ours_for_the_models_and_metrics_named():
    from capt.errors import CaptError
    from capt.eval.study import published_rows
    from capt.viz.table1 import ReportConfig

    published = [{"model": "teacher", "dataset": "coco", "scores": {"bleu4_coco": 0.243}, "source": "Xu"},
                 {"model": "blip", "dataset": "coco", "scores": {"bleu4_coco": 0.397, "meteor": 0.3}, "source": "Li"},
                 {"model": "student_x", "dataset": "coco", "scores": {"bleu4": 0.1}, "source": "not in the study"}]
    models = {"teacher": {"bleu4_coco_coco": 0.21, "bleu4_coco_flickr8k": 0.15},
              "blip": {"bleu4_coco_coco": 0.38, "cider_coco": 1.2}}
    rows = published_rows(ReportConfig(published=published).published, models)
    assert [(r["model"], r["metric"], r["published"], r["ours"]) for r in rows] == [
        ("teacher", "bleu4_coco", 0.243, 0.21), ("blip", "bleu4_coco", 0.397, 0.38), ("blip", "meteor", 0.3, None)]
    assert rows[0]["source"] == "Xu" and rows[0]["dataset"] == "coco"
    with pytest.raises(CaptError, match=r"^params.yaml: report: published\[0\].scores: metrics among bleu4, bleu4_coco, "
                                        r"cider"):
        build_config(ReportConfig, {"published": [{**published[0], "scores": {"bleu": 0.2}}]}, "report")
    with pytest.raises(CaptError, match=r"^params.yaml: report: published\[1\] must have exactly model, dataset, scores "
                                        r"and source"):
        build_config(ReportConfig, {"published": [published[0], {"model": "blip", "scores": {"cider": 1.0}}]}, "report")


def test_latency_is_the_median_of_passes_with_every_model_timed_in_turn():
    """A fake clock: model a takes 10 ms per image, b 30 ms, and in the third pass the machine is
    ten times slower for both. The medians drop that pass; the quartiles are of the passes; the
    warm-up is untimed; the models alternate within each pass; torch runs on the asked threads."""
    import torch

    from capt.errors import CaptError
    from capt.eval.table import time_per_image

    now, clock_reads, calls, threads_seen = [0.0], [], [], set()

    def clock():
        clock_reads.append(now[0])
        return now[0]

    def model(name, seconds):
        def caption(image):
            assert image.shape == (1, 3, 4, 4)
            calls.append(name)
            threads_seen.add(torch.get_num_threads())
            timed_pass = (len(clock_reads) - 1) // 4            # two reads per model per pass
            now[0] += seconds * (10 if len(clock_reads) % 2 == 1 and timed_pass == 2 else 1)
        return caption

    images = torch.zeros(3, 3, 4, 4, dtype=torch.uint8)
    before = torch.get_num_threads()
    latency = time_per_image({"a": model("a", 0.010), "b": model("b", 0.030)}, images, warmup=1, repeats=5,
                             threads=1, clock=clock)
    assert torch.get_num_threads() == before and threads_seen == {1}
    assert calls[:2] == ["a", "b"]                                   # warm-up: one image each, untimed
    assert calls[2:] == (["a"] * 3 + ["b"] * 3) * 5                  # each pass: every model in turn
    assert latency["a"].median_ms == pytest.approx(10.0) and latency["b"].median_ms == pytest.approx(30.0)
    assert (latency["a"].p25_ms, latency["a"].p75_ms) == pytest.approx((10.0, 10.0))
    assert (latency["a"].repeats, latency["a"].images, latency["a"].threads) == (5, 3, 1)
    slow = time_per_image({"a": model("a", 0.010)}, images, warmup=0, repeats=1, clock=clock)
    assert slow["a"].median_ms == pytest.approx(10.0)
    with pytest.raises(CaptError, match="at least one image, repeat and thread"):
        time_per_image({"a": model("a", 0.010)}, images, repeats=0)


def test_students_over_seeds_mean_sd_and_the_t_interval_against_the_baseline(tmp_path):
    """Seed 0 is the study's own evaluation (results/scores), seeds 1 and 2 replicates
    (results/scores/replicates): per seed BLEU-4, mean and sd, the paired difference with the
    baseline of the same seed, and capt.eval.seeds' interval; Table 1's text cells from them."""
    import json

    from capt.errors import CaptError
    from capt.eval.metrics import image_scores
    from capt.eval.seeds import paired_bleu4_over_seeds
    from capt.eval.study import seed_cells
    from capt.viz.table1 import seed_table_cells

    refs = {i: [f"a {c} circle above a {d} square" for c, d in (("red", "blue"), ("big", "small"))]
            for i in range(1, 31)}
    weak = "a circle above a square"

    def hyps(model, seed):
        good = {"student_base": 3 + seed, "student_kd": 9 + seed}[model]          # images captioned well
        return {i: (r[0] if i <= good else weak) for i, r in refs.items()}

    scores = {}
    for model in ("student_base", "student_kd"):
        for seed in (0, 1, 2):
            scores[model, seed] = image_scores(refs, hyps(model, seed))
            path = (tmp_path / f"{model}-shapes.json" if seed == 0
                    else tmp_path / "replicates" / f"{model}-s{seed}-shapes.json")
            scores[model, seed].write(path, model, "shapes")
    dots: dict = {}
    cells = seed_cells(["teacher", "student_base", "student_kd"], ["shapes"], [0, 1, 2], 1000, 0, dots, tmp_path)
    kd = cells["student_kd"]
    per_seed = [scores["student_kd", s].bleu4 for s in (0, 1, 2)]
    assert kd["seeds"] == [0, 1, 2] and kd["bleu4_seeds_shapes"] == per_seed
    assert kd["bleu4_mean_shapes"] == pytest.approx(np.mean(per_seed))
    assert kd["bleu4_sd_shapes"] == pytest.approx(np.std(per_seed, ddof=1)) and kd["bleu4_sd_shapes"] > 0
    want = paired_bleu4_over_seeds({s: scores["student_kd", s] for s in (0, 1, 2)},
                                   {s: scores["student_base", s] for s in (0, 1, 2)}, 1000, 0)
    assert kd["delta_bleu4_vs_base_seeds_shapes"] == list(want.deltas) and all(d > 0 for d in want.deltas)
    assert kd["delta_bleu4_vs_base_mean_ci95_shapes"] == want.ci95 and want.ci95[0] > 0
    assert cells["student_base"]["delta_bleu4_vs_base_mean_ci95_shapes"] == [0.0, 0.0]
    assert dots["student_kd", "shapes", "bleu4"] == tuple(per_seed) and len(dots["student_kd", "shapes", "cider"]) == 3
    table = seed_table_cells(kd, ["shapes"])
    assert table["bleu4_over_seeds_shapes"] == f"{np.mean(per_seed):.3f} ± {np.std(per_seed, ddof=1):.3f} (3 seeds)"
    assert table["delta_bleu4_over_seeds_shapes"] == f"{want.mean:+.3f} [{want.ci95[0]:+.3f}, {want.ci95[1]:+.3f}] (3 seeds)"
    assert kd["delta_cider_vs_base_seeds_shapes"] == [scores["student_kd", s].cider_mean
                                                      - scores["student_base", s].cider_mean for s in (0, 1, 2)]
    json.dumps(cells)
    (tmp_path / "replicates" / "student_kd-s2-shapes.json").unlink()
    with pytest.raises(CaptError, match=r"student_kd-s2-shapes.json: missing; run evaluate_replicate@student_kd-2"):
        seed_cells(["student_base", "student_kd"], ["shapes"], [0, 1, 2], 1000, 0, {}, tmp_path)


def test_a_frozen_encoder_student_is_paired_with_its_fine_tuned_twin(tmp_path):
    """The seed study's follow-up (a): each fine_tune-false variant finds the variant with the same
    loss and a fine-tuned encoder, and the report pairs the two on the same images (per seed too)."""
    from capt.eval.bootstrap import paired_bleu4
    from capt.eval.metrics import image_scores
    from capt.eval.seeds import paired_bleu4_over_seeds
    from capt.eval.study import finetuning_twins, twin_cells
    from capt.viz.table1 import twin_columns, twin_rows

    variants = {"student_base": {"beta": 0.0}, "student_dec": {"beta": 0.3, "temperature": 20.0, "w_dec": 1.0},
                "student_frozen": {"beta": 0.0, "fine_tune": False},
                "student_frozen_dec": {"beta": 0.3, "temperature": 20.0, "w_dec": 1.0, "fine_tune": False},
                "student_frozen_t5": {"beta": 0.3, "temperature": 5.0, "w_dec": 1.0, "fine_tune": False}}
    models = ["teacher", *variants]
    assert finetuning_twins(variants, models) == {"student_frozen": "student_base",
                                                  "student_frozen_dec": "student_dec"}   # t5: no twin
    assert finetuning_twins(variants, ["teacher", "student_frozen", "student_dec"]) == {}  # its twin not studied
    # students.encoder.fine_tune false: the variants without fine_tune are the frozen ones
    assert finetuning_twins({"a": {"beta": 0.0}, "b": {"beta": 0.0, "fine_tune": True}}, ["a", "b"], False) == {"a": "b"}

    refs = {i: [f"a {c} circle above a {d} square" for c, d in (("red", "blue"), ("big", "small"))]
            for i in range(1, 31)}
    good = {"student_base": 20, "student_dec": 24, "student_frozen": 6, "student_frozen_dec": 15}
    scores = {}
    for model, n in good.items():
        for seed in (0, 1):
            scores[model, seed] = image_scores(refs, {i: (r[0] if i <= n + seed else "a circle above a square")
                                                      for i, r in refs.items()})
            scores[model, seed].write(tmp_path / f"{model}-shapes.json" if seed == 0 else
                                      tmp_path / "replicates" / f"{model}-s{seed}-shapes.json", model, "shapes")
    twins = finetuning_twins(variants, models)
    cells = twin_cells(twins, ["shapes"], [0], 1000, 0, tmp_path)
    want = paired_bleu4(scores["student_frozen", 0], scores["student_base", 0], 1000, 0)
    frozen = cells["student_frozen"]
    assert frozen["finetuned_twin"] == "student_base"
    assert (frozen["delta_bleu4_vs_finetuned_shapes"], frozen["delta_bleu4_vs_finetuned_ci95_shapes"],
            frozen["p_bleu4_vs_finetuned_shapes"]) == (want.delta, want.ci95, want.p_value)
    assert want.delta < 0 and want.ci95[1] < 0                              # fine-tuning helps here
    assert "delta_bleu4_vs_finetuned_mean_shapes" not in frozen              # one seed: nothing over seeds

    over = twin_cells(twins, ["shapes"], [0, 1], 1000, 0, tmp_path)["student_frozen_dec"]
    want = paired_bleu4_over_seeds({s: scores["student_frozen_dec", s] for s in (0, 1)},
                                   {s: scores["student_dec", s] for s in (0, 1)}, 1000, 0)
    assert (over["delta_bleu4_vs_finetuned_mean_shapes"], over["delta_bleu4_vs_finetuned_mean_ci95_shapes"]) == \
        (want.mean, want.ci95)
    summary = {m: {"loss": m, "bleu4_shapes": scores[m, 0].bleu4} for m in good}
    rows = twin_rows(twins, cells, summary, ["shapes"])
    assert [(r["frozen"], r["finetuned"]) for r in rows] == list(twins.items())
    assert rows[0]["bleu4_frozen_shapes"] == scores["student_frozen", 0].bleu4
    assert rows[0]["delta_shapes"].startswith(f"{frozen['delta_bleu4_vs_finetuned_shapes']:+.3f} [")
    assert {c[0] for c in twin_columns(["shapes"], True)} >= set(rows[0]) | {"delta_seeds_shapes"}


def test_the_stages_name_blip_as_the_study_does():
    """stages._common spells the BLIP model's name out (importing capt.eval.study there would put
    capt.eval in every stage's deps); both must name the same folder."""
    from capt.eval.study import BLIP_MODEL
    from stages._common import BLIP_MODEL as STAGES_BLIP_MODEL

    assert STAGES_BLIP_MODEL == BLIP_MODEL


def test_the_difference_view_pairs_each_student_with_the_baseline_and_the_teacher_with_blip():
    from capt.errors import CaptError
    from capt.eval.study import difference_pairs
    from capt.viz.table1 import ReportConfig

    models = ["teacher", "student_base", "student_t5", "student_seq", "blip"]
    assert difference_pairs(models) == [("student_t5", "student_base"), ("student_seq", "student_base"),
                                        ("teacher", "blip")]
    assert difference_pairs(["teacher", "student_t5"]) == []          # no baseline student, no BLIP: no pair
    with pytest.raises(CaptError, match=r"^params.yaml: report.difference_pairs\[1\]: must have at least 2 item\(s\), "
                                        r'got \["teacher"\]$'):
        build_config(ReportConfig, {"difference_pairs": [["a", "b"], ["teacher"]]}, "report")
    with pytest.raises(CaptError, match=r"^params.yaml: report.viewer_images: must be >= 1, got 0$"):
        build_config(ReportConfig, {"viewer_images": 0}, "report")


def test_the_faithfulness_table_shows_each_auc_beside_its_baselines_and_the_sanity_check():
    from capt.eval.study import explained_cells
    from capt.viz.table1 import FAITHFULNESS_COLUMNS, faithfulness_rows

    faithfulness = {"attention": {"words": 40, "images": 6, "steps": 4, "fractions": [0, .25, .5, .75, 1],
                                  "deletion_auc": 0.41, "deletion_auc_ci95": [0.35, 0.47], "deletion_auc_random": 0.52,
                                  "deletion_auc_centre": 0.5, "deletion_auc_vs_random": -0.11,
                                  "deletion_auc_vs_random_ci95": [-0.16, -0.05], "insertion_auc": 0.6,
                                  "insertion_auc_ci95": [0.55, 0.66], "insertion_auc_random": 0.5,
                                  "insertion_auc_centre": 0.52, "insertion_auc_vs_random": 0.1,
                                  "insertion_auc_vs_random_ci95": [0.04, 0.15], "deletion_curve": [-1, -2, -3, -3, -3]}}
    sanity = {"attention": {"spearman_decoder": 0.12, "spearman_decoder_ci95": [0.02, 0.2], "words": 40,
                            "spearman_last_block": None, "spearman_last_block_ci95": None}}
    cells = explained_cells(faithfulness, sanity)
    assert "deletion_curve" not in cells["attention"] and "fractions" not in cells["attention"]   # metrics/eval keeps them
    rows = faithfulness_rows([{"model": "teacher", "explained": {"shapes": cells}}, {"model": "constant"}])
    assert len(rows) == 1 and {c[0] for c in FAITHFULNESS_COLUMNS} <= set(rows[0])
    row = rows[0]
    assert row["words"] == "40 (6)" and row["deletion"] == "0.410 [0.350, 0.470]"
    assert row["deletion_vs_random"] == "-0.110 [-0.160, -0.050]" and row["insertion_vs_random"] == "+0.100 [+0.040, +0.150]"
    assert row["spearman_decoder"] == "+0.120 [+0.020, +0.200]" and row["spearman_last_block"] == "-"


def test_blips_default_checkpoint_is_named_in_table_1():
    """capt.eval.study spells out the checkpoints it describes (importing capt.blip would run an
    import back up the layers): the default one must be among them."""
    from capt.blip.model import PRETRAINED
    from capt.eval.study import BLIP_CHECKPOINTS

    assert PRETRAINED in BLIP_CHECKPOINTS
