"""BiSRNet: binarized spectral-redistribution network (Cai et al., NeurIPS 2023).

A re-implementation whose ``state_dict()`` keys and shapes are identical to the MST toolbox's / BiSCI's BiSRNet, so
the official checkpoint loads with ``strict=True``. Unlike the toolbox: no ``.cuda()``, and a missing mask raises a
clear error instead of silently drawing a random one.

Inputs: ``y`` is the 'H' setting [B, 28, H, W] and ``Phi`` the 'Mask' setting (mask3d) [B, 28, H, W]. Sizes that are
not multiples of 8 are reflect-padded internally, as in the toolbox.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..errors import InvalidInputError
from .binary import binary_sign, binary_weight, redistributed_sign
from .channelwise import add_channel_bias, prelu
from .layers import PreNorm, check_cube, check_shape, has_hooks

PAD_MULTIPLE = 8


def _channel_parameter(channels: int, value: float) -> nn.Parameter:
    return nn.Parameter(torch.full((1, channels, 1, 1), value))


class LearnableBias(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = _channel_parameter(channels, 0.0)

    def forward(self, x: Tensor) -> Tensor:
        return add_channel_bias(x, self.bias)


class ReDistribution(nn.Module):
    """Per-channel affine ``k * x + b`` that re-centres activations before binarization."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.b = _channel_parameter(channels, 0.0)
        self.k = _channel_parameter(channels, 1.0)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.k + self.b


class RPReLU(nn.Module):
    """PReLU with learnable shifts before and after."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.pr_bias0 = LearnableBias(channels)
        self.pr_prelu = nn.PReLU(channels)
        self.pr_bias1 = LearnableBias(channels)

    def forward(self, x: Tensor) -> Tensor:
        if has_hooks(self.pr_prelu, self.pr_bias1):  # a hook expects them to run as modules
            return self.pr_bias1(self.pr_prelu(self.pr_bias0(x)))
        return self.after_first_shift(self.pr_bias0(x))

    def after_first_shift(self, x: Tensor) -> Tensor:
        """The rest of the RPReLU, for an ``x`` that already carries ``pr_bias0`` (added by a convolution's bias)."""
        return prelu(x, self.pr_prelu.weight, shift=self.pr_bias1.bias)


class SpectralBinaryActivation(nn.Module):
    """sign(x) forward; gradient of tanh(beta * x) backward."""

    def __init__(self) -> None:
        super().__init__()
        self.beta = nn.Parameter(torch.ones(1))

    def forward(self, x: Tensor) -> Tensor:
        return binary_sign(x, self.beta)


class HardBinaryConv(nn.Conv2d):
    """Conv with weights binarized to ``mean|w| * sign(w)`` per output channel (straight-through on clamp(w)).

    Without a gradient to compute, the binary weight is computed once and reused until the weight changes (in place,
    as an optimizer or ``load_state_dict`` changes it, or by replacement) or the module is switched to training.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cached_weight: tuple[tuple, Tensor] | None = None

    def train(self, mode: bool = True) -> HardBinaryConv:
        self._cached_weight = None
        return super().train(mode)

    def _binary_weight(self) -> Tensor:
        weight = self.weight
        if (torch.is_grad_enabled() and weight.requires_grad) or torch.compiler.is_compiling():
            return binary_weight(weight)
        key = (weight._version, weight.data_ptr(), weight.dtype, weight.device)
        if self._cached_weight is None or self._cached_weight[0] != key:
            with torch.inference_mode(False), torch.no_grad():  # a plain tensor, usable outside inference mode
                self._cached_weight = (key, binary_weight(weight))
        return self._cached_weight[1]

    def forward(self, x: Tensor, shift: Tensor | None = None) -> Tensor:
        """The binary convolution of ``x``, plus the per-channel ``shift`` [1, C, 1, 1] if given (as its bias)."""
        bias = self.bias
        if shift is not None:
            bias = shift.view(-1) if bias is None else bias + shift.view(-1)
        return F.conv2d(x, self._binary_weight(), bias, stride=self.stride, padding=self.padding, groups=self.groups)


class BinaryConv2d(nn.Module):
    """Redistribute, binarize, binary conv, RPReLU, plus identity. Keeps the channel count (as the toolbox)."""

    def __init__(
        self, channels: int, kernel_size: int, stride: int = 1, padding: int = 0, bias: bool = False, groups: int = 1
    ) -> None:
        super().__init__()
        self.move0 = ReDistribution(channels)
        self.binary_activation = SpectralBinaryActivation()
        self.binary_conv = HardBinaryConv(
            channels, channels, kernel_size, stride=stride, padding=padding, groups=groups, bias=bias
        )
        self.relu = RPReLU(channels)

    def forward(self, x: Tensor) -> Tensor:
        if has_hooks(self.move0, self.binary_activation, self.relu):  # a hook expects them to run as modules
            return self.relu(self.binary_conv(self.binary_activation(self.move0(x)))).add_(x)
        # The same arithmetic as move0 -> binary_activation -> binary_conv -> relu, in fewer passes over the
        # features: redistribution and sign are one function, and the RPReLU's first shift is the conv's bias.
        signs = redistributed_sign(x, self.move0.k, self.move0.b, self.binary_activation.beta)
        out = self.binary_conv(signs, shift=self.relu.pr_bias0.bias)
        return self.relu.after_first_shift(out).add_(x)


class _BinaryPair(nn.Module):
    """Two parallel binary convs, ``biconv_1`` and ``biconv_2``, of the same width."""

    def __init__(self, channels: int, kernel_size: int, padding: int = 0, groups: int = 1) -> None:
        super().__init__()
        self.biconv_1 = BinaryConv2d(channels, kernel_size, padding=padding, groups=groups)
        self.biconv_2 = BinaryConv2d(channels, kernel_size, padding=padding, groups=groups)


class BinaryDown(_BinaryPair):
    """Average-pool by 2, then both branches side by side: [B,C,H,W] -> [B,2C,H/2,W/2]."""

    def forward(self, x: Tensor) -> Tensor:
        x = F.avg_pool2d(x, kernel_size=2, stride=2)
        return torch.cat([self.biconv_1(x), self.biconv_2(x)], dim=1)


class BinaryUp(_BinaryPair):
    """Bilinear upsample by 2, then the mean of the branches over the two channel halves: -> [B,C/2,2H,2W]."""

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        first, second = x.chunk(2, dim=1)
        return self.biconv_1(first).add_(self.biconv_2(second)).div_(2)  # in place on a fresh branch output


class BinaryFusionDecrease(_BinaryPair):
    """Mean of the branches over the two channel halves: [B,C,H,W] -> [B,C/2,H,W]."""

    def forward(self, x: Tensor) -> Tensor:
        first, second = x.chunk(2, dim=1)
        return self.biconv_1(first).add_(self.biconv_2(second)).div_(2)  # in place on a fresh branch output


class BinaryFusionIncrease(_BinaryPair):
    """Both branches side by side: [B,C,H,W] -> [B,2C,H,W]."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.biconv_1(x), self.biconv_2(x)], dim=1)


class FeedForward(nn.Module):
    """Binarized feed-forward on channels-last input: widen x4 in two steps, depthwise 3x3, narrow back."""

    def __init__(self, dim: int, mult: int = 2) -> None:
        super().__init__()
        wide = dim * mult * mult
        self.net = nn.Sequential(
            BinaryFusionIncrease(dim, 1),
            BinaryFusionIncrease(dim * mult, 1),
            RPReLU(wide),
            BinaryConv2d(wide, 3, padding=1, groups=dim),
            RPReLU(wide),
            BinaryFusionDecrease(wide // 2, 1),
            BinaryFusionDecrease(dim, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return rearrange(self.net(rearrange(x, "b h w c -> b c h w")), "b c h w -> b h w c")


class BiSRNetBlock(nn.Module):
    """``num_blocks`` pre-norm binarized feed-forwards with residuals: [B,C,H,W] -> same."""

    def __init__(self, dim: int, num_blocks: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(PreNorm(dim, FeedForward(dim)) for _ in range(num_blocks))

    def forward(self, x: Tensor) -> Tensor:
        x = rearrange(x, "b c h w -> b h w c")
        for feed_forward in self.blocks:
            x = feed_forward(x) + x
        return rearrange(x, "b h w c -> b c h w")


class BiSRNetBody(nn.Module):
    """A binarized U-Net with two down/up-sampling levels and a bottleneck."""

    def __init__(self, dim: int = 28, num_blocks: Sequence[int] = (1, 1, 1), stage: int = 2) -> None:
        super().__init__()
        self.embedding = BinaryConv2d(dim, 3, padding=1)
        self.encoder_layers = nn.ModuleList()
        dim_stage = dim
        for level in range(stage):
            self.encoder_layers.append(
                nn.ModuleList([BiSRNetBlock(dim_stage, num_blocks[level]), BinaryDown(dim_stage, 3, padding=1)])
            )
            dim_stage *= 2

        self.bottleneck = BiSRNetBlock(dim_stage, num_blocks[-1])

        self.decoder_layers = nn.ModuleList()
        for i in range(stage):
            half = dim_stage // 2
            self.decoder_layers.append(
                nn.ModuleList(
                    [
                        BinaryUp(half, 3, padding=1),
                        BinaryFusionDecrease(half, 1),
                        BiSRNetBlock(half, num_blocks[stage - 1 - i]),
                    ]
                )
            )
            dim_stage = half

        self.mapping = BinaryConv2d(dim, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        features = self.embedding(x)
        skips = []
        for block, downsample in self.encoder_layers:
            features = block(features)
            skips.append(features)
            features = downsample(features)

        features = self.bottleneck(features)

        for upsample, fuse, block in self.decoder_layers:
            features = upsample(features)
            features = block(fuse(torch.cat([features, skips.pop()], dim=1)))

        return self.mapping(features) + x


class BiSRNet(nn.Module):
    """BiSRNet: a full-precision fusion of input and mask, ``stage`` binarized U-Nets, full-precision in/out convs.

    Args:
        in_channels: spectral bands of the input (28).
        out_channels: spectral bands of the output (28).
        n_feat: feature channels.
        stage: number of stacked U-Net bodies (1 in the official model).
        num_blocks: depth of each body's encoder levels and bottleneck.
    """

    def __init__(
        self,
        in_channels: int = 28,
        out_channels: int = 28,
        n_feat: int = 28,
        stage: int = 1,
        num_blocks: Sequence[int] = (1, 1, 1),
    ) -> None:
        super().__init__()
        self.bands = in_channels
        self.conv_in = nn.Conv2d(in_channels, n_feat, kernel_size=3, padding=1, bias=False)
        self.fution = nn.Conv2d(2 * in_channels, in_channels, 1, padding=0, bias=True)
        self.body = nn.Sequential(*(BiSRNetBody(dim=n_feat, num_blocks=num_blocks) for _ in range(stage)))
        self.conv_out = nn.Conv2d(n_feat, out_channels, kernel_size=3, padding=1, bias=False)

    def forward(self, y: Tensor, Phi: Tensor | None = None) -> Tensor:
        """y: the 'H' input [B, 28, H, W]; Phi: mask3d [B or 1, 28, H, W]. Returns [B, 28, H, W]."""
        check_cube(y, name="BiSRNet input y", bands=self.bands, multiple=1)
        if Phi is None:
            raise InvalidInputError(
                "BiSRNet needs the mask Phi = mask3d [B, 28, H, W] (the 'Mask' setting); build it with "
                "spectral_prior.cassi.mask3d(mask) or spectral_prior.cassi.simulate(..., mask_setting='Mask')"
            )
        batch, _, height, width = y.shape
        check_shape(
            Phi,
            name="BiSRNet mask (Phi)",
            expected=[batch, self.bands, height, width],
            hint="Pass the 'Mask' setting, i.e. mask3d.",
        )

        x = self.fution(torch.cat([y, Phi.expand_as(y)], dim=1))
        pad_h, pad_w = (-height) % PAD_MULTIPLE, (-width) % PAD_MULTIPLE
        x = F.pad(x, [0, pad_w, 0, pad_h], mode="reflect")
        x = self.conv_in(x)
        out = self.conv_out(self.body(x)) + x
        return out[:, :, :height, :width]


def latent_binary_weights(model: nn.Module) -> list[nn.Parameter]:
    """The latent full-precision weights of every binarised convolution in ``model``: only their signs are used
    (times a per-channel ``mean |w|``), so freezing them keeps the binary network exactly as it is."""
    return [module.weight for module in model.modules() if isinstance(module, HardBinaryConv)]


def bisrnet(**kwargs: Any) -> BiSRNet:
    """The official BiSRNet configuration: n_feat 28, one body, num_blocks [1, 1, 1]."""
    return BiSRNet(**{**dict(in_channels=28, out_channels=28, n_feat=28, stage=1, num_blocks=(1, 1, 1)), **kwargs})
