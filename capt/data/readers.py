"""Readers for the real formats: Karpathy split JSON, COCO captions JSON (both streamed),
Flickr8k's token file, and images read straight out of their zips.

All of them are driven by a :class:`~capt.data.manifest.Manifest`; ``read_splits`` returns the
same :class:`ImageRecord` sequences whichever dataset the folder holds.
"""

from __future__ import annotations

import contextlib
import io
import sqlite3
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import ijson
import numpy as np
from PIL import Image

from capt.data.manifest import Manifest
from capt.errors import CaptError
from capt.text import normalize_caption

SPLITS = ("train", "val", "test")
# Karpathy's "restval" (the 30k COCO val images outside val/test) is training data by convention.
_SPLIT_ALIASES = {"train": "train", "restval": "train", "val": "val", "test": "test"}


@dataclass(slots=True)
class ImageRecord:
    image_id: int
    filename: str                      # the image's file name inside one of the image zips
    split: str                         # train | val | test
    restval: bool = False              # Karpathy's restval (split train): a COCO val2014 image trained on

    def caption_key(self, fmt: str) -> str:
        """How the caption source names this image: Flickr8k by file name, the rest by id."""
        return self.filename if fmt == "flickr8k" else str(self.image_id)


def _require(obj: Any, key: str, where: str, source: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise CaptError(f"{source}: {where} has no key {key!r}")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise CaptError(f"{source}: {where}.{key} must be {names}, got {type(value).__name__}")
    return value


def stream_json_list(f: IO[bytes], key: str, source: str) -> Iterator[Any]:
    """The items of the top-level list ``key`` of a JSON object, parsed one at a time.

    COCO's and Karpathy's annotation files are hundreds of MB as Python objects; streaming
    them keeps prepare's memory flat whatever the dataset size.
    """
    n = 0
    try:
        for n, item in enumerate(ijson.items(f, f"{key}.item", use_float=True), 1):
            yield item
        if n == 0:  # an empty list, or no such key at all? Only then look at the top level.
            f.seek(0)
            top_keys = {v for prefix, event, v in ijson.parse(f) if prefix == "" and event == "map_key"}
            if key not in top_keys:
                raise CaptError(f"{source}: the top level has no key {key!r}")
    except ijson.JSONError as e:
        raise CaptError(f"{source}: malformed JSON ({str(e).splitlines()[0]})") from None


def read_karpathy(f: IO[bytes], source: str) -> Iterator[tuple[ImageRecord, list[str]]]:
    """Images of a Karpathy split JSON (``dataset_coco.json`` and friends), each with its raw
    sentences.

    The image id is ``cocoid`` when present (COCO and the shapes worlds), else ``imgid`` (Flickr8k).
    """
    for i, img in enumerate(stream_json_list(f, "images", source)):
        where = f"images[{i}]"
        split = _require(img, "split", where, source, str)
        if split not in _SPLIT_ALIASES:
            raise CaptError(f"{source}: {where}.split is {split!r}; expected one of {sorted(_SPLIT_ALIASES)}")
        filename = _require(img, "filename", where, source, str)
        id_key = "cocoid" if "cocoid" in img else "imgid"
        image_id = _require(img, id_key, where, source, int)
        sentences = _require(img, "sentences", where, source, list)
        raws = [_require(s, "raw", f"{where}.sentences[{j}]", source, str) for j, s in enumerate(sentences)]
        yield ImageRecord(image_id, filename, _SPLIT_ALIASES[split], split == "restval"), raws


def read_coco_captions(f: IO[bytes], source: str) -> Iterator[tuple[str, str]]:
    """(image id, raw caption) pairs of a COCO captions JSON (``captions_train2014.json``)."""
    for i, ann in enumerate(stream_json_list(f, "annotations", source)):
        image_id = _require(ann, "image_id", f"annotations[{i}]", source, int)
        yield str(image_id), _require(ann, "caption", f"annotations[{i}]", source, str)


def read_flickr8k_tokens(lines: Iterable[str], source: str) -> Iterator[tuple[str, str]]:
    """(file name, raw caption) pairs of ``Flickr8k.token.txt`` (``<file>.jpg#<n>\t<caption>``)."""
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        key, tab, caption = line.partition("\t")
        filename, hash_, n = key.partition("#")
        if not tab or not hash_ or not n.strip().isdigit():
            raise CaptError(f"{source}: line {lineno} is not '<file>#<n>\\t<caption>': {line[:80]!r}")
        yield filename.strip(), caption.strip()


class CaptionStore:
    """Every raw caption of a dataset, keyed by image id or file name, and every image record,
    in a temporary SQLite file: joining 600k COCO captions to their 123k images this way costs
    no memory, so prepare's peak RSS does not grow with the dataset.

    A caption without a word (empty, or punctuation only) is dropped as it comes in: it would
    train ``<start> <end>`` and score as an empty reference. ``dropped`` counts those (``empty``)
    and, once :meth:`finish` has run, the captions of images that no split lists (``no_image``),
    for prepare's summary.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.unlink(missing_ok=True)
        self._db = sqlite3.connect(self.path)
        try:
            with self._writing():
                self._db.execute("PRAGMA journal_mode = OFF")
                self._db.execute("PRAGMA synchronous = OFF")
                self._db.execute("CREATE TABLE captions (key TEXT NOT NULL, caption TEXT NOT NULL)")
                self._db.execute("CREATE TABLE images (split TEXT NOT NULL, image_id INTEGER NOT NULL, filename TEXT "
                                 "NOT NULL, restval INTEGER NOT NULL, captioned INTEGER NOT NULL DEFAULT 1)")
        except CaptError:
            self.close()               # no `with` block owns the store yet: remove its file here
            raise
        self.dropped = {"empty": 0, "no_image": 0}

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """SQLite's failed write (a full disk, a file-size limit: "disk I/O error") as one line
        naming the file; the store is a temporary file that close() removes."""
        try:
            yield
        except sqlite3.DatabaseError as e:
            raise CaptError(f"{self.path}: cannot write the captions' temporary store ({e}): is the disk full, or the "
                            "file over a size limit (ulimit -f)?") from None

    def add(self, pairs: Iterable[tuple[str, str]]) -> None:
        with self._writing():
            self._db.executemany("INSERT INTO captions VALUES (?, ?)", self._with_words(pairs))

    def _with_words(self, pairs: Iterable[tuple[str, str]]) -> Iterator[tuple[str, str]]:
        for key, caption in pairs:
            if normalize_caption(caption):
                yield key, caption
            else:
                self.dropped["empty"] += 1

    def add_record(self, record: ImageRecord) -> None:
        with self._writing():
            self._db.execute("INSERT INTO images (split, image_id, filename, restval) VALUES (?, ?, ?, ?)",
                             (record.split, record.image_id, record.filename, int(record.restval)))

    def finish(self, fmt: str) -> None:
        """Index the keys once everything is in, mark the images no caption names, and count the
        captions of no image (a COCO annotation of an image id that no split lists, a Flickr8k
        line of a file that none does): nothing reads them."""
        with self._writing():
            self._finish(fmt)

    def _finish(self, fmt: str) -> None:
        self._db.execute("CREATE INDEX captions_key ON captions (key)")
        # An image's caption key (ImageRecord.caption_key) in SQL: Flickr8k by file name, the rest by id.
        key = "images.filename" if fmt == "flickr8k" else "CAST(images.image_id AS TEXT)"
        (self.dropped["no_image"],) = self._db.execute(
            f"SELECT COUNT(*) FROM captions WHERE key NOT IN (SELECT {key} FROM images)").fetchone()
        self._db.execute("UPDATE images SET captioned = 0 WHERE NOT EXISTS "
                         f"(SELECT 1 FROM captions WHERE captions.key = {key})")
        self._db.execute("CREATE INDEX images_split ON images (split, captioned)")
        self._db.commit()

    def records(self, split: str) -> SplitRecords:
        return SplitRecords(self._db, split)

    def uncaptioned(self) -> Iterator[ImageRecord]:
        for split, i, f, restval in self._db.execute("SELECT split, image_id, filename, restval FROM images "
                                                     "WHERE captioned = 0 ORDER BY rowid"):
            yield ImageRecord(i, f, split, bool(restval))

    def get(self, key: str) -> list[str]:
        """The captions of one image, in the order the source lists them."""
        return [c for (c,) in self._db.execute("SELECT caption FROM captions WHERE key = ? ORDER BY rowid", (key,))]

    def close(self) -> None:
        self._db.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> CaptionStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SplitRecords(Sequence[ImageRecord]):
    """The captioned images of one split, in the split file's order, read from the
    :class:`CaptionStore` as they are iterated rather than held in a list."""

    def __init__(self, db: sqlite3.Connection, split: str):
        self._db, self.split = db, split
        self._where = "FROM images WHERE split = ? AND captioned = 1"
        (self._n,) = db.execute(f"SELECT COUNT(*) {self._where}", (split,)).fetchone()

    def __len__(self) -> int:
        return self._n

    def __iter__(self) -> Iterator[ImageRecord]:
        rows = self._db.execute(f"SELECT image_id, filename, restval {self._where} ORDER BY rowid", (self.split,))
        return (ImageRecord(i, f, self.split, bool(r)) for i, f, r in rows)

    def __getitem__(self, k):   # type: ignore[override]  # ints only: prepare never slices
        if not -self._n <= k < self._n:
            raise IndexError(k)
        i, f, r = self._db.execute(f"SELECT image_id, filename, restval {self._where} ORDER BY rowid LIMIT 1 OFFSET ?",
                                   (self.split, k % self._n)).fetchone()
        return ImageRecord(i, f, self.split, bool(r))


def read_splits(manifest: Manifest, captions: CaptionStore) -> tuple[dict[str, SplitRecords], list[dict]]:
    """Records of every split, their captions put in ``captions`` (keyed by ``caption_key``).

    Returns ``(records by split, images without captions)``; the latter are skipped, and listed
    so the summary can count them, as ``captions.dropped`` counts the captions left out.
    """
    fmt = manifest.captions_format
    with manifest.open(manifest.splits) as f:
        for record, sentences in read_karpathy(f, manifest.where(manifest.splits)):
            captions.add_record(record)
            if fmt == "karpathy":
                captions.add((record.caption_key(fmt), s) for s in sentences)
    for ref in manifest.captions:
        with manifest.open(ref) as f:
            if fmt == "coco":
                captions.add(read_coco_captions(f, manifest.where(ref)))
            elif fmt == "flickr8k":
                try:
                    captions.add(read_flickr8k_tokens(io.TextIOWrapper(f, "utf-8"), manifest.where(ref)))
                except UnicodeDecodeError as e:
                    raise CaptError(f"{manifest.where(ref)}: not UTF-8 text ({e})") from None
    captions.finish(fmt)
    uncaptioned = [{"split": r.split, "image_id": r.image_id, "filename": r.filename,
                    "reason": f"no captions with words in {fmt} caption source"} for r in captions.uncaptioned()]
    return {s: captions.records(s) for s in SPLITS}, uncaptioned


class ZipImageStore:
    """Images read straight out of their zips, found by file name.

    COCO's members look like ``train2014/COCO_train2014_000000000009.jpg`` and Flickr8k's like
    ``Flicker8k_Dataset/1000268201_693b08cb0e.jpg`` (next to macOS ``__MACOSX/`` debris), so a
    file name is looked up under each image folder of each zip. There are a handful of folders,
    so this needs no index of its own beside zipfile's.
    """

    def __init__(self, zip_paths: list[Path]):
        from capt.data.download import is_safe_member

        self._paths = list(zip_paths)
        self._zips: list[zipfile.ZipFile] = []
        self._folders: list[list[str]] = []   # per zip: "train2014/", "" (top level), ...
        for path in self._paths:
            try:
                zf = zipfile.ZipFile(path)
            except FileNotFoundError:
                raise CaptError(f"{path}: missing image archive") from None
            except zipfile.BadZipFile as e:
                raise CaptError(f"{path}: not a readable zip ({e})") from None
            self._zips.append(zf)
            folders = set()
            for info in zf.infolist():
                if not is_safe_member(info.filename):
                    raise CaptError(f"{path}: refusing unsafe member {info.filename!r} "
                                    "(absolute or climbs out with '..')")
                folder, _, base = info.filename.rpartition("/")
                if base and not folder.startswith("__MACOSX"):
                    folders.add(f"{folder}/" if folder else "")
            self._folders.append(sorted(folders))

    def _find(self, filename: str) -> tuple[int, zipfile.ZipInfo] | None:
        for z, (zf, folders) in enumerate(zip(self._zips, self._folders)):
            for folder in folders:
                try:
                    return z, zf.getinfo(folder + filename)
                except KeyError:
                    continue
        return None

    def __contains__(self, filename: str) -> bool:
        return self._find(filename) is not None

    def where(self, filename: str) -> str:
        found = self._find(filename)
        return f"{self._paths[found[0]]}:{found[1].filename}" if found else filename

    def read_bytes(self, filename: str) -> bytes:
        """Raw bytes of one image; ``KeyError`` when no zip holds it."""
        found = self._find(filename)
        if found is None:
            raise KeyError(filename)
        return self._zips[found[0]].read(found[1])

    def close(self) -> None:
        for zf in self._zips:
            zf.close()

    def __enter__(self) -> ZipImageStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def decode_image(data: bytes, size: int) -> np.ndarray:
    """Encoded image bytes -> uint8 array (3, size, size), RGB.

    Grayscale, CMYK and palette images are converted; transparent ones are laid on white
    (their hidden RGB under alpha 0 is often garbage). Raises PIL's errors on corrupt data.
    """
    with Image.open(io.BytesIO(data)) as im:
        im.load()  # decode now, so truncation shows up here
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            rgb = Image.alpha_composite(white, rgba).convert("RGB")
        elif im.mode in ("I;16", "I;16B", "I;16L", "I"):
            # 16/32-bit grayscale: scale to 8 bits before the RGB conversion clips it.
            arr = np.asarray(im, dtype=np.float64)
            hi = arr.max() or 1.0
            rgb = Image.fromarray((arr / hi * 255).astype(np.uint8), "L").convert("RGB")
        else:
            rgb = im.convert("RGB")
        rgb = rgb.resize((size, size), Image.Resampling.BICUBIC)
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1))
