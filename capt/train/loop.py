"""One training loop for the teacher and every student.

``fit`` knows nothing about captioning: it asks a task for a loss on a batch and for
validation numbers after each epoch, and owns the rest: Adam, gradient clipping, learning
rate decay on a validation plateau, early stopping, checkpoints after every epoch (so a killed
run resumes where it stopped), the best weights, and a per-epoch history.

One rule (``Plateau``) decides the best epoch, the learning-rate decay and early stopping: an
epoch is bad when its validation criterion (``train.select_on``: BLEU-4, as Show-Attend-Tell, or
CIDEr-D) is not strictly greater than the best so far,
an equal score included. The rate is multiplied by ``lr_decay`` as soon as ``lr_patience``
consecutive bad epochs have accumulated (with 2: right after the second one; the count then
restarts), and training stops once ``early_stop`` consecutive bad epochs have.

Determinism: the shuffling order of epoch e comes from a generator seeded with (seed, e), the
loader's worker seeds from (seed, e) too, and the torch RNG (dropout) of every process is saved in
each checkpoint, so a resumed run continues exactly as an uninterrupted one would on the CPU.

Under torchrun (``train.processes`` > 1) the task's model trains wrapped in
DistributedDataParallel: each process takes its share of every global batch (capt.train.distributed),
gradients are averaged across processes, rank 0 validates and tells the others the result, and
rank 0 alone writes checkpoints. ``precision`` (bf16, or fp16 with a gradient scaler) runs the
loss under autocast; ``channels_last`` stores the convolution weights and images channels-last.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from capt.config import CHECKED, ConfigError, Count, Device, Flag, Fraction, Int, NonNegative, NonNegativeInt, Positive, \
    with_config
from capt.errors import CaptError
from capt.models.checkpoint import load_checkpoint, save_checkpoint
from capt.train.distributed import (BatchNormMode, Runtime, ShardSampler, all_mean, barrier,
                                    broadcast_from_main, freeze_batchnorm, synchronise_batchnorm,
                                    current_runtime, derive_seed, gather_to_main)

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
Precision = Literal["fp32", "bf16", "fp16"]
SelectOn = Literal["bleu4", "cider"]   # the validation metrics train.select_on may name


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 / AMX), as oneDNN sees it."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast_dtype_for(precision: str, device: torch.device) -> torch.dtype | None:
    """The dtype the loss runs under autocast (None: fp32). ``precision`` is a GPU setting: a CPU
    without bf16 instructions only emulates reduced precision (a ResNet-50 step in bf16 took 11x
    as long as in fp32 on a 2-core x86 CPU: benchmarks/bench_precision.py), so there the run stays fp32 and
    the log says so."""
    dtype = PRECISIONS[precision]
    if dtype is not None and device.type == "cpu" and not cpu_has_native_bf16():
        log.warning("precision %s: this CPU has no bf16/fp16 instructions (only emulation, ~11x slower): "
                    "training in fp32", precision)
        return None
    return dtype

log = logging.getLogger(__name__)


@with_config(CHECKED)
@dataclass(frozen=True)
class TrainConfig:
    epochs: Count = 20
    batch_size: Count = 32        # images per step; each brings all of its captions
    lr: Positive = 4e-4           # decoder (Adam)
    encoder_lr: Positive = 1e-4   # encoder blocks 2-4, when fine-tuned
    grad_clip: NonNegative = 5.0  # the gradient norm clipped to; 0: no clipping
    alpha_c: NonNegative = 1.0    # doubly stochastic attention regularisation
    lr_decay: Fraction = 0.8      # multiply learning rates by this ...
    lr_patience: Count = 2        # ... right after this many consecutive epochs whose val BLEU-4 is not
                                  # strictly above the best so far (an equal score counts); then recount
    early_stop: Count = 6         # stop after this many such epochs in a row (the same rule: Plateau)
    select_on: SelectOn = "bleu4" # the val metric of that rule: bleu4 (Show-Attend-Tell's) | cider (CIDEr-D)
    val_beam_size: Count = 1      # decoding for the per-epoch val BLEU-4 (1 = greedy)
    max_decode_len: Count = 20
    num_workers: NonNegativeInt = 0
    prefetch_factor: Count = 2    # batches each loader worker keeps ready (only with num_workers > 0): they
                                  # wait in shared memory (/dev/shm), which fit() checks before the first epoch
    preload: Flag = False         # read the training items into memory once (small datasets)
    pin_memory: Flag = False      # page-locked batches for faster copies to a GPU (ignored on the CPU)
    processes: Count = 1          # > 1: DistributedDataParallel under torchrun (python -m stages.launch)
    device: Device = "auto"       # auto (a GPU where there is one) | cpu | cuda
    precision: Precision = "fp32" # fp32 | bf16 | fp16 (autocast; fp16 with a gradient scaler)
    channels_last: Flag = False   # convolution weights and images in NHWC memory order
    batchnorm: BatchNormMode = "batch"  # BatchNorms that learn: batch (normalise by the batch; under DDP by the
                                  # global batch, SyncBatchNorm, GPUs only) | frozen (running statistics; any process count)
    seed: Int = 0

    def __post_init__(self):
        check_global_batch(self.batch_size, self.processes)


def check_global_batch(batch_size: int, processes: int) -> None:
    """Each of the processes takes batch_size / processes images of a step: they must divide."""
    if batch_size % processes:
        raise ConfigError(f"batch_size {batch_size} (the global batch) must divide evenly over processes {processes}")


@dataclass
class Plateau:
    """The one rule behind the best epoch, the learning-rate decay and early stopping.

    An epoch is bad when its criterion is not strictly greater than the best so far (an equal
    score is bad, a NaN too). ``bad`` counts the bad epochs since the last better one (early
    stopping compares it with ``early_stop``); ``bad_since_decay`` counts them since the last better
    epoch or the last decay, and the learning rate decays when it reaches ``lr_patience``, after
    which it restarts from 0. Unlike torch's ReduceLROnPlateau there is no relative threshold and
    no "more than patience": with ``lr_patience`` 2 the rate drops right after the second bad epoch.
    """

    lr_patience: int
    best: float = -math.inf
    best_epoch: int = 0
    bad: int = 0
    bad_since_decay: int = 0

    def step(self, epoch: int, value: float) -> tuple[bool, bool]:
        """Epoch ``epoch``'s criterion -> (a new best, decay the learning rate now)."""
        if value > self.best:
            self.best, self.best_epoch, self.bad, self.bad_since_decay = value, epoch, 0, 0
            return True, False
        self.bad += 1
        self.bad_since_decay += 1
        if self.bad_since_decay >= self.lr_patience:
            self.bad_since_decay = 0
            return False, True
        return False, False

    @classmethod
    def replay(cls, lr_patience: int, values: list[float]) -> Plateau:
        """The rule's state after epochs 1.. with criteria ``values`` (a resumed run: the decays
        themselves are in the optimizer's saved learning rates)."""
        plateau = cls(lr_patience)
        for epoch, value in enumerate(values, start=1):
            plateau.step(epoch, value)
        return plateau


def decay_learning_rates(optimizer: torch.optim.Optimizer, factor: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] *= factor


class Task(Protocol):
    """What ``fit`` trains: a module, its parameter groups, a loss and a validation."""

    model: nn.Module

    def to(self, device: torch.device) -> None:
        """Move what the loss and the validation use (the model, a frozen teacher) to ``device``."""
        ...

    def param_groups(self, cfg: TrainConfig) -> list[dict]: ...

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]: ...

    def validate(self) -> dict[str, float]:
        """Must return at least the early-stopping criterion: ``train.select_on`` (``bleu4`` or
        ``cider``), or the key a task names in a ``criterion`` attribute (higher is better)."""
        ...


def _epoch_loader(dataset: Dataset, cfg: TrainConfig, epoch: int, runtime: Runtime) -> DataLoader:
    """Epoch ``epoch``'s batches for this process: its share (batch_size / processes images) of
    each global batch; the order and the workers' seeds follow from (seed, epoch) alone."""
    sampler = ShardSampler(len(dataset), cfg.seed * 100_003 + epoch, runtime.rank, runtime.world_size)
    workers = torch.Generator().manual_seed(derive_seed(cfg.seed, "workers", epoch, runtime.rank))
    return DataLoader(dataset, batch_size=cfg.batch_size // runtime.world_size, sampler=sampler,
                      num_workers=cfg.num_workers, generator=workers, persistent_workers=False,
                      prefetch_factor=cfg.prefetch_factor if cfg.num_workers > 0 else None,
                      pin_memory=cfg.pin_memory and runtime.device.type == "cuda")


def shared_memory_needed(dataset: Dataset, cfg: TrainConfig) -> int:
    """Bytes of /dev/shm the loader workers fill on this machine: each of ``num_workers`` workers of
    each of ``processes`` processes keeps ``prefetch_factor`` batches of ``batch_size / processes``
    items there (torch shares worker batches through shared memory), sized by the first item."""
    item = dataset[0]
    item_bytes = sum(v.numel() * v.element_size() for v in item.values() if isinstance(v, torch.Tensor))
    return cfg.num_workers * cfg.prefetch_factor * cfg.batch_size * item_bytes


def check_shared_memory(dataset: Dataset, cfg: TrainConfig, shm: Path = Path("/dev/shm")) -> None:
    """Fail before the first epoch, in one line, where the loader workers' batches would not fit in
    shared memory: a container's default 64 MB otherwise ends the run in a bus error mid-epoch."""
    if cfg.num_workers == 0 or not shm.is_dir():
        return
    import shutil

    need, free = shared_memory_needed(dataset, cfg), shutil.disk_usage(shm).free
    if need > free:
        raise CaptError(f"{shm}: {free / 2**20:.0f} MB free, and train.num_workers {cfg.num_workers} x "
                        f"train.prefetch_factor {cfg.prefetch_factor} batches of {cfg.batch_size} items "
                        f"({need / 2**20:.0f} MB) wait there; lower them, or give the container more shared memory "
                        f"(docker run --shm-size={2 ** math.ceil(math.log2(need / 2**20 * 2))}m)")


def to_device(batch: dict[str, torch.Tensor], device: torch.device, channels_last: bool = False) -> dict[str, torch.Tensor]:
    """A batch on ``device``; images (4-D) channels-last when asked."""
    out = {}
    for k, v in batch.items():
        v = v.to(device, non_blocking=True)
        if channels_last and v.dim() == 4:
            v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out


class _LossModule(nn.Module):
    """The task's loss as a module's forward, so that DistributedDataParallel wraps it: DDP
    synchronises the gradients of ``model``'s parameters, however the task uses them."""

    def __init__(self, task: Task):
        super().__init__()
        self.model = task.model
        self._loss = task.loss

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        return self._loss(batch)


def fit(task: Task, train_set: Dataset, cfg: TrainConfig, ckpt_dir: Path, *, fingerprint: str = "",
        progress: bool = True, stop_after_steps: int | None = None, runtime: Runtime | None = None) -> dict[str, Any]:
    """Train until ``cfg.epochs`` or early stopping; resume from ``ckpt_dir/last.pt`` if it holds
    a run with the same ``fingerprint`` (a hash of everything that defines the run).

    Returns ``{"history": [per-epoch dicts], "best": {...}, "best_state": state dict}`` in every
    process. ``stop_after_steps`` ends training abruptly after that many optimizer steps (tests).
    ``runtime``: this process's rank and device (capt.train.distributed.start_runtime); by default
    the initialised process group's, else one process on the CPU.
    """
    rt = runtime or current_runtime()
    if rt.world_size != cfg.processes:
        raise CaptError(f"train.processes is {cfg.processes} but {rt.world_size} process(es) are running: "
                        "start training stages with `python -m stages.launch N <stage>` (torchrun for N > 1)")
    check_shared_memory(train_set, cfg)
    ckpt_dir = Path(ckpt_dir)
    last = ckpt_dir / "last.pt"
    # Dropout differs between processes (each sees other examples); rank 0 keeps the seed itself.
    torch.manual_seed(cfg.seed if rt.rank == 0 else derive_seed(cfg.seed, "rank", rt.rank))
    task.to(rt.device)
    if cfg.channels_last:
        task.model.to(memory_format=torch.channels_last)
    if cfg.batchnorm == "batch":
        synchronise_batchnorm(task.model, rt)              # under DDP: the global batch's statistics
    step_module: nn.Module = _LossModule(task)
    if rt.distributed:
        step_module = DistributedDataParallel(step_module, device_ids=[rt.device] if rt.device.type == "cuda" else None)
    autocast_dtype = autocast_dtype_for(cfg.precision, rt.device)
    scaler = torch.amp.GradScaler(rt.device.type, enabled=autocast_dtype == torch.float16)
    optimizer = torch.optim.Adam(task.param_groups(cfg))
    history: list[dict] = []
    key = getattr(task, "criterion", None) or cfg.select_on     # a task's own (pretraining: neg_loss) or the param
    plateau = Plateau(cfg.lr_patience)
    start_epoch = 1
    if last.exists():
        ckpt = load_checkpoint(last)
        if ckpt.get("fingerprint") == fingerprint:
            task.model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])          # the learning rates, decays included
            if "scaler" in ckpt:
                scaler.load_state_dict(ckpt["scaler"])
            torch.set_rng_state(ckpt.get("rng_per_rank", [ckpt["rng"]])[rt.rank])
            if rt.device.type == "cuda" and "cuda_rng_per_rank" in ckpt:
                torch.cuda.set_rng_state(ckpt["cuda_rng_per_rank"][rt.rank], rt.device)
            history = ckpt["history"]
            plateau = Plateau.replay(cfg.lr_patience, [row[f"val_{key}"] for row in history])
            start_epoch = ckpt["epoch"] + 1
            log.info("resuming from %s after epoch %d", last, ckpt["epoch"])
        else:
            log.info("%s belongs to another configuration: starting afresh", last)
    best_path = ckpt_dir / "best.pt"

    steps = 0
    for epoch in range(start_epoch, cfg.epochs + 1):
        if plateau.bad >= cfg.early_stop:
            break
        task.model.train()
        if cfg.batchnorm == "frozen":
            freeze_batchnorm(task.model)
        totals: dict[str, float] = {}
        n_batches = 0
        bar = tqdm(_epoch_loader(train_set, cfg, epoch, rt), desc=f"epoch {epoch}/{cfg.epochs}", unit="batch",
                   disable=not (progress and rt.is_main), leave=False)
        for step, batch in enumerate(bar):
            batch = to_device(batch, rt.device, cfg.channels_last)
            with (torch.autocast(rt.device.type, dtype=autocast_dtype) if autocast_dtype is not None
                  else contextlib.nullcontext()):
                loss, stats = step_module(batch)
            if not torch.isfinite(loss):
                raise CaptError(f"training diverged: loss is {loss.item()} at epoch {epoch}, step {step}")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()                 # DDP averages the gradients over processes here
            if cfg.grad_clip > 0:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            for k, v in stats.items():
                totals[k] = totals.get(k, 0.0) + v
            n_batches += 1
            bar.set_postfix(loss=f"{stats.get('loss', loss.item()):.3f}")
            steps += 1
            if stop_after_steps is not None and steps >= stop_after_steps:
                return {"history": history, "best": _best(plateau, key), "stopped": True}
        train_means = all_mean({k: v / max(n_batches, 1) for k, v in totals.items()}, rt)
        task.model.eval()
        val = broadcast_from_main(task.validate() if rt.is_main else None, rt)
        row = {"epoch": epoch, **{f"train_{k}": v for k, v in train_means.items()},
               **{f"val_{k}": v for k, v in val.items()}, "lr": optimizer.param_groups[0]["lr"]}
        history.append(row)
        improved, decay = plateau.step(epoch, val[key])
        if decay:
            decay_learning_rates(optimizer, cfg.lr_decay)
        rng = gather_to_main(torch.get_rng_state(), rt)
        cuda_rng = gather_to_main(torch.cuda.get_rng_state(rt.device), rt) if rt.device.type == "cuda" else None
        if rt.is_main:
            if improved:
                save_checkpoint(task.model.state_dict(), best_path)
            log.info("epoch %d: %s", epoch, ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "epoch"))
            state = {"fingerprint": fingerprint, "epoch": epoch, "model": task.model.state_dict(),
                     "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "rng": rng[0],
                     "history": history, "best": _best(plateau, key), "config": asdict(cfg)}
            if rt.distributed:
                state["rng_per_rank"] = rng
            if cuda_rng is not None:
                state["cuda_rng_per_rank"] = cuda_rng
            save_checkpoint(state, last)
        barrier(rt)                                       # every process sees the checkpoints of this epoch
    if not best_path.exists():
        raise CaptError(f"{best_path}: no epoch was trained (epochs={cfg.epochs})")
    return {"history": history, "best": _best(plateau, key), "best_state": load_checkpoint(best_path)}


def _best(plateau: Plateau, key: str) -> dict[str, Any]:
    return {key: plateau.best, "epoch": plateau.best_epoch}
