"""Stage blip_weights: the BLIP captioner the study starts from, in a DVC-tracked folder.

Params: ``blip`` (source, pretrained, small). ``source: pretrained`` copies the hub model
(``blip.pretrained``, e.g. Salesforce/blip-image-captioning-base) into ``models/blip_init/``: only
the files transformers loads (config, processor and tokenizer files, one weights format), never
the repo's other formats (GBs of TensorFlow and duplicate PyTorch weights). huggingface_hub fetches
them into its cache (``HF_HUB_CACHE``); offline (``HF_HUB_OFFLINE=1``, or no network) they come from
the snapshot that cache holds. ``source: small`` (the embedded profile, offline) builds a small
randomly initialised BLIP from ``blip.small`` with a tokenizer made from the prepared vocabulary
of ``blip.dataset``. Either way, the ``blip`` stage fine-tunes (or, with 0 epochs, copies) it.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import typer

from capt.blip.model import BlipStudyConfig, load_blip, save_blip, small_blip
from capt.data.vocab import SPECIALS, Vocabulary
from capt.errors import CaptError
from capt.files import atomic_folder
from stages._common import read_config, stage_main

log = logging.getLogger("stages.blip_weights")
OUT = Path("models/blip_init")
# What BlipForConditionalGeneration.from_pretrained and BlipProcessor.from_pretrained read, beside the
# weights; those a repo lacks are skipped (Salesforce's has no generation_config.json, and predates
# transformers 5's processor_config.json, which holds the image processor's settings in newer repos).
CONFIG_FILES = ("config.json", "generation_config.json", "preprocessor_config.json", "processor_config.json",
                "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
REQUIRED = (("config.json",), ("preprocessor_config.json", "processor_config.json"))    # one of each
WEIGHTS = ("model.safetensors", "pytorch_model.bin")      # in order of preference: one is fetched


@stage_main
def main() -> None:
    blip = read_config(BlipStudyConfig, "blip")
    if blip.source == "small":
        vocab = Vocabulary.load(Path("data/prepared") / blip.dataset / "word_map.json")
        words = [w for w in vocab.words if w not in SPECIALS]
        prompt_words = blip.generation.prompt.split()
        model, processor = small_blip(blip.small, [*words, *(w for w in prompt_words if w not in words)])
        save_blip(model, processor, OUT)
        log.info("small BLIP (%s parameters) built from blip.small -> %s",
                 f"{sum(p.numel() for p in model.parameters()):,}", OUT)
    else:
        copy_files(cached_blip_files(blip.pretrained), OUT)
        load_blip(OUT)            # fails now, not at fine-tuning, if the folder is not a BLIP captioner
        log.info("%s (%s) -> %s", blip.pretrained, ", ".join(sorted(p.name for p in OUT.iterdir())), OUT)


def needed_files(repo_files: list[str]) -> list[str]:
    """The files of a BLIP repo that transformers loads: its config, processor and tokenizer files
    and one weights format (safetensors, else the pickled PyTorch weights)."""
    weights = next(([w] for w in WEIGHTS if w in repo_files), [])
    return [f for f in CONFIG_FILES if f in repo_files] + weights


def cached_blip_files(repo: str) -> dict[str, Path]:
    """Name -> path in the Hugging Face cache (``HF_HUB_CACHE``) of each file of ``repo`` that
    transformers loads; fetched into the cache first when the hub answers. Offline, the cached
    snapshot that ``refs/main`` names. (``snapshot_download(local_dir=...)`` is no use offline: it
    returns a ``local_dir`` only if that is already filled, never the cache's files; and without
    ``local_dir`` it refuses a snapshot that lacks a file of the repo, which ours always do.)"""
    from huggingface_hub import HfApi, constants, snapshot_download, try_to_load_from_cache

    try:
        listing = HfApi().list_repo_files(repo)
    except Exception as e:        # offline, no network, no such repo: what the cache holds decides
        unreachable = type(e).__name__
    else:
        unreachable = None
        try:
            snapshot_download(repo, allow_patterns=needed_files(listing))
        except Exception as e:    # the hub raises many kinds; each means the same thing to a user
            raise CaptError(f"cannot fetch {repo} ({type(e).__name__}); with internet run `{fetch_command(repo)}`, "
                            "then rerun") from None
    cached = {name: try_to_load_from_cache(repo, name) for name in (*CONFIG_FILES, *WEIGHTS)}
    cached = {name: Path(path) for name, path in cached.items() if isinstance(path, str)}
    if not cached:
        raise CaptError(f"cannot fetch {repo} ({unreachable}) and the Hugging Face cache {constants.HF_HUB_CACHE} "
                        f"does not hold it; with internet run `{fetch_command(repo)}` (it fills that cache), "
                        "then rerun")
    files = needed_files(list(cached))
    missing = [" or ".join(names) for names in (*REQUIRED, WEIGHTS) if not set(names) & set(files)]
    if missing:
        raise CaptError(f"the Hugging Face cache {constants.HF_HUB_CACHE} holds {repo} without {', '.join(missing)}; "
                        f"with internet run `{fetch_command(repo)}`, then rerun")
    return {name: cached[name] for name in files}


def fetch_command(repo: str) -> str:
    """The command that puts what this stage needs of ``repo`` into the Hugging Face cache."""
    # Every weights format: Salesforce's base captioner has pytorch_model.bin alone on its main
    # revision. Several names are allow-patterns to hf download: one the repo lacks is skipped.
    return f"hf download {repo} {' '.join((*CONFIG_FILES, *WEIGHTS))}"


def copy_files(files: dict[str, Path], out: Path) -> None:
    """Plain copies in ``out`` (a cache snapshot holds symlinks to its blobs), and nothing else,
    whole or not at all."""
    with atomic_folder(out) as tmp:
        for name, path in files.items():
            shutil.copyfile(path, tmp / name)


if __name__ == "__main__":
    typer.run(main)
