"""Stage features: the frozen teacher encoder run once over every image of the teacher's dataset.

Params: ``teacher.encoder`` (an EncoderConfig; must be frozen) and ``features`` (batch_size;
for a randomly initialised encoder, init_seed and calibration_images: see
Encoder.calibrate_batchnorm). Reads ``data/prepared/<dataset>/<split>.h5``,
writes ``data/features/<dataset>/<split>.h5`` and ``encoder.pt`` (the encoder's state dict, so
the teacher's saved model is the very encoder these features came from).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import h5py
import torch
import typer

from capt.errors import CaptError
from capt.models.encoder import Encoder, EncoderConfig
from capt.train.checkpoint import save_checkpoint
from capt.train.features import encode_split
from stages._common import make_config, read_params, stage_main

log = logging.getLogger("stages.features")


@dataclass(frozen=True)
class FeaturesConfig:
    batch_size: int = 32
    init_seed: int = 0             # seeds the random initialisation when encoder.weights is null
    calibration_images: int = 512  # ... whose BatchNorm statistics are then set from this many training images


@stage_main
def main(dataset: str,
         prepared_root: Path = typer.Option(Path("data/prepared")),
         out_root: Path = typer.Option(Path("data/features"))) -> None:
    enc_cfg = make_config(EncoderConfig, read_params("teacher", "encoder"), "teacher.encoder")
    cfg = make_config(FeaturesConfig, read_params("features"), "features")
    if enc_cfg.fine_tune:
        raise CaptError("params.yaml: teacher.encoder.fine_tune is true; the feature cache needs a frozen encoder")
    torch.manual_seed(cfg.init_seed)
    encoder = Encoder(enc_cfg)
    out_dir = out_root / dataset
    out_dir.mkdir(parents=True, exist_ok=True)
    if enc_cfg.weights is None:
        train_h5 = prepared_root / dataset / "train.h5"
        with h5py.File(train_h5, "r") as f:
            images = f["images"]
            n = min(cfg.calibration_images, images.shape[0])
            encoder.calibrate_batchnorm(torch.from_numpy(images[i:min(i + cfg.batch_size, n)])
                                        for i in range(0, n, cfg.batch_size))
        log.info("random %s: BatchNorm statistics calibrated on %d training images", enc_cfg.name, n)
    for split in ("train", "val", "test"):
        n = encode_split(encoder, prepared_root / dataset / f"{split}.h5", out_dir / f"{split}.h5",
                         batch_size=cfg.batch_size)
        log.info("%s %s: %d images -> %s", dataset, split, n, out_dir / f"{split}.h5")
    save_checkpoint(encoder.state_dict(), out_dir / "encoder.pt")


if __name__ == "__main__":
    typer.run(main)
