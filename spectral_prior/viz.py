"""Figures of hyperspectral cubes: sRGB renderings, comparison figures and previews (the ``viz`` extra).

:func:`cube_to_srgb` needs torch only; the PNG writers need matplotlib (``pip install spectral-prior[viz]``),
imported when first used and drawn with the Agg canvas (no display, no pyplot global state).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from .cassi import CASSI_WAVELENGTHS
from .data.bands import Wavelengths
from .errors import InvalidInputError, MissingDependencyError
from .io import atomic_path

__all__ = ["cube_to_srgb", "save_comparison_figure", "save_preview", "require_matplotlib"]

Point = Tuple[int, int]

# The CIE 1931 2-degree colour matching functions as sums of piecewise gaussians (Wyman, Sloan & Shirley,
# "Simple Analytic Approximations to the CIE XYZ Color Matching Functions", JCGT 2013, multi-lobe fit).
# Each lobe is (weight, peak nm, width below the peak, width above the peak).
_CMF_LOBES: Dict[str, Tuple[Tuple[float, float, float, float], ...]] = {
    "x": ((1.056, 599.8, 37.9, 31.0), (0.362, 442.0, 16.0, 26.7), (-0.065, 501.1, 20.4, 26.2)),
    "y": ((0.821, 568.8, 46.9, 40.5), (0.286, 530.9, 16.3, 31.1)),
    "z": ((1.217, 437.0, 11.8, 36.0), (0.681, 459.0, 26.0, 13.8)),
}
_D65_WHITE_XYZ = (0.95047, 1.0, 1.08883)
_XYZ_TO_LINEAR_SRGB = (
    (3.2404542, -1.5371385, -0.4985314),
    (-0.9692660, 1.8760108, 0.0415560),
    (0.0556434, -0.2040259, 1.0572252),
)
_DEFAULT_POINTS = ((0.25, 0.25), (0.25, 0.75), (0.75, 0.25), (0.75, 0.75))  # fractions of (height, width)
_MARKER_COLOURS = ("tab:red", "tab:green", "tab:blue", "tab:orange", "tab:purple", "tab:cyan")


# --------------------------------------------------------------------------------------------------------------
# colour


def _colour_matching(nm: Tensor) -> Tensor:
    """x-bar, y-bar, z-bar at wavelengths ``nm`` [C] (float64) -> [3, C]."""
    rows = []
    for lobes in _CMF_LOBES.values():
        value = torch.zeros_like(nm)
        for weight, peak, below, above in lobes:
            width = torch.where(nm < peak, torch.full_like(nm, below), torch.full_like(nm, above))
            value = value + weight * torch.exp(-0.5 * ((nm - peak) / width) ** 2)
        rows.append(value)
    return torch.stack(rows)


def _band_widths(nm: Tensor) -> Tensor:
    """The spectral width each band stands for (half the gap to each neighbour), for integrating over bands."""
    if nm.numel() == 1:
        return torch.ones_like(nm)
    edges = torch.cat([nm[:1], (nm[1:] + nm[:-1]) / 2, nm[-1:]])
    return edges[1:] - edges[:-1]


def _spectrum_to_xyz(nm: Tensor) -> Tensor:
    """The [3, C] matrix taking a spectrum on the bands ``nm`` to XYZ, white-balanced (see :func:`cube_to_srgb`)."""
    weights = _colour_matching(nm) * _band_widths(nm)
    white = torch.tensor(_D65_WHITE_XYZ, dtype=weights.dtype)
    return weights * (white / weights.sum(dim=1))[:, None]


def _srgb_gamma(linear: Tensor) -> Tensor:
    """The sRGB transfer function on values in [0, 1]."""
    return torch.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear.clamp_min(0.0031308) ** (1 / 2.4) - 0.055)


def cube_to_srgb(cube: Tensor, wavelengths: Wavelengths = CASSI_WAVELENGTHS, *, white: float = 1.0) -> Tensor:
    """Render a cube [C, H, W] (or a batch [B, C, H, W]) as sRGB [3, H, W] (or [B, 3, H, W]) in [0, 1], float32.

    The bands (centres ``wavelengths`` in nm, one per band, increasing) are integrated against the CIE 1931
    2-degree colour matching functions (the analytic fit of Wyman, Sloan & Shirley 2013), each band weighted by
    the width it covers. The CASSI bands span only 450-650 nm, where an equal-energy spectrum looks yellowish,
    so X, Y and Z are white-balanced: a flat spectrum of value ``white`` maps to the D65 white point with Y = 1,
    hence to sRGB (1, 1, 1); a flat spectrum of ``white / 2`` is a neutral grey. XYZ goes to linear sRGB with the
    D65 matrix, is clipped to [0, 1] and gamma-encoded.
    """
    if not isinstance(cube, Tensor):
        raise TypeError(f"cube must be a torch.Tensor, got {type(cube).__name__}")
    if cube.dim() not in (3, 4):
        raise InvalidInputError(f"cube must have shape [C, H, W] or [B, C, H, W], got {list(cube.shape)}")
    nm = torch.as_tensor(np.asarray(wavelengths, dtype=np.float64)).flatten()
    bands = cube.shape[-3]
    if nm.numel() != bands:
        raise InvalidInputError(
            f"the cube has {bands} bands but {nm.numel()} wavelengths were given; pass wavelengths= (nm, one per band)"
        )
    if bool((nm[1:] <= nm[:-1]).any()):
        raise InvalidInputError("wavelengths must be strictly increasing (one band centre in nm per band)")
    if not white > 0:
        raise InvalidInputError(f"white must be positive, got {white}")
    to_xyz = _spectrum_to_xyz(nm)
    to_rgb = torch.tensor(_XYZ_TO_LINEAR_SRGB, dtype=torch.float64) @ to_xyz  # [3, C]
    spectra = cube.detach().to(device="cpu", dtype=torch.float64) / white
    linear = torch.einsum("rc,...chw->...rhw", to_rgb, spectra)
    return _srgb_gamma(linear.clamp(0.0, 1.0)).to(torch.float32)


# --------------------------------------------------------------------------------------------------------------
# figures


def require_matplotlib() -> None:
    """Import matplotlib, with a clear message when the viz extra is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as err:
        raise MissingDependencyError(
            "drawing figures needs matplotlib: pip install spectral-prior[viz] (or pip install matplotlib)"
        ) from err


def _as_cube(cube: Tensor, name: str) -> Tensor:
    """A [C, H, W] cube (a batch of one is accepted) as float32 on the CPU."""
    if not isinstance(cube, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(cube).__name__}")
    if cube.dim() == 4 and cube.shape[0] == 1:
        cube = cube[0]
    if cube.dim() != 3:
        raise InvalidInputError(f"{name} must be one cube [C, H, W], got shape {list(cube.shape)}")
    return cube.detach().to(device="cpu", dtype=torch.float32)


def _auto_white(cube: Tensor) -> float:
    """The value rendered as white: the cube's 99.9th percentile, so one hot pixel does not darken the image."""
    return max(float(np.percentile(cube.numpy(), 99.9)), 1e-6)


def _as_image(rgb: Tensor) -> np.ndarray:
    """[3, H, W] -> [H, W, 3] numpy, as matplotlib's imshow wants it."""
    return rgb.permute(1, 2, 0).numpy()


def _resolve_points(points: Optional[Sequence[Point]], height: int, width: int) -> list:
    """The pixels (row, column) whose spectra are plotted: given ones checked, or fixed fractions of the image."""
    if points is None:
        return [(min(int(fy * height), height - 1), min(int(fx * width), width - 1)) for fy, fx in _DEFAULT_POINTS]
    resolved = [(int(row), int(col)) for row, col in points]
    for row, col in resolved:
        if not (0 <= row < height and 0 <= col < width):
            raise InvalidInputError(f"point (row={row}, col={col}) lies outside the {height}x{width} image")
    if not resolved:
        raise InvalidInputError("points must hold at least one (row, column) pixel, or be None for the default ones")
    return resolved


def _image_axes(figure: Any, cell: Any, image: np.ndarray, title: str, **imshow: Any) -> Any:
    """A frameless subplot at grid ``cell`` showing ``image``; returns what imshow returned."""
    axes = figure.add_subplot(cell)
    shown = axes.imshow(image, **imshow)
    axes.set_title(title, fontsize="small")
    axes.set_axis_off()
    return shown


def _mark_points(axes: Any, pixels: Sequence[Point]) -> None:
    """Circle and number each pixel (row, column) on an image."""
    for index, (row, col) in enumerate(pixels):
        colour = _MARKER_COLOURS[index % len(_MARKER_COLOURS)]
        axes.plot(col, row, marker="o", markersize=7, markerfacecolor="none", markeredgecolor=colour)
        axes.annotate(str(index + 1), (col, row), xytext=(4, 4), textcoords="offset points", color=colour)


def _plot_spectra(axes: Any, nm: np.ndarray, gt: Tensor, cubes: Mapping[str, Tensor], pixel: Point) -> None:
    """The spectra of the ground truth and of every reconstruction at one pixel."""
    row, col = pixel
    axes.plot(nm, gt[:, row, col].numpy(), color="black", linewidth=2, label="ground truth")
    for name, cube in cubes.items():
        axes.plot(nm, cube[:, row, col].numpy(), linewidth=1, label=name.splitlines()[0])
    axes.set_xlabel("wavelength (nm)")


FIGURE_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".pdf": "pdf", ".svg": "svg"}
"""Figure file suffixes and the format each is written in."""


def figure_format(path: str | os.PathLike) -> str:
    """The format a figure path's suffix names (:data:`FIGURE_FORMATS`); ValueError for any other suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in FIGURE_FORMATS:
        raise InvalidInputError(f"cannot write a figure as {Path(path).name!r}: use one of {', '.join(FIGURE_FORMATS)}")
    return FIGURE_FORMATS[suffix]


def save_comparison_figure(
    path: str | os.PathLike,
    gt: Tensor,
    reconstructions: Mapping[str, Tensor],
    *,
    points: Optional[Sequence[Point]] = None,
    title: Optional[str] = None,
    wavelengths: Wavelengths = CASSI_WAVELENGTHS,
) -> None:
    """Save one figure comparing reconstructions (name -> cube [C, H, W]) with the ground truth ``gt`` [C, H, W].

    Top row: the ground truth and every reconstruction in sRGB (:func:`cube_to_srgb`, all with the white level of
    the ground truth). Middle row: each reconstruction's error map, the absolute error averaged over bands, on one
    colour scale shared by all maps (colorbar on the right). Bottom row: the spectra of the ground truth and of each
    reconstruction at ``points`` (pixels as (row, column); by default four fixed pixels at a quarter and three
    quarters of the height and width), which are numbered on the ground-truth image. The file is written atomically,
    in the format its suffix names (:func:`figure_format`).
    """
    require_matplotlib()
    file_format = figure_format(path)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    gt = _as_cube(gt, "gt")
    if not reconstructions:
        raise InvalidInputError("reconstructions must hold at least one cube (name -> [C, H, W])")
    cubes = {name: _as_cube(cube, f"reconstruction {name!r}") for name, cube in reconstructions.items()}
    for name, cube in cubes.items():
        if cube.shape != gt.shape:
            raise InvalidInputError(f"reconstruction {name!r} has shape {list(cube.shape)}, the ground truth {list(gt.shape)}")
    pixels = _resolve_points(points, *gt.shape[-2:])
    white = _auto_white(gt)
    errors = {name: (cube - gt).abs().mean(dim=0).numpy() for name, cube in cubes.items()}
    error_max = max(max(float(error.max()) for error in errors.values()), 1e-6)

    columns = max(len(cubes) + 1, len(pixels))
    figure = Figure(figsize=(3.0 * columns, 9.0), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(3, columns)
    if title:
        figure.suptitle(title)

    srgb = _as_image(cube_to_srgb(gt, wavelengths, white=white))
    _mark_points(_image_axes(figure, grid[0, 0], srgb, "ground truth").axes, pixels)
    error_maps = []
    for column, (name, cube) in enumerate(cubes.items(), start=1):
        _image_axes(figure, grid[0, column], _as_image(cube_to_srgb(cube, wavelengths, white=white)), name)
        error_title = f"|error|, band mean (overall {errors[name].mean():.4f})"
        error_maps.append(
            _image_axes(figure, grid[1, column], errors[name], error_title, cmap="inferno", vmin=0.0, vmax=error_max)
        )
    figure.colorbar(error_maps[-1], ax=[shown.axes for shown in error_maps], label="mean absolute error")

    nm = np.asarray(wavelengths, dtype=np.float64).flatten()
    for column, pixel in enumerate(pixels):
        axes = figure.add_subplot(grid[2, column])
        _plot_spectra(axes, nm, gt, cubes, pixel)
        axes.set_title(f"point {column + 1} (row {pixel[0]}, col {pixel[1]})", fontsize="small")
        if column == 0:
            axes.set_ylabel("intensity")
            axes.legend(fontsize="x-small")
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format=file_format)


def save_preview(path: str | os.PathLike, cube: Tensor, *, wavelengths: Wavelengths = CASSI_WAVELENGTHS) -> None:
    """Save a cube [C, H, W] as an sRGB image of its own size (white = its 99.9th percentile), atomically, in the
    format its suffix names (:func:`figure_format`)."""
    require_matplotlib()
    file_format = figure_format(path)
    from matplotlib.image import imsave

    cube = _as_cube(cube, "cube")
    image = _as_image(cube_to_srgb(cube, wavelengths, white=_auto_white(cube)))
    with atomic_path(path) as temporary:
        imsave(temporary, image, format=file_format)
