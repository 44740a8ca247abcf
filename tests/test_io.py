"""File helpers: atomic writes keep the usual permissions; a missing file and a folder in its place are told apart."""
import os

import numpy as np
import pytest
import torch

from spectral_prior.io import save_json, save_tensors


def test_written_files_get_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    save_tensors({"a": torch.zeros(2)}, tmp_path / "a.safetensors")
    save_json({"a": 1}, tmp_path / "a.json")
    for name in ("a.safetensors", "a.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_file_that_is_missing_or_a_folder_is_named_as_such(tmp_path):
    """A missing .pth used to be 'not a PyTorch checkpoint', a folder given as a file 'file not found'."""
    from spectral_prior.adapters import load_toolbox_checkpoint, mst_s
    from spectral_prior.cassi import load_mask
    from spectral_prior.data import CubeFolder

    with pytest.raises(FileNotFoundError, match=r"^checkpoint file not found: .*mst_l\.pth$"):
        load_toolbox_checkpoint(mst_s(), tmp_path / "mst_l.pth")
    with pytest.raises(ValueError, match=r"is a folder, but the checkpoint file must be a file"):
        load_toolbox_checkpoint(mst_s(), tmp_path)
    with pytest.raises(ValueError, match=r"is a folder, but the mask file must be a file"):
        load_mask(tmp_path)
    cube = tmp_path / "scene.npy"
    np.save(cube, np.random.rand(8, 8, 28).astype("float32"))
    with pytest.raises(ValueError, match=r"scene\.npy is a file, but the cube folder must be a folder .*folder of its own"):
        CubeFolder(cube)
