"""A copy of the repository in which DVC runs the DAG: what a fresh clone holds, in a new git repo."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# What the DAG writes: a copy starts without any of it.
OUTPUT_DIRS = ("data/", "metrics/", "models/", "results/", "checkpoints/")


def copy_repository(dst: Path, write_params: Callable[[Path], None]) -> Path:
    """The repository's files (tracked or new, not ignored; none of the DAG's outputs, no
    dvc.lock: nothing has run) in a fresh git repo at ``dst``. ``write_params(dst)`` writes its
    params.yaml first; DVC then reads that file as it is (Hydra off: `dvc exp run -S` applies
    overrides there instead of recomposing it from conf/, which tests/test_profiles.py covers)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, files):
        if (REPO / rel).is_file() and not rel.startswith(OUTPUT_DIRS) and rel != "dvc.lock":
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dst / rel)
    write_params(dst)
    config = dst / ".dvc" / "config"
    config.write_text(config.read_text().replace("enabled = true", "enabled = false"))
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=capt test", "-c", "user.email=test@capt.invalid", "commit", "-qm", "copy"]):
        subprocess.run(cmd, cwd=dst, check=True, capture_output=True)
    return dst
