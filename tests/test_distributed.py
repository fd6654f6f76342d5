"""DistributedDataParallel under torchrun (Gloo on the CPU): every process ends with the same
weights, and they match one process trained on the same global batch."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import RandomSampler

from capt.errors import CaptError
from capt.models.decoder import AttentionDecoder, DecoderConfig
from capt.models.encoder import Encoder, EncoderConfig
from capt.train.captioner import CaptionerTask
from capt.train.distributed import ShardSampler, derive_seed
from capt.train.loop import TrainConfig, fit
from tests.test_train import VOCAB, TinyFeatures

ROOT = Path(__file__).parents[1]
# 24 images, a global batch of 8: 3 steps an epoch, 4 images a process a step with 2 processes.
DDP_CFG = TrainConfig(epochs=2, batch_size=8, lr=0.01, early_stop=10, max_decode_len=5, seed=3, device="cpu")


def _task(cfg: TrainConfig, ds: TinyFeatures | None = None) -> CaptionerTask:
    torch.manual_seed(0)
    # No dropout: one process and two draw their dropout masks differently.
    dec = AttentionDecoder(DecoderConfig(embed_dim=8, attention_dim=8, decoder_dim=12, dropout=0.0), len(VOCAB), 6)
    ds = ds or TinyFeatures()
    return CaptionerTask(dec, VOCAB, ds, ds.refs, cfg)


class VaryingLengths(TinyFeatures):
    """Captions of 1, 2 or 3 words by image: the two processes' shards of a global batch hold
    different numbers of tokens."""

    def __init__(self):
        super().__init__()
        for i in range(len(self)):
            words = self.refs[i][0].split()[: 1 + i % 3]
            self.captions[i, :] = torch.tensor(VOCAB.encode(words, max_len=4))
            self.lengths[i] = len(words) + 2
            self.refs[i] = [" ".join(words)] * len(self.refs[i])


def _varying_task(cfg: TrainConfig) -> CaptionerTask:
    return _task(cfg, VaryingLengths())


# The students' setting for any process count: BatchNorm statistics frozen (capt.train.distributed).
FROZEN_BN_CFG = dataclasses.replace(DDP_CFG, batchnorm="frozen")


def _student_task(cfg: TrainConfig):
    """A student as distill trains one: a ResNet-18 trunk whose layer2 is fine-tuned (BatchNorms
    included), word-level KD from a teacher decoder and encoder KD on the teacher's features."""
    from capt.train.distill import DistillConfig, DistillTask
    from tests.test_distill import VOCAB as WORDS, TinyImages, _setup

    task, ds, teacher_dec, _ = _setup(DistillConfig(beta=0.5, temperature=5.0, w_enc=1.0, w_dec=1.0))
    ds = TinyImages(Encoder(EncoderConfig(name="resnet18", stages=2, encoded_size=2)).eval(), n=16)
    return DistillTask(task.encoder, task.decoder, teacher_dec, ds.features.shape[-1], task.kd, vocab=WORDS,
                       val_set=ds, val_references=ds.refs, cfg=cfg)


TASKS = {"decoder": _task, "lengths": _varying_task, "student": _student_task}


def _train_one_rank(out: Path, kind: str) -> None:
    """The body of each torchrun process: join the group, fit, save this rank's weights."""
    from capt.train.distributed import start_runtime, stop_runtime

    runtime = start_runtime("cpu")
    cfg = dataclasses.replace(FROZEN_BN_CFG if kind == "student" else DDP_CFG, processes=runtime.world_size)
    task = TASKS[kind](cfg)
    result = fit(task, task.val_set, cfg, out / "ckpt", progress=False, runtime=runtime)
    torch.save({"weights": task.model.state_dict(), "history": result["history"]}, out / f"rank{runtime.rank}.pt")
    stop_runtime()


def test_shards_of_a_global_batch_are_the_single_process_batch():
    n, seed, world, b = 24, 7, 3, 2
    single = list(ShardSampler(n, seed))
    assert single == list(RandomSampler(range(n), generator=torch.Generator().manual_seed(seed)))
    shards = [list(ShardSampler(n, seed, r, world)) for r in range(world)]
    for k in range(n // (world * b)):        # step k of 3 processes = step k of one with 3x the batch
        together = sorted(i for s in shards for i in s[k * b:(k + 1) * b])
        assert together == sorted(single[k * world * b:(k + 1) * world * b])
    uneven = [list(ShardSampler(10, seed, r, 4)) for r in range(4)]
    assert {len(s) for s in uneven} == {3} and set().union(*uneven) == set(range(10))   # wraps, loses none


def test_derived_seeds_differ_by_use_and_repeat():
    assert derive_seed(0, "rank", 1) == derive_seed(0, "rank", 1)
    assert len({derive_seed(0, "rank", 1), derive_seed(0, "rank", 2), derive_seed(1, "rank", 1),
                derive_seed(0, "workers", 1)}) == 4


def test_device_auto_is_the_cpu_here_and_cuda_without_a_gpu_is_one_clear_error():
    from capt.train.distributed import resolve_device

    assert resolve_device("auto") == (torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu"))
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(CaptError, match="device is cuda but torch sees no GPU"):
            resolve_device("cuda")
    with pytest.raises(CaptError, match="device must be one of auto, cpu, cuda"):
        resolve_device("tpu")


def test_process_count_must_match_the_running_group(tmp_path):
    cfg = dataclasses.replace(DDP_CFG, processes=2)
    with pytest.raises(CaptError, match="train.processes is 2 but 1 process"):
        fit(_task(cfg), TinyFeatures(), cfg, tmp_path, progress=False)
    with pytest.raises(CaptError, match="must divide evenly"):
        dataclasses.replace(DDP_CFG, batch_size=9, processes=2)


def _two_gloo_processes(out: Path, kind: str) -> None:
    run = subprocess.run([sys.executable, "-m", "stages.launch", "2", "tests.test_distributed", str(out), kind],
                         cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-3000:]


def test_two_gloo_processes_agree_and_match_one_process(tmp_path):
    _two_gloo_processes(tmp_path, "decoder")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for k in r0["weights"]:
        assert torch.equal(r0["weights"][k], r1["weights"][k]), f"ranks differ in {k}"
    last = torch.load(tmp_path / "ckpt" / "last.pt", weights_only=True)
    assert last["epoch"] == 2 and len(last["rng_per_rank"]) == 2      # rank 0 saved every rank's RNG

    one = _task(DDP_CFG)
    single = fit(one, one.val_set, DDP_CFG, tmp_path / "single", progress=False)
    w1 = one.model.state_dict()
    # The attention score's bias shifts every logit of a softmax alike: its true gradient is 0 and
    # Adam turns the rounding noise into full steps, so it matches nothing, not even itself.
    for k in (k for k in w1 if k != "decoder.attention.score.bias"):
        assert torch.allclose(w1[k], r0["weights"][k], atol=1e-6, rtol=1e-5), f"{k}: DDP and one process differ"
    assert not torch.equal(w1["decoder.fc.weight"], _task(DDP_CFG).model.state_dict()["decoder.fc.weight"])   # it learned
    for a, b in zip(single["history"], r0["history"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)   # the mean over both processes
        assert a["val_bleu4"] == pytest.approx(b["val_bleu4"], abs=1e-6)


def test_captions_of_different_lengths_weigh_every_token_alike_on_two_gloo_processes_and_one(tmp_path):
    """Each process's loss is a mean over its own tokens; weighed by its share of the global batch's
    tokens (capt.train.distributed.token_share), the average DDP takes is the mean over every token,
    as one process computes it: equal to 1e-6 (unweighed, a shard of short captions weighs each of
    its tokens more, and the weights ended ~1e-3 apart)."""
    _two_gloo_processes(tmp_path, "lengths")
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    one = _varying_task(DDP_CFG)
    single = fit(one, one.val_set, DDP_CFG, tmp_path / "single", progress=False)
    w1 = one.model.state_dict()
    for k in (k for k in w1 if k != "decoder.attention.score.bias"):       # see the test above
        assert torch.allclose(w1[k], r0["weights"][k], atol=1e-6, rtol=1e-5), f"{k}: DDP and one process differ"
    for a, b in zip(single["history"], r0["history"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)


def test_a_student_with_a_fine_tuned_encoder_trains_alike_on_two_gloo_processes_and_one(tmp_path):
    """Each of 2 processes holds a shard of 4 images of the global batch of 8. With BatchNorm
    statistics frozen (train.batchnorm: frozen; CPU processes cannot synchronise them) the encoder ends as one process
    on all 8 leaves it, to 1e-5 (measured: 1.1e-6), BatchNorm's scale and shift included, and the
    whole model within 0.5% of how far training moved it (measured: 0.065%, Adam's rounding noise on
    the attention's biases). With batch statistics (BatchNorm in train mode) the encoder differed
    by 4e-2 and the whole model by 3.9%."""
    _two_gloo_processes(tmp_path, "student")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True)["weights"] for r in (0, 1))
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    one = _student_task(FROZEN_BN_CFG)
    before = {k: v.clone() for k, v in one.model.state_dict().items()}
    fit(one, one.val_set, FROZEN_BN_CFG, tmp_path / "single", progress=False)
    w1 = one.model.state_dict()
    norms = [k for k in w1 if k.startswith("encoder.blocks") and ".bn" in k]
    assert any(k.endswith(".weight") and not torch.equal(w1[k], before[k]) for k in norms)        # it learned them
    assert all(torch.equal(w1[k], before[k]) for k in norms if k.endswith(("running_mean", "running_var")))
    for k in (k for k in w1 if k.startswith("encoder")):
        assert torch.allclose(w1[k], r0[k], atol=1e-5, rtol=0), f"{k}: DDP and one process differ"
    learned = [k for k in w1 if w1[k].is_floating_point()]
    apart = sum(((w1[k] - r0[k]) ** 2).sum() for k in learned).sqrt()
    moved = sum(((w1[k] - before[k]) ** 2).sum() for k in learned).sqrt()
    assert apart < 5e-3 * moved, f"DDP and one process {apart / moved:.2%} apart"


def test_batchnorm_that_normalises_by_the_batch_is_synchronised_on_gpus_and_refused_on_cpu_processes():
    """Under DDP a BatchNorm in train mode (a fine-tuned block, train.batchnorm: batch) must see the
    global batch: on GPUs it becomes a SyncBatchNorm before DDP wraps the model (the conversion needs
    no GPU to check); CPU processes cannot synchronise it, so they are refused in one line."""
    from capt.train.distributed import Runtime, batch_normalising, synchronise_batchnorm

    task = _student_task(DDP_CFG)
    task.model.eval()
    learning = batch_normalising(task.model)
    assert learning and all(n.startswith("encoder.blocks") for n in learning)      # the stem's never learn
    assert not any(m.training for m in task.model.modules())                    # the mode is left as it was
    with pytest.raises(CaptError) as info:
        synchronise_batchnorm(task.model, Runtime(rank=0, world_size=2, device=torch.device("cpu")))
    assert str(info.value) == (f"{len(learning)} BatchNorm layers normalise by the batch ({learning[0]}, ...) and 2 CPU "
                               "processes cannot synchronise them (SyncBatchNorm runs on GPUs): each would normalise its "
                               "own shard; train on GPUs, on one process, or set train.batchnorm: frozen")
    encoder = task.encoder
    synchronise_batchnorm(task.model, Runtime(rank=0, world_size=2, device=torch.device("cuda", 0)))
    synced = {n for n, m in task.model.named_modules() if isinstance(m, torch.nn.SyncBatchNorm)}
    assert set(learning) <= synced and task.encoder is encoder                  # in place: the task's own modules
    synchronise_batchnorm(task.model, Runtime())                                 # one process: nothing to do


def _launch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stages.launch", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_launcher_runs_one_process_in_place_and_leaves_a_bad_count_to_the_stage():
    run = _launch("1", "json.tool", "--compact", str(ROOT / "dvc.yaml"))
    assert run.returncode == 1 and "Expecting value" in run.stderr        # json.tool ran on it, as itself
    assert _launch("1", "platform").stdout.strip()                      # python -m platform, its output
    # A count that is none (dvc.yaml passes the params value): one process, the stage's own params check
    # names the param (tests/test_faults.py); no torchrun is started for it.
    for bad in ("0", "two", "2.5"):
        run = _launch(bad, "platform")
        assert run.returncode == 0 and run.stdout.strip() and not run.stderr, run.stderr
    assert "usage" in _launch("2").stderr


if __name__ == "__main__":          # one torchrun process of the tests above: <out folder> <kind of task>
    _train_one_rank(Path(sys.argv[1]), sys.argv[2])
