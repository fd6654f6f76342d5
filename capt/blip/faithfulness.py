"""BLIP read by capt.eval.faithfulness: how likely each word of its caption is, teacher-forced, on
images whose patches are blurred or revealed (the deletion and insertion curves of its Grad-CAM maps).
"""

from __future__ import annotations

import torch
from transformers import BlipForConditionalGeneration, BlipProcessor

from capt.blip.model import pixel_values, prompt_ids
from capt.eval.faithfulness import WordScorer


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
