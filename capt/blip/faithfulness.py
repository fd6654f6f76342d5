"""BLIP read by capt.eval.faithfulness: how likely each word of its caption is, teacher-forced, on
images whose patches are blurred or revealed (the deletion and insertion curves of its Grad-CAM
maps, :func:`blip_word_scorer`), and its Grad-CAM maps of the same words again after its text
decoder or its vision encoder's last layer is randomised (the sanity check, :func:`blip_sanity`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from transformers import BlipForConditionalGeneration, BlipProcessor

from capt.blip.gradcam import word_gradcam
from capt.blip.model import merge_wordpieces, pixel_values, prompt_ids
from capt.eval.faithfulness import WordScorer, randomise_parameters


def blip_word_scorer(model: BlipForConditionalGeneration, processor: BlipProcessor, prompt: str,
                     words: list[str]) -> WordScorer:
    """BLIP's capt.eval.faithfulness.WordScorer: a caption's word ids index ``words`` (the words of
    its maps, WordPiece pieces merged: :func:`merge_wordpieces`), and row r's log p(word t) is the
    sum of its pieces' log-probabilities, teacher-forced after ``[DEC] prompt`` and the words
    before it (each word re-tokenised: the tokenizer's pieces, which are what BLIP generates for
    all but a word it spelled in unusual pieces). One vision pass of the R images, one text pass."""
    model.eval()
    tok = processor.tokenizer
    start = prompt_ids(processor, prompt, 1)[0, :-1].tolist()             # [CLS] prompt, without [SEP]
    start[0] = model.config.text_config.bos_token_id                       # generate's [DEC] for [CLS]
    pieces = [tok.convert_tokens_to_ids(tok.tokenize(w)) for w in words]

    @torch.no_grad()
    def word_log_probs(images: torch.Tensor, rows) -> torch.Tensor:
        device = model.device
        image_embeds = model.vision_model(pixel_values=pixel_values(processor, images).to(device))[0]  # (R, 1+N, D)
        sequences, spans = [], []
        for word_ids, t in rows:
            ids = [*start, *(p for w in word_ids[:t] for p in pieces[int(w)])]
            spans.append((len(ids), len(pieces[int(word_ids[t])])))         # word t's pieces: positions [a, a + n)
            sequences.append(ids + pieces[int(word_ids[t])])
        L = max(len(s) for s in sequences)
        ids = torch.full((len(rows), L), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), L), dtype=torch.long)
        for r, s in enumerate(sequences):
            ids[r, :len(s)], mask[r, :len(s)] = torch.tensor(s), 1
        logits = model.text_decoder(input_ids=ids.to(device), attention_mask=mask.to(device),
                                    encoder_hidden_states=image_embeds, return_dict=True).logits   # (R, L, V)
        logp = logits.float().log_softmax(-1).cpu()
        # position a + i holds piece i of word t, predicted by the output at a + i - 1
        return torch.stack([sum(logp[r, a + i - 1, ids[r, a + i]] for i in range(n)) for r, (a, n) in enumerate(spans)])

    grid = model.config.vision_config.image_size // model.config.vision_config.patch_size
    return WordScorer(word_log_probs, grid)


@dataclass
class BlipWords:
    """A BLIP, its processor and prompt, and the words its captions' word ids index (as for
    :func:`blip_word_scorer`): what the sanity check's map functions and randomisations take."""

    model: BlipForConditionalGeneration
    processor: BlipProcessor
    prompt: str
    words: list[str]
    gradcam_layer: int = -1


def blip_gradcam_maps(blip: BlipWords, images: torch.Tensor, captions: list[list[int]]) -> list[np.ndarray]:
    """Grad-CAM on cross-attention (capt.blip.gradcam) of the given captions' words, teacher-forced
    after ``[DEC] prompt`` (each word re-tokenised, its pieces' maps merged as the evaluation merges
    them): per image float32 (T_i, P)."""
    tok = blip.processor.tokenizer
    start = prompt_ids(blip.processor, blip.prompt, 1)[0, :-1].tolist()
    start[0] = blip.model.config.text_config.bos_token_id
    pixels = pixel_values(blip.processor, images).to(blip.model.device)
    special = set(tok.all_special_tokens)
    out = []
    for k, word_ids in enumerate(captions):
        ids = torch.tensor([*start, *(p for w in word_ids for p in tok.convert_tokens_to_ids(tok.tokenize(
            blip.words[int(w)]))), tok.sep_token_id], device=blip.model.device)
        positions, maps = word_gradcam(blip.model, pixels[k:k + 1], ids, len(start), blip.gradcam_layer)
        tokens = tok.convert_ids_to_tokens([int(ids[t + 1]) for t in positions])
        _, word_maps = merge_wordpieces(tokens, maps, special)                      # (T_i, G, G)
        out.append(word_maps.reshape(len(word_maps), -1).float().cpu().numpy())
    return out


def _randomised(blip: BlipWords, part, seed: int) -> BlipWords:
    twin = copy.deepcopy(blip)
    randomise_parameters(part(twin.model), seed)
    twin.model.eval()
    return twin


# The two randomisations of the sanity check, named as the LSTM's: the text decoder, and the vision
# encoder's last layer (the block whose patches the cross-attention reads).
BLIP_RANDOMISATIONS = {"decoder": lambda b, seed: _randomised(b, lambda m: m.text_decoder, seed),
                       "last_block": lambda b, seed: _randomised(b, lambda m: m.vision_model.encoder.layers[-1], seed)}


def blip_sanity(blip: BlipWords) -> dict:
    """capt.eval.faithfulness.explain_maps' ``sanity`` for BLIP's Grad-CAM on cross-attention."""
    return {"model": blip, "map_functions": {"gradcam_crossattn": blip_gradcam_maps},
            "randomisations": BLIP_RANDOMISATIONS}
