"""The difference view, drawn: for each image where A beats B most (and B beats A most), both
captions with their content words judged, and both models' per-word maps side by side.

One figure per image, laid out as capt.viz.attention.plot_comparison lays a comparison (one
canvas of cells, :func:`capt.viz.attention.mosaic`; the same upsampling, colour map and blend): a
row per model and technique, the image first, then a cell per word with the word above it. The
words are the captions: a content word is green when right, red when wrong, grey when unjudged
(capt.eval.difference), and bold with a marker (``*``) where the other caption does not state it.
For the report (capt.viz.report): :func:`difference_figures` writes the figures and returns their
``Figures`` section, :func:`summary_table` the summary's ``Table``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np

from capt.errors import CaptError
from capt.eval.difference import (RIGHT, UNJUDGED, WRONG, Example, difference_examples, difference_summary,
                                   read_images)
from capt.eval.maps import TECHNIQUES
from capt.viz.attention import CELL_PX, GAP, display_image, mosaic, overlay, upsample_attention
from capt.files import atomic_output, write_json
from capt.viz.report import Figures, Table

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

VERDICT_COLOURS = {RIGHT: "#1a7f37", WRONG: "#c62828", UNJUDGED: "#777777", None: "#222222"}
CELL_IN = 1.1        # a cell's inches: 20 words and a label column fit in ~26 in at 80 dpi


def word_marks(side: Mapping | None, n_words: int) -> list[tuple[str | None, bool]]:
    """Each word's (verdict, differs) from one side of capt.eval.difference.word_differences: the
    worst verdict of the claims on it (wrong, then right, then unjudged; None: no claim), and
    whether one of them is not shared with the other caption."""
    marks: list[tuple[str | None, bool]] = [(None, False)] * n_words
    for claim in (side or {}).get("claims", []):
        for k in range(claim["span"][0], min(claim["span"][1], n_words)):
            verdict, differs = marks[k]
            worst = next(v for v in (WRONG, RIGHT, UNJUDGED) if v in (verdict, claim["verdict"]))
            marks[k] = (worst, differs or not claim["shared"])
    return marks


def _cells(rgb: np.ndarray, maps: np.ndarray | None, n_words: int) -> list[np.ndarray | None]:
    """The image's cell, then each word's map over it (none: white cells, the words still shown)."""
    if maps is None or n_words == 0:
        return [rgb / 255, *([None] * n_words)]
    heat = upsample_attention(np.asarray(maps, np.float32).reshape(len(maps), -1)[:n_words], rgb.shape[0])
    return [rgb / 255, *(overlay(rgb, h) for h in heat)]


def plot_difference(image: np.ndarray, example: Example, names: tuple[str, str], path: Path,
                    max_words: int = 20, title: str = "") -> None:
    """One image of the difference view (the module docstring has the layout). ``image`` uint8
    (3, S, S); ``names``: the models A and B; ``title`` starts the figure's title."""
    rgb = display_image(image)
    diff = example.differences or {}
    rows = []      # (label, words, maps or None, marks)
    for side, name, words, maps, cider in (("a", names[0], example.words_a, example.maps_a, example.cider_a),
                                           ("b", names[1], example.words_b, example.maps_b, example.cider_b)):
        words = words[:max_words]
        marks = word_marks(diff.get(side), len(words))
        for technique, word_maps in (maps or {None: None}).items():
            what = TECHNIQUES.get(technique, technique) if technique else "no maps"
            rows.append((f"{name}\n{what}\nCIDEr-D {cider:.2f}", words, word_maps, marks))
    columns = 1 + max(len(words) for _, words, _, _ in rows)
    cells = [_cells(rgb, maps, len(words)) for _, words, maps, _ in rows]
    band = CELL_PX // 5
    canvas = mosaic(cells, CELL_PX, GAP, band)

    px = CELL_IN / CELL_PX                          # inches per canvas pixel
    w, h = canvas.shape[1] * px, canvas.shape[0] * px
    label_w, margin, head = 1.9, 0.1, 0.75          # inches: the label column, the margins, the title
    fig = plt.figure(figsize=(label_w + w + margin, h + margin + head))
    W, H = fig.get_figwidth(), fig.get_figheight()
    ax = fig.add_axes([label_w / W, margin / H, w / W, h / H])
    ax.imshow(canvas, interpolation="antialiased", aspect="auto")
    ax.axis("off")
    step_y = band + CELL_PX + GAP
    for r, (label, words, _, marks) in enumerate(rows):
        for c, (word, (verdict, differs)) in enumerate(zip(words, marks), 1):
            ax.text(c * (CELL_PX + GAP) + CELL_PX / 2, r * step_y + band - 2, word + ("*" if differs else ""),
                    ha="center", va="bottom", fontsize=8, color=VERDICT_COLOURS[verdict],
                    fontweight="bold" if differs else "normal", clip_on=False)
        ax.text(-GAP * 3, r * step_y + band + CELL_PX / 2, label, ha="right", va="center", fontsize=7)
    heading = (f"{title}image {example.image_id}: {names[0]} {example.cider_a:.2f} - {names[1]} {example.cider_b:.2f} "
               f"= {example.delta:+.2f} CIDEr-D ({example.side} {example.rank})")
    legend = ("content words: green right, red wrong, grey unjudged; * bold: the other caption does not state it"
              if example.differences else "")
    fig.suptitle(f"{heading}\n{legend}", fontsize=9, y=1 - 0.08 / H, va="top", x=0.02, ha="left")
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)


def difference_figures(examples: Sequence[Example], images: Mapping, names: tuple[str, str], folder: Path,
                       title: str = "") -> Figures:
    """Draw each example (``images``: image id -> uint8 (3, S, S)) into ``folder`` and return the
    report section that shows them, top images first."""
    folder = Path(folder)
    shown = []
    for e in examples:
        path = folder / f"{names[0]}-vs-{names[1]}-{e.side}{e.rank}-{e.image_id}.png"
        plot_difference(images[e.image_id], e, names, path, title=title)
        who = names[0] if e.delta >= 0 else names[1]
        shown.append((path, f"image {e.image_id}: {who} ahead by {abs(e.delta):.2f} CIDEr-D ({e.side} {e.rank})"))
    return Figures(f"Where {names[0]} and {names[1]} differ most", shown,
                   note=f"The images with the largest per-image CIDEr-D difference {names[0]} - {names[1]} "
                        f"(top), then the largest for {names[1]} (bottom): both captions, their content words "
                        "judged against the image, and each model's map of every word.",
                   width="100%")


def summary_table(rows: list[dict], names: tuple[str, str]) -> Table:
    """capt.eval.difference.difference_summary as a report table: counts beside every rate."""
    a, b = names
    columns = [("kind", "kind"), ("item", "item"), ("images_true", "images where true")]
    for m, name in (("a", a), ("b", b)):
        columns += [(f"{m}_images", f"{name}: images stating it"), (f"{m}_right", f"{name}: right"),
                    (f"{m}_judged", f"{name}: judged"), (f"{m}_precision", f"{name}: precision", "{:.2f}"),
                    (f"{m}_named", f"{name}: named where true"), (f"{m}_recall", f"{name}: recall", "{:.2f}")]
    columns += [("precision_delta", "precision difference", "{:+.2f}"),
                ("recall_delta", "recall difference", "{:+.2f}")]
    return Table(f"{a} vs {b}: what each caption states, item by item", rows, columns,
                 note=f"Per shape, size, colour and relation (COCO: per category). precision = right / judged "
                      f"claims (an attribute of an object that is not in the image is not judged); recall = images "
                      f"where the caption states it rightly / images where it is true; differences are {a} - {b}.")


def difference_view(pairs: Sequence[tuple[str, str]], outputs: Mapping, test_h5: Path, truths: Mapping | None,
                    folder: Path, k: int) -> tuple[list, dict, list]:
    """The report's difference view of each pair (A, B) of ``outputs`` (model -> ModelOutputs, on
    one test set): the ``k`` images where A beats B most and the ``k`` where B beats A most, drawn
    into ``folder`` (:func:`difference_figures`), and the per-item summary (:func:`summary_table`);
    each pair's examples and summary also go to ``folder/<A>-vs-<B>.json``. Returns (the report
    sections, pair name -> its JSON, every image shown in order: the viewer's first images)."""
    sections, records, shown = [], {}, []
    for a, b in pairs:
        missing = [m for m in (a, b) if m not in outputs]
        if missing:
            raise CaptError(f"difference pair {a} vs {b}: no evaluation of {', '.join(missing)} among "
                            f"{', '.join(outputs)}")
        examples = difference_examples(outputs[a], outputs[b], k, truths)
        images = read_images(test_h5, [e.image_id for e in examples])
        sections.append(difference_figures(examples, images, (a, b), folder))
        record = {"a": a, "b": b, "examples": [e.to_json() for e in examples]}
        if truths is not None:
            rows = difference_summary(outputs[a].captions, outputs[b].captions, truths)
            sections.append(summary_table(rows, (a, b)))
            record["summary"] = rows
        records[f"{a}-vs-{b}"] = record
        write_json(Path(folder) / f"{a}-vs-{b}.json", record)
        shown += [e.image_id for e in examples]
    return sections, records, list(dict.fromkeys(shown))
