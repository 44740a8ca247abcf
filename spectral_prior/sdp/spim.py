"""SPIM, the Spectral Prior Injector Module: a prior vector -> per-channel scale and shift of a feature map."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import InvalidInputError


class SPIM(nn.Module):
    """``x * (1 + scale) + shift`` with ``(scale, shift) = Linear(prior).chunk(2)``, one value per channel.

    The projection starts at zero, so a freshly injected model computes exactly what the bare model computed.

    Args:
        prior_dim: length D of the prior vector.
        channels: number of channels C of the modulated feature map.
    """

    def __init__(self, prior_dim: int, channels: int) -> None:
        super().__init__()
        self.prior_dim = prior_dim
        self.channels = channels
        self.proj = nn.Linear(prior_dim, 2 * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor, prior: Tensor, *, channel_axis: int = 1) -> Tensor:
        """Modulate ``x`` ([B, ..., C, ...], channels on ``channel_axis``) with ``prior`` [B, D]."""
        axis = channel_axis % x.dim()
        if x.dim() < 2 or x.shape[axis] != self.channels or axis == 0:
            raise InvalidInputError(
                f"SPIM expects a feature map with {self.channels} channels on axis {channel_axis}, "
                f"got shape {list(x.shape)}"
            )
        if prior.dim() != 2 or prior.shape[0] not in (1, x.shape[0]):
            raise InvalidInputError(f"the prior must have shape [{x.shape[0]}, {self.prior_dim}], got {list(prior.shape)}")
        scale, shift = self.proj(prior).to(x.dtype).chunk(2, dim=-1)
        broadcast = [prior.shape[0]] + [1] * (x.dim() - 1)
        broadcast[axis] = self.channels
        return torch.addcmul(shift.reshape(broadcast), x, 1 + scale.reshape(broadcast))  # one pass over x

    def extra_repr(self) -> str:
        return f"prior_dim={self.prior_dim}, channels={self.channels}"
