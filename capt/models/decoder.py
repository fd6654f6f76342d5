"""Show, Attend and Tell (Xu et al. 2015): an LSTM that attends over image features each step.

Shapes: B batch, P feature cells (encoded_size**2), D feature width, A attention width,
E embedding width, H LSTM width, V vocabulary, L caption length incl. <start>/<end>,
T = L - 1 decoding steps (the word at t predicts the word at t + 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from capt.config import CHECKED, Count, Probability, with_config


@with_config(CHECKED)
@dataclass(frozen=True)
class DecoderConfig:
    embed_dim: Count = 512
    attention_dim: Count = 512
    decoder_dim: Count = 512
    dropout: Probability = 0.5


class SoftAttention(nn.Module):
    """alpha = softmax(w . relu(W_f f + W_h h)); context = sum_p alpha_p f_p."""

    def __init__(self, feature_dim: int, decoder_dim: int, attention_dim: int):
        super().__init__()
        self.feature_proj = nn.Linear(feature_dim, attention_dim)
        self.hidden_proj = nn.Linear(decoder_dim, attention_dim)
        self.score = nn.Linear(attention_dim, 1)

    def forward(self, features: torch.Tensor, h: torch.Tensor,
                projected: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """features (B, P, D), h (B, H) -> context (B, D), alpha (B, P).

        ``projected`` = ``feature_proj(features)`` may be passed in: it is the same every step.
        """
        if projected is None:
            projected = self.feature_proj(features)                               # (B, P, A)
        scores = self.score(F.relu(projected + self.hidden_proj(h).unsqueeze(1)))  # (B, P, 1)
        alpha = scores.squeeze(2).softmax(dim=1)                                  # (B, P)
        context = torch.bmm(alpha.unsqueeze(1), features).squeeze(1)              # (B, D)
        return context, alpha


class AttentionDecoder(nn.Module):
    def __init__(self, cfg: DecoderConfig, vocab_size: int, feature_dim: int):
        super().__init__()
        self.cfg, self.vocab_size, self.feature_dim = cfg, vocab_size, feature_dim
        self.embedding = nn.Embedding(vocab_size, cfg.embed_dim)
        self.attention = SoftAttention(feature_dim, cfg.decoder_dim, cfg.attention_dim)
        self.init_h = nn.Linear(feature_dim, cfg.decoder_dim)
        self.init_c = nn.Linear(feature_dim, cfg.decoder_dim)
        self.f_beta = nn.Linear(cfg.decoder_dim, feature_dim)   # gate: how much the context counts
        self.lstm = nn.LSTMCell(cfg.embed_dim + feature_dim, cfg.decoder_dim)
        self.dropout = nn.Dropout(cfg.dropout)
        self.fc = nn.Linear(cfg.decoder_dim, vocab_size)
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        nn.init.uniform_(self.fc.weight, -0.1, 0.1)
        nn.init.zeros_(self.fc.bias)

    def init_state(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h, c (B, H) from the mean feature (B, D)."""
        mean = features.mean(dim=1)
        return self.init_h(mean), self.init_c(mean)

    def step(self, features: torch.Tensor, projected: torch.Tensor, words: torch.Tensor,
             state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, tuple]:
        """One word: features (B, P, D), projected (B, P, A), words (B,) ->
        logits (B, V), alpha (B, P), new (h, c)."""
        h, c = state
        context, alpha = self.attention(features, h, projected)
        context = torch.sigmoid(self.f_beta(h)) * context                     # (B, D)
        h, c = self.lstm(torch.cat([self.embedding(words), context], dim=1), (h, c))
        return self.fc(self.dropout(h)), alpha, (h, c)

    def forward(self, features: torch.Tensor, captions: torch.Tensor,
                lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher forcing. features (B, P, D), captions (B, L), lengths (B,) ->
        logits (B, T, V) and alphas (B, T, P), T = max(lengths) - 1; steps at t >= lengths - 1
        are padding (zeros in both), for the loss to mask.

        Rows are sorted by length so that step t runs only the n_t captions still going (a
        prefix of the sorted batch): padding costs nothing, which halves the work when caption
        lengths vary as much as they do in COCO or shapes.

        Each step's output is zero-padded to B rows and the steps stacked once at the end,
        rather than written into preallocated (B, T, V) and (B, T, P) tensors: the backward of
        such a write copies the whole (B, T, V) gradient at every step (for the COCO profile's
        teacher, 320 captions a batch and ~10k words: ~270 MB, T times). The values and
        gradients are the same bit for bit (benchmarks/bench_decoder.py).
        """
        B = features.shape[0]
        T = int(lengths.max()) - 1
        order = lengths.argsort(descending=True, stable=True)
        features, captions, steps = features[order], captions[order], lengths[order] - 1
        projected = self.attention.feature_proj(features)                     # (B, P, A)
        h, c = self.init_state(features)
        live = (torch.arange(T, device=lengths.device)[None, :] < steps[:, None]).sum(0).tolist()  # n_t
        logits, alphas = [], []                                                # T x (B, V), T x (B, P)
        for t, n in enumerate(live):
            step_logits, alpha, (h, c) = self.step(features[:n], projected[:n], captions[:n, t], (h[:n], c[:n]))
            logits.append(F.pad(step_logits, (0, 0, 0, B - n)))
            alphas.append(F.pad(alpha, (0, 0, 0, B - n)))
        unsort = order.argsort()
        return torch.stack(logits, dim=1)[unsort], torch.stack(alphas, dim=1)[unsort]


def caption_loss(logits: torch.Tensor, captions: torch.Tensor, lengths: torch.Tensor,
                 alphas: torch.Tensor, alpha_c: float, ce_weight: float = 1.0) -> torch.Tensor:
    """Cross-entropy over non-padding positions + alpha_c * doubly stochastic regularisation.

    logits (B, T, V) predict captions[:, 1:T+1]; alphas (B, T, P) are zero at padding steps.
    The regulariser pushes every cell's attention, summed over the caption, towards 1.
    ``ce_weight`` scales the cross-entropy, a mean over this batch's tokens, alone: under DDP a
    process's share of the global batch's tokens (capt.train.distributed.token_share).
    """
    T = logits.shape[1]
    targets = captions[:, 1:T + 1]                                                # (B, T)
    mask = torch.arange(T, device=lengths.device)[None, :] < (lengths - 1)[:, None]
    ce = F.cross_entropy(logits[mask], targets[mask]) * ce_weight
    if alpha_c == 0:
        return ce
    return ce + alpha_c * ((1.0 - alphas.sum(dim=1)) ** 2).mean()
