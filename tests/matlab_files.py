"""Writing MATLAB files for tests: v5 through scipy, v7.3 as MATLAB writes it (HDF5 behind a 512-byte header)."""
from pathlib import Path
from typing import Mapping

import numpy as np
import pytest


def write_mat_v73(path: Path, variables: Mapping[str, np.ndarray]) -> Path:
    """A MATLAB v7.3 file: a 512-byte MAT header, then HDF5 holding each array with its axes reversed."""
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, array in variables.items():
            f.create_dataset(name, data=np.asarray(array).T)  # MATLAB's column-major data reads back transposed
    header = b"MATLAB 7.3 MAT-file, written by a test".ljust(116) + b"\0" * 8 + b"\x00\x02IM"
    with open(path, "r+b") as f:
        f.write(header.ljust(512, b"\0"))
    return path
