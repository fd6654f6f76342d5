"""Readers, vocabulary, prepare and the HDF5 cache on tiny fixtures in the real formats."""

from __future__ import annotations

import dataclasses

import json
import zipfile
import zlib

import h5py
import numpy as np
import pytest
from PIL import Image

from capt.config import build_config
from capt.data.cache import karpathy_part, read_references
from capt.data.manifest import load_manifest
from capt.data.prepare import PrepareConfig, prepare_dataset, sample_captions
from capt.data.readers import CaptionStore, ZipImageStore, decode_image, read_flickr8k_tokens, read_splits
from capt.data.shapes import ShapesConfig, generate_shapes
from capt.data.vocab import SPECIALS, Vocabulary, build_vocabulary
from capt.errors import CaptError
from capt.text import normalize_caption
from tests.fixtures import COCO_IMAGES, FLICKR_IMAGES, build_coco, build_flickr8k, coco_name, image_bytes, write_zip

CFG = PrepareConfig(image_size=16, blip_image_size=24, min_word_freq=1, max_len=8, captions_per_image=3)


def test_normalize_caption():
    assert normalize_caption("A RED bus, parked outside!") == ["a", "red", "bus", "parked", "outside"]
    # Penn Treebank tokens, as coco-caption's PTBTokenizer gives them (tests/test_metrics.py compares)
    assert normalize_caption("the man\u2019s dog-sled don't") == ["the", "man", "'s", "dog-sled", "do", "n't"]
    assert normalize_caption("A 3.5 inch e-mail, 1,000 people -- James' 'new' car.") == [
        "a", "3.5", "inch", "e-mail", "1,000", "people", "james", "new", "car"]
    assert normalize_caption("  ") == []


def test_vocabulary_from_counts_and_roundtrip(tmp_path):
    vocab, counts = build_vocabulary([["a", "red", "bus"], ["a", "bus"], ["a", "cat"]], min_word_freq=2)
    assert vocab.words == [*SPECIALS, "a", "bus"]          # most frequent first; "red"/"cat" below 2
    assert vocab.pad == 0 and counts["cat"] == 1
    ids = vocab.encode(["a", "red", "bus"], max_len=4)
    assert ids == [vocab.start, 4, vocab.unk, 5, vocab.end, 0]
    assert vocab.decode(ids) == ["a", "<unk>", "bus"]
    vocab.save(tmp_path / "wm.json")
    assert Vocabulary.load(tmp_path / "wm.json").words == vocab.words


def test_sample_captions_deterministic_and_respects_max_len():
    caps = [["w"] * n for n in (3, 4, 9, 5)]
    a, _ = sample_captions(caps, 2, 5, np.random.default_rng([0, 7]))
    b, _ = sample_captions(caps, 2, 5, np.random.default_rng([0, 7]))
    assert a == b and all(len(t) <= 5 for t in a)
    topped, _ = sample_captions(caps, 6, 5, np.random.default_rng(1))     # 3 fit -> 3 repeats
    assert len(topped) == 6 and all(len(t) <= 5 for t in topped)
    cut, truncated = sample_captions([["w"] * 9], 2, 5, np.random.default_rng(1))
    assert truncated == 1 and cut == [["w"] * 5] * 2


@pytest.mark.parametrize("mode,fmt", [("RGB", "JPEG"), ("L", "JPEG"), ("CMYK", "JPEG"), ("RGBA", "PNG"), ("P", "PNG")])
def test_decode_image_converts_modes(mode, fmt):
    arr = decode_image(image_bytes(colour=(200, 30, 30), mode=mode, fmt=fmt), 16)
    assert arr.shape == (3, 16, 16) and arr.dtype == np.uint8
    right = arr[:, :, 12:].reshape(3, -1).mean(1)
    if mode == "L":
        assert np.ptp(right) < 3                        # grey stays grey, in three equal channels
    else:
        assert right[0] > 150 and right[1] < 80         # still red (CMYK inverted would not be)
    if mode == "RGBA":                                  # transparent half over white, not black garbage
        assert arr[:, :, :3].mean() > 240


def test_read_coco_splits_and_captions(tmp_path):
    m = load_manifest(build_coco(tmp_path / "coco"))
    with CaptionStore(tmp_path / "c.sqlite") as captions:
        by_split, uncaptioned = read_splits(m, captions)
        assert uncaptioned == []
        assert {s: sorted(r.image_id for r in rs) for s, rs in by_split.items()} == {
            "train": [9, 25, 30], "val": [42], "test": [73]}          # restval counts as train
        assert [r.image_id for r in by_split["train"] if r.restval] == [30]  # ... and is marked
        bus = next(r for r in by_split["train"] if r.image_id == 9)
        assert captions.get(bus.caption_key("coco")) == COCO_IMAGES[9][4]   # all six raw COCO captions
        assert bus.filename == coco_name("train2014", 9)
    assert not (tmp_path / "c.sqlite").exists()


def test_read_flickr8k_splits_and_image_zip(tmp_path):
    m = load_manifest(build_flickr8k(tmp_path / "f8k"))
    with CaptionStore(tmp_path / "c.sqlite") as captions:
        by_split, _ = read_splits(m, captions)
        assert [len(by_split[s]) for s in ("train", "val", "test")] == [2, 1, 1]
        r = by_split["test"][0]
        assert captions.get(r.caption_key("flickr8k")) == FLICKR_IMAGES["1003163366_44323f5815"][1]
    with ZipImageStore([m.path(z) for z in m.images]) as store:
        assert r.filename in store and "._1003163366_44323f5815.jpg" not in store   # __MACOSX skipped
        assert store.where(r.filename).endswith("Flickr8k_Dataset.zip:Flicker8k_Dataset/1003163366_44323f5815.jpg")
        assert decode_image(store.read_bytes(r.filename), 8).shape == (3, 8, 8)


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_zip_image_store_reads_members_and_checks_their_crc(tmp_path, compression):
    images = {f"imgs/{k}.jpg": image_bytes(colour=(10 * k, 50, 90)) for k in range(5)}
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        zf.writestr("imgs/", b"")
        for name, data in images.items():
            zf.writestr(name, data)
    with ZipImageStore([path]) as store:
        for name, data in images.items():
            assert store.read_bytes(name.split("/")[1]) == data
        assert store.where("3.jpg") == f"{path}:imgs/3.jpg" and "9.jpg" not in store
        with pytest.raises(KeyError):
            store.read_bytes("9.jpg")
    # Damage one member's bytes in place: the CRC check notices.
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("imgs/2.jpg")
        start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    raw = bytearray(path.read_bytes())
    raw[start + info.compress_size // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with ZipImageStore([path]) as store, pytest.raises((zipfile.BadZipFile, zlib.error)):
        store.read_bytes("2.jpg")


def test_flickr8k_token_line_malformed():
    with pytest.raises(CaptError, match=r"Flickr8k.token.txt: line 2"):
        list(read_flickr8k_tokens(["a.jpg#0\tok", "broken line without tab"], "Flickr8k.token.txt"))


def _rewrite_member(path, member, text):
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    members[member] = text.encode()
    write_zip(path, members)


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d["images"][1].pop("split"), r"dataset_coco.json: images\[1\] has no key 'split'"),
    (lambda d: d["images"][0]["sentences"][0].pop("raw"), r"images\[0\].sentences\[0\] has no key 'raw'"),
    (lambda d: d["images"][2].update(cocoid="thirty"), r"images\[2\].cocoid must be int"),
    (lambda d: d.pop("images"), r"the top level has no key 'images'"),
])
def test_malformed_karpathy_json_names_file_and_key(tmp_path, mutate, message):
    root = build_coco(tmp_path / "coco")
    with zipfile.ZipFile(root / "caption_datasets.zip") as zf:
        data = json.loads(zf.read("dataset_coco.json"))
    mutate(data)
    _rewrite_member(root / "caption_datasets.zip", "dataset_coco.json", json.dumps(data))
    with pytest.raises(CaptError, match=message):
        prepare_dataset(root, tmp_path / "out", CFG, progress=False)
    assert not (tmp_path / "out" / "train.h5").exists()


def test_malformed_coco_captions_names_file_and_key(tmp_path):
    root = build_coco(tmp_path / "coco")
    member = "annotations/captions_val2014.json"
    with zipfile.ZipFile(root / "annotations_trainval2014.zip") as zf:
        data = json.loads(zf.read(member))
    del data["annotations"][3]["caption"]
    _rewrite_member(root / "annotations_trainval2014.zip", member, json.dumps(data))
    with pytest.raises(CaptError, match=r"captions_val2014.json: annotations\[3\] has no key 'caption'"):
        prepare_dataset(root, tmp_path / "out", CFG, progress=False)


def test_truncated_json_names_file(tmp_path):
    root = build_coco(tmp_path / "coco")
    _rewrite_member(root / "caption_datasets.zip", "dataset_coco.json", '{"images": [')
    with pytest.raises(CaptError, match=r"caption_datasets.zip:dataset_coco.json: malformed JSON"):
        prepare_dataset(root, tmp_path / "out", CFG, progress=False)


def test_prepare_coco_hdf5_round_trip(tmp_path):
    out = tmp_path / "out"
    summary = prepare_dataset(build_coco(tmp_path / "coco"), out, CFG, progress=False)
    vocab = Vocabulary.load(out / "word_map.json")
    assert summary["vocab_size"] == len(vocab)
    # The vocabulary comes from the training split only: "kite" (restval=train) in, "frisbee" (test) out.
    assert "kite" in vocab.word_map and "frisbee" not in vocab.word_map and "cat" not in vocab.word_map
    with h5py.File(out / "train.h5", "r") as f:
        assert f["images"].shape == (3, 3, 16, 16) and f["images"].dtype == np.uint8
        assert list(f["image_ids"][:]) == [9, 25, 30]
        assert f["captions"].shape == (3, 3, 10) and f["caption_lengths"].shape == (3, 3)
        for caps, lens, image_id in zip(f["captions"][:], f["caption_lengths"][:], f["image_ids"][:]):
            raw_tokens = [normalize_caption(c) for c in COCO_IMAGES[int(image_id)][4]]
            for cap, n in zip(caps, lens):
                assert cap[0] == vocab.start and cap[n - 1] == vocab.end and (cap[n:] == vocab.pad).all()
                assert vocab.decode(cap) in raw_tokens        # every encoded caption is one of its own
        assert f.attrs["split"] == "train" and f.attrs["image_size"] == 16
        # image 25 (grayscale) has only two captions: topped up to three by repetition
        lens25 = f["caption_lengths"][1]
        assert len({tuple(c) for c in f["captions"][1]}) == 2 and len(lens25) == 3
    refs = read_references(out / "test.h5")
    assert refs == {73: COCO_IMAGES[73][4]}                    # every raw reference, untouched
    assert read_references(out / "train.h5")[9] == COCO_IMAGES[9][4]   # all six, not just the sampled three
    assert summary["splits"]["test"]["images"] == 1 and summary["images_skipped"] == 0
    assert sorted(p.name for p in out.iterdir()) == ["summary.json", "test.h5", "test_blip.h5", "train.h5", "val.h5",
                                                     "word_map.json"]
    # Karpathy's restval image (30, a val2014 image trained on) is marked: the seed's split can
    # train a teacher on his train part and students on restval (teacher.subset, students.subset).
    with h5py.File(out / "train.h5", "r") as f, h5py.File(out / "test.h5", "r") as g:
        assert f["restval"][:].tolist() == [False, False, True] and "restval" not in g
    assert karpathy_part(out / "train.h5", "train", "teacher.subset") == [0, 1]
    assert karpathy_part(out / "train.h5", "restval", "students.subset") == [2]
    assert karpathy_part(out / "train.h5", "all", "students.subset") == [0, 1, 2]
    with pytest.raises(CaptError, match="students.subset: must be one of all, train, restval, got 'val'"):
        karpathy_part(out / "train.h5", "val", "students.subset")


def test_blip_is_given_the_test_images_resized_once_from_the_originals_to_its_own_size(tmp_path, shapes_world):
    """test_blip.h5: the test split again at blip_image_size, each image decoded from its zip and
    resized once (not test.h5's small images upsampled), with the same ids and references."""
    out = tmp_path / "out"
    summary = prepare_dataset(shapes_world, out, dataclasses.replace(CFG, image_size=16, blip_image_size=32),
                              progress=False)
    assert summary["blip_test"] == {"image_size": 32, "images": 9}
    manifest = load_manifest(shapes_world)
    with CaptionStore(tmp_path / "captions.sqlite") as captions, \
            ZipImageStore([manifest.path(z) for z in manifest.images]) as store:
        originals = {r.image_id: decode_image(store.read_bytes(r.filename), 32)
                     for r in read_splits(manifest, captions)[0]["test"]}
    with h5py.File(out / "test.h5") as small, h5py.File(out / "test_blip.h5") as blip:
        assert blip.attrs["image_size"] == 32 and blip.attrs["split"] == "test"
        np.testing.assert_array_equal(blip["image_ids"][:], small["image_ids"][:])
        for image_id, image, small_image in zip(blip["image_ids"][:], blip["images"][:], small["images"][:]):
            np.testing.assert_array_equal(image, originals[int(image_id)])
            upsampled = Image.fromarray(small_image.transpose(1, 2, 0)).resize((32, 32), Image.Resampling.BICUBIC)
            assert not np.array_equal(image, np.asarray(upsampled).transpose(2, 0, 1))
    assert read_references(out / "test_blip.h5") == read_references(out / "test.h5")
    with pytest.raises(CaptError, match=r"^params.yaml: prepare.blip_image_size: must be >= 16, got 8$"):
        build_config(PrepareConfig, {**dataclasses.asdict(CFG), "blip_image_size": 8}, "prepare")


def test_a_split_without_restval_cannot_be_split_by_karpathy_part(tmp_path):
    out = tmp_path / "out"
    prepare_dataset(build_flickr8k(tmp_path / "f8k"), out, CFG, progress=False)
    with h5py.File(out / "train.h5", "r") as f:
        assert "restval" not in f                                    # the file is as it always was
    assert karpathy_part(out / "train.h5", "all", "teacher.subset") == [0, 1]
    with pytest.raises(CaptError) as info:
        karpathy_part(out / "train.h5", "restval", "students.subset")
    assert str(info.value) == (f"students.subset: restval needs Karpathy's restval images and {out / 'train.h5'} "
                               "has none (only COCO's Karpathy split has them); use all")


def test_prepare_is_deterministic(tmp_path):
    root = build_coco(tmp_path / "coco")
    prepare_dataset(root, tmp_path / "a", CFG, progress=False)
    prepare_dataset(root, tmp_path / "b", CFG, progress=False)
    for split in ("train", "val", "test"):
        with h5py.File(tmp_path / "a" / f"{split}.h5") as fa, h5py.File(tmp_path / "b" / f"{split}.h5") as fb:
            for key in ("images", "captions", "caption_lengths", "image_ids"):
                np.testing.assert_array_equal(fa[key][:], fb[key][:])
    other = PrepareConfig(**{**CFG.__dict__, "seed": 1})
    prepare_dataset(root, tmp_path / "c", other, progress=False)
    with h5py.File(tmp_path / "a" / "train.h5") as fa, h5py.File(tmp_path / "c" / "train.h5") as fc:
        assert not np.array_equal(fa["captions"][:], fc["captions"][:])   # the seed does drive sampling


@pytest.mark.parametrize("bad", ["corrupt", "missing"])
def test_bad_image_skipped_and_listed(tmp_path, bad):
    root = build_coco(tmp_path / "coco", **{bad: 42})
    summary = prepare_dataset(root, tmp_path / "out", CFG, progress=False)
    assert summary["images_skipped"] == 1
    (entry,) = summary["skipped"]
    assert entry["image_id"] == 42 and entry["split"] == "val"
    assert ("corrupt" if bad == "corrupt" else "missing") in entry["reason"]
    with h5py.File(tmp_path / "out" / "val.h5") as f:
        assert f["images"].shape[0] == 0
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["skipped"] == summary["skipped"]


def test_damaged_zip_member_is_a_bad_image_not_a_crash(tmp_path):
    root = build_coco(tmp_path / "coco")
    path = root / "val2014.zip"
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("val2014/" + coco_name("val2014", 42))
        start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    raw = bytearray(path.read_bytes())
    raw[start + info.compress_size // 2] ^= 0xFF          # the CRC no longer matches
    path.write_bytes(bytes(raw))
    summary = prepare_dataset(root, tmp_path / "out", CFG, progress=False)
    (entry,) = summary["skipped"]
    assert entry["image_id"] == 42 and "BadZipFile" in entry["reason"]


def test_bad_image_fails_when_asked(tmp_path):
    root = build_coco(tmp_path / "coco", corrupt=42)
    cfg = PrepareConfig(**{**CFG.__dict__, "on_bad_image": "fail"})
    out = tmp_path / "out"
    with pytest.raises(CaptError, match=r"val2014.zip:val2014/COCO_val2014_000000000042.jpg: corrupt image"):
        prepare_dataset(root, out, cfg, progress=False)
    assert not (out / "val.h5").exists() and not (out / "val.h5.tmp").exists()


def test_unsafe_member_in_image_zip_refused(tmp_path):
    root = build_coco(tmp_path / "coco")
    with zipfile.ZipFile(root / "val2014.zip", "a") as zf:
        zf.writestr("../escape.jpg", image_bytes())
    with pytest.raises(CaptError, match=r"val2014.zip: refusing unsafe member '../escape.jpg'"):
        prepare_dataset(root, tmp_path / "out", CFG, progress=False)


def test_manifest_errors(tmp_path):
    with pytest.raises(CaptError, match="manifest.json: missing; run the download stage"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"name": "x", "images": ["a.zip"], "splits": {"file": "s.json"},
                                                        "captions": {"format": "yaml"}}))
    with pytest.raises(CaptError, match="captions.format must be one of"):
        load_manifest(tmp_path)


def test_prepare_flickr8k(tmp_path):
    summary = prepare_dataset(build_flickr8k(tmp_path / "f8k"), tmp_path / "out", CFG, progress=False)
    assert [summary["splits"][s]["images"] for s in ("train", "val", "test")] == [2, 1, 1]
    refs = read_references(tmp_path / "out" / "test.h5")
    assert list(refs.values()) == [FLICKR_IMAGES["1003163366_44323f5815"][1]]
    with h5py.File(tmp_path / "out" / "train.h5") as f:
        img = f["images"][0].transpose(1, 2, 0)
    assert np.abs(img.reshape(-1, 3).mean(0) - (20, 90, 160)).max() < 6   # the right picture, right colours
    Image.fromarray(img)  # a valid HWC uint8 image


def test_a_failed_hdf5_write_keeps_the_previous_split_file(tmp_path, monkeypatch):
    """A full disk while prepare writes a split: the previous good split file stays, no temporary is left."""
    import errno

    from capt.data import cache

    out = tmp_path / "out"
    prepare_dataset(build_coco(tmp_path / "coco"), out, CFG, progress=False)
    before = (out / "train.h5").read_bytes()

    def full_disk(self):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache.SplitWriter, "_flush", full_disk)
    with pytest.raises(OSError, match="No space left"):
        prepare_dataset(build_coco(tmp_path / "coco2"), out, dataclasses.replace(CFG, max_len=7), progress=False)
    assert (out / "train.h5").read_bytes() == before
    assert not list(out.glob("*.tmp"))


# --- decoding processes: the outputs do not depend on how many ---

OUTPUTS = ("train.h5", "val.h5", "test.h5", "word_map.json", "summary.json")


def _assert_same_outputs(a, b):
    """Every output of prepare identical: datasets and attrs first (a readable failure), then bytes
    (h5py writes deterministically: no timestamps, same layout for the same writes)."""
    for split in ("train", "val", "test"):
        with h5py.File(a / f"{split}.h5") as fa, h5py.File(b / f"{split}.h5") as fb:
            assert dict(fa.attrs) == dict(fb.attrs)
            assert sorted(fa) == sorted(fb)
            for key in fa:
                np.testing.assert_array_equal(fa[key][:], fb[key][:], err_msg=f"{split}.h5:{key}")
    for name in OUTPUTS:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_workers_setting_is_checked_and_kept_out_of_the_summary(tmp_path):
    for bad, why in ((-1, "must be >= 0, got -1"), (1.5, "must be an integer, got 1.5"),
                     (True, "must be an integer, got true")):
        with pytest.raises(CaptError) as e:
            build_config(PrepareConfig, {"workers": bad}, "prepare")
        assert str(e.value) == f"params.yaml: prepare.workers: {why}"
    assert "workers" not in PrepareConfig(workers=4).written()


@pytest.fixture(scope="module")
def shapes_world(tmp_path_factory):
    # Enough images for several chunks and a full window of tasks in flight, and a partial last chunk.
    raw = tmp_path_factory.mktemp("shapes") / "raw"
    generate_shapes(ShapesConfig(n_train=150, n_val=21, n_test=9, image_size=48), raw, progress=False)
    return raw


def test_workers_give_identical_outputs_on_a_shapes_world(tmp_path, shapes_world):
    cfg = dataclasses.replace(CFG, image_size=32)
    prepare_dataset(shapes_world, tmp_path / "w0", cfg, progress=False)
    for workers in (2, 3):
        out = tmp_path / f"w{workers}"
        summary = prepare_dataset(shapes_world, out, dataclasses.replace(cfg, workers=workers), progress=False)
        assert summary["splits"]["train"]["images"] == 150 and "workers" not in summary["config"]
        _assert_same_outputs(tmp_path / "w0", out)


@pytest.mark.parametrize("bad", ["corrupt", "missing"])
def test_workers_skip_and_list_bad_images_as_one_process_does(tmp_path, bad):
    root = build_coco(tmp_path / "coco", **{bad: 42})
    one = prepare_dataset(root, tmp_path / "w0", CFG, progress=False)
    for workers in (2, 3):
        many = prepare_dataset(root, tmp_path / f"w{workers}", dataclasses.replace(CFG, workers=workers),
                               progress=False)
        assert many["skipped"] == one["skipped"] and many["images_skipped"] == 1
        _assert_same_outputs(tmp_path / "w0", tmp_path / f"w{workers}")


def test_workers_fail_on_a_bad_image_naming_it(tmp_path):
    root = build_coco(tmp_path / "coco", corrupt=42)
    out = tmp_path / "out"
    cfg = dataclasses.replace(CFG, on_bad_image="fail")
    with pytest.raises(CaptError) as one:
        prepare_dataset(root, tmp_path / "one", cfg, progress=False)
    with pytest.raises(CaptError, match=r"val2014.zip:val2014/COCO_val2014_000000000042.jpg: corrupt image") as many:
        prepare_dataset(root, out, dataclasses.replace(cfg, workers=2), progress=False)
    assert str(many.value) == str(one.value)
    assert not (out / "val.h5").exists() and not (out / "val.h5.tmp").exists()
