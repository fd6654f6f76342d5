"""Faithfulness of per-word maps: deletion/insertion curves on a model whose word depends on one
known cell, batched curves equal to one perturbed image at a time on a real captioner, seeded
baselines, and the model-randomisation check telling a map of the image from a map of the model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from torchvision.transforms.functional import gaussian_blur

from capt.data.vocab import SPECIALS, Vocabulary
from capt.errors import CaptError
from capt.eval.faithfulness import (
    WordScorer,
    cell_pixels,
    cells_at_steps,
    centre_ranking,
    deletion_insertion_curves,
    faithfulness,
    lstm_attention_maps,
    lstm_word_scorer,
    map_ranking,
    random_ranking,
    sanity_check,
    spearman_per_word,
)
from capt.models.decoder import AttentionDecoder, DecoderConfig
from capt.models.encoder import Encoder, EncoderConfig
from capt.models.saved import Captioner

G, S = 8, 64                     # the embedded world: 64 px images on an 8 x 8 grid
CELL = (2, 5)                    # the one cell the hand-built model reads
CELL_INDEX = CELL[0] * G + CELL[1]


def one_cell_scorer() -> WordScorer:
    """A model whose every word's probability is a function of the mean brightness of CELL alone:
    sigmoid(12 (brightness - 0.5)), brightness in [0, 1]."""
    s = S // G

    def word_log_probs(images, rows):
        y, x = CELL
        brightness = images[:, :, y * s:(y + 1) * s, x * s:(x + 1) * s].float().mean(dim=(1, 2, 3)) / 255
        return F.logsigmoid(12 * (brightness - 0.5))

    return WordScorer(word_log_probs, G)


def bright_cell_images() -> dict[int, torch.Tensor]:
    """Dark noisy images with CELL bright: the word is likely until that cell is blurred."""
    g = torch.Generator().manual_seed(3)
    images = {}
    for image_id in (3, 8):
        image = torch.randint(10, 50, (3, S, S), dtype=torch.uint8, generator=g)
        s = S // G
        image[:, CELL[0] * s:(CELL[0] + 1) * s, CELL[1] * s:(CELL[1] + 1) * s] = 235
        images[image_id] = image
    return images


CAPTIONS = {3: [4, 5, 6], 8: [7, 4]}


def ranked_maps(first: bool) -> dict[int, np.ndarray]:
    """Maps of random values in (0, 1) with CELL the highest (``first``) or the lowest value."""
    rng = np.random.default_rng(5)
    maps = {}
    for image_id, words in CAPTIONS.items():
        m = rng.uniform(0.1, 0.9, (len(words), G * G))
        m[:, CELL_INDEX] = 1.0 if first else 0.0
        maps[image_id] = m
    return maps


def test_a_map_of_the_cell_the_word_reads_is_faithful():
    out = faithfulness(one_cell_scorer(), bright_cell_images(), CAPTIONS,
                       {"first": ranked_maps(True), "last": ranked_maps(False)}, steps=8, batch_size=50,
                       resamples=200, seed=0)
    first, last = out["first"], out["last"]
    assert first["words"] == 5 and first["images"] == 2 and first["steps"] == 8
    assert first["fractions"] == [k / 8 for k in range(9)]
    # deletion: the word dies at the first step when its cell goes first, at the last when it goes last
    assert first["deletion_auc"] < first["deletion_auc_random"] < last["deletion_auc"]
    assert first["deletion_auc"] < 0.2 and last["deletion_auc"] > 0.8
    assert first["insertion_auc"] > first["insertion_auc_random"] > last["insertion_auc"]
    assert first["insertion_auc"] > 0.8 and last["insertion_auc"] < 0.2
    assert first["deletion_auc_vs_random"] < 0 < first["insertion_auc_vs_random"]
    assert first["deletion_auc_vs_random_ci95"][1] < 0 < first["insertion_auc_vs_random_ci95"][0]
    np.testing.assert_allclose(first["deletion_auc_vs_random"],
                               first["deletion_auc"] - first["deletion_auc_random"], atol=1e-12)
    low, high = first["deletion_auc_ci95"]
    assert low <= first["deletion_auc"] <= high
    # the curves: every ranking starts from the intact image and ends at the fully blurred one
    for curve in ("deletion", "insertion"):
        for key in (f"{curve}_curve", f"{curve}_curve_random", f"{curve}_curve_centre"):
            assert len(first[key]) == 9
    assert first["deletion_curve"][0] == last["deletion_curve"][0] == first["deletion_curve_random"][0]
    assert first["deletion_curve"][-1] == first["insertion_curve"][0]
    assert first["deletion_curve"][1] < math.log(0.05) < first["deletion_curve"][0]
    assert last["deletion_curve"][7] > math.log(0.95)
    # the baselines are the same words under the same rankings for every technique
    assert first["deletion_auc_random"] == last["deletion_auc_random"]
    assert first["insertion_auc_centre"] == last["insertion_auc_centre"]
    assert "gaussian blur" in first["perturbation"] and "sigma=8" in first["perturbation"]


def test_rankings_and_steps():
    maps = np.array([[0.1, 0.5, 0.5, 0.2], [0.0, 0.0, 0.0, 0.0], [np.nan, 1.0, -1.0, np.inf]])
    np.testing.assert_array_equal(map_ranking(maps), [[1, 2, 3, 0], [0, 1, 2, 3], [1, 2, 0, 3]])
    # nearest the centre of a 4 x 4 grid: the middle four cells, row-major, then their neighbours
    np.testing.assert_array_equal(centre_ranking(4)[:4], [5, 6, 9, 10])
    np.testing.assert_array_equal(centre_ranking(3), [4, 1, 3, 5, 7, 0, 2, 6, 8])
    np.testing.assert_array_equal(cells_at_steps(64, 8), np.arange(9) * 8)
    np.testing.assert_array_equal(cells_at_steps(16, 3), [0, 5, 11, 16])       # 5.33, 10.67 rounded
    np.testing.assert_array_equal(cells_at_steps(4, 8), [0, 1, 1, 2, 2, 3, 3, 4, 4])   # 0.5 rounds up


def test_cells_cover_their_pixel_blocks_and_the_nearest_cell_when_the_grid_does_not_divide():
    cells = torch.zeros(1, 16, dtype=torch.bool)
    cells[0, 1 * 4 + 2] = True                                              # cell (1, 2) of a 4 x 4 grid
    expected = torch.zeros(32, 32, dtype=torch.bool)
    expected[8:16, 16:24] = True
    assert torch.equal(cell_pixels(cells, 4, 32, 32)[0, 0], expected)
    # 10 px on 4 cells of 2.5 px: each pixel goes to the cell its centre lies in
    second_row = torch.tensor([[c // 4 == 1 for c in range(16)]])          # cells (1, 0..3): pixels 2.5 to 5
    pixels = cell_pixels(second_row, 4, 10, 10)[0, 0]
    assert pixels[:, 0].tolist() == [False, False, True, True, True, False, False, False, False, False]
    assert pixels.all(dim=1).tolist() == pixels[:, 0].tolist()


def test_deterministic_and_the_random_baseline_depends_on_the_seed_only():
    maps = {"first": ranked_maps(True)}
    run = lambda seed, **kw: faithfulness(one_cell_scorer(), bright_cell_images(), CAPTIONS, maps, steps=4,
                                          resamples=100, seed=seed, **kw)["first"]
    a, b, other = run(0), run(0), run(1)
    assert a == b
    assert other["deletion_auc"] == a["deletion_auc"] and other["deletion_auc_centre"] == a["deletion_auc_centre"]
    assert other["deletion_auc_random"] != a["deletion_auc_random"]
    np.testing.assert_array_equal(random_ranking(8, 2, 64, seed=0), random_ranking(8, 2, 64, seed=0))
    assert not np.array_equal(random_ranking(8, 2, 64, seed=0), random_ranking(8, 2, 64, seed=1))
    assert not np.array_equal(random_ranking(8, 2, 64, seed=0), random_ranking(3, 2, 64, seed=0))
    assert sorted(random_ranking(8, 1, 64, seed=0)[0]) == list(range(64))
    # an image's random ranking does not depend on the other images scored: max_images keeps image 3
    only = faithfulness(one_cell_scorer(), bright_cell_images(), CAPTIONS, maps, steps=4, resamples=100, seed=0,
                        max_images=1)["first"]
    alone = faithfulness(one_cell_scorer(), {3: bright_cell_images()[3]}, {3: CAPTIONS[3]}, maps, steps=4,
                         resamples=100, seed=0)["first"]
    assert only == alone and only["images"] == 1 and only["words"] == 3


# --------------------------------------------------------------------------- a real captioner

WORDS = ["a", "red", "blue", "circle", "square", "big"]
VOCAB = Vocabulary([*SPECIALS, *WORDS])


def small_captioner(seed: int = 0) -> Captioner:
    torch.manual_seed(seed)
    encoder = Encoder(EncoderConfig(name="resnet18", stages=2, encoded_size=4))      # 32 px -> 4 x 4 cells
    decoder = AttentionDecoder(DecoderConfig(embed_dim=8, attention_dim=8, decoder_dim=12, dropout=0.5), len(VOCAB),
                               encoder.feature_dim)
    return Captioner(encoder, decoder, VOCAB).eval()


def random_images(ids, size=32, seed=1) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {i: torch.randint(0, 255, (3, size, size), dtype=torch.uint8, generator=g) for i in ids}


def naive_log_prob(captioner, image, words, t, hidden_cells, grid):
    """The textbook computation: blur the whole image, paste the hidden cells' blocks one by one,
    one forward of the whole caption, word t's log-softmax."""
    size = image.shape[-1]
    sigma = size / 8
    kernel = 2 * min(math.ceil(3 * sigma), size - 1) + 1
    blur = gaussian_blur(image.float(), [kernel, kernel], [sigma, sigma]).round().clamp(0, 255).to(torch.uint8)
    perturbed = image.clone()
    s = size // grid
    for c in hidden_cells:
        y, x = divmod(int(c), grid)
        perturbed[:, y * s:(y + 1) * s, x * s:(x + 1) * s] = blur[:, y * s:(y + 1) * s, x * s:(x + 1) * s]
    tokens = torch.tensor([[VOCAB.start, *words, VOCAB.end]])
    with torch.no_grad():
        logits, _ = captioner.decoder(captioner.encoder(perturbed[None]), tokens, torch.tensor([len(words) + 2]))
    return float(logits[0, t].log_softmax(-1)[words[t]])


def test_batched_curves_equal_one_perturbed_image_at_a_time():
    captioner = small_captioner()
    captions = {10: [4, 5, 7], 11: [8, 6], 12: []}
    images = random_images(captions)
    P, steps = 16, 4
    rng = np.random.default_rng(0)
    rankings = {"map": {i: map_ranking(rng.random((len(w), P))) for i, w in captions.items()},
                "random": {i: random_ranking(i, len(w), P, seed=0) for i, w in captions.items()},
                "centre": {i: np.tile(centre_ranking(4), (len(w), 1)) for i, w in captions.items()}}
    # 7 rows a batch: batches straddle words and images
    curves = deletion_insertion_curves(lstm_word_scorer(captioner), images, captions, rankings, steps=steps,
                                       batch_size=7)
    cells = cells_at_steps(P, steps)
    for name, ranking in rankings.items():
        assert curves[name][12].shape == (2, 0, steps + 1)
        for image_id, words in captions.items():
            for t in range(len(words)):
                order = ranking[image_id][t]
                naive = [[naive_log_prob(captioner, images[image_id], words, t, order[:n], 4) for n in cells],
                         [naive_log_prob(captioner, images[image_id], words, t, order[n:], 4) for n in cells]]
                np.testing.assert_allclose(curves[name][image_id][:, t], naive, rtol=0, atol=1e-5)


def test_faithfulness_takes_a_captioner_and_its_maps():
    captioner = small_captioner()
    captions = {1: [4, 5], 2: [6, 7, 8]}
    images = random_images(captions)
    maps = {"attention": {i: m for i, m in zip(captions, lstm_attention_maps(
        captioner, torch.stack([images[i] for i in captions]), list(captions.values())))}}
    out = faithfulness(captioner, images, captions, maps, steps=2, batch_size=64, resamples=50, seed=0)
    s = out["attention"]
    assert s["words"] == 5 and s["images"] == 2 and s["fractions"] == [0.0, 0.5, 1.0]
    for key in ("deletion_auc", "insertion_auc", "deletion_auc_random", "insertion_auc_centre"):
        assert 0 < s[key] < 1
    assert "sigma=4 px" in s["perturbation"]


# --------------------------------------------------------------------------- model randomisation


def brightness_maps(captioner, images, captions):
    """A "technique" that never asks the model: each cell's mean brightness, the same for every word."""
    grid = captioner.encoder.cfg.encoded_size
    cells = F.adaptive_avg_pool2d(images.float().mean(dim=1, keepdim=True), grid).flatten(1).numpy()   # (B, P)
    return [np.tile(cells[i], (len(words), 1)) for i, words in enumerate(captions)]


def test_sanity_check_tells_a_map_of_the_image_from_a_map_of_the_model():
    captioner = small_captioner()
    weights = {k: v.clone() for k, v in {**captioner.encoder.state_dict(), **captioner.decoder.state_dict()}.items()}
    captions = {i: [4 + i % 5, 5, 6 + i % 3, 7] for i in range(6)}
    images = random_images(captions)
    out = sanity_check(captioner, images, captions, {"attention": lstm_attention_maps, "brightness": brightness_maps},
                       batch_size=4, resamples=200, seed=0)
    for variant in ("decoder", "last_block"):
        assert out["brightness"][f"spearman_{variant}"] == pytest.approx(1.0, abs=1e-12)
        assert out["brightness"][f"words_{variant}"] == 24 and out["brightness"][f"constant_maps_{variant}"] == 0
    assert out["attention"]["spearman_decoder"] < 0.8
    assert out["attention"]["spearman_decoder_ci95"][1] < 0.95
    assert out["attention"]["spearman_last_block"] < 0.95
    assert out["attention"]["images"] == 6 and out["attention"]["words"] == 24
    after = {**captioner.encoder.state_dict(), **captioner.decoder.state_dict()}
    assert all(torch.equal(weights[k], after[k]) for k in weights)          # the caller's model is untouched


def test_spearman_per_word_is_scipys_and_leaves_constant_maps_out():
    rng = np.random.default_rng(0)
    a, b = rng.random((5, 16)), rng.random((5, 16))
    a[1, :4] = a[1, 4]                                                      # ties: average ranks
    b[0] = a[0] * 3 + 1
    rho = spearman_per_word(a, b)
    expected = [spearmanr(a[k], b[k]).statistic for k in range(5)]
    np.testing.assert_allclose(rho, expected, atol=1e-12)
    assert rho[0] == pytest.approx(1.0)
    a[2] = 0.0
    b[3, 0] = np.nan
    rho = spearman_per_word(a, b)
    assert np.isnan(rho[2]) and np.isnan(rho[3]) and np.isfinite(rho[[0, 1, 4]]).all()


# --------------------------------------------------------------------------- bad input


def test_bad_input_is_a_clear_error():
    scorer, images = one_cell_scorer(), bright_cell_images()
    maps = ranked_maps(True)
    with pytest.raises(CaptError, match=r"'first', image 8: 2 words .* shape \(2, 64\), got \(3, 64\)"):
        faithfulness(scorer, images, CAPTIONS, {"first": {**maps, 8: np.ones((3, 64))}}, resamples=10)
    with pytest.raises(CaptError, match="technique 'first' has no maps of image 8"):
        faithfulness(scorer, images, CAPTIONS, {"first": {3: maps[3]}}, resamples=10)
    with pytest.raises(CaptError, match="image 8 has a caption but no image"):
        faithfulness(scorer, {3: images[3]}, CAPTIONS, {"first": maps}, resamples=10)
    with pytest.raises(CaptError, match=r"image 3: an image must be uint8"):
        faithfulness(scorer, {**images, 3: images[3].float()}, CAPTIONS, {"first": maps}, resamples=10)
    with pytest.raises(CaptError, match="baseline's name"):
        faithfulness(scorer, images, CAPTIONS, {"random": maps}, resamples=10)
    with pytest.raises(CaptError, match="steps must be a positive integer"):
        faithfulness(scorer, images, CAPTIONS, {"first": maps}, steps=0, resamples=10)
    with pytest.raises(CaptError, match="all 2 images are empty"):
        faithfulness(scorer, images, {3: [], 8: []}, {"first": {3: np.zeros((0, 64)), 8: np.zeros((0, 64))}},
                     resamples=10)
