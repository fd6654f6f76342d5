"""Encoder pretraining: cell labels from masks, caption words, average precision, and a real
training step in which the whole trunk (stem and BatchNorm statistics included) learns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from capt.config import build_config
from capt.data.vocab import SPECIALS, Vocabulary
from capt.errors import CaptError
from capt.models.encoder import Encoder, EncoderConfig
from capt.models.saved import load_encoder, save_encoder
from capt.train.loop import fit
from capt.train.pretrain import (
    EncoderPretrainer,
    PretrainConfig,
    PretrainTask,
    average_precision,
    caption_words,
    cell_labels,
)

VOCAB = Vocabulary([*SPECIALS, "a", "red", "blue", "circle", "square"])


def test_cell_labels_take_the_category_covering_most_of_each_cell():
    # a 40 x 40 image on a 2 x 2 grid: cells are 20 x 20 px
    square = np.zeros((40, 40), bool)
    square[:20, :20] = True                      # all of the top-left cell
    square[20:24, 20:40] = True                  # 20% of the bottom-right cell
    circle = np.zeros((40, 40), bool)
    circle[:10, 20:40] = True                    # 50% of the top-right cell
    circle[20:32, 20:40] = True                  # 60% of the bottom-right cell (more than the square's 20%)
    labels = cell_labels({"square": square, "circle": circle}, ["circle", "square"], grid=2, min_cover=0.25)
    assert labels.tolist() == [2, 1, 0, 1]      # row-major: TL square, TR circle, BL background, BR circle
    tiny = np.zeros((40, 40), bool)
    tiny[:4, :4] = True                           # 4% of a cell: under min_cover
    assert cell_labels({"circle": tiny}, ["circle"], grid=2, min_cover=0.25).tolist() == [0, 0, 0, 0]
    # sizes that do not divide by the grid (COCO's 640 x 480) still pool by area
    wide = np.zeros((30, 50), bool)
    wide[:, :25] = True
    assert cell_labels({"circle": wide}, ["circle"], grid=2, min_cover=0.25).tolist() == [1, 0, 1, 0]


def test_caption_words_multi_hot_without_specials_or_padding():
    w = VOCAB.word_map
    caps = torch.tensor([[[w["<start>"], w["a"], w["red"], w["circle"], w["<end>"], w["blue"]],
                          [w["<start>"], w["a"], w["circle"], w["<end>"], 0, 0]]])
    lengths = torch.tensor([[5, 4]])            # "blue" sits after the end: padding, not a word
    hot = caption_words(caps, lengths, len(VOCAB), len(SPECIALS))
    words = [VOCAB.words[len(SPECIALS) + i] for i in torch.nonzero(hot[0]).flatten().tolist()]
    assert words == ["a", "red", "circle"]


def test_average_precision():
    assert average_precision(np.array([0.9, 0.8, 0.1]), np.array([1, 1, 0])) == 1.0
    # ranking: pos, neg, pos -> precisions 1 and 2/3
    assert average_precision(np.array([0.9, 0.5, 0.4]), np.array([1, 0, 1])) == pytest.approx((1 + 2 / 3) / 2)
    assert np.isnan(average_precision(np.array([0.3]), np.array([0])))


class TinyImages(Dataset):
    """32 px images: a bright square in one quadrant; captions say its colour."""

    def __init__(self, n=16):
        g = torch.Generator().manual_seed(0)
        self.images = torch.randint(0, 60, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
        self.cells = torch.zeros(n, 4, dtype=torch.long)
        w = VOCAB.word_map
        self.captions = torch.zeros(n, 1, 5, dtype=torch.long)
        for i in range(n):
            q, red = i % 4, i % 2 == 0
            r, c = divmod(q, 2)
            self.images[i, 0 if red else 2, r * 16:(r + 1) * 16, c * 16:(c + 1) * 16] = 250
            self.cells[i, q] = 2                                        # "square"
            self.captions[i, 0] = torch.tensor([w["<start>"], w["a"], w["red" if red else "blue"],
                                                w["square"], w["<end>"]])

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i], "captions": self.captions[i], "lengths": torch.tensor([5]),
                "cells": self.cells[i]}


def test_pretraining_trains_the_whole_trunk_and_saves_it_for_a_frozen_encoder(tmp_path: Path):
    torch.manual_seed(0)
    enc_cfg = EncoderConfig(name="resnet18", stages=2, encoded_size=2)
    encoder = Encoder(enc_cfg)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    data = TinyImages()
    cfg = PretrainConfig(epochs=4, batch_size=8, lr=0.003).train_config()
    model = EncoderPretrainer(encoder, n_categories=2, n_words=len(VOCAB) - len(SPECIALS))
    task = PretrainTask(model, len(VOCAB), len(SPECIALS), data, cfg)
    result = fit(task, data, cfg, tmp_path / "ckpt", progress=False)
    assert [r["epoch"] for r in result["history"]] == [1, 2, 3, 4]
    assert result["history"][-1]["train_loss"] < result["history"][0]["train_loss"]
    assert 0 <= result["history"][-1]["val_cell_accuracy"] <= 1 and 0 < result["history"][-1]["val_word_map"] <= 1
    after = encoder.state_dict()
    # unlike a frozen Encoder, the stem's convolution and its BatchNorm statistics learn here
    assert not torch.equal(before["stem.0.weight"], after["stem.0.weight"])
    assert not torch.equal(before["stem.1.running_mean"], after["stem.1.running_mean"])

    save_encoder(tmp_path / "trunk.pt", encoder)
    frozen = load_encoder(tmp_path / "trunk.pt", enc_cfg)
    assert frozen.frozen and not any(p.requires_grad for p in frozen.parameters())
    encoder.eval()
    with torch.no_grad():
        assert torch.equal(frozen(data.images[:4]), encoder(data.images[:4]))
    with pytest.raises(CaptError, match="holds a resnet18 trunk of 2 stages, but the params ask for resnet34"):
        load_encoder(tmp_path / "trunk.pt", EncoderConfig(name="resnet34", stages=2, encoded_size=2))


def test_pretrain_config_checks():
    with pytest.raises(CaptError, match=r"^params.yaml: pretrain.teacher.epochs: must be >= 0, got -1$"):
        build_config(PretrainConfig, {"epochs": -1}, "pretrain.teacher")
    with pytest.raises(CaptError, match=r"^params.yaml: pretrain.teacher.min_cover: must be <= 1, got 1.5$"):
        build_config(PretrainConfig, {"min_cover": 1.5}, "pretrain.teacher")
    with pytest.raises(CaptError, match=r"^params.yaml: pretrain.students: batch_size 15 \(the global batch\) must "
                                        r"divide evenly over processes 2$"):           # before it trains, at its path
        build_config(PretrainConfig, {"batch_size": 15, "processes": 2}, "pretrain.students")
    assert PretrainConfig(epochs=0).train_config().epochs == 1


def _pretrain_weights(tmp_path: Path, **train) -> tuple[dict, list[dict]]:
    torch.manual_seed(0)
    encoder = Encoder(EncoderConfig(name="resnet18", stages=2, encoded_size=2))
    data = TinyImages()
    cfg = PretrainConfig(epochs=2, batch_size=8, lr=0.003, **train).train_config()
    task = PretrainTask(EncoderPretrainer(encoder, 2, len(VOCAB) - len(SPECIALS)), len(VOCAB), len(SPECIALS), data, cfg)
    result = fit(task, data, cfg, tmp_path / "-".join(f"{k}{v}" for k, v in train.items()), progress=False)
    return task.model.state_dict(), result["history"]


def test_channels_last_and_bf16_train_the_same_trunk(tmp_path: Path, monkeypatch):
    """channels_last changes the memory order only; bf16 autocast computes in 8-bit mantissas
    and still learns the same task (autocast as on a CPU with bf16 instructions, which this
    one may lack: there bf16 is emulated and the run stays fp32, capt.train.loop)."""
    from capt.train import loop

    monkeypatch.setattr(loop, "cpu_has_native_bf16", lambda: True)
    plain, plain_history = _pretrain_weights(tmp_path)
    nhwc, nhwc_history = _pretrain_weights(tmp_path, channels_last=True)
    assert nhwc["encoder.stem.0.weight"].is_contiguous(memory_format=torch.channels_last)
    # Other summation orders: the losses agree to rounding; Adam's normalised steps make a weight
    # with a near-zero gradient move by up to lr per step either way, so weights agree to ~lr.
    assert nhwc_history[0]["train_loss"] == pytest.approx(plain_history[0]["train_loss"], rel=1e-5)
    assert nhwc_history[-1]["train_loss"] == pytest.approx(plain_history[-1]["train_loss"], rel=1e-3)
    for k, v in plain.items():
        assert torch.allclose(v.float(), nhwc[k].float(), atol=0.003 * 4), k
    bf16, bf16_history = _pretrain_weights(tmp_path, precision="bf16")
    assert all(v.dtype == plain[k].dtype for k, v in bf16.items())           # weights stay fp32
    assert not torch.equal(bf16["encoder.stem.0.weight"], plain["encoder.stem.0.weight"])
    assert bf16_history[-1]["train_loss"] < bf16_history[0]["train_loss"]
    assert bf16_history[-1]["train_loss"] == pytest.approx(plain_history[-1]["train_loss"], rel=0.1)
