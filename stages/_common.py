"""What every stage shares: reading its own params section into a typed config, logging, and
turning user mistakes (CaptError) into one clear line instead of a traceback."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import sys
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

import yaml

from capt.errors import CaptError

PARAMS = Path("params.yaml")
ROOT = Path(__file__).resolve().parents[1]
CODE = (ROOT / "capt", ROOT / "stages")      # what a training run's checkpoints are valid for
T = TypeVar("T")


def read_params(*keys: str, path: Path = PARAMS) -> Any:
    """The params.yaml value at ``keys`` (e.g. ``read_params("download", "shapes")``)."""
    try:
        value = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise CaptError(f"{path}: missing; run stages from the repository root") from None
    except yaml.YAMLError as e:
        raise CaptError(f"{path}: malformed YAML ({e})".replace("\n", " ")) from None
    for i, key in enumerate(keys):
        if not isinstance(value, dict) or key not in value:
            raise CaptError(f"{path}: no section {'.'.join(keys[: i + 1])!r}")
        value = value[key]
    return value


def make_config(cls: type[T], values: dict, section: str) -> T:
    """``cls(**values)``, naming the section and key when a key is unknown."""
    if not isinstance(values, dict):
        raise CaptError(f"{PARAMS}: {section} must be a mapping, got {values!r}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise CaptError(f"{PARAMS}: unknown key(s) {', '.join(unknown)} in {section} "
                        f"(known: {', '.join(sorted(known))})")
    return cls(**values)


def stage_main(fn: Callable[..., None]) -> Callable[..., None]:
    """Decorate a stage command: log to stderr; a CaptError exits 1 with one line."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
        start = time.perf_counter()
        try:
            fn(*args, **kwargs)
        except CaptError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)
        record_stage_cost(time.perf_counter() - start)

    return wrapper


STAGE_COSTS = "CAPT_STAGE_COSTS"    # env: a JSON-lines file each finished stage appends its cost to


def record_stage_cost(seconds: float) -> None:
    """Where ``$CAPT_STAGE_COSTS`` names a file (the rehearsal sets it), append this stage's
    command, wall seconds and peak resident memory (this process, and its largest child: the
    loader workers) to it: what benchmarks/project_coco.py scales to the real datasets."""
    import json
    import os
    import resource

    path = os.environ.get(STAGE_COSTS)
    if not path:
        return
    module = Path(sys.argv[0]).with_suffix("")
    record = {"command": " ".join([f"{module.parent.name}.{module.name}", *sys.argv[1:]]),
              "seconds": round(seconds, 2),
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),   # KiB on Linux
              "peak_rss_child_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


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
    import json

    from capt.viz.curves import plot_history, write_history_csv

    write_history_csv(result["history"], Path("metrics/history") / f"{name}.csv", columns)
    plot_history(result["history"], Path("results/curves") / f"{name}.png", title)
    best_epoch = result["best"]["epoch"]
    best_row = result["history"][best_epoch - 1] if best_epoch else {}
    summary = {"best_epoch": best_epoch, "val_bleu4": best_row.get("val_bleu4"), "epochs_run": len(result["history"])}
    if best_row:               # what chose the epoch, and the other val score of that epoch
        summary["selected_on"] = next(k for k in result["best"] if k != "epoch")
        summary["val_cider"] = best_row.get("val_cider")
    out = Path("metrics/train") / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
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


BLIP_MODEL = "blip"     # the BLIP folder models/blip/, in every study beside study.models


def study_models() -> list[str]:
    """Every model the figures and the report show: the Show-Attend-Tell models, then BLIP."""
    return [*read_params("study", "models"), BLIP_MODEL]
