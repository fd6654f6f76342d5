"""End to end: DVC itself runs the DAG in a temporary copy of the repository."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.e2e


def _run(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(cwd)}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{out}"
    return out


def _ran(out: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", out))


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory) -> Path:
    """The repository's files (tracked or new, not ignored) in a fresh git repo, with tiny params."""
    dst = tmp_path_factory.mktemp("repo")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file() and not rel.startswith(("data/", "metrics/")):
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    params = yaml.safe_load((dst / "params.yaml").read_text())
    for name, sizes in (("shapes", (40, 8, 8)), ("shapes-shift", (12, 4, 6))):
        params["download"][name].update(n_train=sizes[0], n_val=sizes[1], n_test=sizes[2], image_size=64)
    params["prepare"].update(image_size=32, min_word_freq=1)
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "copy"]):
        subprocess.run(cmd, cwd=dst, check=True, capture_output=True)
    return dst


def test_dvc_repro_runs_skips_and_reruns_only_what_changed(repo_copy):
    stages = {"download@shapes", "download@shapes-shift", "prepare@shapes", "prepare@shapes-shift"}
    first = _run(["dvc", "repro"], repo_copy)
    assert stages <= _ran(first), first

    with h5py.File(repo_copy / "data/prepared/shapes/test.h5") as f:
        assert f["images"].shape == (8, 3, 32, 32)
        assert f["captions"].shape[:2] == (8, 5)
        assert len(f["references"]) == 8 * 5
    with h5py.File(repo_copy / "data/prepared/shapes-shift/train.h5") as f:
        assert f["images"].shape[0] == 12

    again = _run(["dvc", "repro"], repo_copy)
    assert _ran(again) == set(), again
    for stage in stages:
        assert f"Stage '{stage}' didn't change, skipping" in again

    params = yaml.safe_load((repo_copy / "params.yaml").read_text())
    params["prepare"]["max_len"] = 12
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = _run(["dvc", "repro"], repo_copy)
    assert _ran(changed) == {"prepare@shapes", "prepare@shapes-shift"}, changed
    with h5py.File(repo_copy / "data/prepared/shapes/train.h5") as f:
        assert f["captions"].shape[2] == 12 + 2
    assert "up to date" in _run(["dvc", "status"], repo_copy)


def test_stage_user_error_is_one_line(repo_copy):
    env = {**os.environ, "PYTHONPATH": str(repo_copy)}
    proc = subprocess.run([sys.executable, "-m", "stages.prepare", "no-such-dataset"], cwd=repo_copy,
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: data/raw/no-such-dataset/manifest.json: missing")
    assert "Traceback" not in proc.stderr
