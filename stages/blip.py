"""Stage blip: BLIP fine-tuned on the training split of ``blip.dataset`` (0 epochs = zero-shot).

Params: ``blip`` (dataset, generation, train). Starts from ``models/blip_init/`` (stage
blip_weights), trains with the shared loop on the prepared split files (the captions the LSTMs
train on, as words: words outside their vocabulary are not ``<unk>`` to BLIP; capt.blip.train),
and writes the best epoch to ``models/blip/`` (a transformers folder, with its caption settings),
``metrics/train/blip.json``, ``metrics/history/blip.csv``, ``results/curves/blip.png`` and
resumable ``checkpoints/blip/``. ``evaluate_blip`` then scores it like every other model.
With 0 epochs every one of those outputs is written too, saying that no epoch ran (a DVC stage
must write all it declares).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
import typer

from capt.blip.model import BlipStudyConfig, GenerationConfig, load_blip, save_blip, save_generation
from capt.blip.train import BlipTask, split_captions
from capt.config import NonNegativeInt
from capt.data.cache import read_references
from capt.data.dataset import CaptionDataset, ImageSubset
from capt.data.vocab import Vocabulary
from capt.train.loop import TrainConfig, fit
from stages._common import make_config, read_params, stage_main
from stages._training import run_fingerprint, training_runtime, write_training_outputs

log = logging.getLogger("stages.blip")
INIT, OUT = Path("models/blip_init"), Path("models/blip")
# The columns of a fine-tuning run's history (capt.train.loop.fit's row for BlipTask: its training
# loss, its validation's loss, BLEU-4 and CIDEr, the learning rate). A zero-shot run writes the same
# header without rows, so `dvc plots diff` compares the two.
HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "val_bleu4", "val_cider", "lr")


@stage_main
def main(ckpt_root: Path = typer.Option(Path("checkpoints"))) -> None:
    section = read_params("blip")
    blip = make_config(BlipStudyConfig, section, "blip")
    gen, prepared = blip.generation, Path("data/prepared") / blip.dataset
    epochs = make_config(NonNegativeInt, blip.train.get("epochs", TrainConfig.epochs), "blip.train.epochs")
    # every other key checked even when no epoch runs
    cfg = make_config(TrainConfig, {**blip.train, "epochs": max(epochs, 1)}, "blip.train")
    model, processor = load_blip(INIT)
    if epochs == 0:                              # zero-shot, as the seed study used BLIP
        write_zero_shot(model, processor, gen, ckpt_root / "blip")
        return
    vocab = Vocabulary.load(prepared / "word_map.json")
    train_set = CaptionDataset(prepared / "train.h5")
    if cfg.preload:
        train_set = ImageSubset(train_set, list(range(len(train_set))), preload=True)
    val_set = CaptionDataset(prepared / "val.h5")
    seed = prepare_seed(prepared)
    torch.manual_seed(cfg.seed)
    task = BlipTask(model, processor, split_captions(prepared / "train.h5", vocab, seed), val_set,
                    split_captions(prepared / "val.h5", vocab, seed), read_references(prepared / "val.h5"), cfg, gen)
    fingerprint = run_fingerprint(section, INIT / "config.json", *sorted(INIT.glob("*.safetensors")),
                                  *sorted(INIT.glob("*.bin")))
    with training_runtime(cfg.device) as runtime:
        result = fit(task, train_set, cfg, ckpt_root / "blip", fingerprint=fingerprint, runtime=runtime)
    if not runtime.is_main:
        return
    model.cpu()
    model.load_state_dict(result["best_state"])
    save_blip(model, processor, OUT)
    save_generation(gen, OUT)
    write_training_outputs("blip", result, _title(model), HISTORY_COLUMNS)


def prepare_seed(prepared: Path) -> int:
    """The seed prepare sampled the training captions with (its summary.json), which
    ``split_captions`` replays to give BLIP the words of those very captions."""
    return int(json.loads((prepared / "summary.json").read_text())["config"]["seed"])


def write_zero_shot(model, processor, gen: GenerationConfig, ckpt_dir: Path) -> None:
    """The starting weights unchanged, with the caption settings, and every other output of a
    fine-tuning run saying that no epoch ran: a history without rows, curves titled "0 epochs
    (zero-shot)", a summary with ``epochs_run`` 0 and no best epoch nor validation BLEU-4 (none
    was chosen; evaluate_blip scores the zero-shot model on the test split), and a checkpoint
    folder with nothing to resume. No prepared data is read."""
    save_blip(model, processor, OUT)
    save_generation(gen, OUT)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    write_training_outputs("blip", {"history": [], "best": {"epoch": None, "bleu4": None}},
                           f"{_title(model)}: 0 epochs (zero-shot)", HISTORY_COLUMNS)
    log.info("zero-shot: %s -> %s unchanged", INIT, OUT)


def _title(model) -> str:
    return f"BLIP ({sum(p.numel() for p in model.parameters()):,} parameters)"


if __name__ == "__main__":
    typer.run(main)
