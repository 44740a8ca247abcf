"""MST: Mask-guided Spectral-wise Transformer (Cai et al., CVPR 2022).

A re-implementation whose ``state_dict()`` keys and shapes are identical to the MST toolbox's
``simulation/train_code/architecture/MST.py``, so the toolbox's checkpoints load with ``strict=True`` and give the
same output. Differences from the toolbox, all deliberate:

* no hard-coded ``.cuda()``; any device and dtype;
* any spatial size divisible by 4 (the toolbox's mask-guided shift-back assumes a 256x256 scene);
* each sample of a batch uses its own mask (the toolbox uses the first mask of the batch for all samples; the two
  agree whenever the whole batch shares one mask, as in the toolbox's training and testing);
* a missing mask raises a clear error instead of silently using an all-zero mask.

Inputs: ``x`` is the 'H' setting [B, 28, H, W] and ``mask`` the 'Phi' setting [B, 28, H, W + 54]
(see :func:`spectral_prior.cassi.simulate`).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..cassi import BANDS
from ..cassi import STEP as DISPERSION_STEP
from ..errors import InvalidInputError
from .layers import PreNorm, check_cube, check_shape, has_hooks

NORMALIZE_EPS = 1e-12  # F.normalize's default eps, which the toolbox uses


class MaskGuidedMechanism(nn.Module):
    """Turns the shifted mask of one scale into a per-channel attention map aligned with the features."""

    def __init__(self, dim: int, *, level: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, kernel_size=1, bias=True)
        self.conv2 = nn.Conv2d(dim, dim, kernel_size=1, bias=True)
        self.depth_conv = nn.Conv2d(dim, dim, kernel_size=5, padding=2, bias=True, groups=dim)
        # The toolbox undoes the dispersion at scale 2**level with a step of 2 / 4**level pixels per channel.
        downsample = 2**level
        self.step = DISPERSION_STEP / (downsample * downsample)

    def forward(self, mask_shift: Tensor, width: int) -> Tensor:
        mask_shift = self.conv1(mask_shift)
        attention = self.depth_conv(self.conv2(mask_shift))
        if _records_nothing(mask_shift, self):  # in place on the fresh conv output: two tensors fewer
            mask_shift = attention.sigmoid_().mul_(mask_shift).add_(mask_shift)
        else:
            mask_shift = mask_shift * torch.sigmoid(attention) + mask_shift
        return self._shift_back(mask_shift, width)

    def _shift_back(self, mask_shift: Tensor, width: int) -> Tensor:
        """Channel ``c`` is read from column ``int(step * c)`` on, ``width`` columns wide.

        Gathered channels-last, so that the result reads as [B, H*W, C] tokens without a copy.
        """
        batch, channels, height, _ = mask_shift.shape
        offsets = (torch.arange(channels, device=mask_shift.device) * self.step).floor().long()
        columns = torch.arange(width, device=mask_shift.device)[:, None] + offsets
        index = columns.expand(batch, height, width, channels)
        return mask_shift.permute(0, 2, 3, 1).gather(2, index).permute(0, 3, 1, 2)


def _token_norms(t: Tensor, height: int, width: int) -> Tensor:
    """The L2 norm over the H*W tokens of ``t`` [B, heads, H*W, d], clamped as ``F.normalize`` clamps it.

    Summed along rows, then over rows: on this strided axis that is 5x faster than ``Tensor.norm``.
    """
    squares = t.unflatten(-2, (height, width)).square()
    return squares.sum(dim=-2).sum(dim=-2).sqrt().clamp_min(NORMALIZE_EPS)


class SpectralMSA(nn.Module):
    """Spectral-wise multi-head self-attention (S-MSA): attention over channels, plus a depthwise positional branch.

    Channels-last in and out: [B, H, W, C] -> [B, H, W, C]. MST++ uses it as is; MST's :class:`MS_MSA` gates its
    values with the mask first.
    """

    def __init__(self, dim: int, *, dim_head: int, heads: int) -> None:
        super().__init__()
        self.num_heads = heads
        self.to_q = nn.Linear(dim, dim_head * heads, bias=False)
        self.to_k = nn.Linear(dim, dim_head * heads, bias=False)
        self.to_v = nn.Linear(dim, dim_head * heads, bias=False)
        self.rescale = nn.Parameter(torch.ones(heads, 1, 1))
        self.proj = nn.Linear(dim_head * heads, dim, bias=True)
        self.pos_emb = nn.Sequential(
            nn.Conv2d(dim, dim, 3, 1, 1, bias=False, groups=dim),
            nn.GELU(),
            nn.Conv2d(dim, dim, 3, 1, 1, bias=False, groups=dim),
        )

    def attend(self, x: Tensor, value_gate: Tensor | None = None) -> Tensor:
        """S-MSA of ``x`` [B, H, W, C]; ``value_gate`` [B, H*W, C] multiplies the attention's values if given.

        The same arithmetic as the toolbox's, in an order that keeps the tokens where they are: q, k and v come from
        one matmul; the attention is the Gram matrix of the raw q and k divided by their norms (the toolbox
        normalises both [H*W, C] tensors first); and values are multiplied in token layout, so a single head
        needs no transposed copy.
        """
        batch, height, width, channels = x.shape
        tokens = x.reshape(batch, height * width, channels)
        q, k, v_in = F.linear(tokens, torch.cat([self.to_q.weight, self.to_k.weight, self.to_v.weight])).chunk(3, -1)
        v = v_in if value_gate is None else v_in * value_gate

        q, k, v = (rearrange(t, "b n (heads d) -> b heads n d", heads=self.num_heads) for t in (q, k, v))
        gram = k.transpose(-2, -1) @ q  # [B, heads, d, d]: K^T Q over all tokens
        norm_q, norm_k = (_token_norms(t, height, width) for t in (q, k))  # [B, heads, d]
        attention = (gram / (norm_k[..., :, None] * norm_q[..., None, :]) * self.rescale).softmax(dim=-1)
        out = rearrange(v @ attention.transpose(-2, -1), "b heads n d -> b n (heads d)")
        out = self.proj(out).view(batch, height, width, channels)

        positional = self.pos_emb(v_in.reshape(batch, height, width, channels).permute(0, 3, 1, 2))
        return out.add_(positional.permute(0, 2, 3, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.attend(x)


class MS_MSA(SpectralMSA):
    """Mask-guided S-MSA (MST): the values are gated by the mask-guided mechanism's attention map."""

    def __init__(self, dim: int, *, dim_head: int, heads: int, level: int) -> None:
        super().__init__(dim, dim_head=dim_head, heads=heads)
        self.mm = MaskGuidedMechanism(dim, level=level)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:  # type: ignore[override]
        """x: [B, H, W, C] (channels last); mask: [B or 1, C, H, W'] (channels first). Returns [B, H, W, C]."""
        gate = rearrange(self.mm(mask, x.shape[2]), "b c h w -> b (h w) c")
        return self.attend(x, gate)


class FeedForward(nn.Module):
    """1x1 expand, depthwise 3x3, 1x1 project, on channels-last input."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(dim, dim * mult, 1, 1, bias=False),
            nn.GELU(),
            nn.Conv2d(dim * mult, dim * mult, 3, 1, 1, bias=False, groups=dim * mult),
            nn.GELU(),
            nn.Conv2d(dim * mult, dim, 1, 1, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        # A permuted view both ways: the convolutions run channels-last, with no copy in or out.
        x = x.permute(0, 3, 1, 2)
        if _in_place_allowed(x, self.net):
            expand, _, depthwise, _, project = self.net
            # Each GELU overwrites the fresh convolution output it reads: no new 4x-wide tensor per activation.
            out = project(torch.ops.aten.gelu_(depthwise(torch.ops.aten.gelu_(expand(x)))))
        else:
            out = self.net(x)
        return out.permute(0, 2, 3, 1)


def _records_nothing(x: Tensor, module: nn.Module) -> bool:
    """Whether in-place arithmetic on ``module``'s intermediate tensors is safe: no gradient is recorded through
    ``x`` or ``module``'s parameters, and nothing traces the model."""
    if torch.compiler.is_compiling():
        return False
    return not torch.is_grad_enabled() or not (x.requires_grad or any(p.requires_grad for p in module.parameters()))


def _in_place_allowed(x: Tensor, module: nn.Module) -> bool:
    """Whether ``module`` may be run layer by layer with in-place activations: :func:`_records_nothing`, and no hook
    (its own, its children's or a global one) expects its layers to be called as modules."""
    return _records_nothing(x, module) and not has_hooks(module)


class MSAB(nn.Module):
    """Mask-guided Self-Attention Block: ``num_blocks`` x (MS-MSA + feed-forward), residual. [B,C,H,W] -> same."""

    def __init__(self, dim: int, *, dim_head: int, heads: int, num_blocks: int, level: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.ModuleList(
                [
                    MS_MSA(dim, dim_head=dim_head, heads=heads, level=level),
                    PreNorm(dim, FeedForward(dim)),
                ]
            )
            for _ in range(num_blocks)
        )

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 1)
        mask = mask.contiguous(memory_format=torch.channels_last)  # its 1x1 convs are faster channels-last
        for attention, feed_forward in self.blocks:
            x = attention(x, mask).add_(x)
            x = feed_forward(x).add_(x)
        return x.permute(0, 3, 1, 2)


class MST(nn.Module):
    """MST U-shaped network: ``stage`` encoder levels, a bottleneck and ``stage`` decoder levels of MSABs.

    Args:
        dim: feature channels at full resolution (28 in the paper).
        stage: number of down/up-sampling levels.
        num_blocks: MSAB depth per encoder level; the last entry is also the bottleneck's depth.
    """

    def __init__(self, dim: int = 28, stage: int = 2, num_blocks: Sequence[int] = (2, 2, 2)) -> None:
        super().__init__()
        if len(num_blocks) != stage + 1:
            raise InvalidInputError(f"num_blocks needs stage + 1 = {stage + 1} entries, got {list(num_blocks)}")
        self.dim = dim
        self.stage = stage

        self.embedding = nn.Conv2d(BANDS, dim, 3, 1, 1, bias=False)

        self.encoder_layers = nn.ModuleList()
        dim_stage = dim
        for level in range(stage):
            self.encoder_layers.append(
                nn.ModuleList(
                    [
                        MSAB(dim_stage, dim_head=dim, heads=dim_stage // dim, num_blocks=num_blocks[level], level=level),
                        nn.Conv2d(dim_stage, dim_stage * 2, 4, 2, 1, bias=False),  # features down
                        nn.Conv2d(dim_stage, dim_stage * 2, 4, 2, 1, bias=False),  # mask down
                    ]
                )
            )
            dim_stage *= 2

        self.bottleneck = MSAB(dim_stage, dim_head=dim, heads=dim_stage // dim, num_blocks=num_blocks[-1], level=stage)

        self.decoder_layers = nn.ModuleList()
        for i in range(stage):
            level = stage - 1 - i
            self.decoder_layers.append(
                nn.ModuleList(
                    [
                        nn.ConvTranspose2d(dim_stage, dim_stage // 2, stride=2, kernel_size=2, padding=0),
                        nn.Conv2d(dim_stage, dim_stage // 2, 1, 1, bias=False),  # fuse skip connection
                        MSAB(
                            dim_stage // 2,
                            dim_head=dim,
                            heads=(dim_stage // 2) // dim,
                            num_blocks=num_blocks[level],
                            level=level,
                        ),
                    ]
                )
            )
            dim_stage //= 2

        self.mapping = nn.Conv2d(dim, BANDS, 3, 1, 1, bias=False)
        self.lrelu = nn.LeakyReLU(negative_slope=0.1)

    @property
    def input_multiple(self) -> int:
        """What the input's height and width must be divisible by: one halving per encoder level."""
        return 2**self.stage

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x: the 'H' input [B, 28, H, W]; mask: the 'Phi' mask [B or 1, 28, H, W + 54]. Returns [B, 28, H, W]."""
        check_cube(x, name="MST input x", bands=BANDS, multiple=2**self.stage)
        if mask is None:
            raise InvalidInputError(
                "MST needs the shifted mask Phi [B, 28, H, W + 54]; build it with "
                "spectral_prior.cassi.mask_input(mask3d, 'Phi') or spectral_prior.cassi.simulate(...)"
            )
        batch, _, height, width = x.shape
        check_shape(
            mask,
            name="MST mask (Phi)",
            expected=[batch, BANDS, height, width + (BANDS - 1) * DISPERSION_STEP],
            hint="Pass the 'Phi' mask setting, i.e. shift(mask3d).",
        )

        mask = _one_mask_if_shared(mask)
        features = self.lrelu(self.embedding(x))
        skips, masks = [], []
        for msab, features_down, mask_down in self.encoder_layers:
            features = msab(features, mask)
            skips.append(features)
            masks.append(mask)
            features = features_down(features)
            mask = mask_down(mask)

        features = self.bottleneck(features, mask)

        for upsample, fuse, msab in self.decoder_layers:
            features = upsample(features)
            features = fuse(torch.cat([features, skips.pop()], dim=1))
            features = msab(features, masks.pop())

        return self.mapping(features) + x


def _one_mask_if_shared(mask: Tensor) -> Tensor:
    """``mask[:1]`` when every sample of the batch has the same mask, else ``mask``.

    The mask branch of every block then runs once per batch instead of once per sample (a quarter of an MST-S
    training step at batch 4), and its single result is broadcast. The values are compared only in eager mode: a
    traced or compiled model keeps the batch as given.
    """
    if mask.shape[0] == 1 or torch.compiler.is_compiling():
        return mask
    if mask.stride(0) == 0 or torch.equal(mask[1:], mask[:1].expand_as(mask[1:])):
        return mask[:1]
    return mask


_MST_VARIANTS: dict[str, dict[str, Any]] = {
    "mst_s": dict(dim=28, stage=2, num_blocks=(2, 2, 2)),
    "mst_m": dict(dim=28, stage=2, num_blocks=(2, 4, 4)),
    "mst_l": dict(dim=28, stage=2, num_blocks=(4, 7, 5)),
}


def _create_mst(variant: str, **kwargs: Any) -> MST:
    return MST(**{**_MST_VARIANTS[variant], **kwargs})


def mst_s(**kwargs: Any) -> MST:
    """MST-S: num_blocks [2, 2, 2], 0.92 M parameters."""
    return _create_mst("mst_s", **kwargs)


def mst_m(**kwargs: Any) -> MST:
    """MST-M: num_blocks [2, 4, 4], 1.49 M parameters."""
    return _create_mst("mst_m", **kwargs)


def mst_l(**kwargs: Any) -> MST:
    """MST-L: num_blocks [4, 7, 5], 2.02 M parameters."""
    return _create_mst("mst_l", **kwargs)
