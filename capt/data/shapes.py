"""The `shapes` world: a seeded synthetic dataset of coloured shapes at known places.

It is the embedded default dataset. Everything it writes is in exactly the formats of the
real downloads, so nothing downstream of `download` knows it is synthetic:

- ``images.zip``            JPEGs under ``images/<name>_<id:012d>.jpg`` (ids 1..N)
- ``captions.json``         COCO captions
- ``instances.json``        COCO instances (bbox, polygon, plus ``color`` and ``size`` words)
- ``dataset_<name>.json``   Karpathy splits (train, then val, then test, by position)
- ``manifest.json``         which of the files above play which role

A scene holds 1..max_objects non-overlapping shapes, each a (size, colour, shape) triple that
is unique within its image, drawn on a low-saturation textured background. Every caption is
built from the scene's geometry and says only what the boxes make clearly true: positions and
relations are stated only with a margin, counts only when exact.

Two worlds share one vocabulary: ``default`` (light textures, uniform layouts) and ``shift``
(dark textures of other kinds, other size ranges, objects clustered together), which plays
the role Flickr8k plays for COCO: a second test set with a distribution shift.

Everything is deterministic: each image draws from its own generator seeded by
(seed, world, image id), so the same config writes byte-identical files, and changing the
size of one split does not change the images of another.
"""

from __future__ import annotations

import colorsys
import io
import math
import re
import string
import zipfile
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Callable, Literal, get_args

import numpy as np
from annotated_types import Interval
from PIL import Image, ImageDraw

from capt.config import CHECKED, ConfigError, Int, NonNegativeInt, with_config
from capt.errors import CaptError
from capt.files import atomic_output, write_json
from capt.text import normalize_caption

# ----------------------------------------------------------------------------- the words

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross")
PLURALS: dict[str, str] = {
    "circle": "circles",
    "square": "squares",
    "triangle": "triangles",
    "diamond": "diamonds",
    "cross": "crosses",
}
# Saturated and far apart in RGB, so that each stays its own nearest palette colour after
# JPEG compression and against any of the muted backgrounds below.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (35, 165, 55),
    "blue": (35, 75, 215),
    "yellow": (245, 210, 25),
    "purple": (145, 45, 185),
    "orange": (245, 125, 20),
}
SIZES: tuple[str, ...] = ("small", "large")
World = Literal["default", "shift"]
WORLDS: tuple[str, ...] = get_args(World)
NUMBERS: dict[int, str] = {1: "one", 2: "two", 3: "three", 4: "four"}
# Every phrase R of a relation caption "a R b"; relations_between says which hold.
RELATIONS: tuple[str, ...] = ("above", "below", "to the left of", "to the right of", "next to")

MAX_OBJECTS = 4  # the count words and the 18-word sentence limit are sized for this
MAX_CAPTIONS = 8  # every scene, even one lone object, has more distinct true captions
MIN_IMAGE_SIZE = 32
MAX_WORDS = 18

# The fixed date of every zip entry: a real date would make two runs differ.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


# ----------------------------------------------------------------------------- the config


@with_config(CHECKED)
@dataclass(frozen=True)
class ShapesConfig:
    """What to generate. The defaults are the embedded profile's training world."""

    seed: NonNegativeInt = 0
    world: World = "default"
    n_train: NonNegativeInt = 3000
    n_val: NonNegativeInt = 250
    n_test: NonNegativeInt = 250
    image_size: Annotated[Int, Interval(ge=MIN_IMAGE_SIZE, le=1024)] = 128  # pixels, square
    captions_per_image: Annotated[Int, Interval(ge=1, le=MAX_CAPTIONS)] = 5
    max_objects: Annotated[Int, Interval(ge=1, le=MAX_OBJECTS)] = 3  # 1..max_objects objects per image
    jpeg_quality: Annotated[Int, Interval(ge=1, le=100)] = 90

    def __post_init__(self) -> None:
        if self.n_train + self.n_val + self.n_test < 1:
            raise ConfigError("n_train + n_val + n_test must be at least 1, got 0")


# ----------------------------------------------------------------------------- the worlds


@dataclass(frozen=True)
class _World:
    """How a world looks. Sizes are fractions of the image side (the bbox side)."""

    small: tuple[float, float]
    large: tuple[float, float]
    textures: tuple[str, ...]
    value: tuple[float, float]  # HSV value of the background's base tone
    max_saturation: float  # backgrounds stay muted so the shapes stand out
    layout: str  # "uniform" anywhere, or "cluster" around one random point


_WORLDS: dict[str, _World] = {
    "default": _World(
        small=(0.15, 0.21),
        large=(0.30, 0.40),
        textures=("stripes", "checker", "noise", "gradient"),
        value=(0.60, 0.88),
        max_saturation=0.16,
        layout="uniform",
    ),
    # Same words, other pixels: darker textures of other kinds, smaller shapes within each
    # size word (yet small and large stay clearly apart), and objects huddled together.
    "shift": _World(
        small=(0.12, 0.17),
        large=(0.24, 0.31),
        textures=("rings", "dots", "grain", "grid"),
        value=(0.18, 0.42),
        max_saturation=0.25,
        layout="cluster",
    ),
}

_BORDER = 0.03  # objects keep this fraction of the side away from the image edge
_GAP = 0.06  # and this much away from each other, so boxes never touch


# ----------------------------------------------------------------------------- a scene


@dataclass(frozen=True)
class _Object:
    shape: str
    colour: str
    size: str
    x: int  # top-left corner of the square bbox, pixels
    y: int
    side: int

    @property
    def box(self) -> tuple[float, float, float, float]:
        return (self.x, self.y, self.x + self.side, self.y + self.side)

    @property
    def centre(self) -> tuple[float, float]:
        return (self.x + self.side / 2, self.y + self.side / 2)

    def polygon(self) -> list[tuple[float, float]]:
        """The outline in image coordinates (pixel edges), as COCO segmentations use."""
        x, y, s = self.x, self.y, self.side
        if self.shape == "circle":
            cx, cy, r = x + s / 2, y + s / 2, s / 2
            angles = np.linspace(0.0, 2 * math.pi, 24, endpoint=False)
            return [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in angles]
        if self.shape == "square":
            return [(x, y), (x + s, y), (x + s, y + s), (x, y + s)]
        if self.shape == "triangle":  # pointing up, base along the bottom of the box
            return [(x + s / 2, y), (x + s, y + s), (x, y + s)]
        if self.shape == "diamond":
            return [(x + s / 2, y), (x + s, y + s / 2), (x + s / 2, y + s), (x, y + s / 2)]
        if self.shape == "cross":  # a plus sign with arms a third of the side thick
            a, b = s / 3, 2 * s / 3
            return [
                (x + a, y), (x + b, y), (x + b, y + a), (x + s, y + a), (x + s, y + b),
                (x + b, y + b), (x + b, y + s), (x + a, y + s), (x + a, y + b),
                (x, y + b), (x, y + a), (x + a, y + a),
            ]  # fmt: skip
        raise AssertionError(self.shape)


def _polygon_area(points: list[tuple[float, float]]) -> float:
    """Shoelace formula; COCO's "area" for a polygon annotation."""
    pairs = zip(points, points[1:] + points[:1])
    return abs(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in pairs)) / 2


def _sample_scene(rng: np.random.Generator, world: _World, size: int, max_objects: int) -> list[_Object]:
    """1..max_objects objects with distinct (colour, shape), non-overlapping, inside the image."""
    n = int(rng.integers(1, max_objects + 1))
    border = max(1, round(_BORDER * size))
    gap = max(2, round(_GAP * size))
    # A failed placement redraws the sizes too: several large shapes may simply not fit.
    for _ in range(100):
        kinds: set[tuple[str, str]] = set()
        while len(kinds) < n:
            kinds.add((SHAPES[rng.integers(len(SHAPES))], list(COLOURS)[rng.integers(len(COLOURS))]))
        objects: list[_Object] = []
        anchor = rng.uniform(0.3, 0.7, size=2) * size  # the cluster layout's centre
        for shape, colour in sorted(kinds):  # sorted: set order is not reproducible
            size_word = SIZES[rng.integers(2)]
            lo, hi = world.small if size_word == "small" else world.large
            side = int(round(rng.uniform(lo, hi) * size))
            placed = _place(rng, world, size, side, border, gap, anchor, objects)
            if placed is None:
                break
            objects.append(_Object(shape, colour, size_word, placed[0], placed[1], side))
        else:
            order = rng.permutation(len(objects))  # so list order says nothing about kinds
            return [objects[i] for i in order]
    raise RuntimeError(f"could not place {n} shapes in a {size}px image")  # pragma: no cover


def _place(
    rng: np.random.Generator,
    world: _World,
    size: int,
    side: int,
    border: int,
    gap: int,
    anchor: np.ndarray,
    others: list[_Object],
) -> tuple[int, int] | None:
    lo, hi = border, size - border - side
    for _ in range(60):
        if world.layout == "cluster":
            cx, cy = anchor + rng.normal(0.0, 0.12 * size, size=2)
            x, y = int(np.clip(round(cx - side / 2), lo, hi)), int(np.clip(round(cy - side / 2), lo, hi))
        else:
            x, y = int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))
        if all(_apart((x, y, x + side, y + side), o.box, gap) for o in others):
            return x, y
    return None


def _apart(a: tuple[float, ...], b: tuple[float, ...], gap: float) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


# ----------------------------------------------------------------------------- the pixels


def _muted_tone(rng: np.random.Generator, world: _World) -> tuple[int, int, int]:
    hue = rng.random()
    sat = rng.uniform(0.0, world.max_saturation)
    val = rng.uniform(*world.value)
    r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
    return (round(r * 255), round(g * 255), round(b * 255))


def _texture(rng: np.random.Generator, kind: str, size: int) -> np.ndarray:
    """A pattern in [0, 1], (size, size); the background mixes two tones by it."""
    scale = size / 128  # periods are chosen for 128 px and scale with the image
    # A column and a row of coordinates: broadcasting them is much cheaper than full grids.
    yy = np.arange(size, dtype=np.float32)[:, None]
    xx = np.arange(size, dtype=np.float32)[None, :]
    if kind == "stripes":
        angle = math.radians(float(rng.choice([0, 45, 90, 135])))
        period = rng.uniform(6, 16) * scale
        phase = (xx * math.cos(angle) + yy * math.sin(angle)) / period
        if rng.random() < 0.5:
            return (phase % 1.0 < 0.5).astype(np.float32)
        return 0.5 + 0.5 * np.sin(2 * math.pi * phase)
    if kind == "checker":
        cell = max(2, int(rng.uniform(8, 18) * scale))
        return ((xx // cell + yy // cell) % 2).astype(np.float32)
    if kind == "noise":  # smooth blobs: a coarse random grid, upsampled
        grid = int(rng.integers(3, 7))
        coarse = Image.fromarray((rng.random((grid, grid)) * 255).astype(np.uint8))
        return np.asarray(coarse.resize((size, size), Image.BICUBIC), dtype=np.float32) / 255
    if kind == "gradient":
        angle = rng.uniform(0, 2 * math.pi)
        ramp = xx * math.cos(angle) + yy * math.sin(angle)
        return (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    if kind == "rings":
        cx, cy = rng.uniform(0, size, size=2)
        period = rng.uniform(7, 14) * scale
        radius = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
        return (radius / period % 1.0 < 0.5).astype(np.float32)
    if kind == "dots":
        spacing = rng.uniform(7, 12) * scale
        dx = (xx % spacing) - spacing / 2
        dy = (yy % spacing) - spacing / 2
        radius = spacing * rng.uniform(0.2, 0.35)
        return (dx**2 + dy**2 < radius**2).astype(np.float32)
    if kind == "grain":  # fine per-pixel noise: all high frequency, unlike "noise"
        return rng.random((size, size), dtype=np.float32)
    if kind == "grid":
        spacing = max(4, int(rng.uniform(8, 16) * scale))
        width = max(1, round(scale * 1.5))
        return ((xx % spacing < width) | (yy % spacing < width)).astype(np.float32)
    raise AssertionError(kind)


def _background(rng: np.random.Generator, world: _World, size: int) -> Image.Image:
    base = _muted_tone(rng, world)
    # The second tone is the base made lighter or darker: texture you can see, never loud.
    delta = rng.uniform(0.08, 0.18) * 255 * (1 if rng.random() < 0.5 else -1)
    other = tuple(int(np.clip(c + delta + rng.normal(0, 6), 0, 255)) for c in base)
    pattern = _texture(rng, world.textures[rng.integers(len(world.textures))], size)
    mask = Image.fromarray(np.round(pattern * 255).astype(np.uint8), "L")
    # PIL mixes the two tones in C: numpy float images cost more than all the rest.
    return Image.composite(Image.new("RGB", (size, size), other), Image.new("RGB", (size, size), base), mask)


def _alpha(obj: _Object) -> Image.Image:
    """Antialiased coverage of the object inside its box, an (side, side) "L" mask.

    Drawn 4x larger and box-filtered down: aliased edges would make small triangles ragged.
    """
    k, s = 4, obj.side
    canvas = Image.new("L", (s * k, s * k), 0)
    draw = ImageDraw.Draw(canvas)
    if obj.shape == "circle":
        draw.ellipse((0, 0, s * k - 1, s * k - 1), fill=255)
    else:
        draw.polygon([((px - obj.x) * k, (py - obj.y) * k) for px, py in obj.polygon()], fill=255)
    return canvas.resize((s, s), Image.BOX)


def _render(rng: np.random.Generator, world: _World, size: int, objects: list[_Object]) -> Image.Image:
    picture = _background(rng, world, size)
    for obj in objects:
        # A little jitter, so a colour word names a small cloud of shades, not one RGB value.
        colour = tuple(int(np.clip(c + rng.normal(0, 6), 0, 255)) for c in COLOURS[obj.colour])
        picture.paste(colour, (obj.x, obj.y, obj.x + obj.side, obj.y + obj.side), _alpha(obj))
    return picture


# ----------------------------------------------------------------------------- the captions
#
# A caption is one of four kinds, each built only from facts that hold with a margin:
#   list      "a small red circle, a blue square and a large green triangle"
#   position  "a large blue square in the top left corner"
#   relation  "a small red circle above a blue square"
#   count     "there are two circles and a square"   (exact counts of every shape)
# Colour is always named outside counts; size is named at random, so both short and long
# noun phrases are true and the model sees each word in several contexts.


def _noun_phrase(obj: _Object, rng: np.random.Generator) -> str:
    words = ([obj.size] if rng.random() < 0.6 else []) + [obj.colour, obj.shape]
    return f"{_article(words[0])} {' '.join(words)}"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _join(phrases: list[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _position(obj: _Object, size: int) -> str | None:
    """Where the object's centre is, by thirds of the image, only when clearly so."""
    margin = 0.03 * size

    def third(v: float) -> str | None:
        if v < size / 3 - margin:
            return "low"
        if v > 2 * size / 3 + margin:
            return "high"
        if size / 3 + margin < v < 2 * size / 3 - margin:
            return "mid"
        return None  # too close to a third line to say

    col, row = third(obj.centre[0]), third(obj.centre[1])
    vertical = {"low": "top", "high": "bottom"}.get(row or "")
    horizontal = {"low": "left", "high": "right"}.get(col or "")
    if vertical and horizontal:
        return f"in the {vertical} {horizontal} corner"
    if vertical:  # the column is the middle, or too close to a line to name
        return f"at the {vertical}"
    if horizontal:
        return f"on the {horizontal}"
    if row == "mid" and col == "mid":
        return "in the centre"
    return None


def _relations(a: _Object, b: _Object, size: int) -> list[str]:
    """Phrases R for which "a R b" is clearly true of the boxes."""
    return relations_between(a.box, b.box, size)


def relations_between(box_a: tuple[float, float, float, float], box_b: tuple[float, float, float, float],
                      image_size: float) -> list[str]:
    """Phrases R (of RELATIONS, in that order) for which "a R b" is clearly true of two boxes.

    Boxes are (x0, y0, x1, y1) in pixels, y down; ``image_size`` is the side of the square image.
    The generator's own rule, public so that an evaluation judges a caption's relations by the
    rule that wrote the references (capt.eval.content), not by a copy of it.
    """
    (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = box_a, box_b
    # Centres from the corners: exactly an object's x + side / 2 for the generator's integer boxes.
    dx, dy = (bx0 + bx1) / 2 - (ax0 + ax1) / 2, (by0 + by1) / 2 - (ay0 + ay1) / 2
    clear = 0.02 * image_size
    found = []
    # Directions need the boxes apart along that axis and that axis to dominate (1.5x).
    if abs(dy) >= 1.5 * abs(dx):
        if ay1 + clear <= by0:
            found.append("above")
        if by1 + clear <= ay0:
            found.append("below")
    if abs(dx) >= 1.5 * abs(dy):
        if ax1 + clear <= bx0:
            found.append("to the left of")
        if bx1 + clear <= ax0:
            found.append("to the right of")
    # "next to": side by side (projections overlap on one axis) and close on the other.
    overlap_x = min(ax1, bx1) - max(ax0, bx0) > 0
    overlap_y = min(ay1, by1) - max(ay0, by0) > 0
    gap = max(bx0 - ax1, ax0 - bx1, by0 - ay1, ay0 - by1)
    if (overlap_x or overlap_y) and gap <= 0.12 * image_size:
        found.append("next to")
    return found


def _list_caption(objects: list[_Object], size: int, rng: np.random.Generator) -> str | None:
    order = rng.permutation(len(objects))
    body = _join([_noun_phrase(objects[i], rng) for i in order])
    prefixes = ["", "there is ", "a picture of "] if len(objects) == 1 else ["", "a picture of "]
    return prefixes[rng.integers(len(prefixes))] + body


def _position_caption(objects: list[_Object], size: int, rng: np.random.Generator) -> str | None:
    placed = [(o, p) for o in objects if (p := _position(o, size))]
    if not placed:
        return None
    # Two objects when we can (so a two-object image is often fully described), else one.
    k = 2 if len(placed) >= 2 and rng.random() < 0.7 else 1
    chosen = [placed[i] for i in rng.permutation(len(placed))[:k]]
    body = _join([f"{_noun_phrase(o, rng)} {p}" for o, p in chosen])
    return ("there is " if k == 1 and rng.random() < 0.3 else "") + body


def _relation_caption(objects: list[_Object], size: int, rng: np.random.Generator) -> str | None:
    pairs = [(a, b, r) for a in objects for b in objects if a is not b for r in _relations(a, b, size)]
    if not pairs:
        return None
    a, b, relation = pairs[rng.integers(len(pairs))]
    prefix = "there is " if rng.random() < 0.2 else ""
    return f"{prefix}{_noun_phrase(a, rng)} {relation} {_noun_phrase(b, rng)}"


def _count_caption(objects: list[_Object], size: int, rng: np.random.Generator) -> str | None:
    counts = Counter(o.shape for o in objects)
    shapes = [s for s in SHAPES if s in counts]  # SHAPES order: Counter order is the scene's
    one = "a" if rng.random() < 0.5 else "one"  # one choice per sentence: "a x and a y"
    phrases = []
    for i in rng.permutation(len(shapes)):
        shape, n = shapes[i], counts[shapes[i]]
        phrases.append(f"{one} {shape}" if n == 1 else f"{NUMBERS[n]} {PLURALS[shape]}")
    body = _join(phrases)
    if rng.random() < 0.5:  # "there is/are" agrees with the first noun phrase
        body = ("there is " if body.split()[0] == one else "there are ") + body
    return body


_Template = Callable[[list[_Object], int, np.random.Generator], str | None]
# Relative weights. A lone object's count ("there is one cross") says less than any other
# caption, so it is only a fallback there; with several objects counting is informative.
_TEMPLATES: tuple[tuple[_Template, float, float], ...] = (
    # template, weight with one object, weight with several
    (_list_caption, 3.0, 3.0),
    (_position_caption, 2.0, 2.0),
    (_relation_caption, 3.0, 3.0),
    (_count_caption, 0.0, 1.5),
)


def _captions(objects: list[_Object], size: int, k: int, rng: np.random.Generator) -> list[str]:
    """k distinct true captions, as raw sentences ("A small red circle above a blue square.")."""
    weights = np.array([w1 if len(objects) == 1 else wn for _, w1, wn in _TEMPLATES])
    cumulative = np.cumsum(weights) / weights.sum()
    found: list[str] = []
    for attempt in range(600):
        if len(found) == k:
            break
        if attempt == 300:  # a scene with few true sentences: let every template in
            cumulative = np.cumsum(np.ones(len(_TEMPLATES))) / len(_TEMPLATES)
        template = _TEMPLATES[int(np.searchsorted(cumulative, rng.random(), side="right"))][0]
        text = template(objects, size, rng)
        if text is None or len(text.split()) > MAX_WORDS:
            continue
        raw = text[0].upper() + text[1:] + "."
        if raw not in found:
            found.append(raw)
    if len(found) < k:  # pragma: no cover - every scene has more than MAX_CAPTIONS captions
        raise RuntimeError(f"found only {len(found)} distinct captions for a scene, wanted {k}")
    return found


# ----------------------------------------------------------------------------- the files


def _check_name(name: str) -> None:
    # The name goes into file and member names: keep it to one safe path component.
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise CaptError(f"shapes dataset name must be letters, digits, '_', '-' or '.', got {name!r}")


def _write_json(path: Path, data: object, indent: int | None = None) -> None:
    write_json(path, data, indent=indent)  # never leave a half-written file for DVC to hash


def generate_shapes(cfg: ShapesConfig, out_dir: Path, name: str = "shapes", progress: bool = True) -> dict:
    """Write the world into out_dir; return summary counts (images per split, captions, objects)."""
    _check_name(name)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CaptError(f"{out_dir}: cannot create the output folder ({e.strerror})") from e
    world = _WORLDS[cfg.world]
    world_index = WORLDS.index(cfg.world)
    size = cfg.image_size
    total = cfg.n_train + cfg.n_val + cfg.n_test
    splits = ["train"] * cfg.n_train + ["val"] * cfg.n_val + ["test"] * cfg.n_test

    images: list[dict] = []
    caption_anns: list[dict] = []
    instance_anns: list[dict] = []
    karpathy: list[dict] = []
    category_ids = {shape: i + 1 for i, shape in enumerate(SHAPES)}

    from tqdm import tqdm  # here, not at import: a library import should stay silent and light

    zip_path = out_dir / "images.zip"
    # a full disk or a kill mid-way: the previous archive stays, no partial one is left (capt.files)
    with atomic_output(zip_path) as zip_tmp, zipfile.ZipFile(zip_tmp, "w", compression=zipfile.ZIP_STORED) as archive:
        for index in tqdm(range(total), desc=f"shapes {name}", disable=not progress, unit="img"):
            image_id = index + 1
            rng = np.random.default_rng([cfg.seed, world_index, image_id])
            objects = _sample_scene(rng, world, size, cfg.max_objects)
            picture = _render(rng, world, size, objects)
            captions = _captions(objects, size, cfg.captions_per_image, rng)

            file_name = f"{name}_{image_id:012d}.jpg"
            buffer = io.BytesIO()
            picture.save(buffer, "JPEG", quality=cfg.jpeg_quality)
            member = zipfile.ZipInfo(f"images/{file_name}", date_time=_ZIP_DATE)
            member.external_attr = 0o644 << 16
            archive.writestr(member, buffer.getvalue(), compress_type=zipfile.ZIP_STORED)

            images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
            sentences = []
            for raw in captions:  # as in the real files: COCO ids from 1, Karpathy sentids from 0
                sent_id = len(caption_anns)
                caption_anns.append({"id": sent_id + 1, "image_id": image_id, "caption": raw})
                sentences.append({"raw": raw, "tokens": normalize_caption(raw), "imgid": index, "sentid": sent_id})
            karpathy.append(
                {
                    "split": splits[index],
                    "filepath": "images",
                    "filename": file_name,
                    "imgid": index,
                    "cocoid": image_id,
                    "sentids": [s["sentid"] for s in sentences],
                    "sentences": sentences,
                }
            )
            for obj in objects:
                outline = obj.polygon()
                instance_anns.append(
                    {
                        "id": len(instance_anns) + 1,
                        "image_id": image_id,
                        "category_id": category_ids[obj.shape],
                        "bbox": [float(obj.x), float(obj.y), float(obj.side), float(obj.side)],
                        "area": round(_polygon_area(outline), 2),
                        "segmentation": [[round(float(v), 2) for point in outline for v in point]],
                        "iscrowd": 0,
                        "color": obj.colour,
                        "size": obj.size,
                    }
                )

    info = {
        "description": f"capt synthetic shapes world '{cfg.world}' (seed {cfg.seed})",
        "version": "1.0",
        "year": 2024,
        "contributor": "capt.data.shapes",
        "url": "",
        "date_created": "1980-01-01",  # fixed: the files must not depend on when they were made
        "config": asdict(cfg),
    }
    _write_json(
        out_dir / "captions.json",
        {"info": info, "licenses": [], "images": images, "annotations": caption_anns},
    )
    _write_json(
        out_dir / "instances.json",
        {
            "info": info,
            "licenses": [],
            "images": images,
            "categories": [{"id": i, "name": s, "supercategory": "shape"} for s, i in category_ids.items()],
            "annotations": instance_anns,
        },
    )
    _write_json(out_dir / f"dataset_{name}.json", {"dataset": name, "images": karpathy})
    _write_json(
        out_dir / "manifest.json",
        {
            "name": name,
            "images": ["images.zip"],
            "splits": {"file": f"dataset_{name}.json", "member": None},
            "captions": {"format": "coco", "files": [{"file": "captions.json", "member": None}]},
            "instances": [{"file": "instances.json", "member": None}],
        },
        indent=2,
    )
    return {
        "images": {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test},
        "captions": len(caption_anns),
        "objects": len(instance_anns),
    }
