"""Spectral bands: a :class:`Cube` with its wavelengths, and resampling onto the 28 CASSI bands."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from ..cassi import CASSI_WAVELENGTHS
from ..errors import InvalidInputError

Wavelengths = Union[Sequence[float], np.ndarray, Tensor]


CAVE_WAVELENGTHS = torch.arange(400.0, 701.0, 10.0)
"""The 31 band centres (nm) of the CAVE database: 400 to 700 nm in 10 nm steps."""


@dataclass
class Cube:
    """A hyperspectral cube: ``data`` float32 [C, H, W]; ``wavelengths`` [C] in nm, or None when unknown."""

    data: Tensor
    wavelengths: Optional[Tensor] = None


def resample_bands(cube: Tensor, src_nm: Wavelengths, dst_nm: Wavelengths = CASSI_WAVELENGTHS) -> Tensor:
    """Linearly interpolate ``cube`` [C, H, W] (or [..., C, H, W]) from wavelengths ``src_nm`` [C] to ``dst_nm``.

    ``src_nm`` must be strictly increasing and cover every ``dst_nm`` (no extrapolation: ValueError).
    """
    src = torch.as_tensor(np.asarray(src_nm, dtype=np.float64)).flatten()
    dst = torch.as_tensor(np.asarray(dst_nm, dtype=np.float64)).flatten()
    if cube.dim() < 3 or cube.shape[-3] != src.numel():
        raise InvalidInputError(f"cube of shape {list(cube.shape)} does not have {src.numel()} bands (one per src_nm)")
    if src.numel() < 2 or not bool((src[1:] > src[:-1]).all()):
        raise InvalidInputError("src_nm must hold at least 2 strictly increasing wavelengths")
    if bool((dst < src[0]).any() or (dst > src[-1]).any()):
        raise InvalidInputError(
            f"target wavelengths {dst.min().item():.1f}-{dst.max().item():.1f} nm fall outside the cube's "
            f"{src[0].item():.1f}-{src[-1].item():.1f} nm; resample_bands does not extrapolate"
        )
    upper = torch.searchsorted(src, dst, right=True).clamp(1, src.numel() - 1)
    lower = upper - 1
    frac = ((dst - src[lower]) / (src[upper] - src[lower])).to(cube.dtype).to(cube.device)
    frac = frac.view(-1, 1, 1)
    lower, upper = lower.to(cube.device), upper.to(cube.device)
    return cube.index_select(-3, lower) * (1 - frac) + cube.index_select(-3, upper) * frac


def to_cassi_bands(cube: Cube) -> Tensor:
    """The cube on the 28 CASSI bands [28, H, W]: as is if it has 28 bands, else resampled from its wavelengths."""
    bands = cube.data.shape[0]
    if bands == len(CASSI_WAVELENGTHS):
        return cube.data
    if cube.wavelengths is None:
        raise InvalidInputError(
            f"a cube of {bands} bands with unknown wavelengths cannot be mapped to the 28 CASSI bands: store them "
            "with it (a .safetensors file holding a 'wavelengths' tensor, nm, one per band, beside 'cube') or "
            "give them to the reader (wavelengths=)"
        )
    return resample_bands(cube.data, cube.wavelengths, CASSI_WAVELENGTHS)
