"""Tiny datasets in the real on-disk formats of COCO 2014 + Karpathy and Flickr8k.

Each builder writes the archives a real download would leave, with real JPEG/PNG bytes, in a
handful of kilobytes, plus the same manifest.json the download stage writes.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image


def image_bytes(colour=(200, 30, 30), size=(40, 30), mode="RGB", fmt="JPEG") -> bytes:
    """A small solid image in the given PIL mode and format."""
    im = Image.new("RGB", size, colour)
    if mode == "L":
        im = im.convert("L")
    elif mode == "CMYK":
        im = im.convert("CMYK")
    elif mode == "RGBA":
        im = im.convert("RGBA")
        a = np.array(im)
        a[:, : size[0] // 2, 3] = 0          # left half transparent
        a[:, : size[0] // 2, :3] = 0         # ...over black garbage
        im = Image.fromarray(a, "RGBA")
    elif mode == "P":
        im = im.convert("P")
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def karpathy_image(split: str, filename: str, sentences: list[str], *, cocoid: int | None = None,
                   imgid: int = 0, filepath: str | None = None) -> dict:
    img = {"split": split, "filename": filename, "imgid": imgid,
           "sentences": [{"raw": s, "tokens": s.lower().replace(".", "").split(), "imgid": imgid, "sentid": k}
                         for k, s in enumerate(sentences)]}
    if cocoid is not None:
        img["cocoid"] = cocoid
    if filepath is not None:
        img["filepath"] = filepath
    return img


COCO_MANIFEST = {
    "name": "coco",
    "images": ["train2014.zip", "val2014.zip"],
    "splits": {"file": "caption_datasets.zip", "member": "dataset_coco.json"},
    "captions": {"format": "coco", "files": [
        {"file": "annotations_trainval2014.zip", "member": "annotations/captions_train2014.json"},
        {"file": "annotations_trainval2014.zip", "member": "annotations/captions_val2014.json"}]},
    "instances": [
        {"file": "annotations_trainval2014.zip", "member": "annotations/instances_train2014.json"},
        {"file": "annotations_trainval2014.zip", "member": "annotations/instances_val2014.json"}],
}

FLICKR8K_MANIFEST = {
    "name": "flickr8k",
    "images": ["Flickr8k_Dataset.zip"],
    "splits": {"file": "caption_datasets.zip", "member": "dataset_flickr8k.json"},
    "captions": {"format": "flickr8k", "files": [{"file": "Flickr8k_text.zip", "member": "Flickr8k.token.txt"}]},
    "instances": [],
}

# Five COCO images: id -> (split folder, Karpathy split, PIL mode, format, captions)
COCO_IMAGES = {
    9: ("train2014", "train", "RGB", "JPEG", ["A red bus on a street.", "A RED bus parked outside!",
                                             "a bus that is red", "Red bus, parked.", "the red bus",
                                             "an extra sixth caption about a bus"]),
    25: ("train2014", "train", "L", "JPEG", ["A grey dog on grass.", "a dog lying on the grass"]),
    30: ("val2014", "restval", "CMYK", "JPEG", ["A blue kite in the sky.", "kite flying in a blue sky",
                                                "a kite", "a blue kite", "sky with a kite"]),
    42: ("val2014", "val", "RGBA", "PNG", ["A cat on a sofa.", "a cat sleeping on a red sofa",
                                           "cat", "the cat and the sofa", "a sofa with a cat"]),
    73: ("val2014", "test", "P", "PNG", ["Two men playing frisbee.", "men with a frisbee in a park",
                                         "a frisbee game", "two men and a frisbee", "people in a park"]),
}


def coco_name(folder: str, image_id: int) -> str:
    return f"COCO_{folder}_{image_id:012d}.jpg"


def build_coco(root: Path, *, corrupt: int | None = None, missing: int | None = None) -> Path:
    """A tiny COCO 2014 + Karpathy download in ``root``; optionally one image corrupt or missing."""
    root.mkdir(parents=True, exist_ok=True)
    zips: dict[str, dict[str, bytes]] = {"train2014": {}, "val2014": {}}
    caps: dict[str, dict] = {f: {"info": {}, "licenses": [], "images": [], "annotations": []} for f in zips}
    karpathy = {"dataset": "coco", "images": []}
    ann_id = 1
    for k, (image_id, (folder, split, mode, fmt, sentences)) in enumerate(COCO_IMAGES.items()):
        name = coco_name(folder, image_id)
        data = image_bytes(colour=(30 * k, 200 - 30 * k, 90), mode=mode, fmt=fmt)
        if image_id == corrupt:
            data = data[: len(data) // 3]
        if image_id != missing:
            zips[folder][f"{folder}/{name}"] = data
        caps[folder]["images"].append({"id": image_id, "file_name": name, "width": 40, "height": 30})
        for s in sentences:
            caps[folder]["annotations"].append({"id": ann_id, "image_id": image_id, "caption": s})
            ann_id += 1
        # Karpathy's sentences are tokenised copies; prepare takes COCO's raw captions instead.
        karpathy["images"].append(karpathy_image(split, name, sentences[:5], cocoid=image_id, imgid=k, filepath=folder))
    for folder, members in zips.items():
        write_zip(root / f"{folder}.zip", {f"{folder}/": b"", **members})
    instances = {f: {"info": {}, "licenses": [], "images": caps[f]["images"], "annotations": [],
                     "categories": [{"id": 1, "name": "thing", "supercategory": "thing"}]} for f in zips}
    write_zip(root / "annotations_trainval2014.zip", {
        f"annotations/{kind}_{f}.json": json.dumps(d[f]).encode()
        for kind, d in (("captions", caps), ("instances", instances)) for f in zips})
    write_zip(root / "caption_datasets.zip", {"dataset_coco.json": json.dumps(karpathy).encode()})
    (root / "manifest.json").write_text(json.dumps(COCO_MANIFEST))
    return root


FLICKR_IMAGES = {  # file stem -> (split, captions)
    "1000268201_693b08cb0e": ("train", ["A child in a pink dress.", "A little girl climbing stairs.",
                                        "a girl going into a wooden building", "a little girl in pink",
                                        "a small girl climbing"]),
    "1001773457_577c3a7d70": ("train", ["A black dog and a spotted dog are fighting.", "two dogs play",
                                        "a black dog and a white dog", "dogs on a road", "two dogs fighting"]),
    "1002674143_1b742ab4b8": ("val", ["A little girl covered in paint.", "a girl with paint",
                                      "a child painting", "small girl painting", "a painted girl"]),
    "1003163366_44323f5815": ("test", ["A man lays on a bench.", "a man sleeping on a bench",
                                       "man on a bench", "a bench with a man", "a man resting"]),
}


def build_flickr8k(root: Path) -> Path:
    """A tiny Flickr8k download: image zip (with its real misspelt folder and __MACOSX debris),
    text zip with Flickr8k.token.txt, and Karpathy's dataset_flickr8k.json."""
    root.mkdir(parents=True, exist_ok=True)
    members = {"Flicker8k_Dataset/": b""}
    tokens, karpathy = [], {"dataset": "flickr8k", "images": []}
    for k, (stem, (split, sentences)) in enumerate(FLICKR_IMAGES.items()):
        members[f"Flicker8k_Dataset/{stem}.jpg"] = image_bytes(colour=(20 + 50 * k, 90, 160))
        members[f"__MACOSX/Flicker8k_Dataset/._{stem}.jpg"] = b"\x00\x05\x16\x07 not an image"
        tokens += [f"{stem}.jpg#{n}\t{s}" for n, s in enumerate(sentences)]
        karpathy["images"].append(karpathy_image(split, f"{stem}.jpg", sentences, imgid=k))
    write_zip(root / "Flickr8k_Dataset.zip", members)
    write_zip(root / "Flickr8k_text.zip", {"Flickr8k.token.txt": ("\n".join(tokens) + "\n").encode(),
                                           "Flickr_8k.trainImages.txt": b""})
    write_zip(root / "caption_datasets.zip", {"dataset_flickr8k.json": json.dumps(karpathy).encode()})
    (root / "manifest.json").write_text(json.dumps(FLICKR8K_MANIFEST))
    return root
