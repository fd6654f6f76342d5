"""Knowledge distillation of a student captioner from a frozen teacher.

The loss of the seed study (its Table 1)::

    total = (1 - beta) * task + beta * (w_enc * enc + w_dec * dec)

    task = cross-entropy + alpha_c * attention regulariser   (the teacher's own loss, caption_loss)
    enc  = MSE(projection(F_s), F_t)                          (kd_encoder_loss)
    dec  = T^2 * KL(softmax(z_t / T) || softmax(z_s / T))     (kd_decoder_loss)

F are encoder features (B, P, D) on the same P grid cells; z are decoder logits (B, T, V) under
teacher forcing on the ground-truth captions the student sees. The teacher never learns: it
stays in eval mode (no dropout), its features come from the feature cache (pooled from the
trunk's native grid to the teacher's cells on the device) and its logits are computed under
``torch.no_grad``. A variant without a KD term (beta 0: the baseline, sequence-level KD) reads
no teacher features at all.

Sequence-level KD (Kim & Rush 2016) needs no loss of its own: the student's task loss is
computed on the teacher's beam-search captions (cached once) instead of the human ones.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Literal
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from capt.config import CHECKED, ConfigError, Flag, NonNegative, Positive, UnitInterval, with_config
from capt.data.cache import karpathy_part, open_h5
from capt.data.dataset import read_feature_grid
from capt.data.vocab import Vocabulary
from capt.errors import CaptError
from capt.files import write_atomic
from capt.models.beam_search import beam_search
from capt.models.decoder import AttentionDecoder, caption_loss
from capt.models.encoder import Encoder, pool_cells
from capt.train.captioner import CaptionerTask, flatten_captions, top5_accuracy
from capt.train.distributed import token_share

Targets = Literal["references", "teacher"]
Projection = Literal["auto", "always"]


@with_config(CHECKED)
@dataclass(frozen=True)
class DistillConfig:
    """One student variant's loss."""

    beta: UnitInterval = 0.0     # weight of the KD terms; 0 = the task loss alone (the baseline)
    temperature: Positive = 1.0  # T of the word-level KD
    w_enc: NonNegative = 0.0     # weight of the encoder feature MSE inside the KD term
    w_dec: NonNegative = 0.0     # weight of the decoder KL inside the KD term
    targets: Targets = "references"  # references: human captions | teacher: its beam-search captions (seq-KD)
    fine_tune: Flag | None = None  # the student encoder's blocks 2-4 learn; None: students.encoder.fine_tune.
                                   # False freezes them: with and without decoder KD, the seed study's 2x2
    projection: Projection = "auto"  # encoder KD through a learned 1x1 projection: auto (only when the widths
                                 # differ) | always (FitNets' regressor: two trunks share no channel basis)

    def __post_init__(self):
        if self.beta > 0 and self.w_enc == 0 and self.w_dec == 0:
            raise ConfigError(f"beta is {self.beta} but w_enc and w_dec are both 0: no KD term to weigh")
        if self.projection == "always" and not self.uses_encoder_kd:
            raise ConfigError("projection is always but there is no encoder KD (beta and w_enc > 0): nothing to project")
        if self.fine_tune is False and self.uses_encoder_kd:
            raise ConfigError("encoder KD needs a student encoder that learns, but fine_tune is false")

    @property
    def uses_encoder_kd(self) -> bool:
        return self.beta > 0 and self.w_enc > 0

    @property
    def uses_decoder_kd(self) -> bool:
        return self.beta > 0 and self.w_dec > 0

    @property
    def uses_teacher_features(self) -> bool:
        """Whether the loss reads the teacher's feature cache (else it need not be opened)."""
        return self.uses_encoder_kd or self.uses_decoder_kd


def student_subset(positions: list[int], fraction: float, seed: int) -> list[int]:
    """The positions (sorted) of the training images the students learn from: a seeded draw of
    ``round(fraction * len(positions))`` of ``positions`` (those of the training split's part
    they train on, capt.data.cache.karpathy_part), the same for every variant so that they
    compare fairly."""
    if not 0.0 < fraction <= 1.0:
        raise CaptError(f"train_fraction must be in (0, 1], got {fraction}")
    k = max(1, round(fraction * len(positions)))
    g = torch.Generator().manual_seed(seed)
    return sorted(positions[j] for j in torch.randperm(len(positions), generator=g)[:k].tolist())


def student_images(train_h5: Path, part: str, fraction: float, seed: int,
                   param: str = "students.subset") -> list[int]:
    """The positions in the prepared training split ``train_h5`` of the images every student
    learns from: the seeded ``fraction`` (students.train_fraction, subset_seed) of Karpathy's
    ``part`` of it (``param``, students.subset: all | train | restval)."""
    return student_subset(karpathy_part(train_h5, part, param), fraction, seed)


def kd_decoder_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
                    mask: torch.Tensor) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, summed over the vocabulary and
    averaged over the positions where ``mask`` is true.

    student_logits, teacher_logits (B, T, V); mask (B, T) bool. The T^2 keeps the gradient's
    scale independent of T (Hinton et al. 2015). The KL runs from the teacher's distribution to
    the student's: the student is pulled towards the teacher, never the reverse.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ")
    if not mask.any():
        return student_logits.sum() * 0.0
    log_q = F.log_softmax(student_logits[mask] / temperature, dim=-1)   # (N, V) student
    log_p = F.log_softmax(teacher_logits[mask] / temperature, dim=-1)   # (N, V) teacher
    # kl_div(input=log q, target=log p) = sum p (log p - log q); batchmean divides by N positions.
    return temperature ** 2 * F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)


def kd_encoder_loss(student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
    """MSE between student features (already projected to the teacher's width) and the teacher's,
    both (B, P, D) on the same grid of P cells."""
    if student_features.shape != teacher_features.shape:
        raise ValueError(f"student features {tuple(student_features.shape)} and teacher features "
                         f"{tuple(teacher_features.shape)} differ: project the student's first")
    return F.mse_loss(student_features, teacher_features)


def feature_projection(student_dim: int, teacher_dim: int, always: bool = False) -> nn.Module | None:
    """The learned 1x1 projection from the student's feature width to the teacher's; None when the
    widths agree, unless ``always``. On (B, P, D) features a Linear over D is exactly a 1x1
    convolution. Equal widths are not a shared basis: channel k of one trunk need not mean what
    channel k of another does, which is why FitNets' hints always go through a regressor."""
    return None if student_dim == teacher_dim and not always else nn.Linear(student_dim, teacher_dim)


@torch.no_grad()
def add_stem_features(encoder: Encoder, items: list[dict[str, torch.Tensor]], batch_size: int = 64) -> None:
    """Put the output of the encoder's frozen stem (stem + layer1, in eval mode for good) into
    every preloaded item as ``"stem"``: it never changes, so the student's steps run only the
    blocks that learn. For datasets that fit in memory (the embedded profile's students)."""
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        stem = encoder.stem_features(torch.stack([it["image"] for it in chunk]))
        for item, s in zip(chunk, stem):
            item["stem"] = s.clone()


def padding_mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """(B, steps) bool: true where the decoding step predicts a real word (t < length - 1)."""
    return torch.arange(steps, device=lengths.device)[None, :] < (lengths - 1)[:, None]


class DistillTask(CaptionerTask):
    """A student captioner (fine-tuned encoder + decoder) trained by ``fit`` with the KD loss.

    Batches carry the student's input images and, when a KD term needs them, the teacher's
    cached features of the same images (``"features"``, (B, h*w, D_t) on the trunk's native grid,
    pooled to the teacher's E x E cells by ``cached_features``: pass ``feature_grid`` and the
    teacher's ``encoded_size``). ``model`` holds what learns: the student's decoder and encoder,
    and the projection when there is one; the saved student leaves the projection out.
    """

    def __init__(self, encoder: Encoder, decoder: AttentionDecoder, teacher_decoder: AttentionDecoder,
                 teacher_dim: int, kd: DistillConfig, **kwargs):
        if encoder.frozen and kd.uses_encoder_kd:
            raise CaptError("encoder KD needs a student encoder that learns: set its fine_tune to true")
        super().__init__(decoder, encoder=encoder, **kwargs)
        self.kd = kd
        self.teacher = teacher_decoder.eval().requires_grad_(False)
        self.projection = (feature_projection(encoder.feature_dim, teacher_dim, always=kd.projection == "always")
                           if kd.uses_encoder_kd else None)
        if self.projection is not None:
            self.model["projection"] = self.projection

    def to(self, device: torch.device) -> None:
        super().to(device)
        self.teacher.to(self.device)
        if self.projection is not None:
            self.projection.to(self.device)

    def param_groups(self, cfg):
        groups = super().param_groups(cfg)
        if self.projection is not None:
            groups[0]["params"] += list(self.projection.parameters())
        return groups

    def features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The student's own features (never the teacher's cache); from the precomputed output of
        its frozen stem when the batch carries it (``add_stem_features``)."""
        if "stem" in batch:
            return self.encoder.forward_from_stem(batch["stem"])
        return self.encoder(batch["image"])

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        self.teacher.eval()                          # fit() calls model.train(); the teacher is not in it
        student_features = self.features(batch)                                 # (B, P, D_s)
        feats, caps, lens = flatten_captions(student_features, batch["captions"], batch["lengths"])
        logits, alphas = self.decoder(feats, caps, lens)                         # (B*C, T, V)
        # Both token means (the cross-entropy, the KL) weighed by this process's share of the
        # global batch's tokens: under DDP, the mean over every token, as one process computes it.
        share = token_share(int((lens - 1).sum()), self.device)
        task = caption_loss(logits, caps, lens, alphas, self.cfg.alpha_c, share)
        correct, total = top5_accuracy(logits.detach(), caps, lens)
        stats = {"task": task.item(), "top5": correct / max(total, 1)}
        kd_terms = torch.zeros((), dtype=task.dtype, device=task.device)
        if self.kd.uses_teacher_features:
            teacher_features = self.cached_features(batch)                      # (B, P, D_t)
        if self.kd.uses_encoder_kd:
            projected = student_features if self.projection is None else self.projection(student_features)
            enc = kd_encoder_loss(projected, teacher_features)
            kd_terms = kd_terms + self.kd.w_enc * enc
            stats["kd_enc"] = enc.item()
        if self.kd.uses_decoder_kd:
            with torch.no_grad():
                teacher_feats = teacher_features.repeat_interleave(batch["captions"].shape[1], dim=0)
                teacher_logits, _ = self.teacher(teacher_feats, caps, lens)
            dec = kd_decoder_loss(logits, teacher_logits, self.kd.temperature,
                                  padding_mask(lens, logits.shape[1])) * share
            kd_terms = kd_terms + self.kd.w_dec * dec
            stats["kd_dec"] = dec.item()
        loss = task if self.kd.beta == 0 else (1 - self.kd.beta) * task + self.kd.beta * kd_terms
        stats["loss"] = loss.item()
        return loss, stats


@torch.no_grad()
def write_teacher_captions(decoder: AttentionDecoder, vocab: Vocabulary, features_h5: Path, indices: list[int],
                           out_h5: Path, *, encoded_size: int, max_len: int, beam_size: int,
                           batch_size: int = 64, device: torch.device | str = "cpu") -> int:
    """Sequence-level KD targets: the teacher's beam-search caption of each image at ``indices``
    of a feature-cache split (the teacher's own frozen features: no image is re-encoded), its
    native cells pooled to the teacher's ``encoded_size``**2 as its encoder pools them.

    Writes ``captions`` int32 (K, 1, max_len + 2) (``<start> .. <end>`` padded, as prepare
    encodes human captions), ``caption_lengths`` int32 (K, 1), ``image_ids`` and ``indices``
    (K,), under a temporary name renamed into place. The beam search runs on ``device`` (the
    decoder is moved there). Returns K.
    """
    decoder.eval().to(device)
    out_h5 = Path(out_h5)
    out_h5.parent.mkdir(parents=True, exist_ok=True)
    L = max_len + 2
    captions = np.zeros((len(indices), 1, L), np.int32)
    lengths = np.zeros((len(indices), 1), np.int32)
    with open_h5(features_h5, ("features", "image_ids")) as f:
        feats, ids, grid = f["features"], f["image_ids"][:], read_feature_grid(f, features_h5)
        for start in range(0, len(indices), batch_size):
            rows = indices[start:start + batch_size]
            cells = torch.from_numpy(np.stack([feats[i] for i in rows])).to(device).float()   # (b, h*w, D)
            batch = pool_cells(cells, grid, encoded_size)                           # (b, E*E, D)
            for j, d in enumerate(beam_search(decoder, batch, start=vocab.start, end=vocab.end,
                                              beam_size=beam_size, max_len=max_len)):
                encoded = [vocab.start, *d.tokens[:max_len], vocab.end]
                captions[start + j, 0, :len(encoded)] = encoded
                lengths[start + j, 0] = len(encoded)
    buffer = io.BytesIO()                  # built in memory, then written whole (capt.eval.maps says why)
    with h5py.File(buffer, "w") as g:
        g["captions"], g["caption_lengths"] = captions, lengths
        g["image_ids"], g["indices"] = ids[indices], np.asarray(indices, np.int64)
        g.attrs.update(beam_size=beam_size, max_len=max_len)
    write_atomic(out_h5, buffer.getvalue())
    return len(indices)
