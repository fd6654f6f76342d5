"""The encoder (frozen means frozen), the attention decoder and its loss."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from capt.config import build_config
from capt.errors import CaptError
from capt.models.decoder import AttentionDecoder, DecoderConfig, caption_loss
from capt.models.encoder import Encoder, EncoderConfig, resolve_weights


def _images(b=2, s=64):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (b, 3, s, s), dtype=torch.uint8, generator=g)


def _snapshot(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_encoder_shapes():
    torch.manual_seed(0)
    enc = Encoder(EncoderConfig(name="resnet18", encoded_size=3))
    f = enc(_images())
    assert f.shape == (2, 9, 512) and enc.feature_dim == 512


def test_frozen_encoder_stays_bit_identical_after_a_training_step():
    torch.manual_seed(0)
    enc = Encoder(EncoderConfig(name="resnet18", encoded_size=2))
    head = torch.nn.Linear(512, 1)
    opt = torch.optim.Adam([*enc.parameters(), *head.parameters()], lr=0.1)
    before = _snapshot(enc)                                  # weights and BN running statistics
    enc.train()                                              # a training loop calls this...
    assert not any(m.training for m in enc.modules() if isinstance(m, torch.nn.BatchNorm2d))
    loss = head(enc(_images())).pow(2).mean()
    loss.backward()
    opt.step()
    assert all(p.grad is None for p in enc.parameters())
    after = enc.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "frozen encoder changed"


def test_fine_tune_trains_blocks_2_to_4_only():
    torch.manual_seed(0)
    enc = Encoder(EncoderConfig(name="resnet18", encoded_size=2, fine_tune=True))
    opt = torch.optim.SGD([p for p in enc.parameters() if p.requires_grad], lr=0.1)
    before = _snapshot(enc)
    enc.train()
    enc(_images()).pow(2).mean().backward()
    opt.step()
    after = enc.state_dict()
    changed = {k.split(".")[0] + "." + k.split(".")[1] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"blocks.0", "blocks.1", "blocks.2"}          # layer2..4 learn (weights and BN stats)
    assert not enc.stem[1].training                                    # the stem's BN stays in eval mode


def test_imagenet_weights_offline_names_file_and_url(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*a, **k):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(CaptError) as e:
        resolve_weights("resnet101", "IMAGENET1K_V1")
    msg = str(e.value)
    assert "https://download.pytorch.org/models/resnet101-" in msg
    assert str(tmp_path / "hub" / "checkpoints" / "resnet101-") in msg and "\n" not in msg
    with pytest.raises(CaptError, match="is not one of"):
        resolve_weights("resnet18", "IMAGENET9K")
    with pytest.raises(CaptError, match=r"^params.yaml: teacher.encoder.name: must be one of 'resnet18', 'resnet34', "
                                        r"'resnet50', 'resnet101' or 'resnet152', got \"vgg16\"$"):
        build_config(EncoderConfig, {"name": "vgg16"}, "teacher.encoder")


def _decoder(vocab=12, feat=8, seed=0):
    torch.manual_seed(seed)
    return AttentionDecoder(DecoderConfig(embed_dim=6, attention_dim=5, decoder_dim=7, dropout=0.0), vocab, feat)


def test_decoder_teacher_forcing_shapes_and_masked_alphas():
    dec = _decoder()
    feats = torch.randn(3, 4, 8)
    caps = torch.tensor([[1, 5, 6, 2, 0], [1, 7, 2, 0, 0], [1, 4, 5, 6, 2]])
    lengths = torch.tensor([4, 3, 5])
    logits, alphas = dec(feats, caps, lengths)
    assert logits.shape == (3, 4, 12) and alphas.shape == (3, 4, 4)
    assert torch.allclose(alphas[2].sum(1), torch.ones(4))             # live steps: a distribution
    assert torch.equal(alphas[1, 2:], torch.zeros(2, 4))               # padding steps: zero
    # The step function and the teacher-forced loop agree.
    state = dec.init_state(feats)
    step_logits, _, _ = dec.step(feats, dec.attention.feature_proj(feats), caps[:, 0], state)
    assert torch.allclose(step_logits, logits[:, 0])



def test_length_sorted_teacher_forcing_equals_each_caption_decoded_alone():
    # forward() runs only the captions still going at each step; every live position must get
    # exactly what a step-by-step loop over that caption alone gives, whatever the batch order.
    dec = _decoder(seed=3)
    feats = torch.randn(4, 4, 8)
    caps = torch.tensor([[1, 7, 2, 0, 0, 0], [1, 4, 5, 6, 8, 2], [1, 5, 2, 0, 0, 0], [1, 9, 6, 2, 0, 0]])
    lengths = torch.tensor([3, 6, 3, 4])
    logits, alphas = dec(feats, caps, lengths)
    for i in range(4):
        f = feats[i:i + 1]
        state, proj = dec.init_state(f), dec.attention.feature_proj(f)
        for t in range(int(lengths[i]) - 1):
            step_logits, alpha, state = dec.step(f, proj, caps[i:i + 1, t], state)
            assert torch.allclose(step_logits[0], logits[i, t], atol=1e-6)
            assert torch.allclose(alpha[0], alphas[i, t], atol=1e-6)
        assert not logits[i, int(lengths[i]) - 1:].any()                 # padding: never computed


def test_teacher_forcing_gradients_reach_each_caption_only_through_its_live_steps():
    # forward() pads each step's output and stacks the steps: the features' gradient must be
    # what each caption decoded alone gives, with nothing from its padding steps.
    dec = _decoder(seed=4)
    feats = torch.randn(3, 4, 8, requires_grad=True)
    caps = torch.tensor([[1, 7, 2, 0, 0], [1, 4, 5, 6, 2], [1, 9, 6, 2, 0]])
    lengths = torch.tensor([3, 5, 4])
    weights = torch.randn(3, 4, 12)                                      # any function of the logits
    logits, _ = dec(feats, caps, lengths)
    (logits * weights).sum().backward()
    for i in range(3):
        f = feats.detach()[i:i + 1].requires_grad_(True)
        state, proj, total = dec.init_state(f), dec.attention.feature_proj(f), 0.0
        for t in range(int(lengths[i]) - 1):
            step_logits, _, state = dec.step(f, proj, caps[i:i + 1, t], state)
            total = total + (step_logits[0] * weights[i, t]).sum()
        total.backward()
        assert torch.allclose(f.grad[0], feats.grad[i], atol=1e-6)

def test_caption_loss_masks_padding_and_adds_attention_term():
    dec = _decoder()
    feats = torch.randn(2, 4, 8)
    caps = torch.tensor([[1, 5, 6, 2], [1, 7, 2, 0]])
    lengths = torch.tensor([4, 3])
    logits, alphas = dec(feats, caps, lengths)
    by_hand = F.cross_entropy(torch.cat([logits[0, :3], logits[1, :2]]), torch.tensor([5, 6, 2, 7, 2]))
    assert torch.allclose(caption_loss(logits, caps, lengths, alphas, alpha_c=0.0), by_hand)
    reg = ((1 - alphas.sum(1)) ** 2).mean()
    assert torch.allclose(caption_loss(logits, caps, lengths, alphas, alpha_c=1.0), by_hand + reg)
    # Changing a padded target changes nothing.
    caps2 = caps.clone()
    caps2[1, 3] = 9
    assert torch.equal(caption_loss(logits, caps2, lengths, alphas, 1.0), caption_loss(logits, caps, lengths, alphas, 1.0))


def test_batchnorm_calibration_tames_a_random_trunk_and_stays_frozen():
    torch.manual_seed(0)
    enc = Encoder(EncoderConfig(name="resnet34", encoded_size=2))
    images = _images(b=8)
    raw = enc(images)
    enc.calibrate_batchnorm([images[:4], images[4:]])
    tamed = enc(images)
    assert raw.abs().mean() > 5 * tamed.abs().mean()             # uncalibrated activations grow block after block
    assert 0.05 < tamed.abs().mean() < 5
    bn = enc.stem[1]
    assert not torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean)) and bn.momentum == 0.1
    assert not any(m.training for m in enc.modules())            # frozen again: eval mode everywhere
    before = _snapshot(enc)
    enc.train()
    enc(images)
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())


def test_shallower_trunk_keeps_resolution_and_width():
    torch.manual_seed(0)
    enc = Encoder(EncoderConfig(name="resnet18", encoded_size=8, stages=2))
    assert enc.feature_dim == 128 and len(enc.blocks) == 1
    f = enc(_images(s=64))                                  # 64 px / 8 = 8x8 cells, no pooling needed
    assert f.shape == (2, 64, 128)
    assert Encoder(EncoderConfig(name="resnet50", encoded_size=2, stages=3)).feature_dim == 1024
    with pytest.raises(CaptError, match=r"^params.yaml: students.encoder.stages: must be <= 4, got 5$"):
        build_config(EncoderConfig, {"stages": 5}, "students.encoder")


@pytest.mark.parametrize("grid,encoded_size", [((8, 8), 4), ((8, 8), 14), ((8, 8), 3), ((5, 7), 2), ((6, 6), 6)])
def test_pool_cells_is_the_adaptive_pool_of_the_trunks_map(grid, encoded_size):
    """Cells pooled by pool_cells equal nn.AdaptiveAvgPool2d on the feature map they came from,
    up and down and on uneven windows; the encoder's forward is that pool on its trunk's cells."""
    from capt.models.encoder import map_cells, pool_cells

    fmap = torch.randn(2, 5, *grid)                                             # (B, D, h, w)
    expected = torch.nn.AdaptiveAvgPool2d(encoded_size)(fmap).flatten(2).transpose(1, 2)
    assert torch.equal(pool_cells(map_cells(fmap), grid, encoded_size), expected)
    torch.manual_seed(0)
    enc = Encoder(EncoderConfig(name="resnet18", encoded_size=encoded_size, stages=2))
    images = _images(s=8 * grid[0])
    assert torch.equal(enc(images), pool_cells(enc.native_cells(images), enc.native_grid(8 * grid[0], 8 * grid[0]),
                                               encoded_size))


def test_features_beyond_fp16_range_are_refused_naming_the_file():
    import numpy as np

    from capt.errors import CaptError
    from capt.train.features import to_fp16

    fine = torch.tensor([[[1.5, -65504.0]]])
    assert to_fp16(fine, Path("x.h5")).dtype == np.float16
    for bad in (torch.tensor([[[7e4]]]), torch.tensor([[[float("nan")]]]), torch.tensor([[[-float("inf")]]])):
        with pytest.raises(CaptError, match=r"data/prepared/coco/train.h5: the encoder's features reach"):
            to_fp16(bad, Path("data/prepared/coco/train.h5"))
