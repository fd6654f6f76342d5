"""A trained captioner on disk: one file of configs, word list and state dicts.

``{"encoder_config": {...}, "decoder_config": {...}, "words": [...], "encoder": state_dict,
"decoder": state_dict}``: plain data, loadable with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from capt.data.vocab import Vocabulary
from capt.errors import CaptError
from capt.models.beam_search import Decoded, beam_search
from capt.models.checkpoint import load_checkpoint, save_checkpoint
from capt.models.decoder import AttentionDecoder, DecoderConfig
from capt.models.encoder import Encoder, EncoderConfig
from capt.models.gradcam import lstm_word_gradcam


@dataclass
class Captioner:
    encoder: Encoder
    decoder: AttentionDecoder
    vocab: Vocabulary
    image_size: int | None = None      # of the training images (None in files saved without it)

    def eval(self) -> Captioner:
        self.encoder.eval()
        self.decoder.eval()
        return self

    def to(self, device: torch.device) -> Captioner:
        self.encoder.to(device)
        self.decoder.to(device)
        return self

    @torch.no_grad()
    def caption(self, images: torch.Tensor, *, beam_size: int, max_len: int) -> list[Decoded]:
        """uint8 images (B, 3, S, S) -> one Decoded (tokens, per-word attention, score) each."""
        return beam_search(self.decoder, self.encoder(images), start=self.vocab.start, end=self.vocab.end,
                           beam_size=beam_size, max_len=max_len)

    def caption_dataset(self, dataset: Dataset, *, beam_size: int, max_len: int, batch_size: int = 32,
                        maps: bool = False, desc: str = "caption") -> tuple[dict[int, str], dict[str, dict]]:
        """Every image of a CaptionDataset captioned by beam search: (image id -> caption, technique ->
        image id -> (words, (T, P) maps)). With ``maps``, each word's soft ``attention`` (what beam
        search kept) and ``gradcam_encoder``, Grad-CAM on the encoder's last block for the word's
        logit (capt.models.gradcam); without, no maps (``{}``)."""
        hypotheses: dict[int, str] = {}
        word_maps: dict[str, dict] = {"attention": {}, "gradcam_encoder": {}} if maps else {}
        for batch in tqdm(DataLoader(dataset, batch_size=batch_size, shuffle=False), desc=desc, unit="batch"):
            decoded = self.caption(batch["image"], beam_size=beam_size, max_len=max_len)
            cams = (lstm_word_gradcam(self.encoder, self.decoder, batch["image"], [d.tokens for d in decoded],
                                      self.vocab.start, self.vocab.end) if maps else [None] * len(decoded))
            for image_id, d, cam in zip(batch["image_id"].tolist(), decoded, cams):
                hypotheses[image_id] = self.words(d)
                if maps:
                    words = [self.vocab.words[t] for t in d.tokens]
                    word_maps["attention"][image_id] = (words, d.alphas.numpy())
                    word_maps["gradcam_encoder"][image_id] = (words, cam.reshape(len(words), math.prod(cam.shape[1:])))   # 0 words: (0, P)
        return hypotheses, word_maps

    def words(self, decoded: Decoded) -> str:
        return " ".join(self.vocab.decode(decoded.tokens))


def save_captioner(path: Path, encoder: Encoder, decoder: AttentionDecoder, vocab: Vocabulary,
                   image_size: int | None = None) -> None:
    """``image_size``: the side the training images were resized to, so that a new photo can be
    prepared the same way (``capt caption``)."""
    save_checkpoint({"encoder_config": dataclasses.asdict(encoder.cfg),
                     "decoder_config": dataclasses.asdict(decoder.cfg),
                     "words": list(vocab.words), "image_size": image_size,
                     "encoder": encoder.state_dict(), "decoder": decoder.state_dict()}, path)


def load_captioner(path: Path) -> Captioner:
    ckpt = load_checkpoint(path)
    missing = {"encoder_config", "decoder_config", "words", "encoder", "decoder"} - set(ckpt)
    if missing:
        raise CaptError(f"{path}: not a captioner checkpoint (no {', '.join(sorted(missing))}; "
                        f"it holds {', '.join(sorted(map(str, ckpt))) or 'nothing'})")
    # The weights come from the file: never fetch ImageNet weights just to overwrite them.
    enc_cfg = EncoderConfig(**{**ckpt["encoder_config"], "weights": None})
    encoder = Encoder(enc_cfg)
    encoder.load_state_dict(ckpt["encoder"])
    vocab = Vocabulary(ckpt["words"])
    decoder = AttentionDecoder(DecoderConfig(**ckpt["decoder_config"]), len(vocab), encoder.feature_dim)
    decoder.load_state_dict(ckpt["decoder"])
    return Captioner(encoder, decoder, vocab, ckpt.get("image_size")).eval()


def save_encoder(path: Path, encoder: Encoder) -> None:
    """A trunk alone (stage pretrain's output): its config and state dict."""
    save_checkpoint({"encoder_config": dataclasses.asdict(encoder.cfg), "encoder": encoder.state_dict()}, path)


def load_encoder(path: Path, cfg: EncoderConfig) -> Encoder:
    """An encoder shaped by ``cfg`` (its ``fine_tune`` and ``encoded_size`` apply) with the trunk
    weights saved in ``path``, which must be the same ResNet cut at the same stage."""
    ckpt = load_checkpoint(path)
    saved = ckpt["encoder_config"]
    if (saved["name"], saved["stages"]) != (cfg.name, cfg.stages):
        raise CaptError(f"{path}: holds a {saved['name']} trunk of {saved['stages']} stages, but the params ask "
                        f"for {cfg.name} with {cfg.stages}; rerun its pretrain stage")
    encoder = Encoder(dataclasses.replace(cfg, weights=None))   # the weights come from the file
    encoder.load_state_dict(ckpt["encoder"])
    return encoder


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
