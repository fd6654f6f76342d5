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

from capt.config import build_config
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
    if not isinstance(ckpt, dict):
        raise CaptError(f"{path}: not a captioner checkpoint (it holds a {type(ckpt).__name__})")
    missing = {"encoder_config", "decoder_config", "words", "encoder", "decoder"} - set(ckpt)
    if missing:
        raise CaptError(f"{path}: not a captioner checkpoint (no {', '.join(sorted(missing))}; "
                        f"it holds {', '.join(sorted(map(str, ckpt))) or 'nothing'})")
    # The weights come from the file: never fetch ImageNet weights just to overwrite them.
    encoder = Encoder(_saved_config(EncoderConfig, {**ckpt["encoder_config"], "weights": None}, path, "encoder"))
    _load_weights(encoder, ckpt["encoder"], path, "encoder")
    try:
        vocab = Vocabulary(ckpt["words"])
    except CaptError as e:
        raise CaptError(f"{path}: {e}") from None
    # Its output layer has one row per word it can emit: a word list of another size would
    # name some of its predictions wrongly or not at all.
    predicts = ckpt["decoder"].get("fc.weight") if isinstance(ckpt["decoder"], dict) else None
    if isinstance(predicts, torch.Tensor) and predicts.shape[0] != len(vocab):
        raise CaptError(f"{path}: the word map has {len(vocab)} words but the model predicts {predicts.shape[0]}; "
                        "the file is damaged or was not written by capt: rerun the stage that writes it")
    decoder = AttentionDecoder(_saved_config(DecoderConfig, ckpt["decoder_config"], path, "decoder"), len(vocab),
                               encoder.feature_dim)
    _load_weights(decoder, ckpt["decoder"], path, "decoder")
    return Captioner(encoder, decoder, vocab, ckpt.get("image_size")).eval()


def _saved_config(cls: type, saved: dict, path: Path, part: str):
    """``saved`` checked and built into ``cls`` as a params section is (capt.config); a config of
    another version (a field added or gone) or an invalid value is one line."""
    try:
        return build_config(cls, saved, "", source=None)
    except CaptError as e:
        raise CaptError(f"{path}: its {part} config does not fit this capt ({e})") from None


def _load_weights(module: nn.Module, state: dict, path: Path, part: str, built_by: str = "its config") -> None:
    """``module.load_state_dict(state)``; weights that do not fit the module ``built_by`` built (another
    size, another model) end in one line: torch's message gives a line per tensor."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, TypeError) as e:        # TypeError: not a state dict at all
        # "Error(s) in loading state_dict for Encoder:\n\tsize mismatch for fc.weight: ...\n\t..."
        problems = [line.strip() for line in str(e).splitlines()[1:] if line.strip()] or [str(e).strip()]
        more = f"; and {len(problems) - 1} more" if len(problems) > 1 else ""
        raise CaptError(f"{path}: its {part} weights do not fit {built_by} ({problems[0]}{more})") from None


def save_encoder(path: Path, encoder: Encoder) -> None:
    """A trunk alone (stage pretrain's output): its config and state dict."""
    save_checkpoint({"encoder_config": dataclasses.asdict(encoder.cfg), "encoder": encoder.state_dict()}, path)


def load_encoder(path: Path, cfg: EncoderConfig) -> Encoder:
    """An encoder shaped by ``cfg`` (its ``fine_tune`` and ``encoded_size`` apply) with the trunk
    weights saved in ``path``, which must be the same ResNet cut at the same stage."""
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict) or not {"encoder_config", "encoder"} <= set(ckpt):
        raise CaptError(f"{path}: not an encoder checkpoint (no encoder_config and encoder); rerun its pretrain stage")
    saved = ckpt["encoder_config"]
    if (saved["name"], saved["stages"]) != (cfg.name, cfg.stages):
        raise CaptError(f"{path}: holds a {saved['name']} trunk of {saved['stages']} stages, but the params ask "
                        f"for {cfg.name} with {cfg.stages}; rerun its pretrain stage")
    encoder = Encoder(dataclasses.replace(cfg, weights=None))   # the weights come from the file
    _load_weights(encoder, ckpt["encoder"], path, "encoder", "the encoder the params ask for")
    return encoder


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
