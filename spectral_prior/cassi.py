"""CASSI forward model with the MST toolbox conventions (28 bands, dispersion of 2 pixels per band).

A scene cube ``x`` of shape [B, C, H, W] is modulated by the coded aperture (``mask3d``, the 2-D mask repeated over
the bands), band ``i`` is shifted right by ``step * i`` columns, and the bands are summed into a 2-D measurement
``y`` of shape [B, H, W + (C - 1) * step]. Every operation here is vectorised over the bands (no Python loop),
works on any device and floating dtype and is differentiable.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from .checks import check_finite, check_unit_range
from .errors import (
    InvalidInputError,
)
from .io import existing_file, load_tensors
from .matfile import pick_variable, read_mat

__all__ = [
    "BANDS",
    "STEP",
    "INPUT_SETTINGS",
    "MASK_SETTINGS",
    "shift",
    "shift_back",
    "MASK_KEYS",
    "load_mask",
    "random_mask",
    "mask3d",
    "measure",
    "measurement_to_input",
    "mask_input",
    "simulate",
]

BANDS = 28
"""Number of spectral bands of the CASSI benchmark."""
CASSI_WAVELENGTHS = torch.tensor(
    [
        453.3, 457.6, 462.1, 466.8, 471.6, 476.5, 481.6, 486.9, 492.4, 498.0, 503.9, 509.9, 516.2, 522.7,
        529.5, 536.5, 543.8, 551.4, 558.6, 567.5, 575.3, 584.3, 594.4, 604.2, 614.4, 625.1, 636.3, 648.1,
    ]
)
"""The 28 band centres (nm) of the TSA/KAIST CASSI benchmark."""
STEP = 2
"""Dispersion, in pixels per band."""
INPUT_SETTINGS = ("H", "HM", "Y")
"""Valid ``setting`` values of :func:`measurement_to_input`."""
MASK_SETTINGS = ("Phi", "Phi_PhiPhiT", "Mask")
"""Valid ``setting`` values of :func:`mask_input`."""

MaskInput = Union[Tensor, Tuple[Tensor, Tensor]]
MaskSource = Union[str, os.PathLike, np.ndarray, Tensor]


# --------------------------------------------------------------------------------------------------------------
# input checks


def _shape(x: Tensor) -> list:
    return list(x.shape)


def _check_dims(x: Tensor, name: str, layout: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != len(layout.split(",")):
        raise InvalidInputError(f"{name} must have shape [{layout}], got {_shape(x)} ({x.dim()} dims)")


def _check_step(step: int) -> None:
    if not isinstance(step, int) or step < 1:
        raise InvalidInputError(f"step must be a positive int, got {step!r}")


def _unshifted_width(width: int, bands: int, step: int) -> int:
    """Width of the scene behind a measurement ``width`` columns wide."""
    _check_step(step)
    if not isinstance(bands, int) or bands < 1:
        raise InvalidInputError(f"the band count must be a positive int, got {bands!r}")
    scene_width = width - (bands - 1) * step
    if scene_width < 1:
        raise InvalidInputError(
            f"measurement width {width} is too small for {bands} bands at step={step}: "
            f"expected more than (bands - 1) * step = {(bands - 1) * step} columns"
        )
    return scene_width


def _check_mask3d(mask3d: Tensor, expected: Sequence[int], against: str) -> None:
    """``mask3d`` must be [1 or B, C, H, W] with ``expected`` = [B, C, H, W] taken from ``against``."""
    _check_dims(mask3d, "mask3d", "B, C, H, W")
    batch_ok = mask3d.shape[0] in (1, expected[0])
    if not batch_ok or _shape(mask3d)[1:] != list(expected[1:]):
        want = [f"1 or {expected[0]}", *expected[1:]]
        raise InvalidInputError(
            f"mask3d must match the {against}: expected shape [{', '.join(map(str, want))}], got {_shape(mask3d)}"
        )


def _check_setting(setting: str, valid: Sequence[str], name: str) -> None:
    if setting not in valid:
        raise InvalidInputError(f"unknown {name} {setting!r}; valid settings are {', '.join(map(repr, valid))}")


# --------------------------------------------------------------------------------------------------------------
# dispersion


def shift(x: Tensor, step: int = STEP) -> Tensor:
    """Disperse a cube: [B, C, H, W] -> [B, C, H, W + (C - 1) * step], band ``i`` at column offset ``step * i``.

    The columns a band does not cover are zero.
    """
    _check_dims(x, "x", "B, C, H, W")
    _check_step(step)
    batch, bands, height, width = x.shape
    out = x.new_zeros(batch, bands, height, width + (bands - 1) * step)
    # out.unfold(...)[b, c, h, k, w] is out[b, c, h, step * k + w]; its (c, k) diagonal is the window of band c.
    band_windows = out.unfold(-1, width, step).diagonal(dim1=1, dim2=3)  # [B, H, W, C], a view of ``out``
    band_windows.copy_(x.movedim(1, -1))
    return out


def shift_back(y: Tensor, nC: int = BANDS, step: int = STEP) -> Tensor:
    """Undo the dispersion of a measurement: [B, H, W'] -> [B, nC, H, W' - (nC - 1) * step].

    Band ``i`` is the window of columns ``step * i`` to ``step * i + W``. The result is a view of ``y`` (no copy):
    write to a clone of it, not to it.
    """
    _check_dims(y, "y", "B, H, W'")
    width = _unshifted_width(y.shape[-1], nC, step)
    return y.unfold(-1, width, step).movedim(2, 1)


# --------------------------------------------------------------------------------------------------------------
# masks


MASK_KEYS = ("mask", "Mask", "mask2d")
"""Variable names :func:`load_mask` takes as a coded aperture when no ``key`` is given."""


def _read_mat(path: Path, key: str | None) -> np.ndarray:
    choose = lambda shapes: pick_variable(shapes, key, path, what="coded aperture", named=MASK_KEYS, option="mask key")  # noqa: E731
    return read_mat(path, choose)[1]


def _read_safetensors(path: Path, key: str) -> np.ndarray:
    tensors = load_tensors(path)  # a damaged file is an error naming it
    if key not in tensors:
        raise InvalidInputError(f"{path} holds no tensor {key!r} (it has {sorted(tensors)}); pass key= with one of them")
    return tensors[key].numpy()


def load_mask(source: MaskSource, key: str | None = None) -> Tensor:
    """Load a 2-D coded aperture as a float32 [H, W] tensor.

    ``source`` is a ``.mat`` file (any MATLAB version; ``key`` defaults to the variable named as in
    :data:`MASK_KEYS`: a file without one, such as a measurement, is refused), a ``.npy`` file, a ``.safetensors``
    file (tensor ``key``, default ``'mask'``: the file a saved model keeps its mask in), a numpy array or a tensor
    (kept on its device). Values must lie in [0, 1] (a transmission).
    """
    if isinstance(source, Tensor):
        mask = source.to(torch.float32)
    elif isinstance(source, np.ndarray):
        mask = torch.from_numpy(np.ascontiguousarray(source, dtype=np.float32))
    elif isinstance(source, (str, os.PathLike)):
        path = existing_file(source, "mask file")
        if path.suffix.lower() == ".npy":
            array = np.load(path)
        elif path.suffix.lower() == ".mat":
            array = _read_mat(path, key)
        elif path.suffix.lower() == ".safetensors":
            array = _read_safetensors(path, key or "mask")
        else:
            raise InvalidInputError(
                f"unsupported mask file type {path.suffix!r} ({path}); expected .mat, .npy or .safetensors"
            )
        mask = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    else:
        raise TypeError(f"mask source must be a path, numpy array or tensor, got {type(source).__name__}")
    if mask.dim() != 2:
        raise InvalidInputError(f"the mask must be 2-D [H, W], got shape {_shape(mask)}")
    check_finite(mask, name="the mask")
    low, high = mask.min().item(), mask.max().item()
    if low < 0 or high > 1:
        raise InvalidInputError(
            f"the mask's values span [{low:.4g}, {high:.4g}]: a coded aperture is a transmission in [0, 1] (is this a "
            "measurement or a scene?)"
        )
    return mask


def random_mask(size: int | tuple[int, int], *, seed: int = 0, open_fraction: float = 0.5) -> Tensor:
    """A seeded random binary coded aperture [H, W] (float32 0/1), each pixel open with ``open_fraction``."""
    height, width = (size, size) if isinstance(size, int) else size
    if height < 1 or width < 1 or not 0 < open_fraction < 1:
        raise InvalidInputError(f"need a positive size and 0 < open_fraction < 1, got size={size}, open_fraction={open_fraction}")
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(height, width, generator=generator) < open_fraction).to(torch.float32)


def mask3d(mask: Tensor, bands: int = BANDS) -> Tensor:
    """Repeat a 2-D mask over the bands: [H, W] -> [1, bands, H, W], [B, H, W] -> [B, bands, H, W].

    The result is an expanded view (no copy).
    """
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
    if mask.dim() == 2:
        mask = mask.unsqueeze(0)
    elif mask.dim() != 3:
        raise InvalidInputError(f"mask must have shape [H, W] or [B, H, W], got {_shape(mask)}")
    batch, height, width = mask.shape
    return mask.unsqueeze(1).expand(batch, bands, height, width)


# --------------------------------------------------------------------------------------------------------------
# forward model


def measure(cube: Tensor, mask3d: Tensor, step: int = STEP) -> Tensor:
    """Simulate the CASSI measurement ``sum_bands(shift(mask3d * cube))``: [B, C, H, W] -> [B, H, W + (C-1)*step].

    ``mask3d`` is [B, C, H, W] or [1, C, H, W] (shared by the batch).
    """
    _check_dims(cube, "cube", "B, C, H, W")
    check_finite(cube, name="cube")
    _check_mask3d(mask3d, _shape(cube), against="cube")
    return shift(mask3d * cube, step).sum(dim=1)


def measurement_to_input(y: Tensor, mask3d: Tensor, setting: str = "H", step: int = STEP) -> Tensor:
    """Turn a measurement [B, H, W'] into a network input, as the MST toolbox does.

    ``'H'``: ``shift_back(y / C * 2)``, [B, C, H, W]; ``'HM'``: that times ``mask3d``; ``'Y'``: ``y`` itself.
    ``mask3d`` [1 or B, C, H, W] gives the band count and must match the measurement. The result is contiguous.
    """
    _check_setting(setting, INPUT_SETTINGS, "input setting")
    _check_dims(y, "y", "B, H, W'")
    check_finite(y, name="the measurement y")
    _check_dims(mask3d, "mask3d", "B, C, H, W")
    bands = mask3d.shape[1]
    width = _unshifted_width(y.shape[-1], bands, step)
    _check_mask3d(mask3d, [y.shape[0], bands, y.shape[1], width], against=f"measurement of shape {_shape(y)}")
    if setting == "Y":
        return y
    # shift_back's windows overlap in memory; hand networks a tensor of their own, as the toolbox does.
    h = shift_back(y / bands * 2, bands, step).contiguous()
    return h * mask3d if setting == "HM" else h


def mask_input(mask3d: Tensor, setting: str = "Phi", step: int = STEP) -> MaskInput:
    """The mask a network receives: ``'Phi'``: ``shift(mask3d)``; ``'Phi_PhiPhiT'``: ``(Phi, Phi_s)`` with
    ``Phi_s = sum_bands(Phi ** 2)`` and its zeros replaced by 1; ``'Mask'``: ``mask3d``.
    """
    _check_setting(setting, MASK_SETTINGS, "mask setting")
    _check_dims(mask3d, "mask3d", "B, C, H, W")
    if setting == "Mask":
        return mask3d
    phi = shift(mask3d, step)
    if setting == "Phi":
        return phi
    phi_s = phi.square().sum(dim=1)
    return phi, phi_s.masked_fill(phi_s == 0, 1)


def _expand_batch(x: Tensor, batch: int) -> Tensor:
    return x.expand(batch, *x.shape[1:])


def simulate(
    cube: Tensor,
    mask3d: Tensor,
    input_setting: str = "H",
    mask_setting: str = "Phi",
    step: int = STEP,
) -> Tuple[Tensor, MaskInput]:
    """Measure ``cube`` [B, C, H, W] and return ``(network input, mask input)`` for the given settings.

    The mask input is expanded (not copied) to the cube's batch. A cube far outside [0, 1] (8-bit data) is refused:
    networks are trained and scored on cubes in [0, 1].
    """
    _check_dims(cube, "cube", "B, C, H, W")
    check_finite(cube, name="cube")
    check_unit_range(cube, name="cube", fix="divide it by its full scale (255 for 8-bit data) before simulating it")
    _check_setting(input_setting, INPUT_SETTINGS, "input setting")
    _check_setting(mask_setting, MASK_SETTINGS, "mask setting")
    y = measure(cube, mask3d, step)
    net_input = measurement_to_input(y, mask3d, input_setting, step)
    masks = mask_input(mask3d, mask_setting, step)
    batch = cube.shape[0]
    if isinstance(masks, tuple):
        return net_input, tuple(_expand_batch(m, batch) for m in masks)
    return net_input, _expand_batch(masks, batch)
