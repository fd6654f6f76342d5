"""Stage pretrain@<role>: the encoder trunk of the teacher or of the students, before captioning.

Params: ``pretrain.<role>`` (a PretrainConfig), ``<role>.encoder`` (the trunk: name, weights,
stages, encoded_size) and ``teacher.dataset`` (whose training split it learns from). Reads
``data/prepared/<dataset>`` and the instances of ``data/raw/<dataset>``; writes
``models/encoders/<role>.pt`` and ``metrics/pretrain/<role>.json``. See capt.train.pretrain.

With ``epochs: 0`` the trunk is kept as initialised: ImageNet weights as they are (the COCO
profile), or a random trunk whose BatchNorm statistics are set from the training images.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import typer

from capt.data.cache import open_h5
from capt.data.dataset import CaptionDataset, ImageSubset
from capt.data.manifest import load_manifest
from capt.data.vocab import SPECIALS, Vocabulary
from capt.errors import CaptError
from capt.eval.grounding import load_instances
from capt.models.encoder import Encoder, EncoderConfig
from capt.models.saved import save_encoder
from capt.train.loop import fit
from capt.train.pretrain import CellLabelled, EncoderPretrainer, PretrainConfig, PretrainTask, cell_labels
from stages._common import read_config, read_params, stage_main, write_json
from stages._training import run_fingerprint, training_runtime

log = logging.getLogger("stages.pretrain")
ROLES = ("teacher", "students")


def split_cell_labels(prepared_h5: Path, instances, grid: int, min_cover: float) -> np.ndarray:
    """(N, grid*grid) cell categories of every image of a prepared split, in its order."""
    with open_h5(prepared_h5, ("image_ids",)) as f:
        ids = f["image_ids"][:]
    categories = instances.categories
    return np.stack([cell_labels(instances.masks(int(i)), categories, grid, min_cover) for i in ids])


@stage_main
def main(role: str, ckpt_root: Path = typer.Option(Path("checkpoints"))) -> None:
    if role not in ROLES:
        raise CaptError(f"pretrain: role must be one of {', '.join(ROLES)}, got {role!r}")
    cfg = read_config(PretrainConfig, "pretrain", role)
    enc_cfg = read_config(EncoderConfig, role, "encoder")
    dataset = read_config(str, "teacher", "dataset")
    prepared = Path("data/prepared") / dataset

    ckpt_dir = ckpt_root / f"pretrain_{role}"
    ckpt_dir.mkdir(parents=True, exist_ok=True)     # a declared output, even when nothing trains
    torch.manual_seed(cfg.init_seed)
    encoder = Encoder(enc_cfg)
    summary: dict = {"epochs": cfg.epochs, "encoder": enc_cfg.name, "stages": enc_cfg.stages, "dataset": dataset}
    if cfg.epochs == 0:
        if enc_cfg.weights is None:
            with open_h5(prepared / "train.h5", ("images",)) as f:
                images = f["images"]
                n = min(cfg.calibration_images, images.shape[0])
                encoder.calibrate_batchnorm(torch.from_numpy(images[i:min(i + cfg.batch_size, n)])
                                            for i in range(0, n, cfg.batch_size))
            log.info("random %s kept as is: BatchNorm statistics calibrated on %d training images", enc_cfg.name, n)
        else:
            log.info("%s with %s weights kept as they are", enc_cfg.name, enc_cfg.weights)
    else:
        instances = load_instances(load_manifest(Path("data/raw") / dataset))
        vocab = Vocabulary.load(prepared / "word_map.json")
        grid = enc_cfg.encoded_size
        sets = {}
        for split in ("train", "val"):
            base = CaptionDataset(prepared / f"{split}.h5")
            items = ImageSubset(base, list(range(len(base))), preload=cfg.preload)
            sets[split] = CellLabelled(items, split_cell_labels(prepared / f"{split}.h5", instances, grid,
                                                                cfg.min_cover))
        log.info("%s: %d categories over %dx%d cells, %d caption words, %d training images", dataset,
                 len(instances.categories), grid, grid, len(vocab) - len(SPECIALS), len(sets["train"]))
        model = EncoderPretrainer(encoder, len(instances.categories), len(vocab) - len(SPECIALS))
        train_cfg = cfg.train_config()
        task = PretrainTask(model, len(vocab), len(SPECIALS), sets["val"], train_cfg)
        fingerprint = run_fingerprint({"pretrain": read_params("pretrain", role), "encoder": read_params(role, "encoder")},
                                      prepared / "word_map.json")
        with training_runtime(train_cfg.device) as runtime:
            result = fit(task, sets["train"], train_cfg, ckpt_dir, fingerprint=fingerprint, runtime=runtime)
        if not runtime.is_main:
            return
        model.cpu()
        model.load_state_dict(result["best_state"])
        best = result["history"][result["best"]["epoch"] - 1]
        summary.update(best_epoch=result["best"]["epoch"], val_loss=best["val_loss"],
                       val_cell_accuracy=best["val_cell_accuracy"], val_word_map=best["val_word_map"])
        log.info("%s trunk: val cell accuracy %.4f, word mAP %.4f (epoch %d)", role, best["val_cell_accuracy"],
                 best["val_word_map"], best["epoch"])
    encoder.requires_grad_(False)
    save_encoder(Path("models/encoders") / f"{role}.pt", encoder)
    write_json(Path("metrics/pretrain") / f"{role}.json", summary)


if __name__ == "__main__":
    typer.run(main)
