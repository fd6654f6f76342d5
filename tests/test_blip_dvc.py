"""Zero-shot BLIP (``blip.train.epochs: 0``, the COCO profile's setting) as DVC runs it: every output
dvc.yaml declares for stage ``blip`` is written, and the evaluation downstream runs on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from stages.blip import HISTORY_COLUMNS
from tests.repo_copy import REPO, copy_repository
from tests.test_pipeline import _ran, _run

pytestmark = pytest.mark.e2e
STAGES = {"preflight", "download@shapes", "prepare@shapes", "download@shapes-shift", "prepare@shapes-shift", "blip_weights", "blip",
          "evaluate_blip"}
N_TEST = 4


@pytest.fixture
def zero_shot_repo(tmp_path) -> Path:
    """The repository in a fresh git repo, with a tiny shapes world, a tiny small BLIP and
    ``blip.train.epochs: 0``."""
    return copy_repository(tmp_path, _zero_shot_params)


def _zero_shot_params(dst: Path) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for world in ("shapes", "shapes-shift"):
        params["download"][world].update(n_train=8, n_val=4, n_test=N_TEST, image_size=32)
    # BLIP takes 24 px images, the models' cache is 32 px: BLIP is scored on test_blip.h5.
    params["prepare"].update(image_size=32, blip_image_size=24, min_word_freq=1)
    params["blip"]["small"].update(image_size=24, vision_hidden=16, text_hidden=16, vision_layers=1, text_layers=1)
    params["blip"]["train"]["epochs"] = 0
    params["evaluate"].update(meteor="off")
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_dvc_repro_of_zero_shot_blip_writes_every_declared_output(zero_shot_repo):
    repo = zero_shot_repo
    out = _run(["dvc", "repro", "evaluate_blip"], repo)
    assert _ran(out) == STAGES, out

    assert (repo / "models/blip/config.json").exists() and (repo / "models/blip/capt_generation.json").exists()
    assert (repo / "metrics/history/blip.csv").read_text().splitlines() == [",".join(HISTORY_COLUMNS)]
    assert json.loads((repo / "metrics/train/blip.json").read_text()) == {
        "epochs_run": 0, "best_epoch": None, "val_bleu4": None}
    with Image.open(repo / "results/curves/blip.png") as im:
        assert "0 epochs (zero-shot)" in im.text["Title"]
    assert (repo / "checkpoints/blip").is_dir() and not any((repo / "checkpoints/blip").iterdir())
    scores = json.loads((repo / "metrics/eval/blip-shapes.json").read_text())
    assert scores["images"] == N_TEST and 0 <= scores["bleu4"] <= 1 and scores["image_size"] == 24
    assert len(json.loads((repo / "results/captions/blip-shapes.json").read_text())) == N_TEST

    # DVC recorded every output (the empty checkpoint folder and the null metrics included)
    again = _run(["dvc", "repro", "evaluate_blip"], repo)
    assert _ran(again) == set(), again
    assert "Stage 'blip' didn't change, skipping" in again
