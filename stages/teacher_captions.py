"""Stage teacher_captions: the targets of sequence-level KD, generated once.

The teacher's beam-search caption of every image the students learn from (the subset that
``students.subset`` / ``train_fraction`` / ``subset_seed`` pick from the teacher's training split),
decoded from the teacher's cached features (pooled to its cells as its encoder pools). Params: ``teacher_captions`` (beam_size, batch_size, device) and the
students' subset. Writes ``data/distill/<dataset>/teacher_captions.h5``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import typer

from capt.config import CHECKED, Count, Device, Fraction, NonNegativeInt, with_config
from capt.data.cache import open_h5
from capt.data.vocab import Vocabulary, check_model_words
from capt.models.saved import load_captioner
from capt.train.distill import student_images, write_teacher_captions
from capt.train.distributed import resolve_device
from stages._common import read_config, stage_main

log = logging.getLogger("stages.teacher_captions")


@with_config(CHECKED)
@dataclass(frozen=True)
class TeacherCaptionsConfig:
    beam_size: Count = 3
    batch_size: Count = 64
    device: Device = "auto"     # auto (a GPU where there is one) | cpu | cuda; absent in older params: auto


@stage_main
def main() -> None:
    cfg = read_config(TeacherCaptionsConfig, "teacher_captions")
    dataset = read_config(str, "teacher", "dataset")
    # The students' training images (stages/distill.py's StudentsConfig checks the whole section)
    subset, fraction, subset_seed = (read_config(str, "students", "subset"),
                                     read_config(Fraction, "students", "train_fraction"),
                                     read_config(NonNegativeInt, "students", "subset_seed"))
    prepared, features = Path("data/prepared") / dataset, Path("data/features") / dataset
    teacher = load_captioner(Path("models/teacher.pt"))
    check_model_words(teacher.vocab, Path("models/teacher.pt"), Vocabulary.load(prepared / "word_map.json"),
                      prepared / "word_map.json")
    with open_h5(prepared / "train.h5", ("image_ids",)) as f:
        n, max_len = f["image_ids"].shape[0], int(f.attrs["max_len"])
    indices = student_images(prepared / "train.h5", subset, fraction, subset_seed, "params.yaml: students.subset")
    out = Path("data/distill") / dataset / "teacher_captions.h5"
    write_teacher_captions(teacher.decoder, teacher.vocab, features / "train.h5", indices, out,
                           encoded_size=teacher.encoder.cfg.encoded_size, max_len=max_len,
                           beam_size=cfg.beam_size, batch_size=cfg.batch_size, device=resolve_device(cfg.device))
    log.info("teacher captions of %d of %d training images (beam %d) -> %s", len(indices), n, cfg.beam_size, out)


if __name__ == "__main__":
    typer.run(main)
