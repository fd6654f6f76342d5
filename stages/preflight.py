"""Stage preflight: what later stages will need, checked before the first one runs.

Params: ``preflight.disk_gb`` and the params of later stages that make a requirement:
``evaluate.tokenizer`` (ptb) and ``evaluate.meteor`` (on) need Java, each ``*.device`` set to
cuda needs a GPU per process, ``evaluate.clipscore`` (on) needs ``evaluate.clip_model``'s weights
(offline: in the Hugging Face cache) and ``preflight.disk_gb`` needs room in the workspace
(capt.preflight).
Every download@ depends on its output, so in a fresh clone it runs first; each missing requirement
is one line of the error. Writes ``data/preflight.txt``, the same text whatever the params, so a
change to one of them reruns this check and nothing after it.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import typer

from capt.config import CHECKED, NonNegative, with_config
from capt.errors import CaptError
from capt.preflight import clip_problem, disk_problem, gpu_problem, java_problem
from stages._common import read_config, read_params, stage_main, write_atomic

log = logging.getLogger("stages.preflight")

OUT = Path("data/preflight.txt")
# Each device param of a later stage, and the param with its process count (None: one process).
DEVICE_PARAMS = {
    "pretrain.teacher.device": "pretrain.teacher.processes",
    "pretrain.students.device": "pretrain.students.processes",
    "features.device": None,
    "teacher.train.device": "teacher.train.processes",
    "teacher_captions.device": None,
    "students.train.device": "students.train.processes",
    "blip.train.device": "blip.train.processes",
    "baselines.device": None,
    "evaluate.device": None,
}


@with_config(CHECKED)
@dataclass(frozen=True)
class PreflightConfig:
    disk_gb: NonNegative = 1.0  # what the whole study writes to disk, DVC's cache included


def _param(dotted: str):
    return read_params(*dotted.split("."))


@stage_main
def main() -> None:
    cfg = read_config(PreflightConfig, "preflight")
    java = [f"evaluate.tokenizer: {_param('evaluate.tokenizer')}"] if _param("evaluate.tokenizer") == "ptb" else []
    if _param("evaluate.meteor") in ("on", True):
        java.append("evaluate.meteor: on")
    gpus = {device: _param(processes) if processes else 1
            for device, processes in DEVICE_PARAMS.items() if _param(device) == "cuda"}
    clip = _param("evaluate.clip_model") if _param("evaluate.clipscore") in ("on", True) else None
    problems = [p for p in (java_problem(java), gpu_problem(gpus), clip_problem(clip, "evaluate.clip_model"),
                            disk_problem(Path("."), cfg.disk_gb, "preflight.disk_gb")) if p]
    if problems:
        for p in problems[:-1]:                    # one line each, the last as the stage's error
            print(f"error: {p}", file=sys.stderr)
        raise CaptError(problems[-1])
    write_atomic(OUT, "the run-time requirements of params.yaml were met (stages/preflight.py)\n")
    log.info("Java for %s, GPUs for %s, CLIP weights for %s, %g GB of disk: met", ", ".join(java) or "nothing",
             ", ".join(f"{k} ({n})" for k, n in gpus.items()) or "nothing", clip or "nothing", cfg.disk_gb)


if __name__ == "__main__":
    typer.run(main)
