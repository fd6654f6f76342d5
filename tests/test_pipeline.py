"""End to end: DVC itself runs the DAG in a temporary copy of the repository."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

from capt.eval.maps import read_word_maps
from tests.browser import rendered_dom
from tests.repo_copy import REPO, copy_repository


pytestmark = pytest.mark.e2e
# The micro profile trains three of the students: a baseline, word-level and sequence-level KD.
STUDENTS = ("student_base", "student_t20", "student_seq")


def _run(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(cwd)}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{out}"
    return out


def _without_lists(value):
    """A summary as `dvc exp show --json` shows it: lists (intervals) left out, at any depth."""
    if isinstance(value, dict):
        return {k: _without_lists(v) for k, v in value.items() if not isinstance(v, list)}
    return value


def _ran(out: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", out))


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory) -> Path:
    """The repository in a fresh git repo, with a micro profile in params.yaml."""
    return copy_repository(tmp_path_factory.mktemp("repo"), _micro_params)


def _micro_params(dst: Path) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for name, sizes in (("shapes", (40, 8, 8)), ("shapes-shift", (12, 4, 6))):
        params["download"][name].update(n_train=sizes[0], n_val=sizes[1], n_test=sizes[2], image_size=64)
    params["prepare"].update(image_size=64, min_word_freq=1)
    params["features"].update(batch_size=16)
    # the teacher's trunk pretrains for an epoch; the students' is kept random (epochs 0)
    params["pretrain"]["teacher"].update(epochs=1, batch_size=16)
    params["pretrain"]["students"].update(epochs=0, calibration_images=16)
    params["teacher"]["encoder"].update(name="resnet18", encoded_size=2)
    params["teacher"]["decoder"].update(embed_dim=16, attention_dim=16, decoder_dim=24)
    params["teacher"]["train"].update(epochs=2, batch_size=8)
    params["students"]["encoder"].update(encoded_size=2)
    params["students"]["decoder"].update(embed_dim=8, attention_dim=8, decoder_dim=12)
    params["students"]["train"].update(epochs=2, batch_size=8)
    params["distill"] = {k: params["distill"][k] for k in STUDENTS}
    params["study"]["models"] = ["teacher", *STUDENTS]
    params["evaluate"].update(beam_size=2, meteor="off")
    params["report"].update(timing_images=2)
    params["blip"]["small"].update(vision_hidden=16, text_hidden=16, vision_layers=1, text_layers=1)
    params["blip"]["train"].update(batch_size=8)
    params["attention"].update(image_indices=[0, 3])
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


DATA_STAGES = {"preflight", "download@shapes", "download@shapes-shift", "prepare@shapes", "prepare@shapes-shift"}
TEST_SETS = ("shapes", "shapes-shift")


def _model_stages(model: str) -> set[str]:
    """What training ``model`` reruns: itself, its evaluations, the figures and the report."""
    train = "train_teacher" if model == "teacher" else f"distill@{model}"
    return {train, f"evaluate@{model}", "attention", "report"}


BLIP_STAGES = {"blip_weights", "blip", "evaluate_blip"}
BASELINE_STAGES = {"baselines"}
MODEL_STAGES = {"pretrain@teacher", "pretrain@students", "features", "teacher_captions", *BLIP_STAGES, *BASELINE_STAGES,
                *_model_stages("teacher"), *(s for m in STUDENTS for s in _model_stages(m))}


def _set_param(repo: Path, section: str, key: str, value) -> None:
    """One value of params.yaml, read and written as DVC does (ruamel.yaml, YAML 1.2): after a
    `dvc exp run -S` has written a bare `off`, PyYAML's 1.1 round trip would turn it into false."""
    from ruamel.yaml import YAML

    rt = YAML()
    params = rt.load((repo / "params.yaml").read_text())
    params[section][key] = value
    with open(repo / "params.yaml", "w") as f:
        rt.dump(params, f)


def test_dvc_repro_runs_skips_and_reruns_only_what_changed(repo_copy):
    first = _run(["dvc", "repro"], repo_copy)
    assert _ran(first) == DATA_STAGES | MODEL_STAGES, first

    with h5py.File(repo_copy / "data/prepared/shapes/test.h5") as f:
        assert f["images"].shape == (8, 3, 64, 64)
        assert f["captions"].shape[:2] == (8, 5)
        assert len(f["references"]) == 8 * 5
    with h5py.File(repo_copy / "data/prepared/shapes-shift/train.h5") as f:
        assert f["images"].shape[0] == 12
    # The cache holds the trunk's native grid (64 px at stride 8: 8 x 8 cells), not the teacher's
    # 2 x 2: the models pool it. No test split: evaluation encodes the test images itself.
    with h5py.File(repo_copy / "data/features/shapes/train.h5") as f:
        assert f["features"].shape == (40, 64, 128) and f["features"].dtype == np.float16
        assert tuple(f.attrs["grid"]) == (8, 8) and f.attrs["encoded_size"] == 2
    assert sorted(p.name for p in (repo_copy / "data/features/shapes").iterdir()) == ["encoder.pt", "train.h5", "val.h5"]
    pretrained = json.loads((repo_copy / "metrics/pretrain/teacher.json").read_text())
    assert pretrained["best_epoch"] == 1 and 0 <= pretrained["val_cell_accuracy"] <= 1
    assert json.loads((repo_copy / "metrics/pretrain/students.json").read_text())["epochs"] == 0
    history = (repo_copy / "metrics/history/teacher.csv").read_text().splitlines()
    assert history[0].startswith("epoch,train_loss") and len(history) == 3
    student = (repo_copy / "metrics/history/student_t20.csv").read_text().splitlines()
    assert {"train_task", "train_kd_enc", "train_kd_dec", "val_bleu4"} <= set(student[0].split(","))
    with h5py.File(repo_copy / "data/distill/shapes/teacher_captions.h5") as f:
        fraction = yaml.safe_load((repo_copy / "params.yaml").read_text())["students"]["train_fraction"]
        assert f["captions"].shape == (round(40 * fraction), 1, 22)   # the students' share of the 40 images
    summary = json.loads((repo_copy / "metrics/summary.json").read_text())["models"]
    assert list(summary) == ["teacher", *STUDENTS, "blip", "constant", "nearest"]
    # every model against both baselines, by wording (BLEU-4, CIDEr-D) and by content (object F1)
    for model in ("teacher", *STUDENTS, "blip"):
        for metric in ("bleu4", "cider", "object_f1"):
            low, high = summary[model][f"delta_{metric}_vs_constant_ci95_shapes-shift"]
            assert low <= summary[model][f"delta_{metric}_vs_constant_shapes-shift"] <= high
    constant = json.loads((repo_copy / "results/baselines/summary.json").read_text())["constant"]
    captions = json.loads((repo_copy / "results/baselines/constant-shapes.json").read_text())
    assert not (repo_copy / "results/captions/constant-shapes.json").exists()    # the figures' folder: models only
    assert {c["caption"] for c in captions} == {constant["caption"]} and len(captions) == 8
    nearest = json.loads((repo_copy / "results/baselines/nearest-shapes.json").read_text())
    train_refs = {r for refs in json.loads((repo_copy / "data/raw/shapes/dataset_shapes.json").read_text())["images"]
                  if refs["split"] == "train" for r in (s["raw"] for s in refs["sentences"])}
    assert len(nearest) == 8 and all(c["caption"] in train_refs for c in nearest)      # human training captions
    constant_eval = json.loads((repo_copy / "metrics/eval/constant-shapes.json").read_text())
    assert constant_eval["distinct_captions"] == 1 and constant_eval["novel_share"] == 0.0
    assert 0 <= constant_eval["object_f1"] <= 1 and "chair_i" in constant_eval and "grounding" not in constant_eval
    assert all(summary[s]["parameters"] < summary["teacher"]["parameters"] for s in STUDENTS)
    assert summary["student_t20"]["seed_bleu4"] == 0.1207 and summary["student_seq"]["seed_bleu4"] is None
    assert summary["blip"]["encoder"] == "ViT/8 (BLIP)" and 0 <= summary["blip"]["bleu4_shapes"] <= 1
    assert (repo_copy / "models/blip/config.json").exists() and (repo_copy / "metrics/history/blip.csv").exists()
    technique, blip_maps = read_word_maps(repo_copy / "results/maps/gradcam_crossattn/blip-shapes.h5")
    assert technique == "gradcam_crossattn" and len(blip_maps) == 8
    assert all(m.shape == (len(w), 8, 8) and (m >= 0).all() for w, m in blip_maps.values())
    drawn = sorted(p.name for p in (repo_copy / "results/attention").iterdir())
    assert drawn == sorted(["teacher", *STUDENTS, "blip", "compare"])
    compare = sorted(p.name for p in (repo_copy / "results/attention/compare").iterdir())
    assert len(compare) == 2
    for model, techniques in (("teacher", ("attention", "gradcam_encoder")), ("blip", ("gradcam_crossattn",))):
        drawn = sorted(p.name for p in (repo_copy / "results/attention" / model).iterdir())
        assert drawn == sorted(f"{c[:-4]}-{t}.png" for c in compare for t in techniques), drawn
    _, teacher_attention = read_word_maps(repo_copy / "results/maps/attention/teacher-shapes.h5")
    _, teacher_gradcam = read_word_maps(repo_copy / "results/maps/gradcam_encoder/teacher-shapes.h5")
    assert [w for w, _ in teacher_attention.values()] == [w for w, _ in teacher_gradcam.values()]
    assert all(m.shape == (len(w), 2, 2) and (m >= 0).all() for w, m in teacher_gradcam.values())
    table1, vs_baselines, vs_students, grounding, chair = (repo_copy / "results/table1.md").read_text().split("\n## ")
    assert table1.count("\n| student_") == 3 and "T=20" in table1
    assert "\n| constant | baseline: " in table1 and "\n| nearest | baseline: " in table1
    assert vs_baselines.startswith("Against the baselines") and vs_baselines.count("\n| ") == 1 + 2 * (2 + len(STUDENTS))
    # each student against student_base and the teacher; student_base against the teacher alone
    assert "One training run per model" in vs_students and vs_students.count("\n| student_") == 2 * len(STUDENTS) - 1
    assert "\n| student_base | student_base |" not in vs_students
    assert re.search(r"\| teacher \|.*\| [12] of 2 \(cider\) \|", table1), table1     # the epoch chosen, on what
    with open(repo_copy / "results/plots/figure1-shapes.csv") as f:                    # Figure 1's numbers
        figure_rows = {r["model"]: r for r in csv.DictReader(f)}
    assert list(figure_rows) == ["teacher", *STUDENTS, "blip", "constant", "nearest"]
    teacher_eval = json.loads((repo_copy / "metrics/eval/teacher-shapes.json").read_text())
    assert float(figure_rows["teacher"]["bleu4_low"]) == pytest.approx(teacher_eval["bleu4_ci95"][0], rel=1e-5)
    plots = json.loads(_run(["dvc", "plots", "show", "--json"], repo_copy))          # dvc.yaml's plots read it
    assert any("figure1-shapes.csv" in json.dumps(v) for v in plots.values()), list(plots)
    # a row per model and technique on each test set: teacher and students x 2 techniques, BLIP x 1
    grounding, faithfulness = grounding.split("\n### Faithfulness and the sanity check")
    assert grounding.startswith("Grounding") and grounding.count("\n| ") == 1 + 2 * (2 * (1 + len(STUDENTS)) + 1)
    # the same rows for the maps' faithfulness (BLIP's Grad-CAM too), with the sanity check
    assert faithfulness.count("\n| ") == 1 + 2 * (2 * (1 + len(STUDENTS)) + 1)
    assert chair.startswith("Hallucination") and chair.count("\n| ") == 1 + 2 * (2 + len(STUDENTS) + 2)
    for dataset, n in (("shapes", 8), ("shapes-shift", 6)):
        scores = json.loads((repo_copy / f"metrics/eval/teacher-{dataset}.json").read_text())
        assert scores["images"] == n and 0 <= scores["bleu4"] <= 1 and 0 < scores["ceiling_bleu4"] <= 1
        assert "meteor" not in scores                          # evaluate.meteor: off
        for model, techniques in (("teacher", ("attention", "gradcam_encoder")), ("blip", ("gradcam_crossattn",))):
            g = json.loads((repo_copy / f"metrics/eval/{model}-{dataset}.json").read_text())
            assert 0 <= g["chair_i"] <= 1 and 0 <= g["chair_s"] <= 1, g
            assert sorted(g["grounding"]) == sorted(techniques)
            for ground in g["grounding"].values():
                assert ground["grounded_words"] <= g["object_mentions"]
                assert all(0 <= ground[k] <= 1 for k in ("pointing_game", "pointing_game_centre", "mass_in_mask"))
        explained = json.loads((repo_copy / f"metrics/eval/teacher-{dataset}.json").read_text())
        assert sorted(explained["faithfulness"]) == sorted(explained["sanity_check"]) == ["attention", "gradcam_encoder"]
        for f in explained["faithfulness"].values():                # evaluate.faithfulness_images: 6 images
            assert 0 < f["images"] <= 6 and f["words"] > 0 and len(f["deletion_curve"]) == 4 + 1
            assert all(0 <= f[k] <= 1 for k in ("deletion_auc", "insertion_auc", "deletion_auc_random"))
        captions = json.loads((repo_copy / f"results/captions/teacher-{dataset}.json").read_text())
        assert len(captions) == n and all(isinstance(c["caption"], str) for c in captions)
    pngs = sorted(p.name for p in (repo_copy / "results/attention/teacher").iterdir())
    assert len(pngs) == 4
    report = (repo_copy / "results/report/index.html").read_text()
    n_images = report.count("<img ")
    # Figure 1, every model's curves, BLIP's, each comparison, and the difference view's figures: each student
    # against student_base and the teacher against BLIP, on the images where either beats the other most
    differences = sorted((repo_copy / "results/difference").glob("*.png"))
    pairs = {p.name.split("-top")[0].split("-bottom")[0] for p in differences}
    assert pairs == {*(f"{s}-vs-student_base" for s in STUDENTS if s != "student_base"), "teacher-vs-blip"}, pairs
    assert n_images == 1 + len(STUDENTS) + 2 + len(compare) + len(differences)
    record = json.loads((repo_copy / "results/difference/teacher-vs-blip.json").read_text())
    assert record["examples"][0]["delta"] >= record["examples"][-1]["delta"] and record["summary"], record
    assert 'href="viewer/index.html"' in report
    assert "### Faithfulness and the sanity check" in (repo_copy / "results/table1.md").read_text()
    if shutil.which("chromium"):                                 # CI installs it; tests/test_report.py says so
        dom = rendered_dom(repo_copy / "results/report/index.html")
        assert f'data-images-loaded="{n_images}"' in dom and 'data-images-broken="0"' in dom
        assert dom.count('<td class="text">student_') >= 3 and "Hallucination" in dom
        viewer = rendered_dom(repo_copy / "results/report/viewer/index.html")
        assert 'data-images-broken="0"' in viewer and 'class="word' in viewer
    shown = _run(["dvc", "metrics", "show"], repo_copy)
    assert "metrics/eval/teacher-shapes.json" in shown and "bleu4" in shown

    again = _run(["dvc", "repro"], repo_copy)
    assert _ran(again) == set(), again
    for stage in DATA_STAGES | MODEL_STAGES:
        assert f"Stage '{stage}' didn't change, skipping" in again

    # Determinism on the CPU: the teacher trained again from scratch (its checkpoints gone) and
    # evaluated again gives byte-identical weights, history and metrics.
    outputs = ("models/teacher.pt", "metrics/train/teacher.json", "metrics/history/teacher.csv",
               "metrics/eval/teacher-shapes.json")
    before = {p: (repo_copy / p).read_bytes() for p in outputs}
    shutil.rmtree(repo_copy / "checkpoints/teacher")
    for stage in ("train_teacher", "evaluate@teacher"):
        assert _ran(_run(["dvc", "repro", "-f", "-s", stage], repo_copy)) == {stage}
    assert [p for p in outputs if (repo_copy / p).read_bytes() != before[p]] == []

    _set_param(repo_copy, "evaluate", "beam_size", 1)
    evaluations = {f"evaluate@{m}" for m in ("teacher", *STUDENTS)}   # not BLIP's
    ran = _ran(_run(["dvc", "repro"], repo_copy))     # the figures too, if some caption changed with the beam
    assert evaluations | {"report"} <= ran <= evaluations | {"report", "attention"}, ran

    _set_param(repo_copy, "attention", "image_indices", [1])
    assert {"attention"} <= _ran(_run(["dvc", "repro"], repo_copy)) <= {"attention", "report"}    # the report shows the figures
    assert [p.name for p in (repo_copy / "results/attention/teacher").iterdir()] != pngs

    # A prepare param: prepare reruns (and, through its outputs, every model), download never.
    # A dry run (DVC cannot know yet that prepare's outputs will change) keeps this test fast.
    _set_param(repo_copy, "prepare", "max_len", 12)
    dry = _run(["dvc", "repro", "--dry"], repo_copy)
    assert {"prepare@shapes", "prepare@shapes-shift"} <= _ran(dry) and not _ran(dry) & DATA_STAGES - {
        "prepare@shapes", "prepare@shapes-shift"}, dry
    _set_param(repo_copy, "prepare", "max_len", 20)
    assert "up to date" in _run(["dvc", "status"], repo_copy)


def test_exp_run_on_one_temperature_reruns_that_student_alone_and_a_queue_sweeps(repo_copy):
    """What the README tells a researcher to run, with DVC's own output."""
    _run(["dvc", "repro"], repo_copy)
    for cmd in (["git", "add", "-A"], ["git", "-c", "user.name=capt test", "-c", "user.email=test@capt.invalid",
                                       "commit", "-qm", "baseline"]):
        subprocess.run(cmd, cwd=repo_copy, check=True, capture_output=True)
    before = json.loads((repo_copy / "metrics/summary.json").read_text())["models"]

    out = _run(["dvc", "exp", "run", "-S", "distill.student_t20.temperature=30"], repo_copy)
    assert _ran(out) == _model_stages("student_t20"), out
    for stage in ("train_teacher", "distill@student_base", "distill@student_seq", "evaluate@teacher"):
        assert f"Stage '{stage}' didn't change, skipping" in out
    assert yaml.safe_load((repo_copy / "params.yaml").read_text())["distill"]["student_t20"]["temperature"] == 30
    after = json.loads((repo_copy / "metrics/summary.json").read_text())["models"]
    assert "T=30)" in after["student_t20"]["loss"] and "T=20)" in before["student_t20"]["loss"]
    assert {m: v for m, v in after.items() if m != "student_t20"} == \
        {m: v for m, v in before.items() if m != "student_t20"}
    diff = _run(["dvc", "params", "diff"], repo_copy)
    assert re.search(r"distill\.student_t20\.temperature\s+20(\.0)?\s+30", diff), diff
    # `dvc metrics diff` lists the changed student's numbers alone: no wall-clock timing in a metric.
    changed = {(path, key) for path, keys in json.loads(_run(["dvc", "metrics", "diff", "--json"], repo_copy)).items()
               for key, d in keys.items() if d.get("old") != d.get("new")}
    assert ("metrics/summary.json", "models.student_t20.loss") in changed, changed
    assert {path for path, _ in changed} <= {"metrics/summary.json", "metrics/train/student_t20.json",
                                             *(f"metrics/eval/student_t20-{d}.json" for d in TEST_SETS)}, changed
    assert all(key.startswith("models.student_t20.") for path, key in changed if path == "metrics/summary.json"), changed
    latency = json.loads((repo_copy / "results/latency.json").read_text())
    assert set(latency["models"]) == set(after) - {"constant", "nearest"} and latency["repeats"] >= 1   # models only
    assert all(0 < t["p25_ms"] <= t["median_ms"] <= t["p75_ms"] for t in latency["models"].values()), latency
    assert not any("cpu_ms_per_image" in m for m in after.values()), after

    # The README's queued sweep over one student's KD weights (the seed study's follow-up (c)), run
    # by DVC's queue, each point an experiment of its own, then read back by stages.sweep. Two points
    # keep the test fast: w_dec 1 is the workspace's (every stage skips), w_dec 0.5 reruns student_t20.
    _run(["dvc", "exp", "run", "--queue", "-S", "distill.student_t20.w_enc=1",
          "-S", "distill.student_t20.w_dec=0.5,1"], repo_copy)
    _run(["dvc", "queue", "start", "-j", "1"], repo_copy)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        status = _run(["dvc", "queue", "status"], repo_copy)
        if not re.search(r"\b(Queued|Running)\b", status):
            break
        time.sleep(2)
    assert status.count("Success") == 2, status
    shown = json.loads(_run(["dvc", "exp", "show", "--json"], repo_copy))
    swept = {exp["data"]["params"]["params.yaml"]["data"]["distill"]["student_t20"]["w_dec"]: exp["data"]
             for commit in shown for exp in (commit.get("experiments") or []) for exp in exp["revs"]
             if exp["data"]["params"]["params.yaml"]["data"]["distill"]["student_t20"]["temperature"] == 30}
    assert {0.5, 1} <= set(swept), swept.keys()
    assert swept[0.5]["deps"]["models/student_t20.pt"]["hash"] != swept[1]["deps"]["models/student_t20.pt"]["hash"]
    _run([sys.executable, "-m", "stages.sweep", "student_t20"], repo_copy)
    grid = json.loads((repo_copy / "results/sweep/student_t20.json").read_text())
    # HEAD (T=20) is another study: only the points of the workspace's params, each with its experiment's
    # scores, the intervals too (which `dvc exp show` leaves out: they are lists)
    assert [(p["x"], p["y"]) for p in grid["points"]] == [(1.0, 0.5), (1.0, 1.0)], grid
    for point, w_dec in zip(grid["points"], (0.5, 1)):
        shown_scores = swept[w_dec]["metrics"]["metrics/summary.json"]["data"]["models"]["student_t20"]
        shown_scores = _without_lists(shown_scores)
        assert {k: v for k, v in _without_lists(point["scores"]).items() if k in shown_scores} == shown_scores
        assert len(point["scores"]["delta_bleu4_vs_base_ci95_shapes"]) == 2
    table = (repo_copy / "results/sweep/student_t20.md").read_text()
    assert "| w_enc \\ w_dec | 0.5 | 1 |" in table
    assert f"| 1 | {grid['points'][0]['scores']['bleu4_shapes']:.3f} (" in table, table


def test_a_replicate_seed_runs_only_its_own_stages(repo_copy):
    """study.replicate_seeds multiplies the students: adding seed 1 changes the students' replicate
    trainings and evaluations (new stages) and the report, nothing else (`dvc status`); a replicate is the same student with
    another seed, scored like the study's own."""
    _run(["dvc", "repro"], repo_copy)
    _set_param(repo_copy, "study", "replicate_seeds", [1])
    planned = set(json.loads(_run(["dvc", "status", "--json"], repo_copy)))
    assert planned == {*(f"replicate@{m}-1" for m in STUDENTS),
                       *(f"evaluate_replicate@{m}-1" for m in STUDENTS), "report"}, planned
    out = _run(["dvc", "repro", "evaluate_replicate@student_t20-1"], repo_copy)
    assert _ran(out) == {"replicate@student_t20-1", "evaluate_replicate@student_t20-1"}, out
    replicate = torch.load(repo_copy / "models/replicates/student_t20-s1.pt", weights_only=True)
    own = torch.load(repo_copy / "models/student_t20.pt", weights_only=True)
    assert replicate["decoder_config"] == own["decoder_config"]
    assert not torch.equal(replicate["decoder"]["fc.weight"], own["decoder"]["fc.weight"])     # another seed
    scores = json.loads((repo_copy / "metrics/replicates/student_t20-s1-shapes.json").read_text())
    assert scores["images"] == 8 and scores["bleu4_ci95"][0] <= scores["bleu4_ci95"][1]
    assert json.loads((repo_copy / "metrics/train/student_t20-s1.json").read_text())["epochs_run"] == 2
    _set_param(repo_copy, "study", "replicate_seeds", [])
    # Without the seed its stages are gone; only the report sees the replicate's files left in the
    # folders it reads (models/, results/scores/, results/curves/).
    assert set(json.loads(_run(["dvc", "status", "--json"], repo_copy))) <= {"report"}


def test_stage_user_error_is_one_line(repo_copy):
    env = {**os.environ, "PYTHONPATH": str(repo_copy)}
    proc = subprocess.run([sys.executable, "-m", "stages.prepare", "no-such-dataset"], cwd=repo_copy,
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: data/raw/no-such-dataset/manifest.json: missing")
    assert "Traceback" not in proc.stderr


def test_a_param_edited_while_its_stage_runs_fails_the_stage_and_dvc_still_sees_the_change(repo_copy):
    """`dvc repro` records params.yaml as it is when a stage ends: an edit made while the stage ran
    (another `dvc exp run -S`, a text editor) would be written into dvc.lock beside outputs made
    with the old value, and `dvc status` would say up to date. The stage fails instead, naming the
    param, so dvc.lock keeps what it had and the change still shows."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(repo_copy)}
    before = yaml.safe_load((repo_copy / "params.yaml").read_text())["attention"]["image_indices"]
    _set_param(repo_copy, "attention", "image_indices", [2])          # a value no run has used: it must run
    proc = subprocess.Popen(["dvc", "repro", "attention"], cwd=repo_copy, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    out = []
    for line in proc.stdout:                    # the stage logs a line per model, after reading its params
        out.append(line)
        if "stages.attention: teacher:" in line:
            _set_param(repo_copy, "attention", "image_indices", [4])      # edited while it draws the others
            break
    out.append(proc.stdout.read())
    assert proc.wait() != 0, "".join(out)
    assert ("error: params.yaml: attention changed while this stage ran; its outputs were made with the values "
            "it read at its start: run it again") in "".join(out)
    assert "attention" in json.loads(_run(["dvc", "status", "--json"], repo_copy))
    _set_param(repo_copy, "attention", "image_indices", before)          # as the earlier tests left it
    _run(["dvc", "repro"], repo_copy)
    assert json.loads(_run(["dvc", "status", "--json"], repo_copy)) == {}


def test_a_wrong_param_fails_its_stage_under_dvc_in_one_line_and_dvc_keeps_the_lock(repo_copy):
    """A string where a number belongs (`-S distill.student_t20.temperature=abc`): `dvc repro` stops
    at that stage with one line naming the param, no traceback; dvc.lock is as it was, and `dvc
    status` still shows the stage as changed."""
    lock = (repo_copy / "dvc.lock").read_text()
    before = yaml.safe_load((repo_copy / "params.yaml").read_text())["distill"]["student_t20"]
    _set_param(repo_copy, "distill", "student_t20", {**before, "temperature": "abc"})
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(repo_copy)}
    try:
        proc = subprocess.run(["dvc", "repro", "distill@student_t20"], cwd=repo_copy, env=env, capture_output=True,
                              text=True)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0, out
        assert 'error: params.yaml: distill.student_t20.temperature: must be a number, got "abc"' in out, out
        assert "Traceback" not in out
        assert (repo_copy / "dvc.lock").read_text() == lock
        assert "distill@student_t20" in json.loads(_run(["dvc", "status", "--json"], repo_copy))
    finally:
        _set_param(repo_copy, "distill", "student_t20", before)
    _run(["dvc", "repro"], repo_copy)       # DVC removed the stage's outputs before it ran: made again
    assert json.loads(_run(["dvc", "status", "--json"], repo_copy)) == {}


def _files_digest(root: Path) -> dict[str, str]:
    """md5 of every file where stages write (outputs, and any temporary file left beside them)."""
    import hashlib

    return {str(f.relative_to(root)): hashlib.md5(f.read_bytes()).hexdigest()
            for folder in ("data", "models", "metrics", "results", "checkpoints") for f in sorted((root / folder).rglob("*"))
            if f.is_file()}


def test_under_a_file_size_limit_every_stage_stops_in_one_line_and_loses_nothing(repo_copy):
    """Every stage of the DAG, run as dvc.lock says under a file-size limit of 20 bytes
    (RLIMIT_FSIZE: what a full disk does to a writer, without root): exit 1, one `error: <file>: `
    line, no traceback (HDF5 would crash the process on a failed write: the large HDF5 writers check
    the room first), and every file where stages write byte for byte as it was, no temporary file
    left; `dvc status` then finds nothing changed."""
    import resource
    import signal

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)          # as stage_main does: EFBIG, not a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (20, 20))

    _run(["dvc", "repro"], repo_copy)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(repo_copy)}
    before, failures = _files_digest(repo_copy), []
    lock = yaml.safe_load((repo_copy / "dvc.lock").read_text())["stages"]
    stages = _run(["dvc", "stage", "list", "--all", "--name-only"], repo_copy).split()
    assert len(stages) > 15 and set(stages) <= set(lock)
    for name in stages:                            # each as dvc.lock records its command, params resolved
        proc = subprocess.run(lock[name]["cmd"], shell=True, cwd=repo_copy, env=env, capture_output=True, text=True,
                              preexec_fn=limited)
        last = (proc.stderr.strip().splitlines() or [""])[-1]
        if proc.returncode != 1 or "Traceback" in proc.stderr or not re.match(r"error: \S+: ", last):
            failures.append(f"{name}: exit {proc.returncode}, {last!r}")
        after = _files_digest(repo_copy)
        if after != before:
            failures.append(f"{name}: {sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))}")
            before = after
    assert not failures, "\n".join(failures)
    assert json.loads(_run(["dvc", "status", "--json"], repo_copy)) == {}


def test_training_stage_under_torchrun_with_two_gloo_processes(repo_copy, tmp_path):
    """dvc.yaml's command for `teacher.train.processes: 2`: the real train_teacher stage on two
    processes, rank 0 alone writing the model, its history and its metrics."""
    params_file = repo_copy / "params.yaml"
    original = params_file.read_text()
    params = yaml.safe_load(original)
    params["teacher"]["train"].update(processes=2, device="cpu")
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    name = "teacher_ddp"
    written = [repo_copy / p for p in (f"models/{name}.pt", f"metrics/train/{name}.json",
                                       f"metrics/history/{name}.csv", f"results/curves/{name}.png")]
    try:
        out = _run([sys.executable, "-m", "stages.launch", "2", "stages.train_teacher", "--name", name,
                    "--ckpt-root", str(tmp_path)], repo_copy)
        assert len(re.findall(rf"{name}: epoch \d+ chosen on val", out)) == 1, out   # rank 0 alone reports and writes
        history = (repo_copy / f"metrics/history/{name}.csv").read_text().splitlines()
        assert len(history) == 1 + params["teacher"]["train"]["epochs"]
        last = torch.load(tmp_path / name / "last.pt", weights_only=True)
        assert len(last["rng_per_rank"]) == 2 and last["config"]["processes"] == 2
        model = torch.load(repo_copy / f"models/{name}.pt", weights_only=True)
        one = torch.load(repo_copy / "models/teacher.pt", weights_only=True)
        assert model.keys() == one.keys()
    finally:
        params_file.write_text(original)
        for p in written:
            p.unlink(missing_ok=True)
