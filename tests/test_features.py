"""The feature cache at the trunk's native grid, pooled in the model.

A ResNet-18 cut after layer2 (stride 8) on 64 px images has a native grid of 8 x 8 cells; the
teacher reads encoded_size**2 cells: 4 x 4 (pooled down) or 14 x 14 (pooled up, as the COCO
profile pools ResNet-101's 8 x 8 to Show-Attend-Tell's 14 x 14). Adaptive average pooling is
linear, so the cache pooled in the model must equal the encoder's own output up to the cache's
fp16 rounding: at most 2**-11 (fp16's unit roundoff) of the largest stored cell.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from torch.utils.data import default_collate

from capt.data.cache import read_references
from capt.data.dataset import CaptionDataset
from capt.data.prepare import PrepareConfig, prepare_dataset
from capt.data.vocab import Vocabulary
from capt.models.beam_search import beam_search
from capt.models.decoder import AttentionDecoder, DecoderConfig
from capt.models.encoder import Encoder, EncoderConfig, pool_cells
from capt.models.saved import save_encoder
from capt.train.captioner import CaptionerTask
from capt.train.features import encode_split, to_fp16
from capt.train.loop import TrainConfig
from tests.fixtures import build_coco

S, GRID, D = 64, (8, 8), 128          # image side; resnet18 stages 2: stride 8, 128 channels
FP16_ROUNDING = 2 ** -11 * 1.001      # fp16's unit roundoff, and room for float32 summation


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """data/prepared/coco of the tiny COCO download, at 64 px (3 train, 1 val, 1 test image)."""
    root = tmp_path_factory.mktemp("prepared")
    cfg = PrepareConfig(image_size=S, min_word_freq=1, max_len=8, captions_per_image=3)
    prepare_dataset(build_coco(root / "raw"), root / "coco", cfg, progress=False)
    return root


def _trunk(encoded_size: int) -> Encoder:
    torch.manual_seed(0)
    return Encoder(EncoderConfig(name="resnet18", stages=2, encoded_size=encoded_size))


def _images(split_h5: Path) -> torch.Tensor:
    with h5py.File(split_h5) as f:
        return torch.from_numpy(f["images"][:])


def test_the_trunk_reports_its_native_grid_and_cells():
    enc = _trunk(14)
    assert enc.native_grid(S, S) == GRID and enc.native_grid(256, 256) == (32, 32)
    images = torch.randint(0, 256, (2, 3, S, S), dtype=torch.uint8)
    assert enc.native_cells(images).shape == (2, 64, D) and enc(images).shape == (2, 196, D)


@pytest.mark.parametrize("encoded_size", [4, 14])
def test_the_cache_pooled_in_the_model_is_the_encoders_output_to_fp16_rounding(prepared, tmp_path, encoded_size):
    enc = _trunk(encoded_size)
    train_h5 = prepared / "coco" / "train.h5"
    encode_split(enc, train_h5, tmp_path / "train.h5", batch_size=2, progress=False)
    ds = CaptionDataset(train_h5, features_path=tmp_path / "train.h5")
    assert ds.feature_grid == GRID
    batch = default_collate([ds[i] for i in range(len(ds))])
    assert batch["features"].dtype == torch.float16 and batch["features"].shape == (3, 64, D)

    torch.manual_seed(1)
    vocab = Vocabulary.load(prepared / "coco" / "word_map.json")
    decoder = AttentionDecoder(DecoderConfig(16, 16, 24, 0.0), len(vocab), D).eval()
    task = CaptionerTask(decoder, vocab, ds, read_references(train_h5), TrainConfig(),
                         feature_grid=GRID, encoded_size=encoded_size)
    cached = task.cached_features(batch)                                 # (3, E*E, D) float32
    direct = enc(batch["image"])
    assert cached.dtype == torch.float32 and cached.shape == direct.shape == (3, encoded_size ** 2, D)
    # Each stored cell is off by at most 2**-11 of itself; an average of cells by no more.
    assert (cached - direct).abs().max() <= FP16_ROUNDING * batch["features"].float().abs().max()

    # The teacher's decoder: the same loss and the same captions from the cache as from the images.
    with torch.no_grad():
        loss_cached, *_ = task._teacher_forced(cached, batch)
        loss_direct, *_ = task._teacher_forced(direct, batch)
        assert loss_cached.item() == pytest.approx(loss_direct.item(), rel=1e-3)
        kw = dict(start=vocab.start, end=vocab.end, beam_size=3, max_len=8)
        from_cache, from_images = beam_search(decoder, cached, **kw), beam_search(decoder, direct, **kw)
    assert [d.tokens for d in from_cache] == [d.tokens for d in from_images]
    assert [d.score for d in from_cache] == pytest.approx([d.score for d in from_images], rel=1e-3)


def test_on_its_own_grid_the_cache_is_what_the_pooled_cache_was(prepared, tmp_path):
    """Native 8 x 8 = encoded 8 x 8 (the shapes profile): pooling is the identity and the stored
    features are, byte for byte, the encoder's output in fp16."""
    enc = _trunk(8)
    train_h5 = prepared / "coco" / "train.h5"
    images = _images(train_h5)
    # One batch of all three: a convolution's float32 sums, and so fp16 ties, depend on the batch.
    encode_split(enc, train_h5, tmp_path / "train.h5", batch_size=len(images), progress=False)
    with h5py.File(tmp_path / "train.h5") as f:
        stored = f["features"][:]
    np.testing.assert_array_equal(stored, to_fp16(enc(images), train_h5))
    cells = torch.from_numpy(stored)
    assert pool_cells(cells, GRID, 8) is cells


def test_pool_cells_refuses_cells_off_the_grid():
    with pytest.raises(ValueError, match="64 cells cannot lie on a 7 x 7 grid"):
        pool_cells(torch.zeros(1, 64, 3), (7, 7), 2)


def _run_features_stage(root: Path, prepared: Path, encoded_size: int, monkeypatch) -> Path:
    from stages.features import main

    monkeypatch.chdir(root)
    encoder = {"name": "resnet18", "weights": None, "stages": 2, "encoded_size": encoded_size, "fine_tune": False}
    Path("params.yaml").write_text(yaml.safe_dump({"teacher": {"encoder": encoder},
                                                   "features": {"batch_size": 2, "device": "cpu"}}))
    save_encoder(root / "teacher.pt", _trunk(encoded_size))
    main("coco", prepared_root=prepared, out_root=root / "features", trunk=root / "teacher.pt")
    return root / "features" / "coco"


def test_the_features_stage_caches_train_and_val_at_the_native_grid(prepared, tmp_path, monkeypatch):
    out = _run_features_stage(tmp_path, prepared, 14, monkeypatch)
    assert sorted(p.name for p in out.iterdir()) == ["encoder.pt", "train.h5", "val.h5"]     # no test split
    for split, n in (("train", 3), ("val", 1)):
        with h5py.File(out / f"{split}.h5") as f:
            feats = f["features"]
            assert feats.shape == (n, 64, D) and feats.dtype == np.float16
            assert tuple(f.attrs["grid"]) == GRID and f.attrs["encoded_size"] == 14 and f.attrs["feature_dim"] == D
            # 64 native cells stored where the pooled cache stored 14 x 14 = 196: 64/196 of the bytes.
            stored = feats.id.get_storage_size()
            assert stored == n * 64 * D * 2 and stored / (n * 14 * 14 * D * 2) == pytest.approx(64 / 196)
        assert (out / f"{split}.h5").stat().st_size < n * 14 * 14 * D * 2


def test_one_cache_serves_a_teacher_of_any_grid(prepared, tmp_path, monkeypatch):
    """The cache no longer depends on encoded_size: pooled to 2, 8 or 14 it is the encoder's output."""
    out = _run_features_stage(tmp_path, prepared, 4, monkeypatch)
    ds = CaptionDataset(prepared / "coco" / "val.h5", features_path=out / "val.h5")
    item = default_collate([ds[0]])
    cells = item["features"].float()
    for encoded_size in (2, 8, 14):
        direct = _trunk(encoded_size)(item["image"])
        assert (pool_cells(cells, ds.feature_grid, encoded_size) - direct).abs().max() <= FP16_ROUNDING * cells.abs().max()
