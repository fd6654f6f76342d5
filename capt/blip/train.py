"""BLIP fine-tuned on a prepared dataset by the shared training loop (capt.train.loop.fit).

The text of each training caption is the prompt followed by the caption ("a picture of a red
circle"), as in BLIP's own captioning fine-tune (Li et al. 2022): the decoder starts from
``[DEC]``, the prompt tokens and the padding are left out of the loss. An image goes through the
vision model once and its embedding is shared by all of its captions (never once per caption).

The captions are those the LSTMs train on, the same C per image, but as words, not as ids of the
LSTM's vocabulary: ``split_captions`` replays prepare's sampling on the raw references, so a word
that the LSTM sees as ``<unk>`` reaches BLIP as itself (its own WordPiece tokens, never
``[UNK]``). Words are those of the project's one normaliser (capt.text: lower case, no
punctuation), as the references the metrics compare with.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from transformers import BlipForConditionalGeneration, BlipProcessor

from capt.blip.model import GenerationConfig, caption_images, pixel_values
from capt.data.cache import open_h5, read_references
from capt.data.prepare import sample_captions
from capt.data.vocab import Vocabulary
from capt.errors import CaptError
from capt.eval.metrics import score_captions
from capt.text import normalize_caption
from capt.train.loop import TrainConfig


def split_captions(path: Path, vocab: Vocabulary, seed: int) -> dict[int, list[str]]:
    """image id -> its C captions (C = captions_per_image) in a prepared split file, as text.

    They are the very captions that the file's encoded rows (N, C, L) were made from: prepare's
    sampling (capt.data.prepare.sample_captions, seeded with (``seed``, image id)) replayed on the
    image's raw references, normalised and truncated as prepare did, every word kept. ``seed`` is
    the prepare seed (``summary.json``); a replayed caption that does not encode to its stored row
    (another seed, another prepare) is an error, never a silent mismatch.
    """
    references = read_references(path)
    with open_h5(path, ("image_ids", "captions")) as f:
        image_ids = f["image_ids"][:]
        encoded = f["captions"][:]                                             # (N, C, L)
        C, max_len = int(f.attrs["captions_per_image"]), int(f.attrs["max_len"])
    out: dict[int, list[str]] = {}
    for image_id, rows in zip(image_ids.tolist(), encoded):
        tokens = [normalize_caption(r) for r in references[image_id]]
        picked, _ = sample_captions(tokens, C, max_len, np.random.default_rng([seed, image_id]))
        if [vocab.encode(t, max_len) for t in picked] != rows.tolist():
            raise CaptError(f"{path}: the captions of image {image_id} are not those of its references sampled "
                            f"with prepare seed {seed}; rerun the prepare stage")
        out[image_id] = [" ".join(t) for t in picked]
    return out


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
    """What ``fit`` needs: the model, its parameters, a loss on a batch, a validation.

    ``captions`` and ``val_captions``: image id -> the caption texts of a training / validation
    image (``split_captions``); a batch's images are looked up by their ``image_id``.
    """

    def __init__(self, model: BlipForConditionalGeneration, processor: BlipProcessor,
                 captions: dict[int, list[str]], val_set: Dataset, val_captions: dict[int, list[str]],
                 val_references: dict[int, list[str]], cfg: TrainConfig, gen: GenerationConfig):
        self.model, self.processor, self.cfg = model, processor, cfg
        self.captions, self.val_captions = captions, val_captions
        self.val_set, self.val_references = val_set, val_references
        self.gen = gen
        self.device = torch.device("cpu")

    def to(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self.model.to(self.device)

    def param_groups(self, cfg: TrainConfig) -> list[dict]:
        return [{"params": [p for p in self.model.parameters() if p.requires_grad], "lr": cfg.lr}]

    def _lm_loss(self, batch: dict[str, torch.Tensor], captions: dict[int, list[str]]) -> torch.Tensor:
        """The mean token loss over every caption of the batch's B images (their N captions)."""
        per_image = [captions[i] for i in batch["image_id"].tolist()]
        texts = [f"{self.gen.prompt} {c}".strip() for image in per_image for c in image]       # (N,)
        counts = torch.tensor([len(image) for image in per_image], device=self.device)          # (B,)
        pixels = pixel_values(self.processor, batch["image"].cpu()).to(self.device)
        image_embeds = self.model.vision_model(pixel_values=pixels)[0]                          # (B, 1 + P, D)
        ids, mask, labels = lm_inputs(self.processor, texts, self.gen.prompt)                   # (N, L) each
        ids, mask, labels = ids.to(self.device), mask.to(self.device), labels.to(self.device)
        out = self.model.text_decoder(input_ids=ids, attention_mask=mask,
                                      encoder_hidden_states=image_embeds.repeat_interleave(counts, dim=0),
                                      labels=labels, reduction="mean")
        return out.loss

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        loss = self._lm_loss(batch, self.captions)
        return loss, {"loss": loss.item()}

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        loader = DataLoader(self.val_set, batch_size=self.cfg.batch_size, shuffle=False)
        gen = GenerationConfig(self.gen.prompt, self.cfg.val_beam_size, self.gen.max_length, self.gen.min_length)
        loss_sum, n_batches, hypotheses = 0.0, 0, {}
        for batch in loader:
            loss_sum, n_batches = loss_sum + self._lm_loss(batch, self.val_captions).item(), n_batches + 1
            hypotheses.update(zip(batch["image_id"].tolist(), caption_images(self.model, self.processor,
                                                                             batch["image"], gen)))
        scores = score_captions({i: self.val_references[i] for i in hypotheses}, hypotheses, meteor=False)
        return {"loss": loss_sum / max(n_batches, 1), "bleu4": scores["bleu4"], "cider": scores["cider"]}
