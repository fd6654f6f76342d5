"""An interactive viewer of every model's per-word maps: one offline HTML page, a folder of small
PNGs beside it, and no network at all (no CDN, no external script: plain HTML, one inline
``<script>`` holding the data and ~150 lines of JavaScript).

Pick a test image and a model; step through its caption's words (hover or click a word, the
buttons, or the arrow keys) to see that word's map for each technique, drawn over the image; the
other model of the pair (``beside``) shows its caption and its maps alongside, following the same
word where its caption has it. Content words are marked as the difference view marks them
(capt.eval.difference): green right, red wrong, grey unjudged, bold where the other caption does
not state the same thing.

Files (``folder``)::

    index.html                                   the page
    img/<image id>.png                           each test image, at its own size
    maps/<model>/<technique>/<image id>-<k>.png  word k's map, jet colours, MAP_PX square

A map is stored as its colours alone (the bicubic upsampling and [0, 1] rescaling of
capt.viz.attention.upsample_attention, the jet colour map indexed as matplotlib indexes it) and
laid over the image with CSS ``opacity: ALPHA``, which is capt.viz.attention.overlay's blend
(1 - ALPHA) * image + ALPHA * colours: the viewer shows what the figures show. As a 256-colour
palette PNG a map is ~1-2 KB, where a blended RGB cell is ~20 KB.

The URL hash drives the page as the controls do, for links and for a headless browser (which
cannot click): ``index.html#image=7&model=teacher&other=blip&word=2&technique=attention&oword=1``.
The script reads it on load and on every change and hands it to the same ``show`` that the
selects, the words, the buttons and the keys call; ``show`` writes the state back to the hash.
"""

from __future__ import annotations

import html
import json
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image

from capt.errors import CaptError
from capt.eval.difference import ModelOutputs, caption_claims, check_map_words
from capt.eval.grounding import is_degenerate
from capt.eval.maps import TECHNIQUES
from capt.viz.attention import ALPHA, display_image, upsample_attention

MAP_PX = 32          # a map's side in its PNG: an 8x8 or 24x24 grid upsampled bicubically is smooth at
                     # 64 px, and the browser's own smoothing carries it to the 320 px it is shown at
SHOW_PX = 320        # the image and its map on the page
THUMB_PX = 128       # each technique's map, side by side under the large one

# matplotlib's jet, as overlay() indexes it: heat h in [0, 1] -> colour min(int(h * 256), 255)
JET_PALETTE = (matplotlib.colormaps["jet"](np.arange(256))[:, :3] * 255).round().astype(np.uint8)

_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")

STYLE = f"""
body {{ font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1400px; color: #222; }}
#controls {{ display: flex; flex-wrap: wrap; gap: 0.5em 1.2em; align-items: center; margin: 1em 0; }}
#panels {{ display: flex; flex-wrap: wrap; gap: 1.5em; }}
.panel {{ flex: 1 1 440px; }}
.panel h2 {{ font-size: 1.1em; margin: 0.3em 0; }}
.caption {{ font-size: 1.15em; line-height: 1.9; min-height: 2em; }}
.word, .other-word {{ padding: 0.1em 0.25em; border-radius: 3px; cursor: pointer; }}
.word.selected, .other-word.selected {{ background: #ffe066; }}
.right {{ color: #1a7f37; }}
.wrong {{ color: #c62828; text-decoration: line-through; }}
.unjudged {{ color: #777; }}
.differs {{ font-weight: bold; border-bottom: 2px solid currentColor; }}
.stage {{ position: relative; width: {SHOW_PX}px; height: {SHOW_PX}px; border: 1px solid #ccc; }}
.stage img {{ position: absolute; left: 0; top: 0; width: 100%; height: 100%; }}
.stage img.map {{ opacity: {ALPHA}; }}
.stage.small {{ width: {THUMB_PX}px; height: {THUMB_PX}px; display: inline-block; margin-right: 0.6em; }}
.thumbs figure {{ display: inline-block; margin: 0.6em 0.6em 0 0; cursor: pointer; }}
.thumbs figcaption, .map-label {{ font-size: 0.85em; color: #555; }}
.thumbs figure.selected figcaption {{ font-weight: bold; color: #222; }}
.legend {{ font-size: 0.85em; color: #555; }}
#image-check {{ color: #c00; font-weight: bold; }}
"""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>{style}</style>
</head>
<body data-images-broken="0">
<h1>{title}</h1>
<p>{intro}</p>
<p class="legend">Hover or click a word (or use the arrow keys) to see its map. Content words:
<span class="right">right</span>, <span class="wrong">wrong</span>, <span class="unjudged">unjudged</span>
(an attribute of an object that is not there); <span class="differs">bold</span> where the other caption
does not state the same thing.</p>
<p id="image-check"></p>
<div id="controls">
  <label>Image <select id="image-select"></select></label>
  <label>Model <select id="model-select"></select></label>
  <label>beside <select id="other-select"></select></label>
  <label>Map <select id="technique-select"></select></label>
  <button id="prev-word" type="button">&#9664; word</button>
  <button id="next-word" type="button">word &#9654;</button>
  <button id="swap" type="button">swap models</button>
</div>
<div id="panels">
  <section class="panel" id="model-panel">
    <h2 id="model-name"></h2>
    <p class="caption" id="caption"></p>
    <div class="stage"><img id="image" alt="test image"><img id="map" class="map" alt=""></div>
    <p class="map-label" id="map-label"></p>
    <div class="thumbs" id="technique-maps"></div>
  </section>
  <section class="panel" id="other-panel">
    <h2 id="other-name"></h2>
    <p class="caption" id="other-caption"></p>
    <div class="stage"><img id="other-image" alt="test image"><img id="other-map" class="map" alt=""></div>
    <p class="map-label" id="other-map-label"></p>
  </section>
</div>
<script>
var DATA = {data};
{script}
</script>
</body>
</html>
"""

# The page's one script. Everything the page shows comes from ``state`` through show(); the
# controls, the words, the keys and the URL hash only ever call show() with what they change.
SCRIPT = r"""
(function () {
  "use strict";
  var $ = function (id) { return document.getElementById(id); };
  var state = {};

  function entry(model, image) { return DATA.captions[model][image]; }
  function techniquesOf(model, image) {
    return DATA.techniqueOrder.filter(function (t) { return t in entry(model, image).maps; });
  }
  function clampWord(k, n) { k = parseInt(k, 10); return isNaN(k) || n === 0 ? 0 : Math.max(0, Math.min(n - 1, k)); }
  function option(select, value, label) {
    var o = document.createElement("option"); o.value = value; o.textContent = label; select.appendChild(o);
  }

  // Which claims the other caption states too: keys matched as multisets, in caption order
  // (capt.eval.difference.shared_claims).
  function sharedFlags(claims, other) {
    var left = {};
    other.forEach(function (c) { left[c.key] = (left[c.key] || 0) + 1; });
    return claims.map(function (c) { var s = (left[c.key] || 0) > 0; left[c.key] = (left[c.key] || 0) - 1; return s; });
  }

  // Each word's classes: its worst verdict (wrong, then right, then unjudged), "differs" when a
  // claim on it is not shared.
  function wordClasses(e, other) {
    var out = e.words.map(function () { return {}; });
    var shared = sharedFlags(e.claims, other.claims);
    e.claims.forEach(function (c, i) {
      for (var k = c.span[0]; k < c.span[1]; k++) {
        out[k][c.verdict] = true;
        if (!shared[i]) { out[k].differs = true; }
      }
    });
    return out.map(function (f) {
      var v = f.wrong ? "wrong" : f.right ? "right" : f.unjudged ? "unjudged" : "";
      return (v ? " " + v : "") + (f.differs ? " differs" : "");
    });
  }

  function renderCaption(box, cls, e, other, selected, onPick) {
    box.textContent = "";
    var classes = wordClasses(e, other);
    e.words.forEach(function (w, k) {
      var span = document.createElement("span");
      span.className = cls + classes[k] + (k === selected ? " selected" : "");
      span.dataset.index = String(k);
      span.textContent = w;
      // a re-render puts a new span under a resting pointer, which the browser may report as
      // entered: only a new word is a change
      var pick = function () { if (k !== selected) { onPick(k); } };
      span.addEventListener("mouseenter", pick);
      span.addEventListener("click", pick);
      box.appendChild(span);
      box.appendChild(document.createTextNode(" "));
    });
  }

  function mapOf(e, technique, k) {
    var m = e.maps[technique];
    return m && m.src.length ? {src: m.src[k], flat: m.flat.indexOf(k) >= 0} : null;
  }

  // A large map and the line under it: the word and the technique, or why there is no map.
  function setMap(img, label, model, words, k, technique) {
    var m = technique ? mapOf(entry(model, state.image), technique, k) : null;
    if (m) { img.src = m.src; img.style.visibility = "visible"; }
    else { img.removeAttribute("src"); img.style.visibility = "hidden"; }
    img.dataset.technique = technique || "";
    label.textContent = !technique ? "no maps for " + model
      : "\u201c" + (words[k] || "") + "\u201d, " + DATA.techniques[technique] +
        (m && m.flat ? " (a flat map: it points nowhere)" : "");
  }

  function scoreText(model, image) {
    var c = entry(model, image).cider;
    return c === null || c === undefined ? model : model + " \u2014 CIDEr-D " + c.toFixed(2);
  }

  // The one code path: every control and the URL hash call show() with what they change.
  function show(change) {
    var s = Object.assign({}, state, change);
    if (!Object.prototype.hasOwnProperty.call(DATA.captions[DATA.models[0]], s.image)) { s.image = DATA.images[0].id; }
    if (DATA.models.indexOf(s.model) < 0) { s.model = DATA.pair[0]; }
    // beside the model, by default, its partner in the pair (the first of the pair beside anything else)
    if (DATA.models.indexOf(s.other) < 0) { s.other = s.model === DATA.pair[0] ? DATA.pair[1] : DATA.pair[0]; }
    var e = entry(s.model, s.image), o = entry(s.other, s.image);
    s.word = clampWord(s.word, e.words.length);
    if ("word" in change && !("oword" in change)) { s.oword = follow(e.words, s.word, o.words, s.oword); }
    s.oword = clampWord(s.oword, o.words.length);
    var techniques = techniquesOf(s.model, s.image);
    if (techniques.indexOf(s.technique) < 0) { s.technique = techniques.length ? techniques[0] : ""; }
    state = s;
    render();
    history.replaceState(null, "", "#" + ["image", "model", "other", "word", "technique", "oword"].map(function (k) {
      return k + "=" + encodeURIComponent(state[k]);
    }).join("&"));
  }

  // When a word of the model's caption is picked, the other caption follows to the same
  // occurrence of the same word where it has one ("circle" the 2nd time -> its 2nd "circle", or
  // its last), else stays where it was.
  function follow(words, k, other, current) {
    var w = words[k], nth = words.slice(0, k).filter(function (x) { return x === w; }).length, at = [];
    other.forEach(function (x, j) { if (x === w) { at.push(j); } });
    return at.length ? at[Math.min(nth, at.length - 1)] : current;
  }
  function pickWord(k) { show({word: k}); }

  function render() {
    var e = entry(state.model, state.image), o = entry(state.other, state.image);
    var image = DATA.images.filter(function (im) { return im.id === state.image; })[0];
    $("image-select").value = state.image;
    $("model-select").value = state.model;
    $("other-select").value = state.other;
    var ts = $("technique-select");
    ts.textContent = "";
    techniquesOf(state.model, state.image).forEach(function (t) { option(ts, t, DATA.techniques[t]); });
    ts.value = state.technique;
    $("image").src = image.src;
    $("other-image").src = image.src;
    $("model-name").textContent = scoreText(state.model, state.image);
    $("other-name").textContent = "beside: " + scoreText(state.other, state.image);
    renderCaption($("caption"), "word", e, o, state.word, pickWord);
    renderCaption($("other-caption"), "other-word", o, e, state.oword, function (k) { show({oword: k}); });
    setMap($("map"), $("map-label"), state.model, e.words, state.word, state.technique);
    var thumbs = $("technique-maps");
    thumbs.textContent = "";
    techniquesOf(state.model, state.image).forEach(function (t) {
      var m = mapOf(e, t, state.word), fig = document.createElement("figure");
      fig.className = "technique" + (t === state.technique ? " selected" : "");
      fig.innerHTML = '<div class="stage small"><img alt=""><img class="map technique-map" alt=""></div>' +
                      '<figcaption></figcaption>';
      fig.querySelector("img").src = image.src;
      var img = fig.querySelector("img.technique-map");
      img.dataset.technique = t;
      if (m) { img.src = m.src; }
      fig.querySelector("figcaption").textContent = DATA.techniques[t] + (m && m.flat ? " (flat)" : "");
      fig.addEventListener("click", function () { show({technique: t}); });
      thumbs.appendChild(fig);
    });
    // the other model's map by the same technique where it has it (BLIP has Grad-CAM alone)
    var ot = techniquesOf(state.other, state.image), otech = ot.indexOf(state.technique) >= 0 ? state.technique : ot[0];
    setMap($("other-map"), $("other-map-label"), state.other, o.words, state.oword, otech);
  }

  function fromHash() {
    var change = {};
    location.hash.replace(/^#/, "").split("&").forEach(function (kv) {
      var i = kv.indexOf("=");
      if (i > 0) { change[decodeURIComponent(kv.slice(0, i))] = decodeURIComponent(kv.slice(i + 1)); }
    });
    show(change);
  }

  DATA.images.forEach(function (im) { option($("image-select"), im.id, im.label); });
  DATA.models.forEach(function (m) { option($("model-select"), m, m); option($("other-select"), m, m); });
  $("image-select").addEventListener("change", function (ev) { show({image: ev.target.value, word: 0, oword: 0}); });
  $("model-select").addEventListener("change", function (ev) { show({model: ev.target.value, word: 0}); });
  $("other-select").addEventListener("change", function (ev) { show({other: ev.target.value, oword: 0}); });
  $("technique-select").addEventListener("change", function (ev) { show({technique: ev.target.value}); });
  $("prev-word").addEventListener("click", function () { pickWord(Math.max(0, state.word - 1)); });
  $("next-word").addEventListener("click", function () {
    pickWord(Math.min(entry(state.model, state.image).words.length - 1, state.word + 1));
  });
  $("swap").addEventListener("click", function () {
    show({model: state.other, other: state.model, word: state.oword, oword: state.word});
  });
  document.addEventListener("keydown", function (ev) {
    if (ev.target.tagName === "SELECT") { return; }      // there the arrows change the menu's choice
    if (ev.key === "ArrowLeft") { $("prev-word").click(); }
    if (ev.key === "ArrowRight") { $("next-word").click(); }
  });
  // A map or image that fails to load is counted where a reader and a headless browser see it.
  document.addEventListener("error", function (ev) {
    if (ev.target.tagName !== "IMG") { return; }
    var n = parseInt(document.body.dataset.imagesBroken, 10) + 1;
    document.body.dataset.imagesBroken = String(n);
    $("image-check").textContent = n + " image(s) missing from this viewer";
  }, true);
  window.addEventListener("hashchange", fromHash);
  fromHash();
})();
"""


def _file_name(value, what: str) -> str:
    """A name safe in a file name and a URL, or one error line saying which is not."""
    name = str(value)
    if not name or _SAFE_NAME.search(name):
        raise CaptError(f"{what} {value!r}: the viewer's file names take letters, digits, '_', '-' and '.' only")
    return name


def map_colours(maps: np.ndarray) -> np.ndarray:
    """maps (T, G, G) -> uint8 (T, MAP_PX, MAP_PX): each upsampled and rescaled to [0, 1] as the
    figures do (upsample_attention), then the index of its jet colour (JET_PALETTE)."""
    T = len(maps)
    if T == 0:
        return np.zeros((0, MAP_PX, MAP_PX), np.uint8)
    heat = upsample_attention(np.asarray(maps, np.float32).reshape(T, -1), MAP_PX)
    return np.minimum((heat * 256).astype(np.int64), 255).astype(np.uint8)


def _write_palette_png(path: Path, indices: np.ndarray) -> None:
    im = Image.fromarray(indices, "P")
    im.putpalette(JET_PALETTE.reshape(-1).tolist())
    im.save(path, optimize=True)


def write_viewer(folder: Path, images: Mapping, models: Sequence[ModelOutputs], *, truths: Mapping | None = None,
                 pair: tuple[str, str] | None = None, image_labels: Mapping | None = None,
                 title: str = "Per-word maps", intro: str = "") -> Path:
    """Write the viewer into ``folder`` (index.html, img/, maps/; the two folders are replaced)
    and return the page's path.

    ``images``: image id -> uint8 (3, S, S), the images to show in the order of the image menu
    (the caller limits them: the difference view's top and bottom images and a few more);
    ``models``: every model's outputs (capt.eval.difference.ModelOutputs), each with a caption of
    every image; ``truths``: image id -> truth (capt.eval.difference.image_truths), to mark the
    content words, or None; ``pair``: the two models shown first (default the first two);
    ``image_labels``: image id -> its label in the menu (default "image <id>").
    """
    folder = Path(folder)
    if not images:
        raise CaptError(f"{folder}: no images to show in the viewer")
    if not models:
        raise CaptError(f"{folder}: no models to show in the viewer")
    names = [m.name for m in models]
    for m in models:
        _file_name(m.name, "model")
        check_map_words(m, f"{m.name}'s maps")
        missing = [i for i in images if i not in m.captions]
        if missing:
            raise CaptError(f"{m.name}: no caption of images {missing[:5]}; the viewer shows every model on "
                            "every image")
    pair = pair or (names[0], names[1 if len(names) > 1 else 0])
    unknown = [p for p in pair if p not in names]
    if unknown:
        raise CaptError(f"viewer pair {pair}: {unknown} not among the models {names}")
    keys = {image_id: _file_name(image_id, "image id") for image_id in images}

    for sub in ("img", "maps"):
        shutil.rmtree(folder / sub, ignore_errors=True)
    (folder / "img").mkdir(parents=True)
    image_rows = []
    for image_id, image in images.items():
        Image.fromarray(display_image(np.asarray(image), np.asarray(image).shape[1])).save(
            folder / "img" / f"{keys[image_id]}.png", optimize=True)
        label = (image_labels or {}).get(image_id, f"image {image_id}")
        image_rows.append({"id": keys[image_id], "label": label, "src": f"img/{keys[image_id]}.png"})

    captions: dict[str, dict] = {}
    for m in models:
        cider = dict(zip(m.scores.image_ids, m.scores.cider.tolist())) if m.scores is not None else {}
        captions[m.name] = {}
        for image_id in images:
            words = m.words(image_id)
            claims = caption_claims(words, truths[image_id]) if truths is not None else []
            entry = {"words": words, "cider": cider.get(image_id),
                     "claims": [{"key": "|".join(c.key), "span": list(c.span), "verdict": c.verdict} for c in claims],
                     "maps": {}}
            captions[m.name][keys[image_id]] = entry
        for technique, maps in m.maps.items():
            shown = [i for i in images if i in maps]
            if not shown:
                continue
            out = folder / "maps" / m.name / _file_name(technique, "technique")
            out.mkdir(parents=True, exist_ok=True)
            # One upsampling for all the images' words: a call per image costs more than its maps.
            colours = map_colours(np.concatenate([maps[i][1] for i in shown]))
            start = 0
            for image_id in shown:
                word_maps = maps[image_id][1]
                src = []
                for k in range(len(word_maps)):
                    name = f"{keys[image_id]}-{k}.png"
                    _write_palette_png(out / name, colours[start + k])
                    src.append(f"maps/{m.name}/{technique}/{name}")
                start += len(word_maps)
                flat = [k for k, grid in enumerate(word_maps) if is_degenerate(np.asarray(grid, np.float64))]
                captions[m.name][keys[image_id]]["maps"][technique] = {"src": src, "flat": flat}

    data = {"techniques": {t: TECHNIQUES.get(t, t) for m in models for t in m.maps},
            "techniqueOrder": [t for t in TECHNIQUES if any(t in m.maps for m in models)]
            + sorted({t for m in models for t in m.maps} - set(TECHNIQUES)),
            "models": names, "pair": list(pair), "images": image_rows, "captions": captions}
    # "</" would end the script element; JSON allows the escaped slash.
    blob = json.dumps(data, ensure_ascii=True, separators=(",", ":")).replace("</", "<\\/")
    page = PAGE.format(title=html.escape(title), style=STYLE, intro=html.escape(intro), data=blob, script=SCRIPT)
    path = folder / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
