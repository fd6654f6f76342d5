"""Stage attention@<model>: where one model looks for each word, on the study's fixed test images.

Params: ``attention`` (dataset, image_indices into its test split, beam_size, max_len), the same
for every model, so all models are drawn on the same images. Reads ``models/<model>.pt`` and the
prepared test split; writes ``results/attention/<model>/<image id>.png``. One stage per model:
retraining one student redraws that student's maps alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import torch
import typer

from capt.errors import CaptError
from capt.models.saved import load_captioner
from capt.viz.attention import plot_attention
from stages._common import make_config, read_params, stage_main

log = logging.getLogger("stages.attention")


@dataclass(frozen=True)
class AttentionConfig:
    dataset: str = "shapes"
    image_indices: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
    beam_size: int = 3
    max_len: int = 20


@stage_main
def main(model: str) -> None:
    cfg = make_config(AttentionConfig, read_params("attention"), "attention")
    test_h5 = Path("data/prepared") / cfg.dataset / "test.h5"
    with h5py.File(test_h5, "r") as f:
        n = f["images"].shape[0]
        bad = [i for i in cfg.image_indices if not 0 <= i < n]
        if bad:
            raise CaptError(f"params.yaml: attention.image_indices {bad} outside the {n} test images of {test_h5}")
        order = sorted(set(cfg.image_indices))
        images = f["images"][order]
        image_ids = f["image_ids"][order]
    out_dir = Path("results/attention") / model
    captioner = load_captioner(Path("models") / f"{model}.pt")
    decoded = captioner.caption(torch.from_numpy(images), beam_size=cfg.beam_size, max_len=cfg.max_len)
    for image, image_id, d in zip(images, image_ids, decoded):
        words = captioner.vocab.decode(d.tokens)
        path = out_dir / f"{int(image_id)}.png"
        plot_attention(image, words, d.alphas.numpy(), path, f"{model} on {cfg.dataset} image {int(image_id)}")
        log.info("%s: %s -> %s", model, " ".join(words), path)


if __name__ == "__main__":
    typer.run(main)
