"""The rehearsal of the real study: the `coco` profile, end to end through DVC, against a
miniature COCO 2014 / Karpathy / Flickr8k mirror served on 127.0.0.1, with seeded torch-hub and
Hugging Face caches and no internet. Only counts (the mirror's size) and epochs are shrunk;
everything else is conf/profile/coco.yaml as it is: ResNet-101/50 from ImageNet weight files,
14x14 cells of 256 px images, loader workers without preloading, bf16, channels_last, zero-shot
pretrained BLIP, METEOR where Java is, both test sets.

Run it alone with `make rehearsal` (pytest -m rehearsal).
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from dvc.utils.hydra import compose_and_dump

from capt.data.sources import REMOTE_DATASETS
from stages._common import STAGE_COSTS
from tests.hub_cache import seed_blip_hub_cache, seed_clip_hub_cache
from tests.repo_copy import REPO, copy_repository
from tests.mirror import MirrorSizes, build_mirror, caption_words, seed_torch_hub

pytestmark = pytest.mark.rehearsal

# Few images: 39 stages each pay ~6 s of Python and torch start-up, so what the budget (10 min on
# 2 cores) leaves for work is a ResNet pass over a handful of 256 px images per stage.
SIZES = MirrorSizes(coco_train=4, coco_restval=2, coco_val=2, coco_test=3,
                    flickr_train=2, flickr_val=1, flickr_test=2)
# What the rehearsal shrinks, and nothing else: epochs, the images the report times and draws; and
# where it runs.
# METEOR is off: its JVM costs 8.5 s per evaluation (x 18); tests/test_metrics.py runs it for real.
# The profile asks for cuda everywhere (a clear error without a GPU); the rehearsal runs on the CPU.
# Its preflight checks room for the miniature's study, not COCO's 178 GB.
# The maps' faithfulness on one image, its curves two points (intact, all blurred): the code path at COCO's
# 14x14 cells, without the ResNet-101 passes of 8 steps on the CPU.
OVERRIDES = ["teacher.train.epochs=1", "students.train.epochs=1", "report.timing_images=1", "report.timing_repeats=1",
             "attention.image_indices=[0]", "evaluate.meteor=off", "preflight.disk_gb=1",
             "evaluate.faithfulness_images=1", "evaluate.faithfulness_steps=1",
             *(f"{section}.device=cpu" for section in ("pretrain.teacher", "pretrain.students", "features",
                                                       "teacher.train", "teacher_captions", "students.train",
                                                       "blip.train", "baselines", "evaluate"))]
# BLIP's WordPiece vocabulary splits these words, as bert-base-uncased splits many COCO words.
PIECES = {"skateboard": ("skate", "##board"), "puppies": ("pupp", "##ies"), "kittens": ("kitten", "##s")}


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    """The mirror's base URL, served from a thread of this process."""
    root = tmp_path_factory.mktemp("mirror")
    build_mirror(root, SIZES)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


@pytest.fixture(scope="module")
def offline_env(mirror, tmp_path_factory) -> dict[str, str]:
    """The environment of a machine without internet whose caches hold the weight files."""
    caches = tmp_path_factory.mktemp("caches")
    seed_torch_hub(caches / "torch")
    words = [w for w in caption_words(mirror[0]) if w not in PIECES]
    seed_blip_hub_cache(caches / "hf" / "hub", words + ["a", "picture", "of"], PIECES)
    seed_clip_hub_cache(caches / "hf" / "hub", [*words, *PIECES])      # the profile's CLIPScore: ViT-B/32's files
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", DVC_NO_ANALYTICS="1",
               TORCH_HOME=str(caches / "torch"), HF_HOME=str(caches / "hf"), HF_HUB_CACHE=str(caches / "hf" / "hub"),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env={**env, "PYTHONPATH": str(cwd)}, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{out[-20000:]}"
    return out


@pytest.fixture(scope="module")
def coco_repo(mirror, offline_env, tmp_path_factory) -> tuple[Path, str]:
    """A copy of the repository with the COCO profile composed (mirror URLs, shrunk epochs), after
    one `dvc repro` of the whole DAG."""
    dst = copy_repository(tmp_path_factory.mktemp("coco"), functools.partial(_coco_params, mirror=mirror))
    costs = dst / "stage_costs.jsonl"
    out = _run(["dvc", "repro"], dst, {**offline_env, STAGE_COSTS: str(costs)})
    if os.environ.get("CAPT_REHEARSAL_REPORT"):          # make rehearsal: the measurements, for the projection
        Path(os.environ["CAPT_REHEARSAL_REPORT"]).write_text(json.dumps(stage_measurements(dst, costs), indent=2) + "\n")
    return dst, out


def _coco_params(dst: Path, mirror: tuple[Path, str]) -> None:
    """The COCO profile composed as `dvc exp run -S profile=coco` would, with OVERRIDES; then the
    mirror: its address, and what its files are (their bytes are not the public ones, so the public
    md5s would refuse them; every file is still verified, against these)."""
    compose_and_dump(dst / "params.yaml", str(dst / "conf"), None, "config", str(dst), ["profile=coco", *OVERRIDES])
    root, base_url = mirror
    params = yaml.safe_load((dst / "params.yaml").read_text())
    for dataset in ("coco", "flickr8k"):
        names = [f.name for f in REMOTE_DATASETS[dataset].files]
        params["download"][dataset].update(base_url=base_url, checksums={
            n: {"size": (root / n).stat().st_size, "md5": hashlib.md5((root / n).read_bytes()).hexdigest()}
            for n in names})
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def stage_measurements(repo: Path, costs: Path) -> dict:
    """Per DVC stage: the bytes of its outputs (dvc.lock), its seconds and peak memory (each stage
    appends them to ``costs``); and the images of each split of each dataset."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    recorded = {}
    for line in costs.read_text().splitlines():
        record = json.loads(line)
        recorded[record.pop("command")] = record
    stages = {}
    for name, stage in lock.items():
        command = re.sub(r"^python -m (stages\.launch \d+ )?", "", stage["cmd"])
        files = {str(f.relative_to(repo)): f.stat().st_size for o in stage.get("outs", [])
                 for f in ([repo / o["path"]] if (repo / o["path"]).is_file() else sorted((repo / o["path"]).rglob("*")))
                 if f.is_file()}
        stages[name] = {"out_bytes": sum(o.get("size", 0) for o in stage.get("outs", [])), "files": files,
                        **recorded.get(command, {})}
    images = {d: {s: v["images"] for s, v in json.loads((repo / f"data/prepared/{d}/summary.json").read_text())["splits"].items()}
              for d in ("coco", "flickr8k")}
    return {"stages": stages, "images": images, "teacher_dataset": _params(repo)["teacher"]["dataset"]}


def _params(repo: Path) -> dict:
    return yaml.safe_load((repo / "params.yaml").read_text())


def test_the_profile_is_coco_with_only_epochs_shrunk_and_the_cpu_for_cuda(coco_repo):
    repo, _ = coco_repo
    p = _params(repo)
    coco = yaml.safe_load((REPO / "conf" / "profile" / "coco.yaml").read_text())
    assert p["teacher"]["encoder"] == {**p["teacher"]["encoder"], **coco["teacher"]["encoder"]}
    assert p["students"]["encoder"] == {**p["students"]["encoder"], **coco["students"]["encoder"]}
    for role in ("teacher", "students"):
        train = {k: v for k, v in coco[role]["train"].items() if k not in ("epochs", "device")}
        assert p[role]["train"] == {**p[role]["train"], **train} and p[role]["train"]["epochs"] == 1
        assert (coco[role]["train"]["device"], p[role]["train"]["device"]) == ("cuda", "cpu")
    assert p["blip"]["source"] == "pretrained" and p["blip"]["train"]["epochs"] == 0
    assert p["study"]["test_sets"] == ["coco", "flickr8k"] and p["prepare"]["image_size"] == 256


def test_every_stage_ran_and_the_repo_is_clean(coco_repo, offline_env):
    repo, out = coco_repo
    stages = {line.split()[0] for line in _run(["dvc", "stage", "list"], repo, offline_env).splitlines() if line.strip()}
    assert set(re.findall(r"Running stage '([^']+)'", out)) == stages
    assert json.loads(_run(["dvc", "status", "--json"], repo, offline_env)) == {}
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    declared = [o["path"] for stage in lock.values() for o in stage.get("outs", [])]
    missing = [path for path in declared if not (repo / path).exists()]
    assert not missing and len(declared) > 50


def test_the_data_is_the_mirror_read_as_coco_and_flickr8k(coco_repo):
    repo, _ = coco_repo
    import h5py

    coco = json.loads((repo / "data/prepared/coco/summary.json").read_text())
    with h5py.File(repo / "data/prepared/coco/train.h5") as f:   # Karpathy's restval trains, marked as such
        assert f["images"].shape == (SIZES.coco_train + SIZES.coco_restval, 3, 256, 256)
        assert int(f["restval"][:].sum()) == SIZES.coco_restval     # (teacher.subset / students.subset)
    with h5py.File(repo / "data/prepared/flickr8k/test.h5") as f:
        assert f["images"].shape[0] == SIZES.flickr_test
    for dataset, n_test in (("coco", SIZES.coco_test), ("flickr8k", SIZES.flickr_test)):   # BLIP's, from the zips
        with h5py.File(repo / f"data/prepared/{dataset}/test_blip.h5") as f:
            assert f["images"].shape == (n_test, 3, 384, 384)
    assert coco, "prepare wrote an empty summary"


def test_every_model_is_evaluated_on_both_test_sets_with_grounding_only_on_coco(coco_repo):
    repo, _ = coco_repo
    p = _params(repo)
    for model in [*p["study"]["models"], "blip"]:
        on_coco = json.loads((repo / f"metrics/eval/{model}-coco.json").read_text())
        on_flickr = json.loads((repo / f"metrics/eval/{model}-flickr8k.json").read_text())
        assert on_coco["images"] == SIZES.coco_test and on_flickr["images"] == SIZES.flickr_test
        for scores in (on_coco, on_flickr):
            assert 0 <= scores["bleu4"] <= 1 and "cider" in scores
        assert "chair_i" in on_coco and on_coco["grounding"], model
        assert "chair_i" not in on_flickr and "grounding" not in on_flickr, model
        # the COCO profile's tokenizer is coco-caption's; the ceiling is on 5 leave-one-out folds
        assert p["evaluate"]["tokenizer"] == "ptb" and on_coco["ceiling_folds"] == 5
        assert 0 <= on_coco["bleu4_coco"] <= 1 and 0 <= on_coco["bleu4_loo"] <= 1
        # what each model saw: the models the 256 px cache, BLIP the originals resized once to its 384
        assert on_coco["image_size"] == on_flickr["image_size"] == (384 if model == "blip" else 256)
        # CLIPScore on every caption (the hub cache's tiny CLIP as ViT-B/32), with its interval
        for scores in (on_coco, on_flickr):
            assert scores["clip_model"] == "openai/clip-vit-base-patch32", model
            assert 0 <= scores["clip_s_ci95"][0] <= scores["clip_s"] <= scores["clip_s_ci95"][1] <= 2.5
            assert 0 <= scores["ref_clip_s"] <= 2.5
        if model != "blip":                     # the LSTM models' maps explained on COCO's 14x14 cells
            assert sorted(on_coco["faithfulness"]) == ["attention", "gradcam_encoder"], model
            assert on_coco["faithfulness"]["attention"]["images"] == 1
            assert len(on_coco["faithfulness"]["attention"]["deletion_curve"]) == 2
            assert on_coco["sanity_check"]["gradcam_encoder"]["randomisation"], model


def test_blip_words_are_whole_words_on_coco(coco_repo):
    """The mirror's BLIP splits skateboard, puppies and kittens into WordPiece pieces: what
    grounding and CHAIR read must be the caption's words, never a piece or a special token."""
    from capt.eval.maps import read_word_maps

    repo, _ = coco_repo
    technique, maps = read_word_maps(repo / "results/maps/gradcam_crossattn/blip-coco.h5")
    captions = {c["image_id"]: c["caption"] for c in json.loads((repo / "results/captions/blip-coco.json").read_text())}
    assert technique == "gradcam_crossattn" and set(maps) == set(captions)
    for image_id, (words, word_maps) in maps.items():
        assert not any(w.startswith("##") or (w.startswith("[") and w.endswith("]")) for w in words), words
        # a piece the random model emits first has no word to join: decode keeps its "##", the words do not
        assert " ".join(words) == captions[image_id].replace("##", "") and len(word_maps) == len(words)


def test_the_report_holds_every_model(coco_repo):
    repo, _ = coco_repo
    p = _params(repo)
    summary = json.loads((repo / "metrics/summary.json").read_text())["models"]
    assert list(summary) == [*p["study"]["models"], "blip", "constant", "nearest"]
    # the baselines on the real formats: one COCO training caption for every image; COCO has
    # instances (object coverage beside CHAIR), Flickr8k none; no shapes world, so no object F1
    chosen = json.loads((repo / "results/baselines/summary.json").read_text())["constant"]
    captions = {c["caption"] for c in json.loads((repo / "results/baselines/constant-coco.json").read_text())}
    assert captions == {chosen["caption"]} and chosen["candidates_scored"] >= 1
    for model in summary:
        assert 0 <= summary[model]["coverage_coco"] <= 1 and summary[model].get("coverage_flickr8k") is None
        assert summary[model].get("object_f1_coco") is None
    assert "delta_coverage_vs_constant_coco" in summary["teacher"] and "delta_cider_vs_nearest_flickr8k" in summary["teacher"]
    assert "delta_clip_s_vs_constant_coco" in summary["teacher"] and "p_ref_clip_s_vs_nearest_flickr8k" in summary["blip"]
    # why A beats B on COCO: each content word judged by CHAIR's lexicon against the instances and references
    record = json.loads((repo / "results/difference/teacher-vs-blip.json").read_text())
    assert len(record["examples"]) == 3 and {row["kind"] for row in record["summary"]} == {"object"}
    assert all(c["verdict"] in ("right", "wrong") for e in record["examples"] for c in e["differences"]["a"]["claims"])
    viewer = (repo / "results/report/viewer/index.html").read_text()
    assert "http://" not in viewer and "https://" not in viewer and len(list((repo / "results/report/viewer/img").iterdir())) == 3
    table = (repo / "results/table1.md").read_text()
    html = (repo / "results/report/index.html").read_text()
    for model in summary:
        assert model in table and model in html
    assert ("zero-shot: Salesforce/blip-image-captioning-base, the COCO-finetuned captioning checkpoint, used "
            "without further tuning") in table
    published = table[table.index("## Published numbers beside ours"):].splitlines()
    blip_cider = next(line for line in published if line.startswith("| blip | coco | cider | 1.333 | "))
    assert float(blip_cider.split("|")[5]) == pytest.approx(summary["blip"]["cider_coco"], abs=5e-4)   # ours beside it


def test_every_stage_recorded_its_cost(coco_repo, tmp_path):
    repo, _ = coco_repo
    report = stage_measurements(repo, repo / "stage_costs.jsonl")
    assert report["images"]["coco"] == {"train": SIZES.coco_train + SIZES.coco_restval, "val": SIZES.coco_val,
                                        "test": SIZES.coco_test}
    for name, m in report["stages"].items():
        # a bare Python interpreter already holds > 15 MB; download@coco (no torch) measured 36.5 MB
        assert m["seconds"] > 0 and m["peak_rss_mb"] > 15, name
    assert report["stages"]["prepare@coco"]["out_bytes"] > 3 * 256 * 256 * sum(report["images"]["coco"].values())
    path = tmp_path / "rehearsal.json"
    path.write_text(json.dumps(report))
    table = subprocess.run([sys.executable, str(REPO / "benchmarks/project_coco.py"), str(path)], capture_output=True,
                           text=True, check=True).stdout
    # prepare's uint8 256 px images, projected to Karpathy's 123,287 COCO images: at least 24 GB
    prepare = next(line for line in table.splitlines() if line.startswith("| `prepare@coco`"))
    disk = prepare.split("|")[4].split()
    assert "-> 123,287" in prepare and disk[1] == "GB" and float(disk[0]) >= 24.0
    # the feature cache at ResNet-101's native 8x8 grid: 64 cells x 2048 x fp16 per image, not 14x14
    # one evaluation stage covers both test sets: each of its files scales by its own test set
    teacher = next(line for line in table.splitlines() if line.startswith("| `evaluate@teacher`"))
    assert f"coco: {SIZES.coco_test} -> 5,000" in teacher and f"flickr8k: {SIZES.flickr_test} -> 1,000" in teacher
    features = next(line for line in table.splitlines() if line.startswith("| `features`"))
    per_image = features.split("|")[3].split()
    assert per_image[1] == "KB" and float(per_image[0]) == pytest.approx(64 * 2048 * 2 / 1e3, rel=0.01)
