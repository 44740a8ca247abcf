"""Hyperspectral scenes for CASSI training and evaluation (MST toolbox conventions).

* :mod:`.readers`: :func:`read_cube` loads a cube from a ``.mat`` (MATLAB v5 or v7.3), ``.npy``, ``.safetensors``
  file or a folder of per-band PNGs into a :class:`Cube` laid out [C, H, W] (float32) with its wavelengths when known.
* :mod:`.bands`: :func:`resample_bands` and :func:`to_cassi_bands` bring a cube onto the 28 CASSI bands.
* :mod:`.datasets`: :class:`CubeFolder` (cube files on disk), :class:`SceneTiles` (fixed crops), :data:`CAVE_SPLIT`.
* :mod:`.procedural`: :class:`ProceduralCubes` (deterministic synthetic scenes).
* :mod:`.batches`: :class:`CassiBatches` draws training batches with the toolbox's augmentation and simulates their
  CASSI measurements on the fly.
"""
from ..cassi import CASSI_WAVELENGTHS
from .bands import CAVE_WAVELENGTHS, Cube, Wavelengths, resample_bands, to_cassi_bands
from .batches import CassiBatches
from .datasets import CAVE_SPLIT, CubeFolder, SceneTiles, scene_names
from .procedural import ProceduralCubes
from .readers import CUBE_SUFFIXES, CubeReadError, read_cube

__all__ = [
    "CAVE_WAVELENGTHS",
    "CASSI_WAVELENGTHS",
    "CUBE_SUFFIXES",
    "Cube",
    "CubeReadError",
    "Wavelengths",
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
