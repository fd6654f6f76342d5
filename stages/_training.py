"""What the training stages share (pretrain, train_teacher, distill, blip): the process group
they run in, the outputs every trained model writes, and the fingerprint that keeps a checkpoint
from being resumed by another run. Apart from stages/_common.py so that the stages that train
nothing do not import (and, in dvc.yaml, depend on) the training code."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CODE = (ROOT / "capt", ROOT / "stages")      # what a training run's checkpoints are valid for


@contextlib.contextmanager
def training_runtime(device: str):
    """This process's rank and device (capt.train.distributed): one process, or one of the
    group torchrun started (``python -m stages.launch N``); the group is left at the end."""
    from capt.train.distributed import start_runtime, stop_runtime

    runtime = start_runtime(device)
    try:
        yield runtime
    finally:
        stop_runtime()


def write_training_outputs(name: str, result: dict, title: str, columns: tuple[str, ...] = ()) -> dict:
    """A trained model's history and summary where dvc.yaml declares them:
    ``metrics/history/<name>.csv`` (plots; ``columns`` head it even with no epoch rows),
    ``results/curves/<name>.png`` and ``metrics/train/<name>.json`` (metrics). A run of 0 epochs
    has ``best = {"epoch": None, "bleu4": None}``: no epoch was chosen, none is made up. A trained
    run's summary names the metric that chose its epoch (``selected_on``, ``train.select_on``)
    and that epoch's val BLEU-4 and CIDEr-D.
    Returns the summary."""
    from capt.files import write_json
    from capt.viz.curves import plot_history, write_history_csv

    write_history_csv(result["history"], Path("metrics/history") / f"{name}.csv", columns)
    plot_history(result["history"], Path("results/curves") / f"{name}.png", title)
    best_epoch = result["best"]["epoch"]
    best_row = result["history"][best_epoch - 1] if best_epoch else {}
    summary = {"best_epoch": best_epoch, "val_bleu4": best_row.get("val_bleu4"), "epochs_run": len(result["history"])}
    if best_row:               # what chose the epoch, and the other val score of that epoch
        summary["selected_on"] = next(k for k in result["best"] if k != "epoch")
        summary["val_cider"] = best_row.get("val_cider")
    write_json(Path("metrics/train") / f"{name}.json", summary)
    if summary["epochs_run"]:
        logging.getLogger("stages").info("%s: epoch %d chosen on val %s (BLEU-4 %.4f, CIDEr-D %s)", name,
                                         summary["best_epoch"], summary["selected_on"], summary["val_bleu4"],
                                         summary["val_cider"])
    return summary


def run_fingerprint(params: Any, *files: Path, code: tuple[Path, ...] = CODE) -> str:
    """A hash of everything that defines a training run: its params, the bytes of the files it
    starts from, and the code (every ``.py`` under ``code``). A checkpoint of another run is never
    resumed; nor is one of this run under other code, which DVC reruns the stage for: resuming a
    finished checkpoint would hand back the old model unchanged."""
    import hashlib
    import json

    h = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
    for f in files:
        h.update(Path(f).read_bytes())
    for root in code:
        for f in sorted(Path(root).rglob("*.py")):
            h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()
