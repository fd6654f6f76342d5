"""Attention overlays and training curves."""

from __future__ import annotations

import numpy as np
from PIL import Image

from capt.viz.attention import plot_attention, upsample_attention
from capt.viz.curves import plot_history, write_history_csv


def test_upsampled_attention_peaks_where_the_cell_is():
    alphas = np.zeros((2, 16))
    alphas[0, 0] = 1.0          # top-left cell of a 4x4 grid
    alphas[1, 15] = 1.0         # bottom-right
    maps = upsample_attention(alphas, 64)
    assert maps.shape == (2, 64, 64) and maps.max() <= 1.0 and maps.min() >= 0.0
    assert np.unravel_index(maps[0].argmax(), (64, 64)) < (16, 16)
    assert all(np.array(np.unravel_index(maps[1].argmax(), (64, 64))) >= 48)
    assert maps[0, :16, :16].mean() > 5 * maps[0, 32:, 32:].mean()   # smooth, but local


def test_plot_attention_writes_one_panel_per_word(tmp_path):
    image = np.zeros((3, 32, 32), np.uint8)
    image[0] = 200
    alphas = np.full((3, 4), 0.25)
    plot_attention(image, ["a", "red", "square"], alphas, tmp_path / "a.png", "test")
    with Image.open(tmp_path / "a.png") as im:
        w, h = im.size
    assert w > 400 and h > 100
    plot_attention(image, [], np.zeros((0, 4)), tmp_path / "empty.png", "no words")   # an empty caption draws too
    assert (tmp_path / "empty.png").stat().st_size > 0


def test_history_csv_and_plot(tmp_path):
    history = [{"epoch": e, "train_loss": 3.0 / e, "val_loss": 3.1 / e, "train_top5": 0.5, "val_top5": 0.6,
                "val_bleu4": 0.1 * e} for e in (1, 2, 3)]
    write_history_csv(history, tmp_path / "h.csv")
    lines = (tmp_path / "h.csv").read_text().splitlines()
    assert lines[0].split(",") == list(history[0]) and len(lines) == 4 and lines[3].startswith("3,1,")
    plot_history(history, tmp_path / "c.png", "t")
    with Image.open(tmp_path / "c.png") as im:
        assert im.size[0] > 800


def test_history_of_zero_epochs_keeps_the_header_and_says_so(tmp_path):
    columns = ("epoch", "train_loss", "val_loss", "val_bleu4")
    write_history_csv([], tmp_path / "h.csv", columns)
    assert (tmp_path / "h.csv").read_text().splitlines() == ["epoch,train_loss,val_loss,val_bleu4"]
    history = [{"epoch": 1, "train_loss": 2.0, "val_loss": 2.5, "val_bleu4": 0.1}]
    write_history_csv(history, tmp_path / "one.csv", ("epoch", "train_loss"))     # rows add their own columns
    assert (tmp_path / "one.csv").read_text().splitlines() == ["epoch,train_loss,val_loss,val_bleu4", "1,2,2.5,0.1"]
    plot_history([], tmp_path / "zero.png", "BLIP: 0 epochs (zero-shot)")
    plot_history(history, tmp_path / "one.png", "BLIP")
    with Image.open(tmp_path / "zero.png") as zero, Image.open(tmp_path / "one.png") as one:
        assert zero.text["Title"] == "BLIP: 0 epochs (zero-shot)" and one.text["Title"] == "BLIP"
        assert zero.size == one.size


def test_comparison_figure_has_a_row_per_model_whatever_their_grids(tmp_path):
    from capt.viz.attention import plot_comparison

    image = np.zeros((3, 32, 32), np.uint8)
    rows = [("teacher (attention)", ["a", "red", "square"], np.full((3, 16), 1 / 16)),     # 4x4 grid
            ("blip (gradcam)", ["red", "square"], np.random.default_rng(0).random((2, 64))),   # 8x8 grid
            ("empty", [], np.zeros((0, 16)))]
    plot_comparison(image, rows, tmp_path / "c.png", "test")
    plot_comparison(image, rows[:1], tmp_path / "one.png", "test")
    with Image.open(tmp_path / "c.png") as three, Image.open(tmp_path / "one.png") as one:
        assert three.size[0] == one.size[0] and three.size[1] > 2.5 * one.size[1]


def test_a_cell_shows_its_word_map_where_the_map_peaks():
    from capt.viz.attention import CELL_PX, GAP, display_image, mosaic, overlay

    image = np.full((3, 32, 32), 128, np.uint8)
    rgb = display_image(image)
    assert rgb.shape == (CELL_PX, CELL_PX, 3) and (rgb == 128).all()       # upsampled, not shifted
    alphas = np.zeros((1, 16))
    alphas[0, 0] = 1.0                                                      # top-left cell of a 4x4 grid
    (heat,) = upsample_attention(alphas, CELL_PX)
    cell = overlay(rgb, heat)
    # jet: red where the map peaks (top-left), blue where it is 0 (bottom-right), half the image's grey in both
    assert cell[4, 4, 0] > cell[4, 4, 2] + 0.2 and cell[-4, -4, 2] > cell[-4, -4, 0] + 0.2
    assert cell.min() >= 0.5 * 128 / 255 - 1e-6
    canvas = mosaic([[rgb / 255, cell], [None]], CELL_PX, band=10)
    assert canvas.shape == (2 * (10 + CELL_PX + GAP) - GAP, 2 * CELL_PX + GAP, 3)
    np.testing.assert_allclose(canvas[10:10 + CELL_PX, CELL_PX + GAP:], cell, atol=1e-6)   # cell (0, 1)
    assert (canvas[:10] == 1).all() and (canvas[10 + CELL_PX + GAP:] == 1).all()        # word band; empty cell
