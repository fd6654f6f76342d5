"""`capt caption`: a JPEG, a PNG with alpha and a grayscale image through an LSTM checkpoint and a
BLIP folder, the per-word figure, and one-line errors for the user's mistakes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from capt.blip.model import GenerationConfig, SmallBlipConfig, save_blip, save_generation, small_blip
from capt.cli import attention_path, main
from capt.data.vocab import SPECIALS, Vocabulary
from capt.models.decoder import AttentionDecoder, DecoderConfig
from capt.models.encoder import Encoder, EncoderConfig
from capt.models.saved import load_captioner, save_captioner, save_encoder

WORDS = "a picture of red blue circle square small large".split()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(d / "photo.jpg", quality=90)
    rgba = np.dstack([rgb, np.full((40, 50), 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(d / "alpha.png")
    Image.fromarray(rgb[..., 0], "L").save(d / "gray.png")
    return [d / "photo.jpg", d / "alpha.png", d / "gray.png"]


@pytest.fixture(scope="module")
def lstm(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    vocab = Vocabulary([*SPECIALS, *WORDS])
    encoder = Encoder(EncoderConfig(name="resnet18", stages=2, encoded_size=2))
    decoder = AttentionDecoder(DecoderConfig(embed_dim=8, attention_dim=8, decoder_dim=12), len(vocab),
                               encoder.feature_dim).eval()
    path = tmp_path_factory.mktemp("models") / "teacher.pt"
    save_captioner(path, encoder, decoder, vocab, image_size=32)
    return path


@pytest.fixture(scope="module")
def blip_folder(tmp_path_factory) -> Path:
    model, processor = small_blip(SmallBlipConfig(image_size=32, patch_size=8, vision_hidden=32, text_hidden=32,
                                                  seed=1), WORDS)
    folder = tmp_path_factory.mktemp("models") / "blip"
    save_blip(model, processor, folder)
    save_generation(GenerationConfig(num_beams=2, max_length=12, min_length=4), folder)
    return folder


def _lines(capsys) -> list[tuple[str, str]]:
    return [tuple(line.split("\t")) for line in capsys.readouterr().out.splitlines()]


def test_lstm_captions_a_jpeg_a_png_with_alpha_and_a_grayscale_image(lstm, photos, capsys):
    assert main(["caption", *map(str, photos), "--model", str(lstm), "--beam", "2"]) == 0
    lines = _lines(capsys)
    assert [p for p, _ in lines] == [str(p) for p in photos]
    vocab = set(WORDS)
    assert all(c and set(c.split()) <= vocab for _, c in lines), lines
    # the same as decoding the images directly with the saved model
    from capt.cli import read_image

    captioner = load_captioner(lstm)
    assert captioner.image_size == 32
    batch = torch.from_numpy(np.stack([read_image(p, 32) for p in photos]))
    assert [c for _, c in lines] == [captioner.words(d) for d in captioner.caption(batch, beam_size=2, max_len=20)]


def test_attention_figure_per_image(lstm, photos, tmp_path, capsys):
    out = tmp_path / "att.png"
    assert main(["caption", str(photos[0]), "--model", str(lstm), "--attention", str(out)]) == 0
    with Image.open(out) as im:
        assert im.size[0] > 300 and np.asarray(im.convert("L")).std() > 10     # a drawn figure, not blank
    assert main(["caption", *map(str, photos[:2]), "--model", str(lstm), "--attention", str(out)]) == 0
    assert (tmp_path / "att-photo.png").exists() and (tmp_path / "att-alpha.png").exists()
    assert attention_path(Path("a/b.png"), Path("x/y.jpg"), 2) == Path("a/b-y.png")


def test_blip_folder_captions_with_gradcam_figure(blip_folder, photos, tmp_path, capsys):
    out = tmp_path / "blip.png"
    assert main(["caption", *map(str, photos), "--model", str(blip_folder), "--attention", str(out)]) == 0
    lines = _lines(capsys)
    assert len(lines) == 3 and all(c.strip() for _, c in lines)
    assert all((tmp_path / f"blip-{p.stem}.png").stat().st_size > 1000 for p in photos)


def test_errors_are_one_line(lstm, photos, tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image at all")
    notes = tmp_path / "notes.pt"
    notes.write_text("hello")
    trunk = tmp_path / "trunk.pt"
    save_encoder(trunk, Encoder(EncoderConfig(name="resnet18", stages=2, encoded_size=2)))
    cases = [
        (["caption", str(tmp_path / "missing.jpg"), "--model", str(lstm)], "missing.jpg: no such image"),
        (["caption", str(bad), "--model", str(lstm)], "bad.jpg: not a readable image"),
        (["caption", str(photos[0]), "--model", str(notes)], "notes.pt: unreadable checkpoint"),
        (["caption", str(photos[0]), "--model", str(trunk)], "trunk.pt: not a captioner checkpoint (no decoder"),
        (["caption", str(photos[0]), "--model", str(tmp_path / "nope.pt")], "nope.pt: no such model"),
        (["caption", str(photos[0]), "--model", str(tmp_path)], "no BLIP model here"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], (argv, err)


def test_console_script_entry_point(lstm, photos):
    proc = subprocess.run([sys.executable, "-m", "capt.cli", "caption", str(photos[0]), "--model", str(lstm)],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith(f"{photos[0]}\t")
    proc = subprocess.run([sys.executable, "-m", "capt.cli", "caption", "nothing.jpg", "--model", str(lstm)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip() == "error: nothing.jpg: no such image"


def test_evaluation_keeps_an_empty_caption_with_its_empty_maps(lstm, tmp_path, monkeypatch):
    """An untrained model may end a caption at once (<end> first): the rehearsal's first contact
    with COCO. Its hypothesis is "", and its word maps (0, P) are written and read back."""
    from capt.eval.maps import read_word_maps, write_word_maps
    from capt.models.beam_search import Decoded
    from capt.models.saved import Captioner
    from stages import evaluate

    _split_file(tmp_path / "test.h5", 32)
    real_caption = Captioner.caption

    def first_one_empty(self, batch, **kw):
        decoded = real_caption(self, batch, **kw)
        decoded[0] = Decoded(tokens=[], alphas=torch.zeros(0, decoded[0].alphas.shape[1]), score=0.0)
        return decoded

    monkeypatch.setattr(Captioner, "caption", first_one_empty)
    cfg = evaluate.EvaluateConfig(beam_size=2, max_len=5, device="cpu")
    hypotheses, maps, explained = evaluate._lstm(lstm, "m", evaluate.CaptionDataset(tmp_path / "test.h5"), cfg)
    assert explained == {}                                      # evaluate.faithfulness_images: 0
    assert hypotheses[7] == "" and hypotheses[8] != ""
    for technique, technique_maps in maps.items():
        words, m = technique_maps[7]
        assert words == [] and m.shape[0] == 0 and m.shape[1] == technique_maps[8][1].shape[1]
        write_word_maps(tmp_path / f"{technique}.h5", technique_maps, technique)
        assert read_word_maps(tmp_path / f"{technique}.h5")[1][7][0] == []


def _split_file(path: Path, size: int) -> Path:
    """Three random images in a prepared split's layout (capt.data.cache), ``size`` px."""
    import h5py

    images = np.random.default_rng(0).integers(0, 256, (3, 3, size, size), dtype=np.uint8)
    with h5py.File(path, "w") as f:
        f["images"], f["image_ids"] = images, np.array([7, 8, 9])
        f["captions"], f["caption_lengths"] = np.zeros((3, 1, 7), np.int32), np.full((3, 1), 2, np.int32)
        f.attrs.update(image_size=size, captions_per_image=1, max_len=5, split="test")
    return path


def test_blip_is_scored_only_on_test_images_of_its_own_input_size(blip_folder, tmp_path):
    """BLIP reads test_blip.h5, which prepare writes at prepare.blip_image_size: a cache of another
    size (BLIP upsampling the models' 256 px images to 384) is refused, naming the file and the fix."""
    from capt.errors import CaptError
    from stages import evaluate

    cfg = evaluate.EvaluateConfig(device="cpu", batch_size=2)
    wrong = _split_file(tmp_path / "test_blip.h5", 24)
    with pytest.raises(CaptError) as info:
        evaluate._blip(blip_folder, evaluate.CaptionDataset(wrong), cfg)
    assert str(info.value) == (f"{wrong}: 24 px images, and BLIP ({blip_folder}) takes 32 px; "
                               "set prepare.blip_image_size: 32 and rerun prepare")
    hypotheses, maps, explained = evaluate._blip(blip_folder, evaluate.CaptionDataset(_split_file(tmp_path / "right.h5", 32)),
                                                 cfg)
    assert sorted(hypotheses) == [7, 8, 9] and sorted(maps["gradcam_crossattn"]) == [7, 8, 9] and explained == {}
    # its Grad-CAM maps' deletion / insertion curves on BLIP's own patch grid, and the sanity check
    cfg = evaluate.EvaluateConfig(device="cpu", batch_size=2, faithfulness_images=2, faithfulness_steps=2)
    _, maps, explained = evaluate._blip(blip_folder, evaluate.CaptionDataset(tmp_path / "right.h5"), cfg)
    f = explained["faithfulness"]["gradcam_crossattn"]
    assert f["images"] == sum(1 for i in (7, 8) if maps["gradcam_crossattn"][i][0]) and len(f["deletion_curve"]) == 3
    assert f["words"] == sum(len(maps["gradcam_crossattn"][i][0]) for i in (7, 8))
    s = explained["sanity_check"]["gradcam_crossattn"]          # its maps again, the text decoder randomised
    assert s["words"] == f["words"] and s["words_decoder"] + s["constant_maps_decoder"] == f["words"]


def test_every_package_says_what_it_holds():
    import importlib
    import pkgutil

    import capt

    for info in pkgutil.walk_packages(capt.__path__, "capt."):
        if info.ispkg:
            doc = importlib.import_module(info.name).__doc__ or ""
            assert len(doc) > 80 and "later issues" not in doc, info.name
