"""Hyperspectral scenes for CASSI training and evaluation (MST toolbox conventions).

* Readers: :func:`read_cube` loads a cube from a ``.mat`` (MATLAB v5 or v7.3), ``.npy``, ``.safetensors`` file or a
  folder of per-band PNGs into a :class:`Cube` laid out [C, H, W] (float32) with its wavelengths when known.
* Bands: :func:`resample_bands` and :func:`to_cassi_bands` bring a cube onto the 28 CASSI bands.
* Datasets: :class:`CubeFolder` (cube files on disk) and :class:`ProceduralCubes` (deterministic synthetic scenes).
* Sampling: :class:`CassiBatches` draws training batches with the toolbox's augmentation and simulates their CASSI
  measurements on the fly.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from . import cassi
from .errors import InvalidInputError, MissingDependencyError, MissingFileError
from .io import existing_folder
from .matfile import Shapes, UnreadableMatFileError, read_mat

__all__ = [
    "CAVE_WAVELENGTHS",
    "CASSI_WAVELENGTHS",
    "CUBE_SUFFIXES",
    "Cube",
    "CubeReadError",
    "read_cube",
    "resample_bands",
    "to_cassi_bands",
    "CAVE_SPLIT",
    "CubeFolder",
    "SceneTiles",
    "scene_names",
    "ProceduralCubes",
    "CassiBatches",
]

PathLike = Union[str, "os.PathLike[str]"]
Wavelengths = Union[Sequence[float], np.ndarray, Tensor]

CAVE_WAVELENGTHS = torch.arange(400.0, 701.0, 10.0)
"""The 31 band centres (nm) of the CAVE database: 400 to 700 nm in 10 nm steps."""

CASSI_WAVELENGTHS = torch.tensor(
    [
        453.3, 457.6, 462.1, 466.8, 471.6, 476.5, 481.6, 486.9, 492.4, 498.0, 503.9, 509.9, 516.2, 522.7,
        529.5, 536.5, 543.8, 551.4, 558.6, 567.5, 575.3, 584.3, 594.4, 604.2, 614.4, 625.1, 636.3, 648.1,
    ]
)
"""The 28 band centres (nm) of the TSA/KAIST CASSI benchmark."""

CAVE_SPLIT: Dict[str, Tuple[str, ...]] = {
    "train": (
        "beads", "cd", "clay", "face", "fake_and_real_food", "fake_and_real_lemons", "hairs", "jelly_beans", "paints",
        "sponges", "stuffed_toys", "thread_spools",
    ),
    "test": ("balloons", "chart_and_stuffed_toy", "feathers", "oil_painting"),
}
"""The fixed split of the 16 CAVE scenes every study of this project uses (``../shared/data/README.md``): train on
``"train"``, score on the four 256x256 quadrants of each ``"test"`` scene; never select models on the test scenes."""

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
class Cube:
    """A hyperspectral cube: ``data`` float32 [C, H, W]; ``wavelengths`` [C] in nm, or None when unknown."""

    data: Tensor
    wavelengths: Optional[Tensor] = None


@dataclass
class _Raw:
    """What a format reader found: the array, its layout, and what it knows of the wavelengths."""

    array: np.ndarray
    layout: Optional[str]  # None: guess from the shape
    wavelengths: Optional[Tensor] = None
    cave: bool = False  # from the CAVE database: 31 bands mean CAVE_WAVELENGTHS


# --------------------------------------------------------------------------------------------------------------
# readers


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
    overrides what the file says. Corrupted or unusable files raise :class:`CubeReadError` naming the file.
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
        name, array = read_mat(path, lambda shapes: _pick_key(shapes, key, path))
    except UnreadableMatFileError as err:
        raise CubeReadError(str(err)) from err
    return _Raw(array, "HWC", cave=name == _CAVE_KEY)


def _damaged(path: Path, kind: str, err: BaseException) -> CubeReadError:
    return CubeReadError(f"cannot read {path} as {kind} (corrupted or truncated?): {type(err).__name__}: {err}")


def _pick_key(shapes: Shapes, key: Optional[str], path: Path) -> str:
    available = sorted(shapes)
    if key is not None:
        if key not in shapes:
            raise CubeReadError(f"{path} has no variable {key!r}; variables in the file: {available}")
        return key
    for name in _MAT_KEYS:
        if name in shapes:
            return name
    cubes = [k for k in available if len(shapes[k]) == 3]
    if len(cubes) == 1:
        return cubes[0]
    raise CubeReadError(
        f"{path}: cannot tell which variable is the cube (none of {list(_MAT_KEYS)}); "
        f"pass key= with one of the variables in the file: {available}"
    )


def _band_pngs(folder: Path) -> List[Path]:
    """The folder's PNGs whose names end in a band number, in band order."""
    numbered = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _BAND_PNG.search(p.name))]
    return [p for _, p in sorted(numbered)]


def _read_png_folder(folder: Path) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError as err:
        raise MissingDependencyError(f"reading the PNG bands in {folder} needs Pillow (pip install pillow)") from err
    files = _band_pngs(folder)
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


# --------------------------------------------------------------------------------------------------------------
# bands


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


# --------------------------------------------------------------------------------------------------------------
# datasets


class CubeFolder(Dataset):
    """The cube files of a folder (sorted by name) as 28-band scenes: item ``i`` is ``(cube [28, H, W], name)``.

    Accepts the files :func:`read_cube` reads (:data:`CUBE_SUFFIXES`) and sub-folders of band PNGs; ``key``,
    ``wavelengths`` and ``layout`` are passed to it for every file. ``scenes`` keeps only the named scenes, in that
    order (a name matches a file or folder stem, with or without CAVE's ``_ms`` suffix; e.g.
    ``scenes=CAVE_SPLIT["train"]``); a name that matches nothing is a ValueError listing what the folder holds.
    Files are read when first asked for and, if ``cache`` is True, kept in memory as ``cache_dtype`` (float16 halves
    the memory of a training set; items are always returned as float32).
    """

    def __init__(
        self,
        root: PathLike,
        *,
        scenes: Optional[Sequence[str]] = None,
        key: Optional[str] = None,
        wavelengths: Optional[Wavelengths] = None,
        layout: Optional[str] = None,
        cache: bool = False,
        cache_dtype: torch.dtype = torch.float32,
    ) -> None:
        accepted = f"{', '.join(CUBE_SUFFIXES)} files or folders of band PNGs"
        self.root = existing_folder(root, "cube folder", hint=f" (it should hold {accepted}; a single cube goes in a "
                                    "folder of its own)")
        paths = sorted(
            p for p in self.root.iterdir()
            if (p.is_file() and p.suffix.lower() in CUBE_SUFFIXES) or (p.is_dir() and _band_pngs(p))
        )
        if not paths:
            raise InvalidInputError(f"no cubes in {self.root}: expected {accepted}")
        self.paths = paths if scenes is None else _select_scenes(paths, scenes, self.root)
        self.names = [_scene_name(p) for p in self.paths]
        self._read_args: Dict[str, Any] = {"key": key, "wavelengths": wavelengths, "layout": layout}
        self._cache: Optional[Dict[int, Tensor]] = {} if cache else None
        self._cache_dtype = cache_dtype

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Tuple[Tensor, str]:
        if self._cache is not None and index in self._cache:
            return self._cache[index].float(), self.names[index]
        cube = read_cube(self.paths[index], **self._read_args)
        try:
            cube = to_cassi_bands(cube).contiguous()
        except ValueError as err:
            raise InvalidInputError(f"{self.paths[index]}: {err}") from err
        if self._cache is None:
            return cube, self.names[index]
        self._cache[index] = cube.to(self._cache_dtype)
        return self._cache[index].float(), self.names[index]  # the first read equals every later one


def _scene_name(path: Path) -> str:
    return path.stem.removesuffix("_ms")


def _select_scenes(paths: Sequence[Path], scenes: Sequence[str], root: Path) -> List[Path]:
    by_name = {_scene_name(p): p for p in paths} | {p.stem: p for p in paths}
    if isinstance(scenes, str):
        raise TypeError(f"scenes must be a list of names, got the string {scenes!r}")
    missing = [name for name in scenes if name not in by_name]
    if missing:
        raise InvalidInputError(
            f"scenes {missing} are not in {root}; it holds {sorted(_scene_name(p) for p in paths)}"
        )
    if not scenes:
        raise InvalidInputError("scenes is empty: name at least one scene, or pass scenes=None for all of them")
    return [by_name[name] for name in scenes]


def scene_names(spec: Optional[str]) -> Optional[list[str]]:
    """Scene names from ``cave-train`` / ``cave-test`` (:data:`CAVE_SPLIT`), comma-separated names, or a file of names
    (one per line, ``#`` comments); None stays None (every scene)."""
    if spec is None:
        return None
    if spec.startswith("cave-") and spec.removeprefix("cave-") in CAVE_SPLIT:
        return list(CAVE_SPLIT[spec.removeprefix("cave-")])
    path = Path(spec)
    if path.is_file():
        return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return [name.strip() for name in spec.split(",") if name.strip()]


class SceneTiles(Dataset):
    """Fixed square crops of the scenes of a dataset: item ``i`` is ``(cube [C, size, size], name)``.

    With ``grid`` (the default) every scene gives its non-overlapping ``size`` x ``size`` tiles, row by row (a
    512x512 CAVE scene gives its four 256x256 quadrants, the test protocol of :data:`CAVE_SPLIT`); without, one
    central tile per scene (cheap validation crops). Names are ``"<scene>@<top>,<left>"``. A scene smaller than
    ``size`` is a ValueError naming it.
    """

    def __init__(self, scenes: Sequence[Any], size: int, *, grid: bool = True) -> None:
        if size < 1:
            raise InvalidInputError(f"size must be positive, got {size}")
        self.scenes, self.size = scenes, size
        self.tiles: List[Tuple[int, int, int]] = []
        for index in range(len(scenes)):
            cube, name = _named_item(scenes, index)
            height, width = cube.shape[-2:]
            if height < size or width < size:
                raise InvalidInputError(f"scene {name!r} ({height}x{width}) is smaller than the tile size {size}")
            if grid:
                self.tiles += [(index, top, left) for top in range(0, height - size + 1, size)
                               for left in range(0, width - size + 1, size)]
            else:
                self.tiles.append((index, (height - size) // 2, (width - size) // 2))

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, index: int) -> Tuple[Tensor, str]:
        scene, top, left = self.tiles[index]
        cube, name = _named_item(self.scenes, scene)
        return cube[:, top : top + self.size, left : left + self.size].contiguous(), f"{name}@{top},{left}"


def _named_item(scenes: Sequence[Any], index: int) -> Tuple[Tensor, str]:
    item = scenes[index]
    if isinstance(item, (tuple, list)):
        return _scene_tensor(item), str(item[1])
    return _scene_tensor(item), f"scene_{index:03d}"


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


# --------------------------------------------------------------------------------------------------------------
# training batches


class CassiBatches:
    """Endless training batches with the MST toolbox's augmentation and an on-the-fly CASSI simulation.

    Each step draws ``batch`` ground-truth crops [28, crop, crop] from ``dataset`` (any sequence of [28, H, W]
    tensors or of ``(tensor, name)`` pairs, e.g. :class:`CubeFolder` or :class:`ProceduralCubes`):

    * with ``augment`` (the toolbox's ``shuffle_crop``): the first ``batch // 2`` items are random crops of random
      scenes, each rotated by a random multiple of 90 degrees and randomly flipped vertically and horizontally;
      the other items are 2x2 mosaics of four ``crop // 2`` patches cut from four random scenes;
    * without: plain random crops.

    Crop positions are uniform over every valid position (the toolbox's ``randint(0, h - crop)`` never picks
    the last one and fails on a scene exactly the crop's size); a scene smaller than ``crop`` raises ValueError.

    The 2-D mask is cropped to ``crop`` x ``crop`` (top-left, or a random position per step with
    ``random_mask_crop``), shared by the batch, and :func:`spectral_prior.cassi.simulate` gives
    ``{'input', 'mask', 'gt'}`` for ``input_setting``/``mask_setting`` (MST: ``'H'``/``'Phi'``; BiSRNet:
    ``'H'``/``'Mask'``).

    Determinism and sharding: every random choice of step ``s`` comes from a numpy generator seeded by
    ``(seed, s)`` alone, so :meth:`batch_at` gives the same batch whatever was drawn before, and iterating from
    ``start_step`` resumes a run exactly. ``batch`` is the *global* batch: with ``world_size`` > 1, rank ``r``
    builds items ``r, r + world_size, ...`` of it (``batch`` must be divisible by ``world_size``), so the ranks
    together build exactly the single-process batch and each rank gets its share of crops and mosaics.
    """

    def __init__(
        self,
        dataset: Sequence[Any],
        mask2d: cassi.MaskSource,
        *,
        crop: int = 256,
        batch: int = 4,
        input_setting: str = "H",
        mask_setting: str = "Phi",
        augment: bool = True,
        random_mask_crop: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        start_step: int = 0,
        device: Union[str, torch.device] = "cpu",
    ) -> None:
        if len(dataset) == 0:
            raise InvalidInputError("the dataset is empty")
        if crop < 2 or (augment and crop % 2):
            raise InvalidInputError(f"crop must be an even size of at least 2 (the mosaics are 2x2), got {crop}")
        if batch < 1 or world_size < 1 or batch % world_size:
            raise InvalidInputError(f"batch ({batch}) must be a positive multiple of world_size ({world_size})")
        if not 0 <= rank < world_size:
            raise InvalidInputError(f"rank must be in [0, {world_size}), got {rank}")
        if input_setting not in cassi.INPUT_SETTINGS or mask_setting not in cassi.MASK_SETTINGS:
            raise InvalidInputError(
                f"unknown settings input={input_setting!r} mask={mask_setting!r}; valid inputs "
                f"{cassi.INPUT_SETTINGS}, masks {cassi.MASK_SETTINGS}"
            )
        self.mask2d = cassi.load_mask(mask2d)
        height, width = self.mask2d.shape
        if height < crop or width < crop:
            raise InvalidInputError(f"the mask ({height}x{width}) is smaller than the crop ({crop}x{crop})")
        self.dataset = dataset
        self.crop, self.batch = crop, batch
        self.input_setting, self.mask_setting = input_setting, mask_setting
        self.augment, self.random_mask_crop = augment, random_mask_crop
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.start_step = start_step
        self.device = torch.device(device)

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        step = self.start_step
        while True:
            yield self.batch_at(step)
            step += 1

    def batch_at(self, step: int) -> Dict[str, Any]:
        """This rank's part of the global batch of ``step``: ``{'input', 'mask', 'gt' [b, 28, crop, crop]}``."""
        rng = np.random.default_rng([self.seed, step])
        plans = self._plan(rng)
        mask_offset = rng.random(2) if self.random_mask_crop else np.zeros(2)
        gt = torch.stack([self._build(plan) for plan in plans[self.rank :: self.world_size]]).to(self.device)
        mask3d = cassi.mask3d(_crop(self.mask2d, mask_offset, self.crop).to(self.device), gt.shape[1])
        net_input, mask_input = cassi.simulate(gt, mask3d, self.input_setting, self.mask_setting)
        return {"input": net_input, "mask": mask_input, "gt": gt}

    def _plan(self, rng: np.random.Generator) -> List[Dict[str, Any]]:
        """Every random choice of one global batch, drawn in a fixed order (crop offsets as fractions in [0, 1))."""
        scenes = len(self.dataset)
        plain = self.batch // 2 if self.augment else self.batch
        plans: List[Dict[str, Any]] = []
        for _ in range(plain):
            plans.append({
                "scene": int(rng.integers(scenes)),
                "offset": rng.random(2),
                "rot": int(rng.integers(4)) if self.augment else 0,
                "flips": rng.integers(2, size=2) if self.augment else np.zeros(2, dtype=np.int64),
            })
        for _ in range(self.batch - plain):
            plans.append({"mosaic": rng.integers(scenes, size=4), "offsets": rng.random((4, 2))})
        return plans

    def _build(self, plan: Dict[str, Any]) -> Tensor:
        if "mosaic" in plan:
            half = self.crop // 2
            tiles = [self._crop_scene(int(s), o, half) for s, o in zip(plan["mosaic"], plan["offsets"])]
            return torch.cat([torch.cat(tiles[:2], dim=2), torch.cat(tiles[2:], dim=2)], dim=1)
        patch = self._crop_scene(plan["scene"], plan["offset"], self.crop)
        patch = torch.rot90(patch, plan["rot"], dims=(1, 2))
        if plan["flips"][0]:
            patch = patch.flip(2)  # the toolbox's "vertical" flip: mirrors the columns
        if plan["flips"][1]:
            patch = patch.flip(1)  # the toolbox's "horizontal" flip: mirrors the rows
        return patch

    def _crop_scene(self, index: int, offset: np.ndarray, size: int) -> Tensor:
        scene, name = _named_item(self.dataset, index)
        if scene.shape[1] < self.crop or scene.shape[2] < self.crop:
            raise InvalidInputError(
                f"scene {name!r} ({scene.shape[1]}x{scene.shape[2]}) is smaller than the crop ({self.crop}x{self.crop}): "
                "use a smaller crop or leave the scene out"
            )
        return _crop(scene, offset, size)


def _scene_tensor(item: Any) -> Tensor:
    """A dataset item as a float32 [C, H, W] tensor (items may be tensors or ``(tensor, name)`` pairs)."""
    scene = item[0] if isinstance(item, (tuple, list)) else item
    scene = torch.as_tensor(scene, dtype=torch.float32)
    if scene.dim() != 3:
        raise InvalidInputError(f"dataset items must be [C, H, W] cubes, got shape {list(scene.shape)}")
    return scene


def _crop(image: Tensor, offset: np.ndarray, size: int) -> Tensor:
    """The ``size`` x ``size`` window of ``image`` [..., H, W] at fractional position ``offset`` (each in [0, 1))."""
    height, width = image.shape[-2:]
    top = int(offset[0] * (height - size + 1))
    left = int(offset[1] * (width - size + 1))
    return image[..., top : top + size, left : left + size]
