"""CLIPScore and RefCLIPScore: does a caption fit its image, in CLIP's eyes?

Hessel et al. 2021, "CLIPScore: A Reference-free Evaluation Metric for Image Captioning" (EMNLP),
through transformers' CLIP. With ``E_c`` the candidate caption's text embedding, ``E_v`` the
image's and ``E_r`` a reference caption's, all L2-normalised projections (``get_text_features`` /
``get_image_features``):

- ``CLIP-S(c, v) = w * max(cos(E_c, E_v), 0)``, ``w = 2.5``, the caption read with the prompt
  "A photo depicts" in front of it (``"A photo depicts " + caption``);
- ``RefCLIP-S(c, R, v) = H-mean(CLIP-S(c, v), max(max_{r in R} cos(E_c, E_r), 0))``, the
  harmonic mean ``2ab / (a + b)``, 0 where either part is 0.

Per image both are float64; the corpus score is their mean over the test images. Each is a mean
of per-image values, so its per-image statistics are ``[value, 1]`` (:func:`clip_s_statistics`,
:func:`ref_clip_s_statistics`) and :func:`corpus_mean` of their sums is the corpus score: the
bootstrap intervals and paired tests of capt.eval.bootstrap work on them as on CIDEr-D's.

What the reference implementation (github.com/jmhessel/clipscore, ``clipscore.py``) does, and
what is followed here:

- the prompt: every text, candidate *and reference*, is embedded as ``"A photo depicts " +
  text`` (its ``CLIPCapDataset`` prefixes whatever ``extract_all_captions`` embeds, references
  included); followed. Texts longer than CLIP's 77 tokens are truncated (``clip.tokenize(...,
  truncate=True)``); followed (the end-of-text token is kept);
- per image, ``RefCLIP-S = 2 * a * b / (a + b)`` with ``a`` the image's CLIP-S (``w``-scaled,
  clipped at 0) and ``b`` the unscaled maximum cosine between the candidate and the image's
  references; the corpus RefCLIP-S is the mean of these per-image values; followed. The code
  does not clip ``b`` at 0 (the paper's equation does) and gives NaN where ``a + b`` is 0: here
  ``b`` is clipped as in the paper and such an image scores 0. CLIP ViT-B/32's text-text cosines
  are positive in practice, so the two agree on real captions;
- images: the original file's shortest side resized to 224 px (PIL bicubic), centre-cropped,
  normalised with CLIP's mean and std. Here the images are the project's uint8 caches, each image
  already resized to a square S x S; the CLIP image processor resizes that square to the model's
  input (224 px for ViT-B/32) with PIL bicubic as well (its PIL backend where transformers has
  one), so there is no crop and the aspect ratio is the cache's, not the photo's;
- precision: the paper's numbers come from a GPU in float16; this computes in the model's dtype
  (float32 as loaded) and the cosines in float64.

Loading: :func:`load_clip` from a folder (``save_pretrained``'s, or a Hugging Face cache
snapshot), or from a repo id whose snapshot :func:`cached_clip` finds in the Hugging Face cache
without touching the network. :func:`small_clip` builds a tiny random CLIP with a byte-level BPE
tokenizer of CLIP's kind, for tests and offline runs.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer

from capt.errors import CaptError
from capt.eval.bootstrap import PairedComparison, paired_statistic, statistic_ci95
from capt.eval.per_image import read_stage_json, sort_key

PRETRAINED = "openai/clip-vit-base-patch32"     # ViT-B/32, the paper's CLIP
PROMPT = "A photo depicts"                      # the paper's prefix, before candidates and references
WEIGHT = 2.5                                    # w: stretches CLIP-S over about [0, 1]
# What CLIPModel.from_pretrained and the processor read beside the weights; those a repo lacks are
# skipped (openai's predates transformers 5's processor_config.json).
CONFIG_FILES = ("config.json", "preprocessor_config.json", "processor_config.json", "tokenizer.json",
                "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json")
WEIGHTS = ("model.safetensors", "pytorch_model.bin")      # in order of preference: one is needed
# The image processor that resizes with PIL, as the reference implementation does: transformers 5
# names it CLIPImageProcessorPil (its CLIPImageProcessor resizes with torchvision, up to ~2 grey
# levels apart); before 5, CLIPImageProcessor itself is the PIL one.
_PIL_IMAGE_PROCESSOR = getattr(transformers, "CLIPImageProcessorPil", transformers.CLIPImageProcessor)
# CLIP's special tokens, the last two ids of its vocabulary (the real model pools at the highest id).
START, END = "<|startoftext|>", "<|endoftext|>"
CONTEXT_LENGTH = 77                             # CLIP's text positions, start and end included
# The columns of the per-image statistics of either score: its value, and 1 (the mean's count).
CLIPSCORE_STATISTICS = ("score", "images")


# --------------------------------------------------------------------------- scores


@dataclass(frozen=True)
class ClipScores:
    """One model's captions scored by CLIP on one test set (``results/.../<model>-<dataset>``).

    ``image_ids``: N ids, sorted by :func:`capt.eval.per_image.sort_key`; ``clip_s``,
    ``ref_clip_s``: (N,) float64, image k's CLIP-S and RefCLIP-S; ``clip_model``: the CLIP that
    scored them (scores of two CLIPs are not comparable).
    """

    image_ids: tuple
    clip_s: np.ndarray
    ref_clip_s: np.ndarray
    clip_model: str = PRETRAINED

    def __post_init__(self):
        n = len(self.image_ids)
        if np.shape(self.clip_s) != (n,) or np.shape(self.ref_clip_s) != (n,):
            raise CaptError(f"CLIP scores of {n} images with CLIP-S {np.shape(self.clip_s)} and RefCLIP-S "
                            f"{np.shape(self.ref_clip_s)}")

    @property
    def clip_s_mean(self) -> float:
        """The test set's CLIP-S: the mean over its images."""
        return float(np.mean(self.clip_s))

    @property
    def ref_clip_s_mean(self) -> float:
        """The test set's RefCLIP-S: the mean over its images."""
        return float(np.mean(self.ref_clip_s))

    def to_json(self, model: str, dataset: str) -> dict:
        return {"model": model, "dataset": dataset, "clip_model": self.clip_model, "prompt": PROMPT,
                "weight": WEIGHT,
                "image_ids": [int(i) if isinstance(i, np.integer) else i for i in self.image_ids],
                "clip_s": np.asarray(self.clip_s, np.float64).tolist(),
                "ref_clip_s": np.asarray(self.ref_clip_s, np.float64).tolist()}

    def write(self, path: Path, model: str, dataset: str) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(model, dataset)) + "\n")

    @classmethod
    def read(cls, path: Path, stage: str) -> "ClipScores":
        """The scores an evaluation wrote (``stage`` names it, for the error line). Scores made
        with another prompt or weight are refused: they are another metric."""
        return cls.from_json(read_stage_json(path, stage), str(path), stage)

    @classmethod
    def from_json(cls, data, where: str, stage: str) -> "ClipScores":
        """:meth:`to_json`'s dict back (``where`` and ``stage`` name the file and its stage, for the error line)."""
        path = where
        keys = ("image_ids", "clip_s", "ref_clip_s", "clip_model", "prompt", "weight")
        if not isinstance(data, dict) or any(k not in data for k in keys):
            raise CaptError(f"{path}: not per-image CLIP scores ({', '.join(keys)}); run {stage} again")
        if data["prompt"] != PROMPT or data["weight"] != WEIGHT:
            raise CaptError(f"{path}: CLIP scores with prompt {data['prompt']!r} and weight {data['weight']}, not "
                            f"{PROMPT!r} and {WEIGHT}; run {stage} again")
        return cls(tuple(data["image_ids"]), np.asarray(data["clip_s"], np.float64),
                   np.asarray(data["ref_clip_s"], np.float64), data["clip_model"])


def clip_s_statistics(scores: ClipScores) -> np.ndarray:
    """Per image, what the test set's CLIP-S sums: (N, 2) float64, ``[CLIP-S, 1]``
    (``CLIPSCORE_STATISTICS``); :func:`corpus_mean` of their sum is ``scores.clip_s_mean``."""
    return _mean_statistics(scores.clip_s)


def ref_clip_s_statistics(scores: ClipScores) -> np.ndarray:
    """Per image, what the test set's RefCLIP-S sums: (N, 2) float64, ``[RefCLIP-S, 1]``."""
    return _mean_statistics(scores.ref_clip_s)


def _mean_statistics(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, np.float64)
    return np.stack([values, np.ones_like(values)], axis=1)


def corpus_mean(sums: np.ndarray) -> np.ndarray:
    """A mean of per-image scores from summed ``[value, 1]`` statistics: (..., 2) -> (...)
    float64, the summed values over the number of images summed (a resample's N)."""
    sums = np.asarray(sums, np.float64)
    if sums.shape[-1:] != (len(CLIPSCORE_STATISTICS),):
        raise CaptError(f"CLIPScore statistics have {len(CLIPSCORE_STATISTICS)} columns, got shape {sums.shape}")
    return sums[..., 0] / sums[..., 1]


def clipscore_cells(scores: ClipScores, resamples: int, seed: int) -> dict:
    """``clip_s``, ``ref_clip_s`` and their 95% percentile bootstrap intervals over the test images
    (``clip_s_ci95``, ``ref_clip_s_ci95``: ``[low, high]``), on the resamples every metric of this
    test set uses (capt.eval.bootstrap.resample_counts)."""
    return {"clip_s": scores.clip_s_mean,
            "clip_s_ci95": statistic_ci95(scores.image_ids, clip_s_statistics(scores), corpus_mean, resamples, seed),
            "ref_clip_s": scores.ref_clip_s_mean,
            "ref_clip_s_ci95": statistic_ci95(scores.image_ids, ref_clip_s_statistics(scores), corpus_mean,
                                              resamples, seed)}


def paired_clipscore(a: ClipScores, b: ClipScores, resamples: int, seed: int) -> dict[str, PairedComparison]:
    """CLIP-S and RefCLIP-S of a minus b (``"clip_s"``, ``"ref_clip_s"``), paired on their shared
    test set (capt.eval.bootstrap.paired_statistic); both scored by the same CLIP."""
    if a.clip_model != b.clip_model:
        raise CaptError(f"the two models were scored by different CLIPs ({a.clip_model} and {b.clip_model}): "
                        "score both with the same one")
    return {name: paired_statistic(a.image_ids, stats(a), b.image_ids, stats(b), corpus_mean, resamples, seed)
            for name, stats in (("clip_s", clip_s_statistics), ("ref_clip_s", ref_clip_s_statistics))}


def clip_s_of_cosines(cosines: np.ndarray) -> np.ndarray:
    """CLIP-S from image-caption cosines: ``w * max(cos, 0)``, (N,) -> (N,) float64."""
    return WEIGHT * np.maximum(np.asarray(cosines, np.float64), 0.0)


def ref_clip_s_of(clip_s: np.ndarray, best_reference_cosines: np.ndarray) -> np.ndarray:
    """RefCLIP-S from CLIP-S (N,) and each candidate's highest cosine to its references (N,):
    the harmonic mean of CLIP-S and ``max(best cosine, 0)``; 0 where either is 0 (H-mean's
    limit; the reference code's 0/0 is NaN when both are)."""
    a = np.asarray(clip_s, np.float64)
    b = np.maximum(np.asarray(best_reference_cosines, np.float64), 0.0)
    total = a + b
    return np.divide(2 * a * b, total, out=np.zeros_like(total), where=total > 0)


# --------------------------------------------------------------------------- embedding


def pixel_values(processor: CLIPProcessor, images: torch.Tensor) -> torch.Tensor:
    """uint8 images (B, 3, S, S) -> CLIP's normalised input (B, 3, R, R).

    The processor sees uint8 arrays: it resizes them as 8-bit pictures (PIL bicubic), then
    rescales by 1/255 (``do_rescale``) and normalises. Floats in [0, 1] would be read as already
    rescaled pictures of another kind, so anything but uint8 is refused."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise CaptError(f"CLIPScore takes uint8 RGB images (B, 3, S, S), got {images.dtype} {tuple(images.shape)}")
    arrays = [np.ascontiguousarray(im) for im in images.cpu().numpy()]
    return processor.image_processor(arrays, input_data_format="channels_first", return_tensors="pt")["pixel_values"]


def text_inputs(processor: CLIPProcessor, model: CLIPModel, texts: list[str]) -> dict[str, torch.Tensor]:
    """``PROMPT + " " + text`` for each text, tokenised: ``input_ids`` and ``attention_mask`` (B, L),
    padded on the right, truncated to the model's text positions (the end-of-text token kept)."""
    tokenizer = processor.tokenizer
    limit = min(int(tokenizer.model_max_length), int(model.config.text_config.max_position_embeddings))
    prompted = [f"{PROMPT} {t}" for t in texts]
    return dict(tokenizer(prompted, padding=True, truncation=True, max_length=limit, return_tensors="pt"))


def _projected(out) -> torch.Tensor:
    """transformers 5 returns the projection as an output's ``pooler_output``, 4 as a tensor."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _unit(embeddings: torch.Tensor) -> np.ndarray:
    """(B, D) -> (B, D) float64, each row L2-normalised."""
    e = embeddings.detach().to("cpu", torch.float64).numpy()
    return e / np.linalg.norm(e, axis=1, keepdims=True)


@torch.inference_mode()
def embed_images(model: CLIPModel, processor: CLIPProcessor, images: torch.Tensor, batch_size: int) -> np.ndarray:
    """uint8 images (N, 3, S, S) -> unit image embeddings (N, D) float64, ``batch_size`` at a time."""
    out = []
    for start in range(0, len(images), batch_size):
        pixels = pixel_values(processor, images[start:start + batch_size]).to(model.device, model.dtype)
        out.append(_unit(_projected(model.get_image_features(pixel_values=pixels))))
    return np.concatenate(out) if out else np.zeros((0, model.config.projection_dim))


@torch.inference_mode()
def embed_texts(model: CLIPModel, processor: CLIPProcessor, texts: list[str], batch_size: int) -> np.ndarray:
    """Texts (N,) -> unit embeddings (N, D) float64 of each with the prompt before it."""
    out = []
    for start in range(0, len(texts), batch_size):
        tokens = text_inputs(processor, model, texts[start:start + batch_size])
        inputs = {k: v.to(model.device) for k, v in tokens.items()}
        out.append(_unit(_projected(model.get_text_features(**inputs))))
    return np.concatenate(out) if out else np.zeros((0, model.config.projection_dim))


ImageBatches = Iterable[Mapping | tuple]


def _batches(images: torch.Tensor | ImageBatches, image_ids: Sequence | None):
    """(ids, uint8 images (B, 3, S, S)) pairs from a tensor with its ids, or from batches: dicts
    with ``image`` and ``image_id`` (a DataLoader over capt.data.dataset.CaptionDataset) or
    ``(ids, images)`` pairs."""
    if isinstance(images, torch.Tensor):
        if image_ids is None or len(image_ids) != len(images):
            raise CaptError(f"{len(images)} images need as many image_ids, got "
                            f"{'none' if image_ids is None else len(image_ids)}")
        yield list(image_ids), images
        return
    if image_ids is not None:
        raise CaptError("image_ids go with a tensor of images; batches carry their own ids")
    for batch in images:
        ids, pixels = (batch["image_id"], batch["image"]) if isinstance(batch, Mapping) else batch
        ids = ids.tolist() if isinstance(ids, (torch.Tensor, np.ndarray)) else list(ids)
        yield ids, pixels


def _check_captions(image_ids: list, hypotheses: Mapping, references: Mapping) -> None:
    """Every image has a hypothesis and at least one reference (RefCLIP-S needs them)."""
    for what, lacking in (("hypothesis", [i for i in image_ids if i not in hypotheses]),
                          ("reference captions", [i for i in image_ids if not references.get(i)])):
        if lacking:
            more = f" (and {len(lacking) - 1} more of these {len(image_ids)} images)" if len(lacking) > 1 else ""
            raise CaptError(f"no {what} for image {lacking[0]}{more}: CLIPScore needs one caption and "
                            "references per image")


def score_clip(model: CLIPModel, processor: CLIPProcessor, images: torch.Tensor | ImageBatches,
               hypotheses: Mapping, references: Mapping, *, batch_size: int = 64,
               device: torch.device | str | None = None, image_ids: Sequence | None = None,
               clip_model: str | None = None) -> ClipScores:
    """CLIP-S and RefCLIP-S of each image's hypothesis (``hypotheses``: image id -> caption)
    against the image and its ``references`` (image id -> captions).

    ``images``: uint8 (N, 3, S, S) with their ``image_ids``, or an iterable of batches (dicts
    with ``image`` (B, 3, S, S) uint8 and ``image_id`` (B,), or ``(ids, images)`` pairs). Images,
    hypotheses and references are embedded ``batch_size`` at a time on ``device`` (default: where
    the model is; the model is moved there), without gradients; the scores come back sorted by image id, and do not depend
    on the batch size beyond float rounding. ``clip_model`` names the scorer (default: what the
    model was loaded from). Hypotheses and references of images not given are ignored.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise CaptError(f"CLIPScore batch_size must be a positive integer, got {batch_size!r}")
    if device is not None:
        model = model.to(device)
    model.eval()
    ids: list = []
    image_embeddings = []
    for batch_ids, pixels in _batches(images, image_ids):
        if len(batch_ids) != len(pixels):
            raise CaptError(f"a batch of {len(pixels)} images came with {len(batch_ids)} image ids")
        _check_captions(batch_ids, hypotheses, references)        # before the batch's images are embedded
        ids.extend(batch_ids)
        image_embeddings.append(embed_images(model, processor, pixels, batch_size))
    if not ids:
        raise CaptError("CLIPScore got no images")
    if len(set(ids)) != len(ids):
        raise CaptError(f"image ids repeat ({len(ids)} images, {len(set(ids))} distinct): one caption per image")
    order = sorted(range(len(ids)), key=lambda k: sort_key(ids[k]))
    ids = [ids[k] for k in order]
    images_e = np.concatenate(image_embeddings)[order]                           # (N, D)

    candidates = embed_texts(model, processor, [str(hypotheses[i]) for i in ids], batch_size)
    flat = [str(r) for i in ids for r in references[i]]
    owner = np.repeat(np.arange(len(ids)), [len(references[i]) for i in ids])      # (M,): whose reference
    refs = embed_texts(model, processor, flat, batch_size)

    clip_s = clip_s_of_cosines(np.sum(candidates * images_e, axis=1))
    ref_cosines = np.sum(candidates[owner] * refs, axis=1)                        # (M,)
    best = np.full(len(ids), -np.inf)
    np.maximum.at(best, owner, ref_cosines)
    name = clip_model if clip_model is not None else (model.name_or_path or "unnamed CLIP")
    return ClipScores(tuple(ids), clip_s, ref_clip_s_of(clip_s, best), name)


# --------------------------------------------------------------------------- loading


def fetch_command(repo: str) -> str:
    """The command that puts what :func:`load_clip` needs of ``repo`` into the Hugging Face cache."""
    return f"hf download {repo} {' '.join(CONFIG_FILES)} {WEIGHTS[0]}"


def hub_cache_dir() -> Path:
    """The Hugging Face cache as ``HF_HUB_CACHE`` names it now (huggingface_hub reads it once, at
    import)."""
    from huggingface_hub import constants

    return Path(os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE)


def cached_clip(repo: str = PRETRAINED, cache_dir: Path | None = None) -> Path:
    """The snapshot folder of ``repo`` in the Hugging Face cache (default :func:`hub_cache_dir`)
    that ``refs/main`` names, checked to hold what :func:`load_clip` reads: a config, the image
    processor's config, a tokenizer (``tokenizer.json``, or ``vocab.json`` and ``merges.txt``) and
    one weights format. Reads the cache only, never the network; one error line says what to
    fetch where."""
    from huggingface_hub import try_to_load_from_cache

    cache = Path(cache_dir) if cache_dir is not None else hub_cache_dir()
    found = {name: try_to_load_from_cache(repo, name, cache_dir=cache) for name in (*CONFIG_FILES, *WEIGHTS)}
    found = {name: Path(path) for name, path in found.items() if isinstance(path, str)}
    howto = (f"fetch it on a machine with internet: `{fetch_command(repo)}` (or {WEIGHTS[1]}) and copy that "
             f"machine's Hugging Face cache to {cache}, or set evaluate.clipscore: off")
    if not found:
        raise CaptError(f"{repo} is not in the Hugging Face cache ({cache}); {howto}")
    needs = (("config.json",), ("preprocessor_config.json", "processor_config.json"),
             ("tokenizer.json", "vocab.json"), WEIGHTS)
    missing = [" or ".join(names) for names in needs if not set(names) & set(found)]
    if "tokenizer.json" not in found and "vocab.json" in found and "merges.txt" not in found:
        missing.append("merges.txt")
    if missing:
        raise CaptError(f"the Hugging Face cache ({cache}) holds {repo} without {', '.join(missing)}; {howto}")
    folders = {path.parent for path in found.values()}
    if len(folders) != 1:        # pragma: no cover - try_to_load_from_cache reads one snapshot
        raise CaptError(f"{repo}'s files in the Hugging Face cache ({cache}) are in several snapshots")
    return folders.pop()


def load_clip(folder_or_repo: Path | str = PRETRAINED) -> tuple[CLIPModel, CLIPProcessor]:
    """A CLIP and its processor from a folder (``save_clip``'s, or any with CLIP's config,
    tokenizer and weights), or from a repo id (``openai/clip-vit-base-patch32``) whose snapshot is
    in the Hugging Face cache (:func:`cached_clip`). Never touches the network. The image processor
    is the PIL one (:data:`_PIL_IMAGE_PROCESSOR`), as the reference implementation resizes."""
    source = str(folder_or_repo)
    folder = Path(source)
    repo = None
    if not folder.exists() and source.count("/") == 1 and not source.startswith((".", "/", "~")):
        repo, folder = source, cached_clip(source)
    if not (folder / "config.json").exists():
        raise CaptError(f"{folder}: no CLIP model here (no config.json); save one with save_clip, or give the hub "
                        f"repo id ({PRETRAINED}) to read it from the Hugging Face cache")
    try:
        model = CLIPModel.from_pretrained(folder, local_files_only=True)
        tokenizer = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
        image_processor = _PIL_IMAGE_PROCESSOR.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as e:
        raise CaptError(f"{folder}: cannot load it as a CLIP ({e})".splitlines()[0]) from None
    if repo is not None:
        _name(model, repo)                        # what from_pretrained(repo) itself would record
    return model.eval(), CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def _name(model: CLIPModel, name: str) -> None:
    """What the model says it was loaded from (transformers copies the config's name at init)."""
    model.config.name_or_path = name
    model.name_or_path = name


def save_clip(model: CLIPModel, processor: CLIPProcessor, folder: Path) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


# --------------------------------------------------------------------------- a small CLIP


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's (and CLIP's) byte-level alphabet: each byte -> a printable character."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def clip_bpe_files(words: Iterable[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A CLIP-style byte-level BPE vocabulary and merges for ``words``: ``vocab.json`` and
    ``merges.txt`` contents, laid out as CLIP's are (the 256 byte characters, the same with the
    end-of-word mark ``</w>``, one token per merge, then ``<|startoftext|>`` and ``<|endoftext|>``,
    the highest ids). Each word gets the merges that join it left to right, so it is usually one
    token; any other text still tokenises, byte by byte."""
    alphabet = _bytes_to_unicode()
    tokens = list(alphabet.values())
    tokens += [t + "</w>" for t in tokens]
    merges: list[tuple[str, str]] = []
    seen = set()
    for word in words:
        for piece in str(word).lower().split():
            symbols = [alphabet[b] for b in piece.encode("utf-8")]
            symbols[-1] += "</w>"
            joined = symbols[0]
            for symbol in symbols[1:]:
                if (joined, symbol) not in seen:
                    seen.add((joined, symbol))
                    merges.append((joined, symbol))
                joined += symbol
    tokens += list(dict.fromkeys(a + b for a, b in merges))
    tokens += [START, END]
    return {t: i for i, t in enumerate(tokens)}, merges


def write_clip_tokenizer_files(folder: Path, words: Iterable[str]) -> None:
    """``vocab.json`` and ``merges.txt`` of :func:`clip_bpe_files` in ``folder``, in CLIP's formats."""
    vocab, merges = clip_bpe_files(words)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))


def clip_tokenizer(words: Iterable[str]) -> CLIPTokenizer:
    """A CLIP tokenizer (lower case, byte-level BPE, ``<|startoftext|>`` ... ``<|endoftext|>``,
    77 positions) over the small vocabulary of :func:`clip_bpe_files`; offline."""
    with tempfile.TemporaryDirectory() as tmp:
        write_clip_tokenizer_files(Path(tmp), words)
        return CLIPTokenizer.from_pretrained(tmp, model_max_length=CONTEXT_LENGTH, local_files_only=True)


def small_clip(seed: int = 0, words: Iterable[str] = (), *, image_size: int = 32, patch_size: int = 8,
               width: int = 32, projection_dim: int = 16, heads: int = 2) -> tuple[CLIPModel, CLIPProcessor]:
    """A randomly initialised (seeded) CLIP with one layer per tower and tiny widths, its tokenizer
    over the prompt's words and ``words`` (:func:`clip_tokenizer`), and a PIL image processor of
    CLIP's kind at ``image_size`` (resize the short side, centre crop, CLIP's mean and std)."""
    if image_size % patch_size:
        raise CaptError(f"small CLIP image_size {image_size} is not a multiple of patch_size {patch_size}")
    tokenizer = clip_tokenizer([*PROMPT.split(), *words])
    tower = {"hidden_size": width, "intermediate_size": 4 * width, "num_hidden_layers": 1,
             "num_attention_heads": heads, "projection_dim": projection_dim}
    config = CLIPConfig(
        text_config={**tower, "vocab_size": len(tokenizer), "max_position_embeddings": CONTEXT_LENGTH,
                     "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                     "pad_token_id": tokenizer.pad_token_id},
        vision_config={**tower, "image_size": image_size, "patch_size": patch_size},
        projection_dim=projection_dim)
    torch.manual_seed(seed)
    model = CLIPModel(config)
    _name(model, f"small CLIP (seed {seed})")
    image_processor = _PIL_IMAGE_PROCESSOR(size={"shortest_edge": image_size},
                                           crop_size={"height": image_size, "width": image_size})
    return model.eval(), CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
