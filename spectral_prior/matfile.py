"""One reader for MATLAB files, shared by cubes, masks and measurements: v5 through scipy, v7.3 (HDF5) through h5py.

Each caller decides which variable it wants from the names and shapes in the file (a mask, a cube, a measurement
each have their rules, all told to :func:`pick_variable`); this module reads that one variable in MATLAB's axis order,
whatever the file's version.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from .errors import InvalidInputError, MissingDependencyError, MissingFileError, UnknownNameError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
MATLAB_HEADER = 512  # a v7.3 MAT-file is an HDF5 file behind a 512-byte user block

Shapes = Dict[str, Tuple[int, ...]]
"""A MATLAB file's variables: name -> shape, in MATLAB's axis order."""


class UnreadableMatFileError(InvalidInputError):
    """A ``.mat`` file that is corrupted, truncated, or not a MATLAB file."""


class VariableChoiceError(UnknownNameError, InvalidInputError):
    """The variable asked for is not in the file, or none of the file's variables is clearly the one wanted (a
    ``KeyError`` and a ``ValueError`` both)."""


def pick_variable(
    shapes: Shapes,
    key: Optional[str],
    path: Path,
    *,
    what: str,
    named: Sequence[str],
    dims: Optional[int] = None,
    option: str = "key",
) -> str:
    """The variable to read: ``key`` if given; else the first of ``named`` in the file; else, with ``dims``, the file's
    only variable of that many axes. :class:`VariableChoiceError` otherwise, listing the variables and naming
    ``option`` (how the caller's user names one)."""
    listed = ", ".join(f"{name} {list(shape)}" for name, shape in sorted(shapes.items()))
    if key is not None:
        if key not in shapes:
            raise VariableChoiceError(f"no variable {key!r} in {path}; variables in the file: {listed}")
        return key
    found = next((name for name in named if name in shapes), None)
    if found is None and dims is not None:
        candidates = [name for name, shape in shapes.items() if len(shape) == dims]
        found = candidates[0] if len(candidates) == 1 else None
    if found is None:
        raise VariableChoiceError(
            f"{path}: cannot tell which variable is the {what} (none is named {' or '.join(named)}); name it with the "
            f"{option} option, one of the variables in the file: {listed}"
        )
    return found


def is_v73(path: Path) -> bool:
    """Whether ``path`` is HDF5 (MATLAB v7.3): the signature at the start or after MATLAB's 512-byte header."""
    with open(path, "rb") as f:
        head = f.read(MATLAB_HEADER + len(HDF5_SIGNATURE))
    return HDF5_SIGNATURE in (head[: len(HDF5_SIGNATURE)], head[MATLAB_HEADER:])


def read_mat(path: str | Path, choose: Callable[[Shapes], str]) -> Tuple[str, np.ndarray]:
    """The variable of ``path`` that ``choose`` names, given the file's variables and shapes, as ``(name, array)``.

    ``choose`` raises when no variable fits; its error reaches the caller unchanged. A damaged file raises
    :class:`UnreadableMatFileError` naming it; a v7.3 file without h5py a ``MissingDependencyError``.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"no MATLAB file {path}")
    return _read_v73(path, choose) if is_v73(path) else _read_v5(path, choose)


def _damaged(path: Path, kind: str, err: BaseException) -> UnreadableMatFileError:
    return UnreadableMatFileError(f"cannot read {path} as {kind} (corrupted or truncated?): {type(err).__name__}: {err}")


def _read_v5(path: Path, choose: Callable[[Shapes], str]) -> Tuple[str, np.ndarray]:
    import scipy.io

    try:
        variables = {k: v for k, v in scipy.io.loadmat(str(path)).items() if not k.startswith("__")}
    except Exception as err:  # scipy raises many types on damaged files: MatReadError, ValueError, zlib.error, ...
        raise _damaged(path, "a MATLAB file", err) from err
    name = choose({k: tuple(np.shape(v)) for k, v in variables.items()})
    return name, np.asarray(variables[name])


def _read_v73(path: Path, choose: Callable[[Shapes], str]) -> Tuple[str, np.ndarray]:
    try:
        import h5py
    except ImportError as err:
        raise MissingDependencyError(f"{path} is a MATLAB v7.3 file; reading it needs h5py (pip install h5py)") from err
    try:
        handle = h5py.File(path, "r")
    except (OSError, ValueError) as err:
        raise _damaged(path, "a MATLAB v7.3 (HDF5) file", err) from err
    with handle:
        datasets = {k: v for k, v in handle.items() if isinstance(v, h5py.Dataset)}
        # HDF5 keeps MATLAB's column-major data, so its axes come out reversed: reverse them back.
        name = choose({k: tuple(reversed(v.shape)) for k, v in datasets.items()})
        try:
            array = np.asarray(datasets[name][()])
        except (OSError, KeyError, ValueError, RuntimeError) as err:
            raise _damaged(path, "a MATLAB v7.3 (HDF5) file", err) from err
    return name, array.transpose()
