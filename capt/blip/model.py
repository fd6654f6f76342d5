"""BLIP captioning through transformers: the pretrained COCO captioner, or a small one from a config.

The real profile loads ``Salesforce/blip-image-captioning-base`` from a local folder (fetched by a
stage into a DVC-tracked directory) with ``local_files_only``. The embedded profile builds a small
``BlipForConditionalGeneration`` from a config, with a BERT tokenizer made from the project's own
vocabulary, so that every line of the captioning and Grad-CAM code runs offline.

Generation follows the published captioning settings: a text prompt ("a picture of") that the
decoder continues, beam search, a minimum and maximum length; the prompt is stripped from the
caption. Prompts are tokenised once and repeated over the batch: every row has the same length,
so batched generation never pads a prompt (BLIP decodes padded prompts wrongly).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor
from transformers.utils.import_utils import is_torch_greater_or_equal

from capt.config import CHECKED, ConfigError, Count, Int, NonNegativeInt, build_config, with_config
from capt.errors import CaptError
from capt.files import atomic_folder, write_atomic

# BERT's special tokens, then BLIP's decoder start token (Salesforce's processor adds it as bos).
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]")
PRETRAINED = "Salesforce/blip-image-captioning-base"


PICKLED_WEIGHTS = "pytorch_model.bin"     # Salesforce/blip-image-captioning-base's only PyTorch weights


@with_config(CHECKED)
@dataclass(frozen=True)
class SmallBlipConfig:
    """A BLIP small enough to fine-tune on a CPU in the embedded profile."""

    image_size: Count = 64
    patch_size: Count = 8          # (image_size / patch_size)^2 patches: the Grad-CAM grid
    vision_hidden: Count = 64
    vision_layers: Count = 2
    text_hidden: Count = 64
    text_layers: Count = 2
    heads: Count = 2
    max_positions: Count = 40
    seed: Int = 0

    def __post_init__(self):
        if self.image_size % self.patch_size:
            raise ConfigError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        for name in ("vision_hidden", "text_hidden"):
            if getattr(self, name) % self.heads:
                raise ConfigError(f"{name} {getattr(self, name)} is not a multiple of heads {self.heads}")


@with_config(CHECKED)
@dataclass(frozen=True)
class GenerationConfig:
    prompt: str = "a picture of"
    num_beams: Count = 3
    max_length: Count = 20         # tokens, prompt included (as in the published settings)
    min_length: NonNegativeInt = 5

    def __post_init__(self):
        if self.min_length > self.max_length:
            raise ConfigError(f"min_length {self.min_length} is above max_length {self.max_length}")


@with_config(CHECKED)
@dataclass(frozen=True)
class BlipStudyConfig:
    """The study's BLIP: which one it starts from, how it captions, how it is fine-tuned."""

    dataset: str                   # the prepared dataset it is fine-tuned on (and whose words a small one knows)
    source: Literal["small", "pretrained"] = "small"   # small: built from ``small``; pretrained: ``pretrained``'s weights
    pretrained: str = PRETRAINED   # a Hugging Face repo id in the local cache
    small: SmallBlipConfig = field(default_factory=SmallBlipConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    train: dict[str, Any] = field(default_factory=dict)   # a TrainConfig, but epochs 0 is zero-shot: no fine-tuning


def words_tokenizer(words: list[str]) -> BertTokenizer:
    """A BERT WordPiece tokenizer whose vocabulary is exactly ``words`` (whole words, lower case)
    after BERT's special tokens and ``[DEC]``, BLIP's beginning-of-caption token."""
    vocab: dict[str, int] = {}
    for w in (*SPECIAL_TOKENS, *words):
        vocab.setdefault(w, len(vocab))
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True)
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    return tokenizer


def small_blip(cfg: SmallBlipConfig, words: list[str]) -> tuple[BlipForConditionalGeneration, BlipProcessor]:
    """A randomly initialised BLIP captioner (seeded) and its processor."""
    tokenizer = words_tokenizer(words)
    config = BlipConfig(
        vision_config={"hidden_size": cfg.vision_hidden, "intermediate_size": 4 * cfg.vision_hidden,
                       "num_hidden_layers": cfg.vision_layers, "num_attention_heads": cfg.heads,
                       "image_size": cfg.image_size, "patch_size": cfg.patch_size,
                       "initializer_range": 0.02},   # the vision default (1e-10) leaves a random model blind
        text_config={"vocab_size": len(tokenizer), "hidden_size": cfg.text_hidden,
                     "intermediate_size": 4 * cfg.text_hidden, "num_hidden_layers": cfg.text_layers,
                     "num_attention_heads": cfg.heads, "encoder_hidden_size": cfg.vision_hidden,
                     "max_position_embeddings": cfg.max_positions, "bos_token_id": tokenizer.bos_token_id,
                     "pad_token_id": tokenizer.pad_token_id, "sep_token_id": tokenizer.sep_token_id,
                     "eos_token_id": tokenizer.sep_token_id},
    )
    config._attn_implementation = "eager"       # cross-attention maps must be returned, with gradients
    torch.manual_seed(cfg.seed)
    model = BlipForConditionalGeneration(config)
    image_processor = BlipImageProcessor(size={"height": cfg.image_size, "width": cfg.image_size})
    return model.eval(), BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)


def save_blip(model: BlipForConditionalGeneration, processor: BlipProcessor, folder: Path) -> None:
    """``folder`` replaced by the model's and processor's files, whole or not at all."""
    with atomic_folder(Path(folder)) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)


def load_blip(folder: Path) -> tuple[BlipForConditionalGeneration, BlipProcessor]:
    """A BLIP captioner saved with ``save_blip`` or fetched from the hub into ``folder``; never
    touches the network. A missing folder names the command that fetches it."""
    folder = Path(folder)
    if not (folder / "config.json").exists():
        raise CaptError(f"{folder}: no BLIP model here; fetch it with `dvc repro blip_weights` "
                        f"(or `hf download {PRETRAINED} --local-dir {folder}`)")
    pickled = folder / PICKLED_WEIGHTS
    if pickled.exists() and not any(folder.glob("*.safetensors")) and not is_torch_greater_or_equal("2.6"):
        # transformers refuses torch.load below 2.6 (CVE-2025-32434) with a message about a vulnerability
        raise CaptError(f"{pickled}: transformers loads pickled weights only with torch >= 2.6 and this is torch "
                        f"{torch.__version__}; upgrade it (pip install 'torch>=2.6')")
    try:
        model = BlipForConditionalGeneration.from_pretrained(folder, local_files_only=True,
                                                             attn_implementation="eager")
        processor = BlipProcessor.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as e:
        raise CaptError(f"{folder}: cannot load it as a BLIP captioner ({e})".splitlines()[0]) from None
    return model.eval(), processor


def pixel_values(processor: BlipProcessor, images: torch.Tensor) -> torch.Tensor:
    """uint8 images (B, 3, S, S) -> the model's normalised input (B, 3, R, R)."""
    arrays = [np.ascontiguousarray(im) for im in images.numpy()]
    return processor.image_processor(arrays, input_data_format="channels_first", return_tensors="pt")["pixel_values"]


def input_size(processor: BlipProcessor) -> int:
    """R: the side of the square images the vision encoder takes (384 for the pretrained BLIP)."""
    size = processor.image_processor.size
    return int(size["height"]) if "height" in size else int(size["shortest_edge"])


def prompt_ids(processor: BlipProcessor, prompt: str, batch_size: int) -> torch.Tensor:
    """``[CLS] prompt [SEP]`` ids (B, Lp), the same row repeated: BLIP's generate swaps [CLS] for
    [DEC] and drops the [SEP] so that the decoder continues the prompt."""
    ids = processor.tokenizer(prompt, return_tensors="pt")["input_ids"]
    if (ids == processor.tokenizer.unk_token_id).any():
        raise CaptError(f"the BLIP prompt {prompt!r} has words outside the tokenizer's vocabulary")
    return ids.repeat(batch_size, 1)


def strip_prompt(caption: str, prompt: str) -> str:
    caption, prompt = caption.strip(), prompt.strip().lower()
    return caption[len(prompt):].strip() if prompt and caption.lower().startswith(prompt) else caption


def inference_dtype(device: torch.device) -> torch.dtype:
    """What generation computes in: bf16 on a GPU that has it, fp16 on other GPUs, fp32 on a CPU."""
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@torch.no_grad()
def generate_ids(model: BlipForConditionalGeneration, processor: BlipProcessor, images: torch.Tensor,
                 gen: GenerationConfig) -> torch.Tensor:
    """uint8 images (B, 3, S, S) -> generated ids (B, L): ``[DEC] prompt words [SEP] [PAD]..``."""
    pixels = pixel_values(processor, images).to(model.device, model.dtype)
    ids = prompt_ids(processor, gen.prompt, len(images)).to(model.device)
    dtype = inference_dtype(model.device)
    with torch.autocast(device_type=model.device.type, dtype=dtype, enabled=dtype != torch.float32):
        return model.generate(pixel_values=pixels, input_ids=ids, num_beams=gen.num_beams,
                              max_length=gen.max_length, min_length=gen.min_length, do_sample=False)


def caption_images(model: BlipForConditionalGeneration, processor: BlipProcessor, images: torch.Tensor,
                   gen: GenerationConfig) -> list[str]:
    """uint8 images (B, 3, S, S) -> one caption each, the prompt stripped."""
    out = generate_ids(model, processor, images, gen)
    return [strip_prompt(t, gen.prompt) for t in processor.tokenizer.batch_decode(out, skip_special_tokens=True)]


GENERATION_FILE = "capt_generation.json"


def save_generation(gen: GenerationConfig, folder: Path) -> None:
    """The caption settings travel with the model folder, so every user of it decodes alike."""
    import dataclasses
    import json

    write_atomic(Path(folder) / GENERATION_FILE, json.dumps(dataclasses.asdict(gen), indent=2) + "\n")


def read_generation(folder: Path) -> GenerationConfig:
    import json

    path = Path(folder) / GENERATION_FILE
    if not path.exists():
        return GenerationConfig()
    try:
        values = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CaptError(f"{path}: not readable JSON ({e})") from None
    return build_config(GenerationConfig, values, "", source=str(path))     # a key or value out of place: named


def merge_wordpieces(tokens: list[str], maps: torch.Tensor,
                     special: Collection[str] = SPECIAL_TOKENS) -> tuple[list[str], torch.Tensor]:
    """WordPiece tokens (T,) and their maps (T, ...) -> words (W,) and maps (W, ...).

    BERT's WordPiece (Wu et al. 2016, as BLIP tokenises) splits a word outside its vocabulary into
    a word start and ``##`` continuations (``skate ##board``). A continuation joins the word before
    it, and the map of a merged word is the mean of its pieces' maps (each piece's Grad-CAM is for
    that piece's own log-probability; the mean keeps a word's map on the scale of a one-piece
    word's). Special tokens (``[SEP]``, ``[UNK]``, ...) are dropped with their maps, as
    ``decode(skip_special_tokens=True)`` drops them from the caption text; a continuation after a
    dropped token joins the word before that, as in the decoded text. A continuation with no word
    before it starts a word of its own, without its ``##``.

    Punctuation, which BERT splits off into tokens of its own, stays a word of its own (with its
    own map): ``" ".join(words)`` is the decoded caption whenever it has no punctuation, and the
    caption's text otherwise differs only by the spaces the tokenizer's decoder takes out before a
    mark (``dog .`` -> ``dog.``). No object word of the grounding lexicon holds punctuation.
    """
    words: list[str] = []
    pieces: list[list[int]] = []                     # token positions of each word
    for t, token in enumerate(tokens):
        if token in special:
            continue
        if token.startswith("##") and words:
            words[-1] += token[2:]
            pieces[-1].append(t)
        else:
            words.append(token.removeprefix("##"))
            pieces.append([t])
    if not words:
        return words, maps.new_zeros((0, *maps.shape[1:]))
    return words, torch.stack([maps[p].mean(0) for p in pieces])


def caption_with_gradcam(model: BlipForConditionalGeneration, processor: BlipProcessor, images: torch.Tensor,
                         gen: GenerationConfig, gradcam_layer: int = -1) -> list[tuple[str, list[str], np.ndarray]]:
    """uint8 images (B, 3, S, S) -> for each: (caption without the prompt, its words, one
    Grad-CAM map (G, G) per word).

    The words are the generated WordPiece tokens merged by ``merge_wordpieces``: ``skate ##board``
    is one word ``skateboard`` whose map is the mean of its two pieces' maps, and special tokens
    are left out, as the caption's text leaves them out."""
    from capt.blip.gradcam import word_gradcam

    tok = processor.tokenizer
    n_prompt = prompt_ids(processor, gen.prompt, 1).shape[1] - 1
    ids = generate_ids(model, processor, images, gen)                       # bf16/fp16 on a GPU
    pixels = pixel_values(processor, images).to(model.device)               # Grad-CAM in fp32
    special = set(tok.all_special_tokens)
    out = []
    for k in range(len(images)):
        positions, maps = word_gradcam(model, pixels[k:k + 1], ids[k], n_prompt, gradcam_layer)   # (T, G, G)
        tokens = tok.convert_ids_to_tokens([int(ids[k, t + 1]) for t in positions])
        words, word_maps = merge_wordpieces(tokens, maps, special)                                # (W, G, G)
        caption = strip_prompt(tok.decode(ids[k], skip_special_tokens=True), gen.prompt)
        out.append((caption, words, word_maps.cpu().numpy()))
    return out


def caption_dataset(model: BlipForConditionalGeneration, processor: BlipProcessor, dataset, gen: GenerationConfig,
                    *, batch_size: int = 32, gradcam_layer: int = -1,
                    progress: bool = True) -> dict[int, tuple[str, list[str], np.ndarray]]:
    """image id -> (caption without the prompt, its words, one Grad-CAM map (G, G) per word) for
    every image of a CaptionDataset: WordPiece pieces merged into words, special tokens left out
    (``caption_with_gradcam``)."""
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    out: dict[int, tuple[str, list[str], np.ndarray]] = {}
    for batch in tqdm(DataLoader(dataset, batch_size=batch_size, shuffle=False), desc="blip", unit="batch",
                      disable=not progress):
        results = caption_with_gradcam(model, processor, batch["image"], gen, gradcam_layer)
        out.update(zip(batch["image_id"].tolist(), results))
    return out
