"""Stage baselines: the captions of the two baselines every model must beat, on each test set.

Params: ``baselines`` (constant_candidates, batch_size, device), ``teacher.dataset`` and
``teacher.encoder`` (the training set and the frozen trunk the baselines draw on),
``evaluate.tokenizer`` (the constant caption is chosen on the evaluation's tokens). Reads
``data/prepared/<teacher.dataset>/{train,val}.h5`` (the training captions; the val references the
constant caption is chosen on), ``data/features/<teacher.dataset>/train.h5`` (the training images'
trunk cells) and ``models/encoders/teacher.pt`` (the trunk, for the test images), and
``data/prepared/<dataset>/test.h5`` of each test set named on the command line (dvc.yaml: both of
``study.test_sets``; the constant caption and the training features are computed once). Writes, per
test set, in COCO results format, the captions
``results/baselines/constant-<dataset>.json`` (one training caption for every image: the one with
the best val CIDEr-D) and ``results/baselines/nearest-<dataset>.json`` (each image: the first
reference of its nearest training image in the trunk's mean-pooled features), and
``results/baselines/summary.json``: which caption was chosen, its val CIDEr-D, the candidates
scored and the trunk. Then it scores both on each test set as evaluate@<model> scores a model
(stages.evaluate, with ``evaluate``'s params: ``metrics/eval/<baseline>-<dataset>.json``,
``results/scores/`` and ``results/content/``), without maps: CHAIR, no grounding. One stage, not
one per baseline and test set: each costs ~9 s of imports and DVC bookkeeping. capt.eval.baselines
says why both baselines are needed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import typer

from capt.config import CHECKED, Count, Device, with_config
from capt.data.cache import open_h5, read_references
from capt.errors import CaptError
from capt.eval.baselines import BASELINE_MODELS, best_constant_caption, nearest_neighbour_captions, pooled_features
from capt.eval.evaluation import EvaluateConfig
from capt.eval.metrics import write_coco_results
from capt.models.encoder import EncoderConfig
from stages._common import read_config, stage_main, write_json
from stages.evaluate import evaluate_on

log = logging.getLogger("stages.baselines")


@with_config(CHECKED)
@dataclass(frozen=True)
class BaselinesConfig:
    constant_candidates: Count = 100 # the most frequent distinct training captions scored on val
    batch_size: Count = 64           # test images through the trunk at a time
    device: Device = "auto"          # auto (a GPU where there is one) | cpu | cuda


def _train_features(path: Path, batch: int = 512) -> tuple[np.ndarray, list[int]]:
    """The feature cache's training images, mean-pooled: (N, D) unit vectors and their ids."""
    try:
        with open_h5(path, ("features", "image_ids")) as f:
            cells = f["features"]
            pooled = np.concatenate([pooled_features(cells[i:i + batch]) for i in range(0, cells.shape[0], batch)])
            return pooled, [int(i) for i in f["image_ids"][:]]
    except (OSError, KeyError) as e:
        raise CaptError(f"{path}: not a feature cache ({e}); run stage features") from None


def _test_features(test_h5: Path, trunk: Path, enc_cfg: EncoderConfig, cfg: BaselinesConfig) -> tuple[np.ndarray, list[int]]:
    """The test images through the frozen trunk, mean-pooled as the cache's: (N, D), ids."""
    import torch

    from capt.models.saved import load_encoder
    from capt.train.distributed import resolve_device

    encoder = load_encoder(trunk, enc_cfg).to(resolve_device(cfg.device)).eval()
    pooled = []
    with open_h5(test_h5, ("images", "image_ids")) as f, torch.no_grad():
        images = f["images"]
        for i in range(0, images.shape[0], cfg.batch_size):
            cells = encoder.native_cells(torch.from_numpy(images[i:i + cfg.batch_size]))   # (B, h*w, D)
            pooled.append(pooled_features(cells.float().cpu().numpy()))
        ids = [int(i) for i in f["image_ids"][:]]
    return np.concatenate(pooled), ids


@stage_main
def main(datasets: list[str]) -> None:
    cfg = read_config(BaselinesConfig, "baselines")
    train_set = read_config(str, "teacher", "dataset")
    enc_cfg = read_config(EncoderConfig, "teacher", "encoder")
    evaluation = read_config(EvaluateConfig, "evaluate")
    prepared = Path("data/prepared")
    train_refs = read_references(prepared / train_set / "train.h5")
    training = [c for refs in train_refs.values() for c in refs]
    caption, val_cider, scored = best_constant_caption(
        training, read_references(prepared / train_set / "val.h5"),
        candidates=cfg.constant_candidates, tokenizer=evaluation.tokenizer)
    log.info("constant baseline: %r (val CIDEr-D %.4f, the best of the %d most frequent training captions)",
             caption, val_cider, scored)
    train_feats, train_ids = _train_features(Path("data/features") / train_set / "train.h5")
    info = {"constant": {"caption": caption, "val_cider": val_cider, "candidates_scored": scored,
                         "chosen_on": f"{train_set} val, CIDEr-D"},
            "nearest": {"trunk": f"{enc_cfg.name}, {enc_cfg.stages} stage(s), models/encoders/teacher.pt",
                        "training_images": len(train_ids), "similarity": "cosine of the mean-pooled cells"}}
    out = Path("results/baselines")
    for dataset in datasets:
        test_feats, test_ids = _test_features(prepared / dataset / "test.h5", Path("models/encoders/teacher.pt"),
                                              enc_cfg, cfg)
        nearest = nearest_neighbour_captions(train_feats, train_ids, train_refs, test_feats, test_ids)
        log.info("nearest neighbour: %d test images of %s, each captioned by one of %d training images (%d distinct)",
                 len(nearest), dataset, len(train_ids), len(set(nearest.values())))
        write_coco_results({i: caption for i in test_ids}, out / f"constant-{dataset}.json")
        write_coco_results(nearest, out / f"nearest-{dataset}.json")
    write_json(out / "summary.json", info)
    for dataset in datasets:
        for baseline in BASELINE_MODELS:
            evaluate_on(baseline, dataset, evaluation, training)


if __name__ == "__main__":
    typer.run(main)
