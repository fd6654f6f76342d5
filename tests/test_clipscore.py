"""CLIPScore and RefCLIPScore (capt.eval.clipscore) on a tiny random CLIP: the scores are the
paper's formulas, a CLIP trained to pair colours with colour words prefers the right caption,
the per-image scores are deterministic and feed the bootstrap, and the real weights come from an
offline Hugging Face cache or fail in one line. Nothing here touches the network."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from capt.errors import CaptError
from capt.eval.bootstrap import paired_statistic
from capt.eval.clipscore import (PRETRAINED, PROMPT, WEIGHT, ClipScores, cached_clip, clip_s_of_cosines,
                                 clip_s_statistics, clipscore_cells, corpus_mean, embed_images, embed_texts, load_clip,
                                 paired_clipscore, pixel_values, ref_clip_s_of, ref_clip_s_statistics, save_clip,
                                 score_clip, small_clip, text_inputs)
from tests.hub_cache import CLIP_IMAGE_SIZE, CLIP_PATCH_SIZE, seed_clip_hub_cache

WORDS = ["red", "blue", "green", "square", "circle", "small", "large"]
CAPTIONS = ["a red square", "a blue circle", "a small green square", "two large circles"]
REFERENCES = [["a red square", "a square"], ["a blue circle"], ["a green square", "a small square", "a square"],
              ["two circles", "large circles"]]


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Offline, and any attempt at a connection fails the test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise AssertionError(f"a network connection was attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread; with two, a busy 2-core machine makes OpenMP's
    workers wait on each other (25 training steps: 0.2 s on one thread, up to 17 s on two)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def clip():
    return small_clip(9, WORDS)         # seed 9: two of the four captions have a negative cosine


@pytest.fixture(scope="module")
def images():
    """Four uint8 images (4, 3, 64, 64): the project's cache size, resized by the processor to 32."""
    return torch.randint(0, 256, (4, 3, 64, 64), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


IDS = [30, 10, 40, 20]        # not sorted: the scores come back sorted by id


def _score(model, processor, images, batch_size=2, captions=CAPTIONS):
    return score_clip(model, processor, images, dict(zip(IDS, captions)), dict(zip(IDS, REFERENCES)),
                      batch_size=batch_size, image_ids=IDS)


# ----------------------------------------------------------------------------- the formulas


def test_clip_s_and_ref_clip_s_equal_a_hand_computation(clip, images):
    """Embeddings straight from the model and processor (HWC uint8 arrays, the processor's
    ordinary input), the prompt prefixed by hand, cosines by torch."""
    model, processor = clip
    scores = _score(model, processor, images)
    with torch.no_grad():
        hwc = [im.permute(1, 2, 0).numpy() for im in images]
        pixels = processor(images=hwc, return_tensors="pt")["pixel_values"]
        e_v = model.get_image_features(pixel_values=pixels)
        e_v = e_v if isinstance(e_v, torch.Tensor) else e_v.pooler_output

        def embed(texts):
            tokens = processor.tokenizer([f"A photo depicts {t}" for t in texts], padding=True, return_tensors="pt")
            out = model.get_text_features(**tokens)
            return out if isinstance(out, torch.Tensor) else out.pooler_output

        e_c = embed(CAPTIONS)
        expected_clip, expected_ref = {}, {}
        for k, image_id in enumerate(IDS):
            cos = F.cosine_similarity(e_c[k], e_v[k], dim=0).item()
            clip_s = 2.5 * max(cos, 0.0)
            best = max(F.cosine_similarity(e_c[k], r, dim=0).item() for r in embed(REFERENCES[k]))
            b = max(best, 0.0)
            expected_clip[image_id] = clip_s
            expected_ref[image_id] = 2 * clip_s * b / (clip_s + b) if clip_s > 0 and b > 0 else 0.0
    assert scores.image_ids == tuple(sorted(IDS))
    assert scores.clip_s.dtype == np.float64 and scores.ref_clip_s.dtype == np.float64
    np.testing.assert_allclose(scores.clip_s, [expected_clip[i] for i in sorted(IDS)], atol=1e-6, rtol=0)
    np.testing.assert_allclose(scores.ref_clip_s, [expected_ref[i] for i in sorted(IDS)], atol=1e-6, rtol=0)
    assert (scores.clip_s > 0).any() and (scores.clip_s == 0).any()       # both sides of the clip at 0
    assert (scores.ref_clip_s > 0).any()
    assert scores.clip_s_mean == pytest.approx(np.mean(list(expected_clip.values())), abs=1e-6)


def test_the_prompt_is_prefixed_to_candidates_and_references(clip):
    model, processor = clip
    tokens = processor.tokenizer.convert_ids_to_tokens(text_inputs(processor, model, ["a red square"])["input_ids"][0])
    assert PROMPT == "A photo depicts" and WEIGHT == 2.5
    assert tokens == ["<|startoftext|>", "a</w>", "photo</w>", "depicts</w>", "a</w>", "red</w>", "square</w>",
                      "<|endoftext|>"]
    long = text_inputs(processor, model, ["red " * 200])["input_ids"]
    assert long.shape == (1, 77) and long[0, -1].item() == processor.tokenizer.eos_token_id   # truncated, end kept


def test_clip_s_clips_at_zero_and_ref_clip_s_is_the_harmonic_mean():
    np.testing.assert_array_equal(clip_s_of_cosines([-0.3, 0.0, 0.4]), [0.0, 0.0, 1.0])
    clip_s = np.array([1.0, 0.0, 0.5, 0.0, 0.8])
    best = np.array([0.5, 0.3, -0.2, -0.1, 0.8])
    np.testing.assert_allclose(ref_clip_s_of(clip_s, best), [2 * 1.0 * 0.5 / 1.5, 0.0, 0.0, 0.0, 0.8], rtol=1e-15)


# ----------------------------------------------------------------------------- a CLIP that has learnt colours


COLOURS = {"red": (200, 30, 30), "blue": (30, 30, 200)}


def _squares(n: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """n noisy all-red or all-blue uint8 images (n, 3, 64, 64), alternating, and their colours."""
    g = torch.Generator().manual_seed(seed)
    names = [list(COLOURS)[k % 2] for k in range(n)]
    base = torch.tensor([COLOURS[c] for c in names], dtype=torch.float32)[:, :, None, None]
    noise = torch.randint(-25, 26, (n, 3, 64, 64), generator=g).float()
    return (base + noise).clamp(0, 255).to(torch.uint8), names


@pytest.fixture(scope="module")
def colour_clip():
    """The small CLIP after 25 Adam steps on 8 red and blue squares captioned "a red square" /
    "a blue square" (a second or two on a CPU): CLIP's contrastive loss, which orders the
    cosines of pairs but may leave them all negative (CLIP-S 0 for every caption), plus
    1 - cos(image, its caption), which pulls matched pairs to positive cosines."""
    model, processor = small_clip(0, WORDS)
    images, names = _squares(8, seed=1)
    texts = text_inputs(processor, model, [f"a {c} square" for c in names])
    pixels = pixel_values(processor, images)
    torch.manual_seed(0)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(25):
        out = model(**texts, pixel_values=pixels, return_loss=True)
        loss = out.loss + 1 - F.cosine_similarity(out.image_embeds, out.text_embeds).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval(), processor


def test_a_matching_caption_beats_a_swapped_one(colour_clip):
    model, processor = colour_clip
    images, names = _squares(2, seed=2)                     # one red, one blue, unseen noise
    ids = [0, 1]
    right = {i: f"a {names[i]} square" for i in ids}
    swapped = {i: f"a {names[1 - i]} square" for i in ids}
    refs = {i: [f"a {names[i]} square", "a square"] for i in ids}
    a = score_clip(model, processor, images, right, refs, batch_size=2, image_ids=ids)
    b = score_clip(model, processor, images, swapped, refs, batch_size=2, image_ids=ids)
    assert (a.clip_s > b.clip_s).all(), (a.clip_s, b.clip_s)
    assert (a.ref_clip_s > b.ref_clip_s).all(), (a.ref_clip_s, b.ref_clip_s)


def test_the_paired_comparison_finds_the_right_captions_better(colour_clip):
    model, processor = colour_clip
    images, names = _squares(24, seed=3)
    ids = list(range(100, 124))
    right = {i: f"a {c} square" for i, c in zip(ids, names)}
    swapped = {i: f"a {'blue' if c == 'red' else 'red'} square" for i, c in zip(ids, names)}
    refs = {i: [f"a {c} square"] for i, c in zip(ids, names)}
    a = score_clip(model, processor, images, right, refs, batch_size=8, image_ids=ids)
    b = score_clip(model, processor, images, swapped, refs, batch_size=8, image_ids=ids)
    comparison = paired_statistic(a.image_ids, clip_s_statistics(a), b.image_ids, clip_s_statistics(b), corpus_mean,
                                  resamples=1000, seed=0)
    assert comparison.delta == pytest.approx(a.clip_s_mean - b.clip_s_mean)
    assert comparison.delta > 0 and comparison.ci95[0] > 0 and comparison.p_value < 0.01
    both = paired_clipscore(a, b, resamples=1000, seed=0)
    assert both["clip_s"] == comparison
    assert both["ref_clip_s"].delta > 0 and both["ref_clip_s"].ci95[0] > 0


# ----------------------------------------------------------------------------- determinism, batches, files


def test_scores_are_deterministic_and_independent_of_the_batch_size(clip, images):
    model, processor = clip
    first, again = _score(model, processor, images, batch_size=2), _score(model, processor, images, batch_size=2)
    np.testing.assert_array_equal(first.clip_s, again.clip_s)
    np.testing.assert_array_equal(first.ref_clip_s, again.ref_clip_s)
    for batch_size in (1, 3, 64):
        other = _score(model, processor, images, batch_size=batch_size)
        np.testing.assert_allclose(other.clip_s, first.clip_s, atol=1e-6, rtol=0)
        np.testing.assert_allclose(other.ref_clip_s, first.ref_clip_s, atol=1e-6, rtol=0)


def test_batches_of_a_loader_score_as_one_tensor(clip, images):
    """Dict batches as a DataLoader over CaptionDataset yields them, and (ids, images) pairs."""
    model, processor = clip
    whole = _score(model, processor, images)
    hyps, refs = dict(zip(IDS, CAPTIONS)), dict(zip(IDS, REFERENCES))
    loader = [{"image": images[:3], "image_id": torch.tensor(IDS[:3])},
              {"image": images[3:], "image_id": torch.tensor(IDS[3:])}]
    pairs = [(IDS[:1], images[:1]), (IDS[1:], images[1:])]
    for batches in (loader, pairs):
        scored = score_clip(model, processor, batches, {**hyps, 99: "not scored"}, refs, batch_size=2)
        assert scored.image_ids == whole.image_ids
        np.testing.assert_allclose(scored.clip_s, whole.clip_s, atol=1e-6, rtol=0)
        np.testing.assert_allclose(scored.ref_clip_s, whole.ref_clip_s, atol=1e-6, rtol=0)


def test_user_errors_are_one_line_capt_errors(clip, images):
    model, processor = clip
    hyps, refs = dict(zip(IDS, CAPTIONS)), dict(zip(IDS, REFERENCES))
    cases = [(dict(images=images.float()), r"uint8 RGB images"),
             (dict(hypotheses={k: v for k, v in hyps.items() if k != 20}), r"no hypothesis for image 20: "),
             (dict(hypotheses={}), r"no hypothesis for image 30 \(and 3 more of these 4 images\)"),
             (dict(references={**refs, 40: []}), r"no reference captions for image 40: "),
             (dict(image_ids=[10, 10, 20, 30]), r"image ids repeat"),
             (dict(image_ids=[1, 2]), r"4 images need as many image_ids, got 2"),
             (dict(batch_size=0), r"batch_size must be a positive integer")]
    for change, message in cases:
        kwargs = dict(images=images, hypotheses=hyps, references=refs, batch_size=2, image_ids=IDS) | change
        with pytest.raises(CaptError, match=message) as error:
            score_clip(model, processor, **kwargs)
        assert "\n" not in str(error.value)


def test_interval_cells_bracket_the_scores_and_json_round_trips(clip, images, tmp_path):
    model, processor = clip
    scores = _score(model, processor, images)
    cells = clipscore_cells(scores, resamples=1000, seed=0)
    assert set(cells) == {"clip_s", "clip_s_ci95", "ref_clip_s", "ref_clip_s_ci95"}
    for name in ("clip_s", "ref_clip_s"):
        low, high = cells[f"{name}_ci95"]
        assert low <= cells[name] <= high and low < high
    assert cells["clip_s"] == pytest.approx(float(corpus_mean(clip_s_statistics(scores).sum(axis=0))))
    assert cells["ref_clip_s"] == pytest.approx(float(corpus_mean(ref_clip_s_statistics(scores).sum(axis=0))))
    assert cells == clipscore_cells(scores, resamples=1000, seed=0)

    path = tmp_path / "scores" / "student-shapes.clipscore.json"
    scores.write(path, "student", "shapes")
    back = ClipScores.read(path, "evaluate")
    assert back.image_ids == scores.image_ids and back.clip_model == scores.clip_model == "small CLIP (seed 9)"
    np.testing.assert_array_equal(back.clip_s, scores.clip_s)
    np.testing.assert_array_equal(back.ref_clip_s, scores.ref_clip_s)
    data = scores.to_json("student", "shapes")
    assert list(data) == ["model", "dataset", "clip_model", "prompt", "weight", "image_ids", "clip_s", "ref_clip_s"]

    path.write_text(path.read_text().replace('"prompt": "A photo depicts"', '"prompt": "A picture of"'))
    with pytest.raises(CaptError, match=r"prompt 'A picture of' .* run evaluate again"):
        ClipScores.read(path, "evaluate")
    with pytest.raises(CaptError, match=r"missing\.json: missing; run evaluate"):
        ClipScores.read(tmp_path / "missing.json", "evaluate")
    other = ClipScores(scores.image_ids, scores.clip_s, scores.ref_clip_s, "another CLIP")
    with pytest.raises(CaptError, match=r"scored by different CLIPs"):
        paired_clipscore(scores, other, resamples=100, seed=0)


def test_save_load_round_trip(clip, images, tmp_path):
    model, processor = clip
    save_clip(model, processor, tmp_path / "clip")
    loaded, loaded_processor = load_clip(tmp_path / "clip")
    a, b = _score(model, processor, images), _score(loaded, loaded_processor, images)
    np.testing.assert_allclose(b.clip_s, a.clip_s, atol=1e-6, rtol=0)
    np.testing.assert_allclose(b.ref_clip_s, a.ref_clip_s, atol=1e-6, rtol=0)
    with pytest.raises(CaptError, match=r"no CLIP model here \(no config.json\)"):
        load_clip(tmp_path)


# ----------------------------------------------------------------------------- the real weights, offline


def test_weights_not_in_the_cache_fail_in_one_line(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    for call in (cached_clip, lambda: load_clip(PRETRAINED)):
        with pytest.raises(CaptError) as error:
            call()
        message = str(error.value)
        assert "\n" not in message
        assert message.startswith(f"{PRETRAINED} is not in the Hugging Face cache ({cache}); fetch it on a machine "
                                  f"with internet: `hf download {PRETRAINED} config.json ")
        assert "model.safetensors` (or pytorch_model.bin" in message
        assert message.endswith(f"copy that machine's Hugging Face cache to {cache}, or set evaluate.clipscore: off")


def test_a_cache_without_weights_names_what_is_missing(tmp_path, monkeypatch):
    snapshot = seed_clip_hub_cache(tmp_path / "hub", WORDS)
    for name in ("model.safetensors", "pytorch_model.bin"):
        (snapshot / name).unlink()
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(CaptError, match=rf"holds {PRETRAINED} without model.safetensors or pytorch_model.bin; "):
        cached_clip()


def test_loading_from_a_seeded_offline_hub_cache(tmp_path, monkeypatch, images):
    """The real repo's files (both weights formats, the old preprocessor config, the BPE files)
    at the real input size (224 px, 32 px patches); loaded by repo id, they are the small CLIP
    they were written from, and score 64 px images resized to 224."""
    snapshot = seed_clip_hub_cache(tmp_path / "hub", WORDS, seed=5)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert cached_clip() == snapshot
    model, processor = load_clip(PRETRAINED)
    assert model.name_or_path == PRETRAINED
    assert model.config.text_config.eos_token_id == 2            # the real config's: pools at the highest id
    assert (model.config.vision_config.image_size, model.config.vision_config.patch_size) == (224, 32)
    image = processor.image_processor
    assert image.size["shortest_edge"] == 224 and (image.crop_size["height"], image.crop_size["width"]) == (224, 224)
    assert pixel_values(processor, images).shape == (4, 3, 224, 224)

    built, built_processor = small_clip(5, WORDS, image_size=CLIP_IMAGE_SIZE, patch_size=CLIP_PATCH_SIZE)
    texts = [f"{c} and {r}" for c, refs in zip(CAPTIONS, REFERENCES) for r in refs]
    np.testing.assert_allclose(embed_texts(model, processor, texts, 4), embed_texts(built, built_processor, texts, 4),
                               atol=1e-6, rtol=0)
    np.testing.assert_allclose(embed_images(model, processor, images, 4),
                               embed_images(built, built_processor, images, 4), atol=1e-6, rtol=0)
    scores = _score(model, processor, images)
    assert scores.clip_model == PRETRAINED and scores.image_ids == tuple(sorted(IDS))
    assert np.isfinite(scores.clip_s).all() and (scores.clip_s >= 0).all() and (scores.ref_clip_s >= 0).all()


def test_an_evaluation_carries_clipscore_and_the_report_pairs_models_on_it(tmp_path):
    """capt.eval.evaluation puts CLIP-S with its interval in the metrics; the per-image scores in the
    content file are what capt.eval.compare pairs two models on, refusing two different CLIPs."""
    import json

    from capt.eval.compare import compare_models, evaluation_statistics
    from capt.eval.evaluation import EvaluateConfig, evaluate_captions
    from capt.eval.metrics import image_scores

    ids = tuple(range(1, 21))
    references = {i: ["a red square", "a square that is red"] for i in ids}
    good = ClipScores(ids, np.linspace(0.6, 0.9, 20), np.linspace(0.5, 0.8, 20))
    bad = ClipScores(ids, np.linspace(0.1, 0.4, 20), np.linspace(0.2, 0.5, 20))
    evaluation = evaluate_captions({i: "a red square" for i in ids}, references, EvaluateConfig(meteor="off"),
                                   instances=None, clip=good)
    assert evaluation.scores["clip_s"] == pytest.approx(0.75) and evaluation.scores["clip_model"] == PRETRAINED
    low, high = evaluation.scores["clip_s_ci95"]
    assert low < 0.75 < high and evaluation.clip is good
    loaded = {}
    for name, clip in (("good", good), ("bad", bad), ("other", ClipScores(ids, good.clip_s, good.ref_clip_s, "x/y"))):
        image_scores(references, {i: "a red square" for i in ids}).write(tmp_path / f"{name}.json", name, "d")
        (tmp_path / f"{name}-content.json").write_text(json.dumps({"clipscore": clip.to_json(name, "d")}))
        loaded[name] = evaluation_statistics(tmp_path / f"{name}.json", tmp_path / f"{name}-content.json", "evaluate")
    compared = compare_models(loaded["good"], loaded["bad"], 1000, 0)
    assert compared["clip_s"].delta == pytest.approx(0.5) and compared["clip_s"].ci95[0] > 0
    assert compared["ref_clip_s"].delta == pytest.approx(0.3) and compared["bleu4"].delta == 0
    with pytest.raises(CaptError, match="CLIP-S were computed on different tokens or by different models"):
        compare_models(loaded["good"], loaded["other"], 1000, 0)
