"""What a run will need hours later, checked before its first stage: Java, GPUs, disk.

A COCO study trains for hours before it evaluates. Java (the PTB tokenizer, METEOR), a GPU where
a stage asks for ``cuda`` and room for the data it will write are each needed by a later stage;
each check here says in one line what is missing, which param needs it and what to change, so
the run stops in seconds instead of after the training. Every function returns that line, or
None when the requirement is met.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

# What a study already holds towards its disk total: a rerun needs only the rest.
STUDY_DIRS = ("data", "models", "checkpoints", "metrics", "results", ".dvc/cache")


def java_problem(needed_by: list[str]) -> str | None:
    """``needed_by``: the params that need Java (e.g. ``evaluate.tokenizer: ptb``)."""
    if not needed_by or shutil.which("java") is not None:
        return None
    return (f"Java is not installed (no `java` on PATH) and {', '.join(needed_by)} needs it at evaluation, "
            "after the training: install a Java runtime (e.g. apt install default-jre-headless) or change "
            f"{'that param' if len(needed_by) == 1 else 'those params'}")


def gpu_problem(needed_by: dict[str, int]) -> str | None:
    """``needed_by``: param -> the GPUs it needs (its stage's process count), for each device
    param set to ``cuda``."""
    if not needed_by:
        return None
    names = ", ".join(sorted(needed_by))
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        return (f"{names} {'is' if len(needed_by) == 1 else 'are'} cuda, but torch ({torch.__version__}, "
                f"{build}) sees no GPU here: run on a GPU machine or set {'it' if len(needed_by) == 1 else 'them'} "
                "to auto or cpu")
    have = torch.cuda.device_count()
    short = {param: n for param, n in needed_by.items() if n > have}
    if short:
        param, n = max(short.items(), key=lambda kv: kv[1])
        return (f"{param} is cuda with {n} processes, one GPU each, but torch sees {have} GPU(s) here: "
                f"lower its processes to {have}")
    return None


def bytes_under(root: Path, dirs: tuple[str, ...] = STUDY_DIRS) -> int:
    """The bytes of the files under ``root/<dir>`` for each of ``dirs`` (links not followed)."""
    total = 0
    for d in dirs:
        for folder, _, files in os.walk(Path(root) / d):
            for name in files:
                path = Path(folder) / name
                if not path.is_symlink():
                    total += path.stat().st_size
    return total


def disk_problem(root: Path, need_gb: float, param: str) -> str | None:
    """Room under ``root`` for a study that writes ``need_gb`` GB in all (``param``): what it
    already holds there (STUDY_DIRS) counts, what is left must be free."""
    missing = need_gb * 1e9 - bytes_under(root)
    free = shutil.disk_usage(root).free
    if missing <= free:
        return None
    return (f"{param} is {need_gb:g} GB and {Path(root).resolve()} has {free / 1e9:.1f} GB free for the "
            f"{missing / 1e9:.1f} GB still to write: free some space, or lower {param} if the run needs less")


def clip_problem(clip_model: str | None, param: str) -> str | None:
    """``clip_model``: the CLIP a CLIPScore will load (a folder, or a repo id in the Hugging Face
    cache), None when CLIPScore is off; ``param`` names it. The evaluation's own one-line error
    (capt.eval.clipscore: what to fetch, and where to put it) when the weights are not there."""
    if clip_model is None or Path(clip_model).is_dir():
        return None
    from capt.errors import CaptError
    from capt.eval.clipscore import cached_clip       # transformers: only where CLIPScore is on

    try:
        cached_clip(clip_model)
    except CaptError as e:
        return f"{param}: {e}"
    return None
