"""Grad-CAM for the Show-Attend-Tell captioners: for each word of a caption, which cells of the
encoder's last block raised that word's logit (Selvaraju et al., ICCV 2017).

Soft attention says where the decoder *read*; Grad-CAM says which image evidence *moved the
word's score*. Both on the same model, on the same grid, let the two be compared word by word
(and the LSTMs be compared with BLIP, whose maps are Grad-CAM too).

For a caption w_1..w_T (the model's own), teacher forcing gives logits z_t (V,) at every step.
For word t: A = the last block's activations (D, h, w), weights a_k = mean over cells of
dz_t[w_t]/dA_k, map = ReLU(sum_k a_k A_k), average-pooled to the decoder's G x G grid.

All words of all captions of a batch go in one forward and one backward: the activations are
repeated once per word (R = sum of caption lengths rows), and row r backpropagates only its own
word's logit, so row r's gradient is exactly that word's (rows do not interact).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from capt.models.decoder import AttentionDecoder
from capt.models.encoder import Encoder


def last_block_activations(encoder: Encoder, images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, S, S) -> the trunk's last block's output (B, D, h, w), before pooling, on the
    encoder's device."""
    with torch.no_grad():
        return encoder.blocks(encoder.stem(encoder.normalize(images)))


def lstm_word_gradcam(encoder: Encoder, decoder: AttentionDecoder, images: torch.Tensor,
                      captions: list[list[int]], start: int, end: int) -> list[np.ndarray]:
    """images uint8 (B, 3, S, S); captions[i] the word ids of image i's caption (no <start>/<end>)
    -> per image, float32 (len(captions[i]), G, G): each word's Grad-CAM map on the grid."""
    decoder.eval()
    acts = last_block_activations(encoder, images)                         # (B, D, h, w)
    rows = [(i, t) for i, words in enumerate(captions) for t in range(len(words))]
    G = encoder.cfg.encoded_size
    out = [np.zeros((len(words), G, G), np.float32) for words in captions]
    if not rows:
        return out
    dev = acts.device
    image_of_row = torch.tensor([i for i, _ in rows], device=dev)
    step_of_row = torch.tensor([t for _, t in rows], device=dev)
    L = max(len(w) for w in captions) + 2
    tokens = torch.zeros(len(captions), L, dtype=torch.long)
    for i, words in enumerate(captions):
        tokens[i, :len(words) + 2] = torch.tensor([start, *words, end])
    tokens = tokens.to(dev)
    # Row r needs the logits of its own step t only: decoding it through step t (length t + 2:
    # <start> and words 0..t) gives the same logit, since step t reads no later token, and the
    # decoder's length-sorted batch then runs ~half the row-steps (a caption's rows end at 1..n).
    row_lengths = step_of_row + 2                                          # (R,)

    a = acts[image_of_row].clone().requires_grad_(True)                    # (R, D, h, w): one copy per word
    features = encoder.pool(a).flatten(2).transpose(1, 2)                  # (R, P, D)
    with torch.enable_grad():
        logits, _ = decoder(features, tokens[image_of_row], row_lengths)   # (R, T, V)
        # step t reads token t and predicts token t + 1, i.e. word t (0-based) of the caption
        word_ids = tokens[image_of_row, step_of_row + 1]
        picked = logits[torch.arange(len(rows), device=dev), step_of_row, word_ids]   # (R,)
        (grad,) = torch.autograd.grad(picked.sum(), a)
    weights = grad.mean(dim=(2, 3), keepdim=True)                          # (R, D, 1, 1)
    cam = F.relu((weights * a.detach()).sum(dim=1, keepdim=True))          # (R, 1, h, w)
    cam = F.adaptive_avg_pool2d(cam, G)[:, 0].cpu().numpy()                # (R, G, G)
    for r, (i, t) in enumerate(rows):
        out[i][t] = cam[r]
    return out
