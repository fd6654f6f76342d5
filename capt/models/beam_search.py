"""Batched beam search (and a plain greedy loop) for the Show-Attend-Tell decoder.

Every image of a batch and every hypothesis of its beam advance together: the features, their
attention projection and the LSTM state are expanded once to ``B * k`` rows (row ``b * k + j`` is
beam slot ``j`` of image ``b``), and after each step the state and the partial captions are
reordered by the parent beam that each surviving hypothesis came from.

What is searched (the same for every beam size, so a large enough beam is an exact search):

- a caption has at most ``max_len`` words; ``<start>`` is the first input, never an output;
- a hypothesis that emits ``<end>`` is *finished*; its score is the summed log-probability of
  its words and of the ``<end>``;
- a hypothesis that reaches ``max_len`` words without ``<end>`` is *cut* there; its score is the
  summed log-probability of its words (there is no ``<end>`` to add). It competes with the
  finished ones, so decoding never fails when no beam ends: then the best cut beam wins;
- every other word id (``<unk>``, even ``<pad>``/``<start>``) is an ordinary choice: the search
  ranks what the decoder itself predicts; a trained decoder gives those ids no mass.

One step (``t`` = 0, 1, ...): the ``k * V`` extensions of the ``k`` live hypotheses are ranked
by score (ties: lower parent slot, then lower word id, first; a stable sort, so the result does
not depend on the hardware). ``<end>`` extensions ranked among the first ``k`` are finished
candidates; the ``k`` best non-``<end>`` extensions become the next live beams. At step 0 only
slot 0 is live (the others score ``-inf``), so the ``k`` beams are ``k`` different words, not
copies of one. Slots left without a hypothesis (``beam_size`` > vocabulary, early steps) stay at
``-inf`` and can never be chosen, so any ``beam_size >= 1`` works.

Choosing and stopping: the chosen caption maximises ``score / length ** length_penalty``, where
``length`` counts the scored tokens (words plus ``<end>`` if it ended, so always >= 1);
``length_penalty = 0`` compares raw log-probabilities. Log-probabilities are <= 0, so a live
hypothesis can only lose score; the best any descendant of a live beam with score ``s`` can
reach is ``max(s / L_min ** lp, s / max_len ** lp)`` over its possible lengths. An image stops
as soon as its best finished caption is >= that bound for its best live beam: nothing still in
the beam can beat it, so stopping early gives exactly the caption that running on to
``max_len`` would. With ``beam_size = 1`` and ``length_penalty = 0`` this is greedy decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from capt.errors import CaptError
from capt.models.decoder import AttentionDecoder


@dataclass
class Decoded:
    tokens: list[int]          # word ids of the chosen caption, without <start> and <end>
    alphas: torch.Tensor       # (len(tokens), P): the attention map that produced each word (CPU)
    score: float               # total log-probability of the chosen sequence (incl. <end> when it ended)


def _check(decoder: AttentionDecoder, features: torch.Tensor, start: int, end: int, max_len: int) -> None:
    if features.dim() != 3 or features.shape[2] != decoder.feature_dim:
        raise CaptError(f"features must be (batch, cells, {decoder.feature_dim}); got {tuple(features.shape)}")
    V = decoder.vocab_size
    if V < 2:
        raise CaptError(f"decoding needs a vocabulary of at least 2 words; the decoder has {V}")
    for name, i in (("start", start), ("end", end)):
        if not 0 <= int(i) < V:
            raise CaptError(f"{name} id {i} is outside the decoder's vocabulary (0..{V - 1})")
    if max_len < 1:
        raise CaptError(f"max_len must be >= 1, got {max_len}")


class _EvalMode:
    """Dropout off while decoding; the module's previous mode restored afterwards (even on error)."""

    def __init__(self, module: torch.nn.Module):
        self.module = module

    def __enter__(self):
        self.was_training = self.module.training
        self.module.eval()

    def __exit__(self, *exc):
        self.module.train(self.was_training)


@torch.no_grad()
def beam_search(decoder: AttentionDecoder, features: torch.Tensor, *, start: int, end: int,
                beam_size: int = 3, max_len: int = 20, length_penalty: float = 0.0) -> list[Decoded]:
    """features (B, P, D) -> one Decoded per image. beam_size 1 = greedy.

    See the module docstring for what is searched, how ties break and when an image stops.
    """
    _check(decoder, features, start, end, max_len)
    if beam_size < 1:
        raise CaptError(f"beam_size must be >= 1, got {beam_size}")
    with _EvalMode(decoder):
        return _beam_search(decoder, features, int(start), int(end), int(beam_size), int(max_len),
                            float(length_penalty))


def _beam_search(decoder: AttentionDecoder, features: torch.Tensor, start: int, end: int, k: int,
                 max_len: int, lp: float) -> list[Decoded]:
    B, P, _ = features.shape
    V = decoder.vocab_size
    dev = features.device
    if B == 0:
        return []

    def expand(x: torch.Tensor) -> torch.Tensor:      # (B, ...) -> (B * k, ...), row b * k + j
        return x.repeat_interleave(k, dim=0)

    def penalised(score: torch.Tensor, length: int | float) -> torch.Tensor:
        return score if lp == 0 else score / float(length) ** lp

    projected = expand(decoder.attention.feature_proj(features))          # (Bk, P, A)
    h, c = (expand(s) for s in decoder.init_state(features))              # (Bk, H)
    feats = expand(features)                                              # (Bk, P, D)
    words = torch.full((B * k,), start, dtype=torch.long, device=dev)
    scores = torch.full((B, k), float("-inf"), device=dev)
    scores[:, 0] = 0.0                                                    # one live beam at step 0
    seq = torch.zeros(B, k, 0, dtype=torch.long, device=dev)              # words so far
    seq_alpha = features.new_zeros(B, k, 0, P)                            # their attention maps
    bix = torch.arange(B, device=dev)[:, None]                            # (B, 1) image index
    row0 = bix * k                                                        # its first row
    ranks = torch.arange(k, device=dev).expand(B, k)

    # the best finished caption of each image so far
    best_pen = torch.full((B,), float("-inf"), device=dev)
    best_score = torch.full((B,), float("-inf"), device=dev)
    best_len = torch.zeros(B, dtype=torch.long, device=dev)
    best_tokens = torch.zeros(B, max_len, dtype=torch.long, device=dev)
    best_alphas = features.new_zeros(B, max_len, P)
    done = torch.zeros(B, dtype=torch.bool, device=dev)

    for t in range(max_len):                       # step t predicts word t + 1 (or <end>)
        logits, alpha, (h, c) = decoder.step(feats, projected, words, (h, c))
        logp = logits.float().log_softmax(dim=1).view(B, k, V)
        cand = (scores[:, :, None] + logp).view(B, k * V)
        # deterministic ranking: score descending, ties by flat index (parent slot, word id)
        vals, idx = cand.sort(dim=1, descending=True, stable=True)
        vals, idx = vals[:, :2 * k], idx[:, :2 * k]                       # 2k <= kV as V >= 2
        parent, word = idx // V, idx % V                                  # integer division
        alpha = alpha.view(B, k, P)

        # finished candidates: <end> among the top k. They all have t words and length t + 1, so
        # the first one in rank order is this step's best.
        is_end = (word[:, :k] == end) & torch.isfinite(vals[:, :k]) & ~done[:, None]
        if bool(is_end.any()):
            r = torch.where(is_end, ranks, k).min(dim=1).values.clamp(max=k - 1)     # (B,)
            f_score = vals.gather(1, r[:, None]).squeeze(1)
            f_pen = penalised(f_score, t + 1)
            better = is_end.any(dim=1) & (f_pen > best_pen)               # earlier wins ties
            if bool(better.any()):
                b = better.nonzero().squeeze(1)
                p = parent.gather(1, r[:, None]).squeeze(1)[b]
                best_tokens[b, :t] = seq[b, p]
                best_alphas[b, :t] = seq_alpha[b, p]
                best_len[b] = t
                best_score[b], best_pen[b] = f_score[b], f_pen[b]

        # live beams: the k best extensions that are not <end>, in rank order (there are at
        # least k among the top 2k: each slot has only one <end> extension)
        pick = (word == end).to(torch.uint8).sort(dim=1, stable=True).indices[:, :k]
        scores = vals.gather(1, pick)                                     # (B, k), descending
        parent, word = parent.gather(1, pick), word.gather(1, pick)
        rows = (row0 + parent).view(-1)
        h, c = h.index_select(0, rows), c.index_select(0, rows)
        seq = torch.cat([seq[bix, parent], word[:, :, None]], dim=2)
        seq_alpha = torch.cat([seq_alpha[bix, parent], alpha[bix, parent][:, :, None]], dim=2)
        words = word.view(-1)

        # stop an image when its best finished caption can no longer be beaten
        if t + 1 < max_len:
            s = scores[:, 0]
            bound = torch.maximum(penalised(s, t + 2), penalised(s, max_len))
            done |= best_pen >= bound
            if bool(done.all()):
                break

    out = []
    for b in range(B):
        if not bool(done[b]):
            # ran to max_len: the best cut beam (all have max_len words) against the best finished
            cut_score = scores[b, 0]
            if bool(penalised(cut_score, max_len) > best_pen[b]):
                out.append(Decoded(seq[b, 0].tolist(), seq_alpha[b, 0].cpu().clone(), float(cut_score)))
                continue
        n = int(best_len[b])
        out.append(Decoded(best_tokens[b, :n].tolist(), best_alphas[b, :n].cpu().clone(), float(best_score[b])))
    return out


@torch.no_grad()
def greedy_decode(decoder: AttentionDecoder, features: torch.Tensor, *, start: int, end: int,
                  max_len: int = 20) -> list[Decoded]:
    """argmax each step, a plain separate loop (the reference for beam 1 in tests).

    Ties go to the lowest word id; a caption stops at ``<end>`` or after ``max_len`` words.
    """
    _check(decoder, features, start, end, max_len)
    B = features.shape[0]
    with _EvalMode(decoder):
        projected = decoder.attention.feature_proj(features)
        state = decoder.init_state(features)
        words = torch.full((B,), int(start), dtype=torch.long, device=features.device)
        scores = torch.zeros(B, device=features.device)
        live = torch.ones(B, dtype=torch.bool, device=features.device)
        steps_words, steps_alphas, steps_live = [], [], []
        for _ in range(max_len):
            logits, alpha, state = decoder.step(features, projected, words, state)
            logp = logits.float().log_softmax(dim=1)
            words = logp.argmax(dim=1)                       # first maximum = lowest id
            scores = scores + torch.where(live, logp.gather(1, words[:, None]).squeeze(1), 0.0)
            live = live & (words != int(end))
            steps_words.append(words)
            steps_alphas.append(alpha)
            steps_live.append(live)
            if not bool(live.any()):
                break
    words_bt = torch.stack(steps_words, 1).cpu()              # (B, T)
    alphas_bt = torch.stack(steps_alphas, 1).cpu()            # (B, T, P)
    n_words = torch.stack(steps_live, 1).sum(dim=1).tolist()  # words before <end>
    return [Decoded(words_bt[b, :n].tolist(), alphas_bt[b, :n].clone(), float(scores[b]))
            for b, n in enumerate(n_words)]
