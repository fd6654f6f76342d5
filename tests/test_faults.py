"""Faults, through the real entry points: a full disk or a file-size limit ends a write with one
line naming the file, and the previous output stays as it was (capt.files); a param edited while a
stage runs fails the stage (tests/test_stage_helpers.py, and under DVC tests/test_pipeline.py); a
damaged input (an HDF5 cache, a word map, a checkpoint, an image too large) ends in one line naming
it; prepare counts the captions it drops; a wrong param (a type, a range, an unknown or misplaced
key) ends the stage that reads it in one line naming its full path (and under DVC,
tests/test_pipeline.py)."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from capt.cli import main as capt_main
from capt.data.cache import karpathy_part, read_references
from capt.data.dataset import CaptionDataset
from capt.data.prepare import PrepareConfig, prepare_dataset
from capt.data.vocab import SPECIALS, Vocabulary, check_model_words
from capt.errors import CaptError
from capt.eval.difference import read_images
from capt.eval.maps import read_word_maps, write_word_maps
from capt.models.checkpoint import load_checkpoint, save_checkpoint
from capt.models.decoder import AttentionDecoder, DecoderConfig
from capt.models.encoder import Encoder, EncoderConfig
from capt.models.saved import load_captioner, load_encoder, save_captioner, save_encoder
from tests.fixtures import COCO_IMAGES, FLICKR_IMAGES, build_coco, build_flickr8k, write_zip

REPO = Path(__file__).resolve().parents[1]

# What each writer of capt.files writes under a file-size limit of LIMIT bytes: more than that.
WRITERS = {
    "json": "from capt.files import write_json; write_json(OUT, {'x': 'y' * 5000})",
    "checkpoint": "import torch; from capt.models.checkpoint import save_checkpoint; "
                  "save_checkpoint({'w': torch.zeros(5000)}, OUT)",
    "figure": "import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt; "
              "from capt.files import atomic_output; fig = plt.figure(figsize=(8, 8)); plt.plot(range(100)); "
              "exec('with atomic_output(OUT) as tmp: fig.savefig(tmp)')",
    "maps": "import numpy as np; from capt.eval.maps import write_word_maps; "
            "write_word_maps(OUT, {1: (['a'] * 400, np.random.rand(400, 64))}, 'attention')",
}
LIMIT = 2000


def _limited(limit: int):
    def set_limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)          # as stage_main does: EFBIG, not a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return set_limit


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_a_write_past_a_file_size_limit_names_the_file_and_keeps_the_previous_one(writer, tmp_path):
    suffix = {"json": ".json", "checkpoint": ".pt", "figure": ".png", "maps": ".h5"}[writer]
    out = tmp_path / f"out{suffix}"
    out.write_bytes(b"the previous output")
    code = ("import sys; from pathlib import Path; from capt.errors import CaptError; OUT = Path(sys.argv[1])\n"
            f"try:\n    {WRITERS[writer]}\nexcept CaptError as e:\n    print(f'error: {{e}}'); sys.exit(1)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(out)], cwd=REPO, capture_output=True, text=True,
                          preexec_fn=_limited(LIMIT), env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 1, proc.stderr[-3000:]
    # torch's zip writer does not say why it failed: the limit is named as the OS would have named it
    assert proc.stdout.strip() == f"error: {out}: file too large" or (writer == "checkpoint" and proc.stdout.strip(
        ) == f"error: {out}: file too large (this process's file-size limit is 2,000 bytes, ulimit -f)"), proc.stdout
    assert out.read_bytes() == b"the previous output"
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]        # no temporary file left


def test_a_stage_past_a_file_size_limit_stops_in_one_line_and_keeps_its_previous_output(tmp_path):
    """The preflight stage writes data/preflight.txt: under a limit smaller than it, one error line
    naming the file and the OS's reason, exit 1, no traceback, the previous marker intact."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data/preflight.txt").write_text("old")
    params = {"preflight": {"disk_gb": 0.001}, "evaluate": {"tokenizer": "simple", "meteor": "off",
                                                            "clipscore": "off", "clip_model": "x"}}
    from stages.preflight import DEVICE_PARAMS
    for dotted in [*DEVICE_PARAMS, *filter(None, DEVICE_PARAMS.values())]:
        *path, key = dotted.split(".")
        node = params
        for part in path:
            node = node.setdefault(part, {})
        node[key] = "cpu" if key == "device" else 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.run([sys.executable, "-m", "stages.preflight"], cwd=tmp_path, capture_output=True, text=True,
                          preexec_fn=_limited(20), env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == "error: data/preflight.txt: file too large"
    assert (tmp_path / "data/preflight.txt").read_text() == "old"


# --------------------------------------------------------------------------- corrupt inputs named in one line
# A damaged cache, word map, checkpoint or image, a too large image or an option out of range:
# one line `<file>: <what is wrong>` (issue #25, item 4), never a traceback, and nothing written.

PREPARE = PrepareConfig(image_size=16, blip_image_size=16, min_word_freq=1, max_len=8, captions_per_image=3)
WORDS = "a picture of red blue circle square small large".split()
RERUN = "rerun the stage that writes it"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """data/prepared/coco of a tiny COCO download."""
    tmp = tmp_path_factory.mktemp("faults")
    prepare_dataset(build_coco(tmp / "coco"), tmp / "prepared", PREPARE, progress=False)
    return tmp / "prepared"


def _captioner(path: Path, decoder_dim: int = 12, words: list[str] = WORDS) -> Path:
    torch.manual_seed(0)
    vocab = Vocabulary([*SPECIALS, *words])
    encoder = Encoder(EncoderConfig(name="resnet18", stages=2, encoded_size=2))
    decoder = AttentionDecoder(DecoderConfig(embed_dim=8, attention_dim=8, decoder_dim=decoder_dim), len(vocab),
                               encoder.feature_dim)
    save_captioner(path, encoder, decoder, vocab, image_size=32)
    return path


@pytest.fixture(scope="module")
def captioner(tmp_path_factory) -> Path:
    return _captioner(tmp_path_factory.mktemp("models") / "teacher.pt")


def _damage(path: Path, damage: str) -> None:
    """A good file as a kill, a full disk or a stray write leaves it."""
    data = path.read_bytes()
    if damage == "missing":
        path.unlink()
    else:
        path.write_bytes({"truncated": data[: len(data) // 2], "zeroed": bytes(len(data)), "empty": b"",
                          "garbage": np.random.default_rng(0).bytes(len(data))}[damage])


DAMAGES = ["truncated", "zeroed", "empty", "garbage", "missing"]


def _assert_damaged_h5(message: str, path: Path, damage: str, what: str = "") -> None:
    assert "\n" not in message, message
    if damage == "missing":
        assert message == f"{path}: missing; {RERUN}"
    else:
        cannot = f"cannot read {what}: " if what else ""
        assert message.startswith(f"{path}: {cannot}not a readable HDF5 file (truncated or corrupt: "), message
        assert message.endswith(f"); {RERUN}"), message
        assert ("truncated file" if damage == "truncated" else "file signature not found") in message


# What reads an HDF5 cache, each given the damaged file (and what its error line says it held).
def _read_split(path):
    CaptionDataset(path)


def _read_features(path, good_split):
    CaptionDataset(good_split, features_path=path)


def _teacher_captions(path, tmp):
    from capt.train.distill import write_teacher_captions
    vocab = Vocabulary([*SPECIALS, *WORDS])
    decoder = AttentionDecoder(DecoderConfig(embed_dim=8, attention_dim=8, decoder_dim=12), len(vocab), 8)
    write_teacher_captions(decoder, vocab, path, [0], tmp / "teacher_captions.h5", encoded_size=2, max_len=5,
                           beam_size=2)


def _blip_captions(path):
    from capt.blip.train import split_captions
    split_captions(path, Vocabulary([*SPECIALS, *WORDS]), seed=0)


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("reader", ["dataset", "features", "references", "karpathy_part", "maps", "images",
                                    "teacher_captions", "blip_captions"])
def test_a_damaged_hdf5_file_is_one_line_naming_it(prepared, tmp_path, reader, damage):
    """Each reader of the HDF5 caches (capt.data.cache.open_h5) on a file cut short, zeroed,
    emptied, overwritten with noise or gone."""
    path = tmp_path / ("maps.h5" if reader == "maps" else "split.h5")
    if reader == "maps":
        write_word_maps(path, {1: (["a"], np.ones((1, 4)))}, "attention")
    else:
        path.write_bytes((prepared / "train.h5").read_bytes())
    _damage(path, damage)
    read = {"dataset": lambda: _read_split(path), "features": lambda: _read_features(path, prepared / "train.h5"),
            "references": lambda: read_references(path), "karpathy_part": lambda: karpathy_part(path, "all", "x"),
            "maps": lambda: read_word_maps(path), "images": lambda: read_images(path, [9]),
            "teacher_captions": lambda: _teacher_captions(path, tmp_path),
            "blip_captions": lambda: _blip_captions(path)}[reader]
    with pytest.raises(CaptError) as e:
        read()
    _assert_damaged_h5(str(e.value), path, damage, {"maps": "word maps", "images": "images"}.get(reader, ""))
    assert not (tmp_path / "teacher_captions.h5").exists()


def test_a_split_file_without_a_dataset_names_the_file_and_the_dataset(prepared, tmp_path):
    path = tmp_path / "train.h5"
    with h5py.File(prepared / "train.h5") as src, h5py.File(path, "w") as dst:
        for name in src:
            if name != "captions":
                src.copy(name, dst)
        dst.attrs.update(src.attrs)
    holds = "caption_lengths, image_ids, images, reference_offsets, references, restval"
    with pytest.raises(CaptError) as e:
        CaptionDataset(path)
    assert str(e.value) == f"{path}: no 'captions' dataset (it holds {holds}); {RERUN}"
    assert len(read_references(path)) == 3                        # what it does hold still reads
    with h5py.File(path, "a") as f:
        del f["references"]
        del f.attrs["max_len"]
    with pytest.raises(CaptError, match=f"^{path}: no 'references' dataset \\(it holds "):
        read_references(path)
    with h5py.File(path, "a") as f:
        f["captions"] = np.zeros((3, 3, 10), np.int32)
    with pytest.raises(CaptError, match=f"^{path}: no 'max_len' attribute; {RERUN}$"):
        CaptionDataset(path)


def _stage_dir(tmp_path: Path, prepared: Path) -> Path:
    """A working folder as `dvc repro` runs the evaluate stage in: params.yaml, data/prepared/coco."""
    (tmp_path / "data").mkdir(parents=True)
    (tmp_path / "data/prepared").symlink_to(prepared.parent, target_is_directory=True)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "teacher": {"dataset": prepared.name},
        "evaluate": {"tokenizer": "simple", "meteor": "off", "clipscore": "off", "device": "cpu",
                     "bootstrap_resamples": 1000}}))
    return tmp_path


def _evaluate(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stages.evaluate", "teacher", "coco"], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_the_evaluate_stage_stops_in_one_line_on_a_damaged_cache_or_checkpoint(tmp_path, captioner):
    """Through a real stage: a truncated training split, a test split without its captions, a
    truncated teacher: exit 1, one error line naming the file, no traceback, nothing written."""
    data = tmp_path / "data"
    prepare_dataset(build_coco(tmp_path / "coco"), data / "coco", PREPARE, progress=False)
    cwd = _stage_dir(tmp_path / "run", data / "coco")
    (cwd / "models").mkdir()
    teacher = cwd / "models/teacher.pt"
    teacher.write_bytes(captioner.read_bytes())
    train = data / "coco/train.h5"
    good = train.read_bytes()
    _damage(train, "truncated")
    proc = _evaluate(cwd)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    line = proc.stderr.strip().splitlines()[-1]
    _assert_damaged_h5(line.removeprefix("error: "), Path("data/prepared/coco/train.h5"), "truncated")

    train.write_bytes(good)
    with h5py.File(data / "coco/test.h5", "a") as f:
        del f["captions"]
    proc = _evaluate(cwd)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "error: data/prepared/coco/test.h5: no 'captions' dataset (it holds caption_lengths, image_ids, images, ")

    prepare_dataset(build_coco(tmp_path / "coco"), data / "coco", PREPARE, progress=False)
    _damage(teacher, "truncated")
    proc = _evaluate(cwd)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: models/teacher.pt: unreadable checkpoint (truncated or corrupt: not the zip archive torch.save "
        f"writes); {RERUN}")
    assert sorted(p.name for p in cwd.iterdir()) == ["data", "models", "params.yaml"]     # no metrics, no results


# --- word maps: a model and the words it emits

@pytest.mark.parametrize("text,message", [
    ('["<pad>", "<start>"]', "a word map is a JSON object of word -> id, not a list"),
    ('{"<pad>": 0, "<start>": "1"}', "the id of '<start>' is '1', not an integer"),
    ('{"<pad>": 0, "<start>": true}', "the id of '<start>' is True, not an integer"),
    ('{"<pad>": 0, "<start>": 2}', "word map ids are not 0..1"),
    ('{"<pad>": 0, "<end>": 1}', "a word map must start with <pad>, <start>, <end>, <unk>; got ['<pad>', '<end>']"),
    ('{"<pad>": 0, "<start>"', "cannot read word map (Expecting ':' delimiter: line 1 column 23 (char 22))"),
])
def test_a_malformed_word_map_is_one_line_naming_it(tmp_path, text, message):
    path = tmp_path / "word_map.json"
    path.write_text(text)
    with pytest.raises(CaptError) as e:
        Vocabulary.load(path)
    assert str(e.value) == f"{path}: {message}"
    path.write_bytes(b"\xff\xfe{")
    with pytest.raises(CaptError, match=f"^{path}: cannot read word map \\("):
        Vocabulary.load(path)


def test_a_word_map_of_fewer_words_than_the_model_predicts_is_named(tmp_path, captioner):
    """Where a model meets the word map its data was encoded with (stages teacher_captions, distill)."""
    path = tmp_path / "word_map.json"
    Vocabulary([*SPECIALS, *WORDS[:-2]]).save(path)
    model = load_captioner(captioner)
    with pytest.raises(CaptError) as e:
        check_model_words(model.vocab, captioner, Vocabulary.load(path), path)
    assert str(e.value).startswith(f"{path}: the word map has 11 words but the model {captioner} predicts 13; ")
    Vocabulary([*SPECIALS, *reversed(WORDS)]).save(path)
    with pytest.raises(CaptError, match=f"^{path}: word 4 is 'large' but {captioner} has 'a' there; "):
        check_model_words(model.vocab, captioner, Vocabulary.load(path), path)
    check_model_words(model.vocab, captioner, model.vocab, path)                 # the same words: fine


def _edited(src: Path, dst: Path, **changes) -> Path:
    ckpt = load_checkpoint(src)
    ckpt.update(changes)
    save_checkpoint(ckpt, dst)
    return dst


def _caption_error(capsys, argv: list[str]) -> str:
    assert capt_main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and not captured.out, captured
    return err[0].removeprefix("error: ")


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("photos") / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 30, 3), dtype=np.uint8)).save(path)
    return path


def test_a_checkpoint_whose_words_or_weights_do_not_fit_is_one_line_naming_it(tmp_path, captioner, photo, capsys):
    """Through `capt caption`: a word list shorter than the decoder's output, decoder or encoder
    weights of another size than the saved config builds, a config of another capt."""
    ckpt = load_checkpoint(captioner)
    fewer = _edited(captioner, tmp_path / "fewer.pt", words=ckpt["words"][:-3])
    assert _caption_error(capsys, ["caption", str(photo), "--model", str(fewer)]) == (
        f"{fewer}: the word map has 10 words but the model predicts 13; the file is damaged or was not written "
        f"by capt: {RERUN}")
    wider = load_checkpoint(_captioner(tmp_path / "wider.pt", decoder_dim=16))
    other = _edited(captioner, tmp_path / "other.pt", decoder=wider["decoder"])
    message = _caption_error(capsys, ["caption", str(photo), "--model", str(other)])
    assert message.startswith(f"{other}: its decoder weights do not fit its config (size mismatch for "), message
    assert message.endswith(" more)"), message
    deeper = Encoder(EncoderConfig(name="resnet18", stages=3, encoded_size=2))
    encoder = _edited(captioner, tmp_path / "encoder.pt", encoder=deeper.state_dict())
    message = _caption_error(capsys, ["caption", str(photo), "--model", str(encoder)])
    assert message.startswith(f"{encoder}: its encoder weights do not fit its config (Unexpected key(s) "), message
    newer = _edited(captioner, tmp_path / "newer.pt", decoder_config={**ckpt["decoder_config"], "heads": 4})
    message = _caption_error(capsys, ["caption", str(photo), "--model", str(newer)])
    assert message == f"{newer}: its decoder config does not fit this capt (heads: unknown key (known here: " \
                      "embed_dim, attention_dim, decoder_dim, dropout))", message
    bad_name = _edited(captioner, tmp_path / "bad_name.pt", encoder_config={**ckpt["encoder_config"], "name": "resnet9"})
    assert _caption_error(capsys, ["caption", str(photo), "--model", str(bad_name)]) == (
        f"{bad_name}: its encoder config does not fit this capt (name: must be one of 'resnet18', 'resnet34', "
        "'resnet50', 'resnet101' or 'resnet152', got \"resnet9\")")
    tensor = tmp_path / "tensor.pt"
    save_checkpoint(torch.zeros(3), tensor)
    assert _caption_error(capsys, ["caption", str(photo), "--model", str(tensor)]) == (
        f"{tensor}: not a captioner checkpoint (it holds a Tensor)")


def test_a_trunk_of_other_weights_is_one_line_naming_it(tmp_path):
    trunk = tmp_path / "trunk.pt"
    save_encoder(trunk, Encoder(EncoderConfig(name="resnet18", stages=2, encoded_size=2)))
    ckpt = load_checkpoint(trunk)
    ckpt["encoder"] = Encoder(EncoderConfig(name="resnet18", stages=3, encoded_size=2)).state_dict()
    save_checkpoint(ckpt, trunk)
    with pytest.raises(CaptError, match=f"^{trunk}: its encoder weights do not fit the encoder the params ask for "):
        load_encoder(trunk, EncoderConfig(name="resnet18", stages=2, encoded_size=2))
    save_checkpoint({"w": torch.zeros(2)}, trunk)
    with pytest.raises(CaptError, match=f"^{trunk}: not an encoder checkpoint"):
        load_encoder(trunk, EncoderConfig(name="resnet18", stages=2, encoded_size=2))


@pytest.mark.parametrize("damage", ["truncated", "zeroed", "empty", "garbage"])
def test_a_damaged_checkpoint_is_one_line_naming_it(tmp_path, captioner, photo, capsys, damage):
    """Never torch's advice to load it with weights_only=False, nor pickled code blamed on noise."""
    model = tmp_path / "teacher.pt"
    model.write_bytes(captioner.read_bytes())
    _damage(model, damage)
    assert _caption_error(capsys, ["caption", str(photo), "--model", str(model)]) == (
        f"{model}: unreadable checkpoint (truncated or corrupt: not the zip archive torch.save writes); {RERUN}")


def test_a_checkpoint_holding_code_is_still_refused_as_such(tmp_path, photo, capsys):
    model = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), model)
    assert _caption_error(capsys, ["caption", str(photo), "--model", str(model)]).startswith(
        f"{model}: refused: it holds more than tensors and plain values (pickled code)")


# --- capt caption: images too large, options out of range

def _image(path: Path, side: int) -> Path:
    Image.fromarray(np.random.default_rng(side).integers(0, 255, (side, side, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("name,side", [("big.png", 64), ("between.jpg", 40)])
def test_an_image_over_max_pixels_is_refused_in_one_line(tmp_path, captioner, name, side):
    """64 x 64 is over twice the limit of 1000 (PIL raises); 40 x 40 between once and twice (PIL
    only warns): both refused, through the console script, nothing drawn."""
    image = _image(tmp_path / name, side)
    out = tmp_path / "att.png"
    proc = subprocess.run([sys.executable, "-m", "capt.cli", "caption", str(image), "--model", str(captioner),
                           "--max-pixels", "1000", "--attention", str(out)], capture_output=True, text=True)
    assert proc.returncode == 2 and not proc.stdout, proc.stderr[-3000:]
    assert proc.stderr.strip() == (f"error: {image}: {side}x{side} = {side * side} pixels is over the limit of 1000 "
                                   "(--max-pixels); pass a larger --max-pixels if you trust the image")
    assert not out.exists()


def test_an_image_within_max_pixels_is_captioned_and_pils_limit_is_restored(tmp_path, captioner, capsys):
    image = _image(tmp_path / "small.jpg", 30)                     # 900 pixels
    limit, filters = Image.MAX_IMAGE_PIXELS, list(warnings.filters)
    assert capt_main(["caption", str(image), "--model", str(captioner), "--max-pixels", "900"]) == 0
    assert capsys.readouterr().out.startswith(f"{image}\t")
    assert _caption_error(capsys, ["caption", str(image), "--model", str(captioner), "--max-pixels", "899"]) == (
        f"{image}: 30x30 = 900 pixels is over the limit of 899 (--max-pixels); pass a larger --max-pixels if you "
        "trust the image")
    assert Image.MAX_IMAGE_PIXELS == limit and list(warnings.filters) == filters


@pytest.mark.parametrize("option,value,least", [("--image-size", "0", 16), ("--image-size", "-5", 16),
                                                ("--image-size", "15", 16), ("--beam", "0", 1),
                                                ("--max-len", "0", 1), ("--max-pixels", "0", 1)])
def test_an_option_out_of_range_is_named_before_any_model_or_image_is_read(tmp_path, option, value, least, capsys):
    """Neither the model nor the image exists: the option's line comes first, not blamed on them."""
    argv = ["caption", str(tmp_path / "none.jpg"), "--model", str(tmp_path / "none.pt"), option, value]
    assert _caption_error(capsys, argv) == f"{option}: must be >= {least}, got {value}"


# --- prepare: captions without words or without an image are dropped and counted

def _rewrite(path: Path, member: str, edit) -> None:
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    members[member] = edit(members[member].decode()).encode()
    write_zip(path, members)


def _all_references(out: Path) -> list[str]:
    return [r for split in ("train", "val", "test") for refs in read_references(out / f"{split}.h5").values()
            for r in refs]


def test_prepare_drops_and_counts_empty_captions_and_captions_of_no_image_coco(tmp_path, caplog):
    root = build_coco(tmp_path / "coco")

    def add(text):
        data = json.loads(text)
        data["annotations"] += [{"id": 900, "image_id": 9, "caption": " . !"},       # no word once normalised
                                {"id": 901, "image_id": 9, "caption": ""},
                                {"id": 902, "image_id": 999, "caption": "a ghost bus nobody photographed"}]
        return json.dumps(data)

    _rewrite(root / "annotations_trainval2014.zip", "annotations/captions_train2014.json", add)
    out = tmp_path / "out"
    with caplog.at_level("WARNING"):
        summary = prepare_dataset(root, out, PREPARE, progress=False)
    assert summary["captions_dropped"] == {"empty": 2, "no_image": 1}
    assert json.loads((out / "summary.json").read_text())["captions_dropped"] == summary["captions_dropped"]
    assert "dropped 2 caption(s) without a word and 1 of images that no split lists" in caplog.text
    assert read_references(out / "train.h5")[9] == COCO_IMAGES[9][4]          # the empty ones are not references
    assert "ghost" not in Vocabulary.load(out / "word_map.json").word_map
    assert not any("ghost" in r for r in _all_references(out))
    with h5py.File(out / "train.h5") as f:
        assert (f["caption_lengths"][:] > 2).all()                               # never <start> <end> alone
    assert summary["images_skipped"] == 0


def test_prepare_drops_and_counts_them_flickr8k_and_skips_an_image_left_without_words(tmp_path):
    root = build_flickr8k(tmp_path / "f8k")
    stems = list(FLICKR_IMAGES)
    val = stems[2]                                     # every caption of the val image is punctuation only

    def edit(text):
        lines = [f"{val}.jpg#{n}\t..." if line.startswith(f"{val}.jpg#") else line
                 for n, line in enumerate(text.splitlines())]
        return "\n".join([*lines, f"{stems[0]}.jpg#5\t  ", "9999_missing.jpg#0\ta dog in no split"]) + "\n"

    _rewrite(root / "Flickr8k_text.zip", "Flickr8k.token.txt", edit)
    summary = prepare_dataset(root, tmp_path / "out", PREPARE, progress=False)
    assert summary["captions_dropped"] == {"empty": 6, "no_image": 1}
    assert summary["splits"]["val"]["images"] == 0 and summary["images_skipped"] == 1
    (skipped,) = summary["skipped"]
    assert skipped == {"split": "val", "image_id": 2, "filename": f"{val}.jpg",
                       "reason": "no captions with words in flickr8k caption source"}
    assert read_references(tmp_path / "out" / "train.h5") == {0: FLICKR_IMAGES[stems[0]][1],
                                                                1: FLICKR_IMAGES[stems[1]][1]}


def test_prepare_counts_nothing_dropped_on_clean_data(tmp_path):
    summary = prepare_dataset(build_coco(tmp_path / "coco"), tmp_path / "out", PREPARE, progress=False)
    assert summary["captions_dropped"] == {"empty": 0, "no_image": 0}


# --------------------------------------------------------------------------- params checked where a stage reads them
# Each mistake of issue #25's list, made in a copy of the real params.yaml and run as dvc.yaml runs the
# stage: exit 1, one line naming params.yaml and the param's full path, no traceback. The params
# are checked before the stage reads any data, so none is needed here.

def _set(params: dict, dotted: str, value) -> None:
    *path, key = dotted.split(".")
    node = params
    for part in path:
        node = node[part]
    node[key] = value


PARAM_MISTAKES = [   # (stage command, param, bad value, the line)
    ("stages.distill student_t20", "distill.student_t20.temperature", -1,
     "distill.student_t20.temperature: must be > 0, got -1"),
    ("stages.distill student_t20", "distill.student_t20.temperature", "abc",
     'distill.student_t20.temperature: must be a number, got "abc"'),
    ("stages.distill student_t5", "distill.student_t5.beta", 1.5, "distill.student_t5.beta: must be <= 1, got 1.5"),
    ("stages.distill student_base", "students.train.epochs", 2.5, "students.train.epochs: must be an integer, got 2.5"),
    ("stages.train_teacher", "teacher.train.lr", -1, "teacher.train.lr: must be > 0, got -1"),
    ("stages.train_teacher", "teacher.train.lr", "fast", 'teacher.train.lr: must be a number, got "fast"'),
    ("stages.train_teacher", "teacher.train.epochs", "three", 'teacher.train.epochs: must be an integer, got "three"'),
    ("stages.train_teacher", "teacher.epochs", 8, "teacher.epochs: unknown key; did you mean teacher.train.epochs?"),
    ("stages.evaluate teacher shapes", "evaluate.beam_size", 2.5, "evaluate.beam_size: must be an integer, got 2.5"),
    ("stages.evaluate teacher shapes", "evaluate.batch_size", 0, "evaluate.batch_size: must be >= 1, got 0"),
    ("stages.evaluate teacher shapes", "evaluate.grounding_tolerance", -1,
     "evaluate.grounding_tolerance: must be >= 0, got -1"),
    ("stages.evaluate teacher shapes", "evaluate.beam_sise", 3,
     "evaluate.beam_sise: unknown key; did you mean evaluate.beam_size?"),
    ("stages.prepare shapes", "prepare.max_len", 0, "prepare.max_len: must be >= 1, got 0"),
    ("stages.blip", "blip.generation.num_beams", True, "blip.generation.num_beams: must be an integer, got true"),
    ("stages.report", "study.test_sets", "shapes", 'study.test_sets: must be a list, got "shapes"'),
]


@pytest.mark.parametrize("command, param, value, line", PARAM_MISTAKES, ids=[f"{p}={v}" for _, p, v, _ in PARAM_MISTAKES])
def test_a_wrong_param_ends_the_stage_in_one_line_naming_its_full_path(command, param, value, line, tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    _set(params, param, value)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.run([sys.executable, "-m", *command.split()], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == f"error: params.yaml: {line}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]      # nothing written


def test_a_process_count_that_is_no_count_is_refused_by_the_stage_naming_the_param(tmp_path):
    """dvc.yaml runs `stages.launch ${teacher.train.processes} stages.train_teacher`: 2.5 reaches the
    launcher as a string; the stage it starts names the param."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    _set(params, "teacher.train.processes", 2.5)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.run([sys.executable, "-m", "stages.launch", "2.5", "stages.train_teacher"], cwd=tmp_path,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == "error: params.yaml: teacher.train.processes: must be an integer, got 2.5"


def test_a_blip_folders_generation_settings_out_of_range_are_named(tmp_path):
    """`capt caption --model <BLIP folder>` reads the folder's generation.json: checked as the
    blip.generation params are, named by the file."""
    from capt.blip.model import GENERATION_FILE, read_generation

    (tmp_path / GENERATION_FILE).write_text('{"prompt": "a picture of", "num_beams": 0, "max_length": 20, "mn": 5}')
    with pytest.raises(CaptError) as e:
        read_generation(tmp_path)
    assert str(e.value) == (f"{tmp_path / GENERATION_FILE}: num_beams: must be >= 1, got 0; "
                            "mn: unknown key (known here: prompt, num_beams, max_length, min_length)")


# --------------------------------------------------------------------------- the large HDF5 writers ask first
# HDF5 crashes the process (SIGSEGV) when a write fails: the prepared splits and the feature cache,
# too large to build in memory, check that they fit before they start (capt.files.check_room).

def test_a_split_file_over_the_file_size_limit_is_refused_before_hdf5_writes_a_byte(tmp_path):
    out = tmp_path / "train.h5"
    out.write_bytes(b"the previous split")
    code = ("import sys; from pathlib import Path; from capt.errors import CaptError; from capt.data.cache import "
            "SplitWriter\ntry:\n    SplitWriter(Path(sys.argv[1]), image_size=64, captions_per_image=5, max_len=20, "
            "attrs={}, images=1000)\nexcept CaptError as e:\n    print(f'error: {e}'); sys.exit(1)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(out)], cwd=REPO, capture_output=True, text=True,
                          preexec_fn=_limited(10 ** 6), env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stdout.strip().startswith(f"error: {out}: file too large: about 15.5 MB") and proc.stdout.strip().endswith(
        " MB to write, over this process's file-size limit of 1.0 MB (ulimit -f)"), proc.stdout
    assert out.read_bytes() == b"the previous split" and sorted(p.name for p in tmp_path.iterdir()) == ["train.h5"]


def test_a_feature_cache_larger_than_the_free_space_is_refused_in_one_line(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    from capt.train.features import encode_split

    prepared = tmp_path / "test.h5"
    with h5py.File(prepared, "w") as f:
        f["images"] = np.zeros((4, 3, 32, 32), np.uint8)
        f["image_ids"] = np.arange(4)
    encoder = Encoder(EncoderConfig(name="resnet18", stages=2, encoded_size=2))
    monkeypatch.setattr(shutil, "disk_usage", lambda path: namedtuple("Usage", "total used free")(10, 10, 1000))
    out = tmp_path / "features.h5"
    with pytest.raises(CaptError) as e:
        encode_split(encoder, prepared, out, progress=False)
    assert str(e.value) == f"{out}: no space left on device: about 1.1 MB to write, 1,000 bytes free"
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["test.h5"]


def _run_limited(code: str, out: Path, limit: int) -> subprocess.CompletedProcess:
    code = ("import sys; from pathlib import Path; from capt.errors import CaptError; OUT = Path(sys.argv[1])\n"
            f"try:\n    {code}\nexcept CaptError as e:\n    print(f'error: {{e}}'); sys.exit(1)\n")
    return subprocess.run([sys.executable, "-c", code, str(out)], cwd=REPO, capture_output=True, text=True,
                          preexec_fn=_limited(limit), env={**os.environ, "PYTHONPATH": str(REPO)})


def test_a_folder_written_past_a_file_size_limit_keeps_the_previous_one(tmp_path):
    """BLIP's folders (transformers' save_pretrained writes several files): all or nothing."""
    out = tmp_path / "blip"
    out.mkdir()
    (out / "config.json").write_text("the previous model")
    proc = _run_limited("from capt.files import atomic_folder\n    with atomic_folder(OUT) as tmp:\n"
                        "        (tmp / 'vocab.txt').write_text('a'); (tmp / 'config.json').write_text('x' * 5000)",
                        out, LIMIT)
    assert proc.returncode == 1 and proc.stdout.strip() == f"error: {out}: file too large", proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["config.json"] and (out / "config.json").read_text() == \
        "the previous model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blip"]                # no temporary folder left
    proc = _run_limited("from capt.files import atomic_folder\n    with atomic_folder(OUT) as tmp:\n"
                        "        (tmp / 'config.json').write_text('new')", out, LIMIT)
    assert proc.returncode == 0 and sorted(p.name for p in out.iterdir()) == ["config.json"]
    assert (out / "config.json").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["blip"]


def test_prepares_caption_store_past_a_file_size_limit_is_one_line_and_leaves_no_file(tmp_path):
    out = tmp_path / "captions.tmp.sqlite"
    proc = _run_limited("from capt.data.readers import CaptionStore\n    CaptionStore(OUT)", out, 20)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stdout.strip().startswith(f"error: {out}: cannot write the captions' temporary store (")
    assert not out.exists()
