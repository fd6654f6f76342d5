"""The captioning task trained by ``capt.train.loop.fit``: encoder features -> attention decoder.

A batch holds B images with C captions each. The images are encoded once (or their cached
features read) and expanded over their captions: (B, P, D) -> (B*C, P, D). Never five
encoder passes for five captions. Cached features arrive as the feature cache stores them, fp16
cells on the trunk's native grid (capt.train.features), and are cast and pooled to the
encoder's encoded_size**2 cells here, on the device.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from capt.data.vocab import Vocabulary
from capt.eval.metrics import score_captions
from capt.models.beam_search import beam_search
from capt.models.decoder import AttentionDecoder, caption_loss
from capt.models.encoder import Encoder, pool_cells
from capt.train.distributed import token_share
from capt.train.loop import TrainConfig, to_device


def flatten_captions(features: torch.Tensor, captions: torch.Tensor,
                     lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """features (B, P, D), captions (B, C, L), lengths (B, C) -> (B*C, P, D), (B*C, L'), (B*C,),
    trimmed to the longest caption in the batch (L' = max length)."""
    C = captions.shape[1]
    lengths = lengths.reshape(-1)
    L = int(lengths.max())
    return features.repeat_interleave(C, dim=0), captions.reshape(-1, captions.shape[2])[:, :L], lengths


def top5_accuracy(logits: torch.Tensor, captions: torch.Tensor, lengths: torch.Tensor) -> tuple[int, int]:
    """(correct, total) over non-padding positions: the target among the 5 best words."""
    T = logits.shape[1]
    mask = torch.arange(T, device=logits.device)[None, :] < (lengths - 1)[:, None]
    top5 = logits[mask].topk(5, dim=1).indices
    return int((top5 == captions[:, 1:T + 1][mask].unsqueeze(1)).any(1).sum()), int(mask.sum())


class CaptionerTask:
    """Decoder (and, when fine-tuned, encoder) trained with cross-entropy + attention regulariser.

    ``feature_grid`` (h, w) and ``encoded_size``: the native grid of the batches' cached
    ``"features"`` and the cells the decoder reads, E x E; without them cached features are
    taken as they come, already on the decoder's cells.
    """

    def __init__(self, decoder: AttentionDecoder, vocab: Vocabulary, val_set: Dataset,
                 val_references: dict[int, list[str]], cfg: TrainConfig, encoder: Encoder | None = None, *,
                 feature_grid: tuple[int, int] | None = None, encoded_size: int | None = None):
        if (feature_grid is None) != (encoded_size is None):
            raise ValueError("feature_grid and encoded_size go together")
        self.decoder, self.encoder, self.vocab, self.cfg = decoder, encoder, vocab, cfg
        self.val_set, self.val_references = val_set, val_references
        self.feature_grid, self.encoded_size = feature_grid, encoded_size
        modules = {"decoder": decoder}
        if encoder is not None and not encoder.frozen:
            modules["encoder"] = encoder
        self.model = nn.ModuleDict(modules)
        self.device = torch.device("cpu")

    def to(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self.decoder.to(self.device)
        if self.encoder is not None:
            self.encoder.to(self.device)

    def param_groups(self, cfg: TrainConfig) -> list[dict]:
        groups = [{"params": list(self.decoder.parameters()), "lr": cfg.lr}]
        if "encoder" in self.model:
            groups.append({"params": [p for p in self.encoder.parameters() if p.requires_grad], "lr": cfg.encoder_lr})
        return groups

    def cached_features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The batch's cached cells (B, h*w, D), fp16 as stored -> (B, E*E, D) in the decoder's
        dtype on its device: cast first (the pool sums in full precision), then pooled exactly as
        the encoder pools its own output (pool_cells)."""
        dtype = next(self.decoder.parameters()).dtype
        cells = batch["features"].to(self.device, dtype, non_blocking=True)
        if self.feature_grid is None:
            return cells
        return pool_cells(cells, self.feature_grid, self.encoded_size)

    def features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if "features" in batch:
            return self.cached_features(batch)
        return self.encoder(batch["image"])

    def _teacher_forced(self, features: torch.Tensor, batch: dict[str, torch.Tensor],
                        training: bool = False) -> tuple[torch.Tensor, int, int]:
        """Loss and top-5 (correct, total) of the batch's captions given its features (B, P, D);
        ``training``: its cross-entropy weighed by this process's share of the global batch's tokens."""
        feats, caps, lens = flatten_captions(features, batch["captions"], batch["lengths"])
        logits, alphas = self.decoder(feats, caps, lens)
        correct, total = top5_accuracy(logits.detach(), caps, lens)
        share = token_share(int((lens - 1).sum()), self.device) if training else 1.0
        return caption_loss(logits, caps, lens, alphas, self.cfg.alpha_c, share), correct, total

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        loss, correct, total = self._teacher_forced(self.features(batch), batch, training=True)
        return loss, {"loss": loss.item(), "top5": correct / max(total, 1)}

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        loader = DataLoader(self.val_set, batch_size=self.cfg.batch_size, shuffle=False,
                            num_workers=self.cfg.num_workers)
        loss_sum, n_batches, correct, total = 0.0, 0, 0, 0
        hypotheses: dict[int, str] = {}
        for batch in loader:
            batch = to_device(batch, self.device)
            feats = self.features(batch)
            loss, c, t = self._teacher_forced(feats, batch)
            loss_sum, n_batches, correct, total = loss_sum + loss.item(), n_batches + 1, correct + c, total + t
            decoded = beam_search(self.decoder, feats, start=self.vocab.start, end=self.vocab.end,
                                  beam_size=self.cfg.val_beam_size, max_len=self.cfg.max_decode_len)
            for image_id, d in zip(batch["image_id"].tolist(), decoded):
                hypotheses[image_id] = " ".join(self.vocab.decode(d.tokens))
        refs = {i: self.val_references[i] for i in hypotheses}
        scores = score_captions(refs, hypotheses, meteor=False)
        return {"loss": loss_sum / max(n_batches, 1), "top5": correct / max(total, 1), "bleu4": scores["bleu4"],
                "cider": scores["cider"]}
