"""Knowledge distillation: the KD losses against hand computations, and a student step that
moves the student and never the teacher."""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from torch.utils.data import Dataset

from capt.config import build_config
from capt.data.vocab import SPECIALS, Vocabulary
from capt.errors import CaptError
from capt.models.beam_search import beam_search
from capt.models.decoder import AttentionDecoder, DecoderConfig, caption_loss
from capt.models.encoder import Encoder, EncoderConfig, pool_cells
from capt.models.saved import load_captioner, save_captioner
from capt.train.captioner import flatten_captions
from capt.train.distill import (DistillConfig, DistillTask, feature_projection, kd_decoder_loss, kd_encoder_loss,
                                padding_mask, student_subset, write_teacher_captions)
from capt.train.loop import TrainConfig, fit

# ----------------------------------------------------------------------------- the losses


def _kl_by_hand(s_row, t_row, T):
    """sum_v p_v (log p_v - log q_v), p = softmax(t/T), q = softmax(s/T), in plain Python."""
    def softmax(xs):
        m = max(xs)
        e = [math.exp((x - m) / T) for x in xs]
        z = sum(e)
        return [v / z for v in e]
    p, q = softmax(t_row), softmax(s_row)
    return sum(pv * (math.log(pv) - math.log(qv)) for pv, qv in zip(p, q))


def test_kd_decoder_loss_matches_a_hand_computation_with_t_squared_and_masking():
    torch.manual_seed(0)
    s = torch.randn(2, 3, 4, dtype=torch.float64)
    t = torch.randn(2, 3, 4, dtype=torch.float64)
    mask = torch.tensor([[True, True, False], [True, False, False]])     # 3 real positions
    T = 2.5
    expected = T * T * sum(_kl_by_hand(s[b, i].tolist(), t[b, i].tolist(), T)
                           for b, i in [(0, 0), (0, 1), (1, 0)]) / 3
    got = kd_decoder_loss(s, t, T, mask)
    assert got.item() == pytest.approx(expected, rel=1e-12)
    # Direction teacher -> student: KL(p_t || q_s), not KL(q_s || p_t).
    reverse = T * T * sum(_kl_by_hand(t[b, i].tolist(), s[b, i].tolist(), T) for b, i in [(0, 0), (0, 1), (1, 0)]) / 3
    assert abs(reverse - expected) > 1e-3
    # Padding positions do not count, whatever their logits.
    s2, t2 = s.clone(), t.clone()
    s2[~mask], t2[~mask] = 100.0 * torch.randn(3, 4, dtype=torch.float64), 0.0
    assert kd_decoder_loss(s2, t2, T, mask).item() == pytest.approx(expected, rel=1e-12)


def test_kd_decoder_loss_is_zero_for_equal_logits_and_positive_otherwise():
    z = torch.randn(3, 5, 7)
    mask = torch.ones(3, 5, dtype=torch.bool)
    assert kd_decoder_loss(z, z.clone(), 10.0, mask).abs().item() < 1e-6
    assert kd_decoder_loss(z + torch.randn(3, 5, 7), z, 10.0, mask).item() > 0
    assert kd_decoder_loss(z, z + 1, 4.0, torch.zeros(3, 5, dtype=torch.bool)).item() == 0.0   # nothing to average


def test_kd_encoder_loss_is_the_mse_and_refuses_unprojected_widths():
    a, b = torch.randn(2, 4, 6), torch.randn(2, 4, 6)
    assert kd_encoder_loss(a, b).item() == pytest.approx(((a - b) ** 2).mean().item())
    with pytest.raises(ValueError, match="project"):
        kd_encoder_loss(torch.randn(2, 4, 3), b)


def test_projection_appears_only_when_widths_differ_unless_always():
    assert feature_projection(128, 128) is None
    proj = feature_projection(64, 128)
    assert isinstance(proj, torch.nn.Linear) and (proj.in_features, proj.out_features) == (64, 128)
    always = feature_projection(128, 128, always=True)
    assert isinstance(always, torch.nn.Linear) and (always.in_features, always.out_features) == (128, 128)


@pytest.mark.parametrize("values, message", [
    ({"beta": 0.3}, "distill.v: beta is 0.3 but w_enc and w_dec are both 0: no KD term to weigh"),
    ({"beta": 0.3, "w_dec": 1, "temperature": 0}, "distill.v.temperature: must be > 0, got 0"),
    ({"beta": 1.5, "w_dec": 1}, "distill.v.beta: must be <= 1, got 1.5"),
    ({"w_enc": -1}, "distill.v.w_enc: must be >= 0, got -1"),
    ({"targets": "students"}, "distill.v.targets: must be one of 'references' or 'teacher', got \"students\""),
    ({"beta": 0.3, "w_enc": 1, "projection": "sometimes"}, "distill.v.projection: must be one of 'auto' or 'always'"),
    ({"beta": 0.3, "w_dec": 1, "projection": "always"}, "distill.v: projection is always but there is no encoder KD"),
    ({"beta": 0.3, "w_enc": 1, "fine_tune": False}, "distill.v: encoder KD needs a student encoder that learns"),
    ({"fine_tune": "no"}, "distill.v.fine_tune: must be true or false, got \"no\""),
    ({"beta": 0.3, "w_dec": 1, "temprature": 5}, "distill.v.temprature: unknown key; did you mean distill.v.temperature?"),
])
def test_variant_config_refuses_nonsense_naming_the_param(values, message):
    with pytest.raises(CaptError) as e:
        build_config(DistillConfig, values, "distill.v")
    assert str(e.value).startswith(f"params.yaml: {message}"), str(e.value)


def test_a_variant_config_that_fits_is_built_as_given():
    assert build_config(DistillConfig, {"beta": 0.3, "w_dec": 1, "fine_tune": False}, "distill.v").uses_decoder_kd
    assert build_config(DistillConfig, {"temperature": 5}, "distill.v").temperature == 5.0


def test_student_subset_is_deterministic_and_sized_by_the_fraction():
    a = student_subset(list(range(100)), 0.5, seed=3)
    assert a == student_subset(list(range(100)), 0.5, seed=3) and len(a) == 50 and a == sorted(set(a))
    assert a != student_subset(list(range(100)), 0.5, seed=4)
    assert student_subset(list(range(10)), 1.0, 0) == list(range(10))
    with pytest.raises(CaptError, match="train_fraction"):
        student_subset(list(range(10)), 0.0, 0)
    # drawn from the given positions only (a Karpathy part), a fraction of them
    restval = list(range(100, 160, 3))
    b = student_subset(restval, 0.5, seed=3)
    assert len(b) == 10 and set(b) <= set(restval) and b == sorted(b)


# ----------------------------------------------------------------------------- a student step

WORDS = ["red", "blue", "circle", "square", "a"]
VOCAB = Vocabulary([*SPECIALS, *WORDS])
S, E = 32, 2          # image side, encoded size


class TinyImages(Dataset):
    """Images (uint8, S x S) with the teacher's features of them, and two captions each."""

    def __init__(self, teacher_encoder: Encoder, n=8):
        g = torch.Generator().manual_seed(0)
        self.images = torch.randint(0, 256, (n, 3, S, S), generator=g, dtype=torch.uint8)
        self.features = teacher_encoder(self.images)
        w = VOCAB.word_map
        self.captions = torch.tensor([[VOCAB.encode(["a", "red", "circle"], 4), VOCAB.encode(["a", "blue"], 4)]] * n)
        self.lengths = torch.tensor([[5, 4]] * n)
        self.refs = {i: ["a red circle", "a blue"] for i in range(n)}
        assert w["a"] > 3

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i], "features": self.features[i], "captions": self.captions[i],
                "lengths": self.lengths[i], "image_id": torch.tensor(i), "index": torch.tensor(i)}


def _setup(kd: DistillConfig, student_stages=2, dropout=0.0):
    torch.manual_seed(0)
    teacher_enc = Encoder(EncoderConfig(name="resnet18", stages=2, encoded_size=E))
    teacher_dec = AttentionDecoder(DecoderConfig(8, 8, 16, 0.3), len(VOCAB), teacher_enc.feature_dim)
    ds = TinyImages(teacher_enc)
    student_enc = Encoder(EncoderConfig(name="resnet18", stages=student_stages, encoded_size=E, fine_tune=True))
    student_dec = AttentionDecoder(DecoderConfig(6, 6, 8, dropout), len(VOCAB), student_enc.feature_dim)
    cfg = TrainConfig(epochs=1, batch_size=4, lr=0.01, max_decode_len=5)
    task = DistillTask(student_enc, student_dec, teacher_dec, teacher_enc.feature_dim, kd,
                       vocab=VOCAB, val_set=ds, val_references=ds.refs, cfg=cfg)
    return task, ds, teacher_dec, cfg


def _batch(ds, n=4):
    return torch.utils.data.default_collate([ds[i] for i in range(n)])


def test_beta_zero_is_exactly_the_task_loss():
    task, ds, _, cfg = _setup(DistillConfig(beta=0.0))
    task.model.train()
    batch = _batch(ds)
    loss, stats = task.loss(batch)
    feats, caps, lens = flatten_captions(task.encoder(batch["image"]), batch["captions"], batch["lengths"])
    logits, alphas = task.decoder(feats, caps, lens)
    assert torch.equal(loss, caption_loss(logits, caps, lens, alphas, cfg.alpha_c))
    assert "kd_dec" not in stats and "kd_enc" not in stats


def test_total_loss_weighs_task_and_kd_terms_by_beta():
    kd = DistillConfig(beta=0.3, temperature=5.0, w_enc=0.5, w_dec=2.0)
    task, ds, teacher_dec, cfg = _setup(kd)
    task.model.train()
    loss, stats = task.loss(_batch(ds))
    assert loss.item() == pytest.approx(0.7 * stats["task"] + 0.3 * (0.5 * stats["kd_enc"] + 2.0 * stats["kd_dec"]),
                                        rel=1e-5)
    assert stats["kd_dec"] > 0 and stats["kd_enc"] > 0


def test_a_student_step_moves_the_student_and_never_the_teacher(tmp_path):
    task, ds, teacher_dec, cfg = _setup(DistillConfig(beta=0.5, temperature=10.0, w_enc=1.0, w_dec=1.0))
    teacher_before = {k: v.clone() for k, v in teacher_dec.state_dict().items()}
    student_before = {k: v.clone() for k, v in task.model.state_dict().items()}
    fit(task, ds, cfg, tmp_path, progress=False, stop_after_steps=1)
    assert all(torch.equal(teacher_before[k], v) for k, v in teacher_dec.state_dict().items())
    assert all(p.grad is None for p in teacher_dec.parameters())
    assert not teacher_dec.training
    moved = [k for k, v in task.model.state_dict().items() if not torch.equal(student_before[k], v)]
    assert any(k.startswith("decoder.") for k in moved) and any(k.startswith("encoder.blocks") for k in moved)
    assert not any(k.startswith("encoder.stem") for k in moved)        # frozen stem, BN statistics included
    # fine-tuned blocks learn their BatchNorms' scale and shift and, with train.batchnorm: batch, their statistics
    assert any(k.startswith("encoder.blocks") and k.endswith(".bn1.weight") for k in moved)
    assert any(k.startswith("encoder.blocks") and k.endswith(".bn1.running_mean") for k in moved)


def test_projection_trains_with_the_student_and_stays_out_of_the_saved_one(tmp_path):
    # Student trunk through layer1 (64 wide), teacher through layer2 (128): a 1x1 projection.
    task, ds, _, cfg = _setup(DistillConfig(beta=0.5, w_enc=1.0), student_stages=1)
    assert "projection" in task.model and task.projection.in_features == 64
    groups = task.param_groups(cfg)
    assert any(p is task.projection.weight for g in groups for p in g["params"])
    save_captioner(tmp_path / "s.pt", task.encoder, task.decoder, VOCAB)
    saved = torch.load(tmp_path / "s.pt", weights_only=True)
    assert not any("projection" in k for part in ("encoder", "decoder") for k in saved[part])
    assert load_captioner(tmp_path / "s.pt").decoder.feature_dim == 64
    # Equal widths: no projection at all, unless always; then it learns and stays behind just the same.
    same, *_ = _setup(DistillConfig(beta=0.5, w_enc=1.0))
    assert same.projection is None and "projection" not in same.model
    always, ds, _, cfg = _setup(DistillConfig(beta=0.5, w_enc=1.0, projection="always"))
    assert always.projection.in_features == always.projection.out_features == 128 and "projection" in always.model
    before = always.projection.weight.clone()
    fit(always, ds, cfg, tmp_path / "always", progress=False, stop_after_steps=1)
    assert not torch.equal(before, always.projection.weight)
    loss, stats = always.loss(_batch(ds))
    projected = always.projection(always.encoder(_batch(ds)["image"]))
    assert stats["kd_enc"] == pytest.approx(kd_encoder_loss(projected, _batch(ds)["features"]).item(), rel=1e-5)


def test_encoder_kd_needs_a_student_encoder_that_learns():
    torch.manual_seed(0)
    enc = Encoder(EncoderConfig(name="resnet18", stages=2, encoded_size=E))
    dec = AttentionDecoder(DecoderConfig(6, 6, 8, 0.0), len(VOCAB), enc.feature_dim)
    with pytest.raises(CaptError, match="fine_tune"):
        DistillTask(enc, dec, dec, enc.feature_dim, DistillConfig(beta=0.3, w_enc=1.0), vocab=VOCAB,
                    val_set=None, val_references={}, cfg=TrainConfig())


def test_teacher_captions_are_its_beam_search_encoded_as_prepare_encodes(tmp_path):
    torch.manual_seed(1)
    dec = AttentionDecoder(DecoderConfig(8, 8, 16, 0.0), len(VOCAB), 6).eval()
    # The cache holds a 3 x 3 native grid; the teacher reads 2 x 2 cells pooled from it.
    cells = np.random.default_rng(0).standard_normal((10, 9, 6)).astype(np.float16)
    with h5py.File(tmp_path / "train.h5", "w") as f:
        f["features"], f["image_ids"] = cells, np.arange(100, 110)
        f.attrs.update(grid=(3, 3), encoded_size=2)
    indices = [1, 4, 7]
    n = write_teacher_captions(dec, VOCAB, tmp_path / "train.h5", indices, tmp_path / "tc.h5", encoded_size=2, device="cpu",
                               max_len=4, beam_size=2)
    assert n == 3
    pooled = pool_cells(torch.from_numpy(cells[indices]).float(), (3, 3), 2)               # (3, 4, 6)
    expected = beam_search(dec, pooled, start=VOCAB.start, end=VOCAB.end, beam_size=2, max_len=4)
    with h5py.File(tmp_path / "tc.h5", "r") as f:
        assert f["captions"].shape == (3, 1, 6) and f["image_ids"][:].tolist() == [101, 104, 107]
        for row, length, d in zip(f["captions"][:, 0], f["caption_lengths"][:, 0], expected):
            assert row[:length].tolist() == [VOCAB.start, *d.tokens, VOCAB.end] and not row[length:].any()


def test_teacher_captions_refuse_a_cache_without_its_grid(tmp_path):
    dec = AttentionDecoder(DecoderConfig(8, 8, 16, 0.0), len(VOCAB), 6).eval()
    with h5py.File(tmp_path / "train.h5", "w") as f:
        f["features"], f["image_ids"] = np.zeros((2, 4, 6), np.float16), np.arange(2)
    with pytest.raises(CaptError, match="rerun the features stage"):
        write_teacher_captions(dec, VOCAB, tmp_path / "train.h5", [0], tmp_path / "tc.h5", encoded_size=2,
                               max_len=4, beam_size=1)


def test_kd_terms_on_native_cells_pooled_in_the_task_equal_those_on_pooled_features():
    """The teacher's cache holds its trunk's native 4 x 4 grid (32 px, stride 8) in fp16; the task
    pools it to the teacher's 2 x 2 cells: the KD terms match those on the encoder's own output."""
    kd = DistillConfig(beta=0.3, temperature=5.0, w_enc=1.0, w_dec=1.0)
    task, ds, teacher_dec, cfg = _setup(kd)
    teacher_enc = Encoder(EncoderConfig(name="resnet18", stages=2, encoded_size=E))
    torch.manual_seed(0)                                   # the very teacher trunk _setup built
    teacher_enc = Encoder(EncoderConfig(name="resnet18", stages=2, encoded_size=E))
    torch.testing.assert_close(teacher_enc(ds.images), ds.features, rtol=0, atol=0)
    native = dict(_batch(ds), features=teacher_enc.native_cells(ds.images[:4]).half())   # (4, 16, 128) fp16
    cached = DistillTask(task.encoder, task.decoder, teacher_dec, teacher_enc.feature_dim, kd, vocab=VOCAB,
                         val_set=ds, val_references=ds.refs, cfg=cfg, feature_grid=(4, 4), encoded_size=E)
    task.model.eval()
    _, direct_stats = task.loss(_batch(ds))
    _, cached_stats = cached.loss(native)
    for key in ("kd_enc", "kd_dec", "task"):
        assert cached_stats[key] == pytest.approx(direct_stats[key], rel=1e-2), key


def test_only_a_kd_term_reads_the_teachers_features():
    assert not DistillConfig(beta=0.0).uses_teacher_features
    assert not DistillConfig(beta=0.0, w_enc=1.0, w_dec=1.0).uses_teacher_features
    assert not DistillConfig(targets="teacher").uses_teacher_features
    assert DistillConfig(beta=0.3, w_enc=1.0).uses_teacher_features
    assert DistillConfig(beta=0.3, w_dec=1.0).uses_teacher_features


def test_precomputed_stem_gives_the_same_features_and_loss_as_the_images():
    from capt.train.distill import add_stem_features

    task, ds, _, _ = _setup(DistillConfig(beta=0.3, temperature=4.0, w_enc=1.0, w_dec=1.0))
    items = [ds[i] for i in range(4)]
    add_stem_features(task.encoder, items)
    assert items[0]["stem"].shape == (64, S // 4, S // 4)             # resnet18 stem + layer1, stride 4
    with_stem = torch.utils.data.default_collate(items)
    without = {k: v for k, v in with_stem.items() if k != "stem"}
    task.model.eval()                                                 # no dropout, BN on running statistics
    torch.testing.assert_close(task.features(with_stem), task.features(without), rtol=0, atol=1e-6)
    torch.testing.assert_close(task.loss(with_stem)[0], task.loss(without)[0], rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------- the stage's reads


@pytest.fixture
def study(tmp_path, monkeypatch):
    """A working directory as the distill stage sees it: the tiny COCO prepared at 32 px, a teacher
    (resnet18 through layer2: a native 4 x 4 grid, pooled to 2 x 2), the students' trunk, params."""
    from capt.data.prepare import PrepareConfig, prepare_dataset
    from capt.models.saved import save_encoder
    from tests.fixtures import build_coco

    monkeypatch.chdir(tmp_path)
    prepared = Path("data/prepared/coco")
    prepare_dataset(build_coco(tmp_path / "raw"), prepared,
                    PrepareConfig(image_size=32, min_word_freq=1, max_len=8, captions_per_image=3), progress=False)
    vocab = Vocabulary.load(prepared / "word_map.json")
    torch.manual_seed(0)
    teacher_enc = Encoder(EncoderConfig(name="resnet18", stages=2, encoded_size=2))
    teacher_dec = AttentionDecoder(DecoderConfig(8, 8, 16, 0.0), len(vocab), teacher_enc.feature_dim)
    save_captioner(Path("models/teacher.pt"), teacher_enc, teacher_dec, vocab, 32)
    students = {"name": "resnet18", "weights": None, "stages": 1, "encoded_size": 2, "fine_tune": True}
    save_encoder(Path("models/encoders/students.pt"), Encoder(EncoderConfig(**students)))
    Path("params.yaml").write_text(yaml.safe_dump({
        "teacher": {"dataset": "coco"},
        "students": {"train_fraction": 1.0, "subset_seed": 0, "encoder": students,
                     "decoder": {"embed_dim": 6, "attention_dim": 6, "decoder_dim": 8, "dropout": 0.0},
                     "train": {"epochs": 1, "batch_size": 2, "lr": 0.01, "max_decode_len": 5, "device": "cpu"}},
        "distill": {"student_base": {"beta": 0.0}, "student_seq": {"targets": "teacher"},
                    "student_dec": {"beta": 0.3, "temperature": 2.0, "w_dec": 1.0}}}))
    return teacher_enc


def _opened_during(variant: str) -> list[Path]:
    """The HDF5 files stage distill@<variant> opens."""
    from stages.distill import main

    opened: list[Path] = []

    class Recording(h5py.File):
        def __init__(self, name, *args, **kwargs):
            opened.append(Path(name))
            super().__init__(name, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(h5py, "File", Recording)
        main(variant, ckpt_root=Path("checkpoints"))
    assert Path(f"models/{variant}.pt").exists()
    return opened


def test_students_without_a_kd_term_never_open_the_teachers_features(study):
    # No feature cache on disk at all: the baseline and sequence-level KD train without one.
    Path("data/distill/coco").mkdir(parents=True)
    with h5py.File("data/distill/coco/teacher_captions.h5", "w") as f:
        f["indices"] = np.arange(3)
        f["captions"] = np.tile(np.array([[[1, 4, 5, 2, 0, 0, 0, 0, 0, 0]]], np.int32), (3, 1, 1))
        f["caption_lengths"] = np.full((3, 1), 4, np.int32)
    for variant in ("student_base", "student_seq"):
        opened = _opened_during(variant)
        assert Path("data/prepared/coco/train.h5") in opened
        assert not [p for p in opened if "features" in p.parts], variant
    assert not Path("data/features").exists()


def test_students_on_karpathy_restval_learn_from_its_images_only(study, caplog, capsys):
    # The seed's design without its overlap: the students on restval (the fixture's image 30,
    # third in train.h5), the teacher on Karpathy's train part.
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["students"]["subset"] = "restval"
    Path("params.yaml").write_text(yaml.safe_dump(params))
    from stages.distill import main

    with caplog.at_level("INFO", logger="stages.distill"):
        main("student_base", ckpt_root=Path("checkpoints"))
    assert any("1 of 3 training images" in r.getMessage() for r in caplog.records)
    params["students"]["subset"] = "val"
    Path("params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(SystemExit):
        main("student_base", ckpt_root=Path("checkpoints"))
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: params.yaml: students.subset: must be one of all, train, restval, got 'val'")


def test_a_teacher_on_karpathy_train_leaves_the_restval_images_to_the_students(study, caplog):
    from capt.models.checkpoint import save_checkpoint
    from capt.train.features import encode_split
    from stages.train_teacher import main

    out = Path("data/features/coco")
    out.mkdir(parents=True)
    for split in ("train", "val"):
        encode_split(study, Path(f"data/prepared/coco/{split}.h5"), out / f"{split}.h5", progress=False)
    save_checkpoint(study.state_dict(), out / "encoder.pt")
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["teacher"] = {"dataset": "coco", "subset": "train",
                         "encoder": {"name": "resnet18", "stages": 2, "encoded_size": 2},
                         "decoder": {"embed_dim": 8, "attention_dim": 8, "decoder_dim": 16, "dropout": 0.0},
                         "train": {"epochs": 1, "batch_size": 2, "max_decode_len": 5, "device": "cpu"}}
    Path("params.yaml").write_text(yaml.safe_dump(params))

    with caplog.at_level("INFO", logger="stages.train_teacher"):
        main(name="teacher_train_part", ckpt_root=Path("checkpoints"))
    assert any("2 of 3 training images (teacher.subset train)" in r.getMessage() for r in caplog.records)
    assert Path("models/teacher_train_part.pt").exists()


def test_a_kd_student_reads_the_native_cache_pooled_to_the_teachers_cells(study):
    from capt.train.features import encode_split

    out = Path("data/features/coco")
    out.mkdir(parents=True)
    encode_split(study, Path("data/prepared/coco/train.h5"), out / "train.h5", progress=False)
    with h5py.File(out / "train.h5") as f:
        assert f["features"].shape == (3, 16, 128) and tuple(f.attrs["grid"]) == (4, 4)
    assert out / "train.h5" in _opened_during("student_dec")
    history = Path("metrics/history/student_dec.csv").read_text().splitlines()
    assert "train_kd_dec" in history[0] and len(history) == 2


def test_a_frozen_encoder_variant_keeps_the_pretrained_trunk_and_a_fine_tuned_one_moves_it(study):
    """distill.<variant>.fine_tune overrides students.encoder.fine_tune for that student alone."""
    from capt.models.saved import load_encoder, save_encoder

    params = yaml.safe_load(Path("params.yaml").read_text())
    params["distill"]["student_frozen"] = {"beta": 0.0, "fine_tune": False}
    params["students"]["encoder"]["stages"] = 2                 # through layer2: a block that can learn
    Path("params.yaml").write_text(yaml.safe_dump(params))
    save_encoder(Path("models/encoders/students.pt"), Encoder(EncoderConfig(**params["students"]["encoder"])))
    trunk = load_encoder(Path("models/encoders/students.pt"),
                         EncoderConfig(**params["students"]["encoder"])).state_dict()
    _opened_during("student_frozen")
    _opened_during("student_base")
    frozen, tuned = (load_captioner(Path(f"models/{m}.pt")).encoder for m in ("student_frozen", "student_base"))
    assert not frozen.cfg.fine_tune and tuned.cfg.fine_tune
    assert all(torch.equal(v, trunk[k]) for k, v in frozen.state_dict().items())       # BN statistics included
    assert any(not torch.equal(v, trunk[k]) for k, v in tuned.state_dict().items() if k.startswith("blocks"))


def test_teacher_captions_config_takes_a_device_and_names_a_wrong_one():
    from stages._common import make_config
    from stages.teacher_captions import TeacherCaptionsConfig

    assert make_config(TeacherCaptionsConfig, {"beam_size": 3, "batch_size": 64}, "teacher_captions").device == "auto"
    assert make_config(TeacherCaptionsConfig, {"device": "cpu"}, "teacher_captions").device == "cpu"
    with pytest.raises(CaptError, match=r"^params\.yaml: teacher_captions\.device: must be one of 'auto', 'cpu' or "
                                        r"'cuda', got \"gpu\"$"):
        make_config(TeacherCaptionsConfig, {"device": "gpu"}, "teacher_captions")
