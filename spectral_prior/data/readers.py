"""Reading one hyperspectral cube: ``.mat`` (MATLAB v5 or v7.3), ``.npy``, ``.safetensors``, or a folder of
per-band PNGs, into a :class:`~spectral_prior.data.bands.Cube` laid out [C, H, W] (float32)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Union

import numpy as np
import torch
from torch import Tensor

from ..errors import InvalidInputError, MissingDependencyError, MissingFileError
from ..matfile import UnreadableMatFileError, pick_variable, read_mat
from .bands import CAVE_WAVELENGTHS, Cube, Wavelengths

PathLike = Union[str, "os.PathLike[str]"]


CUBE_SUFFIXES = (".mat", ".npy", ".safetensors")
"""File types :func:`read_cube` accepts; a folder of per-band ``.png`` images is accepted as well."""


_MAT_KEYS = ("img_expand", "img", "Omsi")  # MST toolbox train scenes, test scenes, CAVE cubes


_CAVE_KEY = "Omsi"


_INT_SCALE = 65536.0  # the toolbox divides integer scenes by 2**16


_LAYOUTS = ("CHW", "HWC")


_BAND_PNG = re.compile(r"(\d+)\.png$", re.IGNORECASE)


class CubeReadError(InvalidInputError):
    """A cube file is corrupted, truncated, or does not hold a usable cube."""


@dataclass
class _Raw:
    """What a format reader found: the array, its layout, and what it knows of the wavelengths."""

    array: np.ndarray
    layout: Optional[str]  # None: guess from the shape
    wavelengths: Optional[Tensor] = None
    cave: bool = False  # from the CAVE database: 31 bands mean CAVE_WAVELENGTHS


def read_cube(
    path: PathLike,
    *,
    key: Optional[str] = None,
    wavelengths: Optional[Wavelengths] = None,
    layout: Optional[str] = None,
) -> Cube:
    """Read a hyperspectral cube from ``path`` into a float32 [C, H, W] :class:`Cube`.

    * ``.mat``: MATLAB v5 (scipy) or v7.3 (h5py), stored H x W x C. ``key`` defaults to ``img_expand``, ``img``
      or ``Omsi``, else the file's only 3-D variable. Integer data is divided by 65536 as the MST toolbox does;
      float data is kept. ``Omsi`` (CAVE) cubes of 31 bands get :data:`CAVE_WAVELENGTHS`.
    * ``.npy``: H x W x C or C x H x W. Unless ``layout`` is given, the bands are the first or the last axis,
      whichever is shorter; equal lengths are ambiguous and need ``layout=``.
    * ``.safetensors``: C x H x W tensor named ``cube`` (or ``key``); a ``wavelengths`` tensor is used if present.
    * a folder of per-band PNGs ``*_01.png``, ``*_02.png``, ... (CAVE style), ordered by the trailing number,
      8 or 16 bit scaled to [0, 1]; a 31-band folder gets :data:`CAVE_WAVELENGTHS`. Needs Pillow.

    ``layout`` (``'CHW'`` or ``'HWC'``) overrides the format's layout; ``wavelengths`` (nm, one per band)
    overrides what the file says. Corrupted or unusable files raise :class:`CubeReadError` naming the file; a
    ``.mat`` variable that is not there, or none that is clearly the cube, a
    :class:`~spectral_prior.matfile.VariableChoiceError`.
    """
    path = Path(path)
    if layout is not None and layout not in _LAYOUTS:
        raise InvalidInputError(f"layout must be one of {_LAYOUTS}, got {layout!r}")
    raw = _read_raw(path, key)
    data = _to_chw(raw.array, layout or raw.layout or _guess_layout(raw.array, path), path)
    known = raw.wavelengths
    if known is None and raw.cave and data.shape[0] == len(CAVE_WAVELENGTHS):
        known = CAVE_WAVELENGTHS.clone()
    if wavelengths is not None:
        known = torch.as_tensor(np.asarray(wavelengths, dtype=np.float32)).flatten()
    if known is not None and known.numel() != data.shape[0]:
        raise InvalidInputError(f"{path}: {known.numel()} wavelengths for a cube of {data.shape[0]} bands")
    return Cube(data, known)


def _read_raw(path: Path, key: Optional[str]) -> _Raw:
    if path.is_dir():
        return _Raw(_read_png_folder(path), "CHW", cave=True)
    if not path.is_file():
        raise MissingFileError(f"no cube file or PNG folder at {path}")
    suffix = path.suffix.lower()
    if suffix == ".mat":
        return _read_mat(path, key)
    if suffix == ".npy":
        return _Raw(_read_npy(path), None)
    if suffix == ".safetensors":
        return _read_safetensors(path, key)
    raise InvalidInputError(f"unsupported cube file {path}: expected {', '.join(CUBE_SUFFIXES)} or a folder of PNGs")


def _to_chw(array: np.ndarray, layout: str, path: Path) -> Tensor:
    """Channels first, float32; integers scaled by 1/65536 (the toolbox's convention)."""
    if array.ndim != 3:
        raise CubeReadError(f"{path}: expected a 3-D cube, got an array of shape {list(array.shape)}")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise CubeReadError(f"{path}: expected numeric data, got dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float32) / np.float32(_INT_SCALE)
    if layout == "HWC":
        array = array.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _guess_layout(array: np.ndarray, path: Path) -> str:
    """Bands are the shorter of the first and last axes."""
    if array.ndim != 3:
        raise CubeReadError(f"{path}: expected a 3-D cube, got an array of shape {list(array.shape)}")
    first, last = array.shape[0], array.shape[-1]
    if first == last:
        raise InvalidInputError(f"{path}: cannot tell the band axis of shape {list(array.shape)}; pass layout='CHW' or 'HWC'")
    return "CHW" if first < last else "HWC"


def _read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise _damaged(path, "a .npy array", err) from err


def _read_safetensors(path: Path, key: Optional[str]) -> _Raw:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise _damaged(path, "a safetensors file", err) from err
    name = key or "cube"
    if name not in tensors:
        raise CubeReadError(f"{path} has no tensor {name!r}; tensors in the file: {sorted(tensors)}")
    wavelengths = tensors.get("wavelengths")
    known = None if wavelengths is None else torch.from_numpy(wavelengths.astype(np.float32)).flatten()
    return _Raw(tensors[name], "CHW", wavelengths=known)


def _read_mat(path: Path, key: Optional[str]) -> _Raw:
    try:
        name, array = read_mat(path, lambda shapes: pick_variable(shapes, key, path, what="cube", named=_MAT_KEYS, dims=3, option="key"))
    except UnreadableMatFileError as err:
        raise CubeReadError(str(err)) from err
    return _Raw(array, "HWC", cave=name == _CAVE_KEY)


def _damaged(path: Path, kind: str, err: BaseException) -> CubeReadError:
    return CubeReadError(f"cannot read {path} as {kind} (corrupted or truncated?): {type(err).__name__}: {err}")


def band_pngs(folder: Path) -> List[Path]:
    """The folder's PNGs whose names end in a band number, in band order."""
    numbered = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _BAND_PNG.search(p.name))]
    return [p for _, p in sorted(numbered)]


def _read_png_folder(folder: Path) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError as err:
        raise MissingDependencyError(f"reading the PNG bands in {folder} needs Pillow (pip install pillow)") from err
    files = band_pngs(folder)
    if not files:
        raise CubeReadError(f"{folder} holds no band images named like '*_01.png'")
    bands = []
    for file in files:
        try:
            with Image.open(file) as image:
                bands.append(_png_to_unit(image))
        except OSError as err:  # PIL.UnidentifiedImageError is an OSError
            raise _damaged(file, "a PNG band image", err) from err
    shapes = {b.shape for b in bands}
    if len(shapes) != 1:
        raise CubeReadError(f"the band images in {folder} differ in size: {sorted(shapes)}")
    return np.stack(bands)


def _png_to_unit(image: Any) -> np.ndarray:
    """One band image as float32 in [0, 1]: 16-bit images over 65535, others as 8-bit grey over 255."""
    if image.mode.startswith("I"):  # 16-bit grey: 'I;16', 'I;16B', or 'I' (32-bit ints holding 16-bit values)
        return np.asarray(image, dtype=np.float32) / np.float32(65535.0)
    return np.asarray(image.convert("L"), dtype=np.float32) / np.float32(255.0)
