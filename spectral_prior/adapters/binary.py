"""Binarisation with straight-through gradients, as BiSRNet (Cai et al., NeurIPS 2023) trains it.

The toolbox writes each straight-through estimator as ``hard.detach() - soft.detach() + soft``: a chain of
elementwise tensors in every forward pass, inference included, whose value is ``hard`` only up to float rounding.
Here each estimator is one autograd function: the forward pass is the hard value itself, and the backward pass is the
gradient of the toolbox's soft surrogate.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .channelwise import channel_sum, wants_gradient


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """``(a * b).sum()`` in one pass: both flattened in ``b``'s memory order, a view for ``b`` (and for ``a`` when
    it has the same layout, as it does here), so a channels-last tensor is not copied."""
    memory_order = sorted(range(b.dim()), key=lambda axis: -b.stride(axis))
    return torch.dot(a.permute(memory_order).reshape(-1), b.permute(memory_order).reshape(-1))


class ScaledSignWithClampGradient(torch.autograd.Function):
    """``scale * sign(weight)`` forward; backward, the gradient of ``weight.clamp(-1, 1)`` (``scale`` gets none)."""

    @staticmethod
    def forward(ctx, weight: Tensor, scale: Tensor) -> Tensor:
        ctx.save_for_backward(weight)
        return scale * torch.sign(weight)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (weight,) = ctx.saved_tensors
        inside = (weight >= -1) & (weight <= 1)  # where clamp passes its gradient, bounds included as in torch
        return grad * inside, None


class RedistributedSign(torch.autograd.Function):
    """``sign(x * scale + shift)`` forward; backward, the gradient of ``tanh(beta * (x * scale + shift))``.

    BiSRNet's redistribution and binary activation in one function: the gradient reaches ``x``, the per-channel
    ``scale`` and ``shift`` and ``beta`` without the intermediate gradient ever being written out.
    """

    @staticmethod
    def forward(ctx, x: Tensor, scale: Tensor, shift: Tensor, beta: Tensor) -> Tensor:
        shifted = (x * scale).add_(shift)
        ctx.save_for_backward(x, shifted, scale, beta)
        return torch.sign(shifted)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, shifted, scale, beta = ctx.saved_tensors
        needs_x, needs_scale, needs_shift, needs_beta = ctx.needs_input_grad
        # grad * (1 - tanh^2): the gradient with respect to shifted is this times beta, folded into each use below.
        surrogate = (shifted * beta).tanh_()
        torch.ops.aten.tanh_backward.grad_input(grad, surrogate, grad_input=surrogate)
        grad_beta = _dot(surrogate, shifted).reshape(beta.shape) if needs_beta else None
        grad_shift = channel_sum(surrogate).mul_(beta) if needs_shift else None
        grad_scale = channel_sum(surrogate * x).mul_(beta) if needs_scale else None
        grad_x = surrogate.mul_(scale * beta) if needs_x else None
        return grad_x, grad_scale, grad_shift, grad_beta


def redistributed_sign(x: Tensor, scale: Tensor, shift: Tensor, beta: Tensor) -> Tensor:
    """``sign(x * scale + shift)`` with BiSRNet's straight-through gradient when one is wanted."""
    if wants_gradient(x, scale, shift, beta):
        return RedistributedSign.apply(x, scale, shift, beta)
    return torch.sign((x * scale).add_(shift))


def binary_sign(x: Tensor, beta: Tensor) -> Tensor:
    """BiSRNet's activation binarisation alone: ``sign(x)``, with the gradient of ``tanh(beta * x)``."""
    return redistributed_sign(x, x.new_ones(()), x.new_zeros(()), beta)


def weight_scale(weight: Tensor) -> Tensor:
    """The per-output-channel scale ``mean |w|`` of a conv weight [out, in, kh, kw], without a gradient.

    One axis at a time, as the toolbox reduces: another summation order changes the scale in its last bit.
    """
    return weight.detach().abs().mean(dim=3, keepdim=True).mean(dim=2, keepdim=True).mean(dim=1, keepdim=True)


def binary_weight(weight: Tensor) -> Tensor:
    """``mean|w| * sign(w)`` per output channel, with the clamp's straight-through gradient when one is wanted."""
    if wants_gradient(weight):
        return ScaledSignWithClampGradient.apply(weight, weight_scale(weight))
    return weight_scale(weight) * torch.sign(weight)
