"""Stage prepare@<dataset>: vocabulary + one HDF5 file per split from a downloaded dataset.

Params: ``prepare`` (a PrepareConfig). Reads ``data/raw/<dataset>/``, writes
``data/prepared/<dataset>/`` (train/val/test.h5, test_blip.h5: the test split at BLIP's input
size, word_map.json, summary.json).
``prepare.workers`` (decoding processes) may be left out (0: decode in this process); the
outputs are byte-identical whatever it is.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from capt.data.prepare import PrepareConfig, prepare_dataset
from stages._common import read_config, stage_main

log = logging.getLogger("stages.prepare")


@stage_main
def main(dataset: str,
         raw_root: Path = typer.Option(Path("data/raw"), help="downloaded dataset folders"),
         out_root: Path = typer.Option(Path("data/prepared"), help="where prepared folders go")) -> None:
    cfg = read_config(PrepareConfig, "prepare")   # a missing key keeps its default
    if cfg.workers > 1:
        log.info("decoding images in %d processes", cfg.workers)
    summary = prepare_dataset(raw_root / dataset, out_root / dataset, cfg)
    log.info("%s: vocabulary %d, %s, %d image(s) skipped", dataset, summary["vocab_size"],
             ", ".join(f"{s} {v['images']}" for s, v in summary["splits"].items()), summary["images_skipped"])


if __name__ == "__main__":
    typer.run(main)
