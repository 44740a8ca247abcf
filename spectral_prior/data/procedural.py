"""Deterministic synthetic hyperspectral scenes (:class:`ProceduralCubes`): sharp-edged regions of smooth spectra under
one illuminant, for tests and for training without data."""
from __future__ import annotations

from typing import Tuple, Union

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..cassi import CASSI_WAVELENGTHS
from ..errors import InvalidInputError

class ProceduralCubes(Dataset):
    """Deterministic synthetic hyperspectral scenes, float32 [bands, H, W] in [0, 1].

    Scene ``i`` depends only on ``(seed, i)``. Each scene is a map of regions with sharp edges (warped Voronoi
    cells overlaid with ellipses and convex polygons); each region has two smooth reflectance spectra (sums of
    gaussian bumps and sigmoid steps over wavelength, in [0, 1]) blended by a texture (flat, stripes, checker or
    smooth noise). The whole scene is lit by one smooth illuminant spectrum (a black body of 2500-10000 K) and a
    smooth spatial shading (a gradient, a soft spot light and low-frequency noise). Band centres are
    :data:`CASSI_WAVELENGTHS` for 28 bands, else evenly spaced over 450-650 nm (``self.wavelengths``).
    """

    def __init__(self, num_scenes: int, *, size: Union[int, Tuple[int, int]] = 256, bands: int = 28, seed: int = 0):
        if num_scenes < 1:
            raise InvalidInputError(f"num_scenes must be positive, got {num_scenes}")
        self.num_scenes = num_scenes
        self.size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        if min(self.size) < 2 or bands < 2:
            raise InvalidInputError(f"scenes need at least 2x2 pixels and 2 bands, got size={size}, bands={bands}")
        self.bands = bands
        self.seed = seed
        self.wavelengths = (
            CASSI_WAVELENGTHS.clone() if bands == len(CASSI_WAVELENGTHS) else torch.linspace(450.0, 650.0, bands)
        )

    def __len__(self) -> int:
        return self.num_scenes

    def __getitem__(self, index: int) -> Tensor:
        if not -self.num_scenes <= index < self.num_scenes:
            raise IndexError(f"scene {index} out of range for {self.num_scenes} scenes")
        rng = np.random.default_rng([self.seed, index % self.num_scenes])
        return _procedural_scene(rng, self.size, self.wavelengths.numpy().astype(np.float64))


def _procedural_scene(rng: np.random.Generator, size: Tuple[int, int], nm: np.ndarray) -> Tensor:
    height, width = size
    y, x = np.meshgrid(
        np.linspace(0.0, 1.0, height, dtype=np.float32), np.linspace(0.0, 1.0, width, dtype=np.float32), indexing="ij"
    )
    labels = _region_labels(rng, y, x)
    regions = int(labels.max()) + 1
    spectra = _reflectances(rng, 2 * regions, nm)  # [2R, bands]: region r blends spectra r and R + r
    blend = _textures(rng, labels, regions, y, x)  # [H, W] in [0, 1]
    light = _illuminant(rng, nm) * rng.uniform(0.75, 1.0)  # [bands]
    shade = _shading(rng, y, x)  # [H, W]
    # channels first, in place: light * (base * shade * (1 - blend) + other * shade * blend)
    lit = spectra.T * light[:, None]  # [bands, 2R]
    flat = labels.reshape(-1)
    weight = (shade * blend).reshape(-1)
    cube = np.take(lit[:, :regions], flat, axis=1)
    cube *= shade.reshape(-1) - weight
    other = np.take(lit[:, regions:], flat, axis=1)
    other *= weight
    cube += other
    np.clip(cube, 0.0, 1.0, out=cube)  # guards rounding only: each term is already in [0, 1]
    return torch.from_numpy(cube.reshape(len(nm), height, width))


def _smooth_noise(rng: np.random.Generator, y: np.ndarray, x: np.ndarray, cells: int) -> np.ndarray:
    """Value noise in [0, 1]: a random ``cells`` x ``cells`` grid blended with smoothstep weights."""
    grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
    rows = _smoothstep_weights(y[:, 0], cells)  # [H, cells + 1]
    cols = _smoothstep_weights(x[0], cells)  # [W, cells + 1]
    return rows @ grid @ cols.T


def _smoothstep_weights(t: np.ndarray, cells: int) -> np.ndarray:
    """Interpolation matrix [len(t), cells + 1] from grid nodes to positions ``t`` in [0, 1]."""
    u = t * cells
    lower = np.minimum(np.floor(u).astype(np.int64), cells - 1)
    f = u - lower
    s = f * f * (3 - 2 * f)
    weights = np.zeros((t.size, cells + 1), dtype=np.float32)
    rows = np.arange(t.size)
    weights[rows, lower] = 1 - s
    weights[rows, lower + 1] = s
    return weights


def _region_labels(rng: np.random.Generator, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Integer region map [H, W]: warped Voronoi cells, then ellipses and convex polygons painted over them."""
    warp = rng.uniform(0.02, 0.12)
    wy = y + warp * (_smooth_noise(rng, y, x, 4) - 0.5)
    wx = x + warp * (_smooth_noise(rng, y, x, 4) - 0.5)
    seeds = rng.random((int(rng.integers(4, 13)), 2)).astype(np.float32)
    distance = (wy[None] - seeds[:, 0, None, None]) ** 2 + (wx[None] - seeds[:, 1, None, None]) ** 2
    labels = distance.argmin(axis=0)
    next_label = len(seeds)
    for _ in range(int(rng.integers(1, 5))):
        labels[_ellipse(rng, y, x)] = next_label
        next_label += 1
    for _ in range(int(rng.integers(1, 5))):
        labels[_polygon(rng, y, x)] = next_label
        next_label += 1
    _, labels = np.unique(labels, return_inverse=True)  # drop the labels that were painted over
    return labels.reshape(y.shape)


def _ellipse(rng: np.random.Generator, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    cy, cx = rng.random(2)
    ry, rx = rng.uniform(0.04, 0.3, 2)
    angle = rng.uniform(0, np.pi)
    dy, dx = y - cy, x - cx
    u = dy * np.cos(angle) + dx * np.sin(angle)
    v = -dy * np.sin(angle) + dx * np.cos(angle)
    return (u / ry) ** 2 + (v / rx) ** 2 <= 1


def _polygon(rng: np.random.Generator, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A random convex polygon (vertices on a circle at sorted angles) as a boolean mask."""
    corners = int(rng.integers(3, 8))
    angles = np.sort(rng.uniform(0, 2 * np.pi, corners))
    cy, cx = rng.random(2)
    radius = rng.uniform(0.06, 0.35)
    vy, vx = cy + radius * np.sin(angles), cx + radius * np.cos(angles)
    inside = np.ones(y.shape, dtype=bool)
    for k in range(corners):  # inside = on the left of every edge (vertices run counter-clockwise in (x, y))
        ey, ex = vy[(k + 1) % corners] - vy[k], vx[(k + 1) % corners] - vx[k]
        inside &= ex * (y - vy[k]) - ey * (x - vx[k]) >= 0
    return inside


def _reflectances(rng: np.random.Generator, count: int, nm: np.ndarray) -> np.ndarray:
    """``count`` smooth reflectance spectra [count, bands] in [0, 1]: offset + gaussian bumps + sigmoid steps."""
    t = (nm - 450.0) / 200.0  # 450-650 nm -> 0-1
    bumps = 3
    centres = rng.uniform(-0.2, 1.2, (count, bumps, 1))
    widths = rng.uniform(0.1, 0.45, (count, bumps, 1))
    heights = rng.uniform(-0.4, 0.8, (count, bumps, 1))
    gaussians = (heights * np.exp(-0.5 * ((t - centres) / widths) ** 2)).sum(axis=1)
    edges = rng.uniform(0.0, 1.0, (count, 1))
    slopes = rng.uniform(0.05, 0.2, (count, 1)) * rng.choice([-1.0, 1.0], (count, 1))
    steps = rng.uniform(0.0, 0.6, (count, 1)) / (1 + np.exp(-(t - edges) / slopes))
    offsets = rng.uniform(0.0, 0.5, (count, 1))
    spectra = np.clip(offsets + gaussians + steps, 0.0, 1.0)
    return spectra.astype(np.float32)


def _textures(rng: np.random.Generator, labels: np.ndarray, regions: int, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Per-pixel blend weight in [0, 1] between a region's two spectra, from the region's texture kind."""
    kind = rng.integers(0, 4, regions)[labels]  # 0 flat, 1 stripes, 2 checker, 3 smooth noise
    angle = rng.uniform(0, np.pi, regions)[labels]
    freq = rng.uniform(8, 40, regions).astype(np.float32)[labels] * np.float32(np.pi)
    phase = rng.uniform(0, 2 * np.pi, regions).astype(np.float32)[labels]
    cos, sin = np.cos(angle).astype(np.float32), np.sin(angle).astype(np.float32)
    along = freq * (x * cos + y * sin) + phase
    across = freq * (y * cos - x * sin) + phase
    stripes = 0.5 + 0.5 * np.sin(along)
    hard = rng.random(regions)[labels] < 0.5  # half the stripes are square waves (sharp)
    stripes = np.where(hard, (stripes > 0.5).astype(np.float32), stripes)
    checker = ((np.sin(along) > 0) ^ (np.sin(across) > 0)).astype(np.float32)
    noise = _smooth_noise(rng, y, x, int(rng.integers(6, 20)))
    weight = rng.uniform(0.3, 1.0, regions).astype(np.float32)[labels]
    blend = np.select([kind == 1, kind == 2, kind == 3], [stripes, checker, noise], default=0.0)
    return (blend * weight).astype(np.float32)


def _illuminant(rng: np.random.Generator, nm: np.ndarray) -> np.ndarray:
    """A black-body spectrum at a random temperature, scaled to a maximum of 1 over ``nm``."""
    temperature = rng.uniform(2500.0, 10000.0)
    metres = nm * 1e-9
    radiance = metres ** -5 / np.expm1(1.4388e-2 / (metres * temperature))  # Planck, constants folded in
    return (radiance / radiance.max()).astype(np.float32)


def _shading(rng: np.random.Generator, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Smooth spatial illumination in about [0.25, 1]: linear gradient x soft spot light x value noise."""
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * (x - 0.5) + np.sin(angle) * (y - 0.5)) * rng.uniform(0.0, 0.8) + 0.5
    sy, sx = rng.random(2)
    spot = np.exp(-((y - sy) ** 2 + (x - sx) ** 2) / (2 * rng.uniform(0.2, 0.6) ** 2))
    noise = _smooth_noise(rng, y, x, 3)
    shade = (0.4 + 0.6 * ramp) * (0.6 + 0.4 * spot) * (0.7 + 0.3 * noise)
    return np.clip(shade / shade.max(), 0.25, 1.0).astype(np.float32)
