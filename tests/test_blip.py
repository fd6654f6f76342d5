"""BLIP through transformers: a small model built from a config, its captions and per-word Grad-CAM."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from capt.blip.gradcam import word_gradcam, word_gradcam_one_at_a_time
from capt.blip.model import (GenerationConfig, SmallBlipConfig, caption_images, generate_ids, load_blip, pixel_values,
                             prompt_ids, save_blip, small_blip, strip_prompt)
from capt.errors import CaptError

WORDS = "a picture of red blue green circle square triangle small large above below".split()
GEN = GenerationConfig(num_beams=2, max_length=14, min_length=5)


@pytest.fixture(scope="module")
def blip():
    return small_blip(SmallBlipConfig(image_size=32, patch_size=8, vision_hidden=32, text_hidden=32, seed=1), WORDS)


@pytest.fixture(scope="module")
def images():
    return torch.randint(0, 256, (3, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def _prompt_len(processor):
    return prompt_ids(processor, GEN.prompt, 1).shape[1] - 1          # [DEC] + prompt words ([SEP] dropped)


def test_generation_is_deterministic_and_continues_the_prompt(blip, images):
    model, processor = blip
    a, b = generate_ids(model, processor, images, GEN), generate_ids(model, processor, images, GEN)
    assert torch.equal(a, b)
    tokens = processor.tokenizer.convert_ids_to_tokens(a[0])
    assert tokens[:4] == ["[DEC]", "a", "picture", "of"] and a.shape[1] <= GEN.max_length


def test_captions_have_the_prompt_stripped(blip, images):
    model, processor = blip
    ids = generate_ids(model, processor, images, GEN)
    full = processor.tokenizer.batch_decode(ids, skip_special_tokens=True)
    captions = caption_images(model, processor, images, GEN)
    assert all(f.startswith("a picture of") for f in full)
    assert captions == [f[len("a picture of"):].strip() for f in full]
    assert strip_prompt("A picture of a red circle", "a picture of") == "a red circle"
    assert strip_prompt("two squares", "a picture of") == "two squares"


def test_save_load_round_trip_offline(blip, images, tmp_path):
    model, processor = blip
    save_blip(model, processor, tmp_path / "blip")
    loaded, loaded_processor = load_blip(tmp_path / "blip")
    assert caption_images(loaded, loaded_processor, images, GEN) == caption_images(model, processor, images, GEN)
    assert torch.equal(pixel_values(loaded_processor, images), pixel_values(processor, images))


def test_missing_model_names_the_command_that_fetches_it(tmp_path):
    with pytest.raises(CaptError, match=r"no BLIP model here; fetch it with .*hf download "
                                        r"Salesforce/blip-image-captioning-base"):
        load_blip(tmp_path / "nothing")


def test_gradcam_one_nonnegative_map_per_word_on_the_patch_grid(blip, images):
    model, processor = blip
    ids = generate_ids(model, processor, images[:1], GEN)[0]
    n_prompt = _prompt_len(processor)
    positions, maps = word_gradcam(model, pixel_values(processor, images[:1]), ids, n_prompt)
    words = [t for t in processor.tokenizer.convert_ids_to_tokens(ids[n_prompt:]) if t not in ("[SEP]", "[PAD]")]
    assert len(positions) == len(words) > 0
    assert maps.shape == (len(words), 4, 4)                  # 32 px / 8 px patches
    assert (maps >= 0).all() and maps.sum() > 0


def test_batched_gradcam_equals_one_word_at_a_time(blip, images):
    model, processor = blip
    ids = generate_ids(model, processor, images[1:2], GEN)[0]
    pixels = pixel_values(processor, images[1:2])
    _, batched = word_gradcam(model, pixels, ids, _prompt_len(processor))
    loop = word_gradcam_one_at_a_time(model, pixels, ids, _prompt_len(processor))
    torch.testing.assert_close(batched, loop, rtol=1e-4, atol=1e-9)


def test_gradcam_changes_when_the_model_is_randomised(blip, images):
    # The model-randomisation sanity check (Adebayo et al. 2018): an explanation that does not
    # change when the weights do explains nothing about the model.
    model, processor = blip
    ids = generate_ids(model, processor, images[:1], GEN)[0]
    pixels = pixel_values(processor, images[:1])
    _, maps = word_gradcam(model, pixels, ids, _prompt_len(processor))
    other, _ = small_blip(SmallBlipConfig(image_size=32, patch_size=8, vision_hidden=32, text_hidden=32, seed=2), WORDS)
    _, other_maps = word_gradcam(other, pixels, ids, _prompt_len(processor))
    assert other_maps.shape == maps.shape
    assert not torch.allclose(maps / maps.sum(), other_maps / other_maps.sum(), atol=1e-3)


# ----------------------------------------------------------------------------- fine-tuning

from torch.utils.data import Dataset  # noqa: E402

from capt.blip.train import BlipTask, lm_inputs, split_captions  # noqa: E402
from capt.data.vocab import SPECIALS, Vocabulary  # noqa: E402
from capt.train.loop import TrainConfig, fit  # noqa: E402

VOCAB = Vocabulary([*SPECIALS, *WORDS[3:]])


class TinyShapes(Dataset):
    """Images whose colour decides the caption: red -> "red circle", blue -> "blue square"."""

    def __init__(self, n=8):
        self.images = torch.zeros(n, 3, 32, 32, dtype=torch.uint8)
        self.captions = torch.zeros(n, 2, 6, dtype=torch.long)
        self.refs = {}
        for i in range(n):
            red = i % 2 == 0
            self.images[i, 0 if red else 2] = 220
            words = ["red", "circle"] if red else ["blue", "square"]
            self.captions[i] = torch.tensor([VOCAB.encode(words, 4), VOCAB.encode(["small", *words], 4)])
            self.refs[i] = [" ".join(words), "small " + " ".join(words)]

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i], "captions": self.captions[i], "lengths": (self.captions[i] > 0).sum(1),
                "image_id": torch.tensor(i), "index": torch.tensor(i)}


def test_lm_inputs_start_with_dec_and_leave_prompt_and_padding_out_of_the_loss(blip):
    _, processor = blip
    ids, mask, labels = lm_inputs(processor, ["a picture of red circle", "a picture of small blue square"],
                                  "a picture of")
    tok = processor.tokenizer
    assert (ids[:, 0] == tok.bos_token_id).all()
    assert (labels[:, :4] == -100).all()                                   # [DEC] a picture of
    assert tok.convert_ids_to_tokens(labels[0, 4:6]) == ["red", "circle"]
    assert labels[0, -1] == -100 and mask[0, -1] == 0                      # padding of the shorter row


def test_fine_tuning_on_the_shared_loop_learns(tmp_path):
    model, processor = small_blip(SmallBlipConfig(image_size=32, patch_size=8, vision_hidden=32, text_hidden=32), WORDS)
    ds = TinyShapes()
    cfg = TrainConfig(epochs=4, batch_size=4, lr=3e-3, val_beam_size=1, early_stop=10)
    task = BlipTask(model, processor, ds.refs, ds, ds.refs, ds.refs, cfg, GEN)
    result = fit(task, ds, cfg, tmp_path, progress=False)
    losses = [row["train_loss"] for row in result["history"]]
    assert losses == sorted(losses, reverse=True) and losses[-1] < 0.85 * losses[0], losses
    assert {"val_loss", "val_bleu4", "val_cider"} <= set(result["history"][0])
    # a zero-shot run of the blip stage writes the history header of this one, without rows
    from stages.blip import HISTORY_COLUMNS

    assert list(result["history"][0]) == list(HISTORY_COLUMNS)


def test_generation_computes_in_bf16_or_fp16_on_a_gpu_and_fp32_on_a_cpu(monkeypatch):
    from capt.blip.model import inference_dtype

    assert inference_dtype(torch.device("cpu")) == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert inference_dtype(torch.device("cuda")) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert inference_dtype(torch.device("cuda")) == torch.float16


def test_blip_stage_with_zero_epochs_is_zero_shot(blip, tmp_path):
    """blip.train.epochs: 0 (the seed's zero-shot BLIP): the starting weights, unchanged, with the
    caption settings, no training at all (no prepared data is read), and every other output that
    dvc.yaml declares for the stage, saying that no epoch ran (tests/test_blip_dvc.py runs it in DVC)."""
    import json

    from PIL import Image

    from capt.blip.model import read_generation
    from stages.blip import HISTORY_COLUMNS

    model, processor = blip
    save_blip(model, processor, tmp_path / "models/blip_init")
    params = {"blip": {"dataset": "nowhere", "generation": {"prompt": "a picture of", "num_beams": 2,
                                                            "max_length": 12, "min_length": 3},
                       "train": {"epochs": 0}}}
    proc = _run_stage("stages.blip", tmp_path, params)
    assert proc.returncode == 0, proc.stderr
    loaded, loaded_processor = load_blip(tmp_path / "models/blip")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    assert read_generation(tmp_path / "models/blip") == GenerationConfig("a picture of", 2, 12, 3)
    assert (tmp_path / "metrics/history/blip.csv").read_text().splitlines() == [",".join(HISTORY_COLUMNS)]
    assert json.loads((tmp_path / "metrics/train/blip.json").read_text()) == {
        "epochs_run": 0, "best_epoch": None, "val_bleu4": None}
    with Image.open(tmp_path / "results/curves/blip.png") as im:
        assert "0 epochs (zero-shot)" in im.text["Title"] and im.size[0] > 800
    assert (tmp_path / "checkpoints/blip").is_dir() and not any((tmp_path / "checkpoints/blip").iterdir())


def _run_stage(module: str, cwd, params: dict, **env):
    """``python -m <module>`` in ``cwd`` with ``params`` as its params.yaml, as DVC runs it."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    (cwd / "params.yaml").write_text(yaml.safe_dump(params))
    repo = Path(__file__).resolve().parents[1]
    return subprocess.run([sys.executable, "-m", module], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(repo), **env})


# ----------------------------------------------------------------------------- words, not WordPiece tokens

from capt.blip.model import caption_dataset, caption_with_gradcam, merge_wordpieces  # noqa: E402

# The small BLIP's vocabulary with "skateboard" in two pieces, as the pretrained one splits it
# (tests/hub_cache.py); the LSTM's vocabulary (VOCAB) has no skateboard at all.
PIECE_WORDS = [*WORDS, "skate", "##board"]


@pytest.fixture(scope="module")
def pieces_blip():
    return small_blip(SmallBlipConfig(image_size=32, patch_size=8, vision_hidden=32, text_hidden=32, seed=1),
                      PIECE_WORDS)


def test_merge_wordpieces_joins_pieces_averages_their_maps_and_drops_special_tokens():
    maps = torch.arange(4 * 2, dtype=torch.float).reshape(4, 2)            # (T, P)
    words, merged = merge_wordpieces(["a", "skate", "##board", "[SEP]"], maps)
    assert words == ["a", "skateboard"]
    torch.testing.assert_close(merged, torch.stack([maps[0], (maps[1] + maps[2]) / 2]))
    words, merged = merge_wordpieces(["[UNK]", "##s", "red", "[UNK]", "##dish"], torch.ones(5, 3, 3))
    assert words == ["s", "reddish"] and merged.shape == (2, 3, 3)
    words, merged = merge_wordpieces(["[SEP]"], torch.ones(1, 3, 3))
    assert words == [] and merged.shape == (0, 3, 3)


def test_blip_words_are_the_decoded_captions_words_with_merged_maps(pieces_blip, images, monkeypatch):
    """A caption with a split word and a special token in it: the words are the decoded caption's
    (the pieces merged, [UNK] left out), each merged word's map the mean of its pieces' maps, in
    caption_with_gradcam and in caption_dataset (what evaluate scores)."""
    import capt.blip.model as blip_model

    model, processor = pieces_blip
    tok = processor.tokenizer
    generated = ["[DEC]", "a", "picture", "of", "a", "skate", "##board", "[UNK]", "red", "circle", "[SEP]", "[PAD]"]
    ids = torch.tensor(tok.convert_tokens_to_ids(generated))
    monkeypatch.setattr(blip_model, "generate_ids", lambda m, p, imgs, gen: ids.repeat(len(imgs), 1))
    [(caption, words, maps)] = caption_with_gradcam(model, processor, images[:1], GEN)
    assert caption == strip_prompt(tok.decode(ids, skip_special_tokens=True), GEN.prompt) == "a skateboard red circle"
    assert words == ["a", "skateboard", "red", "circle"] and " ".join(words) == caption
    _, token_maps = word_gradcam(model, pixel_values(processor, images[:1]), ids, _prompt_len(processor))
    assert token_maps.shape == (6, 4, 4)                              # a skate ##board [UNK] red circle
    expected = torch.stack([token_maps[0], token_maps[1:3].mean(0), token_maps[4], token_maps[5]])
    torch.testing.assert_close(torch.from_numpy(maps), expected)

    class Images(Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return {"image": images[i], "image_id": torch.tensor(10 + i)}

    out = caption_dataset(model, processor, Images(), GEN, progress=False)
    assert sorted(out) == [10, 11]
    assert all(c == "a skateboard red circle" and w == words and m.shape == (4, 4, 4) for c, w, m in out.values())


# ----------------------------------------------------------------------------- BLIP trains on the words


def test_blip_labels_hold_the_pieces_of_a_word_outside_the_lstm_vocabulary(pieces_blip):
    """ "skateboard" is <unk> to the LSTM (VOCAB): BLIP's labels hold skate ##board, never [UNK]."""
    import copy

    model, processor = copy.deepcopy(pieces_blip)
    ds = TinyShapes(n=2)
    captions = {0: ["red skateboard", "small red circle"], 1: ["blue square", "small blue skateboard"]}
    assert VOCAB.decode(VOCAB.encode("red skateboard".split(), 4)) == ["red", "<unk>"]
    task = BlipTask(model, processor, captions, ds, captions, ds.refs, TrainConfig(batch_size=2), GEN)
    seen = []
    model.text_decoder.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs["labels"]),
                                                 with_kwargs=True)
    task.loss(torch.utils.data.default_collate([ds[0], ds[1]]))
    [labels] = seen
    tok = processor.tokenizer
    assert labels.shape[0] == 4 and not (labels == tok.unk_token_id).any()
    rows = [tok.convert_ids_to_tokens([i for i in row.tolist() if i != -100]) for row in labels]
    assert rows == [["red", "skate", "##board", "[SEP]"], ["small", "red", "circle", "[SEP]"],
                    ["blue", "square", "[SEP]"], ["small", "blue", "skate", "##board", "[SEP]"]]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The tiny COCO prepared with 3 of each image's captions and words seen once as <unk>."""
    from capt.data.prepare import PrepareConfig, prepare_dataset
    from tests.fixtures import build_coco

    tmp = tmp_path_factory.mktemp("prepared")
    cfg = PrepareConfig(image_size=16, min_word_freq=2, max_len=8, captions_per_image=3, seed=5)
    prepare_dataset(build_coco(tmp / "coco"), tmp / "out", cfg, progress=False)
    return tmp / "out"


def test_split_captions_are_the_raw_words_of_the_encoded_captions(prepared):
    import h5py

    from capt.data.cache import read_references
    from capt.text import normalize_caption

    vocab = Vocabulary.load(prepared / "word_map.json")
    captions = split_captions(prepared / "train.h5", vocab, seed=5)
    references = read_references(prepared / "train.h5")
    with h5py.File(prepared / "train.h5") as f:
        encoded = dict(zip(f["image_ids"][:].tolist(), f["captions"][:]))
    assert sorted(captions) == sorted(encoded)
    unknown = set()
    for image_id, texts in captions.items():
        assert len(texts) == 3
        raw = [" ".join(normalize_caption(r)) for r in references[image_id]]
        for text, row in zip(texts, encoded[image_id]):
            assert text in raw                                              # a reference's own words ...
            assert vocab.encode(text.split(), 8) == row.tolist()            # ... that encode to the stored row
            unknown |= {w for w in text.split() if w not in vocab.word_map}
    assert unknown                                                          # <unk> to the LSTM, words here
    with pytest.raises(CaptError, match="rerun the prepare stage"):
        split_captions(prepared / "train.h5", vocab, seed=0)


# ----------------------------------------------------------------------------- blip_weights: the pretrained model

from tests.hub_cache import UNLOADED, seed_blip_hub_cache  # noqa: E402

PRETRAINED_PARAMS = {"blip": {"dataset": "coco", "source": "pretrained", "pretrained": "Salesforce/blip-image-captioning-base"}}
# What transformers loads of Salesforce's repo: no generation_config.json there, one weights format.
LOADED = ["config.json", "preprocessor_config.json", "pytorch_model.bin", "special_tokens_map.json",
          "tokenizer.json", "tokenizer_config.json", "vocab.txt"]


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("hub")
    seed_blip_hub_cache(cache, "a picture of man riding on the".split(), {"skateboard": ("skate", "##board")})
    return cache


def test_seeded_hub_cache_has_the_real_layout_and_files(hub_cache):
    repo = hub_cache / "models--Salesforce--blip-image-captioning-base"
    commit = (repo / "refs/main").read_text()
    snapshot = repo / "snapshots" / commit
    assert len(commit) == 40 and int(commit, 16) >= 0
    assert sorted(p.name for p in snapshot.iterdir()) == sorted([*LOADED, *UNLOADED])
    assert all(p.is_symlink() and p.resolve().parent == (repo / "blobs").resolve() for p in snapshot.iterdir())


def test_blip_weights_copies_only_the_loaded_files_from_an_offline_hub_cache(hub_cache, tmp_path):
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    proc = _run_stage("stages.blip_weights", tmp_path, PRETRAINED_PARAMS, HF_HUB_CACHE=str(hub_cache),
                      HF_HUB_OFFLINE="1")
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "models/blip_init"
    assert sorted(p.name for p in out.iterdir()) == LOADED                 # no tf_model.h5: the pickled weights
    assert not any(p.is_symlink() for p in out.iterdir())                  # plain files, not links into the cache
    model, processor = load_blip(out)
    assert processor.tokenizer.tokenize("a man riding a skateboard") == ["a", "man", "riding", "a", "skate", "##board"]
    assert processor.tokenizer.bos_token == "[DEC]"
    assert (model.config.vision_config.image_size, model.config.vision_config.patch_size) == (384, 16)
    image = processor.image_processor
    assert (image.size["height"], image.size["width"]) == (384, 384)
    assert tuple(image.image_mean) == tuple(OPENAI_CLIP_MEAN) and tuple(image.image_std) == tuple(OPENAI_CLIP_STD)
    pixels = pixel_values(processor, torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    assert pixels.shape == (1, 3, 384, 384)


def test_blip_weights_offline_with_an_empty_hub_cache_fails_in_one_line(tmp_path):
    (tmp_path / "hub").mkdir()
    proc = _run_stage("stages.blip_weights", tmp_path, PRETRAINED_PARAMS, HF_HUB_CACHE=str(tmp_path / "hub"),
                      HF_HUB_OFFLINE="1")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: cannot fetch Salesforce/blip-image-captioning-base (OfflineModeIsEnabled)")
    assert f"the Hugging Face cache {tmp_path / 'hub'} does not hold it" in lines[0]
    assert "`hf download Salesforce/blip-image-captioning-base config.json " in lines[0]
    assert " pytorch_model.bin`" in lines[0]            # the repo's main revision has no model.safetensors
    assert not (tmp_path / "models/blip_init").exists()


def test_pickled_blip_weights_on_torch_before_2_6_fail_naming_the_cause(hub_cache, tmp_path, monkeypatch):
    """transformers refuses torch.load below torch 2.6 with a message about a vulnerability; the
    real repo has only pytorch_model.bin, so load_blip says what is wrong and what to do."""
    import capt.blip.model as blip_model

    snapshot = next((hub_cache / "models--Salesforce--blip-image-captioning-base" / "snapshots").iterdir())
    folder = tmp_path / "blip_init"
    folder.mkdir()
    for name in LOADED:
        (folder / name).write_bytes((snapshot / name).read_bytes())
    monkeypatch.setattr(blip_model, "is_torch_greater_or_equal", lambda version: version != "2.6")
    with pytest.raises(CaptError, match=r"blip_init/pytorch_model.bin: transformers loads pickled weights only with "
                                        r"torch >= 2.6 and this is torch .*; upgrade it \(pip install 'torch>=2.6'\)"):
        blip_model.load_blip(folder)
    monkeypatch.undo()
    model, _ = blip_model.load_blip(folder)                 # this torch loads them
    assert model.config.vision_config.image_size == 384


def test_blip_weights_fetches_one_weights_format_safetensors_first():
    from stages.blip_weights import needed_files

    repo = ["config.json", "preprocessor_config.json", "vocab.txt", "tokenizer_config.json", "README.md",
            "tf_model.h5", "pytorch_model.bin", "model.safetensors", "flax_model.msgpack"]
    assert needed_files(repo) == ["config.json", "preprocessor_config.json", "tokenizer_config.json", "vocab.txt",
                                  "model.safetensors"]
    assert needed_files([f for f in repo if f != "model.safetensors"])[-1] == "pytorch_model.bin"


def test_blips_word_scorer_sums_a_words_pieces_teacher_forced_after_the_prompt(pieces_blip, images):
    """capt.eval.faithfulness reads BLIP through blip_word_scorer: log p(word t) for a split word is
    the sum of its pieces' log-probabilities, each after [DEC], the prompt and every piece before it;
    rows of different lengths in one batch do not interact."""
    from capt.blip.faithfulness import blip_word_scorer
    from capt.blip.model import pixel_values, prompt_ids

    model, processor = pieces_blip
    words = ["a", "red", "skateboard"]
    scorer = blip_word_scorer(model, processor, "a picture of", words)
    assert scorer.grid == 4                                     # 32 px / 8 px patches
    caption = [0, 2, 1, 2]                                      # a skateboard red skateboard
    got = scorer.word_log_probs(images[:2].repeat(2, 1, 1, 1)[:3], [(caption, 1), (caption, 3), (caption[:1], 0)])

    tok = processor.tokenizer
    start = prompt_ids(processor, "a picture of", 1)[0, :-1].tolist()
    start[0] = model.config.text_config.bos_token_id
    pieces = {w: tok.convert_tokens_to_ids(tok.tokenize(w)) for w in words}
    assert len(pieces["skateboard"]) == 2

    def by_hand(image, before, word):
        ids = start + [p for w in before for p in pieces[w]] + pieces[word]
        with torch.no_grad():
            embeds = model.vision_model(pixel_values=pixel_values(processor, image[None]))[0]
            logp = model.text_decoder(input_ids=torch.tensor([ids]), encoder_hidden_states=embeds).logits[0].log_softmax(-1)
        a = len(ids) - len(pieces[word])
        return sum(float(logp[a + i - 1, ids[a + i]]) for i in range(len(pieces[word])))

    want = [by_hand(images[0], ["a"], "skateboard"), by_hand(images[1], ["a", "skateboard", "red"], "skateboard"),
            by_hand(images[0], [], "a")]
    torch.testing.assert_close(got, torch.tensor(want), atol=1e-5, rtol=0)


def test_blips_sanity_maps_of_its_own_caption_are_its_evaluation_maps(blip, images):
    """The sanity check recomputes BLIP's Grad-CAM for the same words: on the unchanged model they
    are the maps the evaluation drew (caption_with_gradcam), and randomising the text decoder
    changes them (the check has something to compare)."""
    from capt.blip.faithfulness import BLIP_RANDOMISATIONS, BlipWords, blip_gradcam_maps

    model, processor = blip
    out = caption_with_gradcam(model, processor, images, GEN)
    table = sorted({w for _, words, _ in out for w in words})
    captions = [[table.index(w) for w in words] for _, words, _ in out]
    words = BlipWords(model, processor, GEN.prompt, table)
    for (_, w, maps), again in zip(out, blip_gradcam_maps(words, images, captions)):
        assert len(w) > 0 and again.shape == (len(w), maps.shape[1] * maps.shape[2])
        np.testing.assert_allclose(again, maps.reshape(len(w), -1), atol=1e-6)
    randomised = BLIP_RANDOMISATIONS["decoder"](words, 0)
    assert not np.allclose(blip_gradcam_maps(randomised, images, captions)[0], out[0][2].reshape(len(out[0][1]), -1))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), blip[0].parameters()))   # the caller's untouched
