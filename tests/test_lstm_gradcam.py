"""Grad-CAM of the LSTM captioners: batched over every word of every caption, it equals one
word at a time; maps are non-negative on the decoder's grid and follow the image."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from capt.models.decoder import AttentionDecoder, DecoderConfig
from capt.models.encoder import Encoder, EncoderConfig
from capt.models.gradcam import last_block_activations, lstm_word_gradcam

START, END, V = 1, 2, 12


def _model():
    torch.manual_seed(0)
    encoder = Encoder(EncoderConfig(name="resnet18", stages=2, encoded_size=2))
    decoder = AttentionDecoder(DecoderConfig(embed_dim=8, attention_dim=8, decoder_dim=12, dropout=0.5), V,
                               encoder.feature_dim)
    return encoder, decoder.eval()


def _one_word(encoder, decoder, image, words, t):
    """The textbook computation: one caption, one word's logit, one backward."""
    a = last_block_activations(encoder, image[None]).clone().requires_grad_(True)
    feats = encoder.pool(a).flatten(2).transpose(1, 2)
    tokens = torch.tensor([[START, *words, END]])
    logits, _ = decoder(feats, tokens, torch.tensor([len(words) + 2]))
    logits[0, t, words[t]].backward()
    w = a.grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((w * a.detach()).sum(1, keepdim=True))
    return F.adaptive_avg_pool2d(cam, 2)[0, 0].numpy()


def test_batched_gradcam_equals_one_word_at_a_time():
    encoder, decoder = _model()
    images = torch.randint(0, 255, (3, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    captions = [[5, 6, 7, 8], [9, 3], []]
    maps = lstm_word_gradcam(encoder, decoder, images, captions, START, END)
    assert [m.shape for m in maps] == [(4, 2, 2), (2, 2, 2), (0, 2, 2)]
    assert all((m >= 0).all() for m in maps) and maps[0].sum() > 0
    for i, words in enumerate(captions):
        for t in range(len(words)):
            np.testing.assert_allclose(maps[i][t], _one_word(encoder, decoder, images[i], words, t),
                                       rtol=1e-4, atol=1e-6)


def test_gradcam_follows_the_image_and_the_word():
    encoder, decoder = _model()
    images = torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    a = lstm_word_gradcam(encoder, decoder, images, [[5, 6], [5, 6]], START, END)
    assert not np.allclose(a[0], a[1])                   # another image, other maps
    b = lstm_word_gradcam(encoder, decoder, images[:1], [[5, 7]], START, END)
    np.testing.assert_allclose(a[0][0], b[0][0], rtol=1e-4, atol=1e-6)   # word 0 does not see word 1
    assert not np.allclose(a[0][1], b[0][1])
