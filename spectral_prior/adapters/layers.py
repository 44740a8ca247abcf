"""Small layers and input checks shared by the backbone adapters."""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from ..checks import check_finite
from ..errors import InvalidInputError


class PreNorm(nn.Module):
    """LayerNorm over the last (channel) axis, then ``fn``; the MST toolbox's pre-norm wrapper."""

    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, *args, **kwargs) -> Tensor:
        return self.fn(self.norm(x), *args, **kwargs)


def has_hooks(*modules: nn.Module) -> bool:
    """Whether a forward hook or pre-hook is set on any of ``modules``, their children, or globally: then a fused
    code path must give way to calling those modules one by one, so that every hook fires."""
    hooks = nn.modules.module
    if hooks._global_forward_hooks or hooks._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for module in modules for m in module.modules())


def check_cube(x: Tensor, *, name: str, bands: int, multiple: int) -> None:
    """Raise a ValueError unless ``x`` is a finite [B, bands, H, W] tensor with H, W divisible by ``multiple``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] != bands:
        raise InvalidInputError(f"{name} must have shape [B, {bands}, H, W], got {list(x.shape)}")
    height, width = x.shape[-2:]
    if height % multiple or width % multiple:
        raise InvalidInputError(
            f"{name} height and width must be divisible by {multiple}, got {height}x{width}; "
            f"crop or pad the scene to a multiple of {multiple}"
        )
    check_finite(x, name=name)


def check_shape(x: Tensor, *, name: str, expected: Sequence[int], hint: str = "") -> None:
    """Raise a ValueError unless ``x`` has the ``expected`` shape; a batch of 1 is accepted for any batch."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    shape = list(x.shape)
    batch_ok = len(shape) == len(expected) and shape[0] in (1, expected[0])
    if not batch_ok or shape[1:] != list(expected[1:]):
        batch = expected[0] if expected[0] == 1 else f"1 or {expected[0]}"
        want = [batch, *expected[1:]]
        raise InvalidInputError(f"{name} must have shape [{', '.join(map(str, want))}], got {shape}. {hint}".rstrip())
