"""Per-channel bias, affine and PReLU whose parameter gradients are reduced in memory order.

A parameter of shape [1, C, 1, 1] broadcast over [B, C, H, W] gets its gradient from a sum over (B, H, W). On a
channels-last tensor, as inside BiSRNet's feed-forward blocks, torch's reduction over those strided axes is several
times slower than summing the contiguous axes first; these functions do that, and otherwise compute what
``x + bias`` and ``F.prelu`` compute.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable


def channel_sum(t: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """``t.sum((0, 2, 3), keepdim=True)`` of a [B, C, H, W] tensor, reducing the innermost axes first.

    ``dtype`` is the result's (and the accumulation's) dtype: a parameter's float32 gradient from bfloat16 features
    under autocast."""
    batch, channels, height, width = t.shape
    if t.stride(1) == 1 and channels > 1:  # channels-last memory: [B*H, W, C] rows
        rows = t.permute(0, 2, 3, 1).reshape(batch * height, width, channels)
        return rows.sum(dim=1, dtype=dtype).sum(dim=0).view(1, channels, 1, 1)
    return t.sum(dim=(2, 3), dtype=dtype).sum(dim=0).view(1, channels, 1, 1)


class _AddChannelBias(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, bias: Tensor) -> Tensor:
        ctx.bias_dtype = bias.dtype
        return x + bias

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor | None]:
        return grad, channel_sum(grad, ctx.bias_dtype) if ctx.needs_input_grad[1] else None


class _PReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, shift: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        out = F.prelu(x, weight)
        return out if shift is None else out.add_(shift)  # in place: prelu's backward needs x, not its output

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        x, weight = ctx.saved_tensors
        # torch's own fused kernel, in the features' dtype (bfloat16 under autocast, where the weight stays float32);
        # it returns the weight's gradient at the input's full size, summed here in the weight's dtype.
        grad = grad.to(x.dtype)
        grad_x, grad_weight = torch.ops.aten._prelu_kernel_backward(grad, x, weight.to(x.dtype).view(1, -1, 1, 1))
        grad_shift = channel_sum(grad, weight.dtype) if ctx.needs_input_grad[2] else None
        return grad_x, channel_sum(grad_weight, weight.dtype).view(weight.shape), grad_shift


def wants_gradient(*tensors: Tensor) -> bool:
    """Whether autograd records an operation on ``tensors``."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def add_channel_bias(x: Tensor, bias: Tensor) -> Tensor:
    """``x + bias`` for ``bias`` [1, C, 1, 1]."""
    return _AddChannelBias.apply(x, bias) if wants_gradient(x, bias) else x + bias


def prelu(x: Tensor, weight: Tensor, shift: Tensor | None = None) -> Tensor:
    """``F.prelu(x, weight)`` (plus ``shift`` [1, C, 1, 1] if given) for a [B, C, H, W] ``x`` and a per-channel
    ``weight`` [C]."""
    tensors = (x, weight) if shift is None else (x, weight, shift)
    if wants_gradient(*tensors):
        return _PReLU.apply(x, weight, shift)
    out = F.prelu(x, weight)
    return out if shift is None else out.add_(shift)
