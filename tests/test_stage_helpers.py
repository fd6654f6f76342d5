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


def test_a_param_edited_while_the_stage_ran_fails_it_naming_the_param(tmp_path, monkeypatch, capsys):
    """DVC records params.yaml as it is after a stage: a value edited while the stage ran would be
    written into dvc.lock beside outputs made with the old one. The stage fails instead, naming
    every param it read that changed (and nothing it did not read)."""
    import pytest
    import yaml

    from stages._common import read_params, stage_main

    monkeypatch.chdir(tmp_path)
    params = {"evaluate": {"beam_size": 3, "max_len": 20}, "report": {"timing_images": 8}, "other": {"x": 1}}
    Path("params.yaml").write_text(yaml.safe_dump(params))

    @stage_main
    def stage(edit: dict) -> None:
        read_params("evaluate")
        read_params("report", "timing_images")
        Path("params.yaml").write_text(yaml.safe_dump(edit))          # someone edits params.yaml meanwhile
        Path("out.txt").write_text("done")

    stage({**params, "other": {"x": 2}})                               # a section it did not read: fine
    assert capsys.readouterr().err.count("error:") == 0
    edited = {**params, "evaluate": {"beam_size": 2, "max_len": 20}}
    with pytest.raises(SystemExit) as exit_:
        stage(edited)
    assert exit_.value.code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: params.yaml: evaluate changed while this stage ran; its outputs were made with the values it read "
        "at its start: run it again")
    Path("params.yaml").write_text(yaml.safe_dump(edited))
    with pytest.raises(SystemExit):
        stage({"evaluate": {"beam_size": 2, "max_len": 20}})             # report.timing_images gone: a change too
    assert "report.timing_images changed" in capsys.readouterr().err
