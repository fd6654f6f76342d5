"""Per-word maps of a model's captions, on disk: what each word looked at.

One file per model and test set, written by the evaluation (every test image) and read by the
figures and the grounding scores, whatever made the maps (LSTM soft attention, Grad-CAM).
Layout of ``<model>-<dataset>.h5`` (N images, M words in all, a G x G grid)::

    image_ids  int64   (N,)
    offsets    int64   (N + 1,)   image i's words are rows offsets[i]:offsets[i+1]
    words      str     (M,)
    maps       float16 (M, G, G)  each word's map over the grid, as the model made it (not rescaled)

attrs: ``technique`` (one of :data:`TECHNIQUES`), ``grid`` (G).
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import h5py
import numpy as np

from capt.data.cache import open_h5
from capt.files import write_atomic

# How a map was made: the name in metrics (``grounding.<name>``), in results/maps/<name>/ and in
# the figures, and what it is. Two gradient methods that share the name Grad-CAM in the
# literature are different computations here, so they are named apart.
TECHNIQUES: dict[str, str] = {
    # the LSTM's own soft attention over the encoder's cells when it emitted the word (Xu et al., 2015)
    "attention": "soft attention",
    # Grad-CAM (Selvaraju et al., 2017): the word's logit differentiated with respect to the
    # encoder's last block, channel weights = pooled gradients, ReLU of the weighted sum
    "gradcam_encoder": "Grad-CAM on the encoder",
    # BLIP's (and ALBEF's) Grad-CAM: one text-decoder layer's cross-attention to the image patches
    # times its positive gradient of the word's log-probability, averaged over heads
    "gradcam_crossattn": "Grad-CAM on cross-attention",
}


def write_word_maps(path: Path, captions: dict[int, tuple[list[str], np.ndarray]], technique: str) -> None:
    """``captions``: image id -> (words, maps (len(words), P)) with P a square number of cells;
    ``technique``: how they were made, one of :data:`TECHNIQUES`."""
    if technique not in TECHNIQUES:
        raise ValueError(f"unknown technique {technique!r}: one of {', '.join(TECHNIQUES)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = list(captions)
    P = next((m.shape[1] for _, m in captions.values() if len(m)), 1)
    G = math.isqrt(P)
    if G * G != P:
        raise ValueError(f"maps over {P} cells are not a square grid")
    offsets = np.zeros(len(ids) + 1, np.int64)
    words: list[str] = []
    maps = []
    for i, image_id in enumerate(ids):
        w, m = captions[image_id]
        if len(w) != len(m):
            raise ValueError(f"image {image_id}: {len(w)} words but {len(m)} maps")
        words += w
        maps.append(np.asarray(m, np.float32).reshape(len(w), G, G))
        offsets[i + 1] = offsets[i] + len(w)
    # Built in memory (a test set's maps are megabytes), then written whole: HDF5 cannot be trusted
    # to fail cleanly on a full disk (its library may crash when it cannot flush).
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f["image_ids"] = np.asarray(ids, np.int64)
        f["offsets"] = offsets
        f.create_dataset("words", data=np.array(words, dtype=object), dtype=h5py.string_dtype())
        f["maps"] = np.concatenate(maps).astype(np.float16) if maps else np.zeros((0, G, G), np.float16)
        f.attrs.update(technique=technique, grid=G)
    write_atomic(path, buffer.getvalue())


def read_word_maps(path: Path) -> tuple[str, dict[int, tuple[list[str], np.ndarray]]]:
    """(technique, image id -> (words, maps (len(words), G, G) float32))."""
    with open_h5(path, ("image_ids", "offsets", "words", "maps"), what="word maps") as f:
        ids, offsets = f["image_ids"][:], f["offsets"][:]
        words = [w.decode() if isinstance(w, bytes) else w for w in f["words"][:]]
        maps = f["maps"][:].astype(np.float32)
        technique = str(f.attrs["technique"])
    return technique, {int(i): (words[a:b], maps[a:b]) for i, a, b in zip(ids, offsets[:-1], offsets[1:])}
