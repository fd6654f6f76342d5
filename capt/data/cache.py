"""The prepared split cache: one HDF5 file per split.

Layout of ``<split>.h5`` (N images, C = captions_per_image, L = max_len + 2)::

    images             uint8  (N, 3, S, S)   RGB, resized to S x S, one chunk per image
    image_ids          int64  (N,)
    captions           int32  (N, C, L)      <start> w.. <end> <pad>.., ids of word_map.json
    caption_lengths    int32  (N, C)         tokens incl. <start> and <end>
    references         str    (M,)           every raw reference of every image, in order
    reference_offsets  int64  (N + 1,)       image i's references are [offsets[i], offsets[i+1])
    restval            bool   (N,)           Karpathy's restval images (COCO val2014 images his split
                                             trains on); only where the split has any

and attributes ``dataset``, ``split``, ``image_size``, ``captions_per_image``, ``max_len``.
Files are written under a temporary name and renamed into place, so a killed or failed write
never leaves a half-file where a good one is expected. Every HDF5 file capt reads goes through
:func:`open_h5`, so a damaged one still ends in one line naming it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

import h5py
import numpy as np

from capt.errors import CaptError
from capt.files import check_room

STR = h5py.string_dtype("utf-8")
# The test split again at BLIP's input size (capt.data.prepare): what BLIP is scored on.
BLIP_TEST_FILE = "test_blip.h5"
RERUN = "rerun the stage that writes it"


def open_h5(path: Path, needs: Iterable[str] = (), what: str = "") -> h5py.File:
    """``path`` opened read-only (a context manager, as h5py.File is), holding the datasets ``needs``.

    A missing file, one that is not HDF5 (truncated by a kill or a full disk, zeroed, overwritten)
    and one without a needed dataset end in one line naming the file: h5py's own errors do not
    say which file, and a missing dataset is a bare KeyError. ``what`` ("word maps") says what the
    file should have held, for files that are not split caches.
    """
    cannot = f"cannot read {what}: " if what else ""
    try:
        f = h5py.File(path, "r")
    except FileNotFoundError:
        raise CaptError(f"{path}: missing; {RERUN}") from None
    except OSError as e:
        if e.errno is not None:              # a folder, no permission: the OS's reason, not HDF5's dump
            raise CaptError(f"{path}: {cannot}{os.strerror(e.errno)}") from None
        # "Unable to synchronously open file (truncated file: eof = 96, ...)": the part in brackets
        found = re.search(r"\((.*)\)\s*$", str(e).replace("\n", " "))
        reason = found.group(1) if found else str(e).replace("\n", " ")
        raise CaptError(f"{path}: {cannot}not a readable HDF5 file (truncated or corrupt: {reason}); {RERUN}") from None
    missing = [name for name in needs if name not in f]
    if missing:
        holds = ", ".join(sorted(f)) or "nothing"
        f.close()
        raise CaptError(f"{path}: {cannot}no {missing[0]!r} dataset (it holds {holds}); {RERUN}")
    return f


class SplitWriter:
    """Streams images and captions into ``<split>.h5`` a block at a time, so memory stays flat.
    ``images``: how many there will be at most, to check first that the file fits (capt.files.check_room)."""

    # Bytes of an image's raw references, the usual five, with HDF5's variable-length string overhead
    REFERENCE_BYTES = 5 * 80

    def __init__(self, path: Path, *, image_size: int, captions_per_image: int, max_len: int,
                 attrs: dict, images: int, block: int = 256):
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        S, C, L = image_size, captions_per_image, max_len + 2
        check_room(self.path, images * (3 * S * S + C * L * 4 + C * 4 + 8 + 8 + self.REFERENCE_BYTES))
        # libver="latest": the newer chunk indexes stay smaller in memory for many one-image chunks.
        # rdcc_nbytes=0: we write whole blocks, so the chunk cache buys nothing, and with the
        # newer indexes it kept every written chunk of the small datasets (captions, lengths)
        # in memory, which made peak RSS grow with the dataset.
        self.f = h5py.File(self.tmp, "w", libver="latest", rdcc_nbytes=0)
        # The references are variable-length strings, kept in global-heap collections that the
        # metadata cache holds on to (up to 32 MB by default): cap it at 1 MB.
        mdc = self.f.id.get_mdc_config()
        mdc.set_initial_size, mdc.initial_size = True, 1 << 20
        mdc.min_size, mdc.max_size = 1 << 20, 1 << 20
        self.f.id.set_mdc_config(mdc)
        self.f.attrs.update({**attrs, "image_size": S, "captions_per_image": C, "max_len": max_len})
        self.images = self.f.create_dataset("images", (0, 3, S, S), np.uint8, maxshape=(None, 3, S, S),
                                            chunks=(1, 3, S, S))
        self.image_ids = self.f.create_dataset("image_ids", (0,), np.int64, maxshape=(None,), chunks=(4096,))
        self.captions = self.f.create_dataset("captions", (0, C, L), np.int32, maxshape=(None, C, L),
                                              chunks=(max(1, 4096 // C), C, L))
        self.lengths = self.f.create_dataset("caption_lengths", (0, C), np.int32, maxshape=(None, C),
                                             chunks=(4096, C))
        self.block = block
        self._buf_images = np.empty((block, 3, S, S), np.uint8)
        self._buf_ids = np.empty(block, np.int64)
        self._buf_caps = np.empty((block, C, L), np.int32)
        self._buf_lens = np.empty((block, C), np.int32)
        self.references = self.f.create_dataset("references", (0,), STR, maxshape=(None,), chunks=(4096,))
        self._buf_refs: list[str] = []
        self._offsets: list[int] = [0]   # (N + 1) int64s: small next to the images
        self._restval: list[int] = []     # positions of Karpathy's restval images
        self._n_buf = 0
        self.n = 0
        self.n_references = 0

    def add(self, image: np.ndarray, image_id: int, captions: np.ndarray, lengths: np.ndarray,
            references: list[str], restval: bool = False) -> None:
        k = self._n_buf
        if restval:
            self._restval.append(self.n + k)
        self._buf_images[k], self._buf_ids[k], self._buf_caps[k], self._buf_lens[k] = image, image_id, captions, lengths
        self._buf_refs.extend(references)
        self._offsets.append(self._offsets[-1] + len(references))
        self._n_buf += 1
        if self._n_buf == self.block:
            self._flush()

    def _flush(self) -> None:
        k, n = self._n_buf, self.n
        for ds, buf in ((self.images, self._buf_images), (self.image_ids, self._buf_ids),
                        (self.captions, self._buf_caps), (self.lengths, self._buf_lens)):
            ds.resize(n + k, axis=0)
            ds[n:n + k] = buf[:k]
        self.n += k
        self._n_buf = 0
        m, r = self.n_references, len(self._buf_refs)
        self.references.resize(m + r, axis=0)
        self.references[m:m + r] = np.array(self._buf_refs, dtype=object)
        self.n_references += r
        self._buf_refs = []

    def close(self) -> None:
        """Finish the file and rename it into place; on any failure (a full disk) drop the
        temporary file and keep the previous good one."""
        try:
            self._flush()
            self.f.create_dataset("reference_offsets", data=np.asarray(self._offsets, np.int64))
            if self._restval:
                flags = np.zeros(self.n, bool)
                flags[self._restval] = True
                self.f.create_dataset("restval", data=flags)
            self.f.close()
            os.replace(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Drop the temporary file; the previous good file, if any, stays."""
        try:
            self.f.close()
        finally:
            self.tmp.unlink(missing_ok=True)


KARPATHY_PARTS = ("all", "train", "restval")


def karpathy_part(path: Path, part: str, param: str) -> list[int]:
    """The positions in a prepared training split of the images in Karpathy's ``part``: ``all``
    (every image), ``train`` (his train split: every image but restval) or ``restval`` (the
    COCO val2014 images his split also trains on). ``param`` names the param that chose the part,
    for the errors: an unknown part, or ``train``/``restval`` on a split without restval images
    (every dataset but COCO)."""
    if part not in KARPATHY_PARTS:
        raise CaptError(f"{param}: must be one of {', '.join(KARPATHY_PARTS)}, got {part!r}")
    with open_h5(path, needs=("image_ids",)) as f:
        n = len(f["image_ids"])
        restval = f["restval"][:] if "restval" in f else np.zeros(n, bool)
    if part == "all":
        return list(range(n))
    if not restval.any():
        raise CaptError(f"{param}: {part} needs Karpathy's restval images and {path} has none (only COCO's "
                        "Karpathy split has them); use all")
    return np.flatnonzero(restval if part == "restval" else ~restval).tolist()


def read_references(path: Path) -> dict[int, list[str]]:
    """image id -> every raw reference caption of that image, from a split file."""
    with open_h5(path, needs=("image_ids", "reference_offsets", "references")) as f:
        ids = f["image_ids"][:]
        offsets = f["reference_offsets"][:]
        refs = f["references"].asstr()[:]
    return {int(i): list(refs[offsets[k]:offsets[k + 1]]) for k, i in enumerate(ids)}
