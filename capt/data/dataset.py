"""A torch Dataset over one prepared split file.

One item is one image with all of its encoded captions, so a training loop encodes the image
once and expands it over its C captions (never re-encoding it five times per epoch).
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from capt.data.cache import RERUN, open_h5
from capt.errors import CaptError

# What CaptionDataset reads of a split file's attributes (capt.data.cache writes them).
SPLIT_ATTRS = ("image_size", "captions_per_image", "max_len", "split")


class CaptionDataset(Dataset):
    """Items: ``{"image": uint8 (3, S, S), "captions": int64 (C, L), "lengths": int64 (C,),
    "image_id": int64 (), "index": int64 ()}``; the default collate stacks them into a batch.

    With ``features_path`` (a feature cache of the same split, capt.train.features), items carry
    ``"features": float16 (h*w, D)`` as well: a frozen trunk's cells on its native grid
    (``feature_grid``), read instead of recomputed. They stay fp16 through the loader's workers
    (half the bytes through shared memory, whose 64 MB default in Docker a float32 batch of
    ResNet-101 cells outgrows); the model casts and pools them on its device.

    The HDF5 file is opened lazily in the process that reads it: an h5py handle must not cross a
    fork, so with ``num_workers > 0`` every worker opens its own.
    """

    def __init__(self, path: Path, load_images: bool = True, features_path: Path | None = None):
        self.path = Path(path)
        self.load_images = load_images
        self.features_path = Path(features_path) if features_path is not None else None
        needs = ("image_ids", "captions", "caption_lengths", *(["images"] if load_images else []))
        with open_h5(self.path, needs) as f:
            missing = [a for a in SPLIT_ATTRS if a not in f.attrs]
            if missing:
                raise CaptError(f"{self.path}: no {missing[0]!r} attribute; {RERUN}")
            self._len = int(f["image_ids"].shape[0])
            self.image_size = int(f.attrs["image_size"])
            self.captions_per_image = int(f.attrs["captions_per_image"])
            self.max_len = int(f.attrs["max_len"])
            self.split = str(f.attrs["split"])
            image_ids = f["image_ids"][:]
        self.feature_grid: tuple[int, int] | None = None
        if self.features_path is not None:
            with open_h5(self.features_path, ("image_ids", "features")) as g:
                if not np.array_equal(g["image_ids"][:], image_ids):
                    raise CaptError(f"{self.features_path}: its images are not those of {self.path}; "
                                    "rerun the features stage")
                self.feature_grid = read_feature_grid(g, self.features_path)
        self._file: h5py.File | None = None
        self._features: h5py.File | None = None
        self._pid: int | None = None

    def _h5(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file = open_h5(self.path)
            if self.features_path is not None:
                self._features = open_h5(self.features_path)
            self._pid = os.getpid()
        return self._file

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < self._len:
            raise IndexError(f"index {i} out of range for {self._len} images in {self.path}")
        f = self._h5()
        item = {
            "captions": torch.from_numpy(f["captions"][i].astype("int64")),
            "lengths": torch.from_numpy(f["caption_lengths"][i].astype("int64")),
            "image_id": torch.tensor(int(f["image_ids"][i])),
            "index": torch.tensor(i),
        }
        if self.load_images:
            item["image"] = torch.from_numpy(f["images"][i])
        if self._features is not None:
            item["features"] = torch.from_numpy(self._features["features"][i])       # fp16, as stored
        return item

    def __getstate__(self) -> dict:
        # Never pickle an open handle into a worker process.
        state = dict(self.__dict__)
        state["_file"], state["_features"], state["_pid"] = None, None, None
        return state

    def close(self) -> None:
        for f in (self._file, self._features):
            if f is not None:
                f.close()
        self._file = self._features = None


def read_feature_grid(features: h5py.File, path: Path) -> tuple[int, int]:
    """(h, w): the native grid of a feature cache's cells (its ``grid`` attribute)."""
    if "grid" not in features.attrs:
        raise CaptError(f"{path}: a feature cache without its grid (made by an older features stage); "
                        "rerun the features stage")
    h, w = (int(v) for v in features.attrs["grid"])
    if features["features"].shape[1] != h * w:
        raise CaptError(f"{path}: {features['features'].shape[1]} cells per image but a {h} x {w} grid")
    return h, w


class ImageSubset(Dataset):
    """The images at ``indices`` of a CaptionDataset, optionally with other captions for them.

    ``captions`` (K, C', L) and ``lengths`` (K, C'), one row per index, replace the human
    captions, e.g. a teacher's beam-search captions for sequence-level distillation.
    With ``preload`` every item is read into memory once (one sequential read per array rather
    than several small reads per item and epoch): for subsets that fit in RAM, as the embedded
    profile's students do (1,250 images of 64 px: 15 MB of pixels).
    """

    def __init__(self, base: CaptionDataset, indices: list[int], captions: np.ndarray | None = None,
                 lengths: np.ndarray | None = None, preload: bool = False):
        if (captions is None) != (lengths is None):
            raise ValueError("captions and lengths go together")
        if captions is not None and not (len(captions) == len(lengths) == len(indices)):
            raise ValueError(f"{len(indices)} indices but {len(captions)} caption rows and {len(lengths)} lengths")
        bad = [i for i in indices if not 0 <= i < len(base)]
        if bad:
            raise CaptError(f"{base.path}: image indices {bad[:5]} out of range for {len(base)} images")
        self.base, self.indices = base, list(indices)
        self.captions = None if captions is None else torch.from_numpy(np.asarray(captions, dtype=np.int64))
        self.lengths = None if lengths is None else torch.from_numpy(np.asarray(lengths, dtype=np.int64))
        self.items: list[dict[str, torch.Tensor]] | None = None
        if preload:
            self.items = [self._read(i) for i in range(len(self.indices))]

    def __len__(self) -> int:
        return len(self.indices)

    def _read(self, i: int) -> dict[str, torch.Tensor]:
        item = self.base[self.indices[i]]
        if self.captions is not None:
            item["captions"], item["lengths"] = self.captions[i], self.lengths[i]
        return item

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if self.items is not None:
            return dict(self.items[i])
        return self._read(i)
