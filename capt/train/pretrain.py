"""Pretraining of an encoder trunk before any captioning: the embedded profile's ImageNet.

The real study's encoders start from ImageNet weights, whose features already tell a bus from a
dog at each place in the image. A *random* trunk, the only offline choice in the embedded
`shapes` world, keeps colour but hardly any shape: a teacher on it named a shape that was not in
the image in 55% of its mentions, and its attention for shape words hit the object less often
than the image's centre point does. So the trunk first learns two things, on the training split:

- **which category covers each grid cell** (cross-entropy over background + K categories, the
  labels from the instance masks at the encoder's grid): shape, at the right place;
- **which vocabulary words the image's captions use** (binary cross-entropy, each word's score
  its best cell's: the multiple-instance visual-concept detectors of Fang et al., "From captions
  to visual concepts and back", CVPR 2015): colour, size, everything captions talk about.

    images uint8 (B, 3, S, S) --trunk--> cells (B, P, D) --linear--> category logits (B, P, K+1)
                                                         --linear--> word scores (B, P, V)
                                                                     --max over P--> (B, V)

On COCO the trunk starts from ImageNet and the profile pretrains for 0 epochs: the weights are
used as they are. Only the trunk is kept; the two heads are thrown away.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from capt.config import CHECKED, Count, Device, Flag, Fraction, Int, NonNegativeInt, Positive, with_config
from capt.models.encoder import Encoder
from capt.train.loop import Precision, TrainConfig, check_global_batch, to_device


@with_config(CHECKED)
@dataclass(frozen=True)
class PretrainConfig:
    epochs: NonNegativeInt = 4      # 0: keep the initial weights (ImageNet, or random + BN calibration)
    batch_size: Count = 64
    lr: Positive = 0.003
    min_cover: Fraction = 0.25      # a cell belongs to a category that covers at least this share of it
    init_seed: Int = 0              # the random initialisation, when encoder.weights is null
    calibration_images: Count = 512 # BatchNorm statistics of a random trunk kept as is (epochs 0)
    preload: Flag = True            # hold the training images in memory (small datasets)
    processes: Count = 1            # > 1: DistributedDataParallel under torchrun (capt.train.loop)
    device: Device = "auto"
    precision: Precision = "fp32"
    channels_last: Flag = False
    seed: Int = 0

    def __post_init__(self):
        check_global_batch(self.batch_size, self.processes)     # named at pretrain's own path, not the TrainConfig's

    def train_config(self) -> TrainConfig:
        return TrainConfig(epochs=max(self.epochs, 1), batch_size=self.batch_size, lr=self.lr,
                           early_stop=self.epochs + 1, lr_patience=self.epochs + 1, preload=self.preload,
                           processes=self.processes, device=self.device, precision=self.precision,
                           channels_last=self.channels_last, seed=self.seed)


def cell_labels(masks: dict[str, np.ndarray], categories: list[str], grid: int, min_cover: float) -> np.ndarray:
    """Instance masks of one image (category -> bool (H, W) at any size) -> the category of each of
    the grid x grid cells, row-major, int64 (grid*grid,): 0 for background, 1 + the category's
    index for the category covering most of the cell, if it covers at least ``min_cover`` of it."""
    labels = np.zeros(grid * grid, np.int64)
    best = np.full(grid * grid, min_cover, np.float32)
    for name, mask in masks.items():
        m = torch.from_numpy(np.ascontiguousarray(mask, np.float32))[None, None]
        cover = F.adaptive_avg_pool2d(m, grid).flatten().numpy()        # share of each cell covered
        won = cover >= best
        labels[won] = categories.index(name) + 1
        best = np.maximum(best, cover)
    return labels


def caption_words(captions: torch.Tensor, lengths: torch.Tensor, vocab_size: int, n_special: int) -> torch.Tensor:
    """Encoded captions (B, C, L) with lengths (B, C) -> multi-hot (B, V - n_special) of the
    words any of an image's captions uses (the special tokens <pad> <start> <end> <unk> come
    first in the vocabulary and are left out)."""
    B, C, L = captions.shape
    live = torch.arange(L, device=captions.device)[None, None, :] < lengths[:, :, None]              # (B, C, L)
    words = captions.masked_fill(~live, 0).reshape(B, C * L)
    hot = torch.zeros(B, vocab_size, device=captions.device).scatter_(1, words, 1.0)
    return hot[:, n_special:]


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """AP of one detector over N images: the mean precision at the rank of each positive
    (the detector is ranked, not thresholded); NaN when there is no positive."""
    n_pos = int(labels.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    hits = labels[order].astype(bool)
    precision_at_hits = np.cumsum(hits)[hits] / (np.flatnonzero(hits) + 1)
    return float(precision_at_hits.mean())


class EncoderPretrainer(nn.Module):
    """A trunk (every layer trainable, stem included) with a cell-category head and a word head."""

    def __init__(self, encoder: Encoder, n_categories: int, n_words: int):
        super().__init__()
        self.encoder = encoder
        self.encoder.requires_grad_(True)
        self.cells = nn.Linear(encoder.feature_dim, n_categories + 1)
        self.words = nn.Linear(encoder.feature_dim, n_words)

    def train(self, mode: bool = True) -> EncoderPretrainer:
        # nn.Module.train, not Encoder.train: here the stem learns too and its BatchNorms follow the data.
        nn.Module.train(self, mode)
        nn.Module.train(self.encoder, mode)
        return self

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 (B, 3, S, S) -> category logits per cell (B, P, K+1), word logits (B, V)."""
        enc = self.encoder
        f = enc.pool(enc.blocks(enc.stem(enc.normalize(images)))).flatten(2).transpose(1, 2)   # (B, P, D)
        return self.cells(f), self.words(f).amax(dim=1)


class CellLabelled(Dataset):
    """Items of ``base`` (images, captions) with each image's cell labels (N, P) added."""

    def __init__(self, base: Dataset, cells: np.ndarray):
        if len(base) != len(cells):
            raise ValueError(f"{len(base)} items but {len(cells)} rows of cell labels")
        self.base, self.cells = base, torch.from_numpy(np.asarray(cells, np.int64))

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {**self.base[i], "cells": self.cells[i]}


class PretrainTask:
    """Loss: cross-entropy of the cell categories + binary cross-entropy of the caption words.
    Validation: the same loss (``fit`` stops early on its negative, ``criterion``), the share of
    object cells whose category is right, and the words' mean average precision."""

    criterion = "neg_loss"

    def __init__(self, model: EncoderPretrainer, vocab_size: int, n_special: int, val_set: Dataset,
                 cfg: TrainConfig):
        self.model, self.vocab_size, self.n_special = model, vocab_size, n_special
        self.val_set, self.cfg = val_set, cfg
        self.device = torch.device("cpu")

    def to(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self.model.to(self.device)

    def param_groups(self, cfg: TrainConfig) -> list[dict]:
        return [{"params": list(self.model.parameters()), "lr": cfg.lr}]

    def _losses(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        cells, words = self.model(batch["image"])
        targets = caption_words(batch["captions"], batch["lengths"], self.vocab_size, self.n_special)
        cell_loss = F.cross_entropy(cells.flatten(0, 1), batch["cells"].flatten())
        word_loss = F.binary_cross_entropy_with_logits(words, targets)
        return cell_loss + word_loss, cells, words, targets

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        loss, *_ = self._losses(batch)
        return loss, {"loss": loss.item()}

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        total, n, right, objects, scores, labels = 0.0, 0, 0, 0, [], []
        for batch in DataLoader(self.val_set, batch_size=self.cfg.batch_size):
            batch = to_device(batch, self.device)
            loss, cells, words, targets = self._losses(batch)
            total, n = total + loss.item() * len(targets), n + len(targets)
            obj = batch["cells"] > 0
            right += int((cells.argmax(-1)[obj] == batch["cells"][obj]).sum())
            objects += int(obj.sum())
            scores.append(words)
            labels.append(targets)
        s, y = torch.cat(scores).float().cpu().numpy(), torch.cat(labels).cpu().numpy()
        aps = [a for a in (average_precision(s[:, w], y[:, w]) for w in range(y.shape[1])) if not np.isnan(a)]
        return {"loss": total / n, "neg_loss": -total / n, "cell_accuracy": right / max(objects, 1),
                "word_map": float(np.mean(aps)) if aps else 0.0}
