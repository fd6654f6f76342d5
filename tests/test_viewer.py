"""The offline per-word map viewer (capt.viz.viewer), driven in headless Chromium through its URL
hash, and the difference view's figures (capt.viz.difference)."""

from __future__ import annotations

import re
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from capt.errors import CaptError
from capt.eval.difference import ModelOutputs, difference_examples, difference_summary, image_truths
from capt.eval.per_image import BLEU_STATISTICS, ImageScores
from capt.viz.difference import difference_figures, plot_difference, summary_table, word_marks
from capt.viz.viewer import JET_PALETTE, MAP_PX, write_viewer
from tests.browser import FLAGS, chromium
from tests.test_difference import SCENE_1, SCENE_2, shapes_instances

SIZE = 32        # the synthetic images' side
IMAGES = (7, 9)
CAPTIONS = {"a": {7: "a large red circle above a blue square", 9: "a small blue square"},
            "b": {7: "a green circle", 9: "two circles and a square"}}
TECHNIQUES = ("attention", "gradcam_encoder")


def _image(seed: int) -> np.ndarray:
    """uint8 (3, SIZE, SIZE): a muted background with a bright block, different per image."""
    rng = np.random.default_rng(seed)
    image = np.empty((3, SIZE, SIZE), np.uint8)
    image[:] = rng.integers(60, 200, (3, 1, 1))
    image[:, 4:14, 6:20] = rng.integers(0, 255, (3, 1, 1))
    return image


def _maps(n_words: int, model: str, technique: str) -> np.ndarray:
    """(n_words, 4, 4): word k peaks at its own cell, another per model and per technique."""
    shift = (model == "b") * 5 + (technique == "gradcam_encoder") * 3
    maps = np.full((n_words, 4, 4), 0.01, np.float32)
    for k in range(n_words):
        maps[k].flat[(k + shift) % 16] = 1.0
    return maps


def _outputs(name: str) -> ModelOutputs:
    captions = CAPTIONS[name]
    maps = {t: {i: (c.split(), _maps(len(c.split()), name, t)) for i, c in captions.items()} for t in TECHNIQUES}
    scores = ImageScores(IMAGES, np.zeros((2, len(BLEU_STATISTICS)), np.int64),
                         np.array([2.0, 0.5] if name == "a" else [0.25, 1.0]), "simple")
    return ModelOutputs(name, captions, maps, scores)


@pytest.fixture(scope="module")
def viewer(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("viewer")
    truths = image_truths(shapes_instances({7: SCENE_1, 9: SCENE_2}), IMAGES)
    return write_viewer(folder, {i: _image(i) for i in IMAGES}, [_outputs("a"), _outputs("b")], truths=truths,
                        pair=("a", "b"), title="a vs b", intro="synthetic")


class _Elements(HTMLParser):
    """Every element's attributes by id, and the text under each id'd element."""

    def __init__(self, html: str):
        super().__init__()
        self.by_id: dict[str, dict] = {}
        self.text: dict[str, str] = {}
        self.words: list[dict] = []            # the .word spans, in order
        self.other_words: list[dict] = []
        self._open: list[str | None] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.by_id[attrs["id"]] = attrs
            self.text.setdefault(attrs["id"], "")
        classes = (attrs.get("class") or "").split()
        if tag == "span" and "word" in classes:
            self.words.append(attrs)
        if tag == "span" and "other-word" in classes:
            self.other_words.append(attrs)
        if tag not in ("img", "meta", "br", "input"):
            self._open.append(attrs.get("id"))

    def handle_endtag(self, tag):
        if tag not in ("img", "meta", "br", "input") and self._open:
            self._open.pop()

    def handle_data(self, data):
        for element in self._open:
            if element is not None:
                self.text[element] += data


def _browse(page: Path, hash_: str, screenshot: Path | None = None) -> str:
    """The DOM of ``page#hash_`` after its script ran (or, with ``screenshot``, a 1000x800 picture)."""
    url = page.resolve().as_uri() + "#" + hash_
    what = [f"--screenshot={screenshot}", "--window-size=1000,800"] if screenshot else ["--dump-dom"]
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *what, url],
                              capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_the_page_is_offline_and_its_maps_are_small_files(viewer):
    page = viewer.read_text()
    assert not re.search(r"https?://", page)                     # nothing from the network
    assert page.count("<script") == 1 and "src=" not in re.search(r"<script[^>]*>", page).group(0)
    for model in ("a", "b"):
        for technique in TECHNIQUES:
            files = sorted((viewer.parent / "maps" / model / technique).glob("7-*.png"))
            assert len(files) == len(CAPTIONS[model][7].split())
            with Image.open(files[0]) as im:
                assert im.mode == "P" and im.size == (MAP_PX, MAP_PX)
                assert np.array_equal(np.array(im.getpalette()).reshape(-1, 3)[:256], JET_PALETTE)
    # each word's map is its own picture
    a7 = viewer.parent / "maps" / "a" / "attention"
    assert (a7 / "7-0.png").read_bytes() != (a7 / "7-2.png").read_bytes()
    assert (viewer.parent / "img" / "7.png").is_file() and (viewer.parent / "img" / "9.png").is_file()


def test_the_url_hash_picks_image_model_word_and_technique(viewer):
    dom = _Elements(_browse(viewer, "image=7&model=b&word=2&technique=attention"))
    assert dom.by_id["map"]["src"] == "maps/b/attention/7-2.png"
    assert dom.by_id["map"]["data-technique"] == "attention"
    assert dom.by_id["image-select"] is not None and dom.by_id["image"]["src"] == "img/7.png"
    # the selected word, marked as the difference view marks it: b's "circle" is a circle that is there
    assert [w["data-index"] for w in dom.words] == ["0", "1", "2"]
    assert dom.words[2]["class"].split() == ["word", "right", "selected"]
    assert "wrong" in dom.words[1]["class"] and "differs" in dom.words[1]["class"]     # "green": a wrong colour
    # the other model's caption beside it, following to its own "circle", with its own map
    assert dom.text["other-caption"].split() == CAPTIONS["a"][7].split()
    assert dom.text["other-name"].startswith("beside: a")
    assert dom.by_id["other-map"]["src"] == "maps/a/attention/7-3.png"
    assert "selected" in dom.other_words[3]["class"]
    assert dom.text["model-name"] == "b \u2014 CIDEr-D 0.25"
    # every technique's map of the same word, side by side
    thumbs = re.findall(r'<img class="map technique-map" alt="" data-technique="(\w+)" src="([^"]+)">',
                        _browse(viewer, "image=7&model=b&word=2"))
    assert thumbs == [(t, f"maps/b/{t}/7-2.png") for t in TECHNIQUES]

    word0 = _Elements(_browse(viewer, "image=7&model=b&word=0&technique=attention"))
    assert word0.by_id["map"]["src"] == "maps/b/attention/7-0.png" != dom.by_id["map"]["src"]
    other = _Elements(_browse(viewer, "image=9&model=a&other=b&word=1&technique=gradcam_encoder"))
    assert other.by_id["map"]["src"] == "maps/a/gradcam_encoder/9-1.png"
    assert other.by_id["other-map"]["src"].startswith("maps/b/gradcam_encoder/9-")
    assert other.text["other-caption"].split() == CAPTIONS["b"][9].split()
    # a word past the caption's end is its last word; an unknown image the first
    clamped = _Elements(_browse(viewer, "image=nope&model=a&word=99"))
    assert clamped.by_id["map"]["src"] == "maps/a/attention/7-7.png"


def test_nothing_fails_to_load(viewer):
    dom = _browse(viewer, "image=9&model=b&word=1")
    assert re.search(r'<body[^>]*data-images-broken="0"', dom)


def test_the_page_shows_a_picture_not_a_blank(viewer, tmp_path):
    shot = tmp_path / "viewer.png"
    _browse(viewer, "image=7&model=a&word=2&technique=attention", screenshot=shot)
    with Image.open(shot) as im:
        rgb = np.asarray(im.convert("RGB"))
    assert rgb.shape[:2] == (800, 1000)
    colours = np.unique(rgb.reshape(-1, 3), axis=0)
    assert len(colours) > 200                     # text, the image and the blended jet maps
    # the map's own colours are on screen: strong reds and blues of jet, over the image at half weight
    red = (rgb[..., 0] > 150) & (rgb[..., 1] < 110) & (rgb[..., 2] < 110)
    assert red.sum() > 200


def test_the_viewer_names_what_it_cannot_show(tmp_path):
    images = {i: _image(i) for i in IMAGES}
    lacking = ModelOutputs("c", {7: "a circle"})
    with pytest.raises(CaptError, match=r"c: no caption of images \[9\]"):
        write_viewer(tmp_path, images, [_outputs("a"), lacking])
    with pytest.raises(CaptError, match="model 'a b'"):
        write_viewer(tmp_path, images, [ModelOutputs("a b", CAPTIONS["a"])])
    bad = _outputs("a")
    bad.maps["attention"][7] = (["a", "circle"], _maps(2, "a", "attention"))
    with pytest.raises(CaptError, match="attention maps of image 7 are for the words 'a circle'"):
        write_viewer(tmp_path, images, [bad])
    # a model without maps (a baseline) is shown by its caption alone
    constant = ModelOutputs("constant", {7: "a circle", 9: "a circle"})
    page = write_viewer(tmp_path / "ok", images, [_outputs("a"), constant])
    assert '"constant":{"7":{"words":["a","circle"]' in page.read_text()


# --------------------------------------------------------------------------- the difference view


def test_the_difference_figures_and_table(tmp_path):
    truths = image_truths(shapes_instances({7: SCENE_1, 9: SCENE_2}), IMAGES)
    a, b = _outputs("a"), _outputs("b")
    examples = difference_examples(a, b, k=1, truths=truths)
    assert [(e.image_id, e.side) for e in examples] == [(7, "top"), (9, "bottom")]
    marks = word_marks(examples[0].differences["b"], 3)
    assert marks == [(None, False), ("wrong", True), ("right", False)]      # a, *green*, circle
    section = difference_figures(examples, {i: _image(i) for i in IMAGES}, ("a", "b"), tmp_path)
    assert len(section.images) == 2 and all(Path(p).is_file() for p, _ in section.images)
    assert section.images[0][1] == "image 7: a ahead by 1.75 CIDEr-D (top 1)"
    with Image.open(section.images[0][0]) as top, Image.open(section.images[1][0]) as bottom:
        # four rows (two models x two techniques), as wide as the longest caption (8 words) + the image
        assert top.size[0] > 700 and top.size[1] > 300
        assert top.size[0] > bottom.size[0]          # image 9's captions are shorter
    plot_difference(_image(7), examples[0], ("a", "b"), tmp_path / "plain.png")
    table = summary_table(difference_summary(a.captions, b.captions, truths), ("a", "b"))
    html = table.html()
    assert "<td class=\"text\">circle</td>" in html and "a: precision" in html
