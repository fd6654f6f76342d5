"""What the stages share: the run fingerprint that guards resuming."""

from __future__ import annotations

from pathlib import Path

from stages._training import run_fingerprint


def test_fingerprint_changes_with_params_inputs_and_code(tmp_path):
    code = tmp_path / "code"
    (code / "pkg").mkdir(parents=True)
    (code / "pkg" / "loop.py").write_text("lr = 1\n")
    data = tmp_path / "word_map.json"
    data.write_text("{}")
    base = run_fingerprint({"lr": 1}, data, code=(code,))
    assert run_fingerprint({"lr": 1}, data, code=(code,)) == base
    assert run_fingerprint({"lr": 2}, data, code=(code,)) != base
    data.write_text('{"a": 1}')
    assert run_fingerprint({"lr": 1}, data, code=(code,)) != base
    data.write_text("{}")
    (code / "pkg" / "loop.py").write_text("lr = 2\n")          # a code change: no resuming old checkpoints
    assert run_fingerprint({"lr": 1}, data, code=(code,)) != base
    (code / "pkg" / "loop.py").write_text("lr = 1\n")
    (code / "pkg" / "notes.txt").write_text("not code")
    assert run_fingerprint({"lr": 1}, data, code=(code,)) == base
