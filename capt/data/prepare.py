"""Prepare a downloaded dataset: vocabulary from the training split, one HDF5 file per split.

The test split is written twice: ``test.h5`` at ``image_size`` for the Show-Attend-Tell models, and
``test_blip.h5`` at ``blip_image_size``, BLIP's input size, so that BLIP sees each original image
resized once to its own size (bicubic, as its processor resizes) as its published numbers were
measured (384 px), not the models' 256 px cache upsampled again.

Streams, so peak memory does not grow with the number of images: the annotation JSON is parsed
as it is read, captions are joined to their images through a temporary SQLite table, and the
images are decoded straight out of their zips and written to HDF5 a block at a time.

Decoding (JPEG decode + resize) is most of the work at COCO's 256 px, so it can run in
``workers`` processes; the main process still writes every file in the split's order, so the
outputs are byte-identical whatever the count.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import zipfile
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from multiprocessing.pool import AsyncResult, Pool
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from PIL import Image, UnidentifiedImageError
from annotated_types import Ge
from tqdm import tqdm

from capt.config import CHECKED, Count, Int, NonNegativeInt, with_config
from capt.data.cache import BLIP_TEST_FILE, SplitWriter
from capt.data.manifest import load_manifest
from capt.data.readers import SPLITS, CaptionStore, ImageRecord, ZipImageStore, decode_image, read_splits
from capt.data.vocab import Vocabulary, build_vocabulary
from capt.errors import CaptError
from capt.files import write_json
from capt.text import normalize_caption

log = logging.getLogger(__name__)

ImageSide = Annotated[Int, Ge(16)]     # pixels, of the square images prepare writes
# Settings that change how fast prepare runs, never what it writes: kept out of summary.json's
# config so the outputs stay byte-identical whatever they are.
RUNTIME_ONLY = ("workers",)
# Images per task sent to a decoding process: enough to amortise the round trip, few enough
# that the results in flight (2 tasks per process) stay ~6 MB per process at 256 px.
DECODE_CHUNK = 16
TASKS_IN_FLIGHT_PER_WORKER = 2
# What a corrupt image or a damaged zip member raises while it is read and decoded.
# An image over PIL's decompression-bomb limit (twice Image.MAX_IMAGE_PIXELS) is one too.
_BAD_IMAGE_ERRORS = (UnidentifiedImageError, OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error,
                     Image.DecompressionBombError)


@with_config(CHECKED)
@dataclass(frozen=True)
class PrepareConfig:
    image_size: ImageSide = 128    # S: images are resized to S x S
    blip_image_size: ImageSide = 384   # test_blip.h5: the test images at BLIP's input size (384: the pretrained BLIP's)
    min_word_freq: Count = 3       # training-split words seen fewer times become <unk>
    max_len: Count = 20            # caption tokens kept (without <start>/<end>)
    captions_per_image: Count = 5  # encoded captions per image (sampled, deterministically)
    on_bad_image: Literal["skip", "fail"] = "skip"   # a corrupt or missing image: "skip" (and list it) or "fail"
    seed: Int = 0                  # caption sampling
    workers: NonNegativeInt = 0    # decoding processes: 0 or 1 in this process; outputs identical either way

    def written(self) -> dict:
        """The settings that define the outputs, as summary.json lists them."""
        return {k: v for k, v in asdict(self).items() if k not in RUNTIME_ONLY}


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


def load_image(store: ZipImageStore, filename: str, size: int) -> tuple[np.ndarray | None, str | None]:
    """``(image, None)``, or ``(None, why)`` for a missing or corrupt image: the same answer in
    this process or in a decoding process, so skipping and failing read the same either way."""
    if filename not in store:
        return None, "missing from every image zip"
    try:
        return decode_image(store.read_bytes(filename), size), None
    except _BAD_IMAGE_ERRORS as e:
        return None, f"corrupt image ({type(e).__name__}: {e})"


# --- decoding processes: each opens the zips itself (ZipFile handles do not cross processes) ---
_worker_store: ZipImageStore | None = None
_worker_error: BaseException | None = None


def _open_worker_store(zip_paths: list[Path]) -> None:
    global _worker_store, _worker_error
    try:
        _worker_store = ZipImageStore(zip_paths)
    except Exception as e:
        # Raised here, Pool would restart the process forever; raised from the first task, it
        # reaches the main process and stops prepare.
        _worker_error = e


def _load_images_in_worker(filenames: list[str], size: int) -> list[tuple[np.ndarray | None, str | None]]:
    if _worker_error is not None:
        raise _worker_error
    assert _worker_store is not None, "decoding process started without its zips"
    return [load_image(_worker_store, f, size) for f in filenames]


@contextlib.contextmanager
def decoding_pool(zip_paths: list[Path], workers: int) -> Iterator[Pool | None]:
    """``workers`` decoding processes, or None for 0/1 (decode in this process).

    Spawned, not forked: the parent holds an open HDF5 file and SQLite connection, neither of
    which may be used from a forked copy. Leaving the block terminates the processes, also on
    an error or a failing bad image.
    """
    if workers <= 1:
        yield None
        return
    pool = multiprocessing.get_context("spawn").Pool(workers, _open_worker_store, (list(zip_paths),))
    try:
        yield pool
    finally:
        pool.terminate()
        pool.join()


def _chunks(records: Iterable[ImageRecord], n: int) -> Iterator[list[ImageRecord]]:
    chunk: list[ImageRecord] = []
    for r in records:
        chunk.append(r)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _loaded_in_pool(records: Iterable[ImageRecord], pool: Pool, workers: int,
                    size: int) -> Iterator[tuple[ImageRecord, np.ndarray | None, str | None]]:
    """Each record with its image (or why not), in the records' order.

    A window of at most ``TASKS_IN_FLIGHT_PER_WORKER * workers`` tasks is in flight: the
    processes stay busy while the main process writes, and memory stays bounded (Pool.imap
    would queue the whole split's tasks and let finished images pile up).
    """
    in_flight: deque[tuple[list[ImageRecord], AsyncResult]] = deque()
    window = TASKS_IN_FLIGHT_PER_WORKER * workers
    for chunk in _chunks(records, DECODE_CHUNK):
        in_flight.append((chunk, pool.apply_async(_load_images_in_worker, ([r.filename for r in chunk], size))))
        if len(in_flight) >= window:
            done, result = in_flight.popleft()
            yield from ((r, image, reason) for r, (image, reason) in zip(done, result.get()))
    while in_flight:
        done, result = in_flight.popleft()
        yield from ((r, image, reason) for r, (image, reason) in zip(done, result.get()))


def load_images(records: Iterable[ImageRecord], store: ZipImageStore, pool: Pool | None, workers: int,
                size: int) -> Iterator[tuple[ImageRecord, np.ndarray | None, str | None]]:
    """Each record with its image (or why not), in order: in ``pool`` if there is one."""
    if pool is None:
        return ((r, *load_image(store, r.filename, size)) for r in records)
    return _loaded_in_pool(records, pool, workers, size)


def _write_split(path: Path, records: list[ImageRecord], captions: CaptionStore, caption_format: str,
                 store: ZipImageStore, vocab: Vocabulary, cfg: PrepareConfig, attrs: dict,
                 progress: bool, pool: Pool | None = None) -> tuple[dict, list[dict]]:
    C, L = cfg.captions_per_image, cfg.max_len + 2
    writer = SplitWriter(path, image_size=cfg.image_size, captions_per_image=C, max_len=cfg.max_len, attrs=attrs,
                         images=len(records))
    skipped: list[dict] = []
    counts = {"captions_truncated": 0, "captions_too_long": 0, "unk_tokens": 0, "tokens": 0}
    try:
        loaded = load_images(records, store, pool, cfg.workers, cfg.image_size)
        for r, image, reason in tqdm(loaded, desc=f"prepare {attrs['split']}", unit="img", total=len(records),
                                     disable=not progress):
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
            writer.add(image, r.image_id, caps, lens, raw, restval=r.restval)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    stats = {"images": writer.n, "references": writer.n_references, "skipped": len(skipped), **counts}
    return stats, skipped


def prepare_dataset(raw_dir: Path, out_dir: Path, cfg: PrepareConfig, progress: bool = True) -> dict:
    """``raw_dir`` (a downloaded dataset with its manifest) -> ``out_dir`` with
    ``train.h5``, ``val.h5``, ``test.h5``, ``test_blip.h5`` (the test split at ``cfg.blip_image_size``),
    ``word_map.json`` and ``summary.json``; returns the summary."""
    manifest = load_manifest(raw_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fmt = manifest.captions_format
    zip_paths = [manifest.path(z) for z in manifest.images]
    with CaptionStore(out_dir / "captions.tmp.sqlite") as captions, ZipImageStore(zip_paths) as store:
        by_split, uncaptioned = read_splits(manifest, captions)
        log.info("%s: %s", manifest.name, ", ".join(f"{len(by_split[s])} {s}" for s in SPLITS))
        dropped = dict(captions.dropped)
        if dropped["empty"] or dropped["no_image"]:
            log.warning("dropped %d caption(s) without a word and %d of images that no split lists; counted in "
                        "summary.json (captions_dropped)", dropped["empty"], dropped["no_image"])
        if not by_split["train"]:
            raise CaptError(f"{manifest.where(manifest.splits)}: the training split is empty")

        train_tokens = (normalize_caption(c) for r in by_split["train"] for c in captions.get(r.caption_key(fmt)))
        vocab, counts = build_vocabulary(train_tokens, cfg.min_word_freq)
        log.info("vocabulary: %d words (%d distinct in train, min_word_freq %d)",
                 len(vocab), len(counts), cfg.min_word_freq)

        splits, skipped = {}, list(uncaptioned)
        with decoding_pool(zip_paths, cfg.workers) as pool:
            for split in SPLITS:
                attrs = {"dataset": manifest.name, "split": split}
                stats, bad = _write_split(out_dir / f"{split}.h5", by_split[split], captions, fmt, store, vocab,
                                          cfg, attrs, progress, pool)
                splits[split], skipped = stats, skipped + bad
                if bad:
                    log.warning("%s: skipped %d bad image(s), listed in summary.json", split, len(bad))
            # The same test images (a bad one is bad at any size: skipped again, listed once).
            blip_cfg = replace(cfg, image_size=cfg.blip_image_size)
            blip_test, _ = _write_split(out_dir / BLIP_TEST_FILE, by_split["test"], captions, fmt, store, vocab,
                                        blip_cfg, {"dataset": manifest.name, "split": "test"}, progress, pool)
    vocab.save(out_dir / "word_map.json")
    summary = {
        "dataset": manifest.name,
        "config": cfg.written(),
        "vocab_size": len(vocab),
        "train_distinct_words": len(counts),
        "splits": splits,
        "blip_test": {"image_size": cfg.blip_image_size, "images": blip_test["images"]},
        "images_skipped": len(skipped),
        "skipped": skipped,
        # captions never encoded nor kept as references (capt.data.readers.CaptionStore): "empty" had
        # no word once normalised, "no_image" named an image that no split lists
        "captions_dropped": dropped,
    }
    write_json(out_dir / "summary.json", summary)
    return summary
