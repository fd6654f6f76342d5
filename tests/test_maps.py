"""Per-word maps on disk: what the evaluation writes is what the figures and grounding read."""

from __future__ import annotations

import numpy as np
import pytest

from capt.errors import CaptError
from capt.eval.maps import read_word_maps, write_word_maps


def test_word_maps_round_trip_keeps_every_word_and_its_map(tmp_path):
    rng = np.random.default_rng(0)
    captions = {42: (["a", "red", "circle"], rng.random((3, 16))),
                7: ([], np.zeros((0, 16))),                                   # an empty caption stays
                9: (["<unk>", "square"], rng.random((2, 16)))}
    write_word_maps(tmp_path / "m.h5", captions, "attention")
    technique, back = read_word_maps(tmp_path / "m.h5")
    assert technique == "attention" and list(back) == [42, 7, 9]
    for image_id, (words, maps) in captions.items():
        got_words, got_maps = back[image_id]
        assert got_words == words and got_maps.shape == (len(words), 4, 4)
        np.testing.assert_allclose(got_maps.reshape(len(words), 16), maps, atol=1e-3)   # float16 on disk


def test_word_maps_refuse_a_word_without_its_map_and_a_non_square_grid(tmp_path):
    with pytest.raises(ValueError, match="2 words but 1 maps"):
        write_word_maps(tmp_path / "m.h5", {1: (["a", "b"], np.zeros((1, 4)))}, "attention")
    with pytest.raises(ValueError, match="square"):
        write_word_maps(tmp_path / "m.h5", {1: (["a"], np.zeros((1, 5)))}, "attention")
    # the LSTM's and BLIP's Grad-CAM are different methods: neither is just "gradcam"
    with pytest.raises(ValueError, match="gradcam_encoder, gradcam_crossattn"):
        write_word_maps(tmp_path / "m.h5", {1: (["a"], np.zeros((1, 4)))}, "gradcam")
    assert not (tmp_path / "m.h5").exists()
    (tmp_path / "bad.h5").write_bytes(b"not hdf5")
    with pytest.raises(CaptError, match="bad.h5: cannot read word maps"):
        read_word_maps(tmp_path / "bad.h5")
