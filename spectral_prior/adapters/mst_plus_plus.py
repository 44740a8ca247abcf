"""MST++: Multi-stage Spectral-wise Transformer (Cai et al., CVPRW 2022), as the MST toolbox runs it on CASSI.

A re-implementation whose ``state_dict()`` keys and shapes are identical to the toolbox's
``MST_Plus_Plus(in_channels=28, out_channels=28, n_feat=28, stage=3)``
(``simulation/train_code/architecture/MST_Plus_Plus.py``), so its checkpoints load with ``strict=True`` and give
the same output. MST++ stacks ``stage`` single-stage transformers (SSTs): small U-Nets of spectral-wise attention
blocks (SABs) whose attention runs over channels, like MST's but without mask guidance. The mask enters once, at the
start: a 1x1 convolution fuses the input with it.

Inputs, as the toolbox's ``mst_plus_plus`` template sets them: ``y`` is the 'H' setting [B, 28, H, W] and ``Phi``
the 'Mask' setting (mask3d) [B or 1, 28, H, W]. Sizes that are not multiples of 8 are reflect-padded internally and
cropped back, as in the toolbox. Unlike the toolbox: no ``.cuda()``, a mask batch of 1 is shared by the whole batch,
and a missing mask raises a clear error instead of silently drawing a random 256x256 one.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..cassi import BANDS
from ..errors import InvalidInputError
from .layers import PreNorm, check_cube, check_shape
from .mst import FeedForward, SpectralMSA

PAD_MULTIPLE = 8
MIN_SIZE = PAD_MULTIPLE // 2 + 1  # reflect padding needs a pad smaller than the size it pads
SST_LEVELS = 2  # down/up-sampling levels of every single-stage transformer (fixed in the toolbox)


def _normal_cdf(x: float) -> float:
    return (1.0 + math.erf(x / math.sqrt(2.0))) / 2.0


@torch.no_grad()
def _truncated_normal_(weight: Tensor, std: float, bound: float = 2.0) -> None:
    """N(0, std) truncated to [-bound, bound] by inverse-CDF sampling, one uniform draw per value, as the toolbox
    draws it (``torch.nn.init.trunc_normal_`` now rejection-samples, which consumes the random stream differently)."""
    low, high = _normal_cdf(-bound / std), _normal_cdf(bound / std)
    weight.uniform_(2 * low - 1, 2 * high - 1).erfinv_().mul_(std * math.sqrt(2.0)).clamp_(-bound, bound)


def _init_linear_like_toolbox(module: nn.Module) -> None:
    """The toolbox's initialisation inside each SST: linear weights ~ truncated normal (std 0.02), zero biases."""
    if isinstance(module, nn.Linear):
        _truncated_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class SAB(nn.Module):
    """Spectral-wise Attention Block: ``num_blocks`` x (S-MSA + pre-norm feed-forward), residual. [B,C,H,W] -> same."""

    def __init__(self, dim: int, *, dim_head: int, heads: int, num_blocks: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.ModuleList([SpectralMSA(dim, dim_head=dim_head, heads=heads), PreNorm(dim, FeedForward(dim))])
            for _ in range(num_blocks)
        )

    def forward(self, x: Tensor) -> Tensor:
        x = rearrange(x, "b c h w -> b h w c")
        for attention, feed_forward in self.blocks:
            x = attention(x) + x
            x = feed_forward(x) + x
        return rearrange(x, "b h w c -> b c h w")


class SST(nn.Module):
    """Single-stage Spectral-wise Transformer: a U-Net of SABs with a global residual. [B,dim,H,W] -> same.

    H and W must be divisible by 4 (two down-sampling levels); :class:`MSTPlusPlus` pads to a multiple of 8.
    """

    def __init__(self, dim: int = 28, num_blocks: Sequence[int] = (1, 1, 1)) -> None:
        super().__init__()
        if len(num_blocks) != SST_LEVELS + 1:
            raise InvalidInputError(f"num_blocks needs {SST_LEVELS + 1} entries (levels, bottleneck), got {list(num_blocks)}")
        self.embedding = nn.Conv2d(dim, dim, 3, 1, 1, bias=False)

        self.encoder_layers = nn.ModuleList()
        dim_stage = dim
        for level in range(SST_LEVELS):
            self.encoder_layers.append(
                nn.ModuleList(
                    [
                        SAB(dim_stage, dim_head=dim, heads=dim_stage // dim, num_blocks=num_blocks[level]),
                        nn.Conv2d(dim_stage, dim_stage * 2, 4, 2, 1, bias=False),  # down-sample
                    ]
                )
            )
            dim_stage *= 2

        self.bottleneck = SAB(dim_stage, dim_head=dim, heads=dim_stage // dim, num_blocks=num_blocks[-1])

        self.decoder_layers = nn.ModuleList()
        for level in reversed(range(SST_LEVELS)):
            half = dim_stage // 2
            self.decoder_layers.append(
                nn.ModuleList(
                    [
                        nn.ConvTranspose2d(dim_stage, half, stride=2, kernel_size=2, padding=0),  # up-sample
                        nn.Conv2d(dim_stage, half, 1, 1, bias=False),  # fuse the skip connection
                        SAB(half, dim_head=dim, heads=half // dim, num_blocks=num_blocks[level]),
                    ]
                )
            )
            dim_stage = half

        self.mapping = nn.Conv2d(dim, dim, 3, 1, 1, bias=False)
        self.apply(_init_linear_like_toolbox)

    def forward(self, x: Tensor) -> Tensor:
        features = self.embedding(x)
        skips = []
        for sab, downsample in self.encoder_layers:
            features = sab(features)
            skips.append(features)
            features = downsample(features)

        features = self.bottleneck(features)

        for upsample, fuse, sab in self.decoder_layers:
            features = upsample(features)
            features = sab(fuse(torch.cat([features, skips.pop()], dim=1)))

        return self.mapping(features) + x


class MSTPlusPlus(nn.Module):
    """MST++: fuse input and mask, ``stage`` stacked SSTs between two 3x3 convolutions, global residual.

    Args:
        in_channels: spectral bands of the input and of the mask (28).
        out_channels: channels of the output; must equal ``n_feat`` (the output adds the ``conv_in`` features).
        n_feat: feature channels inside the SSTs.
        stage: number of stacked SSTs (3 in the toolbox).
        num_blocks: SAB depth of each SST's two levels and bottleneck ([1, 1, 1] in the toolbox).
    """

    def __init__(
        self,
        in_channels: int = BANDS,
        out_channels: int = BANDS,
        n_feat: int = 28,
        stage: int = 3,
        num_blocks: Sequence[int] = (1, 1, 1),
    ) -> None:
        super().__init__()
        if out_channels != n_feat:
            raise InvalidInputError(
                f"out_channels={out_channels} must equal n_feat={n_feat}: MST++ adds the conv_in features to its output"
            )
        self.bands = in_channels
        # Built in the toolbox's order, so that one torch.manual_seed gives the toolbox's initial weights.
        self.conv_in = nn.Conv2d(in_channels, n_feat, kernel_size=3, padding=1, bias=False)
        stages = [SST(dim=n_feat, num_blocks=num_blocks) for _ in range(stage)]
        self.fution = nn.Conv2d(2 * in_channels, in_channels, 1, padding=0, bias=True)  # the toolbox's key name
        self.body = nn.Sequential(*stages)
        self.conv_out = nn.Conv2d(n_feat, out_channels, kernel_size=3, padding=1, bias=False)

    def forward(self, y: Tensor, Phi: Tensor | None = None) -> Tensor:
        """y: the 'H' input [B, 28, H, W]; Phi: the 'Mask' setting, mask3d [B or 1, 28, H, W]. Returns [B, 28, H, W]."""
        self._check_inputs(y, Phi)
        height, width = y.shape[-2:]
        x = self.fution(torch.cat([y, Phi.expand_as(y)], dim=1))
        pad_h, pad_w = (-height) % PAD_MULTIPLE, (-width) % PAD_MULTIPLE
        x = self.conv_in(F.pad(x, [0, pad_w, 0, pad_h], mode="reflect"))
        out = self.conv_out(self.body(x)) + x
        return out[:, :, :height, :width]

    def _check_inputs(self, y: Tensor, Phi: Tensor | None) -> None:
        check_cube(y, name="MST++ input y", bands=self.bands, multiple=1)
        batch, _, height, width = y.shape
        if min(height, width) < MIN_SIZE:
            raise InvalidInputError(
                f"MST++ input y height and width must be at least {MIN_SIZE} (they are reflect-padded to a multiple "
                f"of {PAD_MULTIPLE}), got {height}x{width}"
            )
        if Phi is None:
            raise InvalidInputError(
                f"MST++ needs the mask Phi = mask3d [B, {self.bands}, H, W] (the 'Mask' setting); build it with "
                "spectral_prior.cassi.mask3d(mask) or spectral_prior.cassi.simulate(..., mask_setting='Mask')"
            )
        check_shape(
            Phi,
            name="MST++ mask (Phi)",
            expected=[batch, self.bands, height, width],
            hint="Pass the 'Mask' setting, i.e. mask3d, not the shifted 'Phi' of MST.",
        )


def mst_plus_plus(**kwargs: Any) -> MSTPlusPlus:
    """The toolbox's MST++ for CASSI: 28 bands, n_feat 28, 3 stages of num_blocks [1, 1, 1]; 1.33 M parameters."""
    defaults = dict(in_channels=BANDS, out_channels=BANDS, n_feat=28, stage=3, num_blocks=(1, 1, 1))
    return MSTPlusPlus(**{**defaults, **kwargs})
