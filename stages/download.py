"""Stage download@<dataset>: fetch a real dataset's archives, or generate a shapes world.

Params: ``download.<dataset>``, with ``source`` one of ``shapes`` (the rest of the section is a
ShapesConfig), ``coco`` or ``flickr8k`` (optional ``urls`` and ``base_url``: see RemoteConfig).
Writes ``data/raw/<dataset>/`` with the archives and ``manifest.json``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import typer

from capt.config import CHECKED, with_config
from stages._common import make_config, read_params, stage_main

log = logging.getLogger("stages.download")


Source = Literal["shapes", "coco", "flickr8k"]     # the embedded world, or a dataset fetched from the net


@with_config(CHECKED)
@dataclass(frozen=True)
class RemoteConfig:
    # Where each file may come from, tried in this order until one gives bytes that verify
    # (size/md5 where known): ``urls``, then ``base_url``, then the built-in sources
    # (capt.data.sources). ``urls`` maps a file name of the dataset to a URL or a list of URLs,
    # e.g. {caption_datasets.zip: https://my-copy/caption_datasets.zip}: for a file whose
    # public address died, or a faster copy; a file name the dataset does not have is an error
    # listing the ones it has. ``base_url`` is a mirror holding the same file names.
    urls: dict[str, str | list[str]] | None = None
    base_url: str | None = None
    # What a file must be when the copies are not the public bytes (a re-packed zip, the
    # rehearsal's miniature mirror): {<file name>: {size: <bytes>, md5: <hex>}}, replacing the
    # built-in values; every copy is still verified.
    checksums: dict[str, dict] | None = None


@stage_main
def main(dataset: str, out_root: Path = typer.Option(Path("data/raw"), help="where dataset folders go")) -> None:
    section = make_config(dict[str, Any], read_params("download", dataset), f"download.{dataset}")
    source = make_config(Source, section.pop("source", None), f"download.{dataset}.source")
    out_dir = out_root / dataset
    if source == "shapes":
        from capt.data.shapes import ShapesConfig, generate_shapes

        cfg = make_config(ShapesConfig, section, f"download.{dataset}")
        summary = generate_shapes(cfg, out_dir, name=dataset)
        log.info("generated %s: %s", dataset, summary)
    else:
        from capt.data.sources import download_dataset

        cfg = make_config(RemoteConfig, section, f"download.{dataset}")
        download_dataset(source, out_dir, base_url=cfg.base_url, urls=cfg.urls, checksums=cfg.checksums)


if __name__ == "__main__":
    typer.run(main)
