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
        input_setting: the CASSI input the backbone takes first (see :data:`spectral_prior.cassi.INPUT_SETTINGS`).
        mask_setting: the mask input it takes second (see :data:`spectral_prior.cassi.MASK_SETTINGS`).
    """

    name: str
    layers: str
    condition: Condition
    example_inputs: Callable[[torch.device, torch.dtype], tuple[tuple, dict[str, Any]]]
    input_setting: str = "H"
    mask_setting: str = "Phi"


_ANY_PREFIX = r"(?:.+\.)?"
_UNET_BLOCKS = r"(?:encoder_layers\.\d+\.0|bottleneck|decoder_layers\.\d+\.2)"


def _h_and_mask(mask_width_extra: int) -> Callable[[torch.device, torch.dtype], tuple[tuple, dict[str, Any]]]:
    def example(device: torch.device, dtype: torch.dtype) -> tuple[tuple, dict[str, Any]]:
        size = 32
        x = torch.rand(1, 28, size, size, device=device, dtype=dtype)
        mask = torch.rand(1, 28, size, size + mask_width_extra, device=device, dtype=dtype)
        return (x, mask), {}

    return example


PRESETS: dict[str, Preset] = {
    "mst": Preset(
        name="mst",
        layers=_ANY_PREFIX + _UNET_BLOCKS,
        condition=first_argument("x"),
        example_inputs=_h_and_mask(mask_width_extra=54),  # 'H' input and the shifted mask Phi
    ),
    "bisrnet": Preset(
        name="bisrnet",
        layers=_ANY_PREFIX + r"body\.\d+\." + _UNET_BLOCKS,
        condition=first_argument("y"),
        example_inputs=_h_and_mask(mask_width_extra=0),  # 'H' input and mask3d
        mask_setting="Mask",
    ),
    "mst_plus_plus": Preset(
        name="mst_plus_plus",
        layers=_ANY_PREFIX + r"body\.\d+\." + _UNET_BLOCKS,  # the SABs of every stage: 2 levels + bottleneck + 2
        condition=first_argument("y"),
        example_inputs=_h_and_mask(mask_width_extra=0),  # 'H' input and mask3d
        mask_setting="Mask",
    ),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; a KeyError lists the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise UnknownNameError(f"no preset {name!r}; known presets: {sorted(PRESETS)}") from None
