"""Stage blip_weights: the BLIP captioner the study starts from, in a DVC-tracked folder.

Params: ``blip`` (source, pretrained, small). ``source: pretrained`` fetches the hub model
(``blip.pretrained``, e.g. Salesforce/blip-image-captioning-base) with huggingface_hub into
``models/blip_init/``; ``source: small`` (the embedded profile, offline) builds a small
randomly initialised BLIP from ``blip.small`` with a tokenizer made from the prepared vocabulary
of ``blip.dataset``. Either way, the ``blip`` stage fine-tunes (or, with 0 epochs, copies) it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from capt.blip.model import SmallBlipConfig, load_blip, save_blip, small_blip
from capt.data.vocab import SPECIALS, Vocabulary
from capt.errors import CaptError
from stages._common import make_config, read_params, stage_main

log = logging.getLogger("stages.blip_weights")
OUT = Path("models/blip_init")


@stage_main
def main() -> None:
    section = read_params("blip")
    source = section.get("source")
    if source == "small":
        cfg = make_config(SmallBlipConfig, section["small"], "blip.small")
        vocab = Vocabulary.load(Path("data/prepared") / section["dataset"] / "word_map.json")
        words = [w for w in vocab.words if w not in SPECIALS]
        prompt_words = section.get("generation", {}).get("prompt", "a picture of").split()
        model, processor = small_blip(cfg, [*words, *(w for w in prompt_words if w not in words)])
        save_blip(model, processor, OUT)
        log.info("small BLIP (%s parameters) built from blip.small -> %s",
                 f"{sum(p.numel() for p in model.parameters()):,}", OUT)
    elif source == "pretrained":
        from huggingface_hub import snapshot_download

        try:
            snapshot_download(section["pretrained"], local_dir=OUT)
        except Exception as e:    # the hub raises many kinds; each means the same thing to a user
            raise CaptError(f"cannot fetch {section['pretrained']} ({type(e).__name__}); with internet run "
                            f"`huggingface-cli download {section['pretrained']} --local-dir {OUT}`, then rerun") from None
        load_blip(OUT)            # fails now, not at fine-tuning, if the folder is not a BLIP captioner
        log.info("%s -> %s", section["pretrained"], OUT)
    else:
        raise CaptError(f"params.yaml: blip.source must be small or pretrained, got {source!r}")


if __name__ == "__main__":
    typer.run(main)
