"""HSI Feature Extractor (HFE): squeezes a hyperspectral input into one compact prior vector.

A cheap take on DiffIR's CPEN. The input is pixel-unshuffled by 4 (each 4x4 patch of every band
becomes channels), projected by a 1x1 conv, downsampled once with a strided 3x3 conv, passed
through a few residual conv blocks, average-pooled over space and mapped by a two-layer MLP.

The student HFE sees only the shifted-back measurement ``H``; the teacher also sees the
ground-truth cube and is only used during stage-1 training.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import Tensor, nn

from ..checks import check_finite
from ..errors import InvalidInputError

UNSHUFFLE = 4
MULTIPLE = UNSHUFFLE * 2  # pixel-unshuffle by 4, then one stride-2 downsample


class ResBlock(nn.Module):
    """conv3x3 - LeakyReLU(0.1) - conv3x3, plus the identity skip."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(dim, dim, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class HFE(nn.Module):
    """Maps ``h`` ([B, bands, H, W]; teacher: plus ``gt`` of the same shape) to a [B, out_dim] vector.

    Any H, W >= 2: sizes that are not multiples of 8 are reflect-padded up to the next one (as BiSRNet pads).
    At 256x256 with 28 bands the student costs about 0.6 GFLOPs.
    """

    def __init__(
        self, *, bands: int = 28, dim: int = 64, out_dim: int = 256, depth: int = 2, teacher: bool = False
    ) -> None:
        super().__init__()
        self.bands = bands
        self.teacher = teacher
        in_channels = bands * (2 if teacher else 1) * UNSHUFFLE**2
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, dim, 1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(dim, dim, 3, stride=2, padding=1),
            nn.LeakyReLU(0.1),
        )
        self.blocks = nn.Sequential(*(ResBlock(dim) for _ in range(depth)))
        self.head = nn.Sequential(
            nn.Linear(dim, out_dim),
            nn.LeakyReLU(0.1),
            nn.Linear(out_dim, out_dim),
        )

    def _check(self, x: Tensor, name: str) -> None:
        if x.dim() != 4:
            raise InvalidInputError(f"{name} must have shape [B, {self.bands}, H, W], got {list(x.shape)}")
        if x.shape[1] != self.bands:
            raise InvalidInputError(f"{name} must have {self.bands} bands (channels), got {x.shape[1]}")
        height, width = x.shape[-2:]
        if height < 2 or width < 2:
            raise InvalidInputError(f"{name} must be at least 2x2 pixels, got {height}x{width}")
        check_finite(x, name=name)

    def forward(self, h: Tensor, gt: Tensor | None = None) -> Tensor:
        """Return the prior vector [B, out_dim]; ``gt`` is required by the teacher and refused by the student."""
        self._check(h, "h")
        if self.teacher:
            if gt is None:
                raise InvalidInputError("the teacher HFE needs the ground-truth cube: call hfe(h, gt)")
            if gt.shape != h.shape:
                raise InvalidInputError(f"gt must have the same shape as h {list(h.shape)}, got {list(gt.shape)}")
            self._check(gt, "gt")
            h = torch.cat((h, gt), dim=1)
        elif gt is not None:
            raise InvalidInputError("the student HFE sees only h; build HFE(teacher=True) to use gt")

        pad_h, pad_w = (-h.shape[-2]) % MULTIPLE, (-h.shape[-1]) % MULTIPLE
        if pad_h or pad_w:
            h = F.pad(h, [0, pad_w, 0, pad_h], mode="reflect" if min(h.shape[-2:]) > max(pad_h, pad_w) else "replicate")
        x = rearrange(h, "b c (h p1) (w p2) -> b (c p1 p2) h w", p1=UNSHUFFLE, p2=UNSHUFFLE)
        x = self.blocks(self.stem(x))
        return self.head(reduce(x, "b c h w -> b c", "mean"))
