"""A Hugging Face cache seeded with a tiny BLIP captioner, for tests and the COCO rehearsal.

It has the layout huggingface_hub itself writes (``models--<org>--<name>/blobs/``,
``snapshots/<commit>/`` of symlinks to the blobs, ``refs/main`` naming the commit) and the files of
``Salesforce/blip-image-captioning-base``, under their names and in their formats: a config, the
weights as ``pytorch_model.bin`` (a pickled state dict, the only PyTorch weights the repo's main
revision holds: its ``model.safetensors`` exists only on unmerged pull-request refs), the image
processor's ``preprocessor_config.json`` (384 px, CLIP mean and std) and the BERT tokenizer's files. The weights are a randomly initialised model with tiny widths
and one layer each, but the real image and patch sizes, so that every shape downstream of the
vision encoder (a 24 x 24 patch grid) is the real one. The repo's other formats are there too, as
junk, so that a test sees whether they are fetched.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch

from capt.blip.model import PICKLED_WEIGHTS, SmallBlipConfig, save_blip, small_blip

BASE = "Salesforce/blip-image-captioning-base"
# The real base model's vision input, and a model that is tiny everywhere else.
TINY = SmallBlipConfig(image_size=384, patch_size=16, vision_hidden=32, vision_layers=1, text_hidden=32,
                       text_layers=1, heads=2, max_positions=512)
# The weights as the real repo's main revision holds them, and the files of it that transformers
# never loads (TensorFlow weights, the model card): junk bytes of a plausible name.
WEIGHTS = PICKLED_WEIGHTS
UNLOADED = ("tf_model.h5", "README.md", ".gitattributes")
# What git LFS stores in the real repo; blobs of other files are named by their git hash.
LFS = (".safetensors", ".bin", ".h5")


def seed_blip_hub_cache(hub_cache: Path, words: list[str], pieces: dict[str, tuple[str, ...]], *,
                        repo_id: str = BASE, seed: int = 0) -> Path:
    """Write ``repo_id`` into the Hugging Face cache ``hub_cache`` (what ``HF_HUB_CACHE`` names) and
    return its snapshot folder. The tokenizer's vocabulary is BERT's special tokens, ``[DEC]``,
    ``words`` and the pieces of ``pieces``; each word of ``pieces`` (``{"skateboard": ("skate",
    "##board")}``) is left out of the vocabulary whole, so it tokenises into those pieces."""
    vocabulary = _vocabulary(words, pieces)
    model, processor = small_blip(dataclasses.replace(TINY, seed=seed), vocabulary)
    for word, expected in pieces.items():
        got = processor.tokenizer.tokenize(word)
        if got != list(expected):
            raise ValueError(f"{word!r} tokenises into {got}, not {list(expected)}")
    with tempfile.TemporaryDirectory() as tmp:
        files = _repo_files(model, processor, Path(tmp), seed)
        return _write_cache(Path(hub_cache), repo_id, files)


def _vocabulary(words: list[str], pieces: dict[str, tuple[str, ...]]) -> list[str]:
    """``words`` without those to be split, then every piece (the first of a word is a word start,
    the others continue it: ``##board``)."""
    for word, parts in pieces.items():
        if not parts or parts[0].startswith("##") or not all(p.startswith("##") for p in parts[1:]):
            raise ValueError(f"pieces of {word!r} must be a word start then ##continuations, got {parts}")
    whole = [w for w in words if w not in pieces]
    return list(dict.fromkeys([*whole, *(p for parts in pieces.values() for p in parts)]))


def _repo_files(model, processor, folder: Path, seed: int) -> dict[str, bytes]:
    """File name -> bytes, as the real repo has them."""
    save_blip(model, processor, folder / "saved")
    tokenizer = processor.tokenizer
    image = processor.image_processor
    files = {name: (folder / "saved" / name).read_bytes() for name in ("config.json", "tokenizer.json")}
    torch.save(model.state_dict(), folder / WEIGHTS)            # what transformers 4 wrote before safetensors
    files[WEIGHTS] = (folder / WEIGHTS).read_bytes()
    # The real repo predates transformers 5's processor_config.json: its image processor has a file
    # of its own, and its tokenizer a vocab.txt, a special-token map and a config without bos.
    files["preprocessor_config.json"] = _json({
        "do_normalize": True, "do_resize": True, "image_mean": list(image.image_mean),
        "image_processor_type": "BlipImageProcessor", "image_std": list(image.image_std),
        "processor_class": "BlipProcessor", "rescale_factor": 1 / 255, "size": image.size["height"]})
    files["tokenizer_config.json"] = _json({
        "cls_token": "[CLS]", "do_basic_tokenize": True, "do_lower_case": True, "mask_token": "[MASK]",
        "model_max_length": 512, "never_split": None, "pad_token": "[PAD]", "processor_class": "BlipProcessor",
        "sep_token": "[SEP]", "strip_accents": None, "tokenize_chinese_chars": True,
        "tokenizer_class": "BertTokenizer", "unk_token": "[UNK]"})
    files["special_tokens_map.json"] = _json({
        "bos_token": "[DEC]", "cls_token": "[CLS]", "mask_token": "[MASK]", "pad_token": "[PAD]",
        "sep_token": "[SEP]", "unk_token": "[UNK]"})
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    files["vocab.txt"] = "".join(f"{token}\n" for token, _ in vocab).encode()
    for name in UNLOADED:
        files[name] = hashlib.sha256(f"{name} {seed}".encode()).digest() * 64
    return files


def _json(value: dict) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()


def _blob_name(name: str, data: bytes) -> str:
    if name.endswith(LFS):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()      # git's object id


def _write_cache(hub_cache: Path, repo_id: str, files: dict[str, bytes]) -> Path:
    repo = hub_cache / f"models--{repo_id.replace('/', '--')}"
    blobs = {name: _blob_name(name, data) for name, data in files.items()}
    commit = hashlib.sha1("".join(f"{n} {b}\n" for n, b in sorted(blobs.items())).encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (repo / "blobs" / blobs[name]).write_bytes(data)
        link = snapshot / name
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(Path("..", "..", "blobs", blobs[name]), link)       # relative, as huggingface_hub links
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)                       # no newline, as huggingface_hub writes
    return snapshot


# ----------------------------------------------------------------------------- CLIP (capt.eval.clipscore)

CLIP_BASE = "openai/clip-vit-base-patch32"
# The real ViT-B/32's input (224 px, 32 px patches: a 7 x 7 grid), tiny everywhere else.
CLIP_IMAGE_SIZE, CLIP_PATCH_SIZE = 224, 32
# What openai/clip-vit-base-patch32's main revision holds that transformers never loads: junk bytes.
CLIP_UNLOADED = ("flax_model.msgpack", "tf_model.h5", "README.md", ".gitattributes")
# Its tokenizer's special tokens, as its tokenizer_config.json and special_tokens_map.json spell them.
_CLIP_TOKEN = {"lstrip": False, "normalized": True, "rstrip": False, "single_word": False}


def seed_clip_hub_cache(hub_cache: Path, words: list[str], *, repo_id: str = CLIP_BASE, seed: int = 0) -> Path:
    """Write a tiny random CLIP as ``repo_id`` into the Hugging Face cache ``hub_cache`` and return
    its snapshot folder. The files are those of ``openai/clip-vit-base-patch32``, in its formats:
    a config whose text tower pools at the highest token id (its ``eos_token_id`` is the legacy
    2, as the real one's), both weights formats (``model.safetensors`` and the pickled
    ``pytorch_model.bin``), the image processor's ``preprocessor_config.json`` in the old
    feature-extractor format (224 px, CLIP's mean and std), and the BPE tokenizer's files
    (``vocab.json``, ``merges.txt``, ``tokenizer.json``, ``tokenizer_config.json``,
    ``special_tokens_map.json``) over the prompt's words and ``words``; its Flax and TensorFlow
    weights as junk."""
    from capt.eval.clipscore import PROMPT, save_clip, small_clip, write_clip_tokenizer_files

    model, processor = small_clip(seed, words, image_size=CLIP_IMAGE_SIZE, patch_size=CLIP_PATCH_SIZE)
    image = processor.image_processor
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        save_clip(model, processor, folder / "saved")
        write_clip_tokenizer_files(folder / "bpe", [*PROMPT.split(), *words])     # small_clip's vocabulary
        config = json.loads((folder / "saved" / "config.json").read_text())
        config["text_config"].update({"bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1})
        files = {"config.json": _json(config),
                 "model.safetensors": (folder / "saved" / "model.safetensors").read_bytes(),
                 "tokenizer.json": (folder / "saved" / "tokenizer.json").read_bytes(),
                 "vocab.json": (folder / "bpe" / "vocab.json").read_bytes(),
                 "merges.txt": (folder / "bpe" / "merges.txt").read_bytes()}
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
        files["pytorch_model.bin"] = (folder / "pytorch_model.bin").read_bytes()
    files["preprocessor_config.json"] = _json({
        "crop_size": CLIP_IMAGE_SIZE, "do_center_crop": True, "do_normalize": True, "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": list(image.image_mean),
        "image_std": list(image.image_std), "resample": 3, "size": CLIP_IMAGE_SIZE})
    special = {"bos_token": {"content": "<|startoftext|>", **_CLIP_TOKEN},
               "eos_token": {"content": "<|endoftext|>", **_CLIP_TOKEN},
               "unk_token": {"content": "<|endoftext|>", **_CLIP_TOKEN}, "pad_token": "<|endoftext|>"}
    files["special_tokens_map.json"] = _json(special)
    files["tokenizer_config.json"] = _json({
        **special, "add_prefix_space": False, "do_lower_case": True, "errors": "replace", "model_max_length": 77,
        "name_or_path": repo_id, "processor_class": "CLIPProcessor", "tokenizer_class": "CLIPTokenizer"})
    for name in CLIP_UNLOADED:
        files[name] = hashlib.sha256(f"{name} {seed}".encode()).digest() * 64
    return _write_cache(Path(hub_cache), repo_id, files)
