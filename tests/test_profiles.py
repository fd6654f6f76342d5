"""The profiles of conf/ (DVC's Hydra composition): the committed params.yaml is the default
composition, and the COCO profile composes into a DAG DVC accepts, without downloading anything."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from dvc.utils.hydra import compose_and_dump

from capt.models.decoder import DecoderConfig
from capt.models.encoder import EncoderConfig
from capt.train.distill import DistillConfig
from capt.train.loop import TrainConfig
from capt.train.pretrain import PretrainConfig
from stages._common import make_config
from stages.download import RemoteConfig

ROOT = Path(__file__).parents[1]


def compose(out: Path, *overrides: str) -> dict:
    """What `dvc exp run -S <overrides>` writes to params.yaml when Hydra is enabled."""
    compose_and_dump(out, str(ROOT / "conf"), None, "config", str(out.parent), list(overrides))
    return yaml.safe_load(out.read_text())


def test_hydra_is_on_and_params_yaml_is_the_default_composition(tmp_path):
    assert "enabled = true" in (ROOT / ".dvc" / "config").read_text().split("[hydra]")[1]
    compose(tmp_path / "params.yaml")
    assert (tmp_path / "params.yaml").read_text() == (ROOT / "params.yaml").read_text(), \
        "params.yaml is not conf/ composed: regenerate it with `dvc exp run -S profile=shapes`"
    assert compose(tmp_path / "same.yaml", "profile=shapes") == yaml.safe_load((ROOT / "params.yaml").read_text())


def _dvc(repo: Path, *args: str) -> str:
    run = subprocess.run(["dvc", *args], cwd=repo, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return run.stdout


@pytest.fixture(scope="module")
def coco_repo(tmp_path_factory) -> Path:
    """A DVC repository with the project's dvc.yaml and the COCO profile composed into params.yaml."""
    repo = tmp_path_factory.mktemp("coco")
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    _dvc(repo, "init", "--no-scm", "-q")
    compose(repo / "params.yaml", "profile=coco")
    return repo


def test_coco_profile_is_the_real_study(coco_repo):
    p = yaml.safe_load((coco_repo / "params.yaml").read_text())
    assert {k: v["source"] for k, v in p["download"].items()} == {"coco": "coco", "flickr8k": "flickr8k"}
    teacher = make_config(EncoderConfig, p["teacher"]["encoder"], "teacher.encoder")
    student = make_config(EncoderConfig, p["students"]["encoder"], "students.encoder")
    assert (teacher.name, teacher.weights, teacher.encoded_size, p["prepare"]["image_size"]) == \
        ("resnet101", "IMAGENET1K_V1", 14, 256)
    assert (student.name, student.weights, student.fine_tune) == ("resnet50", "IMAGENET1K_V1", True)
    assert make_config(DecoderConfig, p["teacher"]["decoder"], "teacher.decoder").decoder_dim == 512
    assert make_config(DecoderConfig, p["students"]["decoder"], "students.decoder").decoder_dim == 256
    for section in ("teacher", "students"):                 # every key a stage reads is one it knows
        make_config(TrainConfig, p[section]["train"], f"{section}.train")
    for role in ("teacher", "students"):
        assert make_config(PretrainConfig, p["pretrain"][role], f"pretrain.{role}").epochs == 0   # ImageNet as is
    for name, variant in p["distill"].items():
        make_config(DistillConfig, variant, f"distill.{name}")
    for name, dl in p["download"].items():
        make_config(RemoteConfig, {k: v for k, v in dl.items() if k != "source"}, f"download.{name}")
    assert (p["blip"]["source"], p["blip"]["train"]["epochs"]) == ("pretrained", 0)
    assert p["study"]["test_sets"] == ["coco", "flickr8k"] and p["attention"]["dataset"] == "coco"


def _devices(params: dict, path: str = "") -> dict[str, str]:
    """Every ``device`` param of a composition, by its full path."""
    out = {}
    for key, value in params.items():
        if isinstance(value, dict):
            out.update(_devices(value, f"{path}{key}."))
        elif key == "device":
            out[f"{path}{key}"] = value
    return out


def test_the_coco_profile_asks_for_a_gpu_everywhere_and_fails_in_one_line_without_one(coco_repo, monkeypatch):
    """`device: cuda` in every section that computes, so a CPU-only torch or a hidden GPU ends the first
    stage with one line instead of training on the CPU for days; the embedded profile keeps auto."""
    import torch

    from capt.errors import CaptError
    from capt.train.distributed import resolve_device

    coco = _devices(yaml.safe_load((coco_repo / "params.yaml").read_text()))
    shapes = _devices(yaml.safe_load((ROOT / "params.yaml").read_text()))
    assert set(coco) == set(shapes) and len(coco) == 9, coco
    assert set(coco.values()) == {"cuda"} and set(shapes.values()) == {"auto"}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(CaptError, match=r"^device is cuda but torch sees no GPU here; set it to auto or cpu$"):
        resolve_device(coco["teacher.train.device"])
    assert resolve_device(shapes["teacher.train.device"]).type == "cpu"


def test_coco_profile_dag_and_status_without_downloading(coco_repo):
    stages = {line.split()[0] for line in _dvc(coco_repo, "stage", "list").splitlines() if line.strip()}
    models = ["teacher", "student_base", "student_t5", "student_t10", "student_t20", "student_enc",
              "student_dec", "student_seq"]
    expected = {"preflight", "download@coco", "download@flickr8k", "prepare@coco", "prepare@flickr8k", "pretrain@teacher",
                "pretrain@students", "features", "train_teacher", "teacher_captions", "blip_weights", "blip",
                "attention", "report", "evaluate_blip", "baselines",
                *(f"distill@{m}" for m in models[1:]),
                *(f"evaluate@{m}" for m in models)}
    assert stages == expected
    dot = _dvc(coco_repo, "dag", "--dot", "report")
    for edge in ('"preflight" -> "download@coco"', '"download@coco" -> "prepare@coco"', '"features" -> "train_teacher"',
                 '"prepare@flickr8k" -> "evaluate@teacher"', '"prepare@coco" -> "evaluate@teacher"',
                 '"train_teacher" -> "distill@student_t20"', '"prepare@flickr8k" -> "baselines"',
                 '"features" -> "baselines"', '"baselines" -> "report"'):
        assert edge in dot
    status = json.loads(_dvc(coco_repo, "status", "--json"))
    assert set(status) == expected                        # everything to run, nothing fetched to find out
    assert not list((coco_repo).glob("data"))


@pytest.mark.parametrize("profile", ["shapes", "coco"])
def test_the_replicated_study_adds_seeds_and_changes_nothing_else(tmp_path, profile):
    """`-S seeds=five` replicates the students the default reports: only study.replicate_seeds
    differs, so DVC retrains none of Table 1's students (seed 0) and runs the replicates alone."""
    default = compose(tmp_path / "default.yaml", f"profile={profile}")
    five = compose(tmp_path / "five.yaml", f"profile={profile}", "seeds=five")
    assert five["study"].pop("replicate_seeds") == [1, 2, 3, 4]
    assert default["study"].pop("replicate_seeds") == []
    assert five == default
    assert default["students"]["train"]["seed"] not in [1, 2, 3, 4]


@pytest.mark.parametrize("profile", ["shapes", "coco"])
def test_the_seed_studys_follow_ups_compose_with_either_profile_and_the_seeds(tmp_path, profile):
    """`dvc exp run -S profile=<p> -S followups=seed_study -S seeds=five`: three more students, each
    with its evaluations and replicates, and every one a variant the distill stage accepts."""
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    _dvc(repo, "init", "--no-scm", "-q")
    default = compose(tmp_path / "default.yaml", f"profile={profile}")
    p = compose(repo / "params.yaml", f"profile={profile}", "followups=seed_study", "seeds=five")
    new = ["student_frozen", "student_frozen_dec", "student_enc_proj"]
    assert list(p["distill"]) == [*default["distill"], *new]
    assert p["study"]["models"] == [*default["study"]["models"], *new]
    kd = {name: make_config(DistillConfig, v, f"distill.{name}") for name, v in p["distill"].items()}
    assert (kd["student_frozen"].fine_tune, kd["student_frozen_dec"].fine_tune) == (False, False)
    assert kd["student_frozen_dec"].uses_decoder_kd and kd["student_enc_proj"].projection == "always"
    # the 2x2's other corners: the same losses, fine-tuned (students.encoder.fine_tune)
    assert p["students"]["encoder"]["fine_tune"] is True
    assert {k: v for k, v in p["distill"]["student_frozen_dec"].items() if k != "fine_tune"} == \
        p["distill"]["student_dec"]
    stages = {line.split()[0] for line in _dvc(repo, "stage", "list").splitlines() if line.strip()}
    for m in new:
        assert {f"distill@{m}", f"replicate@{m}-1", f"replicate@{m}-4"} <= stages
        assert {f"evaluate@{m}", f"evaluate_replicate@{m}-1", f"evaluate_replicate@{m}-4"} <= stages
    assert all("fine_tune" not in v for v in default["distill"].values())
    # encoder KD goes through a learned projection in the embedded profile; COCO compares its two
    # 2048-wide trunks as they are, as the seed did
    encoder_kd = {"student_t5", "student_t10", "student_t20", "student_enc"}
    assert {m: v.get("projection") for m, v in default["distill"].items() if m in encoder_kd} == \
        dict.fromkeys(encoder_kd, "always" if profile == "shapes" else "auto")
    assert all("projection" not in v for m, v in default["distill"].items() if m not in encoder_kd)


@pytest.mark.parametrize("profile", ["shapes", "coco"])
@pytest.mark.parametrize("seeds", ["one", "five"])
@pytest.mark.parametrize("followups", ["none", "seed_study"])
def test_every_composition_passes_the_checks_each_stage_makes_of_its_params(tmp_path, profile, seeds, followups):
    """Each section of each composition of conf/, built into the config the stage that reads it
    builds (capt.config): a profile that would stop a stage with `error: params.yaml: ...` is
    found here, without running DVC (the COCO profile's stages never run in the tests but the
    rehearsal's)."""
    from capt.blip.model import BlipStudyConfig
    from capt.data.prepare import PrepareConfig
    from capt.data.shapes import ShapesConfig
    from capt.eval.evaluation import EvaluateConfig
    from capt.viz.table1 import ReportConfig
    from stages._common import StudyConfig
    from stages.attention import AttentionConfig
    from stages.baselines import BaselinesConfig
    from stages.distill import StudentsConfig
    from stages.download import Source
    from stages.features import FeaturesConfig
    from stages.preflight import PreflightConfig
    from stages.teacher_captions import TeacherCaptionsConfig
    from stages.train_teacher import TeacherConfig

    params = compose(tmp_path / "params.yaml", f"profile={profile}", f"seeds={seeds}", f"followups={followups}")
    sections = {"preflight": PreflightConfig, "prepare": PrepareConfig, "features": FeaturesConfig,
                "teacher": TeacherConfig, "teacher_captions": TeacherCaptionsConfig, "students": StudentsConfig,
                "distill": dict[str, DistillConfig], "blip": BlipStudyConfig, "study": StudyConfig,
                "baselines": BaselinesConfig, "evaluate": EvaluateConfig, "attention": AttentionConfig,
                "report": ReportConfig, "pretrain": dict[str, PretrainConfig]}
    assert set(params) == {*sections, "download"}
    for section, kind in sections.items():
        make_config(kind, params[section], section)
    for name, values in params["download"].items():
        values = dict(values)
        source = make_config(Source, values.pop("source"), f"download.{name}.source")
        make_config(ShapesConfig if source == "shapes" else RemoteConfig, values, f"download.{name}")
    blip_train = params["blip"]["train"]
    make_config(TrainConfig, {**blip_train, "epochs": max(blip_train["epochs"], 1)}, "blip.train")
    assert set(params["study"]["models"]) - {"teacher"} <= set(params["distill"])
