"""Stage attention: where every model looks for each word, drawn on the same test images.

Params: ``attention`` (dataset, image_indices into its test split) and ``study.models`` (and BLIP).
Reads what the evaluation of each model saved for every test image: its per-word maps
(``results/maps/<technique>/<model>-<dataset>.h5``: soft attention and Grad-CAM on the encoder for
the LSTM models, Grad-CAM on cross-attention for BLIP; capt.eval.maps.TECHNIQUES) and its captions (``results/captions``); nothing is decoded again.
Writes ``results/attention/<model>/<image id>-<technique>.png``: each word with its map upsampled
onto the image, and ``results/attention/compare/<image id>.png``: every model and technique side
by side, a row each with its caption and sentence BLEU-4, the same colour scale in every cell.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import typer

from capt.config import CHECKED, NonNegativeInt, with_config
from capt.data.cache import open_h5, read_references
from capt.errors import CaptError
from capt.eval.maps import TECHNIQUES, read_word_maps
from capt.eval.metrics import sentence_bleu4
from capt.viz.attention import plot_attention, plot_comparison
from stages._common import read_config, stage_main, study_models

log = logging.getLogger("stages.attention")


@with_config(CHECKED)
@dataclass(frozen=True)
class AttentionConfig:
    dataset: str = "shapes"
    image_indices: list[NonNegativeInt] = field(default_factory=lambda: [0, 1, 2, 3])   # into the test split


@stage_main
def main() -> None:
    cfg = read_config(AttentionConfig, "attention")
    models = study_models()
    test_h5 = Path("data/prepared") / cfg.dataset / "test.h5"
    with open_h5(test_h5, ("images", "image_ids")) as f:
        n = f["images"].shape[0]
        bad = [i for i in cfg.image_indices if not 0 <= i < n]
        if bad:
            raise CaptError(f"params.yaml: attention.image_indices {bad} outside the {n} test images of {test_h5}")
        order = sorted(set(cfg.image_indices))
        images = f["images"][order]
        image_ids = [int(i) for i in f["image_ids"][order]]
    references = read_references(test_h5)
    rows: dict[int, list] = {image_id: [] for image_id in image_ids}
    for model in models:
        captions_path = Path("results/captions") / f"{model}-{cfg.dataset}.json"
        try:
            captions = {c["image_id"]: c["caption"] for c in json.loads(captions_path.read_text())}
        except FileNotFoundError:
            raise CaptError(f"{captions_path}: missing; run the evaluation of {model} on {cfg.dataset}") from None
        techniques = [t for t in TECHNIQUES if (Path("results/maps") / t / f"{model}-{cfg.dataset}.h5").exists()]
        if not techniques:
            raise CaptError(f"results/maps/*/{model}-{cfg.dataset}.h5: missing; rerun the evaluation of {model}")
        for technique in techniques:
            maps_path = Path("results/maps") / technique / f"{model}-{cfg.dataset}.h5"
            _, maps = read_word_maps(maps_path)
            for image, image_id in zip(images, image_ids):
                if image_id not in maps or image_id not in captions:
                    raise CaptError(f"{maps_path}: no maps for test image {image_id}; rerun the evaluation of {model}")
                words, word_maps = maps[image_id]
                flat = word_maps.reshape(len(words), word_maps.shape[1] * word_maps.shape[2])
                path = Path("results/attention") / model / f"{image_id}-{technique}.png"
                plot_attention(image, words, flat, path,
                               f"{model} on {cfg.dataset} image {image_id} ({TECHNIQUES[technique]})")
                bleu = sentence_bleu4(references[image_id], captions[image_id])
                label = f"{model} · {TECHNIQUES[technique]}\n“{captions[image_id]}”\nBLEU-4 {bleu:.2f}"
                rows[image_id].append((label, words, flat))
        log.info("%s: %d images x %s -> results/attention/%s/", model, len(image_ids), "+".join(techniques), model)
    for image, image_id in zip(images, image_ids):
        path = Path("results/attention/compare") / f"{image_id}.png"
        plot_comparison(image, rows[image_id], path, f"{cfg.dataset} test image {image_id}: every model, every word")
    log.info("side by side: results/attention/compare/<image id>.png")


if __name__ == "__main__":
    typer.run(main)
