"""The preflight stage: what later stages need, checked before the first download, one line each."""

from __future__ import annotations

import shutil
from collections import namedtuple
from pathlib import Path

import pytest
import torch
import yaml

from capt import preflight
from stages.preflight import DEVICE_PARAMS, OUT, main

Usage = namedtuple("Usage", "total used free")


def _params(tmp_path: Path, monkeypatch, *, tokenizer="simple", meteor="off", disk_gb=1, devices=None,
            processes=None, clipscore="off", clip_model="openai/clip-vit-base-patch32") -> None:
    """A params.yaml holding just what the stage reads, every device auto unless ``devices`` says."""
    params: dict = {"preflight": {"disk_gb": disk_gb},
                    "evaluate": {"tokenizer": tokenizer, "meteor": meteor, "clipscore": clipscore,
                                 "clip_model": clip_model}}
    for dotted in [*DEVICE_PARAMS, *filter(None, DEVICE_PARAMS.values())]:
        *path, key = dotted.split(".")
        node = params
        for part in path:
            node = node.setdefault(part, {})
        node.setdefault(key, (devices or {}).get(dotted, "auto") if key == "device" else (processes or {}).get(dotted, 1))
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text(yaml.safe_dump(params))


def _errors(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]


def test_met_requirements_write_the_same_marker_whatever_the_params(tmp_path, monkeypatch):
    _params(tmp_path, monkeypatch)
    main()
    first = OUT.read_text()
    _params(tmp_path, monkeypatch, tokenizer="ptb", disk_gb=0.5)            # Java is on this machine
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/java")
    main()
    assert OUT.read_text() == first                  # downstream stages see no change


def test_ptb_without_java_stops_naming_the_param_and_the_fix(tmp_path, monkeypatch, capsys):
    _params(tmp_path, monkeypatch, tokenizer="ptb", meteor="on")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(SystemExit):
        main()
    assert _errors(capsys) == [
        "error: Java is not installed (no `java` on PATH) and evaluate.tokenizer: ptb, evaluate.meteor: on needs it "
        "at evaluation, after the training: install a Java runtime (e.g. apt install default-jre-headless) or "
        "change those params"]
    assert not OUT.exists()


def test_cuda_without_a_gpu_and_a_full_disk_are_one_line_each(tmp_path, monkeypatch, capsys):
    _params(tmp_path, monkeypatch, disk_gb=100,
            devices={"teacher.train.device": "cuda", "students.train.device": "cuda"})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 10**12 - 5 * 10**9, 5 * 10**9))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "already.bin").write_bytes(b"x" * 10**6)       # what the study holds counts
    with pytest.raises(SystemExit):
        main()
    errors = _errors(capsys)
    assert len(errors) == 2
    assert errors[0].startswith("error: students.train.device, teacher.train.device are cuda, but torch (")
    assert errors[0].endswith("sees no GPU here: run on a GPU machine or set them to auto or cpu")
    assert errors[1] == (f"error: preflight.disk_gb is 100 GB and {tmp_path.resolve()} has 5.0 GB free for the "
                         "100.0 GB still to write: free some space, or lower preflight.disk_gb if the run needs less")


def test_more_processes_than_gpus_names_the_param(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert preflight.gpu_problem({"teacher.train.device": 2, "students.train.device": 1}) is None
    assert preflight.gpu_problem({"teacher.train.device": 4}) == (
        "teacher.train.device is cuda with 4 processes, one GPU each, but torch sees 2 GPU(s) here: "
        "lower its processes to 2")


def test_what_the_study_already_wrote_counts_towards_its_disk(tmp_path, monkeypatch):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.pt").write_bytes(b"x" * 3000)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "big").write_bytes(b"x" * 5000)                # not the study's
    assert preflight.bytes_under(tmp_path) == 3000
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**6, 0, 1000))
    assert preflight.disk_problem(tmp_path, 4e-6, "preflight.disk_gb") is None        # 4,000 - 3,000 <= 1,000
    assert preflight.disk_problem(tmp_path, 5e-6, "preflight.disk_gb") is not None   # 2,000 > 1,000


def test_a_bad_disk_param_is_one_line(tmp_path, monkeypatch, capsys):
    _params(tmp_path, monkeypatch, disk_gb="lots")
    with pytest.raises(SystemExit):
        main()
    assert _errors(capsys) == ['error: params.yaml: preflight.disk_gb: must be a number, got "lots"']
    _params(tmp_path, monkeypatch, disk_gb=-1)
    with pytest.raises(SystemExit):
        main()
    assert _errors(capsys) == ["error: params.yaml: preflight.disk_gb: must be >= 0, got -1"]


def test_clipscore_without_its_clip_in_the_cache_stops_before_any_download(tmp_path, monkeypatch, capsys):
    """evaluate.clipscore: on loads evaluate.clip_model at evaluation, offline from the Hugging Face
    cache: preflight says now what to fetch and where; a cache that holds it passes."""
    from tests.hub_cache import seed_clip_hub_cache

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _params(tmp_path, monkeypatch, clipscore="on")
    with pytest.raises(SystemExit):
        main()
    (line,) = _errors(capsys)
    assert line.startswith("error: evaluate.clip_model: openai/clip-vit-base-patch32 is not in the Hugging Face cache")
    assert str(cache) in line and "hf download openai/clip-vit-base-patch32" in line and not OUT.exists()
    seed_clip_hub_cache(cache, ["a", "red", "square"])
    main()
    assert OUT.exists()
