"""Faults, through the real entry points: a full disk or a file-size limit ends a write with one
line naming the file, and the previous output stays as it was (capt.files); a param edited while a
stage runs fails the stage (tests/test_stage_helpers.py, and under DVC tests/test_pipeline.py)."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

# What each writer of capt.files writes under a file-size limit of LIMIT bytes: more than that.
WRITERS = {
    "json": "from capt.files import write_json; write_json(OUT, {'x': 'y' * 5000})",
    "checkpoint": "import torch; from capt.models.checkpoint import save_checkpoint; "
                  "save_checkpoint({'w': torch.zeros(5000)}, OUT)",
    "figure": "import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt; "
              "from capt.files import atomic_output; fig = plt.figure(figsize=(8, 8)); plt.plot(range(100)); "
              "exec('with atomic_output(OUT) as tmp: fig.savefig(tmp)')",
    "maps": "import numpy as np; from capt.eval.maps import write_word_maps; "
            "write_word_maps(OUT, {1: (['a'] * 400, np.random.rand(400, 64))}, 'attention')",
}
LIMIT = 2000


def _limited(limit: int):
    def set_limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)          # as stage_main does: EFBIG, not a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return set_limit


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_a_write_past_a_file_size_limit_names_the_file_and_keeps_the_previous_one(writer, tmp_path):
    suffix = {"json": ".json", "checkpoint": ".pt", "figure": ".png", "maps": ".h5"}[writer]
    out = tmp_path / f"out{suffix}"
    out.write_bytes(b"the previous output")
    code = ("import sys; from pathlib import Path; from capt.errors import CaptError; OUT = Path(sys.argv[1])\n"
            f"try:\n    {WRITERS[writer]}\nexcept CaptError as e:\n    print(f'error: {{e}}'); sys.exit(1)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(out)], cwd=REPO, capture_output=True, text=True,
                          preexec_fn=_limited(LIMIT), env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert proc.stdout.strip() == f"error: {out}: file too large" or (
        writer == "checkpoint" and proc.stdout.startswith(f"error: {out}: ")), proc.stdout
    assert out.read_bytes() == b"the previous output"
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]        # no temporary file left


def test_a_stage_past_a_file_size_limit_stops_in_one_line_and_keeps_its_previous_output(tmp_path):
    """The preflight stage writes data/preflight.txt: under a limit smaller than it, one error line
    naming the file and the OS's reason, exit 1, no traceback, the previous marker intact."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data/preflight.txt").write_text("old")
    params = {"preflight": {"disk_gb": 0.001}, "evaluate": {"tokenizer": "simple", "meteor": "off",
                                                            "clipscore": "off", "clip_model": "x"}}
    from stages.preflight import DEVICE_PARAMS
    for dotted in [*DEVICE_PARAMS, *filter(None, DEVICE_PARAMS.values())]:
        *path, key = dotted.split(".")
        node = params
        for part in path:
            node = node.setdefault(part, {})
        node[key] = "cpu" if key == "device" else 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.run([sys.executable, "-m", "stages.preflight"], cwd=tmp_path, capture_output=True, text=True,
                          preexec_fn=_limited(20), env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == "error: data/preflight.txt: file too large"
    assert (tmp_path / "data/preflight.txt").read_text() == "old"
