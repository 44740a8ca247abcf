"""Reconstruct a hyperspectral cube from a real 2-D CASSI measurement and its coded aperture.

The measurement is prepared as the MST toolbox's real-data test prepares it (``real/test_code/test.py``):
clipped to [0, 1], then scaled so that its maximum is 0.8. The toolbox's real networks read that array in the
scale of ``sum_bands(shift(mask * x)) / 28 * 2`` (the scale of their simulated training data) and shift it back
into their initial estimate, which is the 'H' input of the simulation backbones here; so the backbone gets
:func:`spectral_prior.cassi.measurement_to_input` of the scaled measurement times 28 / 2 (that function divides
by 28 / 2). The output is clamped to [0, 1], as there.

The ``spectral-prior reconstruct`` command (:mod:`spectral_prior.cli.reconstruct`) runs this on a measurement file.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional, Union

import numpy as np
import scipy.io
import torch
from torch import Tensor, nn

from . import cassi
from .cassi import CASSI_WAVELENGTHS
from .checks import check_finite, check_unit_range
from .errors import InvalidInputError
from .io import atomic_path, existing_file, save_tensors
from .matfile import pick_variable, read_mat

__all__ = ["TOOLBOX_PEAK", "check_geometry", "read_measurement", "prepare_measurement", "reconstruct_measurement", "save_cube"]

TOOLBOX_PEAK = 0.8
"""The maximum the MST toolbox's real-data test scales each measurement to."""


MEASUREMENT_KEYS = ("meas_real", "meas", "y")
"""Variables :func:`read_measurement` looks for in a ``.mat`` file, in this order."""


PathLike = Union[str, "os.PathLike[str]"]


def read_measurement(path: PathLike, key: Optional[str] = None) -> Tensor:
    """Read a 2-D measurement [H, W'] as float32 from a ``.mat`` file (MATLAB v5 or v7.3; variable ``key``, else
    ``meas_real``, ``meas``, ``y`` or the file's only 2-D variable) or a ``.npy`` file."""
    path = existing_file(path, "measurement file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        array = np.load(path, allow_pickle=False)
    elif suffix == ".mat":
        array = _read_mat_variable(path, key)
    else:
        raise InvalidInputError(f"unsupported measurement file {path}: expected .mat or .npy")
    if array.ndim != 2:
        raise InvalidInputError(f"{path}: the measurement must be 2-D [H, W'], got shape {list(array.shape)}")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _read_mat_variable(path: Path, key: Optional[str]) -> np.ndarray:
    choose = lambda shapes: pick_variable(shapes, key, path, what="measurement", named=MEASUREMENT_KEYS, dims=2)  # noqa: E731
    return read_mat(path, choose)[1]


def check_geometry(measurement: Tensor, mask2d: Tensor, bands: int, step: int) -> None:
    """The measurement must be the mask's height and its width + (bands - 1) * step."""
    height, width = mask2d.shape
    expected = (height, width + (bands - 1) * step)
    if tuple(measurement.shape) != expected:
        raise InvalidInputError(
            f"the measurement is {measurement.shape[0]}x{measurement.shape[1]} but the {height}x{width} mask "
            f"needs {expected[0]}x{expected[1]}: same height, and the mask's width + (bands - 1) * step = "
            f"{width} + {bands - 1} * {step} for {bands} bands dispersed by {step} pixels each"
        )


def prepare_measurement(measurement: Tensor, *, peak: float = TOOLBOX_PEAK, scale: Optional[float] = None) -> Tensor:
    """The toolbox's real-data normalisation: clip to [0, 1], then scale so the maximum is ``peak``.

    A measurement in another scale (sensor counts) is divided by its full ``scale`` first (255 for 8-bit counts);
    without ``scale``, one far outside [0, 1] is refused, since clipping it would saturate it.
    """
    if not peak > 0:
        raise InvalidInputError(f"peak must be positive, got {peak}")
    if scale is not None:
        if not (math.isfinite(scale) and scale > 0):
            raise InvalidInputError(f"scale must be the measurement's full scale, a positive number (255 for 8-bit counts), "
                                    f"got {scale}")
        measurement = measurement / scale
    check_finite(measurement, name="the measurement")
    check_unit_range(measurement, name="the measurement", fix="give its full scale, the scale option (255 for 8-bit counts)")
    clipped = measurement.clamp(0.0, 1.0)
    top = clipped.max()
    if top <= 0:
        raise InvalidInputError("the measurement is zero (or negative) everywhere: nothing to reconstruct")
    return clipped / top * peak


def reconstruct_measurement(
    model: nn.Module,
    measurement: Tensor,
    mask2d: cassi.MaskSource,
    *,
    input_setting: str,
    mask_setting: str,
    peak: float = TOOLBOX_PEAK,
    scale: Optional[float] = None,
    bands: int = cassi.BANDS,
    step: int = cassi.STEP,
    device: Optional[Union[str, torch.device]] = None,
) -> Tensor:
    """Reconstruct a cube [bands, H, W] in [0, 1] (float32, on the CPU) from a measurement [H, W'] and its mask.

    The measurement is normalised by :func:`prepare_measurement`, with ``scale`` and ``peak`` (see the module
    docstring for why its 'H' input is the ``shift_back`` of the normalised measurement), the mask ``mask2d`` [H, W]
    must fit it exactly (W' = W + (bands - 1) * step), and the model runs in eval mode under ``torch.no_grad`` on ``device`` (default:
    the model's), its mode restored afterwards. ``input_setting`` / ``mask_setting`` are the backbone's
    (``backbone_preset(name).input_setting`` / ``.mask_setting``).
    """
    measurement = torch.as_tensor(measurement, dtype=torch.float32)
    if measurement.dim() != 2:
        raise InvalidInputError(f"the measurement must be 2-D [H, W'], got shape {list(measurement.shape)}")
    mask2d = cassi.load_mask(mask2d)
    check_geometry(measurement, mask2d, bands, step)
    if device is None:
        device = next(model.parameters(), torch.empty(0)).device
    y = prepare_measurement(measurement, peak=peak, scale=scale) * (bands / 2)  # measurement_to_input divides by bands / 2
    mask3d = cassi.mask3d(mask2d.to(device), bands)
    net_input = cassi.measurement_to_input(y.unsqueeze(0).to(device), mask3d, input_setting, step)
    mask_input = cassi.mask_input(mask3d, mask_setting, step)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            cube = model(net_input, mask_input)
    finally:
        model.train(was_training)
    return cube[0].clamp(0.0, 1.0).float().cpu()


def save_cube(directory: PathLike, cube: Tensor) -> Path:
    """Write ``cube`` [28, H, W] as ``cube.safetensors`` (with the CASSI ``wavelengths``) and ``cube.mat`` (``img``
    [H, W, 28]) in ``directory``, atomically; returns the directory."""
    directory = Path(directory)
    tensors = {"cube": cube}
    if cube.shape[0] == len(CASSI_WAVELENGTHS):
        tensors["wavelengths"] = CASSI_WAVELENGTHS
    save_tensors(tensors, directory / "cube.safetensors")
    with atomic_path(directory / "cube.mat") as temporary, open(temporary, "wb") as file:
        scipy.io.savemat(file, {"img": cube.permute(1, 2, 0).numpy()})
    return directory
