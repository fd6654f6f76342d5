"""Readers for the real formats: Karpathy split JSON, COCO captions (through pycocotools),
Flickr8k's token file, and images read straight out of their zips.

All of them are driven by a :class:`~capt.data.manifest.Manifest`; ``read_splits`` returns the
same :class:`ImageRecord` lists whichever dataset the folder holds.
"""

from __future__ import annotations

import contextlib
import io
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image

from capt.data.manifest import FileRef, Manifest
from capt.errors import CaptError

SPLITS = ("train", "val", "test")
# Karpathy's "restval" (the 30k COCO val images outside val/test) is training data by convention.
_SPLIT_ALIASES = {"train": "train", "restval": "train", "val": "val", "test": "test"}


@dataclass
class ImageRecord:
    image_id: int
    filename: str                      # the image's file name inside one of the image zips
    split: str                         # train | val | test
    captions: list[str] = field(default_factory=list)   # every raw reference


def _require(obj: Any, key: str, where: str, source: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise CaptError(f"{source}: {where} has no key {key!r}")
    value = obj[key]
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise CaptError(f"{source}: {where}.{key} must be {names}, got {type(value).__name__}")
    return value


def read_karpathy(data: Any, source: str) -> list[ImageRecord]:
    """Images of a Karpathy split JSON (``dataset_coco.json`` and friends), with its raw sentences.

    The image id is ``cocoid`` when present (COCO and the shapes worlds), else ``imgid`` (Flickr8k).
    """
    images = _require(data, "images", "the top level", source, list)
    records = []
    for i, img in enumerate(images):
        where = f"images[{i}]"
        split = _require(img, "split", where, source, str)
        if split not in _SPLIT_ALIASES:
            raise CaptError(f"{source}: {where}.split is {split!r}; expected one of {sorted(_SPLIT_ALIASES)}")
        filename = _require(img, "filename", where, source, str)
        id_key = "cocoid" if isinstance(img, dict) and "cocoid" in img else "imgid"
        image_id = _require(img, id_key, where, source, int)
        sentences = _require(img, "sentences", where, source, list)
        raws = [_require(s, "raw", f"{where}.sentences[{j}]", source, str) for j, s in enumerate(sentences)]
        records.append(ImageRecord(image_id, filename, _SPLIT_ALIASES[split], raws))
    return records


def read_coco_captions(data: Any, source: str) -> dict[int, list[str]]:
    """image id -> raw captions, from a COCO captions JSON, indexed by pycocotools."""
    from pycocotools.coco import COCO

    _require(data, "images", "the top level", source, list)
    anns = _require(data, "annotations", "the top level", source, list)
    for i, ann in enumerate(anns):
        _require(ann, "image_id", f"annotations[{i}]", source, int)
        _require(ann, "caption", f"annotations[{i}]", source, str)
        _require(ann, "id", f"annotations[{i}]", source, int)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress chatter
        coco.createIndex()
    return {img_id: [a["caption"] for a in coco.imgToAnns[img_id]] for img_id in coco.imgToAnns}


def read_flickr8k_tokens(text: str, source: str) -> dict[str, list[str]]:
    """file name -> raw captions, from ``Flickr8k.token.txt`` (``<file>.jpg#<n>\\t<caption>``)."""
    captions: dict[str, list[str]] = defaultdict(list)
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, tab, caption = line.partition("\t")
        filename, hash_, n = key.partition("#")
        if not tab or not hash_ or not n.strip().isdigit():
            raise CaptError(f"{source}: line {lineno} is not '<file>#<n>\\t<caption>': {line[:80]!r}")
        captions[filename.strip()].append(caption.strip())
    return dict(captions)


def read_splits(manifest: Manifest) -> tuple[dict[str, list[ImageRecord]], list[dict]]:
    """Records of every split, with the captions from the manifest's caption source.

    Returns ``(records by split, images without captions)``; the latter are skipped, and listed
    so the summary can count them.
    """
    records = read_karpathy(manifest.read_json(manifest.splits), str(manifest.root / str(manifest.splits)))
    fmt = manifest.captions_format
    if fmt == "coco":
        by_id: dict[int, list[str]] = defaultdict(list)
        for ref in manifest.captions:
            for img_id, caps in read_coco_captions(manifest.read_json(ref), str(manifest.root / str(ref))).items():
                by_id[img_id].extend(caps)
        for r in records:
            r.captions = list(by_id.get(r.image_id, []))
    elif fmt == "flickr8k":
        by_name: dict[str, list[str]] = {}
        for ref in manifest.captions:
            by_name.update(read_flickr8k_tokens(manifest.read_text(ref), str(manifest.root / str(ref))))
        for r in records:
            r.captions = list(by_name.get(r.filename, []))
    # "karpathy": the split JSON's own raw sentences, already in place.

    by_split: dict[str, list[ImageRecord]] = {s: [] for s in SPLITS}
    uncaptioned = []
    for r in records:
        if r.captions:
            by_split[r.split].append(r)
        else:
            uncaptioned.append({"split": r.split, "image_id": r.image_id, "filename": r.filename,
                                "reason": f"no captions in {fmt} caption source"})
    return by_split, uncaptioned


class ZipImageStore:
    """Images read straight out of their zips, found by file name.

    COCO's members look like ``train2014/COCO_train2014_000000000009.jpg`` and Flickr8k's like
    ``Flicker8k_Dataset/1000268201_693b08cb0e.jpg`` (next to macOS ``__MACOSX/`` debris), so the
    index is by base name, which is unique in every dataset we read.
    """

    def __init__(self, zip_paths: list[Path]):
        from capt.data.download import is_safe_member

        self._zips: list[zipfile.ZipFile] = []
        self._index: dict[str, tuple[int, str]] = {}
        for path in zip_paths:
            try:
                zf = zipfile.ZipFile(path)
            except FileNotFoundError:
                raise CaptError(f"{path}: missing image archive") from None
            except zipfile.BadZipFile as e:
                raise CaptError(f"{path}: not a readable zip ({e})") from None
            self._zips.append(zf)
            for name in zf.namelist():
                if not is_safe_member(name):
                    raise CaptError(f"{path}: refusing unsafe member {name!r} (absolute or climbs out with '..')")
                parts = PurePosixPath(name).parts
                if name.endswith("/") or not parts or parts[0] == "__MACOSX" or parts[-1].startswith("._"):
                    continue
                self._index.setdefault(parts[-1], (len(self._zips) - 1, name))
        self._paths = list(zip_paths)

    def __contains__(self, filename: str) -> bool:
        return filename in self._index

    def where(self, filename: str) -> str:
        z, member = self._index[filename]
        return f"{self._paths[z]}:{member}"

    def read_bytes(self, filename: str) -> bytes:
        """Raw bytes of one image; ``KeyError`` when no zip holds it."""
        z, member = self._index[filename]
        return self._zips[z].read(member)

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
