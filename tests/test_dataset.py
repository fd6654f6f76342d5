"""The torch Dataset over a prepared split, in the main process and in worker processes."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from capt.data.dataset import CaptionDataset
from capt.data.prepare import PrepareConfig, prepare_dataset
from capt.errors import CaptError
from tests.fixtures import build_coco


@pytest.fixture(scope="module")
def train_h5(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ds")
    cfg = PrepareConfig(image_size=16, min_word_freq=1, max_len=8, captions_per_image=3)
    prepare_dataset(build_coco(tmp / "coco"), tmp / "out", cfg, progress=False)
    return tmp / "out" / "train.h5"


def test_item_layout(train_h5):
    ds = CaptionDataset(train_h5)
    assert len(ds) == 3 and ds.captions_per_image == 3 and ds.image_size == 16
    item = ds[1]
    assert item["image"].shape == (3, 16, 16) and item["image"].dtype == torch.uint8
    assert item["captions"].shape == (3, 10) and item["captions"].dtype == torch.int64
    assert item["lengths"].shape == (3,) and int(item["image_id"]) == 25
    with h5py.File(train_h5) as f:
        np.testing.assert_array_equal(item["image"].numpy(), f["images"][1])
        np.testing.assert_array_equal(item["captions"].numpy(), f["captions"][1])
    with pytest.raises(IndexError):
        ds[3]
    assert "image" not in CaptionDataset(train_h5, load_images=False)[0]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_dataloader_with_workers(train_h5, num_workers):
    ds = CaptionDataset(train_h5)
    ds[0]                              # open a handle in the parent: workers must not reuse it
    loader = DataLoader(ds, batch_size=2, num_workers=num_workers, shuffle=False)
    batches = list(loader)
    assert [b["image"].shape for b in batches] == [(2, 3, 16, 16), (1, 3, 16, 16)]
    ids = torch.cat([b["image_id"] for b in batches]).tolist()
    assert ids == [9, 25, 30]
    with h5py.File(train_h5) as f:
        np.testing.assert_array_equal(torch.cat([b["captions"] for b in batches]).numpy(), f["captions"][:])


@pytest.fixture(scope="module")
def features_h5(train_h5):
    """A feature cache of train_h5 in the features stage's layout: fp16 cells on a 2 x 3 grid."""
    path = train_h5.with_name("features.h5")
    with h5py.File(train_h5) as f, h5py.File(path, "w") as g:
        g["image_ids"] = f["image_ids"][:]
        g["features"] = np.random.default_rng(0).standard_normal((3, 6, 8)).astype(np.float16)
        g.attrs.update(grid=(2, 3), encoded_size=4, feature_dim=8)
    return path


@pytest.mark.parametrize("num_workers", [0, 2])
def test_cached_features_stay_fp16_through_the_loader(train_h5, features_h5, num_workers):
    """fp16 as stored, in the items and the workers' batches: half the bytes through shared memory;
    the model casts them on its device."""
    ds = CaptionDataset(train_h5, load_images=False, features_path=features_h5)
    assert ds.feature_grid == (2, 3)
    assert ds[0]["features"].dtype == torch.float16 and ds[0]["features"].shape == (6, 8)
    batches = list(DataLoader(ds, batch_size=2, num_workers=num_workers, shuffle=False))
    assert all(b["features"].dtype == torch.float16 for b in batches)
    with h5py.File(features_h5) as g:
        np.testing.assert_array_equal(torch.cat([b["features"] for b in batches]).numpy(), g["features"][:])


def test_a_feature_cache_without_its_grid_is_refused(train_h5, tmp_path):
    old = tmp_path / "old.h5"
    with h5py.File(train_h5) as f, h5py.File(old, "w") as g:
        g["image_ids"], g["features"] = f["image_ids"][:], np.zeros((3, 4, 8), np.float16)
    with pytest.raises(CaptError, match="rerun the features stage"):
        CaptionDataset(train_h5, features_path=old)
