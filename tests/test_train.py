"""The shared training loop: resume equals an uninterrupted run, NaN stops, runs repeat exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from capt.config import build_config
from capt.data.vocab import SPECIALS, Vocabulary
from capt.errors import CaptError
from capt.models.decoder import AttentionDecoder, DecoderConfig
from capt.train.captioner import CaptionerTask, flatten_captions
from capt.train.loop import TrainConfig, fit

WORDS = ["red", "blue", "circle", "square", "a"]
VOCAB = Vocabulary([*SPECIALS, *WORDS])


class TinyFeatures(Dataset):
    """Random features whose first cell says which colour/shape the captions name."""

    def __init__(self, n=24, C=2, P=4, D=6, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.features = torch.randn(n, P, D, generator=g)
        colour = torch.randint(0, 2, (n,), generator=g)
        shape = torch.randint(0, 2, (n,), generator=g)
        self.features[:, 0, 0] = colour * 3.0
        self.features[:, 0, 1] = shape * 3.0
        w = VOCAB.word_map
        self.captions = torch.zeros(n, C, 6, dtype=torch.long)
        self.refs = {}
        for i in range(n):
            words = ["a", ["red", "blue"][colour[i]], ["circle", "square"][shape[i]]]
            self.captions[i, :] = torch.tensor(VOCAB.encode(words, max_len=4))
            self.refs[i] = [" ".join(words)] * C
        self.lengths = torch.full((n, C), 5)

    def __len__(self):
        return len(self.features)

    def __getitem__(self, i):
        return {"features": self.features[i], "captions": self.captions[i], "lengths": self.lengths[i],
                "image_id": torch.tensor(i), "index": torch.tensor(i)}


CFG = TrainConfig(epochs=3, batch_size=8, lr=0.01, early_stop=10, max_decode_len=5, seed=3)


def _task(ds, cfg=CFG, seed=0):
    torch.manual_seed(seed)
    dec = AttentionDecoder(DecoderConfig(embed_dim=8, attention_dim=8, decoder_dim=12, dropout=0.3), len(VOCAB), 6)
    return CaptionerTask(dec, VOCAB, ds, ds.refs, cfg)


def _weights(task):
    return {k: v.clone() for k, v in task.model.state_dict().items()}


def test_flatten_captions_expands_each_image_over_its_captions():
    f = torch.arange(2 * 3 * 1, dtype=torch.float).view(2, 3, 1)
    caps = torch.arange(2 * 2 * 5).view(2, 2, 5)
    lens = torch.tensor([[3, 4], [2, 3]])
    ff, cc, ll = flatten_captions(f, caps, lens)
    assert torch.equal(ff[1], f[0]) and torch.equal(ff[2], f[1])        # image 0, 0, 1, 1
    assert cc.shape == (4, 4) and torch.equal(cc[3], caps[1, 1, :4]) and ll.tolist() == [3, 4, 2, 3]


def test_fit_learns_and_repeats_exactly(tmp_path):
    ds = TinyFeatures()
    a, b = _task(ds), _task(ds)
    ra = fit(a, ds, CFG, tmp_path / "a", progress=False)
    rb = fit(b, ds, CFG, tmp_path / "b", progress=False)
    assert ra["history"] == rb["history"]
    wa, wb = _weights(a), _weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    h = ra["history"]
    assert h[-1]["train_loss"] < h[0]["train_loss"]
    assert {"val_bleu4", "val_loss", "val_top5", "train_top5", "lr"} <= set(h[0])
    assert (tmp_path / "a" / "best.pt").exists() and ra["best"]["epoch"] >= 1


def test_loader_workers_change_nothing(tmp_path):
    """Two worker processes read the same order as the main process: seeds and order come from
    (seed, epoch), not from the global RNG or the worker count."""
    import dataclasses

    ds = TinyFeatures()
    inline, workers = _task(ds), _task(ds)
    ra = fit(inline, ds, CFG, tmp_path / "inline", progress=False)
    rb = fit(workers, ds, dataclasses.replace(CFG, num_workers=2), tmp_path / "workers", progress=False)
    assert ra["history"] == rb["history"]
    wa, wb = _weights(inline), _weights(workers)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_loader_batches_that_do_not_fit_in_shared_memory_fail_before_training(tmp_path, monkeypatch):
    """Worker batches wait in /dev/shm (a container's is 64 MB by default): num_workers x
    prefetch_factor global batches of the first item's size; too many fail in one line naming the
    params and the container's fix, before any step; prefetch_factor reaches the DataLoader."""
    import dataclasses
    import shutil
    from collections import namedtuple

    from capt.train import loop

    ds = TinyFeatures()
    item_bytes = sum(v.numel() * v.element_size() for v in ds[0].values())       # 6 x 4 x 4 features, ...
    cfg = dataclasses.replace(CFG, num_workers=2, prefetch_factor=2)
    assert loop.shared_memory_needed(ds, cfg) == 2 * 2 * 8 * item_bytes
    shm = tmp_path / "shm"
    shm.mkdir()
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(2**26, 2**26 - 2 * 2 * 8 * item_bytes + 1,
                                                                     2 * 2 * 8 * item_bytes - 1))
    with pytest.raises(CaptError, match=rf"^{shm}: 0 MB free, and train.num_workers 2 x train.prefetch_factor 2 "
                                        r"batches of 8 items \(0 MB\) wait there; lower them, or give the "
                                        r"container more shared memory \(docker run --shm-size="):
        loop.check_shared_memory(ds, cfg, shm)
    loop.check_shared_memory(ds, dataclasses.replace(cfg, prefetch_factor=1), shm)     # half of it fits
    loop.check_shared_memory(ds, dataclasses.replace(cfg, num_workers=0), shm)         # no workers, no shm
    monkeypatch.setattr(loop, "check_shared_memory", lambda *a: (_ for _ in ()).throw(CaptError("checked")))
    with pytest.raises(CaptError, match="checked"):                                    # fit checks first
        fit(_task(ds), ds, cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    from capt.train.distributed import Runtime
    loader = loop._epoch_loader(ds, cfg, 1, Runtime(0, 1, torch.device("cpu")))
    assert (loader.num_workers, loader.prefetch_factor) == (2, 2)
    with pytest.raises(CaptError, match=r"^params.yaml: teacher.train.prefetch_factor: must be >= 1, got 0$"):
        build_config(TrainConfig, {**dataclasses.asdict(cfg), "prefetch_factor": 0}, "teacher.train")


def test_fp16_native_cells_train_exactly_as_the_float32_cells_pooled_beforehand(tmp_path):
    """A feature cache's batches: fp16 cells on a native 4 x 4 grid, through loader workers as they
    are; the task casts them and pools them to 2 x 2 on the device. The run is the very run on
    float32 features pooled before training."""
    import dataclasses

    from capt.models.encoder import pool_cells

    native = TinyFeatures(P=16)
    native.features = native.features.half()                                   # as the cache stores them
    pooled = TinyFeatures(P=16)
    pooled.features = pool_cells(native.features.float(), (4, 4), 2)         # (n, 4, 6) float32
    cfg = dataclasses.replace(CFG, epochs=2, num_workers=2)
    torch.manual_seed(0)
    dec = AttentionDecoder(DecoderConfig(embed_dim=8, attention_dim=8, decoder_dim=12, dropout=0.3), len(VOCAB), 6)
    cached = CaptionerTask(dec, VOCAB, native, native.refs, cfg, feature_grid=(4, 4), encoded_size=2)
    assert native[0]["features"].dtype == torch.float16
    first = torch.utils.data.default_collate([native[i] for i in range(2)])
    assert cached.cached_features(first).dtype == torch.float32 and cached.cached_features(first).shape == (2, 4, 6)
    ra = fit(cached, native, cfg, tmp_path / "native", progress=False)
    rb = fit(_task(pooled, cfg), pooled, cfg, tmp_path / "pooled", progress=False)
    assert ra["history"] == rb["history"]
    with pytest.raises(ValueError, match="go together"):
        CaptionerTask(dec, VOCAB, native, native.refs, cfg, feature_grid=(4, 4))


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    ds = TinyFeatures()
    full = _task(ds)
    fit(full, ds, CFG, tmp_path / "full", progress=False)

    interrupted = _task(ds)
    out = fit(interrupted, ds, CFG, tmp_path / "cut", progress=False, stop_after_steps=5)  # mid epoch 2 (3 steps/epoch)
    assert out["stopped"]
    resumed = _task(ds, seed=99)                    # a fresh process: other initial weights, other RNG
    result = fit(resumed, ds, CFG, tmp_path / "cut", progress=False)
    assert [r["epoch"] for r in result["history"]] == [1, 2, 3]
    wf, wr = _weights(full), _weights(resumed)
    assert all(torch.equal(wf[k], wr[k]) for k in wf), "resumed run differs from the uninterrupted one"


def test_other_configuration_does_not_resume(tmp_path):
    ds = TinyFeatures()
    fit(_task(ds), ds, CFG, tmp_path, fingerprint="a", progress=False, stop_after_steps=4)
    result = fit(_task(ds), ds, CFG, tmp_path, fingerprint="b", progress=False)
    assert [r["epoch"] for r in result["history"]] == [1, 2, 3]


def test_nan_loss_stops_naming_epoch_and_step(tmp_path):
    ds = TinyFeatures()
    ds.features[5:, 1, 2] = float("nan")
    with pytest.raises(CaptError, match=r"loss is nan at epoch 1, step \d"):
        fit(_task(ds), ds, CFG, tmp_path, progress=False)


def test_a_failed_checkpoint_write_keeps_the_previous_file(tmp_path, monkeypatch):
    """A full disk in the middle of torch.save: the previous good checkpoint stays, no .tmp is left."""
    import errno

    from capt.errors import CaptError

    from capt.models.checkpoint import load_checkpoint, save_checkpoint

    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1, "w": torch.ones(3)}, path)
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        real_save({"half": torch.zeros(1000)}, f)           # some bytes reach the disk, then it is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CaptError) as info:                   # one line: the file and the OS's reason
        save_checkpoint({"epoch": 2, "w": torch.zeros(3)}, path)
    assert str(info.value) == f"{path}: no space left on device"
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def _train_in_process(ckpt: str, out: str, step_delay: float) -> None:
    """The body of a training subprocess: fit the tiny task, save the final weights."""
    import time

    ds = TinyFeatures()
    task = _task(ds)
    loss = task.loss

    def slow_loss(batch):
        time.sleep(step_delay)          # room for the parent to kill it mid-epoch
        return loss(batch)

    task.loss = slow_loss
    fit(task, ds, CFG, Path(ckpt), progress=False)
    torch.save(_weights(task), out)


def test_sigkilled_training_process_resumes_to_the_same_weights(tmp_path):
    """A real training subprocess killed with SIGKILL after its first checkpoint, then run again,
    ends with exactly the weights of a run never killed."""
    import signal
    import subprocess
    import sys
    import time

    def start(ckpt, out, delay):
        code = f"from tests.test_train import _train_in_process; _train_in_process({str(ckpt)!r}, {str(out)!r}, {delay})"
        return subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).parents[1])

    assert start(tmp_path / "full", tmp_path / "full.pt", 0.0).wait(timeout=120) == 0
    victim = start(tmp_path / "cut", tmp_path / "cut.pt", 0.3)
    deadline = time.time() + 120
    while not (tmp_path / "cut" / "last.pt").exists():           # epoch 1 checkpointed: kill it in epoch 2
        assert victim.poll() is None and time.time() < deadline, "the training process ended early"
        time.sleep(0.05)
    time.sleep(0.4)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=30) == -signal.SIGKILL and not (tmp_path / "cut.pt").exists()
    assert torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["epoch"] < CFG.epochs
    assert start(tmp_path / "cut", tmp_path / "cut.pt", 0.0).wait(timeout=120) == 0
    full, resumed = (torch.load(tmp_path / f, weights_only=True) for f in ("full.pt", "cut.pt"))
    assert all(torch.equal(full[k], resumed[k]) for k in full)


def test_reduced_precision_on_a_cpu_only_where_it_has_bf16_instructions(monkeypatch, caplog):
    from capt.train import loop

    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    monkeypatch.setattr(loop, "cpu_has_native_bf16", lambda: False)
    assert loop.autocast_dtype_for("bf16", cpu) is None and loop.autocast_dtype_for("fp16", cpu) is None
    assert "training in fp32" in caplog.text
    assert loop.autocast_dtype_for("bf16", gpu) is torch.bfloat16 and loop.autocast_dtype_for("fp16", gpu) is torch.float16
    monkeypatch.setattr(loop, "cpu_has_native_bf16", lambda: True)
    assert loop.autocast_dtype_for("bf16", cpu) is torch.bfloat16
    assert loop.autocast_dtype_for("fp32", cpu) is None


def test_bf16_training_runs_the_loss_under_autocast_where_the_cpu_has_it(tmp_path, monkeypatch):
    from capt.train import loop

    ds = TinyFeatures()
    seen = []
    monkeypatch.setattr(loop, "cpu_has_native_bf16", lambda: True)   # bf16 autocast itself works on any CPU
    task = _task(ds, TrainConfig(**{**CFG.__dict__, "epochs": 1, "precision": "bf16"}))
    loss_fn = task.loss
    monkeypatch.setattr(task, "loss", lambda batch: (seen.append(torch.get_autocast_dtype("cpu")
                                                                 if torch.is_autocast_enabled("cpu") else None),
                                                     loss_fn(batch))[1])
    fit(task, ds, task.cfg, tmp_path / "ckpt", progress=False)
    assert seen and set(seen) == {torch.bfloat16}


# ----------------------------------------------------------------------------- one plateau rule

from capt.train.loop import Plateau  # noqa: E402


def _scripted(ds, scores, cfg):
    """The tiny task, its validation BLEU-4 read from ``scores`` epoch after epoch."""
    task = _task(ds, cfg)
    script = iter(scores)
    task.validate = lambda: {"bleu4": next(script), "loss": 0.0}
    return task


def test_plateau_decays_after_exactly_lr_patience_bad_epochs_and_equal_counts_as_bad():
    plateau = Plateau(lr_patience=2)
    steps = [plateau.step(e, v) for e, v in enumerate([0.1, 0.2, 0.2, 0.1, 0.2, 0.3, 0.3, 0.3], start=1)]
    assert steps == [(True, False), (True, False), (False, False), (False, True),     # 2 bad: decay
                     (False, False), (True, False), (False, False), (False, True)]
    assert (plateau.best, plateau.best_epoch, plateau.bad, plateau.bad_since_decay) == (0.3, 6, 2, 0)
    assert Plateau.replay(2, [0.1, 0.2, 0.2, 0.1, 0.2, 0.3, 0.3, 0.3]) == plateau


def test_fit_decays_the_rate_right_after_the_second_bad_epoch(tmp_path):
    """lr_patience 2: the rate of epoch 5 is decayed (epochs 3 and 4 were bad, 3 only equal to the
    best), that of epoch 8 too (6 and 7 equal to epoch 5's best); the best epoch is 5, not 7."""
    import dataclasses

    ds = TinyFeatures()
    cfg = dataclasses.replace(CFG, epochs=8, lr_patience=2, lr_decay=0.5, early_stop=10)
    result = fit(_scripted(ds, [0.1, 0.2, 0.2, 0.1, 0.3, 0.3, 0.3, 0.3], cfg), ds, cfg, tmp_path, progress=False)
    lrs = [row["lr"] for row in result["history"]]
    assert lrs == pytest.approx([0.01, 0.01, 0.01, 0.01, 0.005, 0.005, 0.005, 0.0025])
    assert result["best"] == {"bleu4": 0.3, "epoch": 5}


def test_equal_scores_stop_training_early_and_keep_the_first_best(tmp_path):
    import dataclasses

    ds = TinyFeatures()
    cfg = dataclasses.replace(CFG, epochs=10, lr_patience=5, early_stop=3)
    result = fit(_scripted(ds, [0.1, 0.2, 0.2, 0.2, 0.2, 0.5], cfg), ds, cfg, tmp_path, progress=False)
    assert [row["epoch"] for row in result["history"]] == [1, 2, 3, 4, 5]       # 3 equal epochs: stop
    assert result["best"] == {"bleu4": 0.2, "epoch": 2}


def test_resumed_run_keeps_counting_bad_epochs(tmp_path):
    """Killed in epoch 4 after one bad epoch: the resumed run decays after epoch 4 as the
    uninterrupted run does (the count is replayed from the history)."""
    import dataclasses

    ds = TinyFeatures()
    cfg = dataclasses.replace(CFG, epochs=5, lr_patience=2, lr_decay=0.5, early_stop=10)
    scores = [0.1, 0.2, 0.2, 0.1, 0.1]
    full = fit(_scripted(ds, scores, cfg), ds, cfg, tmp_path / "full", progress=False)
    fit(_scripted(ds, scores, cfg), ds, cfg, tmp_path / "cut", progress=False, stop_after_steps=10)  # in epoch 4
    resumed = fit(_scripted(ds, scores[3:], cfg), ds, cfg, tmp_path / "cut", progress=False)
    assert [r["lr"] for r in resumed["history"]] == [r["lr"] for r in full["history"]] \
        == pytest.approx([0.01, 0.01, 0.01, 0.01, 0.005])


def test_lr_patience_must_be_positive():
    with pytest.raises(CaptError, match=r"^params.yaml: students.train.lr_patience: must be >= 1, got 0$"):
        build_config(TrainConfig, {"lr_patience": 0}, "students.train")


@pytest.mark.parametrize("values, message", [
    ({"lr": -1}, "teacher.train.lr: must be > 0, got -1"),
    ({"lr": "fast"}, 'teacher.train.lr: must be a number, got "fast"'),
    ({"epochs": "three"}, 'teacher.train.epochs: must be an integer, got "three"'),
    ({"epochs": 2.5}, "teacher.train.epochs: must be an integer, got 2.5"),
    ({"epochs": True}, "teacher.train.epochs: must be an integer, got true"),
    ({"lr_decay": 0}, "teacher.train.lr_decay: must be > 0, got 0"),
    ({"grad_clip": -5}, "teacher.train.grad_clip: must be >= 0, got -5"),
    ({"device": "gpu"}, "teacher.train.device: must be one of 'auto', 'cpu' or 'cuda', got \"gpu\""),
    ({"batch_size": 30, "processes": 4}, "teacher.train: batch_size 30 (the global batch) must divide evenly over "
                                         "processes 4"),
    ({"epoch": 3}, "teacher.train.epoch: unknown key; did you mean teacher.train.epochs?"),
])
def test_train_config_names_each_wrong_value_by_its_full_path(values, message):
    with pytest.raises(CaptError) as e:
        build_config(TrainConfig, values, "teacher.train")
    assert str(e.value) == f"params.yaml: {message}"


def test_select_on_cider_chooses_the_epoch_by_cider_not_bleu4(tmp_path):
    """On `shapes` BLEU-4 can peak in the first epoch, when captions are generic and CIDEr-D is
    low: with select_on cider the rule reads CIDEr-D alone, for the best epoch as for the decay."""
    import dataclasses

    ds = TinyFeatures()
    cfg = dataclasses.replace(CFG, epochs=4, lr_patience=1, lr_decay=0.5, early_stop=10, select_on="cider")
    task = _scripted(ds, [0.50, 0.40, 0.45, 0.44], cfg)                  # BLEU-4: best at epoch 1
    ciders = iter([0.4, 1.0, 1.3, 1.2])                                  # CIDEr-D: best at epoch 3
    bleus = task.validate
    task.validate = lambda: {**bleus(), "cider": next(ciders)}
    result = fit(task, ds, cfg, tmp_path, progress=False)
    assert result["best"] == {"cider": 1.3, "epoch": 3}
    assert [row["lr"] for row in result["history"]] == pytest.approx([0.01, 0.01, 0.01, 0.01])   # no bad epoch before 4
    with pytest.raises(CaptError, match=r"select_on: must be one of 'bleu4' or 'cider', got \"meteor\"$"):
        build_config(TrainConfig, {"select_on": "meteor"}, "teacher.train")


def test_a_checkpoint_is_the_same_bytes_whoever_writes_it(tmp_path):
    """DVC hashes the model files: torch.save records the name it wrote to, so the temporary name
    must not depend on the process (two processes writing the same weights write the same bytes)."""
    import subprocess
    import sys

    code = ("import sys, torch; from capt.models.checkpoint import save_checkpoint; "
            "torch.manual_seed(0); save_checkpoint({'w': torch.randn(8)}, sys.argv[1])")
    repo = Path(__file__).resolve().parents[1]
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        subprocess.run([sys.executable, "-c", code, str(tmp_path / name / "model.pt")], cwd=repo, check=True)
    assert (tmp_path / "a/model.pt").read_bytes() == (tmp_path / "b/model.pt").read_bytes()
