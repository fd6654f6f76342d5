"""A torch Dataset over one prepared split file.

One item is one image with all of its encoded captions, so a training loop encodes the image
once and expands it over its C captions (never re-encoding it five times per epoch).
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import torch
from torch.utils.data import Dataset


class CaptionDataset(Dataset):
    """Items: ``{"image": uint8 (3, S, S), "captions": int64 (C, L), "lengths": int64 (C,),
    "image_id": int64 (), "index": int64 ()}``; the default collate stacks them into a batch.

    The HDF5 file is opened lazily in the process that reads it: an h5py handle must not cross a
    fork, so with ``num_workers > 0`` every worker opens its own.
    """

    def __init__(self, path: Path, load_images: bool = True):
        self.path = Path(path)
        self.load_images = load_images
        with h5py.File(self.path, "r") as f:
            self._len = int(f["image_ids"].shape[0])
            self.image_size = int(f.attrs["image_size"])
            self.captions_per_image = int(f.attrs["captions_per_image"])
            self.max_len = int(f.attrs["max_len"])
            self.split = str(f.attrs["split"])
        self._file: h5py.File | None = None
        self._pid: int | None = None

    def _h5(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
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
        return item

    def __getstate__(self) -> dict:
        # Never pickle an open handle into a worker process.
        state = dict(self.__dict__)
        state["_file"], state["_pid"] = None, None
        return state

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
