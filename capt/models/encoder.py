"""The image encoder: a torchvision ResNet trunk, adaptive-pooled to a grid of feature vectors.

``Encoder(images)`` takes uint8 images (B, 3, S, S) and returns features (B, P, D) with
P = encoded_size**2 grid cells and D the trunk's width (512 for resnet18/34, 2048 above).

The pool is split off as ``pool_cells``: the trunk's own grid of h x w cells (``native_cells``;
8 x 8 for a 256 px image at stride 32) is what the feature cache stores, and whoever reads the
cache pools it to encoded_size**2 cells with the very function the encoder's forward uses.
Adaptive average pooling is linear, so pooling after the cache gives the same features (up to
the cache's fp16 rounding) from fewer stored cells: 64 instead of Show-Attend-Tell's 14 x 14 = 196.

Frozen means frozen: no parameter needs a gradient and the whole trunk stays in eval mode,
whatever ``.train()`` is called with, so BatchNorm running statistics never drift. With
``fine_tune`` only blocks 2-4 (``layer2``..``layer4``, those of them in the trunk) learn; the stem and ``layer1`` stay frozen
(and in eval mode) as in Show-Attend-Tell.
"""

from __future__ import annotations

import os
import urllib.error
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, get_args

import torch
import torch.nn.functional as F
import torchvision
from annotated_types import Interval
from torch import nn

from capt.config import CHECKED, Count, Flag, Int, with_config
from capt.errors import CaptError

ResNet = Literal["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
RESNETS = get_args(ResNet)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@with_config(CHECKED)
@dataclass(frozen=True)
class EncoderConfig:
    name: ResNet = "resnet101"
    weights: str | None = None     # a torchvision weights enum name ("IMAGENET1K_V1", "DEFAULT") or None: random
    encoded_size: Count = 14       # adaptive pool to encoded_size x encoded_size cells
    fine_tune: Flag = False        # let blocks 2-4 learn
    stages: Annotated[Int, Interval(ge=1, le=4)] = 4   # ResNet stages (layer1..layer4) in the trunk; 4 = all, as in
                                   # the seed. Fewer keep more of the image in a *random* trunk, whose deep
                                   # features wash colour and shape out (embedded profile)


def resolve_weights(name: str, weights: str | None) -> torchvision.models.WeightsEnum | None:
    """The torchvision weights enum member, its file fetched into the torch cache now.

    Offline with the file missing, one clear error says which URL to fetch and where to put it.
    """
    if weights is None:
        return None
    enum = torchvision.models.get_model_weights(name)
    try:
        member = enum[weights] if weights != "DEFAULT" else enum.DEFAULT
    except KeyError:
        raise CaptError(f"encoder.weights {weights!r} is not one of {', '.join(m.name for m in enum)} "
                        f"for {name}") from None
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(member.url)
    if not cached.exists():
        try:
            torch.hub.load_state_dict_from_url(member.url, progress=True, check_hash=True)
        except (urllib.error.URLError, OSError, RuntimeError) as e:
            raise CaptError(f"cannot fetch the ImageNet weights of {name} ({e}): download {member.url} "
                            f"and put it at {cached}, then rerun") from None
    return member


class Encoder(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        net = torchvision.models.get_model(cfg.name, weights=resolve_weights(cfg.name, cfg.weights))
        # Each stage after layer1 halves the resolution and doubles the width: the full trunk
        # (stages 4) gives (B, fc.in_features, S/32, S/32), stages 2 gives (B, fc.in_features/4, S/8, S/8).
        self.feature_dim: int = net.fc.in_features // 2 ** (4 - cfg.stages)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
        self.blocks = nn.Sequential(*[net.layer2, net.layer3, net.layer4][: cfg.stages - 1])
        # pool_cells does the pooling; the module stays for code that pools a feature map itself.
        self.pool = nn.AdaptiveAvgPool2d(cfg.encoded_size)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.stem.requires_grad_(False)
        self.blocks.requires_grad_(cfg.fine_tune)
        self.train(False)

    @property
    def frozen(self) -> bool:
        return not self.cfg.fine_tune

    def train(self, mode: bool = True) -> Encoder:
        super().train(mode)
        self.stem.train(False)                      # never learns: BN statistics stay put
        self.blocks.train(mode and not self.frozen)
        return self

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, S, S), on any device -> float on the encoder's device, ImageNet mean/std."""
        return (images.to(self.mean.device, non_blocking=True).float() / 255.0 - self.mean) / self.std

    @torch.no_grad()
    def calibrate_batchnorm(self, batches: Iterable[torch.Tensor]) -> None:
        """Set every BatchNorm's running statistics to the data's (a cumulative average over
        ``batches`` of uint8 images), then freeze them again.

        For a randomly initialised trunk only: its BatchNorms start at mean 0 / variance 1, so in
        eval mode nothing normalises and the activations grow block after block. Calibrated, a
        frozen random ResNet gives features of sane scale that an LSTM can learn from.
        """
        norms = [m for m in self.modules() if isinstance(m, nn.BatchNorm2d)]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None            # cumulative moving average over all batches
        nn.Module.train(self, True)
        for images in batches:
            self.blocks(self.stem(self.normalize(images)))
        for m in norms:
            m.momentum = 0.1
        self.train(False)

    @torch.no_grad()
    def stem_features(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, S, S) -> the output of the part that never learns (stem + layer1),
        (B, C, S/4, S/4). It is the same every epoch, so a fine-tuned student may compute it once."""
        return self.stem(self.normalize(images))

    def trunk_from_stem(self, stem: torch.Tensor) -> torch.Tensor:
        """stem_features (B, C, S/4, S/4) -> the trunk's feature map (B, D, h, w) before any
        pooling, through the blocks that may learn."""
        if self.frozen:
            with torch.no_grad():
                return self.blocks(stem)
        return self.blocks(stem)

    def forward_from_stem(self, stem: torch.Tensor) -> torch.Tensor:
        """stem_features (B, C, S/4, S/4) -> features (B, P, D), through the blocks that may learn."""
        f = self.trunk_from_stem(stem)                                   # (B, D, h, w)
        return pool_cells(map_cells(f), f.shape[-2:], self.cfg.encoded_size)

    def native_cells(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, S, S) -> the trunk's cells before the adaptive pool, (B, h*w, D), row-major
        over its native grid (h, w) (``native_grid``): what the feature cache stores."""
        return map_cells(self.trunk_from_stem(self.stem_features(images)))

    @torch.no_grad()
    def native_grid(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) of the trunk's output for images of height x width pixels (S/32 at stages 4,
        rounded up at every stride), measured on one blank image rather than derived from strides."""
        probe = torch.zeros(1, 3, height, width, dtype=torch.uint8)
        h, w = self.trunk_from_stem(self.stem_features(probe)).shape[-2:]
        return int(h), int(w)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, S, S) -> features (B, P, D)."""
        return self.forward_from_stem(self.stem_features(images))


def map_cells(feature_map: torch.Tensor) -> torch.Tensor:
    """A feature map (B, D, h, w) -> its cells (B, h*w, D), row-major as the decoder reads them."""
    return feature_map.flatten(2).transpose(1, 2).contiguous()


def pool_cells(cells: torch.Tensor, grid: tuple[int, int] | torch.Size, encoded_size: int) -> torch.Tensor:
    """Cells (B, h*w, D) on a grid of (h, w) -> (B, E*E, D), E = encoded_size: the adaptive
    average pool of Show-Attend-Tell (``nn.AdaptiveAvgPool2d(E)``, the sgrvinod tutorial's 14 x 14),
    upsampling as well as downsampling. The identity, the very tensor, when the grid is E x E already.
    """
    h, w = int(grid[0]), int(grid[1])
    B, P, D = cells.shape
    if P != h * w:
        raise ValueError(f"{P} cells cannot lie on a {h} x {w} grid")
    if (h, w) == (encoded_size, encoded_size):
        return cells
    # NCHW as the trunk's own map is, so the pool sums in the order nn.AdaptiveAvgPool2d does there.
    feature_map = cells.transpose(1, 2).reshape(B, D, h, w).contiguous()   # (B, D, h, w)
    return map_cells(F.adaptive_avg_pool2d(feature_map, encoded_size))      # (B, E*E, D)
