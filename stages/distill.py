"""Stage distill@<variant>: one student distilled from the frozen teacher.

Params: ``students`` (what every student shares: the training subset, encoder, decoder, train)
and ``distill.<variant>`` (that variant's loss: beta, temperature, w_enc, w_dec, targets, projection; and
fine_tune, which overrides ``students.encoder.fine_tune`` for it), so changing one variant reruns that
student alone. Reads the teacher (``models/teacher.pt``), the
students' pretrained trunk (``models/encoders/students.pt``, stage pretrain@students), the
prepared split files, the teacher's feature cache of its dataset (only a variant with a KD term:
``beta`` > 0 and ``w_enc`` or ``w_dec`` > 0), and, for sequence-level KD,
``data/distill/<dataset>/teacher_captions.h5``. Writes ``models/<variant>.pt`` (the best epoch,
without the training-only projection), ``metrics/history/<variant>.csv``,
``results/curves/<variant>.png``, ``metrics/train/<variant>.json`` and resumable checkpoints in
``checkpoints/<variant>/``.

Stage replicate@<variant>-<seed> is the same student trained with another seed (``--seed``, one of
``study.replicate_seeds``; ``students.train.seed`` is the study's own): the same data, subset,
teacher and loss, another initialisation, batch order and dropout. It writes
``models/replicates/<variant>-s<seed>.pt`` and the history, curves, training summary and
checkpoints under the name ``<variant>-s<seed>``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Optional

import torch
import typer

from capt.config import CHECKED, Fraction, NonNegativeInt, with_config
from capt.data.cache import open_h5, read_references
from capt.data.dataset import CaptionDataset, ImageSubset
from capt.data.vocab import Vocabulary, check_model_words
from capt.errors import CaptError
from capt.models.decoder import AttentionDecoder, DecoderConfig
from capt.models.encoder import EncoderConfig
from capt.models.saved import count_parameters, load_captioner, load_encoder, save_captioner
from capt.train.distill import DistillConfig, DistillTask, add_stem_features, student_images
from capt.train.loop import TrainConfig, fit
from stages._common import make_config, read_config, read_params, stage_main
from stages._training import run_fingerprint, training_runtime, write_training_outputs

log = logging.getLogger("stages.distill")


@with_config(CHECKED)
@dataclass(frozen=True)
class StudentsConfig:
    """What every student shares: the ``students`` section."""

    train_fraction: Fraction = 0.5  # of the teacher's training split, the same images for every variant
    subset_seed: NonNegativeInt = 0
    subset: str = "all"             # Karpathy's part of it drawn from: all | train | restval (capt.data.cache.karpathy_part)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


@stage_main
def main(variant: str, ckpt_root: Path = typer.Option(Path("checkpoints")),
         seed: Annotated[Optional[int], typer.Option(help="another training seed: the replicate <variant>-s<seed>")]
         = None) -> None:
    section = read_params("students")
    shared = make_config(StudentsConfig, section, "students")
    enc_cfg, dec_cfg, cfg = shared.encoder, shared.decoder, shared.train
    name, model_path = variant, Path("models") / f"{variant}.pt"
    if seed is not None:
        if seed == cfg.seed:
            raise CaptError(f"replicate seed {seed} is students.train.seed, the study's own students' "
                            "(distill@<variant>); study.replicate_seeds lists the others")
        cfg = replace(cfg, seed=seed)
        name = f"{variant}-s{seed}"
        model_path, ckpt_root = Path("models/replicates") / f"{name}.pt", ckpt_root / "replicates"
    variant_params = read_params("distill", variant)
    kd = make_config(DistillConfig, variant_params, f"distill.{variant}")
    if kd.fine_tune is not None:                    # the variant's own choice (the frozen-encoder follow-ups)
        enc_cfg = replace(enc_cfg, fine_tune=kd.fine_tune)
    dataset = read_config(str, "teacher", "dataset")
    prepared, features = Path("data/prepared") / dataset, Path("data/features") / dataset

    teacher = load_captioner(Path("models/teacher.pt"))
    vocab = Vocabulary.load(prepared / "word_map.json")
    check_model_words(teacher.vocab, Path("models/teacher.pt"), vocab, prepared / "word_map.json")
    if enc_cfg.encoded_size != teacher.encoder.cfg.encoded_size and kd.uses_encoder_kd:
        raise CaptError(f"params.yaml: students.encoder.encoded_size {enc_cfg.encoded_size} differs from the "
                        f"teacher's {teacher.encoder.cfg.encoded_size}; encoder KD compares the same grid cells")

    # Only a KD term reads the teacher's features: the baseline and sequence-level KD open no cache.
    teacher_features = features / "train.h5" if kd.uses_teacher_features else None
    base = CaptionDataset(prepared / "train.h5", load_images=True, features_path=teacher_features)
    indices = student_images(prepared / "train.h5", shared.subset, shared.train_fraction, shared.subset_seed,
                             "params.yaml: students.subset")
    if kd.targets == "teacher":
        captions_h5 = Path("data/distill") / dataset / "teacher_captions.h5"
        with open_h5(captions_h5, ("indices", "captions", "caption_lengths")) as f:
            if f["indices"][:].tolist() != indices:
                raise CaptError(f"{captions_h5}: made for another student subset; rerun teacher_captions")
            train_set = ImageSubset(base, indices, f["captions"][:], f["caption_lengths"][:], preload=cfg.preload)
    else:
        train_set = ImageSubset(base, indices, preload=cfg.preload)
    val_set = CaptionDataset(prepared / "val.h5", load_images=True)

    torch.manual_seed(cfg.seed)
    encoder = load_encoder(Path("models/encoders/students.pt"), enc_cfg)
    if train_set.items is not None:                 # preloaded: the frozen stem runs once per image
        add_stem_features(encoder, train_set.items)
    decoder = AttentionDecoder(dec_cfg, len(vocab), encoder.feature_dim)
    n_student = count_parameters(encoder) + count_parameters(decoder)
    n_teacher = count_parameters(teacher.encoder) + count_parameters(teacher.decoder)
    if n_student >= n_teacher:
        raise CaptError(f"params.yaml: the student ({n_student:,} parameters) is not smaller than its teacher "
                        f"({n_teacher:,}); shrink students.encoder or students.decoder")
    log.info("%s: student %s + LSTM %d (%s parameters, teacher %s), %d of %d training images, %s",
             variant, enc_cfg.name, dec_cfg.decoder_dim, f"{n_student:,}", f"{n_teacher:,}", len(indices),
             len(base), kd)

    task = DistillTask(encoder, decoder, teacher.decoder, teacher.encoder.feature_dim, kd, vocab=vocab,
                       val_set=val_set, val_references=read_references(prepared / "val.h5"), cfg=cfg,
                       feature_grid=base.feature_grid,
                       encoded_size=teacher.encoder.cfg.encoded_size if kd.uses_teacher_features else None)
    fingerprint = run_fingerprint({"students": section, "variant": variant_params,
                                   **({"replicate_seed": seed} if seed is not None else {})}, Path("models/teacher.pt"),
                                  Path("models/encoders/students.pt"),
                                  prepared / "word_map.json", *([captions_h5] if kd.targets == "teacher" else []))
    with training_runtime(cfg.device) as runtime:
        result = fit(task, train_set, cfg, ckpt_root / name, fingerprint=fingerprint, runtime=runtime)
    if not runtime.is_main:
        return
    task.to(torch.device("cpu"))
    task.model.load_state_dict(result["best_state"])
    save_captioner(model_path, encoder, decoder, vocab, base.image_size)    # the projection stays behind
    write_training_outputs(name, result, f"{name} ({enc_cfg.name}, LSTM {dec_cfg.decoder_dim})")


if __name__ == "__main__":
    typer.run(main)
