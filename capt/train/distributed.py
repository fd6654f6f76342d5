"""Training on several processes: DistributedDataParallel under ``torchrun``.

``torchrun --nproc-per-node=N`` starts N copies of a training stage and describes the group in
the environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT); ``start_runtime`` joins it
(NCCL on GPUs, Gloo on CPU) and says which device this process trains on. Without torchrun it
is one process and nothing is initialised.

What every process must agree on comes from one ``seed``: epoch e's example order is one
permutation seeded by (seed, e), and process r takes the positions r, r + N, r + 2N, ... of it
(``ShardSampler``). With a per-process batch of b = B / N, global step k of N processes sees
exactly the B examples that step k of one process with batch B sees, so the two runs match up to
floating-point summation order (the DDP test).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
import typing
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler

from capt.config import Device
from capt.errors import CaptError

DEVICES = typing.get_args(Device)


@dataclass(frozen=True)
class Runtime:
    """Where this process trains: its rank among ``world_size`` processes, and its device."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes checkpoints, metrics, models and plots."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def derive_seed(seed: int, *keys: object) -> int:
    """A 63-bit seed for one use of the run's ``seed`` (a process rank, an epoch's workers, ...):
    deterministic, and different for different keys."""
    digest = hashlib.sha256(repr((seed, *keys)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def resolve_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: GPU ``local_rank`` where CUDA is available, else the CPU; ``cpu``; ``cuda``."""
    if device not in DEVICES:
        raise CaptError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise CaptError("device is cuda but torch sees no GPU here; set it to auto or cpu")
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    return torch.device("cuda", local_rank) if cuda else torch.device("cpu")


def start_runtime(device: str = "auto") -> Runtime:
    """Join the process group torchrun describes in the environment, or run alone.

    ``device``: ``auto`` (the process's GPU where CUDA is available, else the CPU), ``cpu`` or
    ``cuda``. Under torchrun with GPUs, process r uses GPU LOCAL_RANK.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    dev = resolve_device(device, int(os.environ.get("LOCAL_RANK", "0")))
    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.set_device(dev)
    if world_size == 1:
        return Runtime(0, 1, dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return Runtime(dist.get_rank(), dist.get_world_size(), dev)


def stop_runtime() -> None:
    """Leave the process group (a no-op for one process)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def current_runtime() -> Runtime:
    """The runtime of an already initialised group (rank, world size), on the CPU; one process otherwise."""
    if dist.is_available() and dist.is_initialized():
        return Runtime(dist.get_rank(), dist.get_world_size())
    return Runtime()


class ShardSampler(Sampler[int]):
    """Epoch ``epoch``'s order for process ``rank`` of ``world_size``: the positions rank, rank +
    world_size, ... of one permutation seeded by ``seed``, the same in every process.

    With one process it is exactly ``RandomSampler(generator=torch.Generator().manual_seed(seed))``.
    When the dataset does not divide evenly, the permutation wraps around so that every process
    takes as many steps (as DistributedSampler does).
    """

    def __init__(self, n: int, seed: int, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for {world_size} processes")
        self.n, self.seed, self.rank, self.world_size = n, seed, rank, world_size
        self.per_rank = -(-n // world_size)

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed)).tolist()
        order += order[: self.per_rank * self.world_size - self.n]       # wrap: equal shares
        return iter(order[self.rank::self.world_size])

    def __len__(self) -> int:
        return self.per_rank


def all_mean(values: dict[str, float], runtime: Runtime) -> dict[str, float]:
    """The mean of each value over the processes (the values themselves for one process); every
    process passes the same keys in the same order."""
    if not runtime.distributed or not values:
        return values
    keys = list(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=runtime.device)   # NCCL: on the GPU
    dist.all_reduce(t)              # a sum
    return {k: v / runtime.world_size for k, v in zip(keys, t.tolist())}


BatchNormMode = typing.Literal["batch", "frozen"]


def batch_normalising(model: nn.Module) -> list[str]:
    """The names of ``model``'s BatchNorms that normalise by the batch when it trains: those that
    ``model.train()`` leaves in train mode (a frozen trunk keeps its own in eval mode)."""
    was_training = model.training
    model.train()
    names = [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    model.train(was_training)
    return names


def freeze_batchnorm(model: nn.Module) -> None:
    """Every BatchNorm of ``model`` to eval mode: it normalises by its running statistics, which no
    longer move; its scale and shift still learn. Call it after each ``model.train()``."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def synchronise_batchnorm(model: nn.Module, runtime: Runtime) -> None:
    """Under DDP, make the BatchNorms that normalise by the batch normalise by the global batch,
    as one process does: SyncBatchNorm, in place, before DDP wraps ``model``. Unsynchronised, each
    process would normalise its own shard (a quarter of the batch with 4 processes) and the result
    would depend on the process count. SyncBatchNorm runs on GPUs only, so on CPU processes (Gloo)
    such a model is refused in one line; ``train.batchnorm: frozen`` (running statistics) trains
    on any."""
    if not runtime.distributed or not (names := batch_normalising(model)):
        return
    if runtime.device.type != "cuda":
        raise CaptError(f"{len(names)} BatchNorm layers normalise by the batch ({names[0]}, ...) and {runtime.world_size} "
                        "CPU processes cannot synchronise them (SyncBatchNorm runs on GPUs): each would normalise its own "
                        "shard; train on GPUs, on one process, or set train.batchnorm: frozen")
    nn.SyncBatchNorm.convert_sync_batchnorm(model)       # replaces the children in place: the task keeps its modules


def token_share(tokens: int, device: torch.device) -> float:
    """N * n_r / (n_1 + .. + n_N): this process's share of the global batch's ``tokens``, times the
    process count; 1.0 in one process (exactly: a loss scaled by it is the same bit for bit).

    DDP averages the gradients of the N processes. A loss that is a mean over this process's n_r
    tokens, scaled by the share, averages to the mean over all the global batch's tokens, as one
    process computes it; unscaled, a process whose captions happen to be short would weigh each of
    its tokens more. Every process calls it at the same step (an all-reduce), so only in training:
    rank 0 validates alone."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1.0
    total = torch.tensor([float(tokens)], dtype=torch.float64, device=device)    # NCCL: on the GPU
    dist.all_reduce(total)
    return dist.get_world_size() * tokens / total.item()


def broadcast_from_main(obj, runtime: Runtime):
    """Rank 0's ``obj`` in every process (validation numbers: every process decides alike)."""
    if not runtime.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_to_main(obj, runtime: Runtime) -> list | None:
    """Every process's ``obj``, in rank order, on rank 0 (None elsewhere)."""
    if not runtime.distributed:
        return [obj]
    boxes = [None] * runtime.world_size
    dist.all_gather_object(boxes, obj)
    return boxes if runtime.is_main else None


def barrier(runtime: Runtime) -> None:
    if runtime.distributed:
        dist.barrier()
