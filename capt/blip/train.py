"""BLIP fine-tuned on a prepared dataset by the shared training loop (capt.train.loop.fit).

The text of each training caption is the prompt followed by the caption ("a picture of a red
circle"), as in BLIP's own captioning fine-tune: the decoder starts from ``[DEC]``, the prompt
tokens and the padding are left out of the loss. An image goes through the vision model once and
its embedding is shared by all of its captions (never once per caption).
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset
from transformers import BlipForConditionalGeneration, BlipProcessor

from capt.blip.model import GenerationConfig, caption_images, pixel_values
from capt.data.vocab import Vocabulary
from capt.eval.metrics import score_captions
from capt.train.loop import TrainConfig


def caption_texts(vocab: Vocabulary, captions: torch.Tensor, prompt: str) -> list[str]:
    """Encoded captions (N, L) of the prepared files -> "prompt caption" strings."""
    return [f"{prompt} {' '.join(vocab.decode(row.tolist()))}".strip() for row in captions]


def lm_inputs(processor: BlipProcessor, texts: list[str], prompt: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token ids (N, L) starting with [DEC], their attention mask, and labels with the prompt and
    the padding set to -100 (no loss there)."""
    tok = processor.tokenizer
    enc = tok(texts, padding="longest", return_tensors="pt")
    ids, mask = enc["input_ids"].clone(), enc["attention_mask"]
    ids[:, 0] = tok.bos_token_id
    labels = ids.masked_fill(mask == 0, -100)
    n_prompt = len(tok(prompt)["input_ids"]) - 1          # [CLS]/[DEC] + the prompt words, without [SEP]
    labels[:, :n_prompt] = -100
    return ids, mask, labels


class BlipTask:
    """What ``fit`` needs: the model, its parameters, a loss on a batch, a validation."""

    def __init__(self, model: BlipForConditionalGeneration, processor: BlipProcessor, vocab: Vocabulary,
                 val_set: Dataset, val_references: dict[int, list[str]], cfg: TrainConfig, gen: GenerationConfig):
        self.model, self.processor, self.vocab, self.cfg = model, processor, vocab, cfg
        self.val_set, self.val_references = val_set, val_references
        self.gen = gen
        self.device = torch.device("cpu")

    def to(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self.model.to(self.device)

    def param_groups(self, cfg: TrainConfig) -> list[dict]:
        return [{"params": [p for p in self.model.parameters() if p.requires_grad], "lr": cfg.lr}]

    def _lm_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        B, C, L = batch["captions"].shape
        pixels = pixel_values(self.processor, batch["image"].cpu()).to(self.device)
        image_embeds = self.model.vision_model(pixel_values=pixels)[0]
        ids, mask, labels = lm_inputs(self.processor, caption_texts(self.vocab, batch["captions"].reshape(B * C, L).cpu(),
                                                                    self.gen.prompt), self.gen.prompt)
        ids, mask, labels = ids.to(self.device), mask.to(self.device), labels.to(self.device)
        out = self.model.text_decoder(input_ids=ids, attention_mask=mask,
                                      encoder_hidden_states=image_embeds.repeat_interleave(C, dim=0),
                                      labels=labels, reduction="mean")
        return out.loss

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        loss = self._lm_loss(batch)
        return loss, {"loss": loss.item()}

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        loader = DataLoader(self.val_set, batch_size=self.cfg.batch_size, shuffle=False)
        gen = GenerationConfig(self.gen.prompt, self.cfg.val_beam_size, self.gen.max_length, self.gen.min_length)
        loss_sum, n_batches, hypotheses = 0.0, 0, {}
        for batch in loader:
            loss_sum, n_batches = loss_sum + self._lm_loss(batch).item(), n_batches + 1
            hypotheses.update(zip(batch["image_id"].tolist(), caption_images(self.model, self.processor,
                                                                             batch["image"], gen)))
        scores = score_captions({i: self.val_references[i] for i in hypotheses}, hypotheses, meteor=False)
        return {"loss": loss_sum / max(n_batches, 1), "bleu4": scores["bleu4"], "cider": scores["cider"]}
