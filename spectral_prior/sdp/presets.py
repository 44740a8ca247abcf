"""Presets: for each backbone family, which blocks get SPIM, what the prior sees, and a probe input."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from ..errors import InvalidInputError, UnknownNameError

Condition = Callable[[tuple, dict], Tensor]
"""Maps a model's forward ``(args, kwargs)`` to the prior's input."""


def first_argument(name: str) -> Condition:
    """A condition that returns the first positional argument, or the keyword argument ``name``."""

    def condition(args: tuple, kwargs: dict) -> Tensor:
        if args:
            return args[0]
        if name in kwargs:
            return kwargs[name]
        raise InvalidInputError(f"the model was called without its input {name!r}: nothing to compute the prior from")

    return condition


@dataclass(frozen=True)
class Preset:
    """How to inject a prior into one backbone family.

    Attributes:
        layers: regex matched with ``re.fullmatch`` against dotted module names (any prefix allowed, so a backbone
            nested in a user's model matches too).
        condition: the prior's input from the forward arguments.
        example_inputs: builds small ``(args, kwargs)`` on a device/dtype, for the probe forward at injection.
        position: where each target's SPIM acts: ``"output"`` (the block's output) or ``"input"`` (its first tensor
            argument).
        channel_axis: the channel axis of what the SPIMs modulate (-1 for MST's channels-last features); None reads
            it from the probe.
        input_setting: the CASSI input the backbone takes first (see :data:`spectral_prior.cassi.INPUT_SETTINGS`).
        mask_setting: the mask input it takes second (see :data:`spectral_prior.cassi.MASK_SETTINGS`).
    """

    name: str
    layers: str
    condition: Condition
    example_inputs: Callable[[torch.device, torch.dtype], tuple[tuple, dict[str, Any]]]
    position: str = "output"
    channel_axis: int | None = None
    input_setting: str = "H"
    mask_setting: str = "Phi"


_ANY_PREFIX = r"(?:.+\.)?"
_UNET_BLOCKS = r"(?:encoder_layers\.\d+\.0|bottleneck|decoder_layers\.\d+\.2)"
# Inside every block, as DiffIR modulates: the input of each spectral attention and the normalised input of each
# feed-forward (both channels-last [B, H, W, C]). In BiSRNet, whose blocks are feed-forwards only, a shift there moves
# the thresholds of the binarisations that follow.
_ATTENTION_AND_FEED_FORWARD = _UNET_BLOCKS + r"\.blocks\.\d+\.(?:0|1\.fn)"
_FEED_FORWARD = _UNET_BLOCKS + r"\.blocks\.\d+\.fn"
_BODY = r"body\.\d+\."


def _h_and_mask(mask_width_extra: int) -> Callable[[torch.device, torch.dtype], tuple[tuple, dict[str, Any]]]:
    def example(device: torch.device, dtype: torch.dtype) -> tuple[tuple, dict[str, Any]]:
        height, width = 32, 48  # not square, so that no axis of a feature map is mistaken for another
        x = torch.rand(1, 28, height, width, device=device, dtype=dtype)
        mask = torch.rand(1, 28, height, width + mask_width_extra, device=device, dtype=dtype)
        return (x, mask), {}

    return example


def _family(name: str, blocks: str, inner: str, *, condition: str, mask_width_extra: int, **settings: Any) -> dict[str, Preset]:
    """A backbone family's two presets: ``name`` (SPIM inside every block, the default) and ``name-blocks`` (on the
    outputs of the U-Net's blocks, the library's first placement, which saved injections of 0.1 use)."""
    common = dict(condition=first_argument(condition), example_inputs=_h_and_mask(mask_width_extra), **settings)
    return {
        name: Preset(name=name, layers=_ANY_PREFIX + inner, position="input", channel_axis=-1, **common),
        f"{name}-blocks": Preset(name=f"{name}-blocks", layers=_ANY_PREFIX + blocks, channel_axis=1, **common),
    }


PRESETS: dict[str, Preset] = {
    # MST takes the 'H' input and the shifted mask Phi, MST++ and BiSRNet the 'H' input and mask3d.
    **_family("mst", _UNET_BLOCKS, _ATTENTION_AND_FEED_FORWARD, condition="x", mask_width_extra=54),
    **_family("mst_plus_plus", _BODY + _UNET_BLOCKS, _BODY + _ATTENTION_AND_FEED_FORWARD, condition="y",
              mask_width_extra=0, mask_setting="Mask"),
    **_family("bisrnet", _BODY + _UNET_BLOCKS, _BODY + _FEED_FORWARD, condition="y", mask_width_extra=0,
              mask_setting="Mask"),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; a KeyError lists the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise UnknownNameError(f"no preset {name!r}; known presets: {sorted(PRESETS)}") from None
