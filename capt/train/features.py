"""The feature cache: a frozen encoder run once over every image, stored as fp16 HDF5.

A frozen encoder gives the same features every epoch, so encoding each image once (instead of
once per caption per epoch, as the tutorial this study started from did) is the whole cost of
the encoder. The cache holds the trunk's native grid of cells, before the adaptive pool: the
pool is linear, so its reader pools to ``encoded_size``**2 cells on the device
(``capt.models.encoder.pool_cells``) and gets the encoder's features up to fp16 rounding. For a
ResNet-101 on 256 px images that is 8 x 8 = 64 stored cells instead of 14 x 14 = 196 pooled up
from them: a third of the bytes for the same information. Layout of ``<split>.h5``::

    features   float16 (N, h*w, D)  the trunk's cells, row-major over its grid; chunk per image
    image_ids  int64   (N,)         the same order as the prepared split file

attrs: ``encoder`` (name), ``grid`` (h, w), ``encoded_size`` (the cells the model pools to),
``feature_dim`` (D).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm import tqdm

from capt.data.cache import open_h5
from capt.errors import CaptError
from capt.files import atomic_output, check_room
from capt.models.encoder import Encoder


@torch.no_grad()
def encode_split(encoder: Encoder, prepared_h5: Path, out_h5: Path, *, batch_size: int = 32,
                 progress: bool = True) -> int:
    """Encode every image of a prepared split file into ``out_h5``, on the encoder's device;
    returns the image count."""
    if not encoder.frozen:
        raise ValueError("only a frozen encoder's features can be cached")
    encoder.eval()
    with open_h5(prepared_h5, ("images", "image_ids")) as src:
        (n, _, S, _), D = src["images"].shape, encoder.feature_dim
    h, w = encoder.native_grid(S, S)
    check_room(Path(out_h5), n * h * w * D * 2)       # fp16 cells: HDF5 would crash on a failed write
    with atomic_output(Path(out_h5)) as tmp:          # a full disk or a kill: the previous good cache stays
        return _encode(encoder, prepared_h5, tmp, batch_size, progress)


def _encode(encoder: Encoder, prepared_h5: Path, tmp: Path, batch_size: int, progress: bool) -> int:
    D = encoder.feature_dim
    with open_h5(prepared_h5, ("images", "image_ids")) as src, h5py.File(tmp, "w", libver="latest") as dst:
        images, n = src["images"], src["images"].shape[0]
        h, w = encoder.native_grid(*images.shape[-2:])
        feats = dst.create_dataset("features", (n, h * w, D), np.float16, chunks=(1, h * w, D))
        dst["image_ids"] = src["image_ids"][:]
        dst.attrs.update(encoder=encoder.cfg.name, grid=(h, w), encoded_size=encoder.cfg.encoded_size, feature_dim=D)
        for i in tqdm(range(0, n, batch_size), desc=f"encode {Path(prepared_h5).name}", unit="batch",
                      disable=not progress):
            batch = torch.from_numpy(images[i:i + batch_size])          # the encoder moves it to its device
            feats[i:i + len(batch)] = to_fp16(encoder.native_cells(batch).float().cpu(), prepared_h5)
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
