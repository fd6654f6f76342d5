"""Stage train_teacher: the Show-Attend-Tell teacher's decoder, trained on the feature cache.

Params: ``teacher`` (dataset, subset, encoder, decoder, train). Reads ``data/prepared/<dataset>`` and
``data/features/<dataset>``; writes ``models/teacher.pt`` (the best epoch), the per-epoch
history ``metrics/history/teacher.csv`` (+ ``results/curves/teacher.png``),
``metrics/train/teacher.json``, and resumable checkpoints in ``checkpoints/teacher/`` (a DVC
``persist`` output).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
import typer

from capt.config import CHECKED, with_config
from capt.data.cache import karpathy_part, read_references
from capt.data.dataset import CaptionDataset, ImageSubset
from capt.data.vocab import Vocabulary
from capt.errors import CaptError
from capt.models.decoder import AttentionDecoder, DecoderConfig
from capt.models.encoder import Encoder, EncoderConfig
from capt.models.saved import save_captioner
from capt.train.captioner import CaptionerTask
from capt.models.checkpoint import load_checkpoint
from capt.train.loop import TrainConfig, fit
from stages._common import make_config, read_params, stage_main
from stages._training import run_fingerprint, training_runtime, write_training_outputs

log = logging.getLogger("stages.train_teacher")


@with_config(CHECKED)
@dataclass(frozen=True)
class TeacherConfig:
    """The ``teacher`` section."""

    dataset: str
    subset: str = "all"          # Karpathy's part of the training split it learns from: all | train | restval
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


@stage_main
def main(name: str = typer.Option("teacher", help="model name: outputs go to models/<name>.pt"),
         ckpt_root: Path = typer.Option(Path("checkpoints"))) -> None:
    section = read_params("teacher")
    teacher = make_config(TeacherConfig, section, "teacher")
    enc_cfg, dec_cfg, cfg, dataset = teacher.encoder, teacher.decoder, teacher.train, teacher.dataset
    prepared, features = Path("data/prepared") / dataset, Path("data/features") / dataset

    vocab = Vocabulary.load(prepared / "word_map.json")
    train_set = CaptionDataset(prepared / "train.h5", load_images=False, features_path=features / "train.h5")
    val_set = CaptionDataset(prepared / "val.h5", load_images=False, features_path=features / "val.h5")
    if train_set.feature_grid != val_set.feature_grid:
        raise CaptError(f"{features}: train and val features on other grids ({train_set.feature_grid}, "
                        f"{val_set.feature_grid}); rerun the features stage")
    # teacher.subset: Karpathy's part of the training split it learns from (all | train | restval)
    positions = karpathy_part(prepared / "train.h5", teacher.subset, "params.yaml: teacher.subset")
    log.info("teacher: %d of %d training images (teacher.subset %s)", len(positions), len(train_set), teacher.subset)
    if cfg.preload or len(positions) < len(train_set):
        train_set = ImageSubset(train_set, positions, preload=cfg.preload)
    encoder = Encoder(dataclasses.replace(enc_cfg, weights=None))   # its weights come from the features stage
    encoder.load_state_dict(load_checkpoint(features / "encoder.pt"))

    torch.manual_seed(cfg.seed)
    decoder = AttentionDecoder(dec_cfg, len(vocab), encoder.feature_dim)
    # The cache holds the trunk's native grid: the task pools it to encoded_size**2 on the device.
    task = CaptionerTask(decoder, vocab, val_set, read_references(prepared / "val.h5"), cfg,
                         feature_grid=val_set.feature_grid, encoded_size=enc_cfg.encoded_size)
    # A checkpoint from other params or other data must not be resumed.
    fingerprint = run_fingerprint(section, prepared / "word_map.json", features / "encoder.pt")
    with training_runtime(cfg.device) as runtime:
        result = fit(task, train_set, cfg, ckpt_root / name, fingerprint=fingerprint, runtime=runtime)
    if not runtime.is_main:
        return
    decoder.cpu()
    decoder.load_state_dict({k.removeprefix("decoder."): v for k, v in result["best_state"].items()})
    save_captioner(Path("models") / f"{name}.pt", encoder, decoder, vocab, val_set.image_size)
    write_training_outputs(name, result, f"{name} ({enc_cfg.name}, LSTM {dec_cfg.decoder_dim})")


if __name__ == "__main__":
    typer.run(main)
