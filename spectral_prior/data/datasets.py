"""Datasets of scenes: the cube files of a folder (:class:`CubeFolder`), fixed tiles of scenes (:class:`SceneTiles`),
and the fixed CAVE split every study uses (:data:`CAVE_SPLIT`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import InvalidInputError
from ..io import existing_folder
from .bands import Wavelengths, to_cassi_bands
from .readers import CUBE_SUFFIXES, PathLike, band_pngs, read_cube

CAVE_SPLIT: Dict[str, Tuple[str, ...]] = {
    "train": (
        "beads", "cd", "clay", "face", "fake_and_real_food", "fake_and_real_lemons", "hairs", "jelly_beans", "paints",
        "sponges", "stuffed_toys", "thread_spools",
    ),
    "test": ("balloons", "chart_and_stuffed_toy", "feathers", "oil_painting"),
}
"""The fixed split of the 16 CAVE scenes every study of this project uses (``../shared/data/README.md``): train on
``"train"``, score on the four 256x256 quadrants of each ``"test"`` scene; never select models on the test scenes."""



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
            if (p.is_file() and p.suffix.lower() in CUBE_SUFFIXES) or (p.is_dir() and band_pngs(p))
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
            cube, name = named_item(scenes, index)
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
        cube, name = named_item(self.scenes, scene)
        return cube[:, top : top + self.size, left : left + self.size].contiguous(), f"{name}@{top},{left}"


def named_item(scenes: Sequence[Any], index: int) -> Tuple[Tensor, str]:
    item = scenes[index]
    if isinstance(item, (tuple, list)):
        return scene_tensor(item), str(item[1])
    return scene_tensor(item), f"scene_{index:03d}"


def scene_tensor(item: Any) -> Tensor:
    """A dataset item as a float32 [C, H, W] tensor (items may be tensors or ``(tensor, name)`` pairs)."""
    scene = item[0] if isinstance(item, (tuple, list)) else item
    scene = torch.as_tensor(scene, dtype=torch.float32)
    if scene.dim() != 3:
        raise InvalidInputError(f"dataset items must be [C, H, W] cubes, got shape {list(scene.shape)}")
    return scene
