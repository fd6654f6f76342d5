"""One training loop for the teacher and every student.

``fit`` knows nothing about captioning: it asks a task for a loss on a batch and for
validation numbers after each epoch, and owns the rest: Adam, gradient clipping, learning
rate decay on a validation plateau, early stopping, checkpoints after every epoch (so a killed
run resumes where it stopped), the best weights, and a per-epoch history.

Determinism: the shuffling order of epoch e comes from a generator seeded with (seed, e), and
the global torch RNG (dropout) is saved in each checkpoint, so a resumed run continues exactly
as an uninterrupted one would on the CPU.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler
from tqdm import tqdm

from capt.errors import CaptError
from capt.train.checkpoint import load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20
    batch_size: int = 32          # images per step; each brings all of its captions
    lr: float = 4e-4              # decoder (Adam)
    encoder_lr: float = 1e-4      # encoder blocks 2-4, when fine-tuned
    grad_clip: float = 5.0
    alpha_c: float = 1.0          # doubly stochastic attention regularisation
    lr_decay: float = 0.8         # multiply learning rates by this ...
    lr_patience: int = 2          # ... after this many epochs without a better val BLEU-4
    early_stop: int = 6           # stop after this many epochs without a better val BLEU-4
    val_beam_size: int = 1        # decoding for the per-epoch val BLEU-4 (1 = greedy)
    max_decode_len: int = 20
    num_workers: int = 0
    preload: bool = False         # read the training items into memory once (small datasets)
    seed: int = 0

    def __post_init__(self):
        for name in ("epochs", "batch_size", "early_stop", "val_beam_size", "max_decode_len"):
            if getattr(self, name) < 1:
                raise CaptError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.lr_decay <= 1:
            raise CaptError(f"train.lr_decay must be in (0, 1], got {self.lr_decay}")


class Task(Protocol):
    """What ``fit`` trains: a module, its parameter groups, a loss and a validation."""

    model: nn.Module

    def param_groups(self, cfg: TrainConfig) -> list[dict]: ...

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]: ...

    def validate(self) -> dict[str, float]:
        """Must return at least the early-stopping criterion: ``bleu4``, or the key a task names
        in a ``criterion`` attribute (higher is better)."""
        ...


def _epoch_loader(dataset: Dataset, cfg: TrainConfig, epoch: int) -> DataLoader:
    g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    return DataLoader(dataset, batch_size=cfg.batch_size, sampler=RandomSampler(dataset, generator=g),
                      num_workers=cfg.num_workers, persistent_workers=False)


def fit(task: Task, train_set: Dataset, cfg: TrainConfig, ckpt_dir: Path, *, fingerprint: str = "",
        progress: bool = True, stop_after_steps: int | None = None) -> dict[str, Any]:
    """Train until ``cfg.epochs`` or early stopping; resume from ``ckpt_dir/last.pt`` if it holds
    a run with the same ``fingerprint`` (a hash of everything that defines the run).

    Returns ``{"history": [per-epoch dicts], "best": {...}, "best_state": state dict}``.
    ``stop_after_steps`` ends training abruptly after that many optimizer steps (tests).
    """
    ckpt_dir = Path(ckpt_dir)
    last = ckpt_dir / "last.pt"
    torch.manual_seed(cfg.seed)
    optimizer = torch.optim.Adam(task.param_groups(cfg))
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=cfg.lr_decay,
                                                           patience=cfg.lr_patience)
    history: list[dict] = []
    key = getattr(task, "criterion", "bleu4")
    best = {key: -math.inf, "epoch": 0}
    start_epoch, stale = 1, 0
    if last.exists():
        ckpt = load_checkpoint(last)
        if ckpt.get("fingerprint") == fingerprint:
            task.model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            torch.set_rng_state(ckpt["rng"])
            history, best, stale = ckpt["history"], ckpt["best"], ckpt["stale"]
            start_epoch = ckpt["epoch"] + 1
            log.info("resuming from %s after epoch %d", last, ckpt["epoch"])
        else:
            log.info("%s belongs to another configuration: starting afresh", last)
    best_path = ckpt_dir / "best.pt"

    steps = 0
    for epoch in range(start_epoch, cfg.epochs + 1):
        if stale >= cfg.early_stop:
            break
        task.model.train()
        totals: dict[str, float] = {}
        n_batches = 0
        bar = tqdm(_epoch_loader(train_set, cfg, epoch), desc=f"epoch {epoch}/{cfg.epochs}", unit="batch",
                   disable=not progress, leave=False)
        for step, batch in enumerate(bar):
            loss, stats = task.loss(batch)
            if not torch.isfinite(loss):
                raise CaptError(f"training diverged: loss is {loss.item()} at epoch {epoch}, step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], cfg.grad_clip)
            optimizer.step()
            for k, v in stats.items():
                totals[k] = totals.get(k, 0.0) + v
            n_batches += 1
            bar.set_postfix(loss=f"{stats.get('loss', loss.item()):.3f}")
            steps += 1
            if stop_after_steps is not None and steps >= stop_after_steps:
                return {"history": history, "best": best, "stopped": True}
        task.model.eval()
        val = task.validate()
        row = {"epoch": epoch, **{f"train_{k}": v / max(n_batches, 1) for k, v in totals.items()},
               **{f"val_{k}": v for k, v in val.items()}, "lr": optimizer.param_groups[0]["lr"]}
        history.append(row)
        scheduler.step(val[key])
        if val[key] > best[key]:
            best, stale = {key: val[key], "epoch": epoch}, 0
            save_checkpoint(task.model.state_dict(), best_path)
        else:
            stale += 1
        log.info("epoch %d: %s", epoch, ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "epoch"))
        save_checkpoint({"fingerprint": fingerprint, "epoch": epoch, "model": task.model.state_dict(),
                         "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                         "rng": torch.get_rng_state(), "history": history, "best": best, "stale": stale,
                         "config": asdict(cfg)}, last)
    if not best_path.exists():
        raise CaptError(f"{best_path}: no epoch was trained (epochs={cfg.epochs})")
    return {"history": history, "best": best, "best_state": load_checkpoint(best_path)}
