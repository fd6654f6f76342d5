"""The study as one static HTML page that opens offline: tables, curves and figures, with every
image copied beside it (``img/``), no script or style from the network.

The page checks itself when it loads: each image that did not load is marked and counted in
``<body data-images-loaded="n" data-images-broken="m">`` and a red line at the top, so a
broken report shows it, to a reader and to a headless browser alike.
"""

from __future__ import annotations

import html
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from capt.eval.table import format_cell
from capt.files import write_atomic

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child, td.text { text-align: left; }
thead th { background: #eee; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.85em; color: #555; }
.broken { outline: 3px solid #c00; }
#image-check { color: #c00; font-weight: bold; }
"""

SELF_CHECK = """
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images), broken = 0;
  imgs.forEach(function (img) {
    if (!(img.complete && img.naturalWidth > 0)) { broken += 1; img.classList.add("broken"); }
  });
  document.body.dataset.imagesLoaded = String(imgs.length - broken);
  document.body.dataset.imagesBroken = String(broken);
  if (broken) {
    document.getElementById("image-check").textContent = broken + " image(s) missing from this report";
  }
});
"""


@dataclass
class Table:
    """Rows of dicts shown under ``columns`` ((key, header) pairs); floats get ``digits``."""

    title: str
    rows: list[dict]
    columns: list[tuple[str, ...]]      # (key, header) or (key, header, format such as "{:.2f}")
    note: str = ""
    digits: int = 4

    def html(self) -> str:
        def cell(v, fmt: str | None) -> str:
            if isinstance(v, float) and fmt is None:
                fmt = f"{{:.{self.digits}f}}"
            text = html.escape(format_cell(v, fmt))
            return f'<td class="text">{text}</td>' if isinstance(v, str) else f"<td>{text}</td>"

        head = "".join(f"<th>{html.escape(c[1])}</th>" for c in self.columns)
        body = "\n".join("<tr>" + "".join(cell(r.get(c[0]), c[2] if len(c) > 2 else None) for c in self.columns)
                         + "</tr>" for r in self.rows)
        note = f"<p>{html.escape(self.note)}</p>" if self.note else ""
        return (f"<h2>{html.escape(self.title)}</h2>\n{note}\n<table>\n<thead><tr>{head}</tr></thead>\n"
                f"<tbody>\n{body}\n</tbody>\n</table>")


@dataclass
class Figures:
    """Images (their captions beside them) copied into the report's ``img/`` folder."""

    title: str
    images: list[tuple[Path, str]] = field(default_factory=list)
    note: str = ""
    width: str = "32%"


@dataclass
class Link:
    """A page of its own beside the report (a folder under ``out_dir``, written after it), linked."""

    title: str
    href: str
    note: str = ""

    def html(self) -> str:
        note = f"<p>{html.escape(self.note)}</p>" if self.note else ""
        return (f'<h2>{html.escape(self.title)}</h2>\n{note}\n'
                f'<p><a href="{html.escape(self.href)}">{html.escape(self.href)}</a></p>')


def write_report(out_dir: Path, title: str, intro: str, sections: list[Table | Figures | Link]) -> Path:
    """Write ``out_dir/index.html`` and ``out_dir/img/``; returns the page's path. A missing
    image file is an error here, not a broken picture later."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    (out_dir / "img").mkdir(parents=True)
    parts = [f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(intro)}</p>", '<p id="image-check"></p>']
    n = 0
    for section in sections:
        if isinstance(section, (Table, Link)):
            parts.append(section.html())
            continue
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.note:
            parts.append(f"<p>{html.escape(section.note)}</p>")
        for src, caption in section.images:
            if not Path(src).is_file():
                raise FileNotFoundError(f"{src}: missing, so the report cannot show it")
            n += 1
            name = f"{n:03d}-{Path(src).name}"
            shutil.copyfile(src, out_dir / "img" / name)
            parts.append(f'<figure style="width:{section.width}"><img src="img/{html.escape(name)}" '
                         f'alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}</figcaption></figure>')
    page = ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n<script>{SELF_CHECK}</script>\n"
            "</head>\n<body>\n" + "\n".join(parts) + "\n</body>\n</html>\n")
    path = out_dir / "index.html"
    write_atomic(path, page)
    return path
