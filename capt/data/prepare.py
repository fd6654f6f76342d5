"""Prepare a downloaded dataset: vocabulary from the training split, one HDF5 file per split.

Streams, so peak memory does not grow with the number of images: the annotation JSON is parsed
as it is read, captions are joined to their images through a temporary SQLite table, and the
images are decoded one at a time straight out of their zips and written to HDF5 a block at a
time.
"""

from __future__ import annotations

import json
import logging
import zipfile
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import UnidentifiedImageError
from tqdm import tqdm

from capt.data.cache import SplitWriter
from capt.data.manifest import load_manifest
from capt.data.readers import SPLITS, CaptionStore, ImageRecord, ZipImageStore, decode_image, read_splits
from capt.data.vocab import Vocabulary, build_vocabulary
from capt.errors import CaptError
from capt.text import normalize_caption

log = logging.getLogger(__name__)

BAD_IMAGE_POLICIES = ("skip", "fail")


@dataclass(frozen=True)
class PrepareConfig:
    image_size: int = 128          # S: images are resized to S x S
    min_word_freq: int = 3         # training-split words seen fewer times become <unk>
    max_len: int = 20              # caption tokens kept (without <start>/<end>)
    captions_per_image: int = 5    # encoded captions per image (sampled, deterministically)
    on_bad_image: str = "skip"     # a corrupt or missing image: "skip" (and list it) or "fail"
    seed: int = 0                  # caption sampling

    def __post_init__(self):
        for name in ("image_size", "min_word_freq", "max_len", "captions_per_image"):
            if getattr(self, name) < 1:
                raise CaptError(f"prepare.{name} must be >= 1, got {getattr(self, name)}")
        if self.image_size < 16:
            raise CaptError(f"prepare.image_size must be >= 16, got {self.image_size}")
        if self.on_bad_image not in BAD_IMAGE_POLICIES:
            raise CaptError(f"prepare.on_bad_image must be one of {BAD_IMAGE_POLICIES}, got {self.on_bad_image!r}")


def sample_captions(token_lists: list[list[str]], n: int, max_len: int,
                    rng: np.random.Generator) -> tuple[list[list[str]], int]:
    """Pick ``n`` captions for training, deterministically given ``rng``.

    Captions longer than ``max_len`` are avoided; if every caption is too long they are cut
    (returned count). Fewer than ``n`` are topped up by sampling with replacement.
    """
    fitting = [t for t in token_lists if len(t) <= max_len]
    truncated = 0
    if not fitting:
        fitting = [t[:max_len] for t in token_lists]
        truncated = len(fitting)
    if len(fitting) >= n:
        picked = [fitting[i] for i in sorted(rng.choice(len(fitting), n, replace=False))]
    else:
        picked = fitting + [fitting[i] for i in rng.choice(len(fitting), n - len(fitting), replace=True)]
    return picked, truncated


def _write_split(path: Path, records: list[ImageRecord], captions: CaptionStore, caption_format: str,
                 store: ZipImageStore, vocab: Vocabulary, cfg: PrepareConfig, attrs: dict,
                 progress: bool) -> tuple[dict, list[dict]]:
    C, L = cfg.captions_per_image, cfg.max_len + 2
    writer = SplitWriter(path, image_size=cfg.image_size, captions_per_image=C, max_len=cfg.max_len, attrs=attrs)
    skipped: list[dict] = []
    counts = {"captions_truncated": 0, "captions_too_long": 0, "unk_tokens": 0, "tokens": 0}
    try:
        for r in tqdm(records, desc=f"prepare {attrs['split']}", unit="img", disable=not progress):
            reason = None
            if r.filename not in store:
                reason = "missing from every image zip"
            else:
                try:
                    image = decode_image(store.read_bytes(r.filename), cfg.image_size)
                except (UnidentifiedImageError, OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
                    reason = f"corrupt image ({type(e).__name__}: {e})"
            if reason is not None:
                where = store.where(r.filename) if r.filename in store else r.filename
                if cfg.on_bad_image == "fail":
                    raise CaptError(f"{where}: {reason} (image id {r.image_id}); "
                                    "set prepare.on_bad_image: skip to skip such images")
                skipped.append({"split": attrs["split"], "image_id": r.image_id, "filename": r.filename,
                                "reason": reason})
                continue
            raw = captions.get(r.caption_key(caption_format))
            tokens = [normalize_caption(c) for c in raw]
            counts["captions_too_long"] += sum(len(t) > cfg.max_len for t in tokens)
            # Seeded by (seed, image id): the same image gets the same captions whatever the order.
            rng = np.random.default_rng([cfg.seed, r.image_id])
            picked, truncated = sample_captions(tokens, C, cfg.max_len, rng)
            counts["captions_truncated"] += truncated
            caps = np.array([vocab.encode(t, cfg.max_len) for t in picked], np.int32).reshape(C, L)
            lens = np.array([min(len(t), cfg.max_len) + 2 for t in picked], np.int32)
            counts["tokens"] += int(sum(len(t) for t in picked))
            counts["unk_tokens"] += int((caps == vocab.unk).sum())
            writer.add(image, r.image_id, caps, lens, raw)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    stats = {"images": writer.n, "references": writer.n_references, "skipped": len(skipped), **counts}
    return stats, skipped


def prepare_dataset(raw_dir: Path, out_dir: Path, cfg: PrepareConfig, progress: bool = True) -> dict:
    """``raw_dir`` (a downloaded dataset with its manifest) -> ``out_dir`` with
    ``train.h5``, ``val.h5``, ``test.h5``, ``word_map.json`` and ``summary.json``; returns the summary."""
    manifest = load_manifest(raw_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fmt = manifest.captions_format
    with CaptionStore(out_dir / "captions.tmp.sqlite") as captions, \
            ZipImageStore([manifest.path(z) for z in manifest.images]) as store:
        by_split, uncaptioned = read_splits(manifest, captions)
        log.info("%s: %s", manifest.name, ", ".join(f"{len(by_split[s])} {s}" for s in SPLITS))
        if not by_split["train"]:
            raise CaptError(f"{manifest.where(manifest.splits)}: the training split is empty")

        train_tokens = (normalize_caption(c) for r in by_split["train"] for c in captions.get(r.caption_key(fmt)))
        vocab, counts = build_vocabulary(train_tokens, cfg.min_word_freq)
        log.info("vocabulary: %d words (%d distinct in train, min_word_freq %d)",
                 len(vocab), len(counts), cfg.min_word_freq)

        splits, skipped = {}, list(uncaptioned)
        for split in SPLITS:
            attrs = {"dataset": manifest.name, "split": split}
            stats, bad = _write_split(out_dir / f"{split}.h5", by_split[split], captions, fmt, store, vocab, cfg,
                                      attrs, progress)
            splits[split], skipped = stats, skipped + bad
            if bad:
                log.warning("%s: skipped %d bad image(s), listed in summary.json", split, len(bad))
    vocab.save(out_dir / "word_map.json")
    summary = {
        "dataset": manifest.name,
        "config": asdict(cfg),
        "vocab_size": len(vocab),
        "train_distinct_words": len(counts),
        "splits": splits,
        "images_skipped": len(skipped),
        "skipped": skipped,
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary
