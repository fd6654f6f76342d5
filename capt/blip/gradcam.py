"""Grad-CAM of every generated word of a BLIP caption, on the image patch grid.

For word k (predicted at decoder position t_k from the tokens before it) and one cross-attention
layer with map A (heads, text positions, 1 + patches)::

    cam_k = mean over heads of relu(d log p(word_k) / d A[:, t_k, :]) * A[:, t_k, :]   (patches only)

``generate`` runs under no_grad and returns no attention, so the maps come from a teacher-forced
pass of the text decoder on the generated ids (eager attention, ``output_attentions=True``).

Exact per word, in one pass: a single backward of the summed log-probabilities would mix into
position t_k the gradients of every later word (later positions attend to earlier ones). Instead
the caption is repeated once per word in a batch (K, L) and copy k backpropagates only word k's
log-probability: one batched forward/backward, each copy's gradient exactly its own word's.
"""

from __future__ import annotations

import math

import torch
from transformers import BlipForConditionalGeneration


def _caption_positions(ids: torch.Tensor, n_prompt: int, stop_ids: set[int]) -> list[int]:
    """Positions t whose output predicts a caption word: the word is ids[t + 1], after the
    ``n_prompt`` leading tokens ([DEC] and the prompt), up to the first stop token."""
    positions = []
    for t in range(n_prompt - 1, len(ids) - 1):
        if int(ids[t + 1]) in stop_ids:
            break
        positions.append(t)
    return positions


def _cross_attention_and_logprobs(model: BlipForConditionalGeneration, image_embeds: torch.Tensor,
                                  ids: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ids (K, L), image_embeds (K, 1 + N, D) -> log-probabilities (K, L, V) and the layer's
    cross-attention (K, H, L, 1 + N), inside the autograd graph."""
    out = model.text_decoder(input_ids=ids, attention_mask=torch.ones_like(ids), encoder_hidden_states=image_embeds,
                             output_attentions=True, return_dict=True)
    if not out.cross_attentions:
        raise RuntimeError("the BLIP text decoder returned no cross-attentions: load it with attn_implementation='eager'")
    return out.logits.float().log_softmax(-1), out.cross_attentions[layer]


def _cam(grad: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """(H, 1 + N) gradient and attention at one position -> (N,) map over the patches."""
    return (grad.clamp(min=0) * attention).mean(0)[1:]           # drop the vision [CLS] token


def word_gradcam(model: BlipForConditionalGeneration, pixel_values: torch.Tensor, ids: torch.Tensor,
                 n_prompt: int, layer: int = -1) -> tuple[list[int], torch.Tensor]:
    """One image (1, 3, R, R) and its generated ids (L,) -> (word positions, maps (K, G, G)), one
    map per caption word, all words in one batched forward/backward."""
    stop = {model.config.text_config.sep_token_id, model.config.text_config.pad_token_id}
    positions = _caption_positions(ids, n_prompt, stop)
    K = len(positions)
    with torch.enable_grad():
        image_embeds = model.vision_model(pixel_values=pixel_values)[0]                 # (1, 1 + N, D)
        G = math.isqrt(image_embeds.shape[1] - 1)
        if K == 0:
            return positions, image_embeds.new_zeros(0, G, G)
        batch = ids.unsqueeze(0).repeat(K, 1)                                            # (K, L)
        logp, attention = _cross_attention_and_logprobs(model, image_embeds.expand(K, -1, -1), batch, layer)
        rows = torch.arange(K)
        t = torch.tensor(positions)
        chosen = logp[rows, t, batch[rows, t + 1]]                                       # (K,) copy k: word k only
        (grad,) = torch.autograd.grad(chosen.sum(), attention)                          # (K, H, L, 1 + N)
    maps = torch.stack([_cam(grad[k, :, t[k]], attention[k, :, t[k]].detach()) for k in range(K)])
    return positions, maps.reshape(K, G, G).detach()


def word_gradcam_one_at_a_time(model: BlipForConditionalGeneration, pixel_values: torch.Tensor, ids: torch.Tensor,
                               n_prompt: int, layer: int = -1) -> torch.Tensor:
    """The reference: one forward/backward per word on the caption alone (K passes)."""
    stop = {model.config.text_config.sep_token_id, model.config.text_config.pad_token_id}
    maps = []
    with torch.enable_grad():
        for t in _caption_positions(ids, n_prompt, stop):
            image_embeds = model.vision_model(pixel_values=pixel_values)[0]
            logp, attention = _cross_attention_and_logprobs(model, image_embeds, ids.unsqueeze(0), layer)
            (grad,) = torch.autograd.grad(logp[0, t, ids[t + 1]], attention)
            maps.append(_cam(grad[0, :, t], attention[0, :, t].detach()))
    G = math.isqrt(maps[0].shape[0]) if maps else 0
    return torch.stack(maps).reshape(len(maps), G, G) if maps else torch.zeros(0, G, G)
