"""The feature cache: a frozen encoder run once over every image, stored as fp16 HDF5.

A frozen encoder gives the same features every epoch, so encoding each image once (instead of
once per caption per epoch, as the tutorial this study started from did) is the whole cost of
the encoder. Layout of ``<split>.h5``::

    features   float16 (N, P, D)   P = encoded_size**2 cells, D the encoder width; chunk per image
    image_ids  int64   (N,)        the same order as the prepared split file

attrs: ``encoder`` (name), ``encoded_size``, ``feature_dim``.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm import tqdm

from capt.errors import CaptError
from capt.models.encoder import Encoder


@torch.no_grad()
def encode_split(encoder: Encoder, prepared_h5: Path, out_h5: Path, *, batch_size: int = 32,
                 progress: bool = True) -> int:
    """Encode every image of a prepared split file into ``out_h5``, on the encoder's device;
    returns the image count."""
    if not encoder.frozen:
        raise ValueError("only a frozen encoder's features can be cached")
    encoder.eval()
    out_h5 = Path(out_h5)
    tmp = out_h5.with_name(out_h5.name + ".tmp")
    try:
        n = _encode(encoder, prepared_h5, tmp, batch_size, progress)
        os.replace(tmp, out_h5)
    except BaseException:
        tmp.unlink(missing_ok=True)         # a full disk or a kill: the previous good cache stays
        raise
    return n


def _encode(encoder: Encoder, prepared_h5: Path, tmp: Path, batch_size: int, progress: bool) -> int:
    P, D = encoder.cfg.encoded_size ** 2, encoder.feature_dim
    with h5py.File(prepared_h5, "r") as src, h5py.File(tmp, "w", libver="latest") as dst:
        images, n = src["images"], src["images"].shape[0]
        feats = dst.create_dataset("features", (n, P, D), np.float16, chunks=(1, P, D))
        dst["image_ids"] = src["image_ids"][:]
        dst.attrs.update(encoder=encoder.cfg.name, encoded_size=encoder.cfg.encoded_size, feature_dim=D)
        for i in tqdm(range(0, n, batch_size), desc=f"encode {Path(prepared_h5).name}", unit="batch",
                      disable=not progress):
            batch = torch.from_numpy(images[i:i + batch_size])          # the encoder moves it to its device
            feats[i:i + len(batch)] = to_fp16(encoder(batch).float().cpu(), prepared_h5)
    return n


FP16_MAX = float(np.finfo(np.float16).max)


def to_fp16(features: torch.Tensor, source: Path) -> np.ndarray:
    """(B, P, D) float features as fp16, refusing values fp16 cannot hold: an overflow would
    store inf, and the first training step would then report a NaN loss far from its cause."""
    peak = features.abs().max().item() if features.numel() else 0.0
    if not peak <= FP16_MAX:                                       # also catches NaN
        raise CaptError(f"{source}: the encoder's features reach {peak:.3g}, beyond fp16's range "
                        f"({FP16_MAX:.0f}); are the trunk's weights (and BatchNorm statistics) trained?")
    return features.numpy().astype(np.float16)
