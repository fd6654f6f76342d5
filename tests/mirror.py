"""A miniature mirror of the real downloads, for the rehearsal of the COCO profile.

``build_mirror(root)`` writes, in the exact file names, archive layouts and JSON formats of the
public downloads, a few dozen images of each:

- ``train2014.zip`` / ``val2014.zip``: ``train2014/COCO_train2014_<id:012d>.jpg`` members (the
  folder entry first, as the real zips), images of varied sizes, one grayscale and one CMYK JPEG;
- ``annotations_trainval2014.zip``: ``annotations/captions_{train,val}2014.json`` and
  ``annotations/instances_{train,val}2014.json`` with COCO's 80 categories under their real ids
  (from torchvision's COCO category list), polygon masks and crowd masks as uncompressed RLE;
- ``caption_datasets.zip``: Karpathy's ``dataset_coco.json`` (train / restval / val / test, with
  tokens, sentids and cocoid) and ``dataset_flickr8k.json``;
- ``Flickr8k_Dataset.zip`` (``Flicker8k_Dataset/`` with ``__MACOSX/`` resource forks) and
  ``Flickr8k_text.zip`` (``Flickr8k.token.txt`` and the split lists).

Captions are written the way COCO's annotators wrote them: capitals, missing or doubled full
stops, synonyms of a category (guy, kid, puppy), plurals and counts, multi-word names (hot dog,
teddy bear, stop sign, cell phone). Each image shows its instances as filled shapes where the
masks say, so the masks and the pixels agree.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# What the rehearsal's images show: a category, the words captions use for it (singular,
# plural), and its drawing colour. Synonyms and multi-word names on purpose.
OBJECTS = {
    "person": (("man", "men"), ("woman", "women"), ("guy", "guys"), ("kid", "kids"), ("person", "people")),
    "dog": (("dog", "dogs"), ("puppy", "puppies")),
    "cat": (("cat", "cats"), ("kitten", "kittens")),
    "skateboard": (("skateboard", "skateboards"),),
    "hot dog": (("hot dog", "hot dogs"),),
    "teddy bear": (("teddy bear", "teddy bears"),),
    "stop sign": (("stop sign", "stop signs"),),
    "cell phone": (("cell phone", "cell phones"),),
    "bus": (("bus", "buses"),),
    "pizza": (("pizza", "pizzas"),),
}
COLOURS = {"person": (200, 60, 40), "dog": (150, 100, 50), "cat": (90, 90, 90), "skateboard": (40, 160, 40),
           "hot dog": (220, 160, 60), "teddy bear": (170, 120, 80), "stop sign": (230, 20, 20),
           "cell phone": (20, 20, 20), "bus": (240, 200, 0), "pizza": (250, 150, 90)}
PLACES = ("on a street", "in a park", "on a table", "next to a building", "in a kitchen", "on the grass")
VERBS = ("sitting", "standing", "laying", "playing")
COUNTS = {2: "two", 3: "three"}

# Which real supercategory each category has (the instances JSON carries it).
SUPERCATEGORIES = {
    "person": "person", "vehicle": ("bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat"),
    "outdoor": ("traffic light", "fire hydrant", "stop sign", "parking meter", "bench"),
    "animal": ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe"),
    "accessory": ("backpack", "umbrella", "handbag", "tie", "suitcase"),
    "sports": ("frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove",
               "skateboard", "surfboard", "tennis racket"),
    "kitchen": ("bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl"),
    "food": ("banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake"),
    "furniture": ("chair", "couch", "potted plant", "bed", "dining table", "toilet"),
    "electronic": ("tv", "laptop", "mouse", "remote", "keyboard", "cell phone"),
    "appliance": ("microwave", "oven", "toaster", "sink", "refrigerator"),
    "indoor": ("book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush"),
}


def coco_categories() -> list[dict]:
    """COCO's 80 categories under their real (gapped, 1..90) ids, from torchvision's list."""
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

    names = FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"]   # index = COCO id; "N/A" in the gaps
    supercategory = {n: s for s, ns in SUPERCATEGORIES.items() for n in ((ns,) if isinstance(ns, str) else ns)}
    return [{"id": i, "name": n, "supercategory": supercategory[n]}
            for i, n in enumerate(names) if n not in ("__background__", "N/A")]


@dataclass(frozen=True)
class MirrorSizes:
    """How many images of each kind the mirror holds (the real counts: 82,783 train2014 images
    of which 113,287 - 82,783 come from val2014 as restval; 5,000 val, 5,000 test; Flickr8k
    6,000 / 1,000 / 1,000)."""

    coco_train: int = 24     # train2014, Karpathy split "train"
    coco_restval: int = 8    # val2014 images that Karpathy's split trains on
    coco_val: int = 6
    coco_test: int = 6
    flickr_train: int = 6
    flickr_val: int = 3
    flickr_test: int = 6
    seed: int = 0


@dataclass
class _Image:
    image_id: int
    folder: str               # train2014 | val2014 (COCO) or "" (Flickr8k)
    split: str                # Karpathy split: train | restval | val | test
    width: int
    height: int
    objects: list[tuple[str, list[float], bool]]   # (category, polygon xy..., crowd)
    captions: list[str]


def _caption(rng: np.random.Generator, objects: list[tuple[str, list[float], bool]]) -> str:
    """One COCO-style sentence about the image's objects."""
    by_cat: dict[str, int] = {}
    for cat, _, _ in objects:
        by_cat[cat] = by_cat.get(cat, 0) + 1
    phrases = []
    for cat, n in by_cat.items():
        singular, plural = OBJECTS[cat][rng.integers(len(OBJECTS[cat]))]
        phrases.append(f"{COUNTS.get(n, 'some')} {plural}" if n > 1 else f"a {singular}")
    subject = " and ".join(phrases[:2])
    text = f"{subject} {VERBS[rng.integers(len(VERBS))]} {PLACES[rng.integers(len(PLACES))]}"
    style = rng.integers(4)
    if style == 0:
        text = text[0].upper() + text[1:] + "."
    elif style == 1:
        text = text.capitalize() + ". "
    elif style == 2:
        text = "There is " + text + " ."
    return text


def _objects(rng: np.random.Generator, width: int, height: int, crowd_ok: bool) -> list[tuple[str, list[float], bool]]:
    cats = list(OBJECTS)
    out = []
    for _ in range(int(rng.integers(1, 4))):
        cat = cats[rng.integers(len(cats))]
        w, h = rng.uniform(0.2, 0.45) * width, rng.uniform(0.2, 0.45) * height
        x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
        # a pentagon inside the box: a polygon as COCO stores it (flat x, y list)
        angles = np.linspace(0, 2 * np.pi, 6)[:-1] + rng.uniform(0, 1)
        poly = [float(v) for a in angles for v in (x + w / 2 + w / 2 * np.cos(a), y + h / 2 + h / 2 * np.sin(a))]
        out.append((cat, poly, bool(crowd_ok and not out and rng.random() < 0.3)))
    return out


def _draw(img: _Image, rng: np.random.Generator) -> Image.Image:
    canvas = Image.new("RGB", (img.width, img.height), tuple(int(v) for v in rng.integers(60, 200, 3)))
    draw = ImageDraw.Draw(canvas)
    for cat, poly, _ in img.objects:
        draw.polygon([(poly[i], poly[i + 1]) for i in range(0, len(poly), 2)], fill=COLOURS[cat])
    return canvas


def _jpeg(im: Image.Image, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    (im if mode == "RGB" else im.convert(mode)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """A binary mask as COCO stores crowd regions: run lengths in column-major order, starting
    with a run of zeros."""
    flat = mask.flatten(order="F").astype(np.uint8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0, *counts]
    return {"counts": counts, "size": [int(mask.shape[0]), int(mask.shape[1])]}


def _annotation(ann_id: int, img: _Image, cat_id: int, poly: list[float], crowd: bool) -> dict:
    xs, ys = poly[0::2], poly[1::2]
    x0, y0 = min(xs), min(ys)
    bbox = [round(x0, 2), round(y0, 2), round(max(xs) - x0, 2), round(max(ys) - y0, 2)]
    if crowd:
        mask = Image.new("L", (img.width, img.height), 0)
        ImageDraw.Draw(mask).polygon([(xs[i], ys[i]) for i in range(len(xs))], fill=1)
        m = np.asarray(mask, dtype=np.uint8)
        segmentation, area = _uncompressed_rle(m), float(m.sum())
    else:
        segmentation = [[round(v, 2) for v in poly]]
        area = float(0.5 * abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))))
    return {"id": ann_id, "image_id": img.image_id, "category_id": cat_id, "segmentation": segmentation,
            "area": round(area, 2), "bbox": bbox, "iscrowd": int(crowd)}


def _zip(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def _karpathy_entry(img: _Image, filename: str, imgid: int, sentid: int, dataset: str) -> dict:
    sentences = [{"tokens": c.lower().replace(".", " ").replace(",", " ").split(), "raw": c,
                  "imgid": imgid, "sentid": sentid + k} for k, c in enumerate(img.captions)]
    entry = {"filename": filename, "imgid": imgid, "sentences": sentences, "split": img.split,
             "sentids": [s["sentid"] for s in sentences]}
    if dataset == "coco":
        entry.update(filepath=img.folder, cocoid=img.image_id)
    return entry


def _coco_images(sizes: MirrorSizes, rng: np.random.Generator) -> list[_Image]:
    plan = ([("train2014", "train")] * sizes.coco_train + [("val2014", "restval")] * sizes.coco_restval
            + [("val2014", "val")] * sizes.coco_val + [("val2014", "test")] * sizes.coco_test)
    images, used = [], set()
    for folder, split in plan:
        image_id = int(rng.integers(1, 581_930))
        while image_id in used:
            image_id = int(rng.integers(1, 581_930))
        used.add(image_id)
        w, h = int(rng.choice([640, 480, 500, 427])) // 4, int(rng.choice([480, 640, 375, 333])) // 4
        objects = _objects(rng, w, h, crowd_ok=True)
        n_captions = int(rng.choice([5, 5, 5, 6, 7]))          # COCO images have 5 to 7 captions
        images.append(_Image(image_id, folder, split, w, h, objects, [_caption(rng, objects) for _ in range(n_captions)]))
    return images


def build_coco(root: Path, sizes: MirrorSizes, rng: np.random.Generator) -> dict:
    """The four COCO files (Karpathy's split JSON goes into caption_datasets.zip by the caller)."""
    images = _coco_images(sizes, rng)
    categories = coco_categories()
    cat_id = {c["name"]: c["id"] for c in categories}
    members = {"train2014": {"train2014/": b""}, "val2014": {"val2014/": b""}}
    captions = {f: {"info": {"year": 2014}, "licenses": [], "images": [], "annotations": []} for f in members}
    instances = {f: {"info": {"year": 2014}, "licenses": [], "images": [], "annotations": [],
                     "categories": categories} for f in members}
    ann_id = cap_id = 1
    # the first training image grayscale and the first restval image CMYK, as COCO holds a few
    special = {images[0].image_id: "L", images[sizes.coco_train].image_id: "CMYK"}
    karpathy = []
    for k, img in enumerate(images):
        filename = f"COCO_{img.folder}_{img.image_id:012d}.jpg"
        members[img.folder][f"{img.folder}/{filename}"] = _jpeg(_draw(img, rng), special.get(img.image_id, "RGB"))
        record = {"license": 1, "file_name": filename, "coco_url": "", "height": img.height, "width": img.width,
                  "date_captured": "2013-11-14 11:18:45", "flickr_url": "", "id": img.image_id}
        captions[img.folder]["images"].append(record)
        instances[img.folder]["images"].append(record)
        for c in img.captions:
            captions[img.folder]["annotations"].append({"image_id": img.image_id, "id": cap_id, "caption": c})
            cap_id += 1
        for cat, poly, crowd in img.objects:
            instances[img.folder]["annotations"].append(_annotation(ann_id, img, cat_id[cat], poly, crowd))
            ann_id += 1
        karpathy.append(_karpathy_entry(img, filename, k, sum(len(i.captions) for i in images[:k]), "coco"))
    for folder, files in members.items():
        _zip(root / f"{folder}.zip", files)
    _zip(root / "annotations_trainval2014.zip", {
        f"annotations/{kind}_{folder}.json": json.dumps(data[folder]).encode()
        for kind, data in (("captions", captions), ("instances", instances)) for folder in members})
    return {"images": karpathy, "dataset": "coco"}


def build_flickr8k(root: Path, sizes: MirrorSizes, rng: np.random.Generator) -> dict:
    """Flickr8k's two zips; returns Karpathy's dataset_flickr8k.json."""
    plan = ["train"] * sizes.flickr_train + ["val"] * sizes.flickr_val + ["test"] * sizes.flickr_test
    members = {"Flicker8k_Dataset/": b""}   # the real archive's folder is misspelt
    tokens, lemmas, lists, karpathy = [], [], {"train": [], "val": [], "test": []}, []
    for k, split in enumerate(plan):
        stem = f"{int(rng.integers(10**9, 4 * 10**9))}_{rng.bytes(5).hex()}"
        w, h = int(rng.choice([500, 375, 333])) // 4, int(rng.choice([375, 500])) // 4
        objects = _objects(rng, w, h, crowd_ok=False)
        img = _Image(k, "", split, w, h, objects, [_caption(rng, objects) for _ in range(5)])
        members[f"Flicker8k_Dataset/{stem}.jpg"] = _jpeg(_draw(img, rng))
        members[f"__MACOSX/Flicker8k_Dataset/._{stem}.jpg"] = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X"
        tokens += [f"{stem}.jpg#{n}\t{c}" for n, c in enumerate(img.captions)]
        lemmas += [f"{stem}.jpg#{n}\t{c.lower()}" for n, c in enumerate(img.captions)]
        lists[split].append(f"{stem}.jpg")
        karpathy.append(_karpathy_entry(img, f"{stem}.jpg", k, 5 * k, "flickr8k"))
    _zip(root / "Flickr8k_Dataset.zip", members)
    _zip(root / "Flickr8k_text.zip", {
        "Flickr8k.token.txt": ("\n".join(tokens) + "\n").encode(),
        "Flickr8k.lemma.token.txt": ("\n".join(lemmas) + "\n").encode(),
        "Flickr_8k.trainImages.txt": ("\n".join(lists["train"]) + "\n").encode(),
        "Flickr_8k.devImages.txt": ("\n".join(lists["val"]) + "\n").encode(),
        "Flickr_8k.testImages.txt": ("\n".join(lists["test"]) + "\n").encode(),
        "readme.txt": b"Flickr8k (miniature mirror for the rehearsal)\n"})
    return {"images": karpathy, "dataset": "flickr8k"}


def build_mirror(root: Path, sizes: MirrorSizes = MirrorSizes()) -> dict[str, int]:
    """Every file of the real downloads in miniature under ``root``; returns file name -> bytes."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(sizes.seed)
    splits = {"dataset_coco.json": build_coco(root, sizes, rng),
              "dataset_flickr8k.json": build_flickr8k(root, sizes, rng),
              "dataset_flickr30k.json": {"images": [], "dataset": "flickr30k"}}
    _zip(root / "caption_datasets.zip", {name: json.dumps(data).encode() for name, data in splits.items()})
    return {p.name: p.stat().st_size for p in sorted(root.iterdir())}


def caption_words(root: Path) -> list[str]:
    """Every lower-cased word of the mirror's captions (the BLIP tokenizer's vocabulary)."""
    with zipfile.ZipFile(Path(root) / "caption_datasets.zip") as zf:
        words = {w.strip(".,") for name in ("dataset_coco.json", "dataset_flickr8k.json")
                 for img in json.loads(zf.read(name))["images"]
                 for s in img["sentences"] for w in s["raw"].lower().split()}
    return sorted(w for w in words if w)


def seed_torch_hub(torch_home: Path, architectures: tuple[str, ...] = ("resnet101", "resnet50"), seed: int = 0) -> list[Path]:
    """State dicts of the torchvision architectures under the file names their IMAGENET1K_V1
    weights download to (``$TORCH_HOME/hub/checkpoints/resnet101-63fe2227.pth``): torch.hub
    checks a hash only when it downloads, so a seeded file loads as the real one would.

    The weights are random, but behave like trained ones in scale: each residual branch starts at
    zero (``zero_init_residual``) and the BatchNorm statistics are measured on random images, as a
    trained network's are on its data. With torchvision's plain initialisation the activations of
    a 101-layer trunk grow past fp16's range, which real weights never do."""
    import torch
    import torchvision

    out = []
    for arch in architectures:
        weights = torchvision.models.get_model_weights(arch).IMAGENET1K_V1
        path = Path(torch_home) / "hub" / "checkpoints" / Path(weights.url).name
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(seed)
        model = torchvision.models.get_model(arch, weights=None, zero_init_residual=True)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = None                     # a cumulative average over the batches below
        model.train()
        with torch.no_grad():
            for _ in range(2):
                model(torch.randn(8, 3, 128, 128))
        torch.save(model.state_dict(), path)
        out.append(path)
    return out
