"""Stage features: the frozen teacher encoder run once over every image of the teacher's dataset.

Params: ``teacher.encoder`` (an EncoderConfig; must be frozen) and ``features`` (batch_size).
The trunk's weights come from ``models/encoders/teacher.pt`` (stage pretrain@teacher). Reads
``data/prepared/<dataset>/{train,val}.h5``, writes ``data/features/<dataset>/{train,val}.h5`` (the
trunk's cells on its native grid, before the adaptive pool; the models pool them) and
``encoder.pt`` (the encoder's state dict, so the teacher's saved model is the very encoder these
features came from). No test split: evaluation encodes the test images itself, as a user's
photos would be.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import typer

from capt.config import CHECKED, Count, Device, with_config
from capt.errors import CaptError
from capt.models.encoder import EncoderConfig
from capt.models.saved import load_encoder
from capt.models.checkpoint import save_checkpoint
from capt.train.distributed import resolve_device
from capt.train.features import encode_split
from stages._common import read_config, stage_main

log = logging.getLogger("stages.features")
SPLITS = ("train", "val")     # what training reads; evaluation re-encodes the test images


@with_config(CHECKED)
@dataclass(frozen=True)
class FeaturesConfig:
    batch_size: Count = 32
    device: Device = "auto"   # auto (a GPU where there is one) | cpu | cuda


@stage_main
def main(dataset: str,
         prepared_root: Path = typer.Option(Path("data/prepared")),
         out_root: Path = typer.Option(Path("data/features")),
         trunk: Path = typer.Option(Path("models/encoders/teacher.pt"))) -> None:
    enc_cfg = read_config(EncoderConfig, "teacher", "encoder")
    cfg = read_config(FeaturesConfig, "features")
    if enc_cfg.fine_tune:
        raise CaptError("params.yaml: teacher.encoder.fine_tune is true; the feature cache needs a frozen encoder")
    encoder = load_encoder(trunk, enc_cfg).to(resolve_device(cfg.device))
    out_dir = out_root / dataset
    out_dir.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        n = encode_split(encoder, prepared_root / dataset / f"{split}.h5", out_dir / f"{split}.h5",
                         batch_size=cfg.batch_size)
        log.info("%s %s: %d images -> %s", dataset, split, n, out_dir / f"{split}.h5")
    save_checkpoint(encoder.cpu().state_dict(), out_dir / "encoder.pt")


if __name__ == "__main__":
    typer.run(main)
